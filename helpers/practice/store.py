"""The learner's progress: which exercises passed, kept in one small JSON file per user.

Theory of operation. Every check records its result here, so the start-here notebook can
show progress across lessons and sessions. The file lives in the user's data directory,
never in the course folder (a learner's progress must not end up in a commit):
``$XDG_DATA_HOME/netprog-course/progress.json``, or ``~/.local/share/...`` when
XDG_DATA_HOME is unset. ``COURSE_PROGRESS_FILE`` names another file (the tests point it at a
temporary folder).

Two notebooks' kernels may record at the same moment, so a write is a read-modify-write
under an exclusive ``flock()`` on a lock file beside it, and the new content is written to
a temporary file in the same folder and renamed over the old one (``os.replace``: a reader
sees the old file or the new one, never half of one). A file that does not parse is not
thrown away: it is renamed to ``progress.json.corrupt-<time>`` and a fresh file started,
and the result says so. Nothing here raises into a check: a problem (a read-only home, a
full disk) comes back as a sentence the check shows under its result.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ENV", "progress_file", "load", "record", "passed_exercises"]

ENV = "COURSE_PROGRESS_FILE"
VERSION = 1


def progress_file() -> Path:
    """Where progress is kept: $COURSE_PROGRESS_FILE, else the user's data directory.

    ValueError if COURSE_PROGRESS_FILE is set to a relative path (it would depend on the
    folder the notebook happens to run in).
    """
    override = os.environ.get(ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_absolute():
            raise ValueError(f"{ENV} must be an absolute path, got {override!r}")
        return path
    base = os.environ.get("XDG_DATA_HOME", "")
    data = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"  # XDG: ignore relative
    return data / "netprog-course" / "progress.json"


def _valid(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("lessons"), dict) and all(
        isinstance(ex, dict) for ex in doc["lessons"].values()
    )


def _read(path: Path) -> dict[str, Any]:
    """The document in `path` ({} if there is none); ValueError if it is not ours."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"version": VERSION, "lessons": {}}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not valid JSON ({exc})") from None
    if not _valid(doc):
        raise ValueError("it does not hold a 'lessons' table")
    return doc


def load() -> dict[str, Any]:
    """The whole progress document: {"version": 1, "lessons": {"03": {"1": {...}}}}.

    A file that cannot be read gives an empty document and a warning naming the file (the
    next record() keeps the bad file aside).
    """
    try:
        path = progress_file()
    except ValueError as exc:
        warnings.warn(f"no progress file: {exc}", stacklevel=2)
        return {"version": VERSION, "lessons": {}}
    try:
        return _read(path)
    except (OSError, ValueError) as exc:
        warnings.warn(f"progress file {path} could not be read: {exc}", stacklevel=2)
        return {"version": VERSION, "lessons": {}}


def passed_exercises() -> dict[str, list[int]]:
    """The exercises passed at least once, per lesson: {"03": [1, 3], ...}, lessons sorted."""
    lessons = load()["lessons"]
    return {
        lesson: sorted(int(n) for n, ex in exercises.items() if isinstance(ex, dict) and ex.get("passed"))
        for lesson, exercises in sorted(lessons.items())
    }


@contextmanager
def _locked(path: Path):
    """An exclusive lock on `path`.lock, held for one read-modify-write."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(path: Path, doc: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def record(lesson: str, exercise: int, title: str, status: str, passed: bool) -> str:
    """Record one check's result; return "" or a sentence saying what went wrong.

    An exercise once passed stays passed (``passed``, ``first_passed``); ``last`` and
    ``last_at`` keep the latest status.
    """
    try:
        path = progress_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        note = ""
        with _locked(path):
            try:
                doc = _read(path)
            except ValueError as exc:
                aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(path, aside)
                note = f"Your progress file could not be read ({exc}); it was kept as {aside} and a new one started."
                doc = {"version": VERSION, "lessons": {}}
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            entry = doc["lessons"].setdefault(lesson, {}).setdefault(str(exercise), {})
            entry.update(title=title, last=status, last_at=now)
            if passed and not entry.get("passed"):
                entry.update(passed=True, first_passed=now)
            entry.setdefault("passed", False)
            doc["version"] = VERSION
            _write(path, doc)
        return note
    except (OSError, ValueError) as exc:
        return f"Progress not saved ({type(exc).__name__}: {exc})."
