"""Inside the locked-down container (tests/test_locked_down.py starts it through
tests/lockdown.py): the container is what it should be, the doctor says so, and every
notebook runs.

This file is not collected in an ordinary run (its name does not start with ``test_``); it
runs when given by path, and only inside the launcher (COURSE_LOCKED_DOWN holds what the
launcher set: CPUs, memory, hidden programs, the descriptor limit). Each notebook runs once
with the runner (every cell, the closing checks and their timing claims, the exercise checks
against stub, solution and a wrong answer, leaks); what falls back here is checked as in the
probe-switch tests (fallback_checks.py), but for real: nothing is pretended.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
from fallback_checks import display_problems, not_yet
from notebook_runner import run_notebook

from helpers import doctor
from helpers.core import features

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
TIMES = ROOT / "tests" / "artifacts" / "locked-down-times.json"
EXPECT = json.loads(os.environ.get("COURSE_LOCKED_DOWN") or "null")

pytestmark = pytest.mark.skipif(EXPECT is None, reason="runs inside tests/lockdown.py: tests/test_locked_down.py")


def test_the_container_is_locked_down() -> None:
    assert os.geteuid() != 0, "the launcher should have made us a normal user"
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == EXPECT["nofile"]
    for name in EXPECT["hidden"]:
        assert shutil.which(name) is None and features.find_program(name) is None, name
    if EXPECT["cpus"] is not None:
        assert features.cpu_quota().cpus == EXPECT["cpus"], features.cpu_quota()
    if EXPECT["memory"] is not None:
        assert features.memory_limit()[0] == EXPECT["memory"], features.memory_limit()


def test_the_doctor_says_so() -> None:
    rows = {r.key: r for r in doctor.findings()}
    assert rows["netns"].ok is False and "EPERM" in rows["netns"].found, rows["netns"]
    assert rows["capture"].ok is False, rows["capture"]
    for name in EXPECT["hidden"]:
        assert rows[name].ok is False and rows[name].found == "not installed", rows[name]
    assert rows["nofile"].found.startswith(f"soft {EXPECT['nofile']:,}, "), rows["nofile"]
    assert rows["root"].found.startswith("no: uid "), rows["root"]
    if EXPECT["cpus"] is not None:
        assert rows["cpu_quota"].found.startswith(f"{EXPECT['cpus']:g} CPUs' worth of time"), rows["cpu_quota"]
    done = subprocess.run(["./course", "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "  NO  user + network namespaces: unshare(CLONE_NEWUSER) was refused (EPERM)" in done.stdout, done.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_locked_down(path: Path) -> None:
    lesson = path.name[:2]
    available = doctor.availability()
    plan = {p.lesson: p for p in doctor.lesson_plan(available)}
    run = run_notebook(path)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[path.stem] = {"seconds": round(run.seconds, 1), "peak_rss_mb": round(run.peak_rss_mb)}
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True))
    print(f"{path.name}: {run.seconds:.1f} s, kernel peak RSS {run.peak_rss_mb:.0f} MB")
    left = {k: v for k, v in run.leftovers.items() if v}
    assert not left, f"{path.name} left things behind: {left}"
    assert not run.problems(), "\n".join(run.problems())
    falls_back = [g for g, live in (plan[lesson].experiments if lesson in plan else []) if not live]
    missing = {g.experiment: {p for alt in g.needs for p in alt if not available.get(p)} for g in falls_back}
    excused = {g.experiment: why for g in falls_back if (why := not_yet(lesson, missing[g.experiment]))}
    problems = display_problems(lesson, run.shown, [g for g in falls_back if g.experiment not in excused],
                                skips=bool(falls_back) and not excused)  # "skipped" may be networking words too
    assert not problems, "\n".join(problems)
