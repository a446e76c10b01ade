"""Deadlines and the late policy: when a submission counts as late, and what that costs.

A deadline is an ISO 8601 time with its offset (``2026-03-01T23:59+01:00``, or ``Z``): a
time without one is refused, because the grader's clock and the class's may disagree. A
submission's time is the one given in a CSV (``student,lab,submitted_at``, e.g. exported
from the LMS) or else the file's modification time. Every started day (24 h) past the
deadline is one day late; the penalty is a percentage per day, with an optional cap
(``10%/day`` or ``10%/day,max=50%``), taken off the points the submission earned.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .source import LabError

__all__ = ["Penalty", "parse_deadline", "parse_penalty", "read_times", "lateness", "resolve_deadlines", "lab_named"]

_PENALTY = re.compile(r"^\s*(?P<per>\d+(?:\.\d+)?)\s*%\s*/\s*day\s*(?:,\s*max\s*=\s*(?P<cap>\d+(?:\.\d+)?)\s*%)?\s*$")


@dataclass(frozen=True)
class Penalty:
    """``per_day`` percent of the points per started day late, at most ``cap`` percent."""

    per_day: float
    cap: float = 100.0

    def __str__(self) -> str:
        return f"{self.per_day:g}%/day" + (f",max={self.cap:g}%" if self.cap < 100 else "")


def parse_penalty(text: str) -> Penalty:
    """``'10%/day'`` or ``'10%/day,max=50%'`` -> Penalty; LabError with the format otherwise."""
    match = _PENALTY.match(text) if isinstance(text, str) else None
    if not match:
        raise LabError(f"--late-penalty wants PERCENT%/day or PERCENT%/day,max=PERCENT% (e.g. 10%/day,max=50%), "
                       f"got {text!r}")
    per, cap = float(match["per"]), float(match["cap"]) if match["cap"] else 100.0
    if not 0 <= per <= 100 or not 0 <= cap <= 100:
        raise LabError(f"--late-penalty percentages must be in 0..100, got {text!r}")
    return Penalty(per, cap)


def parse_deadline(text: str) -> datetime:
    """An ISO 8601 time with a UTC offset -> aware datetime; LabError naming the fix otherwise."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00")) if isinstance(text, str) else None
    except ValueError:
        when = None
    if when is None:
        raise LabError(f"a deadline is an ISO 8601 time such as 2026-03-01T23:59+01:00, got {text!r}")
    if when.tzinfo is None:
        raise LabError(f"the time {text!r} has no UTC offset: write it with one, e.g. 2026-03-01T23:59+01:00 "
                       "(or Z for UTC)")
    return when


def lab_named(key: str, lab_ids: list[str]) -> str | None:
    """The lab id `key` names: the id itself or its number ('01', '1'); None if none or several."""
    matches = [i for i in lab_ids if i == key or (key.isdigit() and i.startswith(f"{int(key):02d}-"))]
    return matches[0] if len(matches) == 1 else None


def resolve_deadlines(given: dict[str, str], lab_ids: list[str], what: str = "--deadline") -> dict[str, datetime]:
    """{lab id or number, or '*' for every lab: ISO time} -> {lab id: deadline}; a named lab
    overrides '*'. LabError for an unknown lab or a time without its UTC offset."""
    out: dict[str, datetime] = {}
    for key, when in sorted(given.items(), key=lambda kv: kv[0] != "*"):
        targets = lab_ids if key == "*" else [lab_named(key, lab_ids)]
        if targets == [None]:
            raise LabError(f"{what} names {key!r}, which is not one of the labs ({', '.join(lab_ids)})")
        for lab_id in targets:
            out[str(lab_id)] = parse_deadline(when)
    return out


def read_times(path: Path, lab_ids: list[str]) -> dict[tuple[str, str], datetime]:
    """{(student, lab id): submitted_at} from a CSV with columns student, lab, submitted_at."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabError(f"cannot read the submission times {path}: {exc}") from None
    if rows and not {"student", "lab", "submitted_at"} <= set(rows[0]):
        raise LabError(f"{path}: the submission times need the columns student, lab, submitted_at; "
                       f"it has {', '.join(rows[0])}")
    out: dict[tuple[str, str], datetime] = {}
    for number, row in enumerate(rows, 2):
        lab = lab_named(str(row["lab"]).strip(), lab_ids)
        if lab is None:
            raise LabError(f"{path} line {number}: {row['lab']!r} is not one of the labs ({', '.join(lab_ids)})")
        try:
            when = parse_deadline(str(row["submitted_at"]))
        except LabError as exc:
            raise LabError(f"{path} line {number}: {exc}") from None
        out[(str(row["student"]).strip(), lab)] = when
    return out


def lateness(submitted: datetime | None, deadline: datetime | None, penalty: Penalty | None) -> tuple[int, float]:
    """(days late, penalty percent) for one submission; (0, 0.0) when on time or no rule."""
    if submitted is None or deadline is None:
        return 0, 0.0
    seconds = (submitted - deadline).total_seconds()
    days = math.ceil(seconds / 86400) if seconds > 0 else 0
    if penalty is None or days == 0:
        return days, 0.0
    return days, min(penalty.cap, penalty.per_day * days)


def file_time(path: Path) -> datetime:
    """The file's modification time, as an aware UTC datetime."""
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
