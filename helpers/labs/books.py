"""Gradebooks: what one graded submission records, and the CSV files made from all of them.

Grading writes one ``Outcome`` per submission as JSON (``results/<student>/<lab>.json``),
as soon as that submission is done; every gradebook is then written from those files, so
an interrupted run resumes where it stopped, a regrade rewrites only its own records, and
shards of a class merge by copying records (``merge``). The files, all UTF-8 CSV:

* ``gradebook.csv``: one row per test: ``student, lab, test, points, max, error, note``;
* ``submissions.csv``: one row per submission: points, lateness and penalty, the final
  points, whether the sandbox was on, and the grading error if any;
* ``grades.csv``: one row per student: each lab's final points and the course total;
* ``canvas.csv`` (``--export canvas``): Canvas's gradebook import format. Its importer
  (``GradebookImporter`` in canvas-lms) wants a header row starting ``Student, ID``, the
  student columns ending with ``Section`` (``SIS User ID`` and ``SIS Login ID`` between),
  then one column per assignment; an optional second row starting ``Points Possible``
  gives each assignment's points. It finds a student by the Canvas ``ID``, else by SIS id
  or login, else by name; an assignment by ``Title (id)``, else by title, else creates it;
* ``moodle.csv`` (``--export moodle``): Moodle's CSV grade import (Grades > Import > CSV
  file): a header row, a column that identifies the user (mapped at import to username,
  email address or ID number), one column per grade item (an existing item, or a new one
  named after the header); ``-`` or an empty cell means no grade.

Students and their LMS identities come from the roster (``--roster``): a CSV whose header
names ``student`` (the folder name) and any of ``name, canvas_id, sis_user_id,
sis_login_id, section, email, username, idnumber``; or a plain list of names.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .source import Lab, LabError

__all__ = ["Row", "Outcome", "read_roster", "write_books", "load_outcomes", "save_outcome", "points_text", "EXPORTS",
           "GRADEBOOK_FIELDS", "ROSTER_FIELDS"]

GRADEBOOK_FIELDS = ["student", "lab", "test", "points", "max", "error", "note"]
SUBMISSION_FIELDS = ["student", "lab", "points", "max", "submitted_at", "deadline", "late_days", "penalty_percent",
                     "final", "sandbox", "error"]
ROSTER_FIELDS = ["student", "name", "canvas_id", "sis_user_id", "sis_login_id", "section", "email", "username",
                 "idnumber"]
EXPORTS = ("canvas", "moodle")


def points_text(value: float) -> str:
    """Points as the gradebooks print them: at most 2 decimals, no trailing zeros."""
    text = f"{round(value, 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


_p = points_text  # short, for the long lines below

@dataclass
class Row:
    """One gradebook line: a test's points, or a '-' line for a problem with the submission."""

    student: str
    lab: str
    test: str
    points: float
    max: float
    error: str = ""
    note: str = ""


@dataclass
class Outcome:
    """One graded submission, as stored and as the gradebooks read it."""

    student: str
    lab: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    sandbox: str = ""  # "on", or "OFF: why"
    submitted_at: str | None = None
    deadline: str | None = None
    late_days: int = 0
    penalty_percent: float = 0.0
    key: dict[str, Any] = field(default_factory=dict)  # what was graded: submission hash, lab version, ...
    notes: list[str] = field(default_factory=list)
    feedback: str | None = None

    @property
    def points(self) -> float:
        return round(sum(r.points for r in self.rows), 3)

    @property
    def max(self) -> float:
        return sum(r.max for r in self.rows)

    @property
    def final(self) -> float:
        return round(self.points * (1 - self.penalty_percent / 100), 3)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        rows = [Row(**r) for r in data.pop("rows", [])]
        return cls(rows=rows, **data)


def save_outcome(out_dir: Path, outcome: Outcome) -> Path:
    """Write the outcome's record atomically (a crash never leaves half a file)."""
    target = out_dir / "results" / outcome.student / f"{outcome.lab}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(outcome.to_json(), fh, indent=1, sort_keys=True)
    os.replace(tmp, target)
    return target


def load_outcomes(out_dir: Path) -> dict[tuple[str, str], Outcome]:
    """Every stored outcome under ``out_dir/results``; a damaged record is skipped (and regraded)."""
    found: dict[tuple[str, str], Outcome] = {}
    for path in sorted((out_dir / "results").glob("*/*.json")):
        try:
            outcome = Outcome.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        found[(outcome.student, outcome.lab)] = outcome
    return found


def read_roster(path: Path) -> list[dict[str, str]]:
    """The roster as a list of {field: value}: a CSV with a header naming ``student`` (and
    any of ROSTER_FIELDS), or one name per line (the first CSV column; '#' starts a comment)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"cannot read the roster {path}: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    first = next(csv.reader([lines[0]]))
    if "student" in [c.strip().lower() for c in first]:
        reader = csv.DictReader(io.StringIO("\n".join(lines)))
        fields = {f: (f or "").strip().lower() for f in reader.fieldnames or []}
        unknown = sorted(set(fields.values()) - set(ROSTER_FIELDS) - {""})
        if unknown:
            raise LabError(f"{path}: unknown roster column(s) {', '.join(unknown)}; known: {', '.join(ROSTER_FIELDS)}")
        people = [{fields[k]: (v or "").strip() for k, v in row.items() if k in fields} for row in reader]
    else:
        people = [{"student": next(csv.reader([line]))[0].strip()} for line in lines]
    names = [p.get("student", "") for p in people]
    if "" in names:
        raise LabError(f"{path}: a roster line has no student name")
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise LabError(f"{path}: {doubled[0]!r} is on the roster twice")
    return people


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def write_books(out_dir: Path, outcomes: list[Outcome], labs: list[Lab], roster: list[dict[str, str]] | None,
                exports: list[str]) -> list[Path]:
    """Write every gradebook from `outcomes`; return the files written."""
    outcomes = sorted(outcomes, key=lambda o: (o.student, o.lab))
    written = []
    rows = [[r.student, r.lab, r.test, _p(r.points), _p(r.max), r.error, r.note] for o in outcomes for r in o.rows]
    _write_csv(out_dir / "gradebook.csv", GRADEBOOK_FIELDS, rows)
    written.append(out_dir / "gradebook.csv")
    subs = [[o.student, o.lab, _p(o.points), _p(o.max), o.submitted_at or "", o.deadline or "", o.late_days,
             _p(o.penalty_percent), _p(o.final), o.sandbox, o.error] for o in outcomes]
    _write_csv(out_dir / "submissions.csv", SUBMISSION_FIELDS, subs)
    written.append(out_dir / "submissions.csv")

    lab_ids = [lab.id for lab in labs]
    known = {o.lab for o in outcomes if o.lab in lab_ids}
    columns = [lab for lab in labs if lab.id in known]
    finals = {(o.student, o.lab): o.final for o in outcomes}
    people = list(roster or [])
    listed = {p["student"] for p in people}
    people += [{"student": s} for s in sorted({o.student for o in outcomes} - listed)]
    wide = []
    for person in people:
        who = person["student"]
        cells = [finals.get((who, lab.id)) for lab in columns]
        wide.append([who] + ["" if c is None else _p(c) for c in cells] + [_p(sum(c or 0 for c in cells))])
    _write_csv(out_dir / "grades.csv", ["student"] + [lab.id for lab in columns] + ["total"], wide)
    written.append(out_dir / "grades.csv")
    if "canvas" in exports:
        written.append(_canvas(out_dir, people, columns, finals))
    if "moodle" in exports:
        written.append(_moodle(out_dir, people, columns, finals))
    return written


def _canvas(out_dir: Path, people: list[dict[str, str]], labs: list[Lab],
            finals: dict[tuple[str, str], float]) -> Path:
    header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] + [lab.id for lab in labs]
    rows: list[list[Any]] = [["Points Possible", "", "", "", ""] + [_p(lab.max_points) for lab in labs]]
    for p in people:
        finals_ = [finals.get((p["student"], lab.id)) for lab in labs]
        rows.append([p.get("name") or p["student"], p.get("canvas_id", ""), p.get("sis_user_id", ""),
                     p.get("sis_login_id", ""), p.get("section", "")] + ["" if f is None else _p(f) for f in finals_])
    path = out_dir / "canvas.csv"
    _write_csv(path, header, rows)
    return path


def _moodle(out_dir: Path, people: list[dict[str, str]], labs: list[Lab],
            finals: dict[tuple[str, str], float]) -> Path:
    ids = [("Username", "username"), ("Email address", "email"), ("ID number", "idnumber")]
    present = [(title, key) for title, key in ids if any(p.get(key) for p in people)] or [("Username", "student")]
    header = [title for title, _ in present] + [lab.id for lab in labs]
    rows = []
    for p in people:
        values = [finals.get((p["student"], lab.id)) for lab in labs]
        rows.append([p.get(key) or (p["student"] if key in ("username", "student") else "") for _, key in present]
                    + ["-" if v is None else _p(v) for v in values])
    path = out_dir / "moodle.csv"
    _write_csv(path, header, rows)
    return path
