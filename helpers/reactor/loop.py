"""The event loop: one thread, one dispatcher, a queue of tasks, a heap of timers.

Theory of operation. Everything a reactor does happens inside ``run_once()``, one
iteration read top to bottom, in the order libuv's ``uv_run`` documents its phases:

1. **pending tasks**: run the callables other code queued with ``call_soon`` /
   ``call_soon_threadsafe`` (new connections handed over by the acceptor's thread,
   channel changes asked for from another thread, ``stop()``);
2. **poll**: block in the dispatcher (epoll or poll) until an fd is ready, the next timer
   is due, or, if tasks are pending, not at all;
3. **dispatch**: run each ready channel's callbacks (reading, writing, accepting);
4. **timers**: run the ``call_later`` callbacks whose time has come.

This is the only place where callbacks run, so a callback never runs concurrently with
another on the same loop, and the objects a loop owns (channels, connections) need no
locks. Only two things are thread-safe: ``call_soon_threadsafe()`` and ``stop()``.

**Waking the loop.** A loop asleep in epoll_wait() does not see a task another thread
queues. So the loop watches one end of a ``socketpair()`` (asyncio's self-pipe, yolanda's
socketpair): ``call_soon_threadsafe`` appends the task under a lock and, unless a wake-up
byte is already on its way, writes one byte to the other end; the poll returns at once.
No polling interval, no lost wake-ups: the "byte sent" flag is cleared under the same lock
that hands the tasks over, so a task queued after the hand-over always writes a new byte.

**Channels from any thread.** ``add_channel``, ``update_channel`` and ``remove_channel``
act at once when called on the loop's thread and are queued as pending tasks otherwise
(yolanda's ``event_loop_handle_pending_*``).
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core import checks
from .buffer import DEFAULT_CAPACITY, Buffer
from .channel import READ, Channel
from .dispatcher import DEFAULT_BACKEND, make_dispatcher

__all__ = ["EventLoop", "Timer"]


class Timer:
    """A ``call_later`` callback; ``cancel()`` stops it from running."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run (a cancelled timer leaves the heap when its time comes)."""
        self.cancelled = True
        self.callback, self.args = _noop, ()


def _noop(*_: Any) -> None:
    return None


def _check_callable(fn: Any) -> None:
    """Refuse a task that is not callable now, not when the loop runs it (far from the mistake)."""
    if not callable(fn):
        raise TypeError(f"a loop task must be callable, got {type(fn).__name__} {fn!r}")


class EventLoop:
    """A reactor: run it with ``run()`` in the thread that owns it; stop it from anywhere.

    `backend` is 'epoll' or 'poll'. Exceptions raised by callbacks are passed to
    ``on_error(exc)`` (by default kept in ``errors``), never out of ``run()``.
    """

    def __init__(self, backend: str = DEFAULT_BACKEND, *, name: str = "loop"):
        self.name = name
        self.dispatcher = make_dispatcher(backend)
        self.errors: list[BaseException] = []
        self.on_error: Callable[[BaseException], None] = self.errors.append
        self.iterations = 0
        #: One input buffer shared by every connection of this loop (see connection.py).
        self.read_buffer = Buffer(DEFAULT_CAPACITY)
        self._pending: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._woken = False
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._closed = False
        self._thread_id: int | None = None
        self._on_stop: list[Callable[[], None]] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_channel = Channel(self._wake_r.fileno(), on_read=self._drain_wakeups)
        self.dispatcher.add(self._wake_channel)

    # -- one iteration -------------------------------------------------------------------
    def run_once(self) -> None:
        """One iteration: pending tasks, poll, dispatch, timers."""
        if self._thread_id is None:  # the first thread to run the loop owns it
            self._thread_id = threading.get_ident()
        # 1. pending tasks: take the whole queue under the lock, run it outside the lock
        if self._pending:
            with self._lock:
                tasks, self._pending = self._pending, deque()
                self._woken = False
            for fn, args in tasks:
                self._call(fn, args)
        # 2. poll: not at all if tasks are waiting, until the next timer, or forever
        if self._pending or self._stopping:
            timeout: float | None = 0.0
        elif self._timers:
            timeout = max(0.0, self._timers[0][0] - time.monotonic())
        else:
            timeout = None
        ready = self.dispatcher.poll(timeout)
        # 3. dispatch: each ready fd's channel runs its callbacks
        channels = self.dispatcher.channels
        for fd, revents in ready:
            channel = channels.get(fd)
            if channel is None:  # removed by an earlier callback in this batch
                continue  # (if its fd number was reused meanwhile, the new channel's recv gets EAGAIN)
            try:
                if revents == READ:  # the common case, without a call to handle_event
                    channel.on_read()
                else:
                    channel.handle_event(revents)
            except Exception as exc:  # noqa: BLE001 - a callback's bug must not stop the loop
                self.on_error(exc)
        # 4. timers whose time has come
        if self._timers:
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                timer = heapq.heappop(self._timers)[2]
                if not timer.cancelled:
                    self._call(timer.callback, timer.args)
        self.iterations += 1

    def run(self) -> None:
        """Run iterations until ``stop()``; then run the on_stop hooks and close the loop."""
        self._thread_id = threading.get_ident()
        try:
            while not self._stopping:
                self.run_once()
            self.run_once()  # tasks queued together with stop()
            for hook in self._on_stop:
                self._call(hook, ())
        finally:
            self.close()

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - kept, never raised out of the loop
            self.on_error(exc)

    # -- tasks and timers ------------------------------------------------------------------
    def in_loop_thread(self) -> bool:
        """True when called from the thread running this loop."""
        return self._thread_id == threading.get_ident()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) at the start of the next iteration (from the loop's own thread)."""
        _check_callable(fn)
        self._pending.append((fn, args))

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) in the loop's thread soon; callable from any thread. Wakes the loop."""
        _check_callable(fn)
        with self._lock:  # held while sending too, so close() cannot close _wake_w in between
            if self._closed:
                raise RuntimeError(f"event loop {self.name} is closed; cannot queue {fn!r}")
            self._pending.append((fn, args))
            if self._woken:
                return
            self._woken = True
            try:
                self._wake_w.send(b"\0")  # non-blocking: never waits under the lock
            except BlockingIOError:  # the socket buffer is full of wake-up bytes: awake anyway
                pass

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run fn(*args) after `delay_s` seconds (a finite number >= 0), in the loop's thread;
        returns a Timer to cancel."""
        checks.seconds("delay_s", delay_s, zero_ok=True)  # not NaN, not inf: epoll's timeout would overflow
        _check_callable(fn)
        timer = Timer(time.monotonic() + delay_s, fn, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    # -- channels ----------------------------------------------------------------------------
    def add_channel(self, channel: Channel) -> None:
        """Watch a channel (now if on the loop's thread, else as a pending task)."""
        if self.in_loop_thread():
            self.dispatcher.add(channel)
        else:
            self.call_soon_threadsafe(self.dispatcher.add, channel)

    def update_channel(self, channel: Channel) -> None:
        """The channel's interest set changed."""
        if self.in_loop_thread():
            if channel.registered:
                self.dispatcher.modify(channel)
        else:
            self.call_soon_threadsafe(self.update_channel, channel)

    def remove_channel(self, channel: Channel) -> None:
        """Stop watching a channel (before its fd is closed)."""
        if self.in_loop_thread():
            self.dispatcher.remove(channel)
        else:
            self.call_soon_threadsafe(self.dispatcher.remove, channel)

    # -- stopping ----------------------------------------------------------------------------
    def on_stop(self, hook: Callable[[], None]) -> None:
        """Run `hook()` in the loop's thread when the loop stops (e.g. close connections)."""
        self._on_stop.append(hook)

    def stop(self) -> None:
        """Ask the loop to finish its iteration and return from run(); callable from any thread."""
        def _stop() -> None:
            self._stopping = True

        try:
            self.call_soon_threadsafe(_stop)
        except RuntimeError:  # already closed
            pass

    @property
    def closed(self) -> bool:
        """True once the loop has released its dispatcher and wake-up sockets."""
        return self._closed

    def close(self) -> None:
        """Release the dispatcher and the wake-up socketpair (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake_w.close()
        self.dispatcher.close()
        self._wake_r.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "stopping" if self._stopping else "open"
        return f"<EventLoop {self.name} {self.dispatcher.name} {state} fds={len(self.dispatcher.channels)}>"
