"""Run a notebook in a fresh kernel and report what it left behind.

Used by test_notebooks.py (and reusable by the soak script): the notebook runs top to
bottom with nbclient, with one cell injected before it (start tracking sockets and binds)
and one after it (list leftovers). The injected cells never reach the
committed notebook.

With ``extremes=True`` one more cell runs before the leftover check: every slider
experiment the lesson built (``helpers.widgets.Experiment``) is run again with each
control at its extremes, as a learner dragging it to the end would, and the outcome of
each run is reported (then the leftover check covers those runs too).
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


EXTREMES = """\
import gc as _gc, itertools as _it, json as _json, time as _time
import matplotlib.pyplot as _plt
from helpers.widgets import Experiment as _CourseExperiment

def _course_cases(exp):
    \"\"\"Each slider alone at min and at max; then every combination of the choices with all
    sliders at min and with all at max (the corners where a lesson's limits meet).\"\"\"
    sliders = {k: c for k, c in exp.controls.items() if hasattr(c, "min")}
    choices = {k: list(c.options) for k, c in exp.controls.items() if not hasattr(c, "min")}
    for k, c in sliders.items():
        yield {k: c.min}
        yield {k: c.max}
    combos = [dict(zip(choices, vs)) for vs in _it.product(*choices.values())] or [{}]
    for combo in combos:
        for end in ("min", "max"):
            yield {**combo, **{k: getattr(c, end) for k, c in sliders.items()}}

_course_extremes = []
_course_extremes_s = 0.0
for _exp in [o for o in _gc.get_objects() if issubclass(type(o), _CourseExperiment)]:  # (no isinstance: dead
    # weak proxies among the objects raise ReferenceError when asked for their class)
    _label = next((k for k, v in list(globals().items()) if v is _exp and not k.startswith("_")), "?")
    _defaults = {k: c.value for k, c in _exp.controls.items()}
    _seen = []
    for _case in _course_cases(_exp):
        _values = {**_defaults, **_case}
        if _values in _seen:
            continue
        _seen.append(_values)
        _t0 = _time.perf_counter()
        _exp._run(**_values)  # what the widget calls when a control is released
        _dt = _time.perf_counter() - _t0
        _course_extremes_s += _dt
        _plt.close("all")
        _err = f"{type(_exp.last).__name__}: {_exp.last}" if isinstance(_exp.last, Exception) else None
        _course_extremes.append({"experiment": _label, "values": _values, "seconds": round(_dt, 2),
                                 "error": _err})
print("COURSE-EXTREMES " + _json.dumps({"runs": _course_extremes, "seconds": _course_extremes_s}, default=repr))
"""


@dataclass
class NotebookRun:
    """The outcome of one run: seconds taken, leftovers, non-loopback binds, and the
    kernel's peak resident memory (VmHWM; Binder gives 1-2 GB in all). ``seconds`` is the
    lesson's own run time; ``extremes`` lists the slider runs at their extremes, if asked
    for (their time is not part of ``seconds``)."""

    path: Path
    seconds: float
    leftovers: dict[str, list]
    non_loopback_binds: list[str]
    peak_rss_mb: float
    extremes: list[dict] | None = None


def run_notebook(path: Path, *, timeout_s: int = 120, extremes: bool = False) -> NotebookRun:
    """Execute `path` in its own directory; raise nbclient's CellExecutionError on failure.
    With `extremes`, also run every slider experiment at its extremes (see EXTREMES)."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(BEFORE))
    if extremes:
        nb.cells.append(nbformat.v4.new_code_cell(EXTREMES))
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
    extreme_runs = None
    if extremes:
        extreme_report = _report(nb.cells[-2], "COURSE-EXTREMES")
        extreme_runs = extreme_report["runs"]
        seconds -= extreme_report["seconds"]
    report = _report(nb.cells[-1], "COURSE-LEFTOVERS")
    return NotebookRun(
        path, seconds, report["leftovers"], report["non_loopback_binds"], report["peak_rss_kib"] / 1024, extreme_runs
    )


def _report(cell: nbformat.NotebookNode, tag: str) -> dict:
    """The JSON an injected cell printed after `tag`."""
    report = None
    for out in cell.outputs:
        for line in out.get("text", "").splitlines():
            if line.startswith(tag + " "):
                report = json.loads(line.split(" ", 1)[1])
    if report is None:
        raise RuntimeError(f"the injected {tag} cell printed nothing: {cell.outputs!r}")
    return report
