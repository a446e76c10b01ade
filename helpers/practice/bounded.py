"""Run a learner's function with a deadline, and stop it if it overruns.

Theory of operation. An exercise check calls code the learner wrote, and that code may
block for ever (a recv() on a socket nothing will arrive on), spin (a loop that retries
send() after EAGAIN without waiting), or raise. The check must answer anyway, at once, and
leave nothing behind. So ``call_bounded()`` runs the function in a thread of its own and
waits at most ``timeout_s``. If the function overruns, three steps stop it, each one only
if the one before did not:

1. The sockets the check handed to the learner are shut down and closed. shutdown() wakes a
   thread blocked in recv(), send(), accept() or select() on them; close() alone does not
   (on Linux a blocked call keeps its file alive), so both are needed.
2. An exception is raised inside the thread (CPython's ``PyThreadState_SetAsyncExc``, the
   same mechanism a KeyboardInterrupt uses to stop a loop). A loop running Python code
   stops at its next bytecode. It is a BaseException, so ``except Exception`` in the
   learner's code does not swallow it.
3. A thread still alive after that is blocked somewhere neither can reach (time.sleep(),
   a lock, a socket the check did not give it). It is left running, named with the course's
   thread prefix so the leak check (``helpers.check_clean()``) lists it, and the outcome
   says so: only restarting the notebook's kernel stops it.

The thread's CPU time is measured too (``time.thread_time()`` inside it), so a check can
tell a writer that waits in select() from one that spins.
"""

from __future__ import annotations

import ctypes
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..core import checks
from ..core.registry import THREAD_PREFIX

__all__ = ["Outcome", "Overran", "call_bounded"]

GRACE_S = 0.5  # after each stopping step, how long the thread gets to finish


class Overran(BaseException):
    """Raised inside a learner's thread that ran past its deadline (step 2 above)."""


@dataclass
class Outcome:
    """What happened when the learner's function ran.

    ``value`` is its return value and ``error`` what it raised (None if nothing);
    ``overran`` is True if it was still running at the deadline, ``stopped`` False if even
    the stopping steps did not end it (the thread is still alive). ``wall_s`` is the time
    until it ended (or until we gave up) and ``cpu_s`` the CPU time its thread used.
    """

    value: Any = None
    error: BaseException | None = None
    overran: bool = False
    stopped: bool = True
    wall_s: float = 0.0
    cpu_s: float = 0.0


def _unblock(sockets: Iterable[socket.socket]) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected, or already closed: nothing to wake
            pass
        sock.close()


def _raise_in(thread: threading.Thread) -> None:
    # Called only while the thread is alive: a dead thread's ident may be given to a new one.
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Overran))


def call_bounded(
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float = 2.0,
    sockets: Iterable[socket.socket] = (),
    label: str = "learner",
) -> Outcome:
    """Call ``fn(*args)`` in a thread and wait at most `timeout_s` seconds for it.

    On overrun the `sockets` are shut down and closed, then an ``Overran`` exception is
    raised in the thread (see the module comment). Never raises what `fn` raised: it is in
    ``Outcome.error``. TypeError if `fn` is not callable; ValueError for a bad `timeout_s`.
    """
    if not callable(fn):
        raise TypeError(f"call_bounded() needs a function to call, got {type(fn).__name__} {fn!r}")
    timeout_s = checks.seconds("timeout_s", timeout_s, high=60)
    outcome = Outcome()

    def body() -> None:
        cpu0 = time.thread_time()
        try:
            outcome.value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the learner's error is the outcome
            outcome.error = exc
        finally:
            outcome.cpu_s = time.thread_time() - cpu0

    thread = threading.Thread(target=body, name=f"{THREAD_PREFIX}-exercise-{label}", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        outcome.overran = True
        _unblock(sockets)
        thread.join(GRACE_S)
        for _ in range(3):  # the exception may land in a `finally:` or an `except` that retries
            if not thread.is_alive():
                break
            _raise_in(thread)
            thread.join(GRACE_S / 3)
        outcome.stopped = not thread.is_alive()
    outcome.wall_s = time.monotonic() - started
    if outcome.overran and isinstance(outcome.error, Overran):
        outcome.error = None  # our own stop signal is not the learner's error
    return outcome
