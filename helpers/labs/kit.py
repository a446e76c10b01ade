"""What a lab notebook uses to test the learner's code: ``@kit.test``, ``kit.case``, ``kit.check()``.

Theory of operation. A lab notebook imports this module (``from helpers.labs import kit``)
and writes each test as a function::

    @kit.test(points=2)
    def readn_exact():
        ...                      # plain asserts; raise to fail

    @kit.test(points=2)
    def persistent_rfc_cases():  # partial credit: each case counts
        for version, header, want in CASES:
            with kit.case(f"{version} {header!r}"):
                assert persistent(version, header) is want

The same cell behaves in three places:

* **In the learner's notebook** (and in the instructor's source) the decorator runs the
  test at once and prints one line: passed, failed with the message, or the part of the
  points its cases earned. ``kit.check()`` runs every visible test again and lists the
  hidden ones by name and points (``kit.hidden``, written by the release). The learner's
  own functions are called directly.
* **In the grader's trusted process** (``runner``) a session is installed here before the
  lab runs; the decorator hands the test to it. The session runs it under a timer, retries
  a ``timing=True`` test once, adds up the cases, and reports the result on a channel the
  learner's code never sees. The learner's functions are proxies that call into the
  learner's process (``remote``). ``kit.rng()`` is seeded from a secret there, so the
  inputs of a graded test cannot be known in advance.
* **In the learner's process** when graded, tests never run; ``check`` and ``hidden`` do
  nothing.

This module is imported by the learner's notebook, so it stays small and imports only
the standard library.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["test", "case", "check", "hidden", "rng", "learner_threads", "learner_pids", "learner_source",
           "TestTimeout", "DEFAULT_TIMEOUT_S"]

#: Seconds a test may run before it fails as "timed out" (the grader's --test-timeout default).
DEFAULT_TIMEOUT_S = 15.0


class TestTimeout(BaseException):
    """A test ran past its time limit. A BaseException, so ``except Exception`` inside a test
    (or inside the learner's code it calls) does not swallow it."""

    __test__ = False  # not a pytest test class


@dataclass
class Outcome:
    """What one run of a test earned: ``fraction`` of its points, and why not all."""

    fraction: float
    error: str = ""
    cases: list[tuple[str, bool, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Registered:
    fn: Callable[[], Any]
    points: float
    timeout_s: float
    timing: bool
    last: Outcome | None = None


# The session the grader's runner installs (None in a learner's notebook), the tests this
# notebook defined (for check()), and the hidden tests the release listed.
_session: Any = None
_tests: dict[str, _Registered] = {}
_hidden: dict[str, float] = {}
_current: list[list[tuple[str, bool, str]]] = []  # the running test's cases (a stack of one)


def _check_points(points: object) -> float:
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points) or points <= 0:
        raise ValueError(f"points must be a number > 0, got {points!r}")
    return float(points)


def test(points: float, *, timeout_s: float | None = None, timing: bool = False) -> Callable[[Callable[[], Any]], Any]:
    """Decorate a test function: it runs at once and reports what it earned.

    Args:
        points: what the test is worth (> 0).
        timeout_s: seconds before it fails as timed out (default 15, or the grader's
            --test-timeout).
        timing: True for a test whose verdict depends on timing (deadlines, delays): the
            grader runs it once more before scoring 0, and says so in the gradebook.
    A test passes if it returns without raising; ``kit.case`` blocks inside it earn a part.
    """
    points = _check_points(points)
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                  or not 0 < timeout_s <= 3600):
        raise ValueError(f"timeout_s must be a number of seconds in (0, 3600], got {timeout_s!r}")
    if not isinstance(timing, bool):
        raise TypeError(f"timing must be True or False, got {timing!r}")

    def decorate(fn: Callable[[], Any]) -> Callable[[], Any]:
        if not callable(fn) or not hasattr(fn, "__name__"):
            raise TypeError(f"@kit.test decorates a function, got {fn!r:.60}")
        if _session is not None:
            _session.run_test(fn, points=points, timeout_s=timeout_s, timing=timing)
            return fn
        entry = _Registered(fn, points, float(timeout_s or DEFAULT_TIMEOUT_S), timing)
        _tests[fn.__name__] = entry
        entry.last = run(fn, entry.timeout_s)
        print(_verdict(fn.__name__, points, entry.last))
        return fn

    return decorate


@contextlib.contextmanager
def case(name: str) -> Iterator[None]:
    """One case of the running test, for partial credit: if the block raises, this case
    fails (with the message) and the test goes on; the test earns its points times the
    share of cases that passed."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a case needs a name (non-empty str), got {name!r:.60}")
    if not _current:
        raise RuntimeError("kit.case() belongs inside a test function decorated with @kit.test")
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (a failing case is recorded, the test goes on)
        _current[-1].append((name, False, _one_line(exc)))
    else:
        _current[-1].append((name, True, ""))


def _one_line(exc: BaseException) -> str:
    """One line: the exception, and for a bare assert the line that failed."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(exc, AssertionError) and not str(exc):
        frames = traceback.extract_tb(exc.__traceback__)
        if frames and frames[-1].line:
            text += f" ({frames[-1].line.strip()})"
    return text[:500]


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise TestTimeout in the main thread after `seconds` (a blocked recv() is interrupted)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TestTimeout(f"timed out after {seconds:g} s (a call that never returned?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(fn: Callable[[], Any], timeout_s: float) -> Outcome:
    """Run one test function once, under a timer, and say what it earned."""
    started = time.monotonic()
    _current.append([])
    try:
        with _time_limit(timeout_s):
            fn()
    except (Exception, TestTimeout) as exc:  # noqa: BLE001 (the verdict is the point)
        cases = _current.pop()
        return Outcome(0.0, _one_line(exc), cases, time.monotonic() - started)
    cases = _current.pop()
    seconds = time.monotonic() - started
    if not cases:
        return Outcome(1.0, "", cases, seconds)
    failed = [(n, why) for n, ok, why in cases if not ok]
    error = "; ".join(f"case {n}: {why}" for n, why in failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5
                                                                     else "")
    return Outcome((len(cases) - len(failed)) / len(cases), error, cases, seconds)


def _verdict(name: str, points: float, outcome: Outcome) -> str:
    earned = round(points * outcome.fraction, 2)
    if outcome.fraction == 1:
        mark = "passed"
    elif outcome.cases and outcome.fraction > 0:
        mark = f"partly passed ({sum(ok for _, ok, _ in outcome.cases)} of {len(outcome.cases)} cases)"
    else:
        mark = "FAILED"
    return f"{name}: {mark}, {earned:g}/{points:g} points" + (f": {outcome.error}" if outcome.error else "")


def _points(points: float) -> str:
    return f"{points:g} point" + ("" if points == 1 else "s")


def hidden(name: str, points: float) -> None:
    """Note a hidden test (the released notebook has one such call where each hidden test
    is): ``kit.check()`` lists it, so you know what else will be judged."""
    points = _check_points(points)
    if _session is not None:
        return
    _hidden[str(name)] = points
    print(f"A hidden test, {name} ({_points(points)}), runs here when your lab is graded.")


def _references(fn: Callable[[], Any], name: str) -> bool:
    """Whether the test's code (or code nested in it) mentions `name`."""
    stack = [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        if name in code.co_names or name in code.co_freevars:
            return True
        stack += [c for c in code.co_consts if hasattr(c, "co_names")]
    return False


def check(task: str | None = None) -> None:
    """Run the visible tests again (all, or those that use `task`, e.g. ``"readn"``) and
    print what passed, then the hidden tests that will run when the lab is graded."""
    if _session is not None:
        return
    chosen = {n: t for n, t in _tests.items() if task is None or _references(t.fn, task)}
    if task is not None and not chosen:
        names = ", ".join(_tests) or "none yet"
        print(f"No test you have run uses {task!r} (tests run so far: {names}); run the test cells first.")
        return
    earned = total = 0.0
    lines = []
    for name, entry in chosen.items():
        with contextlib.redirect_stdout(io.StringIO()):  # the summary, not each test's own prints
            entry.last = run(entry.fn, entry.timeout_s)
        earned += round(entry.points * entry.last.fraction, 2)
        total += entry.points
        lines.append("  " + _verdict(name, entry.points, entry.last))
    what = "Visible tests" + (f" that use {task}" if task else "")
    print(f"{what}: {earned:g} of {total:g} points")
    print("\n".join(lines))
    if task is None:
        if _hidden:
            listed = ", ".join(f"{n} ({p:g})" for n, p in _hidden.items())
            print(f"Hidden tests, run when graded ({sum(_hidden.values()):g} points): {listed}")
        missing = "" if _tests else " (run the test cells above first)"
        if missing:
            print("No visible test has run yet" + missing)


def rng() -> random.Random:
    """A random generator for a test's inputs: fresh each call here; when graded, seeded
    from a secret the learner's code never sees."""
    if _session is not None:
        return _session.rng()
    return random.Random(int.from_bytes(os.urandom(8), "big"))


def learner_source(name: str) -> str:
    """The source of the learner's task cell that defines `name` (e.g. ``"BoundedQueue"``),
    for a test that checks how a task is written (say, which modules it uses). When graded:
    the cell as submitted, which the learner's process cannot change. Here: the latest cell
    run in this notebook that defines `name`. LookupError if there is none."""
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"learner_source() needs the name a task defines, e.g. 'BoundedQueue', got {name!r:.60}")
    if _session is not None:
        return _session.learner_source(name)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: no cell history to look in
        get_ipython = None  # noqa: N806
    shell = get_ipython() if get_ipython is not None else None
    history = list(getattr(getattr(shell, "history_manager", None), "input_hist_raw", []))
    for source in reversed(history):
        if _defines(source, name):
            return source
    raise LookupError(f"no cell run in this notebook defines {name}: run its task cell first")


def _defines(source: str, name: str) -> bool:
    """Whether `source` defines `name` at its top level (a def, a class or an assignment)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:  # a cell with %magic lines, or a half-written one
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


def learner_threads() -> int:
    """Threads running the learner's code now: this process's threads here; when graded,
    the threads of the learner's processes minus the ones carrying the test's calls."""
    if _session is not None:
        return _session.learner_threads()
    return threading.active_count()


def learner_pids() -> list[int]:
    """The processes running the learner's code, for a test that reads what the kernel says
    about them in ``/proc`` (CPU time, open files, epoll registrations): this process here;
    when graded, the learner's process and every process it started, as the kernel lists them."""
    if _session is not None:
        return _session.learner_pids()
    return [os.getpid()]


def _install(session: Any) -> None:
    """Used by the grader's processes: route tests to `session` (None restores local mode)."""
    global _session
    _session = session


