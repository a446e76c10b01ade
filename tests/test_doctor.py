"""helpers.doctor: the table agrees with the probes the lessons ask, its account of the
lessons is consistent, ./course doctor prints it and exits 0, and progress reads the
learner's progress file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import capture, completion, doctor, filters, netns
from helpers.core import features
from helpers.practice import store

ROOT = Path(__file__).resolve().parent.parent


def test_every_capability_is_probed_and_explained() -> None:
    rows = doctor.findings()
    assert [r.key for r in rows] == list(doctor.ABOUT)
    for r in rows:
        assert r.what and r.found and r.why, r
        assert all(re.fullmatch(r"\d\d", n) for n in r.lessons), r
    by_key = {r.key: r for r in rows}
    major, minor = features.kernel_version()
    assert by_key["kernel"].found.startswith(f"{major}.{minor} (")
    soft, _hard = features.nofile_limits()
    assert by_key["nofile"].found.startswith(f"soft {soft:,}, " if soft >= 0 else "soft unlimited")


def test_the_table_says_what_the_lessons_probes_say() -> None:
    """The doctor asks the functions the lessons ask: the same answers, here and now."""
    rows = {r.key: r for r in doctor.findings()}
    assert rows["netns"].ok == netns.support().available and rows["netns"].found == netns.support().reason
    mode, why = capture.availability()
    assert rows["capture"].ok == (mode is not None) and why in rows["capture"].found
    assert rows["socket_filter"].ok == filters.support()[0]
    assert rows["io_uring"].ok == completion.io_uring_status().usable
    assert rows["ip_local_port_range"].ok == features.port_range_option().available
    for name in features.PROGRAMS:
        assert rows[name].ok == (features.find_program(name) is not None), name


def test_the_gates_name_known_lessons_and_probes() -> None:
    notebooks = {p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")}
    for gate in doctor.GATES:
        assert gate.lesson in notebooks, gate
        assert gate.kind in ("recording", "other"), gate
        for alternative in gate.needs:
            for probe in alternative:
                assert probe in features.SWITCHES, (gate, probe)
                assert gate.lesson in doctor.ABOUT[probe][2], f"ABOUT[{probe!r}] should list lesson {gate.lesson}"


def test_a_gate_is_live_by_any_of_its_ways() -> None:
    window = next(g for g in doctor.GATES if g.lesson == "07" and "ports" in g.experiment)
    assert window.way({"ip_local_port_range": True, "netns": True}) == ("ip_local_port_range",)
    assert window.way({"ip_local_port_range": False, "netns": True}) == ("netns",)
    assert not window.live({"ip_local_port_range": False, "netns": False})
    bottleneck = next(g for g in doctor.GATES if g.lesson == "10" and "bottleneck" in g.experiment)
    assert not bottleneck.live({"netns": True, "tc": False}) and bottleneck.live({"netns": True, "tc": True})


def test_the_plan_follows_a_switch() -> None:
    """With namespaces and capture switched off, every experiment that needs them is shown
    as a recording or another way, and the report says so in both its forms."""
    with features.pretend_missing("netns", "capture"):
        report = doctor.report()
    plan = {p.lesson: p for p in report.plan}
    for gate in doctor.GATES:
        if all({"netns", "capture"} & set(alt) for alt in gate.needs):
            assert (gate, False) in plan[gate.lesson].experiments, gate
    text = " ".join(str(report).split())  # as read, whatever the line wrapping
    assert "NO user + network namespaces: user + network namespaces are switched off by " in text
    assert "02 The TCP handshake: the handshake on the wire: RECORDED: a capture recorded earlier" in text
    assert "<b>RECORDED</b>: a capture recorded earlier" in report._repr_html_()


def test_course_doctor_prints_the_table_and_exits_0() -> None:
    done = subprocess.run(["./course", "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("What this machine allows\n"), done.stdout[:200]
    assert "What each lesson shows here" in done.stdout
    for what, _why, _lessons in doctor.ABOUT.values():
        assert f"  {what}: " in done.stdout, what
    wrong = subprocess.run([sys.executable, "-m", "helpers.doctor", "--fix"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: python -m helpers.doctor"), wrong.stderr


def test_progress_reads_the_progress_file_and_lists_the_labs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(store.ENV, str(tmp_path / "progress.json"))
    assert store.record("03", 2, "a title", "passed", True) == ""
    assert store.record("03", 1, "a title", "not yet", False) == ""
    shown = doctor.progress()
    row = next(r for r in shown.lessons if r[0] == "03")
    assert row[2] == 1 and row[3] >= 3, row
    assert all(p == 0 for n, _t, p, _m in shown.lessons if n != "03")
    assert [name for name, _ in shown.labs] == sorted(p.name for p in (ROOT / "labs").glob("[0-9][0-9]-*.ipynb"))
    assert all(title and not title.startswith("#") for _, title in shown.labs)
    assert shown.where == str(tmp_path / "progress.json")
    assert f"Exercises passed: 1 of {sum(r[3] for r in shown.lessons)}" in str(shown)


def test_the_start_here_notebook_links_resolve() -> None:
    nb = json.loads((ROOT / "notebooks" / "00-start-here.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    links = re.findall(r"\]\(([^)#]+\.(?:ipynb|md))\)", text)
    missing = [link for link in links if not (ROOT / "notebooks" / link).exists()]
    assert links and not missing, missing
    lessons = {p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")} - {"00-start-here.ipynb"}
    assert lessons <= set(links), f"lessons the start-here page does not list: {lessons - set(links)}"


def test_doctor_loads_no_plotting_and_works_without_the_venv() -> None:
    """./course doctor runs before any setup: the doctor needs the standard library only."""
    code = "import sys; from helpers import doctor; doctor.report(); print(sorted(m for m in sys.modules " \
           "if m.split('.')[0] in ('matplotlib', 'ipywidgets', 'IPython', 'nbformat', 'zmq')))"
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
