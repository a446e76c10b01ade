"""`./course test` with no arguments: the whole suite as two pytest runs side by side.

Why: the suite leaves a 2-core machine about half idle. Measured per test file (CPU busy,
both cores counted, from /proc/stat while each file ran, on an otherwise idle machine): the
class on a hub 75%, the browser 66%, the labs 51%, the locked-down run 30%, the lessons
with a probe switched off 26%, the lessons themselves under 30% (they wait on timers: delayed
ACKs, keep-alive probes, retransmission timeouts). So two lanes of whole test files run at
once, each an ordinary pytest run with its own leak checks, and the pairs are chosen so
that what runs side by side stays near one machine's worth of CPU:

* lane A: the class on a hub first (beside the locked-down run and the probe switches of
  lane B), then every other test file in its usual order (the lessons' own runs overlap
  lane B's browser and normal-user run: their budgets have room, and the progress rule
  leaves out the time a cell waited for a CPU);
* lane B: the locked-down container, the probe switches, the browser, the normal user's
  run of the helpers' and labs' tests, and the starved servers (test_accept_policy.py: they
  mostly sleep, and lane A was the longer by about that much).

Nothing is left out: every tests/test_*.py is in exactly one lane (tests/test_repo.py checks
the plan). Any argument (`./course test -k handshake`, `-m "not slow"`, a path) runs one
ordinary pytest instead, as before. Lane B's report is printed after lane A's, from
tests/artifacts/lane-b.log, and the exit status fails if either lane failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
LOG = TESTS / "artifacts" / "lane-b.log"
FIRST_IN_A = ["test_hub.py"]
# The starved-server tests last: about 40 s, mostly sleeping, which lane A (the longer) can spare.
LANE_B = ["test_locked_down.py", "test_notebook_fallbacks.py", "test_browser.py", "test_unprivileged.py",
          "test_accept_policy.py"]


def plan() -> tuple[list[str], list[str]]:
    """(lane A's test files, lane B's), as paths relative to the repository, in run order."""
    every = sorted(p.name for p in TESTS.glob("test_*.py"))
    missing = [name for name in FIRST_IN_A + LANE_B if name not in every]
    if missing:
        raise FileNotFoundError(f"tests/lanes.py names test files that do not exist: {missing}")
    rest = [name for name in every if name not in FIRST_IN_A and name not in LANE_B]
    return [f"tests/{n}" for n in FIRST_IN_A + rest], [f"tests/{n}" for n in LANE_B]


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt a lane as Ctrl-C would (its fixtures clean up), then kill what is left of it."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(lane_a: list[str], lane_b: list[str], cwd: Path = ROOT, log_path: Path = LOG) -> int:
    """Run the two lanes at once (lane B into `log_path`, printed afterwards); 0 only if both pass."""
    pytest = [sys.executable, "-m", "pytest"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[course] two lanes at once. Lane B ({' '.join(lane_b)}) reports at the end; "
          f"follow it live in {log_path}", flush=True)
    start = time.monotonic()
    with log_path.open("w") as log:
        b = subprocess.Popen([*pytest, *lane_b], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            a_rc = subprocess.run([*pytest, *lane_a], cwd=cwd).returncode
            a_s = time.monotonic() - start
            b_rc = b.wait()
        finally:
            _stop(b)
    total = time.monotonic() - start
    print(f"\n[course] ===== lane B: {' '.join(lane_b)} =====", flush=True)
    sys.stdout.write(log_path.read_text(errors="replace"))
    print(f"\n[course] lane A {'passed' if a_rc == 0 else f'FAILED (exit {a_rc})'} in {a_s:.0f} s; "
          f"lane B {'passed' if b_rc == 0 else f'FAILED (exit {b_rc})'}; the whole run took {total:.0f} s",
          flush=True)
    return a_rc or b_rc


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # a CI timeout stops lane B too, not only this process
    return run(*plan())


if __name__ == "__main__":
    sys.exit(main())
