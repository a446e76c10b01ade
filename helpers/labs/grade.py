"""Grade: a folder of submissions -> a gradebook CSV and a feedback notebook per learner.

Theory of operation. Submissions sit in ``<folder>/<student>/<lab id>.ipynb``. For each one
the grader

1. reads it (a file that is not a notebook is an error row, not a crash);
2. takes the parameters the student was given (``manifest.json`` from release if passed,
   else the submission's ``metadata.papermill.parameters``), checked like release does;
3. builds the graded notebook from the *pristine* lab (``Lab.graded_notebook``): only the
   learner's task cells are taken from the submission, so an edited or deleted test does
   not matter;
4. runs it in a worker process (``python -m helpers.labs.worker``) that calls papermill
   with a per-cell timeout; the kernel is fresh, and ``harness`` appends one JSON line per
   test to a results file as it goes;
5. gives the worker a wall-clock budget; past it, the worker's process group is killed;
   then every process still carrying this submission's ``GRADING_ENV`` mark in its
   environment is killed with its process group: the kernel (it runs in its own session,
   and ipykernel would only notice its parent's death a second later) and whatever servers
   the submission left running, even in a session of their own. The mark is read from
   ``/proc``, not from anything the kernel wrote, so a forged results file cannot aim the
   kill at someone else's processes;
6. scores from the results file: every test of the lab gets a row, and one that never
   reported gets 0 with the reason (timeout, dead kernel, ...).

The results and status files are written from inside the learner's kernel, so they are
read as untrusted text (``read_results``, ``read_status``: pure functions): a line that is
not JSON, of the wrong shape, for a test the lab does not have, or with points that are
not a number in 0..max (NaN, negative, too many) scores nothing and is reported in an
extra ``-`` row of 0/0 points; a test never gets more than its max. At most
``MAX_RESULTS_BYTES`` of the file are read.

``-j N`` runs N workers at once (threads that each wait on a subprocess).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from ..observe import proc_stat
from .harness import DEADLINE_ENV, RESULTS_ENV
from .source import Lab, LabError, Test, find_labs

__all__ = ["Row", "Outcome", "Results", "grade_folder", "read_results", "read_status", "GRADEBOOK_FIELDS",
           "GRADING_ENV", "marked_processes", "kill_marked"]

GRADEBOOK_FIELDS = ["student", "lab", "test", "points", "max", "error"]
#: Environment entry set for a submission's worker, and so for its kernel and everything
#: they start: the grader finds what a submission left running by it.
GRADING_ENV = "LAB_GRADER_SUBMISSION"
#: Characters of output a submission may print in total; enough for any honest lab.
OUTPUT_LIMIT = 100_000
#: Largest submission file read, in bytes: a lab notebook without outputs is ~30 kB.
MAX_SUBMISSION_BYTES = 20 * 1024 * 1024
#: Largest part of a results file read: an honest lab writes a few hundred bytes per cell.
MAX_RESULTS_BYTES = 4 * 1024 * 1024
#: Problems with the results file listed in the gradebook (the rest are counted).
MAX_PROBLEMS_SHOWN = 5


@dataclass
class Row:
    """One gradebook line."""

    student: str
    lab: str
    test: str
    points: float
    max: float
    error: str = ""


@dataclass
class Outcome:
    """One submission's result: its rows, the time it took, and the feedback notebook."""

    student: str
    lab: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    feedback: Path | None = None

    @property
    def points(self) -> float:
        return sum(r.points for r in self.rows)

    @property
    def max(self) -> float:
        return sum(r.max for r in self.rows)


@dataclass
class Results:
    """What a results file says, checked: {test: (points, error)}, task events, and the
    problems found (one line each, for the gradebook)."""

    tests: dict[str, tuple[float, str]] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_results(text: str, tests: list[Test]) -> Results:
    """Parse the JSON lines the harness wrote (untrusted: the learner's kernel wrote them).

    The first report of each test counts. A test reported with points outside 0..its max,
    or that are not a finite number, or with an error that is not text, scores 0 with the
    reason; lines that are not JSON objects, of an unknown event, or for a test the lab does
    not have are skipped and named in ``problems``. Never raises for any `text`.
    """
    out = Results()
    maxima = {t.name: t.points for t in tests}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"results line {number}"
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            out.problems.append(f"{where} is not JSON: {line[:60]!r}")
            continue
        if not isinstance(event, dict):
            out.problems.append(f"{where} is not a JSON object: {line[:60]!r}")
            continue
        kind = event.get("event")
        if kind == "start":
            continue  # the kernel started (its pid is there for a person reading the file)
        elif kind == "test":
            name = event.get("test")
            if not isinstance(name, str) or name not in maxima:
                out.problems.append(f"{where}: a report for {name!r:.60}, which is not a test of this lab")
                continue
            if name in out.tests:
                continue  # the first report counts
            points, error, top = event.get("points"), event.get("error", ""), maxima[name]
            if not isinstance(error, str):
                error = f"the report's error is not text: {error!r:.100}"
            if not _is_number(points) or not 0 <= points <= top:
                problem = f"{where}: test {name} reports points={points!r:.40}, not a number in 0..{top:g}"
                out.problems.append(problem)
                out.tests[name] = (0.0, error or problem)
            else:
                out.tests[name] = (0.0 if error else float(points), error[:500])
        elif kind in ("task", "setup"):
            task, error = str(event.get("task", "a lab cell"))[:100], str(event.get("error", ""))[:500]
            out.tasks.append({"task": task, "error": error})
        else:
            out.problems.append(f"{where}: unknown event {kind!r:.40}")
    return out


def read_status(text: str) -> str:
    """The error the worker's status file records ("" if every cell finished).

    Untrusted too (the kernel could overwrite it): anything but ``{"error": str}`` is
    reported as what it is, never raised.
    """
    try:
        status = json.loads(text)
    except (ValueError, RecursionError):
        return f"the grading worker's status file is not JSON: {text[:60]!r}"
    if not isinstance(status, dict) or not isinstance(status.get("error", ""), str):
        return f"the grading worker's status file has the wrong shape: {text[:60]!r}"
    return status.get("error", "")[:500]


def _read_text(path: Path, limit: int) -> tuple[str, bool]:
    """At most `limit` bytes of `path` as text (bad UTF-8 replaced); and whether it was cut."""
    with open(path, "rb") as fh:
        raw = fh.read(limit + 1)
    return raw[:limit].decode("utf-8", errors="replace"), len(raw) > limit


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def marked_processes(mark: str) -> dict[int, int]:
    """{pid: process group} of the processes whose environment holds the entry `mark`
    (``NAME=value``). Only our own user's environments are readable, so only ours are found."""
    entry, found = mark.encode(), {}
    for proc in os.scandir("/proc"):
        if not proc.name.isdigit():
            continue
        try:
            with open(f"/proc/{proc.name}/environ", "rb") as fh:
                if entry not in fh.read().split(b"\0"):
                    continue
            found[int(proc.name)] = int(proc_stat(f"/proc/{proc.name}/stat")[2])
        except OSError:  # gone, or not ours
            continue
    return found


def kill_marked(mark: str, rounds: int = 5) -> int:
    """SIGKILL every process holding `mark` and its process group (not the grader's own);
    repeat while new ones appear (a process may fork as we look). Return how many were found."""
    own, seen = os.getpgid(0), set()
    for _ in range(rounds):
        found = {pid: group for pid, group in marked_processes(mark).items() if pid not in seen}
        if not found:
            break
        seen |= set(found)
        for group in set(found.values()) - {own}:  # the worker runs in its own session, never in ours
            _kill_group(group)
        time.sleep(0.01)
    return len(seen)


def _lab_for(path: Path, labs: dict[str, Lab]) -> Lab | None:
    stem = path.name.split(".")[0]
    if stem in labs:
        return labs[stem]
    number = stem[:2]
    matches = [lab for lab in labs.values() if number.isdigit() and lab.id.startswith(number + "-")]
    return matches[0] if len(matches) == 1 else None


def _parameters(lab: Lab, student: str, nb: Any, manifest: dict[str, Any] | None) -> dict[str, Any]:
    if manifest is not None:
        try:
            given = manifest["released"][student][lab.id]
        except KeyError:
            raise LabError(f"manifest has no release of {lab.id} to {student!r}") from None
    else:
        stored = nb.get("metadata", {}).get("papermill", {}).get("parameters", {})
        if not isinstance(stored, dict):
            raise LabError(f"metadata.papermill.parameters is not a mapping: {stored!r:.100}")
        given = {k: v for k, v in stored.items() if k in lab.parameter_defaults}
    return lab.validate_parameters(given)


def _grade_one(
    path: Path,
    student: str,
    labs: dict[str, Lab],
    out_dir: Path,
    manifest: dict[str, Any] | None,
    cell_timeout_s: float,
    test_timeout_s: float,
    submission_timeout_s: float,
) -> Outcome:
    started = time.monotonic()
    lab = _lab_for(path, labs)
    if lab is None:
        outcome = Outcome(student, path.name)
        outcome.error = f"{path.name} is not one of the labs ({', '.join(labs)})"
        outcome.rows = [Row(student, path.name, "-", 0.0, 0.0, outcome.error)]
        return outcome
    outcome = Outcome(student, lab.id)

    def fail_all(error: str, results: Results | None = None) -> None:
        results = results or Results()
        outcome.error = outcome.error or error
        outcome.rows = []
        for test in lab.tests:
            got = results.tests.get(test.name)
            if got is not None:
                points, why = got
                outcome.rows.append(Row(student, lab.id, test.name, min(points, test.points), test.points, why))
            else:
                outcome.rows.append(Row(student, lab.id, test.name, 0.0, test.points, error))
        if results.problems:
            shown = results.problems[:MAX_PROBLEMS_SHOWN]
            more = len(results.problems) - len(shown)
            note = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
            outcome.rows.append(Row(student, lab.id, "-", 0.0, 0.0, f"results file ignored in part: {note}"))

    work = out_dir / "work" / student / lab.id
    work.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > MAX_SUBMISSION_BYTES:
            raise LabError(f"submission is {path.stat().st_size} bytes, over the {MAX_SUBMISSION_BYTES}-byte limit")
        try:
            submission = nbformat.read(path, as_version=4)
        except Exception as exc:  # noqa: BLE001 (whatever the file is, it is "not a notebook")
            raise LabError(f"not a notebook: {type(exc).__name__}: {str(exc)[:200]}") from exc
        if not hasattr(submission, "cells"):
            raise LabError("not a notebook: no cells")
        params = _parameters(lab, student, submission, manifest)
        try:
            graded = lab.graded_notebook(submission, test_timeout_s=test_timeout_s, output_limit=OUTPUT_LIMIT)
        except (AttributeError, TypeError, KeyError) as exc:  # a cell or its metadata of the wrong shape
            raise LabError(f"malformed notebook: {type(exc).__name__}: {str(exc)[:200]}") from exc
    except LabError as exc:
        fail_all(str(exc))
        outcome.seconds = time.monotonic() - started
        return outcome

    graded_path, output_path = work / "graded.ipynb", work / "executed.ipynb"
    results_path, status_path = work / "results.jsonl", work / "status.json"
    for stale in (output_path, results_path, status_path):
        stale.unlink(missing_ok=True)
    nbformat.write(graded, graded_path)
    (work / "parameters.json").write_text(json.dumps(params))
    env = dict(os.environ)
    env[RESULTS_ENV] = str(results_path)
    env[DEADLINE_ENV] = str(submission_timeout_s + 5)
    mark = f"{GRADING_ENV}={work.resolve()}"
    env[GRADING_ENV] = str(work.resolve())  # inherited by the kernel and all it starts: see kill_marked
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "helpers.labs.worker", str(graded_path), str(output_path),
               str(work / "parameters.json"), str(status_path), str(cell_timeout_s)]
    with open(work / "worker.log", "wb") as log:
        worker = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            worker.wait(submission_timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(worker.pid)
            worker.wait()
    _kill_group(worker.pid)  # anything the worker started in its own group

    results = Results()
    if results_path.exists():
        text, cut = _read_text(results_path, MAX_RESULTS_BYTES)
        if cut:
            text = text[: text.rfind("\n") + 1]  # a line cut in half is not a report
        results = read_results(text, lab.tests)
        if cut:
            results.problems.append(f"results file over {MAX_RESULTS_BYTES} bytes; the rest was not read")
    tasks = results.tasks
    kill_marked(mark)  # the kernel and whatever servers the submission left running
    status_error = read_status(_read_text(status_path, 64 * 1024)[0]) if status_path.exists() else ""
    if timed_out:
        reason = f"not run: the submission was stopped after {submission_timeout_s:g} s"
    elif status_error:
        reason = f"not run: {status_error}"
    elif worker.returncode != 0:
        reason = f"not run: the grading worker exited with code {worker.returncode}"
    else:
        reason = "not run (the test cell did not report)"
    fail_all(reason, results)
    if timed_out or status_error or worker.returncode != 0 or len(results.tests) < len(lab.tests):
        outcome.error = reason
    else:
        outcome.error = ""
    outcome.seconds = time.monotonic() - started
    outcome.feedback = _write_feedback(outcome, lab, tasks, output_path if output_path.exists() else graded_path,
                                       out_dir / "feedback" / student / f"{lab.id}.ipynb", params)
    return outcome


def _trim_outputs(nb: Any, limit: int = 10_000) -> None:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out and len(out["text"]) > limit:
                out["text"] = out["text"][:limit] + "\n[feedback: output trimmed]\n"


def _write_feedback(outcome: Outcome, lab: Lab, tasks: list[dict[str, Any]], run: Path, target: Path,
                    params: dict[str, Any]) -> Path:
    try:
        nb = nbformat.read(run, as_version=4)
    except Exception:  # noqa: BLE001 (a half-written output: fall back to an empty notebook)
        nb = nbformat.v4.new_notebook()
    _trim_outputs(nb)
    lines = [f"# Feedback: {lab.title}", "", f"Student **{outcome.student}**, parameters `{params}`: "
             f"**{outcome.points:g} / {outcome.max:g}** points.", ""]
    if outcome.error:
        lines += [f"Grading note: {outcome.error}", ""]
    lines += ["| test | points | max | error |", "|---|---|---|---|"]
    for row in outcome.rows:
        error = row.error.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row.test} | {row.points:g} | {row.max:g} | {error} |")
    broken = [t for t in tasks if t.get("error")]
    if broken:
        lines += ["", "Cells that raised (see their output below):", ""]
        lines += [f"- {t.get('task', 'a lab cell')}: {t['error']}" for t in broken]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("\n".join(lines)))
    nb.metadata["kernelspec"] = lab.nb.metadata.get("kernelspec", {})
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def grade_folder(
    submissions: Path,
    out_dir: Path,
    *,
    jobs: int = 1,
    manifest: Path | None = None,
    labs_dir: Path | None = None,
    cell_timeout_s: float = 60.0,
    test_timeout_s: float = 15.0,
    submission_timeout_s: float = 180.0,
    progress: bool = False,
) -> list[Outcome]:
    """Grade every ``<submissions>/<student>/<file>``; write ``out_dir/gradebook.csv``.

    Returns one Outcome per submitted file, in (student, file) order. Raises LabError for a
    missing folder, a bad manifest or a bad option; never for a bad submission.
    """
    if not submissions.is_dir():
        raise LabError(f"{submissions} is not a folder of submissions (<folder>/<student>/<lab>.ipynb)")
    if jobs < 1:
        raise LabError(f"-j must be at least 1, got {jobs}")
    for name, value in [("cell timeout", cell_timeout_s), ("test timeout", test_timeout_s),
                        ("submission timeout", submission_timeout_s)]:
        if not value > 0:
            raise LabError(f"the {name} must be > 0 seconds, got {value}")
    labs = {lab.id: lab for lab in find_labs(labs_dir)}
    if not labs:
        raise LabError(f"no labs found in {labs_dir}")
    manifest_data = None
    if manifest is not None:
        try:
            manifest_data = json.loads(manifest.read_text())
            manifest_data["released"]  # noqa: B018 (checks the shape)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{manifest}: not a release manifest.json ({exc})") from exc
    todo: list[tuple[Path, str]] = []
    for entry in sorted(submissions.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            todo += [(f, entry.name) for f in sorted(entry.iterdir()) if f.is_file() and not f.name.startswith(".")]
        else:
            todo.append((entry, entry.stem))
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[Path, str]) -> Outcome:
        path, student = item
        if path.parent == submissions:
            outcome = Outcome(student, path.name, error="put each student's files in a folder named after the student")
            outcome.rows = [Row(student, path.name, "-", 0.0, 0.0, outcome.error)]
            return outcome
        try:
            return _grade_one(path, student, labs, out_dir, manifest_data, cell_timeout_s, test_timeout_s,
                              submission_timeout_s)
        except Exception as exc:  # noqa: BLE001 (one submission must not stop the others)
            outcome = Outcome(student, path.name, error=f"grader error: {type(exc).__name__}: {exc}")
            outcome.rows = [Row(student, path.name, "-", 0.0, 0.0, outcome.error)]
            return outcome

    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        iterator = pool.map(one, todo)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(todo), desc="grading", unit="submission")
        outcomes = list(iterator)
    with open(out_dir / "gradebook.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(GRADEBOOK_FIELDS)
        for outcome in outcomes:
            for r in outcome.rows:
                writer.writerow([r.student, r.lab, r.test, f"{r.points:g}", f"{r.max:g}", r.error])
    return outcomes
