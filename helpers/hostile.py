"""Peers that make a reader's life hard on purpose, and what they cost the reader.

Theory of operation. A reader of a byte stream has to survive peers it cannot trust:
bytes cut at any point, a length prefix that lies, a line that never ends, a body that
trickles in one byte at a time. Lessons 12 and 13 and their exercise checks stage each of
these against real sockets, so the handlers live here once. Each function below returns a
stream handler for ``servers.TCPServer`` (it gets the accepted socket and returns what it
sent), and each handler:

* sends with TCP_NODELAY where the cuts matter, so each piece leaves in its own segment
  instead of being merged by Nagle's algorithm (lesson 10), and pauses between pieces so
  the reader really sees them apart;
* ends its side with ``shutdown(SHUT_WR)`` (a FIN: the reader sees end of stream) and then
  reads until the reader closes, so its socket is not closed with unread bytes (that
  would send a RST instead, lesson 08);
* treats an OSError as the reader having given up (it may close or reset at any moment:
  that is what a defended reader does to a hostile peer).

``peak_allocated()`` measures the other side of the cost: how much memory Python
allocated while a reader ran (``tracemalloc``, every thread of this process). A reader
that trusts a length prefix allocates what the peer announced; a bounded one does not.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from .core import checks
from .framing import HEADER, MAX_U32

__all__ = ["cut", "announce", "endless_line", "trickle", "peak_allocated"]

Handler = Callable[[socket.socket], Any]
MAX_PAYLOAD = 64 << 20  # bytes a handler here may be asked to send: a lesson's flood, not a load test
MAX_PIECE = 1 << 20  # the largest piece cut() sends at once


def _bytes(name: str, value: object, *, limit: int = MAX_PAYLOAD) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__} {value!r:.60}")
    if len(value) > limit:
        raise ValueError(f"{name} must be at most {limit} bytes, got {len(value)} bytes")
    return bytes(value)


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in {low}..{high}, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")
    return value


def _finish(conn: socket.socket) -> None:
    """Send our FIN, then read until the reader closes: nothing is left unread on our side."""
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(4096):
        pass


def cut(payload: bytes, *, largest: int = 13, pause_s: float = 0.001, seed: int = 0,
        sizes: list[int] | None = None) -> Handler:
    """A handler that sends `payload` in pieces of 1 to `largest` bytes, `pause_s` apart.

    The sizes come from ``random.Random(seed)``: the same seed cuts the same way; or give
    them as `sizes` (the last piece takes whatever is left). The handler returns the list of
    piece sizes it sent. TypeError/ValueError for a payload that is not bytes (at most
    64 MiB), a `largest` or a size outside 1..1 MiB, or a pause outside 0..1 s.
    """
    payload = _bytes("payload", payload)
    largest = _int("largest", largest, 1, MAX_PIECE)
    pause_s = checks.seconds("pause_s", pause_s, high=1.0, zero_ok=True)
    seed = _int("seed", seed, 0, 2**32)
    if sizes is not None:
        if not isinstance(sizes, (list, tuple)):
            raise TypeError(f"sizes must be a list of piece sizes in bytes, got {type(sizes).__name__} {sizes!r}")
        sizes = [_int("each of sizes", s, 1, MAX_PIECE) for s in sizes]
    given = sizes

    def handler(conn: socket.socket) -> list[int]:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece its own segment
        rng, sent, at = random.Random(seed), [], 0
        planned = iter(given or [])
        try:
            while at < len(payload):
                size = next(planned, None) if given else rng.randint(1, largest)
                size = min(size or len(payload), len(payload) - at)
                conn.sendall(payload[at:at + size])
                sent.append(size)
                at += size
                if pause_s:
                    time.sleep(pause_s)  # the experiment: the reader sees the pieces apart
            _finish(conn)
        except OSError:  # the reader gave up and closed: what a defended reader may do
            pass
        return sent

    return handler


def announce(claimed: int, body: bytes = b"tiny body", *, kind: int = 1) -> Handler:
    """A handler whose header announces a body of `claimed` bytes, then sends only `body`.

    The header is the course's ``!II`` (length, type). Returns the bytes it sent. A reader
    that trusts the header makes room for `claimed` bytes; the peer then closes its side.
    TypeError/ValueError for a claim or type outside 0..2**32-1, or a body that is not bytes.
    """
    claimed = _int("claimed", claimed, 0, MAX_U32)
    kind = _int("kind", kind, 0, MAX_U32)
    wire = HEADER.pack(claimed, kind) + _bytes("body", body)

    def handler(conn: socket.socket) -> int:
        try:
            conn.sendall(wire)
            _finish(conn)
        except OSError:  # the reader refused and closed, maybe with a RST: expected
            pass
        return len(wire)

    return handler


def endless_line(nbytes: int, *, fill: bytes = b"A") -> Handler:
    """A handler that sends `nbytes` bytes without a newline, then closes its side.

    Returns the bytes it sent. ValueError for `nbytes` outside 1..64 MiB or a `fill`
    that is not one byte other than LF.
    """
    nbytes = _int("nbytes", nbytes, 1, MAX_PAYLOAD)
    if not isinstance(fill, bytes) or len(fill) != 1 or fill == b"\n":
        raise ValueError(f"fill must be one byte other than b'\\n', got {fill!r}")
    flood = fill * nbytes  # made now, before any measurement of the reader starts

    def handler(conn: socket.socket) -> int:
        try:
            conn.sendall(flood)
            _finish(conn)
        except OSError:  # the reader gave up and closed: expected
            pass
        return nbytes

    return handler


def trickle(announced: int, every_s: float, stop: threading.Event) -> Handler:
    """A slow sender: a header announcing `announced` body bytes, then one byte every `every_s`.

    It stops when the body is complete, when the reader closes, or when `stop` is set, and
    returns how many body bytes it sent. Every recv() of the reader gets something long
    before a per-recv() timeout; only a deadline for the whole message ends it.
    ValueError for `announced` outside 1..1 MiB or `every_s` outside (0, 1] s; TypeError if
    `stop` is not a threading.Event.
    """
    announced = _int("announced", announced, 1, MAX_PIECE)
    every_s = checks.seconds("every_s", every_s, high=1.0)
    if not isinstance(stop, threading.Event):
        raise TypeError(f"stop must be a threading.Event that ends the trickle, got {type(stop).__name__}")

    def handler(conn: socket.socket) -> int:
        sent = 0
        try:
            conn.sendall(HEADER.pack(announced, 1))
            while sent < announced and not stop.wait(every_s):
                conn.sendall(b"x")
                sent += 1
        except OSError:  # the reader gave up and closed
            pass
        return sent

    return handler


def peak_allocated(fn: Callable[..., Any], *args: Any,
                   expect: tuple[type[BaseException], ...] = ()) -> tuple[int, Any]:
    """Run ``fn(*args)`` and return (peak bytes Python allocated meanwhile, its result).

    The peak counts every thread of this process (``tracemalloc``), from the call on, so a
    server thread in the same process counts too: keep what it sends small, or made before
    the call. An exception of a type in `expect` is returned as the result; any other
    propagates; it comes back without its traceback, which would keep the reader's frames
    (and the memory they allocated) alive. If tracing was already on, it stays on (only
    its peak is reset).
    """
    if not callable(fn):
        raise TypeError(f"peak_allocated() needs a function to run, got {type(fn).__name__} {fn!r}")
    if not isinstance(expect, tuple) or not all(isinstance(t, type) and issubclass(t, BaseException)
                                                for t in expect):
        raise TypeError(f"expect must be a tuple of exception classes, got {expect!r}")
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    try:
        try:
            result = fn(*args)
        except expect as exc:
            # Without its traceback: the reader's frames, and the memory they hold (a buffer
            # of the announced size), are freed now, not kept alive by the caller's result.
            result = exc.with_traceback(None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peak, result
