"""The graded labs and their tooling (helpers.labs): release, grade, and what grading survives.

Real papermill, real kernels, real sockets. One module fixture releases every lab and grades
a folder with, per lab, the instructor's solution and a fresh student version, plus the
submissions a grader must survive: one that hangs with its timers disabled, one that kills
its kernel, one that floods output, a file that is not a notebook, a submission whose tests
were edited to pass, a stray file and an unknown lab.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from helpers.labs import find_labs
from helpers.labs.source import BEGIN, END, HIDDEN_TAG, SOLUTION_TAG

ROOT = Path(__file__).resolve().parent.parent
LABS = find_labs()
LAB_IDS = [lab.id for lab in LABS]
SOLUTION_BUDGET_S = 20  # each lab's solution, top to bottom in its kernel (issue 7)


def labs_cli(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``python -m helpers.labs ARGS`` as an instructor would."""
    return subprocess.run([sys.executable, "-m", "helpers.labs", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s)


def read_gradebook(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def totals(rows: list[dict[str, str]]) -> dict[tuple[str, str], tuple[float, float]]:
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for r in rows:
        got, top = out.get((r["student"], r["lab"]), (0.0, 0.0))
        out[(r["student"], r["lab"])] = (got + float(r["points"]), top + float(r["max"]))
    return out


def with_task(nb: nbformat.NotebookNode, task: str, source: str) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.get("metadata", {}).get("lab", {}).get("task") == task:
            cell.source = source
            return nb
    raise AssertionError(f"no task {task}")


def processes_mentioning(text: str) -> list[int]:
    """Pids of our processes whose environment mentions `text` (the grader's work paths)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def graded() -> Iterator[dict]:
    # A private temp dir, not tmp_path: pytest prunes old /tmp/pytest-of-<user> dirs when any
    # other pytest session of this user starts, which can delete the work dir mid-grading.
    # A process of our user that no submission started, in its own session and not our child
    # (so the leak check does not count it): a forged results file must not get it killed.
    start = ("import subprocess; print(subprocess.Popen(['sleep', '600'], start_new_session=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    bystander = int(subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, check=True).stdout)
    try:
        with tempfile.TemporaryDirectory(prefix="labs-graded-") as private:
            yield {**_grade_fixture(Path(private), bystander), "bystander": bystander}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bystander, signal.SIGKILL)


def _grade_fixture(base: Path, bystander: int) -> dict:
    released = base / "released"
    result = labs_cli("release", "-o", str(released), "--cohort", "spring", "--student", "stu")
    assert result.returncode == 0, result.stderr
    subs = base / "submissions"
    for lab in LABS:
        (subs / "sol").mkdir(parents=True, exist_ok=True)
        nbformat.write(lab.solution_notebook(), subs / "sol" / f"{lab.id}.ipynb")
        (subs / "stu").mkdir(exist_ok=True)
        (subs / "stu" / f"{lab.id}.ipynb").write_bytes((released / "stu" / f"{lab.id}.ipynb").read_bytes())
    echo, framing, transfer = (lab for lab in LABS[:3])
    # Hangs with SIGALRM and SIGINT ignored: only the papermill cell timeout can stop it.
    hang = with_task(echo.solution_notebook(), "readn", (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n    pass\n"))
    (subs / "hang").mkdir()
    nbformat.write(hang, subs / "hang" / f"{echo.id}.ipynb")
    # Kills its own kernel in the second task: the first task's test must still count.
    crash = with_task(framing.solution_notebook(), "decoder",
                      "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    (subs / "crash").mkdir()
    nbformat.write(crash, subs / "crash" / f"{framing.id}.ipynb")
    # Correct, but prints ~40 MB first.
    flood_nb = transfer.solution_notebook()
    for cell in flood_nb.cells:
        if cell.get("metadata", {}).get("lab", {}).get("task") == "receive_file":
            cell.source = "for _ in range(200_000):\n    print('flood ' * 30)\n" + cell.source
    (subs / "flood").mkdir()
    nbformat.write(flood_nb, subs / "flood" / f"{transfer.id}.ipynb")
    (subs / "garbage").mkdir()
    (subs / "garbage" / f"{echo.id}.ipynb").write_bytes(os.urandom(3000))
    # The student version with every visible test edited to pass, and fake hidden tests added.
    edited = nbformat.read(released / "stu" / f"{echo.id}.ipynb", as_version=4)
    for cell in edited.cells:
        if "test" in cell.metadata.get("tags", []):
            cell.source = "pass"
    edited.cells.append(nbformat.v4.new_code_cell("pass", metadata={"tags": ["hidden-test"],
                                                                     "lab": {"test": "mine", "points": 100}}))
    (subs / "edited").mkdir()
    nbformat.write(edited, subs / "edited" / f"{echo.id}.ipynb")
    weird = nbformat.read(released / "stu" / f"{echo.id}.ipynb", as_version=4)
    weird.metadata.papermill.parameters = [1, 2]
    (subs / "weird").mkdir()
    nbformat.write(weird, subs / "weird" / f"{echo.id}.ipynb")
    # Correct, but rewrites its results file to name the bystander's process group as its
    # kernel's, and leaves a server running in a session of its own (out of the kernel's group).
    sneaky = echo.solution_notebook()
    task = next(c for c in sneaky.cells if c.get("metadata", {}).get("lab", {}).get("task"))
    task.source = (
        "import json, subprocess\nfrom helpers.labs import harness\n"
        "with open(harness._results.name, 'w') as forged:\n"
        f"    forged.write(json.dumps({{'event': 'start', 'pid': {bystander}, 'pgid': {bystander}}}) + '\\n')\n"
        "escaped = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        f"open({str(base / 'escaped.pid')!r}, 'w').write(str(escaped.pid))\n" + task.source)
    (subs / "sneaky").mkdir()
    nbformat.write(sneaky, subs / "sneaky" / f"{echo.id}.ipynb")
    (subs / "stray.txt").write_text("not in a student folder")
    (subs / "lost").mkdir()
    (subs / "lost" / "99-nothing.ipynb").write_text("{}")

    out = base / "graded"
    started = time.monotonic()
    result = labs_cli("grade", str(subs), "-o", str(out), "-j", "2", "--cell-timeout", "20", "--test-timeout", "10")
    seconds = time.monotonic() - started
    return {"base": base, "subs": subs, "out": out, "released": released, "result": result, "seconds": seconds,
            "rows": read_gradebook(out / "gradebook.csv") if (out / "gradebook.csv").exists() else []}


def test_there_are_six_labs() -> None:
    assert len(LABS) >= 6, LAB_IDS


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_lab_committed_clean_with_kernelspec(lab) -> None:
    nb = lab.nb
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{lab.id}: cells {dirty} have outputs; commit labs without outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert any(t.hidden for t in lab.tests) and any(not t.hidden for t in lab.tests)


def test_grader_finished_and_reported(graded: dict) -> None:
    result = graded["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    print(f"graded {len({(r['student'], r['lab']) for r in graded['rows']})} submissions in "
          f"{graded['seconds']:.1f} s with -j 2")


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_solution_scores_full_marks_within_budget(graded: dict, lab) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "sol" and r["lab"] == lab.id]
    assert [r["test"] for r in rows] == [t.name for t in lab.tests]
    failed = [(r["test"], r["error"]) for r in rows if r["points"] != r["max"]]
    assert not failed, f"{lab.id} solution lost points: {failed}"
    executed = nbformat.read(graded["out"] / "work" / "sol" / lab.id / "executed.ipynb", as_version=4)
    seconds = executed.metadata.papermill.duration
    print(f"{lab.id}: solution ran in {seconds:.1f} s in its kernel")
    assert seconds <= SOLUTION_BUDGET_S, f"{lab.id} took {seconds:.1f} s (budget {SOLUTION_BUDGET_S} s)"


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_fresh_student_version_scores_zero(graded: dict, lab) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "stu" and r["lab"] == lab.id]
    assert len(rows) == len(lab.tests)
    assert all(float(r["points"]) == 0 and r["error"] for r in rows), rows
    assert any("NotImplementedError" in r["error"] for r in rows)
    assert (graded["out"] / "feedback" / "stu" / f"{lab.id}.ipynb").exists()


def test_hanging_submission_is_stopped_and_others_graded(graded: dict) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "hang"]
    assert rows and all(float(r["points"]) == 0 for r in rows)
    assert any("cell timeout" in r["error"] for r in rows), rows
    assert totals(graded["rows"])[("sol", LABS[0].id)][0] == LABS[0].max_points


def test_kernel_killed_keeps_earlier_scores(graded: dict) -> None:
    rows = {r["test"]: r for r in graded["rows"] if r["student"] == "crash"}
    assert float(rows["encode_basic"]["points"]) == 1, "the test before the crash counts"
    later = [r for name, r in rows.items() if name != "encode_basic"]
    assert later and all(float(r["points"]) == 0 and "kernel died" in r["error"] for r in later), later


def test_output_flood_is_capped_and_graded(graded: dict) -> None:
    lab = LABS[2]
    assert totals(graded["rows"])[("flood", lab.id)] == (lab.max_points, lab.max_points)
    executed = graded["out"] / "work" / "flood" / lab.id / "executed.ipynb"
    assert executed.stat().st_size < 2_000_000, f"{executed.stat().st_size} bytes stored"
    assert "output limit reached" in executed.read_text()


def test_not_a_notebook_is_an_error_row(graded: dict) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "garbage"]
    assert len(rows) == len(LABS[0].tests)
    assert all(r["error"].startswith("not a notebook") and float(r["points"]) == 0 for r in rows)


def test_malformed_parameters_are_an_error_row(graded: dict) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "weird"]
    assert len(rows) == len(LABS[0].tests)
    assert all("parameters is not a mapping" in r["error"] and float(r["points"]) == 0 for r in rows), rows


def test_edited_tests_are_graded_with_the_pristine_ones(graded: dict) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "edited"]
    assert [r["test"] for r in rows] == [t.name for t in LABS[0].tests], "the learner's extra test is ignored"
    assert all(float(r["points"]) == 0 for r in rows), rows


def test_stray_and_unknown_files_are_reported(graded: dict) -> None:
    by_student = {r["student"]: r for r in graded["rows"] if r["test"] == "-"}
    assert "folder named after the student" in by_student["stray"]["error"]
    assert "not one of the labs" in by_student["lost"]["error"]


def test_nothing_left_running_after_grading(graded: dict) -> None:
    deadline = time.monotonic() + 5  # a killed kernel's children may take a moment to be reaped
    while (left := processes_mentioning(str(graded["out"]))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left by grading: {left}"


def test_forged_results_cannot_aim_the_cleanup_and_escapes_are_caught(graded: dict) -> None:
    lab = LABS[0]
    assert totals(graded["rows"])[("sneaky", lab.id)] == (lab.max_points, lab.max_points), "its tests still ran"
    assert alive(graded["bystander"]), "the grader killed a process group the submission named"
    escaped = int((graded["base"] / "escaped.pid").read_text())
    deadline = time.monotonic() + 5
    while alive(escaped) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(escaped), "a process the submission started with setsid() outlived grading"


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_feedback_notebook_has_the_score(graded: dict) -> None:
    fb = nbformat.read(graded["out"] / "feedback" / "sol" / f"{LABS[0].id}.ipynb", as_version=4)
    assert f"**{LABS[0].max_points:g} / {LABS[0].max_points:g}** points" in fb.cells[0].source


def _distinct_lines(cells: list, others: list) -> set[str]:
    """Non-trivial lines of `cells` that appear in none of `others`."""
    elsewhere = {line.strip() for c in others for line in c.source.splitlines()}
    return {s for c in cells for line in c.source.splitlines()
            if len(s := line.strip()) > 12 and s not in elsewhere and not s.startswith("#")}


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_released_files_hold_no_solution_or_hidden_test(graded: dict, lab) -> None:
    path = graded["released"] / "stu" / f"{lab.id}.ipynb"
    text = path.read_text()
    released_lines = {line.strip() for c in nbformat.read(path, as_version=4).cells for line in c.source.splitlines()}
    hidden = [c for c in lab.nb.cells if HIDDEN_TAG in c.metadata.get("tags", [])]
    visible = [c for c in lab.nb.cells if c not in hidden]
    solution_lines = set()
    for cell in lab.nb.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            inside = False
            for line in cell.source.splitlines():
                if BEGIN in line:
                    inside = True
                elif END in line:
                    inside = False
                elif inside and len(line.strip()) > 12:
                    solution_lines.add(line.strip())
    outside = {line.strip() for c in lab.nb.cells for line in stripped_regions(c.source).splitlines()}
    leaked = sorted((solution_lines - outside) & released_lines)
    assert not leaked, f"solution text in the released {lab.id}: {leaked[:3]}"
    leaked = sorted(_distinct_lines(hidden, visible) & released_lines)
    assert not leaked, f"hidden-test text in the released {lab.id}: {leaked[:3]}"
    assert "# Hidden test " not in text and BEGIN not in text and "hidden-test" not in text
    assert "NotImplementedError" in text


def stripped_regions(source: str) -> str:
    out, inside = [], False
    for line in source.splitlines():
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def test_release_per_student_gives_different_numbers(tmp_path: Path) -> None:
    result = labs_cli("release", "01", "-o", str(tmp_path), "--cohort", "c", "--student", "ann", "--student", "ben")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    seeds = {who: labs["01-echo"]["seed"] for who, labs in manifest["released"].items()}
    assert seeds["ann"] != seeds["ben"], seeds
    for who, seed in seeds.items():
        nb = nbformat.read(tmp_path / who / "01-echo.ipynb", as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and f"seed = {seed}" in injected[0].source
        assert nb.metadata.papermill.parameters == {"seed": seed}
    fixed = labs_cli("release", "01", "-o", str(tmp_path / "fixed"), "--cohort", "c", "-p", "seed=42")
    assert fixed.returncode == 0 and "seed = 42" in (tmp_path / "fixed" / "c" / "01-echo.ipynb").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "99", "-o", "{tmp}"], "error: no lab called '99'; the labs are: 01-echo"),
        (["release", "01", "-o", "{tmp}", "-p", "seed=abc"], "error: 01-echo: parameter seed must be int, got 'abc'"),
        (["release", "01", "-o", "{tmp}", "-p", "seed=-5"],
         "error: 01-echo: parameter seed=-5 is out of range 0..999999"),
        (["release", "-o", "{tmp}", "-p", "colour=red"], "error: no lab here has parameter(s) colour"),
        (["release", "-o", "{tmp}", "-p", "seed"], "error: -p wants name=value, got 'seed'"),
        (["release", "-o", "{tmp}", "--student", "../x"], "error: '../x' cannot be a folder name"),
        (["grade", "{tmp}/missing", "-o", "{tmp}/out"], "is not a folder of submissions"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "-j", "0"], "error: -j must be at least 1, got 0"),
    ],
)
def test_bad_input_gives_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = labs_cli(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_grading_30_submissions_with_two_jobs() -> None:
    with tempfile.TemporaryDirectory(prefix="labs-30-") as private:
        _grade_30(Path(private))


def _grade_30(tmp_path: Path) -> None:
    released = tmp_path / "released"
    assert labs_cli("release", "-o", str(released), "--cohort", "big", "--student", "s").returncode == 0
    subs = tmp_path / "subs"
    expected = {}
    for i in range(30):
        lab = LABS[i % len(LABS)]
        student = f"learner{i:02d}"
        (subs / student).mkdir(parents=True)
        if i % 2:
            nbformat.write(lab.solution_notebook(), subs / student / f"{lab.id}.ipynb")
            expected[(student, lab.id)] = lab.max_points
        else:
            (subs / student / f"{lab.id}.ipynb").write_bytes((released / "s" / f"{lab.id}.ipynb").read_bytes())
            expected[(student, lab.id)] = 0.0
    started = time.monotonic()
    result = labs_cli("grade", str(subs), "-o", str(tmp_path / "out"), "-j", "2")
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    got = {k: v[0] for k, v in totals(read_gradebook(tmp_path / "out" / "gradebook.csv")).items()}
    assert got == expected
    print(f"graded 30 submissions with -j 2 in {seconds:.1f} s ({seconds / 30:.1f} s each)")


def test_manifest_parameters_beat_the_submitted_ones(tmp_path: Path) -> None:
    from helpers.labs.grade import _parameters
    from helpers.labs.source import LabError

    lab = LABS[0]
    result = labs_cli("release", lab.id, "-o", str(tmp_path), "--cohort", "c", "--student", "ann")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    submitted = nbformat.read(tmp_path / "ann" / f"{lab.id}.ipynb", as_version=4)
    given = manifest["released"]["ann"][lab.id]["seed"]
    submitted.metadata.papermill.parameters = {"seed": (given + 1) % 1_000_000}  # the learner edits their seed
    assert _parameters(lab, "ann", submitted, manifest) == {"seed": given}
    assert _parameters(lab, "ann", submitted, None) == {"seed": (given + 1) % 1_000_000}
    with pytest.raises(LabError, match=r"^manifest has no release of 01-echo to 'bob'$"):
        _parameters(lab, "bob", submitted, manifest)
    submitted.metadata.papermill.parameters = {"seed": "7; import os"}
    with pytest.raises(LabError, match=r"parameter seed must be int"):
        _parameters(lab, "ann", submitted, None)
