"""The acceptor: a listening socket's channel that turns readiness into new connections.

Theory of operation. A listening socket becomes readable when its accept queue holds a
completed handshake (lesson 02). The acceptor (yolanda's ``acceptor``) runs on the main
reactor and, on each readiness event, calls accept() **up to backlog times**: under a
burst of connections one wakeup takes them all instead of one per loop iteration, the
same loop asyncio's ``_accept_connection`` runs. It stops early at EAGAIN (the queue is
empty) and hands each new socket to ``on_connection(sock, address)``.

**Out of file descriptors.** accept() fails with EMFILE (this process has
RLIMIT_NOFILE fds open) or ENFILE (the whole system is out). The connection stays in the
kernel's queue, so the listening socket stays readable, and a level-triggered loop would
spin at 100 % CPU retrying. The course's one accept policy (``helpers.core.accept``, which
also does the draining), like asyncio's: stop watching the listener for ``retry_delay_s``
(asyncio's ``ACCEPT_RETRY_DELAY``, 1 s), let the existing connections finish and free fds,
then watch it again. ``paused`` counts those pauses.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..core.accept import RETRY_DELAY_S, accept_ready
from .channel import Channel
from .loop import EventLoop

__all__ = ["Acceptor", "RETRY_DELAY_S"]


class Acceptor:
    """Accept connections on `listener` (a listening, non-blocking socket) in `loop`."""

    def __init__(self, loop: EventLoop, listener: socket.socket,
                 on_connection: Callable[[socket.socket, Any], None], *, backlog: int = 128,
                 retry_delay_s: float = RETRY_DELAY_S):
        self.loop = loop
        self.listener = listener
        self.on_connection = on_connection
        self.backlog = backlog
        self.retry_delay_s = retry_delay_s
        self.accepted = 0
        self.paused = 0
        self.channel = Channel(listener.fileno(), on_read=self.handle_accept)
        self._closed = False
        loop.add_channel(self.channel)

    def handle_accept(self) -> None:
        """Accept up to `backlog` queued connections; pause on EMFILE/ENFILE."""
        connections, starved = accept_ready(self.listener, self.backlog)
        for sock, address in connections:
            self.accepted += 1
            self.on_connection(sock, address)
        if starved:  # no descriptor for a new socket: stop watching the listener for a while
            self._pause()

    def _pause(self) -> None:
        self.paused += 1
        self.loop.remove_channel(self.channel)
        self.loop.call_later(self.retry_delay_s, self._resume)

    def _resume(self) -> None:
        if not self._closed and not self.channel.registered:
            self.loop.add_channel(self.channel)

    def close(self) -> None:
        """Stop accepting and close the listening socket (call in the loop's thread)."""
        if self._closed:
            return
        self._closed = True
        if self.channel.registered:
            self.loop.remove_channel(self.channel)
        self.listener.close()
