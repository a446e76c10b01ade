"""The course as a learner runs it: no root. When the suite runs as root (as CI does), this
test copies the checkout, gives it to an unprivileged user, and runs the README test
command there on the helpers' and the labs' tests, so root-only behaviour cannot hide.

The lessons themselves run as normal users in the class test (tests/test_hub.py: five
users on a real JupyterHub, every lesson's leak check in the learner's own kernel, one
learner also running every slider at its extremes and every exercise check), so they are
not run a second time here. The user's suite runs in the learners' environment that ./course builds for that
test (.venv/learners, from the system's python3), instead of building a venv of its own.
"""

from __future__ import annotations

import os
import resource
import subprocess

import pytest
from normal_user import USER, runuser, user_copy

# What the unprivileged run covers: the helpers' and labs' tests, and the notebooks' static
# checks; the lesson runs are the class test's (see above).
# The lessons also run as a normal user in the locked-down test (tests/test_locked_down.py),
# and their probe-switch runs (tests/test_notebook_fallbacks.py) once, as root.
SUITE = ["tests", "-m", "not browser and not unprivileged and not hub and not locked_down",
         "--ignore=tests/test_binder.py", "--ignore=tests/test_notebook_fallbacks.py",
         "--deselect", "tests/test_notebooks.py::test_runs_and_leaves_nothing_behind", "-p", "no:cacheprovider"]
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
    with user_copy() as (repo, env):
        result = subprocess.run(
            [runuser(), "-u", USER, "--", "./course", "test", *SUITE],
            cwd=repo, env=env, capture_output=True, text=True, timeout=1700,
            preexec_fn=_soft_nofile,
        )
    tail = "\n".join(result.stdout.splitlines()[-40:] + ["--- stderr:"] + result.stderr.splitlines()[-15:])
    assert result.returncode == 0, f"as user {USER}, ./course test failed:\n{tail}"
    print(tail)
