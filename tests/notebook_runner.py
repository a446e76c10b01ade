"""Run a notebook in a fresh kernel and report what it left behind.

Used by test_notebooks.py (and reusable by the soak script): the notebook runs top to
bottom with nbclient, with one cell injected before it (start tracking sockets and binds)
and one after it (list leftovers). The injected cells never reach the
committed notebook.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

BEFORE = """\
import helpers.hygiene as _course_hygiene  # starts tracking sockets and binds
"""

AFTER = """\
import dataclasses as _dc, json as _json
_course_left = _course_hygiene.leftovers()
print("COURSE-LEFTOVERS " + _json.dumps({
    "leftovers": _dc.asdict(_course_left),
    "non_loopback_binds": _course_hygiene.non_loopback_binds(),
}))
"""


@dataclass
class NotebookRun:
    """The outcome of one run: seconds taken, leftovers and non-loopback binds."""

    path: Path
    seconds: float
    leftovers: dict[str, list]
    non_loopback_binds: list[str]


def run_notebook(path: Path, *, timeout_s: int = 120) -> NotebookRun:
    """Execute `path` in its own directory; raise nbclient's CellExecutionError on failure."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(BEFORE))
    nb.cells.append(nbformat.v4.new_code_cell(AFTER))
    client = NotebookClient(
        nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    # nbclient mimics ipywidgets' Output widget by sending a comm message on the shell channel
    # for every output written into one, while another task waits on that channel for the
    # execute_reply; now and then (measured: 4 of 195 such cells) that wait misses the reply
    # until the cell timeout (jupyter/nbclient#312). This runner reads only the last cell, so
    # it drops the mimic: outputs inside widgets land in the cell's own outputs instead.
    client.comm_open_handlers.pop("jupyter.widget", None)
    started = time.monotonic()
    client.execute()
    seconds = time.monotonic() - started
    report = None
    for out in nb.cells[-1].outputs:
        for line in out.get("text", "").splitlines():
            if line.startswith("COURSE-LEFTOVERS "):
                report = json.loads(line.split(" ", 1)[1])
    if report is None:
        raise RuntimeError(f"{path.name}: the leftover check printed nothing: {nb.cells[-1].outputs!r}")
    return NotebookRun(path, seconds, report["leftovers"], report["non_loopback_binds"])
