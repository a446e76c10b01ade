"""The course's one accept policy: drain the queue, and pause when out of file descriptors.

Theory of operation. A listening socket is readable while its accept queue holds a
completed handshake (lesson 02). Every server here accepts the same way:

* **Drain.** On readiness, accept() until EAGAIN (the queue is empty) or a limit, so a burst
  of connections costs one wake-up, not one each (asyncio's ``_accept_connection`` loops up
  to ``backlog`` times). A connection the client reset while it waited
  (ECONNABORTED) is skipped.
* **Pause when starved.** accept() fails with EMFILE when this process holds RLIMIT_NOFILE
  descriptors, ENFILE when the whole system is out (``man 2 accept``; ENOBUFS and ENOMEM
  are the same story for memory). The connection stays in the kernel's queue, so the
  listener *stays readable*: a loop that only logs the error and waits again wakes at once,
  forever, at 100 % CPU (and a server that appends each error to a list grows it without
  end). A loop that gives up instead serves nobody again. The policy, asyncio's: stop
  watching the listener for ``RETRY_DELAY_S`` (asyncio's ``ACCEPT_RETRY_DELAY``, 1 s), let
  the open connections finish and free descriptors, then watch it again. The queued
  client waits in the kernel's queue meanwhile and is served once a descriptor is free.
  Servers count the pauses (``paused``), they do not keep each error.

Each server applies it in its own loop style: the reactor's ``Acceptor`` with a timer, a
selector loop with ``SelectorAcceptor`` (below), asyncio by itself (its exception handler
counts the pauses), socketserver by waiting in ``get_request``. ``accept_ready()`` is the
drain all of them share.

asyncio has one flaw here (CPython gh-151615, fixed in 2026): after EMFILE its accept loop
does not return, so one readiness event runs ``backlog`` more failing accept() calls, each
reported and each scheduling its own retry (1,024 of them for a backlog of 1,024). Our
asyncio servers hand it an ``AsyncioListener``, whose accept() answers "queue empty" for
the rest of that pause once it has failed for want of a descriptor: one report and one
retry per pause, as intended.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from typing import Any

from . import checks

__all__ = ["RETRY_DELAY_S", "OUT_OF_RESOURCES", "starved", "accept_ready", "SelectorAcceptor", "asyncio_paused",
           "AsyncioListener", "asyncio_listener"]

#: How long to stop accepting after EMFILE/ENFILE (asyncio: constants.ACCEPT_RETRY_DELAY = 1 s).
RETRY_DELAY_S = 1.0
#: accept() errors that mean "no descriptor or memory for a new socket now" (man 2 accept).
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def starved(exc: BaseException) -> bool:
    """True for an OSError that means this process (or system) is out of descriptors or memory."""
    return isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES


def asyncio_paused(context: dict[str, Any]) -> bool:
    """True for what asyncio's loop hands its exception handler when it pauses accepting
    ("socket.accept() out of system resource", base_events/selector_events): a pause to
    count, not an error to keep (asyncio has already stopped and rescheduled the listener)."""
    return starved(context.get("exception")) and str(context.get("message", "")).startswith("socket.accept()")


def accept_ready(listener: socket.socket, limit: int = 128) -> tuple[list[tuple[socket.socket, Any]], bool]:
    """accept() up to `limit` queued connections from a non-blocking `listener`.

    Returns (the (socket, address) pairs accepted, whether accept() ran out of descriptors
    or memory: then pause, see the module's docstring). Stops early when the queue is empty;
    skips a connection the client reset while it was queued; raises any other OSError.
    """
    accepted: list[tuple[socket.socket, Any]] = []
    for _ in range(limit):
        try:
            accepted.append(listener.accept())
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionAbortedError:
            continue
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:
                return accepted, True
            raise
    return accepted, False


class SelectorAcceptor:
    """The policy for a thread that waits in a selector: watch `listener`, pause when starved.

    The loop calls ``selector.select(acceptor.timeout())`` and then ``acceptor.accept()``
    (whether or not the listener was reported: it also ends a pause that is over). While
    paused, the listener is not registered, so the loop sleeps until the pause ends or
    something else (a wake-up socket) needs it.
    """

    def __init__(self, selector: selectors.BaseSelector, listener: socket.socket, *, limit: int = 128,
                 retry_delay_s: float = RETRY_DELAY_S):
        self.retry_delay_s = checks.seconds("retry_delay_s", retry_delay_s, high=60)
        self.selector = selector
        self.listener = listener
        self.limit = limit
        self.accepted = 0
        self.paused = 0  # how many times accept() ran out of descriptors and the listener was set aside
        self._resume_at: float | None = None
        selector.register(listener, selectors.EVENT_READ)

    def timeout(self) -> float | None:
        """How long the loop may wait in select(): until the pause ends, or for ever."""
        return None if self._resume_at is None else max(0.0, self._resume_at - time.monotonic())

    def accept(self) -> list[socket.socket]:
        """The connections waiting now (none while paused); starts or ends a pause as needed."""
        if self._resume_at is not None:
            if time.monotonic() < self._resume_at:
                return []
            self._resume_at = None
            self.selector.register(self.listener, selectors.EVENT_READ)
        pairs, out = accept_ready(self.listener, self.limit)
        if out:
            self.paused += 1
            self._resume_at = time.monotonic() + self.retry_delay_s
            self.selector.unregister(self.listener)
        self.accepted += len(pairs)
        return [sock for sock, _ in pairs]


class AsyncioListener(socket.socket):
    """A listening socket for asyncio's ``create_server(sock=...)``: once accept() failed for
    want of a descriptor, it raises BlockingIOError (the queue looks empty) for half a retry
    delay, so asyncio's accept loop stops at the first failure (see gh-151615 above)."""

    __slots__ = ("_quiet_until",)

    def accept(self) -> tuple[socket.socket, Any]:
        """socket.accept(), quiet for a moment after running out of descriptors."""
        if time.monotonic() < getattr(self, "_quiet_until", 0.0):
            raise BlockingIOError(errno.EAGAIN, "accepting is paused: out of file descriptors")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:
                self._quiet_until = time.monotonic() + RETRY_DELAY_S / 2
            raise


def asyncio_listener(sock: socket.socket) -> AsyncioListener:
    """The same listening socket as an AsyncioListener (`sock` is detached and must not be used)."""
    return AsyncioListener(fileno=sock.detach())
