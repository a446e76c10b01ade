"""A pool of event-loop threads: the main reactor accepts, sub-reactors serve connections.

Theory of operation. One Python thread runs one loop (one reactor). With ``threads=N``
(yolanda's ``thread_pool``, muduo's "one loop per thread"), the main reactor only
accepts and hands each new socket to the next sub-reactor in turn (round robin), where it
lives until it closes. With ``threads=0`` the main reactor serves connections itself.

**The hand-over without a race.** The original course's C server created the connection
(and registered its channel) from the main thread while the sub-reactor thread was
polling the same epoll set, and it hung after ~45k requests. Here the main reactor never
touches a sub-reactor's state: it calls ``sub_loop.call_soon_threadsafe(make, sock)``,
which puts the socket on the sub-loop's task queue under its lock and writes one byte to
its wake-up socketpair. The sub-reactor wakes, and in its own thread creates the
connection and registers the channel. Each loop's objects are touched by its thread only.

In CPython the GIL lets only one thread run Python code at a time, so sub-reactors do
not add CPU; they spread waiting, and the kernel work (send/recv copies) runs outside
the GIL. Processes (``helpers.reactor.processes``) add CPU.
"""

from __future__ import annotations

import threading

from ..servers import THREAD_PREFIX
from .dispatcher import DEFAULT_BACKEND
from .loop import EventLoop

__all__ = ["EventLoopThread", "EventLoopThreadPool", "check_threads"]


def check_threads(n: int) -> None:
    """Refuse a number of sub-reactor threads that is not an int in 0-64."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 64:
        raise ValueError(f"threads (sub-reactors) must be an int in 0-64, got {n!r}; more than a few per CPU "
                         "only adds GIL contention (lesson 19)")


class EventLoopThread:
    """An EventLoop running in its own thread named ``course-server-<name>``."""

    def __init__(self, name: str, backend: str = DEFAULT_BACKEND):
        self.loop = EventLoop(backend, name=name)
        self.thread = threading.Thread(target=self.loop.run, name=f"{THREAD_PREFIX}-{name}", daemon=True)
        self.thread.start()

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
        self.threads = [EventLoopThread(f"{name}-sub{i}", backend) for i in range(n)]
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
