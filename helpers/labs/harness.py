"""Kernel side of grading: run each cell of a graded lab under a timeout and record the result.

The grader rewrites a submission so that every code cell calls one function here
(``run_task``, ``run_test``, ``run_setup``) with the cell's source. Each runs the code with
``exec`` in the notebook's globals, under a SIGALRM timer (a test that blocks in recv()
is interrupted, since the kernel runs cells in its main thread), catches what it raises,
and appends one JSON line to the results file the grader named in the environment. So a
task that fails does not stop the tests after it, and the grader can score whatever ran
even if the kernel dies later.

This is isolation against mistakes (a hang, a crash, a flood of output), not a security
sandbox: learner code runs in the same process as the tests, as it does in nbgrader.
"""

from __future__ import annotations

import io
import json
import linecache
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["GradingTimeout", "start", "run_task", "run_test", "run_setup", "RESULTS_ENV", "DEADLINE_ENV"]

RESULTS_ENV = "LAB_GRADER_RESULTS"
DEADLINE_ENV = "LAB_GRADER_DEADLINE_S"
_results: TextIO | None = None
_counter = 0


class GradingTimeout(BaseException):
    """A cell ran past its time limit. A BaseException, so `except Exception` in learner code
    does not swallow it."""


def _record(**event: Any) -> None:
    if _results is not None:
        _results.write(json.dumps(event) + "\n")
        _results.flush()


class _Capped(io.TextIOBase):
    """A stdout/stderr that passes on the first `limit` characters in total, then drops the rest."""

    def __init__(self, inner: TextIO, budget: list[int]):
        self._inner, self._budget, self._warned = inner, budget, False

    def write(self, text: str) -> int:
        room = self._budget[0]
        if room > 0:
            self._inner.write(text[:room])
        elif not self._warned:
            self._warned = True
            self._inner.write("\n[grader: output limit reached; further output dropped]\n")
        self._budget[0] = room - len(text)
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def start(output_limit: int = 100_000) -> None:
    """Open the results file, cap the output, and arm a hard deadline for the whole kernel."""
    global _results
    path = os.environ.pop(RESULTS_ENV, None)
    if path:
        _results = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the kernel's life)
    _record(event="start", pid=os.getpid())
    budget = [output_limit]
    sys.stdout = _Capped(sys.stdout, budget)  # type: ignore[assignment]
    sys.stderr = _Capped(sys.stderr, budget)  # type: ignore[assignment]
    deadline = os.environ.pop(DEADLINE_ENV, None)
    if deadline:
        # Backstop if the grader process is gone and the kernel missed it: exit, whatever runs.
        def _expire() -> None:
            time.sleep(float(deadline))
            os._exit(3)

        threading.Thread(target=_expire, name="lab-grader-deadline", daemon=True).start()


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def _expired(signum: int, frame: Any) -> None:
        raise GradingTimeout(f"timed out after {seconds:g} s (a blocking call that never returned?)")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _compile(code: str, label: str) -> Any:
    global _counter
    _counter += 1
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        code = TransformerManager().transform_cell(code)  # %magics -> get_ipython() calls
    except ImportError:
        pass
    filename = f"<{label} #{_counter}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    return compile(code, filename, "exec")


def _describe(exc: BaseException) -> str:
    """One line: the exception, and for a bare assert the line that failed."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(exc, AssertionError) and not str(exc):
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<")]
        if frames and frames[-1].line:
            text += f" ({frames[-1].line.strip()})"
    return text[:500]


def _run(code: str, ns: dict[str, Any], label: str, timeout_s: float) -> tuple[float, str]:
    started = time.monotonic()
    try:
        compiled = _compile(code, label)
        with _time_limit(timeout_s):
            exec(compiled, ns)  # noqa: S102 (running the cell is the point)
    except (Exception, GradingTimeout, KeyboardInterrupt, SystemExit) as exc:  # noqa: BLE001
        traceback.print_exception(exc, limit=-8, file=sys.stderr)
        return time.monotonic() - started, _describe(exc)
    return time.monotonic() - started, ""


def run_task(task: str, code: str, ns: dict[str, Any], *, timeout_s: float = 10.0) -> None:
    """Run the learner's task cell; record an error if it raised (its tests will say more)."""
    seconds, error = _run(code, ns, f"task {task}", timeout_s)
    _record(event="task", task=task, seconds=round(seconds, 3), error=error)


def run_test(test: str, points: float, code: str, ns: dict[str, Any], *, timeout_s: float = 10.0) -> None:
    """Run one test cell: full points if it finishes without raising, else 0 and the error."""
    seconds, error = _run(code, ns, f"test {test}", timeout_s)
    score = 0.0 if error else points
    _record(event="test", test=test, points=score, max=points, seconds=round(seconds, 3), error=error)
    print(f"{'FAIL' if error else 'PASS'} {test}: {score:g}/{points:g}" + (f": {error}" if error else ""))


def run_setup(code: str, ns: dict[str, Any], *, timeout_s: float = 10.0) -> None:
    """Run one of the lab's own cells (imports, helpers, prose code); record it if it failed."""
    seconds, error = _run(code, ns, "lab cell", timeout_s)
    if error:
        _record(event="setup", seconds=round(seconds, 3), error=error)
