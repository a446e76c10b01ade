"""The input buffer: recv_into() a preallocated bytearray, bounded, without per-byte copying.

Theory of operation. ``sock.recv(n)`` allocates a new bytes object for every call; a
server that reads thousands of times a second pays that allocation each time.
``sock.recv_into(view)`` writes straight into memory we already own (yolanda's
``buffer`` with its ``readIndex``/``writeIndex``). This buffer is one ``bytearray`` of
``capacity`` bytes and two indexes::

    | consumed | unread data      | free space          |
    0          read_pos           write_pos             capacity

* ``recv_into(sock)`` fills the free space and moves ``write_pos``;
* ``data()`` is a memoryview of the unread bytes (no copy); ``consume(n)`` moves
  ``read_pos`` once the protocol has used them;
* ``recv_chunk(sock)`` is the short cut for a consumer that always takes everything at
  once (the reactor's connections): one recv_into the whole buffer, a view of the result;
* when the free space runs short, the unread bytes move to the front in one slice
  assignment (a memmove in C), never byte by byte; when the buffer is empty both indexes
  simply return to 0.

It is bounded: if the unread bytes fill the whole capacity, ``recv_into`` raises
``BufferFull`` instead of growing, and the connection answers or closes: a peer cannot make
it hold more than ``capacity`` bytes. The reactor keeps one per event loop, shared by the
loop's connections (``connection.py`` says why that is safe).
"""

from __future__ import annotations

import socket

__all__ = ["BufferFull", "Buffer", "DEFAULT_CAPACITY"]

#: 64 KiB: a full loopback segment (the loopback MTU is 64 KiB) fits in one read.
DEFAULT_CAPACITY = 64 * 1024


class BufferFull(Exception):
    """The peer sent more than the buffer may hold without the protocol consuming it."""


class Buffer:
    """A bounded input buffer filled with recv_into()."""

    __slots__ = ("capacity", "_mem", "_view", "read_pos", "write_pos")

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1 (bytes), got {capacity!r}")
        self.capacity = capacity
        self._mem = bytearray(capacity)
        self._view = memoryview(self._mem)
        self.read_pos = 0
        self.write_pos = 0

    def __len__(self) -> int:
        return self.write_pos - self.read_pos

    def data(self) -> memoryview:
        """The unread bytes, as a view into the buffer (valid until the next recv_into)."""
        return self._view[self.read_pos : self.write_pos]

    def consume(self, n: int) -> None:
        """Mark `n` unread bytes as used."""
        if not 0 <= n <= len(self):
            raise ValueError(f"cannot consume {n} bytes, {len(self)} unread")
        self.read_pos += n
        if self.read_pos == self.write_pos:
            self.read_pos = self.write_pos = 0

    def recv_into(self, sock: socket.socket) -> int:
        """One recv_into() into the free space; returns the byte count (0 means EOF).

        Raises BufferFull if no space is left, BlockingIOError if nothing is ready, and
        the socket's OSError (e.g. ConnectionResetError) as recv() would.
        """
        if self.write_pos == self.capacity:
            if self.read_pos == 0:
                raise BufferFull(f"{self.capacity} unread bytes: the input buffer is full")
            unread = self.write_pos - self.read_pos  # move them to the front, one memmove
            self._mem[:unread] = self._view[self.read_pos : self.write_pos]
            self.read_pos, self.write_pos = 0, unread
        n = sock.recv_into(self._view[self.write_pos :])
        self.write_pos += n
        return n

    def recv_chunk(self, sock: socket.socket) -> memoryview:
        """For a consumer that takes every read whole: recv_into the empty buffer and return a
        view of what arrived (empty: EOF). The next call overwrites it. One call instead of
        recv_into + data + consume, on the reactor's hot path.
        """
        if self.write_pos:
            raise RuntimeError(f"recv_chunk() needs an empty buffer, {len(self)} bytes are unread")
        return self._view[: sock.recv_into(self._view)]

    def release(self) -> None:
        """Drop the memoryview so the bytearray can be freed."""
        self._view.release()
