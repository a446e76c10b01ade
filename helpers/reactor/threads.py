"""A pool of event-loop threads: the main reactor accepts, sub-reactors serve connections.

Theory of operation. One Python thread runs one loop (one reactor). With ``threads=N``
(yolanda's ``thread_pool``, muduo's "one loop per thread"), the main reactor only
accepts and hands each new socket to the next sub-reactor in turn (round robin), where it
lives until it closes. With ``threads=0`` the main reactor serves connections itself.

**Start-up: wait until each sub-reactor runs** (yolanda's ``event_loop_thread_start``, the
original course's lecture 33). The constructor starts the thread and waits, on a
``threading.Event``, until the thread has entered its loop: from then on the loop knows its
owner thread (so ``in_loop_thread()`` answers right) and a thread that failed to start is
reported here, at start-up, not at the first connection it would have lost. yolanda's main
thread waits on a condition variable for the same reason, and for one more: its loop
object is created inside the new thread, so before the signal there is nothing to hand
connections to. Here the loop object exists first; the wait is for the thread.

**The hand-over.** The main reactor never touches a sub-reactor's state: it calls
``sub_loop.call_soon_threadsafe(make, sock)``, which puts the socket on the sub-loop's
task queue under its lock and writes one byte to its wake-up socketpair. The sub-reactor
wakes, and in its own thread creates the connection, runs the protocol's
``connection_made`` and registers the channel. yolanda queues the channel registration
the same way (``event_loop_do_channel_event``: a locked pending list and a socketpair
wake-up), but its main thread builds the connection and runs ``connectionCompletedCallBack``
itself, and sets the connection's ``data`` pointer only after the channel is queued
(``handle_connection_established`` in ``tcp_server.c``): a sub-reactor that is quick can read
that pointer before it is written, a data race. What stalls its main + sub mode is not the
hand-over but its HTTP parser: ``parse_http_request`` loops until a request is complete
without ever returning for more bytes, so a request that arrives in two pieces keeps that
sub-reactor spinning at 100% CPU, deaf to all its connections (lesson 19 cites the lines).

In CPython the GIL lets only one thread run Python code at a time, so sub-reactors do
not add CPU; they spread waiting, and the kernel work (send/recv copies) runs outside
the GIL. Processes (``helpers.reactor.processes``) add CPU.
"""

from __future__ import annotations

import threading

from ..core.registry import THREAD_PREFIX
from .dispatcher import DEFAULT_BACKEND
from .loop import EventLoop

__all__ = ["EventLoopThread", "EventLoopThreadPool", "check_threads"]


def check_threads(n: int) -> None:
    """Refuse a number of sub-reactor threads that is not an int in 0-64."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 64:
        raise ValueError(f"threads (sub-reactors) must be an int in 0-64, got {n!r}; more than a few per CPU "
                         "only adds GIL contention (lesson 19)")


#: How long the constructor waits for a new sub-reactor thread to enter its loop.
START_TIMEOUT_S = 5.0


class EventLoopThread:
    """An EventLoop running in its own thread named ``course-server-<name>``.

    The constructor returns once the thread runs the loop (``ready`` is set), so its
    ``native_id`` (the kernel's thread id, as in /proc/self/task) is known.
    """

    def __init__(self, name: str, backend: str = DEFAULT_BACKEND):
        self.loop = EventLoop(backend, name=name)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{name}", daemon=True)
        self.thread.start()
        if not self.ready.wait(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"sub-reactor {name} did not start its loop within {START_TIMEOUT_S} s")

    def _run(self) -> None:
        self.loop.call_soon(self.ready.set)  # the first task of the first iteration: the loop runs
        self.loop.run()

    @property
    def native_id(self) -> int | None:
        """The kernel's id of the loop's thread (/proc/self/task/ID), once started."""
        return self.thread.native_id

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the loop (its on_stop hooks run in its thread) and join the thread."""
        self.loop.stop()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"{self.thread.name} still running after {timeout_s} s")


class EventLoopThreadPool:
    """`n` sub-reactor threads; ``next_loop()`` picks one in turn (the main loop if n == 0)."""

    def __init__(self, main_loop: EventLoop, n: int, *, name: str, backend: str = DEFAULT_BACKEND):
        check_threads(n)
        self.main_loop = main_loop
        self.threads: list[EventLoopThread] = []
        try:  # one by one, each running before the next starts; undo them all if one fails
            for i in range(n):
                self.threads.append(EventLoopThread(f"{name}-sub{i}", backend))
        except BaseException:
            self.stop()
            raise
        self._next = 0

    def next_loop(self) -> EventLoop:
        """The loop that gets the next connection (round robin)."""
        if not self.threads:
            return self.main_loop
        loop = self.threads[self._next].loop
        self._next = (self._next + 1) % len(self.threads)
        return loop

    @property
    def loops(self) -> list[EventLoop]:
        """Every loop that serves connections."""
        return [t.loop for t in self.threads] or [self.main_loop]

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop and join every sub-reactor thread."""
        for t in self.threads:
            t.loop.stop()
        for t in self.threads:
            t.stop(timeout_s)
