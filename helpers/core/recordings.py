"""Recordings: a run of an experiment saved as JSON, shown labelled where it cannot run live.

What cannot run on every machine (a capture, a private namespace, an ICMP socket, IPv6) is
recorded once where it can and committed under ``notebooks/recorded/``; a lesson shows that
run instead, labelled with where, when and the kernel. Each helper that records
(``capture``, ``nagle``, ``netns``, ``timewait``, ``tools``, ``addresses``, ``completion``)
keeps its own payload and its own checks of what it stores; this module holds the steps they
share, so every recording is labelled, written and read back the same way:

* ``label(where, by=...)``: "recorded by helpers.netns on a Linux virtual machine,
  2026-12-06 21:10 UTC, Linux 6.18.44": where (as the recorder says), when (UTC, to the
  minute) and the kernel (``uname -r``). A lesson shows it after "RECORDED earlier: ", the
  shape ``tests/fallback_checks.py`` looks for.
* ``write(path, record)``: ``record`` (``{"recorded": label, ...}``) as JSON, one file.
* ``read(path, saver, build)``: the file found from any edition's folder
  (``lessonfiles.lesson_file``), parsed, its label and data handed to ``build``; whatever
  is malformed becomes one ValueError naming the file and the function that writes such files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .lessonfiles import lesson_file

T = TypeVar("T")

#: What a malformed recording raises while it is parsed or built; read() turns each into a ValueError.
MALFORMED = (ValueError, TypeError, KeyError, AttributeError)


def check_where(where: object) -> str:
    """`where` (the machine, and anything else worth saying about the run) if it is a non-empty
    str; TypeError otherwise. For a recorder that checks it before its other checks."""
    if not isinstance(where, str) or not where.strip():
        raise TypeError(f"where must say where it was recorded (machine) as a non-empty str, got {where!r}")
    return where


def label(where: str, *, by: str = "") -> str:
    """The label of a recording made now: "recorded by `by` `where`, 2026-12-06 21:10 UTC,
    Linux 6.18.44" ("`where`, 2026-..." when `by` is empty). TypeError for an empty `where`."""
    check_where(where)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    said = f"recorded by {by} {where}" if by else where
    return f"{said}, {stamp}, Linux {os.uname().release}"


def write(path: str | Path, record: Mapping[str, Any], *, indent: int | None = 1) -> None:
    """Write `record`, whose "recorded" is its label(), to `path` as JSON (``indent`` as
    json.dumps; None for one line) and a final newline. TypeError for a `record` without a
    str label; what json.dumps raises for a value JSON cannot hold."""
    if not isinstance(record, Mapping) or not isinstance(record.get("recorded"), str):
        raise TypeError(f"a recording is a dict whose 'recorded' is its label, got {record!r:.80}")
    text = json.dumps(dict(record), indent=indent) + "\n"  # the whole file is made before it is opened
    Path(path).write_text(text, encoding="utf-8")


def read(path: str | Path, saver: str, build: Callable[[str, dict[str, Any]], T], *, part: str | None = None) -> T:
    """``build(label, data)`` for the recording at `path`: its "recorded" label and the whole
    parsed JSON object. The file is found by ``lesson_file()``, so also from an edition's folder.

    Raises what lesson_file() raises (TypeError for a `path` that is no file name,
    FileNotFoundError); ValueError "<file> is not a recording [of `part`] made by `saver`:
    <what was wrong>" when the file is not JSON, has no str label, or `build` raises one of
    MALFORMED (a missing key, a wrong type) on its data.
    """
    file = lesson_file(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        said = data["recorded"]  # KeyError without one, TypeError for JSON that is no object
        if not isinstance(said, str):
            raise TypeError(f"the label 'recorded' must be a str, got {said!r:.80}")
        return build(said, data)
    except MALFORMED as exc:
        of = f" of {part!r}" if part is not None else ""
        raise ValueError(f"{file} is not a recording{of} made by {saver}: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from exc
