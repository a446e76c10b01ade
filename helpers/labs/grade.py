"""Grade: a folder of submissions -> one record per submission, gradebooks and feedback notebooks.

Theory of operation. Submissions sit in ``<folder>/<student>/<lab id>.ipynb``. For each one
the grader (this process, trusted, never running learner code):

1. reads it (a file that is not a notebook is an error row, not a crash) and takes only
   the learner's task cells (``Lab.submitted_tasks``); every test, hidden or not, comes
   from the pristine lab, so editing or adding tests changes nothing;
2. takes the parameters the student was given (``manifest.json`` from release, else the
   submission's ``metadata.papermill.parameters``), checked like release does;
3. skips it if ``results/<student>/<lab>.json`` already holds a grade of this very
   submission (same bytes, same lab version, parameters and grader): grading resumes
   after an interruption, and ``--regrade`` forces a student, a lab or one test again;
4. starts the trusted runner (``runner``) with the job on its stdin, in a sandbox of its
   own (``sandbox``: user + PID + mount + network namespaces, rlimits) or, where the
   kernel refuses namespaces, directly, with a loud warning in every gradebook row;
   the runner starts the learner's process and reports one JSON line per test on its
   stdout, which only this process reads;
5. gives it a wall-clock budget (``--submission-timeout``); then kills it: in the sandbox
   the whole PID namespace goes with it; in the fallback every process carrying the
   submission's mark in its environment (read from ``/proc``) is killed too;
6. scores: every test of the lab gets a row; one that never reported gets 0 with the
   reason. The record is written at once (``books.save_outcome``), then the feedback.

After the last submission, every gradebook is written from the records (``books``), with
the late policy applied (``late``). ``--shard K/N`` grades a stable share of the
submissions (by a hash of student and lab), and ``merge`` combines the shards' records.
``-j N`` grades N submissions at once.

The runner's report is read as untrusted text all the same (``read_results``): a line
that is not JSON, of the wrong shape, for a test the lab does not have, or with points
that are not a number in 0..max scores nothing and is named in a ``-`` row; at most
``MAX_RESULTS_BYTES`` are read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..observe import proc_stat
from . import sandbox
from .books import EXPORTS, Outcome, Row, load_outcomes, read_roster, save_outcome, write_books
from .late import Penalty, file_time, lab_named, lateness, parse_penalty, read_times, resolve_deadlines
from .remote import process_tree
from .source import Lab, LabError, Test, find_labs

__all__ = ["Options", "Results", "grade_folder", "merge", "read_results", "GRADING_ENV", "marked_processes",
           "kill_marked", "parse_shard", "parse_regrade", "shard_of", "GRADER_VERSION"]

#: Changes when grading would score the same submission differently: older records are regraded.
GRADER_VERSION = "2"
#: Environment entry set for a submission's runner and learner process (the fallback's cleanup).
GRADING_ENV = "LAB_GRADER_SUBMISSION"
#: Characters of output a submission may print in total; enough for any honest lab.
OUTPUT_LIMIT = 100_000
#: Largest submission file read, in bytes: a lab notebook without outputs is ~30 kB.
MAX_SUBMISSION_BYTES = 20 * 1024 * 1024
#: Largest part of the runner's report read.
MAX_RESULTS_BYTES = 8 * 1024 * 1024
#: Problems with the report listed in the gradebook (the rest are counted).
MAX_PROBLEMS_SHOWN = 5


@dataclass
class Options:
    """How to grade; the command line's options, checked."""

    jobs: int = 1
    manifest: Path | None = None
    labs_dir: Path | None = None
    cell_timeout_s: float = 60.0
    test_timeout_s: float = 15.0
    submission_timeout_s: float = 180.0
    sandbox: str = "auto"  # auto | on | off
    shard: tuple[int, int] = (1, 1)
    regrade: tuple[str, str | None, str | None] | None = None
    deadlines: dict[str, str] = field(default_factory=dict)  # lab id or "*" -> ISO time
    late_penalty: str | None = None
    submission_times: Path | None = None
    exports: list[str] = field(default_factory=list)
    roster: Path | None = None
    private_hidden: bool = False
    memory_mb: int = 4096
    progress: bool = False
    reap_orphans: bool = False  # the command line makes itself a subreaper and sweeps orphans


@dataclass
class Results:
    """What the runner reported, checked: {test: (points, error)}, notes, and problems."""

    tests: dict[str, tuple[float, str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_results(text: str, tests: list[Test]) -> Results:
    """Parse the runner's JSON lines, checking each against the lab; never raises.

    The first report of each test counts. A test reported with points outside 0..its max,
    or that are not a finite number, scores 0 with the reason; a report with an error
    scores 0 (partial credit comes without an error, its detail in ``note``). Lines that
    are not JSON objects, of an unknown event, or for a test the lab does not have are
    skipped and named in ``problems``.
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
        if kind in ("start", "end", "note"):
            out.events.append(event)
        elif kind == "test":
            name = event.get("test")
            if not isinstance(name, str) or name not in maxima:
                out.problems.append(f"{where}: a report for {name!r:.60}, which is not a test of this lab")
                continue
            if name in out.tests:
                continue  # the first report counts
            out.events.append(event)
            points, error, top = event.get("points"), event.get("error", ""), maxima[name]
            if not isinstance(error, str):
                error = f"the report's error is not text: {error!r:.100}"
            if not _is_number(points) or not 0 <= points <= top:
                problem = f"{where}: test {name} reports points={points!r:.40}, not a number in 0..{top:g}"
                out.problems.append(problem)
                out.tests[name] = (0.0, error or problem)
            else:
                out.tests[name] = (0.0 if error else float(points), error[:500])
            out.notes[name] = _test_note(event, top)
        elif kind in ("cell", "learner-cell"):
            out.events.append(event)
            error = event.get("skipped") or event.get("error") or ""
            if error:
                out.tasks.append({"task": f"cell {event.get('index')}", "error": str(error)[:500]})
        else:
            out.problems.append(f"{where}: unknown event {kind!r:.40}")
    return out


def _test_note(event: dict[str, Any], top: float) -> str:
    notes = []
    cases = event.get("cases")
    if isinstance(cases, list) and cases and not event.get("error"):
        failed = [c for c in cases if isinstance(c, list) and len(c) == 3 and c[1] is not True]
        if failed:
            shown = "; ".join(f"case {str(c[0])[:60]}: {str(c[2])[:200]}" for c in failed[:3])
            notes.append(f"{len(cases) - len(failed)} of {len(cases)} cases passed; {shown}")
    if event.get("retried") is True:
        first = str(event.get("first_error", ""))[:200]
        notes.append(f"timing test retried once (first attempt: {first or 'partly failed'})")
    return "; ".join(notes)


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
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for group in set(found.values()) - {own}:
            _kill_group(group)
        time.sleep(0.01)
    return len(seen)


def parse_shard(text: str) -> tuple[int, int]:
    """``'2/4'`` -> (2, 4); LabError unless 1 <= K <= N."""
    k, sep, n = str(text).partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or not 1 <= int(k) <= int(n):
        raise LabError(f"--shard wants K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
    return int(k), int(n)


def parse_regrade(text: str) -> tuple[str, str | None, str | None]:
    """``STUDENT[/LAB[/TEST]]`` ('*' for every student) -> parts; LabError for anything else."""
    parts = str(text).split("/")
    if not 1 <= len(parts) <= 3 or not all(p.strip() for p in parts):
        raise LabError(f"--regrade wants STUDENT, STUDENT/LAB or STUDENT/LAB/TEST ('*' for every student), "
                       f"got {text!r}")
    return parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else None)


def shard_of(student: str, item: str, n: int) -> int:
    """The shard (1..n) a submission belongs to: a hash, so it never depends on the others."""
    digest = hashlib.sha256(f"{student}/{item}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


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


def _rmtree(path: str) -> None:
    """Remove a scratch folder, even one whose modes the learner's code changed."""

    def retry(func: Callable[..., Any], target: str, exc_info: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


@dataclass
class _Item:
    """One file to grade."""

    path: Path
    student: str
    lab: Lab | None
    name: str  # the lab id, or the file name when it is not a lab
    in_folder: bool = True  # False for a file lying directly in the submissions folder

    @property
    def key(self) -> str:
        return f"{self.student}/{self.name}"


class _Grader:
    """One grading run: the labs, the options, the sandbox decision."""

    def __init__(self, out_dir: Path, labs: dict[str, Lab], options: Options, manifest: dict[str, Any] | None):
        self.out_dir, self.labs, self.options, self.manifest = out_dir, labs, options, manifest
        self.sandboxed = False
        self.sandbox_note = ""
        if options.sandbox != "off":
            status = sandbox.support()
            if status.available:
                self.sandboxed = True
            elif options.sandbox == "on":
                raise LabError(f"--sandbox on, but this system refuses the sandbox: {status.reason}; "
                               "grade with --sandbox auto or off (no isolation) or on a machine that allows "
                               "unprivileged user namespaces")
            else:
                self.sandbox_note = status.reason
        else:
            self.sandbox_note = "turned off with --sandbox off"
        self.sandbox_label = "on" if self.sandboxed else f"OFF: {self.sandbox_note}"

    # -- one submission -------------------------------------------------------------------

    def grade(self, item: _Item, stored: Outcome | None, only_test: str | None) -> Outcome:
        started = time.monotonic()
        lab = item.lab
        if lab is None:
            error = (f"{item.path.name} is not one of the labs ({', '.join(self.labs)})" if item.in_folder
                     else "put each student's files in a folder named after the student")
            outcome = Outcome(item.student, item.name, error=error, sandbox=self.sandbox_label)
            outcome.rows = [Row(item.student, item.name, "-", 0.0, 0.0, error)]
            return outcome
        outcome = Outcome(item.student, lab.id, sandbox=self.sandbox_label)
        try:
            raw = item.path.read_bytes() if item.path.stat().st_size <= MAX_SUBMISSION_BYTES else None
            if raw is None:
                raise LabError(f"submission is {item.path.stat().st_size} bytes, over the "
                               f"{MAX_SUBMISSION_BYTES}-byte limit")
            outcome.key = {"submission": hashlib.sha256(raw).hexdigest(), "lab": lab.fingerprint(),
                           "grader": GRADER_VERSION, "sandbox": self.sandboxed}
            import nbformat

            try:
                submission = nbformat.reads(raw.decode("utf-8"), as_version=4)
            except Exception as exc:  # noqa: BLE001 (whatever the file is, it is "not a notebook")
                raise LabError(f"not a notebook: {type(exc).__name__}: {str(exc)[:200]}") from exc
            if not hasattr(submission, "cells") or not isinstance(submission.cells, list):
                raise LabError("not a notebook: no cells")
            params = _parameters(lab, item.student, submission, self.manifest)
            outcome.key["parameters"] = params
            answers = lab.submitted_tasks(submission)
        except LabError as exc:
            outcome.error = str(exc)
            outcome.rows = [Row(item.student, lab.id, t.name, 0.0, t.points, str(exc)) for t in lab.tests]
            outcome.seconds = time.monotonic() - started
            return outcome
        tests = [only_test] if only_test else None
        results, error = self._run(item, lab, answers, params, tests, outcome)
        chosen = [t for t in lab.tests if tests is None or t.name in tests]
        rows = []
        for test in chosen:
            got = results.tests.get(test.name)
            if got is None:
                rows.append(Row(item.student, lab.id, test.name, 0.0, test.points, error or "not run (no report)"))
            else:
                rows.append(Row(item.student, lab.id, test.name, min(got[0], test.points), test.points, got[1],
                                results.notes.get(test.name, "")))
        if not self.sandboxed:
            for row in rows:
                row.note = "; ".join(filter(None, [row.note, "graded WITHOUT the sandbox"]))
        if results.problems:
            shown = results.problems[:MAX_PROBLEMS_SHOWN]
            more = len(results.problems) - len(shown)
            note = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
            rows.append(Row(item.student, lab.id, "-", 0.0, 0.0, f"report ignored in part: {note}"))
        if only_test and stored is not None:
            rows = [r for r in stored.rows if r.test != only_test and r.test != "-"] + rows
            order = {t.name: i for i, t in enumerate(lab.tests)}
            rows.sort(key=lambda r: order.get(r.test, len(order)))
            outcome.notes = stored.notes + [f"test {only_test} regraded"]
        outcome.rows = rows
        outcome.error = error if len(results.tests) < len(chosen) else ""
        outcome.notes += [str(e.get("text"))[:500] for e in results.events if e.get("event") == "note"]
        outcome.seconds = time.monotonic() - started
        return outcome

    def write_feedback(self, item: _Item, outcome: Outcome) -> None:
        """The feedback notebook, from the submission, the runner's report and the record."""
        from .feedback import write_feedback

        lab = item.lab
        if lab is None:
            return
        work = self.out_dir / "work" / item.student / outcome.lab
        events = read_results((work / "events.jsonl").read_text(), lab.tests).events \
            if (work / "events.jsonl").exists() and "parameters" in outcome.key else []
        try:
            import nbformat

            answers = lab.submitted_tasks(nbformat.read(item.path, as_version=4))
        except Exception:  # noqa: BLE001 (not a notebook: the feedback says why, with the stubs)
            answers = {}
        target = self.out_dir / "feedback" / item.student / f"{lab.id}.ipynb"
        outcome.feedback = str(write_feedback(target, lab, outcome, answers, events,
                                              outcome.key.get("parameters", {}),
                                              private_hidden=self.options.private_hidden))
        outcome.key["feedback_late"] = [outcome.late_days, outcome.penalty_percent]

    def _run(self, item: _Item, lab: Lab, answers: dict[str, str], params: dict[str, Any], tests: list[str] | None,
             outcome: Outcome) -> tuple[Results, str]:
        """Run the runner for one submission; (what it reported, why it stopped early or "")."""
        work = self.out_dir / "work" / item.student / lab.id
        work.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix="labs-scratch-")
        os.chmod(scratch, stat.S_IRWXU)
        mark = f"{GRADING_ENV}={scratch}"
        opts = self.options
        job = {"lab": lab.id, "cells": lab.plan(answers), "parameters": params, "secret": secrets.token_hex(16),
               "tests": tests, "cell_timeout_s": min(opts.cell_timeout_s, opts.test_timeout_s),
               "test_timeout_s": opts.test_timeout_s, "output_limit": OUTPUT_LIMIT, "sandbox": self.sandboxed,
               "scratch": scratch, "mark": "" if self.sandboxed else mark,
               "rlimits": {"CPU": int(opts.submission_timeout_s) + 10, "AS": opts.memory_mb * 1024 * 1024,
                           "FSIZE": 256 * 1024 * 1024, "NOFILE": 4096, "CORE": 0}}
        (work / "job.json").write_text(json.dumps({k: job[k] for k in ("parameters", "secret", "tests", "sandbox")}))
        tmp = "/tmp" if self.sandboxed else scratch
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": scratch, "LANG": "C.UTF-8",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "MPLBACKEND": "Agg",
               "MPLCONFIGDIR": f"{tmp}/.matplotlib", "PYTHONDONTWRITEBYTECODE": "1"}
        argv = [sys.executable, "-m", "helpers.labs.runner"]
        if self.sandboxed:
            command = sandbox.launcher_command({
                "mode": "box", "net": True, "uid_inside": sandbox.inside_uid(), "argv": argv, "env": env,
                "cwd": scratch, "symlinks": sandbox.root_symlinks(),
                "binds": [[p, "ro"] for p in sandbox.visible_paths()] + [[scratch, "rw"]]})
        else:
            command, env = argv, {**env, GRADING_ENV: scratch}
        lines: list[str] = []
        try:
            with open(work / "runner.log", "wb") as log:
                with _RUNNING_LOCK:
                    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            env=env, cwd=scratch, start_new_session=True)
                    _RUNNING.add(proc.pid)
                reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
                reader.start()
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(json.dumps(job).encode())
                    proc.stdin.close()
                except OSError:
                    pass
                try:
                    proc.wait(opts.submission_timeout_s)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    timed_out = True
                for pid in process_tree(proc.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                _kill_group(proc.pid)
                proc.wait()
                with _RUNNING_LOCK:
                    _RUNNING.discard(proc.pid)
                reader.join(5)
        finally:
            if not self.sandboxed:
                kill_marked(mark)
            _rmtree(scratch)
        text = "".join(lines)
        results = read_results(text, lab.tests)
        report = work / "events.jsonl"
        if tests and report.exists():  # one test regraded: its new line replaces its old one
            kept = [line for line in report.read_text().splitlines(True)
                    if not any(f'"test": "{name}"' in line for name in tests)]
            text = "".join(kept) + "".join(line for line in lines if '"event": "test"' in line)
        report.write_text(text)
        ended = any(e.get("event") == "end" for e in results.events)
        if timed_out:
            error = f"not run: the submission was stopped after {opts.submission_timeout_s:g} s"
        elif proc.returncode == sandbox.EXIT_REFUSED:
            error = "not run: the sandbox was refused (see runner.log)"
        elif not ended:
            error = f"not run: the grading runner stopped early (exit code {proc.returncode}; see runner.log)"
        else:
            error = next((f"not run: {e['text']}" for e in results.events if e.get("event") == "note"),
                         "not run (no report)")
        return results, error

    # -- the run ---------------------------------------------------------------------------

    def collect(self, submissions: Path) -> list[_Item]:
        items = []
        for entry in sorted(submissions.iterdir()):
            if entry.name.startswith("."):
                continue
            files = [f for f in sorted(entry.iterdir()) if f.is_file() and not f.name.startswith(".")] \
                if entry.is_dir() else [entry]
            for path in files:
                student = entry.name if entry.is_dir() else entry.stem
                lab = _lab_for(path, self.labs) if entry.is_dir() else None
                items.append(_Item(path, student, lab, lab.id if lab else path.name, entry.is_dir()))
        return items


def _read_lines(proc: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert proc.stdout is not None
    total = 0
    for raw in proc.stdout:
        total += len(raw)
        if total <= MAX_RESULTS_BYTES:
            lines.append(raw.decode("utf-8", errors="replace"))


def _load_manifest(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        data["released"]  # noqa: B018 (checks the shape)
        if not isinstance(data["released"], dict):
            raise TypeError("released is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{path}: not a release manifest.json ({exc})") from exc
    return data


def _late_policy(options: Options, manifest: dict[str, Any] | None, labs: dict[str, Lab]
                 ) -> tuple[dict[str, datetime], Penalty | None]:
    """Deadlines and penalty: the manifest's, with the command line's on top."""
    deadlines = resolve_deadlines(dict((manifest or {}).get("deadlines", {})), list(labs), "the manifest")
    deadlines.update(resolve_deadlines(options.deadlines, list(labs)))
    text = options.late_penalty or (manifest or {}).get("late_penalty")
    penalty = parse_penalty(text) if text else None
    if penalty is not None and not deadlines:
        raise LabError("a late penalty needs deadlines: give --deadline (or deadlines in the manifest)")
    return deadlines, penalty


def _apply_lateness(outcomes: list[Outcome], items: dict[str, _Item], deadlines: dict[str, datetime],
                    penalty: Penalty | None, times: dict[tuple[str, str], datetime]) -> None:
    for outcome in outcomes:
        deadline = deadlines.get(outcome.lab)
        item = items.get(f"{outcome.student}/{outcome.lab}")
        submitted = times.get((outcome.student, outcome.lab))
        if submitted is None and item is not None and deadline is not None:
            submitted = file_time(item.path)
        outcome.deadline = deadline.isoformat() if deadline else None
        outcome.submitted_at = submitted.isoformat() if submitted else None
        outcome.late_days, outcome.penalty_percent = lateness(submitted, deadline, penalty)


def check_options(options: Options) -> None:
    """LabError for an option out of range (before anything runs)."""
    if options.jobs < 1:
        raise LabError(f"-j must be at least 1, got {options.jobs}")
    for name, value in [("cell timeout", options.cell_timeout_s), ("test timeout", options.test_timeout_s),
                        ("submission timeout", options.submission_timeout_s)]:
        if not value > 0 or not math.isfinite(value):
            raise LabError(f"the {name} must be > 0 seconds, got {value}")
    if options.sandbox not in ("auto", "on", "off"):
        raise LabError(f"--sandbox is auto, on or off, got {options.sandbox!r}")
    bad = [e for e in options.exports if e not in EXPORTS]
    if bad:
        raise LabError(f"--export is one of {', '.join(EXPORTS)}, got {bad[0]!r}")
    if not 256 <= options.memory_mb <= 1 << 20:
        raise LabError(f"--memory-mb must be at least 256, got {options.memory_mb}")


def _regrade_targets(spec: tuple[str, str | None, str | None], items: list[_Item], labs: dict[str, Lab]
                     ) -> tuple[set[str], str | None]:
    """The submission keys --regrade names, and the test when it names one."""
    student, lab_key, test = spec
    students = {i.student for i in items}
    if student != "*" and student not in students:
        raise LabError(f"--regrade: no submissions from {student!r} (students: {', '.join(sorted(students))})")
    lab_id = None
    if lab_key is not None:
        lab_id = lab_named(lab_key, list(labs))
        if lab_id is None:
            raise LabError(f"--regrade: {lab_key!r} is not one of the labs ({', '.join(labs)})")
        if test is not None and test not in [t.name for t in labs[lab_id].tests]:
            raise LabError(f"--regrade: {lab_id} has no test {test!r}; its tests: "
                           f"{', '.join(t.name for t in labs[lab_id].tests)}")
    keys = {i.key for i in items if (student == "*" or i.student == student) and (lab_id is None or i.name == lab_id)}
    if not keys:
        raise LabError(f"--regrade: {student}/{lab_id} names no submission")
    return keys, test


def grade_folder(submissions: Path, out_dir: Path, options: Options | None = None) -> list[Outcome]:
    """Grade every ``<submissions>/<student>/<file>`` (this shard's share); write the gradebooks.

    Returns the outcomes of this run's share, in (student, lab) order, graded now or taken
    from earlier records of the same submissions. Raises LabError for a missing folder, a
    bad manifest or a bad option; never for a bad submission.
    """
    options = options or Options()
    check_options(options)
    if not submissions.is_dir():
        raise LabError(f"{submissions} is not a folder of submissions (<folder>/<student>/<lab>.ipynb)")
    labs = {lab.id: lab for lab in find_labs(options.labs_dir)}
    if not labs:
        raise LabError(f"no labs found in {options.labs_dir}")
    manifest = _load_manifest(options.manifest)
    deadlines, penalty = _late_policy(options, manifest, labs)
    times = read_times(options.submission_times, list(labs)) if options.submission_times else {}
    roster = read_roster(options.roster) if options.roster else None
    grader = _Grader(out_dir, labs, options, manifest)
    items = grader.collect(submissions)
    k, n = options.shard
    mine = [i for i in items if shard_of(i.student, i.name, n) == k]
    forced, only_test = _regrade_targets(options.regrade, items, labs) if options.regrade else (set(), None)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = load_outcomes(out_dir)
    if not grader.sandboxed:
        who = "as ROOT, with every privilege" if os.geteuid() == 0 else "as you"
        print(f"WARNING: grading WITHOUT the sandbox ({grader.sandbox_note}): learner code runs {who}, can read "
              "your files (the lab sources too) and reach the network; every gradebook row says so",
              file=sys.stderr)

    def current(item: _Item) -> Outcome | None:
        """The stored outcome if it graded this very submission the same way."""
        old = stored.get((item.student, item.name))
        if old is None or item.lab is None:
            return None
        try:
            digest = hashlib.sha256(item.path.read_bytes()).hexdigest()
        except OSError:
            return None
        key = old.key
        same = (key.get("submission") == digest and key.get("lab") == item.lab.fingerprint()
                and key.get("grader") == GRADER_VERSION and (key.get("sandbox") or not grader.sandboxed))
        return old if same else None

    def one(item: _Item) -> Outcome:
        old = current(item)
        try:
            if item.key in forced:
                outcome = grader.grade(item, old, only_test if old is not None else None)
            elif old is not None:
                outcome = old
            else:
                outcome = grader.grade(item, None, None)
            _apply_lateness([outcome], {item.key: item}, deadlines, penalty, times)
            if outcome is not old or old.key.get("feedback_late") != [outcome.late_days, outcome.penalty_percent]:
                grader.write_feedback(item, outcome)
            return outcome
        except Exception as exc:  # noqa: BLE001 (one submission must not stop the others)
            return _grader_error(item, exc, grader.sandbox_label)

    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        futures = {pool.submit(one, item): item for item in mine}
        done = as_completed(futures)
        if options.progress:
            from tqdm.auto import tqdm

            done = tqdm(done, total=len(futures), desc="grading", unit="submission")
        for future in done:
            outcome = future.result()
            save_outcome(out_dir, outcome)
            outcomes.append(outcome)
            if options.reap_orphans:
                _sweep_orphans()
    outcomes.sort(key=lambda o: (o.student, o.lab))
    run = {"grader": GRADER_VERSION, "shard": [k, n], "submissions": sorted(i.key for i in items),
           "graded": sorted(i.key for i in mine)}
    (out_dir / "run.json").write_text(json.dumps(run, indent=1))
    write_books(out_dir, outcomes, list(labs.values()), roster, options.exports)
    return outcomes


def _grader_error(item: _Item, exc: Exception, sandbox_label: str) -> Outcome:
    error = f"grader error: {type(exc).__name__}: {exc}"
    outcome = Outcome(item.student, item.name, error=error, sandbox=sandbox_label)
    outcome.rows = [Row(item.student, item.name, "-", 0.0, 0.0, error)]
    return outcome


#: Runners running now (their pids): the orphan sweep leaves them alone.
_RUNNING: set[int] = set()
_RUNNING_LOCK = threading.Lock()


def _sweep_orphans() -> None:
    """Kill children of this process that are not runners (orphans reparented to us, a
    subreaper, after a runner died in the fallback): only the command line asks for this.
    The look and the kill happen under _RUNNING_LOCK, which also covers starting a runner:
    otherwise a runner another job starts meanwhile would look like an orphan and be killed."""
    me = os.getpid()
    orphans = []
    with _RUNNING_LOCK:
        for pid in process_tree(me)[1:]:
            try:
                parent = int(proc_stat(f"/proc/{pid}/stat")[1])
            except OSError:
                continue
            if parent != me or pid in _RUNNING:
                continue
            orphans.append(pid)
            for victim in process_tree(pid):
                try:
                    os.kill(victim, signal.SIGKILL)
                except OSError:
                    pass
    for pid in orphans:
        try:
            os.waitpid(pid, 0)
        except (ChildProcessError, OSError):
            pass


def merge(out_dir: Path, shard_dirs: list[Path], *, labs_dir: Path | None = None, roster: Path | None = None,
          exports: Sequence[str] = ()) -> list[Outcome]:
    """Combine the records of shards 1..N of one class into `out_dir` and write its gradebooks.

    LabError if a shard is missing, given twice, from another class (other submissions or
    another N), or incomplete.
    """
    if not shard_dirs:
        raise LabError("merge needs the shards' output folders")
    runs = []
    for folder in shard_dirs:
        try:
            run = json.loads((folder / "run.json").read_text())
            k, n = run["shard"]
            all_keys, mine = set(run["submissions"]), set(run["graded"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{folder} is not a grading output folder (no readable run.json: {exc})") from None
        runs.append((folder, int(k), int(n), all_keys, mine, run.get("grader")))
    ns = {n for _, _, n, _, _, _ in runs}
    if len(ns) != 1:
        raise LabError(f"the shards disagree on N: {sorted(ns)}")
    n = ns.pop()
    everything = runs[0][3]
    for folder, k, _, all_keys, _, grader in runs:
        if all_keys != everything:
            raise LabError(f"{folder} (shard {k}/{n}) saw other submissions than {runs[0][0]}: not the same class")
        if grader != GRADER_VERSION:
            raise LabError(f"{folder} was graded by grader version {grader}, this is {GRADER_VERSION}: regrade it")
    seen: dict[int, Path] = {}
    for folder, k, _, _, _, _ in runs:
        if k in seen:
            raise LabError(f"shard {k}/{n} is given twice: {seen[k]} and {folder}")
        seen[k] = folder
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        raise LabError(f"shard(s) {', '.join(f'{m}/{n}' for m in missing)} missing: merge needs all {n}")
    graded = [key for _, _, _, _, mine, _ in runs for key in mine]
    if sorted(graded) != sorted(everything):
        raise LabError("the shards do not cover the class exactly once; regrade the shards with the same folder")
    labs = find_labs(labs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for folder, k, _, _, mine, _ in runs:
        records = load_outcomes(folder)
        for key in sorted(mine):
            student, _, name = key.partition("/")
            outcome = records.get((student, name))
            if outcome is None:
                raise LabError(f"shard {k}/{n} ({folder}) has no record of {key}: it did not finish; run it again")
            save_outcome(out_dir, outcome)
            source = folder / "feedback" / student / f"{name}.ipynb"
            if source.exists():
                target = out_dir / "feedback" / student / f"{name}.ipynb"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                outcome.feedback = str(target)
            outcomes.append(outcome)
    outcomes.sort(key=lambda o: (o.student, o.lab))
    (out_dir / "run.json").write_text(json.dumps({"grader": GRADER_VERSION, "shard": [1, 1],
                                                  "submissions": sorted(everything),
                                                  "graded": sorted(everything)}, indent=1))
    write_books(out_dir, outcomes, labs, read_roster(roster) if roster else None, list(exports))
    return outcomes
