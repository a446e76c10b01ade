"""A channel: one file descriptor, the events we want from it, and what to call when they come.

Theory of operation. The event loop does not know about sockets, connections or HTTP: it
knows channels. A channel (yolanda's ``channel``, libuv's ``uv__io_t``) is three things:

* ``fd``: the file descriptor the kernel reports on;
* ``events``: the interest set, a bit mask of ``READ`` and ``WRITE`` (the same bits as
  EPOLLIN/POLLIN = 1 and EPOLLOUT/POLLOUT = 4, so both dispatchers take them as they are);
* ``on_read`` and ``on_write``: the callbacks the loop runs when the fd is ready.

Whoever owns the channel (an acceptor, a TCP connection, the loop's own wake-up socket)
changes ``events`` with ``want_write()`` / ``stop_writing()`` and tells the loop with
``loop.update_channel(channel)``. A channel is only ever touched from its loop's thread.
"""

from __future__ import annotations

import select
from collections.abc import Callable

__all__ = ["READ", "WRITE", "ERROR", "Channel"]

READ = select.EPOLLIN  # 1, the same value as select.POLLIN
WRITE = select.EPOLLOUT  # 4, the same value as select.POLLOUT
#: Reported whether asked for or not: the peer hung up, or the socket has an error pending.
#: The read callback handles them: its recv() returns b"" or raises the error.
ERROR = select.EPOLLERR | select.EPOLLHUP


def no_callback() -> None:
    """A channel's callback for an event nobody handles: do nothing."""
    return None


class Channel:
    """An fd, its interest set and its callbacks. ``handle_event()`` runs the callbacks."""

    __slots__ = ("fd", "events", "on_read", "on_write", "registered")

    def __init__(self, fd: int, *, on_read: Callable[[], None] = no_callback,
                 on_write: Callable[[], None] = no_callback, events: int = READ):
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"fd must be an int (a file descriptor: sock.fileno()), got {type(fd).__name__} {fd!r}")
        if fd < 0:
            raise ValueError(f"a channel needs an open file descriptor, got fd {fd}")
        self.fd = fd
        self.events = events
        self.on_read = on_read
        self.on_write = on_write
        self.registered = False  # set by the loop when the dispatcher watches this fd

    @property
    def writing(self) -> bool:
        """True while we ask the kernel to tell us when the fd is writable."""
        return bool(self.events & WRITE)

    def want_write(self) -> None:
        """Ask for WRITE readiness too (then call loop.update_channel)."""
        self.events |= WRITE

    def stop_writing(self) -> None:
        """Stop asking for WRITE readiness (then call loop.update_channel)."""
        self.events &= ~WRITE

    def handle_event(self, revents: int) -> None:
        """Run the callbacks for what the kernel reported: read (and errors) first, then write."""
        if revents & (READ | ERROR):
            self.on_read()
        if revents & WRITE and self.events & WRITE:
            self.on_write()

    def __repr__(self) -> str:
        want = "|".join(n for n, bit in (("READ", READ), ("WRITE", WRITE)) if self.events & bit) or "-"
        return f"<Channel fd={self.fd} {want}>"
