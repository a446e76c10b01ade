"""A class on one JupyterHub: real users run the whole course at once, through a real hub.

As root (it creates the learners' accounts), this starts JupyterHub with
configurable-http-proxy on 127.0.0.1 (tests/hub_class.py says how), creates five local
users, and has each log in through the hub's login form, start its server through the
REST API and run lessons in its own kernels through its own server:

* four learners run every lesson, all at once, each in a different order;
* a fifth starts lessons 05 (Unix sockets), 07 (TIME_WAIT, ports) and 17 (C10K) at the
  same moment as the first learner starts each of them;
* two of those four (the second and third) run the Simplified Chinese edition
  (notebooks/zh-CN/, each lesson it has; tests/test_editions.py): its code cells are the
  English ones byte for byte, so what could differ is the folder the kernel starts in and
  the exercise cells as the runner reads them from the Chinese markdown (练习, 查看参考答案);
  this runs every translated lesson from there, as normal users, and the second learner
  also runs each zh-CN lesson's exercise checks (stub, solution, plausible mistake, closing
  cells with the controls moved), which must be the same steps as the English lesson's;
* the first learner also runs, after each lesson, what test_notebooks.py runs as root:
  every slider at its extremes (each run works, or says why with a clear ValueError), and
  for a lesson with exercises each check against its stub, its solution and a plausible
  mistake, and the closing cells again with the controls moved.

Every lesson must pass for every learner, with the leak check of tests/notebook_runner.py
run in the learner's own kernel, and binds only on loopback. Afterwards, seen from
outside: no learner process, socket, abstract Unix name or file under /tmp, /var/tmp or
/dev/shm is left, and the accounts are gone.

This is also where the lessons run as normal users when the suite runs as root (so
test_unprivileged.py does not run them a second time). Run times and peak memory per
learner and lesson go to tests/artifacts/hub-class.json (docs/classroom.md's table).
"""

from __future__ import annotations

import json
import os
import pwd
import random
import sys
import time
from pathlib import Path

import hub_class
import nbformat
import pytest
from hub_class import LessonRun
from lesson_rules import budget_s
from notebook_runner import EXTREME_RUN_S, clear_error

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT = ROOT / "tests" / "artifacts" / "hub-class.json"
TOGETHER = ("05", "07", "17")

pytestmark = [pytest.mark.hub, pytest.mark.own_leak_check, pytest.mark.slow]


def _plans(names: list[str], paths: list[str], edition: list[str]) -> dict[str, list[str]]:
    """Four different orders of the whole course: as written, backwards, from the middle,
    shuffled (the second and third in the zh-CN edition, `edition`: the same lessons);
    the fifth learner runs only the lessons it shares with the first."""
    middle = len(paths) // 2
    orders = [list(paths), edition[::-1], edition[middle:] + edition[:middle],
              random.Random(20).sample(paths, len(paths))]
    plans = dict(zip(names[:4], orders))
    plans[names[4]] = [p for p in paths if Path(p).name[:2] in TOGETHER]
    return plans


def _allowed_outside_loopback(lesson: str) -> bool:
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    return bool(nb.metadata.get("course", {}).get("allow_non_loopback_bind", False))


def _outside_view(learners: list[hub_class.Learner], *, servers_running: bool) -> dict[str, dict]:
    """What each learner still has, seen from outside its kernels: processes (only its
    single-user server while servers run), abstract Unix names, TCP/UDP sockets (only the
    server's own while it runs), files under the shared temporary folders."""
    seen = {}
    for learner in learners:
        procs = hub_class.user_processes(learner.uid)
        pids = [pid for pid, _ in procs]
        extra = [p for p in procs if not (servers_running and "jupyterhub-singleuser" in p[1])]
        sockets = hub_class.inet_sockets(learner.uid)
        if servers_running:  # the server's own: its listening socket, its connections to hub and proxy
            own = f":{learner.port:04X}"
            sockets = [s for s in sockets if s.startswith("udp") or ("state 0A" in s and own not in s.split()[1])]
        found = {
            "processes": extra,
            "abstract_names": hub_class.abstract_names(pids),
            "sockets": sockets,
            "files": hub_class.files_owned(learner.uid),
        }
        seen[learner.name] = {k: v for k, v in found.items() if v}
    return {k: v for k, v in seen.items() if v}


def _save(runs: list[LessonRun], seconds: float) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps({"seconds": round(seconds, 1), "runs": [vars(r) for r in runs]}, indent=1))


def _table(runs: list[LessonRun]) -> str:
    lines = [f"{'lesson':<34} {'runs':>4} {'max s':>6} {'budget':>6} {'peak MB':>7} {'CPU s':>6}"]
    for lesson in sorted({r.lesson for r in runs}):
        mine = [r for r in runs if r.lesson == lesson]
        peak = max((r.usage.get("peak_rss_kib", 0) for r in mine), default=0) / 1024
        cpu = max((r.usage.get("cpu_s", 0) + r.usage.get("children_cpu_s", 0) for r in mine), default=0)
        lines.append(f"{lesson:<34} {len(mine):>4} {max(r.seconds for r in mine):>6.1f} "
                     f"{budget_s(lesson[:2]):>6} {peak:>7.0f} {cpu:>6.1f}")
    return "\n".join(lines)


@pytest.mark.timeout(1500)
def test_a_class_runs_the_whole_course_at_once() -> None:
    if sys.platform != "linux":
        pytest.skip("the hub test needs Linux (local users, LocalProcessSpawner)")
    if os.geteuid() != 0:
        print("\nWARNING: the hub test is SKIPPED: it creates local users, so it needs root "
              "(sudo ./course test -m hub)", file=sys.stderr)
        pytest.skip("NOT RUN: the class-on-a-hub test creates local users and needs root (sudo ./course test -m hub)")
    paths = hub_class.lessons()
    started = time.monotonic()
    with hub_class.classroom(5) as hub:
        names = [lr.name for lr in hub.learners]
        plans = _plans(names, paths, hub_class.lessons("zh-CN"))
        together = [({names[0], names[4]}, {Path(p).stem for p in plans[names[4]]})]
        result = hub_class.run_class(hub, plans, together=together, checks=frozenset({names[0]}),
                                     practice=frozenset({names[1]}))
        during = _outside_view(hub.learners, servers_running=True)
        hub.stop()
        after = _outside_view(hub.learners, servers_running=False)
        learners = list(hub.learners)
    gone = [lr.name for lr in learners if _exists(lr.name) or lr.home.exists()]
    _save(result.runs, time.monotonic() - started)
    print(f"\nthe class took {result.seconds:.0f} s; per lesson, the slowest learner:\n{_table(result.runs)}")
    print(f"runs of the zh-CN edition: {sum(r.edition == 'zh-CN' for r in result.runs)}")

    assert not result.errors, f"learners could not work: {result.errors}"
    planned = {(lr, Path(p).stem) for lr, ps in plans.items() for p in ps}
    ran = {(r.learner, r.lesson) for r in result.runs}
    assert ran == planned, f"lessons not run: {sorted(planned - ran)}"
    failed = [f"{r.learner} {r.lesson}: {r.error}" for r in result.runs if r.error]
    assert not failed, "lessons failed in the class:\n" + "\n".join(failed)
    left = [f"{r.learner} {r.lesson}: {r.leftovers}" for r in result.runs if r.leftovers]
    assert not left, "lessons left things behind in the learner's kernel:\n" + "\n".join(left)
    outside = [f"{r.learner} {r.lesson}: {r.non_loopback_binds}" for r in result.runs
               if r.non_loopback_binds and not _allowed_outside_loopback(r.lesson)]
    assert not outside, f"lessons bound outside loopback: {outside}"
    extremes = [dict(e, lesson=r.lesson) for r in result.runs for e in (r.extremes or [])]
    assert {r.lesson for r in result.runs if r.extremes is not None} == {Path(p).stem for p in paths}
    problems = [f"{r.learner} {r.lesson}: {p}" for r in result.runs for p in r.problems]
    assert not problems, "the exercises or closing checks failed:\n" + "\n".join(problems)
    english_steps = {r.lesson: r.practice_steps for r in result.runs if r.learner == names[0]}
    zh_steps = {r.lesson: r.practice_steps for r in result.runs if r.learner == names[1] and r.edition == "zh-CN"}
    assert zh_steps, "the second learner ran no zh-CN lesson"
    differ = {lesson: (steps, english_steps.get(lesson)) for lesson, steps in zh_steps.items()
              if steps != english_steps.get(lesson)}
    assert not differ, f"the zh-CN edition's exercise steps (left) are not the English ones (right): {differ}"
    unclear = [e for e in extremes if e["error"] and not clear_error(e)]
    assert not unclear, f"a slider at its extreme fails without a clear ValueError: {unclear}"
    slow = [e for e in extremes if e["seconds"] > EXTREME_RUN_S]
    assert not slow, f"a slider at its extreme takes over {EXTREME_RUN_S} s: {slow}"
    shared = [f"{r.learner} {r.lesson}: {r.usage.get('transport')} {r.usage.get('ip')}" for r in result.runs
              if r.usage.get("transport") != "ipc" or not r.usage.get("ip", "").startswith(f"/home/{r.learner}/")]
    assert not shared, f"kernels must talk to their server over Unix sockets in the learner's home: {shared}"
    twins = [r for r in result.runs if r.learner in (names[0], names[4]) and r.lesson[:2] in TOGETHER]
    for lesson in {r.lesson for r in twins}:
        starts = [r.started for r in twins if r.lesson == lesson]
        assert len(starts) == 2 and abs(starts[0] - starts[1]) < 5, f"{lesson} did not start together: {starts}"
    assert not during, f"after their lessons, learners still had (servers running): {during}"
    assert not after, f"after the hub stopped, learners still had: {after}"
    assert not gone, f"accounts or homes not removed: {gone}"


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# The outside view the class test relies on must see what a learner could leave behind:
# shown here on this process's own things (no root or hub needed).


def test_outside_view_sees_abstract_names_sockets_and_files(tmp_path: Path) -> None:
    import socket
    import tempfile

    name = f"\0course-hub-view-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix, socket.create_server(("127.0.0.1", 0)) as tcp:
        unix.bind(name)
        unix.listen()
        assert f"@{name[1:]}" in hub_class.abstract_names([os.getpid()])
        port = tcp.getsockname()[1]
        assert any(f":{port:04X} " in s + " " and "state 0A" in s for s in hub_class.inet_sockets(os.getuid()))
    assert f"@{name[1:]}" not in hub_class.abstract_names([os.getpid()])
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="course-hub-view-") as left:
        assert left.name in hub_class.files_owned(os.getuid(), roots=("/tmp",))
    assert os.getpid() in [pid for pid, _ in hub_class.user_processes(os.getuid())]
