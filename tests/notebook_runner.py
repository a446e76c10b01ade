"""Run a notebook in a fresh kernel and report what it left behind.

Used by test_notebooks.py (and reusable by the soak script): the notebook runs top to
bottom with nbclient, with one cell injected before it (start tracking sockets and binds)
and one after it (list leftovers). The injected cells never reach the
committed notebook.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
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
    "peak_rss_kib": int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))),
}))
"""


@dataclass
class NotebookRun:
    """The outcome of one run: seconds taken, leftovers, non-loopback binds, and the
    kernel's peak resident memory (VmHWM; Binder gives 1-2 GB in all)."""

    path: Path
    seconds: float
    leftovers: dict[str, list]
    non_loopback_binds: list[str]
    peak_rss_mb: float


def run_notebook(path: Path, *, timeout_s: int = 120) -> NotebookRun:
    """Execute `path` in its own directory; raise nbclient's CellExecutionError on failure."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(BEFORE))
    nb.cells.append(nbformat.v4.new_code_cell(AFTER))
    # IPC transport: the kernel's channels are Unix sockets, not TCP ports on a loopback
    # that every user of a shared machine can reach (and that jupyter_client picks by
    # binding port 0 and closing, a race on a busy host).
    # The socket paths must be absolute: the kernel runs in the notebook's folder.
    ipc_dir = tempfile.mkdtemp(prefix="course-kernel-")
    km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(ipc_dir, "kernel"))
    client = NotebookClient(nb, km=km, timeout=timeout_s, resources={"metadata": {"path": str(path.parent)}})
    # nbclient mimics ipywidgets' Output widget by sending a comm message on the shell channel
    # for every output written into one, while another task waits on that channel for the
    # execute_reply; now and then (measured: 4 of 195 such cells) that wait misses the reply
    # until the cell timeout (jupyter/nbclient#312). This runner reads only the last cell, so
    # it drops the mimic: outputs inside widgets land in the cell's own outputs instead.
    client.comm_open_handlers.pop("jupyter.widget", None)
    started = time.monotonic()
    try:
        client.execute()
    finally:
        if km.has_kernel:  # nbclient shuts down only kernels it started itself
            km.shutdown_kernel(now=False)
        shutil.rmtree(ipc_dir, ignore_errors=True)
    seconds = time.monotonic() - started
    report = None
    for out in nb.cells[-1].outputs:
        for line in out.get("text", "").splitlines():
            if line.startswith("COURSE-LEFTOVERS "):
                report = json.loads(line.split(" ", 1)[1])
    if report is None:
        raise RuntimeError(f"{path.name}: the leftover check printed nothing: {nb.cells[-1].outputs!r}")
    return NotebookRun(
        path, seconds, report["leftovers"], report["non_loopback_binds"], report["peak_rss_kib"] / 1024
    )
