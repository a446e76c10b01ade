"""Exercise checks: the result a learner reads, the trial a check runs in, the registry.

Theory of operation. A lesson's exercise is a stub the learner edits and a check cell that
calls ``check("03", 1, writen)``. The check for each exercise is a function in
``helpers/practice/lessonNN.py``, registered with ``@exercise(...)``. It receives a
``Trial`` and the learner's objects, sets up real sockets and servers, calls the learner's
code through ``Trial.call()`` (bounded: see ``bounded.py``), looks at what the kernel did,
and either returns a sentence saying what it observed (the exercise passed) or stops with
``Trial.fail(observed, hint)``.

``check()`` turns every way a check can end into one ``Result`` and never raises for the
learner's code: an unchanged stub (it returns None or raises NotImplementedError) is NOT
DONE YET with the exercise's hint; wrong behaviour, an exception or a hang is NOT YET with
what was observed and a hint; a failure of the check's own code is CHECK ERROR (a bug in the
course, said as such). Every result is appended to this kernel's log (``results()``, which
the test runner reads) and recorded in the learner's progress file (``store.py``);
``score("03")`` sums up a lesson.
"""

from __future__ import annotations

import enum
import gc
import html
import importlib
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import store
from .bounded import Outcome, call_bounded

__all__ = ["Status", "Result", "Exercise", "Trial", "Score", "exercise", "check", "results", "exercises", "score"]

LESSON = re.compile(r"^\d\d$")


class Status(enum.Enum):
    """How a check ended, in the words the learner reads."""

    PASSED = "passed"
    NOT_DONE = "not done yet"
    NOT_YET = "not yet"
    CHECK_ERROR = "check error"


_LABELS = {
    Status.PASSED: ("PASSED", "#1a7f37"),
    Status.NOT_DONE: ("NOT DONE YET", "#6e7781"),
    Status.NOT_YET: ("NOT YET", "#bc4c00"),
    Status.CHECK_ERROR: ("CHECK ERROR", "#cf222e"),
}


@dataclass(frozen=True)
class Result:
    """One check's answer: the status, what it observed and a hint, in plain words."""

    lesson: str
    exercise: int
    title: str
    status: Status
    observed: str
    hint: str = ""
    note: str = ""  # about the progress file, if saving failed

    @property
    def passed(self) -> bool:
        """True if the exercise passed."""
        return self.status is Status.PASSED

    def __str__(self) -> str:
        label = _LABELS[self.status][0]
        lines = [f"{label}: Exercise {self.exercise} ({self.title}). {self.observed}"]
        if self.hint:
            lines.append(f"Hint: {self.hint}")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        label, colour = _LABELS[self.status]
        parts = [
            f'<div style="border-left: 4px solid {colour}; padding: 2px 10px">'
            f'<b style="color: {colour}">{label}</b>: Exercise {self.exercise} '
            f"({html.escape(self.title)}). {html.escape(self.observed)}"
        ]
        if self.hint:
            parts.append(f"<br><i>Hint:</i> {html.escape(self.hint)}")
        if self.note:
            parts.append(f"<br><small>{html.escape(self.note)}</small>")
        return "".join(parts) + "</div>"

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (the test runner reads it)."""
        return {
            "lesson": self.lesson, "exercise": self.exercise, "title": self.title,
            "status": self.status.value, "observed": self.observed, "hint": self.hint, "note": self.note,
        }


CheckFn = Callable[..., str]


@dataclass(frozen=True)
class Exercise:
    """A registered exercise: its lesson, number, title, the stub's hint and the check."""

    lesson: str
    number: int
    title: str
    hint: str
    fn: CheckFn


_exercises: dict[tuple[str, int], Exercise] = {}
_log: list[Result] = []


class _Stop(Exception):
    """Ends a check early with a result (raised by Trial.fail and Trial.call)."""

    def __init__(self, status: Status, observed: str, hint: str):
        super().__init__(observed)
        self.status, self.observed, self.hint = status, observed, hint


@dataclass
class Trial:
    """What a check function gets: sockets it owns and a bounded way to call learner code.

    Every socket made with ``socket()`` or ``connect()``, or handed to ``own()``, is closed
    when the check ends, and shut down at once if the learner's code overruns, to wake it.
    """

    exercise: Exercise
    _sockets: list[socket.socket] = field(default_factory=list)
    _broke_off: bool = False  # the learner's code raised or overran: its frames may hold sockets in cycles

    def own(self, sock: socket.socket) -> socket.socket:
        """Take `sock` into the trial: closed at the end, shut down on an overrun."""
        if not isinstance(sock, socket.socket):
            raise TypeError(f"own() takes a socket, got {type(sock).__name__} {sock!r}")
        self._sockets.append(sock)
        return sock

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket owned by the trial."""
        return self.own(socket.socket(family, kind))

    def connect(self, address: Any, *, sndbuf: int | None = None, timeout_s: float = 5.0) -> socket.socket:
        """A TCP socket connected to `address` (SO_SNDBUF set first, if given), owned by the trial."""
        sock = self.socket(socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.settimeout(timeout_s)
        sock.connect(address)
        sock.settimeout(None)
        return sock

    def call(
        self,
        fn: Any,
        *args: Any,
        name: str,
        timeout_s: float = 2.0,
        hang_hint: str = "",
        error_hints: dict[type[BaseException], str] | None = None,
        expect: tuple[type[BaseException], ...] = (),
    ) -> Outcome:
        """Run the learner's `fn(*args)` bounded by `timeout_s`; return its Outcome.

        Stops the check (as NOT DONE YET) if `fn` is no function, returns None or raises
        NotImplementedError; (as NOT YET) if it raises, naming the exception in one line
        with the hint for its type from `error_hints` (or the exercise's hint), or if it
        overruns, with `hang_hint`. An exception of a type in `expect` is returned in the
        Outcome instead (the check wants it). `name` is how the learner knows it: "writen()".
        """
        hint = self.exercise.hint
        if not callable(fn):
            raise _Stop(Status.NOT_DONE, f"{name} is not a function here (got {type(fn).__name__} {fn!r}).", hint)
        out = call_bounded(fn, *args, timeout_s=timeout_s, sockets=self._sockets, label=f"{self.exercise.lesson}-"
                           f"{self.exercise.number}")
        self._broke_off = self._broke_off or out.overran or out.error is not None
        if out.overran:
            if not out.stopped:
                raise _Stop(Status.NOT_YET, f"{name} was still running after {timeout_s:g} s and could not be "
                            "stopped: it is blocked on something the check cannot interrupt. Restart the "
                            "notebook's kernel (Kernel > Restart Kernel) to stop it.", hang_hint or hint)
            raise _Stop(Status.NOT_YET, f"{name} was still running after {timeout_s:g} s; the check shut its "
                        "socket down to stop it.", hang_hint or hint)
        if isinstance(out.error, NotImplementedError):
            raise _Stop(Status.NOT_DONE, f"{name} raised NotImplementedError: it is still the stub.", hint)
        if isinstance(out.error, expect):
            return out
        if out.error is not None:
            err = out.error
            # Drop the traceback: it holds the learner's frames, and with them what their code made
            # and lost on the way out (a socket whose bind() failed), until the next garbage
            # collection; without it those are closed (with a ResourceWarning) at once.
            err.__traceback__ = None
            chosen = next((h for t, h in (error_hints or {}).items() if isinstance(err, t)), hint)
            raise _Stop(Status.NOT_YET, f"{name} raised {type(err).__name__}: {err}".rstrip(": ") + ".", chosen)
        if out.value is None:
            raise _Stop(Status.NOT_DONE, f"{name} returned None: replace the `...` with your code.", hint)
        return out

    def fail(self, observed: str, hint: str) -> NoReturn:
        """Stop the check: the code ran but did the wrong thing (NOT YET)."""
        raise _Stop(Status.NOT_YET, observed, hint)

    def not_done(self, observed: str) -> NoReturn:
        """Stop the check as NOT DONE YET, with the exercise's hint: the learner's object is
        still the stub in a way ``call()`` cannot see (a class that defines none of the
        methods asked for)."""
        raise _Stop(Status.NOT_DONE, observed, self.exercise.hint)

    def require(self, condition: object, observed: str, hint: str) -> None:
        """``fail(observed, hint)`` unless `condition` holds."""
        if not condition:
            self.fail(observed, hint)

    def close(self) -> None:
        """Close every socket the trial owns (idempotent). If the learner's code raised or was
        stopped, collect garbage too: the traceback keeps its frames in reference cycles, and
        with them the sockets it made (a half-built server's connections), until a collection."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if self._broke_off:
            self._broke_off = False
            gc.collect()


def _check_lesson(lesson: object) -> str:
    if not isinstance(lesson, str) or not LESSON.match(lesson):
        raise ValueError(f"lesson must be a two-digit string such as '03', got {lesson!r}")
    return lesson


def exercise(lesson: str, number: int, title: str, *, hint: str) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as the check of exercise `number` of `lesson`.

    The function is called as ``fn(trial, *learner_objects)`` and returns a sentence saying
    what it observed when the exercise passed. `hint` is shown when the stub is unchanged.
    ValueError for a bad lesson or number, or a number registered twice.
    """
    _check_lesson(lesson)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"exercise number must be an int >= 1, got {number!r}")
    if not title or not hint:
        raise ValueError(f"exercise {lesson}.{number} needs a title and a hint")

    def register(fn: CheckFn) -> CheckFn:
        known = _exercises.get((lesson, number))
        if known is not None and known.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"exercise {number} of lesson {lesson} is already {known.fn.__qualname__}")
        _exercises[(lesson, number)] = Exercise(lesson, number, title, hint, fn)
        return fn

    return register


def exercises(lesson: str) -> list[Exercise]:
    """The exercises of `lesson`, in order (its module helpers/practice/lessonNN.py is loaded)."""
    _check_lesson(lesson)
    try:
        importlib.import_module(f"{__package__}.lesson{lesson}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.lesson{lesson}":
            raise
    return [ex for (les, _), ex in sorted(_exercises.items()) if les == lesson]


def check(lesson: str, number: int, *learner: Any) -> Result:
    """Run exercise `number` of `lesson` on the learner's objects; return (and log) the Result.

    Never raises for the learner's code; ValueError if there is no such exercise.
    """
    found = {ex.number: ex for ex in exercises(lesson)}
    if number not in found:
        raise ValueError(f"lesson {lesson} has no exercise {number!r}; its exercises are {sorted(found)}")
    ex = found[number]
    trial = Trial(ex)
    try:
        observed = ex.fn(trial, *learner)
        if not isinstance(observed, str) or not observed:
            raise TypeError(f"the check returned {observed!r}, not a sentence")
        status, hint = Status.PASSED, ""
    except _Stop as stop:
        status, observed, hint = stop.status, stop.observed, stop.hint
    except Exception as exc:  # noqa: BLE001 - a check never raises into the learner's notebook
        status, hint = Status.CHECK_ERROR, "Please report it, with this message, to the course's maintainers."
        observed = (f"The check itself failed ({type(exc).__name__}: {exc}); this is a bug in the course, "
                    "not in your code.")
    finally:
        trial.close()
    note = store.record(lesson, number, ex.title, status.value, status is Status.PASSED)
    result = Result(lesson, number, ex.title, status, observed, hint, note)
    _log.append(result)
    return result


def results() -> list[Result]:
    """Every result this kernel produced, oldest first."""
    return list(_log)


@dataclass(frozen=True)
class Score:
    """A lesson's score: the latest result of each exercise in this kernel, and saved progress."""

    lesson: str
    titles: dict[int, str]
    latest: dict[int, Result]
    saved: list[int]

    @property
    def passed(self) -> int:
        """How many exercises passed in this kernel."""
        return sum(r.passed for r in self.latest.values())

    def _lines(self) -> list[str]:
        lines = []
        for n, title in self.titles.items():
            r = self.latest.get(n)
            status = _LABELS[r.status][0] if r is not None else "not checked yet"
            lines.append(f"Exercise {n} ({title}): {status}")
        return lines

    def _saved_line(self) -> str:
        return f"Saved progress for lesson {self.lesson}: {len(self.saved)} of {len(self.titles)} passed at least once."

    def __str__(self) -> str:
        head = f"Lesson {self.lesson}: {self.passed} of {len(self.titles)} exercises passed."
        return "\n".join([head, *(f"  {line}" for line in self._lines()), self._saved_line()])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self._lines())
        return (f"<b>Lesson {self.lesson}: {self.passed} of {len(self.titles)} exercises passed.</b>"
                f"<ul>{items}</ul><small>{html.escape(self._saved_line())}</small>")


def score(lesson: str) -> Score:
    """The lesson's score, to show at its end: "N of M exercises passed"."""
    titles = {ex.number: ex.title for ex in exercises(lesson)}
    latest = {r.exercise: r for r in _log if r.lesson == lesson}
    saved = [n for n in store.passed_exercises().get(lesson, []) if n in titles]
    return Score(lesson, titles, latest, saved)


