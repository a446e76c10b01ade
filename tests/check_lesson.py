"""Check one lesson the way CI does: ``./course check 03`` (or several: ``./course check 03 11``).

Steps, each timed, all run even when one fails:

1. ruff over the repository (lessons included: ruff reads notebooks);
2. the lesson's tests in tests/test_notebooks.py: committed clean, the static lesson rules
   (tests/lesson_rules.py), and one run in a fresh kernel with the leak check, every slider
   at its extremes, the exercises against stub, solution and mistake, the closing cells with
   the controls moved, the budget and progress of slow cells;
3. the browser test for the lesson (JupyterLab in Debian's chromium), if chromium is
   installed (set COURSE_REQUIRE_BROWSER=1 to make a missing chromium a failure);
4. as root: step 2 again as a normal user (tests/normal_user.py), from a copy of the checkout
   that user owns, in the learners' environment ./course builds.

The exit status is 0 only if every step passed. Run from the repository root by ./course,
with the course's virtual environment's Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import normal_user

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")


def lesson_path(arg: str) -> Path:
    """notebooks/NN-*.ipynb for '3', '03', '03-reading-and-writing' or a path to it."""
    lessons = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    number = Path(arg).name[:2] if not arg.isdigit() else f"{int(arg):02d}"
    found = [p for p in lessons if p.name.startswith(number + "-")]
    if len(found) != 1:
        known = ", ".join(p.name[:2] for p in lessons)
        raise SystemExit(f"no lesson {arg!r}: give a lesson number ({known})")
    return found[0]


def _step(name: str, command: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None
          ) -> tuple[str, bool, float]:
    """Run one step, its output going straight to the terminal; (name, passed, seconds)."""
    print(f"\n\033[1m[check] {name}\033[0m\n  $ {' '.join(command)}", flush=True)
    started = time.monotonic()
    ok = subprocess.run(command, cwd=cwd, env=env).returncode == 0
    return name, ok, time.monotonic() - started


def check(paths: list[Path]) -> list[tuple[str, bool, float]]:
    """Run every step for the lessons at `paths`; (step, passed, seconds) for each."""
    python = sys.executable
    ruff = str(Path(python).with_name("ruff"))
    select = " or ".join(p.stem for p in paths)
    steps = [_step("ruff", [ruff, "check", "."])]
    pytest = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"]
    steps.append(_step("the lesson's tests (rules, run, leaks, extremes, exercises, budget)",
                       [*pytest, "tests/test_notebooks.py", "-k", select]))
    if CHROMIUM.exists() or os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
        steps.append(_step("the browser test", [*pytest, "tests/test_browser.py", "-k", select]))
    else:
        print(f"\n[check] the browser test is SKIPPED: {CHROMIUM} is not installed "
              "(sudo apt-get install chromium)", flush=True)
    if os.geteuid() == 0:
        if normal_user.runuser() is None:
            print("\n[check] the normal-user run is SKIPPED: runuser (util-linux) is missing", flush=True)
        else:
            with normal_user.user_copy() as (repo, env):
                user_python = str(Path(env.get("COURSE_VENV", repo / ".venv")) / "bin" / "python")
                if not Path(user_python).exists():
                    print(f"\n[check] the normal-user run is SKIPPED: no Python for {normal_user.USER} at "
                          f"{user_python} (./course check builds it as root)", flush=True)
                else:
                    steps.append(_step(f"the lesson's tests as the normal user {normal_user.USER}",
                                       [normal_user.runuser(), "-u", normal_user.USER, "--", user_python, "-m",
                                        "pytest", "-p", "no:cacheprovider", "-q", "tests/test_notebooks.py",
                                        "-k", select], cwd=repo, env=env))
    else:
        print("\n[check] not root: every step above already ran as a normal user", flush=True)
    return steps


def main(argv: list[str]) -> int:
    if not argv or any(a.startswith("-") for a in argv):
        print("usage: ./course check NN [NN ...]   (lesson numbers, e.g. ./course check 03)", file=sys.stderr)
        return 2
    paths = [lesson_path(a) for a in argv]
    started = time.monotonic()
    steps = check(paths)
    print(f"\n\033[1m[check] {', '.join(p.stem for p in paths)}\033[0m")
    for name, ok, seconds in steps:
        print(f"  {'passed' if ok else 'FAILED'}  {seconds:6.1f} s  {name}")
    print(f"  total {time.monotonic() - started:.1f} s")
    return 0 if all(ok for _, ok, _ in steps) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
