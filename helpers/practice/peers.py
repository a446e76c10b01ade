"""What the checks' own peers do with a learner's server: read it to the end, ask its loop.

Two pieces the checks of lessons 18 and 19 share: a client that reads everything a server
sends and hashes it (so a repeated, lost or reordered piece shows), and a way to read a
server's state from its event loop's own thread (an asyncio loop or the course's reactor:
both have ``call_soon_threadsafe``), since a connection belongs to the loop that serves it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["read_to_eof", "on_loop", "slow_client", "peak_while_unread", "HOLD_S", "BUFFER_LIMIT",
           "READ_DEADLINE_S"]

# The slow client of the "send much, keep little" checks (lesson 18's pause_writing, lesson 19's
# write_completed): it reads nothing for HOLD_S while the check samples what the server keeps.
HOLD_S = 0.3  # the client reads nothing this long
SAMPLE_S = 0.02  # how often the check reads the server's output buffer meanwhile
BUFFER_LIMIT = 1 << 20  # a sender that waits for the kernel keeps far less than this waiting
CLIENT_RCVBUF = 64 << 10  # a small window: the kernel's buffers fill soon
READ_DEADLINE_S = 5.0  # then the client reads everything within this
IDLE_S = 1.0  # and gives up after this long without a byte


def read_to_eof(sock: socket.socket, timeout_s: float = READ_DEADLINE_S,
                idle_s: float = IDLE_S) -> tuple[int, str, bool]:
    """Read `sock` until EOF, `timeout_s` in all, or `idle_s` without a byte.

    Returns (bytes read, their sha256 in hex, True if the end of file came). A reset counts
    as the end of what arrived, not as an EOF.
    """
    digest, total = hashlib.sha256(), 0
    sock.settimeout(idle_s)
    deadline = time.monotonic() + timeout_s
    eof = False
    try:
        while time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                eof = True
                break
            digest.update(data)
            total += len(data)
    except (TimeoutError, ConnectionError):
        pass
    return total, digest.hexdigest(), eof


def on_loop(loop: Any, fn: Callable[[], Any], timeout_s: float = 1.0) -> Any:
    """Run fn() in `loop`'s thread (anything with ``call_soon_threadsafe``) and return its value.

    Raises what fn() raised, or TimeoutError if the loop did not run it within `timeout_s`
    (a callback is blocking that loop).
    """
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            done.set_exception(exc)

    loop.call_soon_threadsafe(run)
    return done.result(timeout_s)


def slow_client(t: Any, address: tuple[str, int], rcvbuf: int = CLIENT_RCVBUF) -> socket.socket:
    """A client of the trial `t` with a small receive buffer (set before connect: a small window)."""
    client = t.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.settimeout(2.0)
    client.connect(address)
    return client


def peak_while_unread(loop: Any, sizes: Callable[[], list[int]], hold_s: float = HOLD_S,
                      sample_s: float = SAMPLE_S) -> int:
    """While a client reads nothing for `hold_s`, the largest of `sizes()` (run in `loop`'s
    thread every `sample_s`): how much a server kept waiting for it. TimeoutError if the loop
    did not answer within 1 s (a callback blocks it)."""
    peak, end = 0, time.monotonic() + hold_s
    while time.monotonic() < end:
        peak = max([peak, *on_loop(loop, sizes)])
        time.sleep(sample_s)  # the experiment: a client that is slow to read
    return peak
