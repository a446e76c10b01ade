"""A selector another thread can wake: how every background loop here learns to stop.

A loop thread blocks in ``select()``; ``stop()``, in another thread, must end that wait at
once, with no polling interval. The classic answer is the self-pipe trick (here a
socketpair): one end sits in the selector, and a byte written to the other end makes it
readable. Every descriptor is made in the constructor, all or nothing, so a process out of
descriptors gets EMFILE from the constructor, never a loop thread that dies unseen, and a
loop that started needs no new descriptor to stop.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterable
from typing import Any


class WakeableSelector:
    """A ``selectors.DefaultSelector`` with a wake-up socket registered in it.

    The loop thread selects on ``.selector`` (registering its own sockets there too) and
    returns once ``woken(events)`` is true; another thread calls ``wake()``. ``close()``
    closes all three descriptors and is safe to call twice.
    """

    def __init__(self) -> None:
        made: list[Any] = []
        try:
            made.extend(socket.socketpair())
            made.append(selectors.DefaultSelector())
            made[2].register(made[0], selectors.EVENT_READ)
        except BaseException:
            for thing in made:
                thing.close()
            raise
        self.reader: socket.socket = made[0]  # readable once wake() was called
        self._writer: socket.socket = made[1]
        self.selector: selectors.BaseSelector = made[2]

    def woken(self, events: Iterable[tuple[selectors.SelectorKey, int]]) -> bool:
        """True if the events ``selector.select()`` returned include the wake-up."""
        return any(key.fileobj is self.reader for key, _ in events)

    def wake(self) -> None:
        """Make ``reader`` readable, ending the loop thread's ``select()``; a no-op once closed."""
        try:
            self._writer.send(b"x")
        except OSError:
            pass  # closed already: there is no loop left to wake

    def close(self) -> None:
        """Close the selector and both sockets. Safe to call twice."""
        self.selector.close()
        self.reader.close()
        self._writer.close()
