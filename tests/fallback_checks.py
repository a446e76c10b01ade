"""What a lesson must show when an experiment cannot run live, and which lessons do not yet.

Used by the probe-switch tests (test_notebook_fallbacks.py) and the locked-down run
(locked_down_run.py). ``helpers.doctor.GATES`` says which experiments need which
capability and what the lesson shows instead; ``display_problems()`` reads what a lesson
showed (``NotebookRun.shown``) and lists what is wrong with it:

* a "recording" fallback shows a recording labelled with the date, the time and the kernel
  it was made on (``RECORDED earlier: ... 2026-12-06 21:10 UTC, Linux 6.18...``);
* no line says an experiment was skipped without saying what is shown instead.

NOT_YET is the one list of lessons whose fallback is not there yet.
"""

from __future__ import annotations

import re

from helpers.doctor import Gate

#: (lesson, probe) -> why that lesson does not yet fall back as it should when the probe
#: says no. Tell the lead when you add a line; remove it when the lesson lands its fallback.
NOT_YET: dict[tuple[str, str], str] = {}

RECORDED = re.compile(r"RECORDED[^\n]*?\d{4}-\d\d-\d\d \d\d:\d\d UTC, Linux \d+\.\d+")
# An experiment said to be skipped ("was skipped", "Skipped:", "Skipping the experiment"),
# not a socket that skipped TIME_WAIT.
SKIPPED = re.compile(r"\b(?:was|were|is|are|be|been)\s+skipped\b|\bskipped\s*:|\bskipping\b", re.I)


def not_yet(lesson: str, probes: set[str] | tuple[str, ...]) -> str:
    """Why `lesson` is excused for these missing `probes` ("" if it is not)."""
    return "; ".join(why for (les, probe), why in NOT_YET.items() if les == lesson and probe in probes)


def display_problems(lesson: str, shown: str, falls_back: list[Gate], *, skips: bool = True) -> list[str]:
    """What is wrong with what `lesson` showed (``shown``) when `falls_back` ran without
    their capabilities: a promised recording without its label, or (with `skips`) a bare
    "skipped" anywhere in the lesson."""
    problems = []
    promised = [g.experiment for g in falls_back if g.kind == "recording"]
    if promised and not RECORDED.search(shown):
        problems.append(f"lesson {lesson} promised recordings of {promised} but shows none labelled with where, "
                        "when and the kernel")
    bare = [line.strip() for line in shown.splitlines() if SKIPPED.search(line) and "record" not in line.lower()]
    if skips and bare:
        problems.append(f"lesson {lesson} skips without showing a recording: {bare}")
    return problems
