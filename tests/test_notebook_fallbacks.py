"""Every fallback runs: each lesson with a capability switched off still runs, says why, and
shows a labelled recording where it promised one, never a bare "skipped".

The machine that runs the tests usually has everything (CI runs as root). So for each
scenario (one probe, or the programs together) the lessons whose live experiments need it
run once with the probe switched off (COURSE_PRETEND_MISSING, which their kernel inherits;
helpers.core.features). Which lessons and which experiments is not written here: it is
helpers.doctor.GATES, decided for this machine with and without the switch, so the doctor's
table, the lessons and these tests share one account. For each experiment that falls back:

* the lesson runs every cell (its closing checks included) and leaves nothing behind;
* it says why: the switched-off probe's reason reaches the learner (proof that the lesson
  asked the shared probe, not a test of its own); an experiment that still runs live another
  way (lesson 07 without IP_LOCAL_PORT_RANGE, as on a kernel older than 6.3, uses a private
  namespace) is checked so too;
* a "recording" fallback shows a recording labelled with the date, the time and the kernel
  it was made on (``RECORDED ... 2026-12-06 21:10 UTC, Linux 6.18...``);
* no line says "skip" without saying what is shown instead (a recording).

Lessons whose fallback is not there yet are listed in fallback_checks.NOT_YET, the one
place for them: strict expected failures here, so a lesson that gains its fallback turns
the test red until its line goes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fallback_checks import NOT_YET, display_problems, not_yet
from notebook_runner import run_notebook

from helpers import doctor
from helpers.core import features

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {p.name[:2]: p for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")}

#: Each scenario switches these probes off together: one capability, or (for lesson 06's
#: real tools) every program, which the lesson treats alike.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "netns": ("netns",),
    "capture": ("capture",),
    "socket_filter": ("socket_filter",),
    "icmp": ("icmp",),
    "programs": tuple(features.PROGRAMS),
    "ip_local_port_range": ("ip_local_port_range",),
    "io_uring": ("io_uring",),
    "ipv6": ("ipv6",),
}


def _cases() -> list:
    cases = []
    for scenario, probes in SCENARIOS.items():
        lessons = sorted({g.lesson for g in doctor.GATES if any(set(probes) & set(alt) for alt in g.needs)})
        for lesson in lessons:
            why = not_yet(lesson, probes)
            marks = [pytest.mark.xfail(reason=why, strict=True)] if why else []
            cases.append(pytest.param(scenario, lesson, id=f"{scenario}-{lesson}", marks=marks))
    return cases


def test_every_switch_is_in_a_scenario() -> None:
    gating = {p for g in doctor.GATES for alt in g.needs for p in alt}
    covered = {p for probes in SCENARIOS.values() for p in probes}
    assert gating <= covered, f"probes that gate an experiment but no scenario switches off: {gating - covered}"
    unknown = gating - set(features.SWITCHES)
    assert not unknown, f"gates name probes that cannot be switched: {unknown}"


def test_not_yet_names_real_cases() -> None:
    real = {(g.lesson, p) for g in doctor.GATES for alt in g.needs for p in alt}
    assert set(NOT_YET) <= real, set(NOT_YET) - real


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("scenario", "lesson"), _cases())
def test_lesson_falls_back(scenario: str, lesson: str, monkeypatch: pytest.MonkeyPatch) -> None:
    probes = SCENARIOS[scenario]
    now = doctor.availability()
    with features.pretend_missing(*probes):
        off = doctor.availability()
    changed = [g for g in doctor.GATES if g.lesson == lesson and g.way(now) != g.way(off)]
    falls_back = [g for g in changed if not g.live(off)]  # the others run live another way (07 on an older kernel)
    if not changed:
        pytest.skip(f"nothing in lesson {lesson} changes here with {', '.join(probes)} switched off (it was not "
                    "live to begin with, or it needs something else first)")
    monkeypatch.setenv(features.PRETEND_ENV, ",".join(probes))
    run = run_notebook(NOTEBOOKS[lesson])  # a failing cell raises, naming it
    left = {k: v for k, v in run.leftovers.items() if v}
    assert not left, f"lesson {lesson} left things behind: {left}"
    assert not run.problems(), "\n".join(run.problems())
    shown = run.shown
    assert f"{features.PRETEND_ENV}=" in shown, (
        f"lesson {lesson} never said why {[g.experiment for g in changed]} changed: the switched-off "
        f"probe's reason did not reach the learner (does it ask the shared probe?)")
    problems = display_problems(lesson, shown, falls_back)
    assert not problems, "\n".join(problems)
