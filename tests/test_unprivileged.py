"""The course as a learner runs it: no root. When the suite runs as root (as CI does), this
test copies the checkout, gives it to an unprivileged user, and runs the README test
command there on the helpers' and the labs' tests, so root-only behaviour cannot hide. The
labs' tests and the rest run side by side, each in its own copy, and both must pass.

The lessons themselves run as normal users in the class test (tests/test_hub.py: five
users on a real JupyterHub, every lesson's leak check in the learner's own kernel, one
learner also running every slider at its extremes and every exercise check), so they are
not run a second time here. The user's suite runs in the learners' environment that ./course builds for that
test (.venv/learners, from the system's python3), instead of building a venv of its own.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import tempfile
import time

import pytest
from normal_user import USER, runuser, user_copy

# What the unprivileged run covers: the helpers' and labs' tests, and the notebooks' static
# checks; the lesson runs are the class test's (see above).
# The lessons also run as a normal user in the locked-down test (tests/test_locked_down.py),
# and their probe-switch runs (tests/test_notebook_fallbacks.py) once, as root.
SUITE = ["tests", "-m", "not browser and not unprivileged and not hub and not locked_down",
         "--ignore=tests/test_binder.py", "--ignore=tests/test_notebook_fallbacks.py",
         "--deselect", "tests/test_notebooks.py::test_runs_and_leaves_nothing_behind", "-p", "no:cacheprovider"]
# The labs' tests (grading in real kernels: more than half of the time, mostly waiting on
# the learner code's timers) run beside the rest, each half in its own copy of the checkout.
HALVES = {"labs": ["tests/test_labs.py", *SUITE[1:]],
          "the rest": [*SUITE, "--ignore=tests/test_labs.py"]}
NOFILE = 1024  # a normal user's default soft RLIMIT_NOFILE: no test may run the process out of descriptors


def _soft_nofile() -> None:
    """In the child, before runuser: the soft descriptor limit a normal user gets (runuser keeps it)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@pytest.mark.slow
@pytest.mark.unprivileged
@pytest.mark.timeout(1800)
def test_suite_passes_as_a_normal_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("this run is already unprivileged: every test above ran as a normal user")
    if runuser() is None:
        pytest.skip("runuser (util-linux) is missing, so the suite cannot switch to a normal user here")
    results = {}
    with contextlib.ExitStack() as stack:
        runs = {}
        try:
            for name, args in HALVES.items():  # each half in its own copy, logged to its own file
                repo, env = stack.enter_context(user_copy())
                log = stack.enter_context(tempfile.TemporaryFile("w+"))
                runs[name] = (subprocess.Popen([runuser(), "-u", USER, "--", "./course", "test", *args], cwd=repo,
                                               env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                                               preexec_fn=_soft_nofile, start_new_session=True), log)
            deadline = time.monotonic() + 1700
            for proc, _log in runs.values():
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for proc, _log in runs.values():  # a timeout: the half still running goes, with its whole group
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for name, (proc, log) in runs.items():
            log.seek(0)
            results[name] = (proc.returncode, log.read())
    for name, (returncode, output) in results.items():
        shown = report(output)
        print(f"\n===== as user {USER}, {name}:\n{shown}")
        assert returncode == 0, f"as user {USER}, ./course test ({name}) failed:\n{shown}"


def report(output: str, *, failures: int = 300, tail: int = 40) -> str:
    """What to show of a half's output: its failures section (the tracebacks and assertion
    messages, up to `failures` lines) if it has one, then its last `tail` lines."""
    lines = output.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("=") and " FAILURES " in line), None)
    last = len(lines) - tail
    if first is None or first >= last:
        return "\n".join(lines[-tail:])
    section = lines[first:last]
    cut = [f"[... {len(section) - failures} more lines of failures ...]"] if len(section) > failures else []
    return "\n".join([*section[:failures], *cut, *lines[last:]])
