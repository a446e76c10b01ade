"""Run a notebook in a fresh kernel and report what it did and what it left behind.

This is the one runner of lesson notebooks (test_notebooks.py, bench/soak.py; nbval runs a
notebook only when given its path). The notebook runs top to bottom with nbclient, with
cells injected around it that never reach the committed notebook:

* before: start tracking sockets and binds, note the time, and time every cell from here
  on (IPython's pre_run_cell and post_run_cell events), noting whether it showed progress
  (``helpers.progressbar.displays_shown()`` moved) and how long the thread that ran it was
  ready but waiting for a CPU (/proc/thread-self/schedstat: a busy machine's share);
* right after the lesson's last cell: the time (the lesson's own run time is from the first
  injected cell to this one: the kernel's start-up is not the lesson's);
* practice, for a lesson with exercises (lesson_cells.takes_part): what each check said on
  the committed stub; then, per exercise, its solution (from the solution block) followed
  by its check cell again, and a plausible wrong answer (tests/exercise_mistakes/NN.py)
  followed by its check cell again. Each result is read from h.practice.results();
* with ``extremes=True``: every slider experiment the lesson built
  (``helpers.widgets.Experiment``) run again with each control at its extremes, as a
  learner dragging it to the end would;
* controls moved, for a lesson with exercises: every control of every Experiment set to a
  value other than its default (as the widget does when a learner lets go of it), then
  the closing cells (tagged ``closing``) run again: they must assert on runs the lesson
  made itself at fixed settings, so they still pass. To make that certain rather than
  likely, each Experiment's ``last`` is then replaced by an object that fails any closing
  cell that reads it;
* after: list leftovers (the leak check covers every step above).

An edition's notebook (notebooks/zh-CN/..., built by helpers.editions) runs the same way,
from its own folder: lesson_cells reads its exercises in the edition's words too
(``### 练习 N：``, ``<summary>查看参考答案</summary>``), and its stubs, solutions and closing
cells are the English ones byte for byte (tests/test_editions.py).

Injected solution, mistake and closing cells are tagged ``raises-exception`` so that one
failing does not stop the others; the runner reads their errors from their outputs and
``problems()`` turns everything into sentences a test can fail on.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lesson_cells
import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

BEFORE = """\
import time as _course_time
import helpers.core.hygiene as _course_hygiene
import helpers.progressbar as _course_progressbar
_course_hygiene.track()  # tracks sockets and binds from here on (the lesson's start_lesson() does too)
_course_cells = []  # per cell run from the next one on: [seconds, showed progress, seconds waiting for a CPU]
_course_cell_start = None

def _course_run_delay():  # seconds this thread has been ready to run but waiting for a CPU
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0

def _course_pre_cell(info):
    global _course_cell_start
    _course_cell_start = (_course_time.perf_counter(), _course_progressbar.displays_shown(), _course_run_delay())

def _course_post_cell(result):
    if _course_cell_start is not None:
        started, shown, delay = _course_cell_start
        _course_cells.append([_course_time.perf_counter() - started, _course_progressbar.displays_shown() > shown,
                              _course_run_delay() - delay])

get_ipython().events.register("pre_run_cell", _course_pre_cell)
get_ipython().events.register("post_run_cell", _course_post_cell)
print(f"COURSE-LESSON-START {_course_time.monotonic()}")
"""

LESSON_END = """\
print(f"COURSE-LESSON-END {_course_time.monotonic()}")
"""

AFTER = """\
import dataclasses as _dc, json as _json
_course_left = _course_hygiene.leftovers()
print("COURSE-LEFTOVERS " + _json.dumps({
    "leftovers": _dc.asdict(_course_left),
    "non_loopback_binds": _course_hygiene.non_loopback_binds(),
    "peak_rss_kib": int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))),
    "cells": _course_cells,
}))
"""

# Shared by the injected cells below: the lesson's experiments, and the practice log.
TOOLS = """\
import gc as _gc, json as _json
import helpers.practice as _course_practice

def _course_experiments():
    \"\"\"(name, Experiment) for every Experiment the lesson built.\"\"\"
    from helpers.widgets import Experiment
    found = [o for o in _gc.get_objects() if issubclass(type(o), Experiment)]  # (no isinstance: dead
    # weak proxies among the objects raise ReferenceError when asked for their class)
    return [(next((k for k, v in list(globals().items()) if v is e and not k.startswith("_")), "?"), e)
            for e in found]

_course_seen = 0

def _course_report(step):
    \"\"\"Print the practice results logged since the last report.\"\"\"
    global _course_seen
    new = _course_practice.results()[_course_seen:]
    _course_seen += len(new)
    print("COURSE-PRACTICE " + _json.dumps({"step": step, "results": [r.to_dict() for r in new]}))
"""

EXTREMES = """\
import itertools as _it, time as _time
import matplotlib.pyplot as _plt

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
for _label, _exp in _course_experiments():
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

MOVE_CONTROLS = """\
import matplotlib.pyplot as _plt

def _course_other_value(c):
    \"\"\"A value other than the control's own: for a slider, halfway from it to the farther end
    (on the step grid); for a choice, the next option; for a checkbox, the other state.\"\"\"
    if hasattr(c, "min") and hasattr(c, "max"):
        v, lo, hi, step = c.value, c.min, c.max, (getattr(c, "step", None) or 1)
        far = hi if hi - v >= v - lo else lo
        new = type(v)(min(max(lo + round((v + (far - v) / 2 - lo) / step) * step, lo), hi))
        return new if new != v else far
    if hasattr(c, "options"):
        values = [o[1] if isinstance(o, tuple) else o for o in c.options]
        return values[(values.index(c.value) + 1) % len(values)]
    if isinstance(c.value, bool):
        return not c.value
    return c.value

class _CourseSliderRun:
    # Stands in for an Experiment's `last` once the controls moved: a closing cell that
    # reads it fails, whatever the slider produced (it must assert on a run at fixed settings).

    def __init__(self, label):
        object.__setattr__(self, "_message", f"a closing check read {label}.last, the slider's latest run; "
                           f"assert on a run the lesson made at fixed settings (at_default = {label}.last "
                           "right after building the Experiment)")

    def _refuse(self, *args, **kwargs):
        raise AssertionError(object.__getattribute__(self, "_message"))

    __getattr__ = __getitem__ = __iter__ = __len__ = __bool__ = __eq__ = __lt__ = __gt__ = _refuse
    __contains__ = __format__ = __repr__ = __str__ = __float__ = __int__ = __hash__ = _refuse

_course_moved = []
for _label, _exp in _course_experiments():
    _values, _unmoved = {}, []
    for _k, _c in _exp.controls.items():
        _default = _c.value
        _c.value = _values[_k] = _course_other_value(_c)  # the widget runs the experiment, as on release
        if _c.value == _default:
            _unmoved.append(_k)
    _plt.close("all")
    _err = f"{type(_exp.last).__name__}: {_exp.last}" if isinstance(_exp.last, Exception) else None
    _course_moved.append({"experiment": _label, "values": _values, "unmoved": _unmoved, "error": _err})
    _exp.last = _CourseSliderRun(_label)
print("COURSE-MOVED " + _json.dumps(_course_moved, default=repr))
"""


EXTREME_RUN_S = 30  # one slider release at its extreme: a learner waits for it, so seconds too


def clear_error(extreme: dict) -> bool:
    """A clear error: a ValueError (the value is out of what the experiment can do) whose
    message names the control's value that caused it or the value's own words."""
    if not extreme["error"].startswith("ValueError: "):
        return False
    message = extreme["error"].split(": ", 1)[1]
    return any(str(v) in message for v in extreme["values"].values())


@dataclass
class CellRun:
    """One of the lesson's code cells as it ran: its index in the notebook, its seconds
    (measured in the kernel), whether it showed a progress display (h.progress), and how
    many of its seconds the kernel's thread spent ready to run but waiting for a CPU (the
    run delay in /proc/thread-self/schedstat; 0 where the kernel does not keep it)."""

    cell: int
    seconds: float
    progress: bool
    waited: float = 0.0


@dataclass
class NotebookRun:
    """The outcome of one run: seconds taken, leftovers, non-loopback binds, and the
    kernel's peak resident memory (VmHWM; Binder gives 1-2 GB in all). ``seconds`` is the
    lesson's own run time (its first cell to its last; the kernel's start-up is not in it);
    ``cells`` times each of its code cells; ``extremes`` lists the slider runs at their
    extremes, if asked for; ``practice`` holds the practice steps' reports and
    ``problems()`` says what they found wrong; ``shown`` is what the lesson's own cells showed,
    as text (what a learner reads: printed lines, tables, captions, diagrams)."""

    path: Path
    seconds: float
    leftovers: dict[str, list]
    non_loopback_binds: list[str]
    peak_rss_mb: float
    extremes: list[dict] | None = None
    practice: dict | None = None
    cells: list[CellRun] = field(default_factory=list)
    shown: str = ""

    def problems(self) -> list[str]:
        """Every way the practice steps failed (empty for a lesson without exercises)."""
        return list(self.practice["problems"]) if self.practice else []


@dataclass
class _Injected:
    """Where the injected practice cells are, to read their outputs after the run."""

    stubs: int = -1
    steps: list[tuple[str, int, list[int], int]] = field(default_factory=list)  # (kind, number, cells, report)
    moved: int = -1
    closing: list[tuple[int, int]] = field(default_factory=list)  # (lesson cell, injected cell)


def _code(source: str, *, may_fail: bool = False) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if may_fail:
        cell.metadata["tags"] = ["raises-exception"]  # nbclient records the error and goes on
    return cell


@dataclass
class Prepared:
    """A lesson with the runner's cells injected (``nb``), ready for an executor: nbclient
    in run_notebook(), or a learner's own server on a hub (tests/hub_class.py). ``outcome``
    reads what the injected cells printed once ``nb`` holds the outputs."""

    path: Path
    nb: nbformat.NotebookNode
    original: nbformat.NotebookNode
    where: _Injected
    found: list[lesson_cells.ExerciseCells]
    wrong: dict[int, str]
    extremes: bool
    practice: bool

    @property
    def lesson_end(self) -> int:
        """The index of the injected cell that marks the end of the lesson's own cells."""
        return len(self.original.cells) + 1

    def outcome(self) -> NotebookRun:
        """The run, from the outputs in ``nb``."""
        nb = self.nb
        seconds = (float(_marked(nb.cells[self.lesson_end], "COURSE-LESSON-END"))
                   - float(_marked(nb.cells[0], "COURSE-LESSON-START")))
        extreme_runs = _report(_find(nb, "COURSE-EXTREMES"), "COURSE-EXTREMES")["runs"] if self.extremes else None
        report = _report(nb.cells[-1], "COURSE-LEFTOVERS")
        outcome = _practice(nb, self.original, self.where, self.found, self.wrong) if self.practice else None
        code = [i for i, c in enumerate(self.original.cells) if c.cell_type == "code"]
        cells = [CellRun(i, round(t, 3), progress, round(waited, 3))
                 for i, (t, progress, waited) in zip(code, report["cells"])]
        text = "\n".join(_shown(c) for c in nb.cells[1:self.lesson_end])  # the lesson's own cells
        return NotebookRun(self.path, seconds, report["leftovers"], report["non_loopback_binds"],
                           report["peak_rss_kib"] / 1024, extreme_runs, outcome, cells, text)


def prepare(
    path: Path, *, extremes: bool = False, practice: bool | None = None, mistakes: dict[int, str] | None = None
) -> Prepared:
    """The lesson at `path` with the runner's cells injected (module comment; run_notebook()
    says what the arguments do)."""
    original = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    if practice is None:
        practice = lesson_cells.takes_part(original)
    found, _ = lesson_cells.exercises(original)
    wrong = lesson_cells.mistakes(lesson_cells.lesson_of(path)) if mistakes is None else mistakes
    nb.cells, where = _inject(nb, found, wrong, practice=practice, extremes=extremes)
    return Prepared(path, nb, original, where, found, wrong, extremes, practice)


def run_notebook(
    path: Path,
    *,
    timeout_s: int = 120,
    extremes: bool = False,
    practice: bool | None = None,
    mistakes: dict[int, str] | None = None,
) -> NotebookRun:
    """Execute `path` in its own directory; raise nbclient's CellExecutionError if a lesson
    cell fails. With `extremes`, also run every slider experiment at its extremes. The
    practice and controls-moved steps run for lessons with exercises (`practice` None), or
    always (True: for a lesson without exercises only controls-moved), or never (False).
    `mistakes` replaces tests/exercise_mistakes/NN.py (for toy notebooks)."""
    prep = prepare(path, extremes=extremes, practice=practice, mistakes=mistakes)
    execute(prep.nb, path.parent, timeout_s=timeout_s)
    return prep.outcome()


def execute(nb: nbformat.NotebookNode, cwd: Path, *, timeout_s: int = 120) -> None:
    """Run every code cell of `nb` in a fresh python3 kernel started in `cwd`, storing the
    outputs in `nb`; raise nbclient's CellExecutionError for a failing cell (one not tagged
    ``raises-exception``). Every notebook a test runs in a kernel goes through here."""
    # IPC transport: the kernel's channels are Unix sockets, not TCP ports on a loopback
    # that every user of a shared machine can reach (and that jupyter_client picks by
    # binding port 0 and closing, a race on a busy host).
    # The socket paths must be absolute: the kernel runs in the notebook's folder.
    ipc_dir = tempfile.mkdtemp(prefix="course-kernel-")
    km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(ipc_dir, "kernel"))
    client = NotebookClient(nb, km=km, timeout=timeout_s, resources={"metadata": {"path": str(cwd)}})
    # nbclient mimics ipywidgets' Output widget by sending a comm message on the shell channel
    # for every output written into one, while another task waits on that channel for the
    # execute_reply; now and then (measured: 4 of 195 such cells) that wait misses the reply
    # until the cell timeout (jupyter/nbclient#312). This runner reads only its own injected
    # cells' outputs, never a widget's, so it drops the mimic: outputs inside widgets land in
    # the cell's own outputs instead.
    client.comm_open_handlers.pop("jupyter.widget", None)
    # Each run keeps the learner's progress file in its own temporary folder: a test never
    # writes to the real one, and every lesson starts with none.
    env = {**os.environ, "COURSE_PROGRESS_FILE": os.path.join(ipc_dir, "progress.json")}

    async def execute() -> None:
        try:
            await client.async_execute(env=env)
        finally:
            # nbclient stops the client's channels only when it made the kernel manager itself
            # (cleanup_kc defaults to owns_km), and here we make it. Left running, the client's
            # heartbeat thread outlives the kernel and, finding no heart, closes and re-creates
            # its ZMQ socket every second: one thread and about ten fds per lesson run, until a
            # test that uses up the soft RLIMIT_NOFILE (1024 for a normal user) makes that thread
            # die with "zmq.error.ZMQError: Too many open files".
            if client.kc is not None:
                client.kc.stop_channels()
            if km.has_kernel:  # nbclient shuts down only kernels it started itself
                await km.shutdown_kernel(now=False)

    try:
        # An event loop of our own, closed at the end: client.execute() would run on the
        # loop jupyter_core keeps for the thread for the life of the process (its self-pipe,
        # a socketpair, would stay open after every run, and the leak check would see it).
        asyncio.run(execute())
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)


def _inject(lesson: nbformat.NotebookNode, found: list[lesson_cells.ExerciseCells], wrong: dict[int, str], *,
            practice: bool, extremes: bool) -> tuple[list[nbformat.NotebookNode], _Injected]:
    """The lesson's cells with the runner's cells around them (module comment), and where
    the injected ones are."""
    cells = [_code(BEFORE), *lesson.cells, _code(LESSON_END)]
    where = _Injected()
    if practice:
        cells.append(_code(TOOLS))
        where.stubs = len(cells)
        cells.append(_code('_course_report("stub")'))
        for ex in found:
            check = lesson.cells[ex.check].source if ex.check is not None else "pass"
            for kind, source in (("solution", ex.solution), ("mistake", wrong.get(ex.number))):
                if source is None:
                    continue
                first = len(cells)
                cells += [_code(source, may_fail=True), _code(check, may_fail=True)]
                where.steps.append((kind, ex.number, [first, first + 1], len(cells)))
                cells.append(_code(f'_course_report("{kind} {ex.number}")'))
    if extremes:
        if not practice:
            cells.append(_code(TOOLS))
        cells.append(_code(EXTREMES))
    if practice:
        where.moved = len(cells)
        cells.append(_code(MOVE_CONTROLS))
        for i in lesson_cells.closing_cells(lesson):
            where.closing.append((i, len(cells)))
            cells.append(_code(lesson.cells[i].source, may_fail=True))
    cells.append(_code(AFTER))
    return cells, where


def _practice(nb: nbformat.NotebookNode, original: nbformat.NotebookNode, where: _Injected,
              found: list[lesson_cells.ExerciseCells], wrong: dict[int, str]) -> dict:
    """The practice steps' reports, and the problems they show."""
    problems = lesson_cells.structure_problems(original) if found else lesson_cells.untagged_closing(original)
    stub = {r["exercise"]: r for r in _report(nb.cells[where.stubs], "COURSE-PRACTICE")["results"]}
    steps = []
    for ex in found:
        r = stub.get(ex.number)
        if r is None:
            problems.append(f"exercise {ex.number}: its check did not run on the committed stub")
        elif r["status"] != "not done yet" or not r["hint"]:
            problems.append(f"exercise {ex.number}: on the committed stub the check said {r['status']!r} "
                            f"({r['observed']}), not 'not done yet' with a hint")
        if ex.number not in wrong:
            problems.append(f"exercise {ex.number}: no plausible wrong answer (tests/exercise_mistakes/NN.py, "
                            f"a section '# %% Exercise {ex.number}')")
    for kind, number, injected, report in where.steps:
        errors = [e for i in injected for e in _errors(nb.cells[i])]
        results = _report(nb.cells[report], "COURSE-PRACTICE")["results"]
        r = results[-1] if results else None
        steps.append({"kind": kind, "exercise": number, "errors": errors, "result": r})
        if errors:
            problems.append(f"exercise {number}: running its {kind} raised {'; '.join(errors)}")
        elif r is None:
            problems.append(f"exercise {number}: its check cell logged no result after the {kind}")
        elif r["exercise"] != number:
            problems.append(f"exercise {number}: its check cell checks exercise {r['exercise']}")
        elif kind == "solution" and r["status"] != "passed":
            problems.append(f"exercise {number}: the solution did not pass: {r['status']}: {r['observed']}")
        elif kind == "mistake" and (r["status"] not in ("not yet", "not done yet") or not r["hint"]):
            problems.append(f"exercise {number}: a plausible wrong answer got {r['status']!r} "
                            f"({r['observed']}); it must not pass, and must come with a hint")
    moved = _report(nb.cells[where.moved], "COURSE-MOVED")
    for m in moved:
        if m["unmoved"]:
            problems.append(f"experiment {m['experiment']}: the runner cannot move {m['unmoved']} off its default")
        if m["error"]:
            problems.append(f"experiment {m['experiment']} failed with the controls at {m['values']}: {m['error']}")
    closing = []
    for lesson_cell, injected in where.closing:
        errors = _errors(nb.cells[injected])
        closing.append({"cell": lesson_cell, "errors": errors})
        if errors:
            values = "; ".join(f"{m['experiment']} {m['values']}" for m in moved)
            problems.append(f"closing cell {lesson_cell} failed once the controls had moved ({values}): "
                            f"{'; '.join(errors)}")
    return {"stub": list(stub.values()), "steps": steps, "moved": moved, "closing": closing, "problems": problems}


def _errors(cell: nbformat.NotebookNode) -> list[str]:
    """One line for each error output of a cell (see describe_error)."""
    return [describe_error("\n".join(out.traceback), out.ename, out.evalue)
            for out in cell.get("outputs", []) if out.output_type == "error"]


def describe_error(traceback: str, ename: str, evalue: str) -> str:
    """One line for a cell's error: the cell's line that raised (and the innermost line, if
    the error came from a function it called), and the error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", traceback)
    # IPython marks the line that raised with an arrow and its number: "----> 7 assert ..."
    # (IPython 8) or "---> 7 assert ..." (IPython 9); the first arrow is in the cell, the
    # last in the innermost frame.
    arrows = [a.strip()[:160] for a in re.findall(r"^-+> *\d+ (.*)$", text, re.MULTILINE)]
    where = ""
    if arrows:
        where = f"at `{arrows[0]}`" + (f" (in `{arrows[-1]}`)" if len(arrows) > 1 else "") + ": "
    return f"{where}{ename}: {str(evalue)[:300]}"


def _shown(cell: nbformat.NotebookNode) -> str:
    """A code cell's outputs as text: streams, each display's text (HTML with its tags
    removed), Mermaid source, errors."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
        elif "data" in out:
            data = out.data
            if "text/html" in data:
                parts.append(re.sub(r"<[^>]+>", " ", data["text/html"]))
            elif "text/plain" in data:
                parts.append(data["text/plain"])
            if "text/vnd.mermaid" in data:
                parts.append(data["text/vnd.mermaid"])
    return "\n".join(parts)


def _find(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    """The injected cell whose source prints `tag`."""
    return next(c for c in nb.cells if f'"{tag} "' in c.source)


def _stdout(cell: nbformat.NotebookNode) -> str:
    """All a cell printed: one print() may arrive as several stream outputs."""
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream" and out.name == "stdout")


def _marked(cell: nbformat.NotebookNode, tag: str) -> str:
    """What an injected cell printed after `tag` on one line."""
    for line in _stdout(cell).splitlines():
        if line.startswith(tag + " "):
            return line.split(" ", 1)[1]
    raise RuntimeError(f"the injected {tag} cell printed nothing: {cell.outputs!r}")


def _report(cell: nbformat.NotebookNode, tag: str) -> dict:
    """The JSON an injected cell printed after `tag`."""
    return json.loads(_marked(cell, tag))
