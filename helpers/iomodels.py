"""The I/O models side by side: who waits for the data, and who copies it into our buffer.

Theory of operation. Stevens (UNIX Network Programming, vol. 1, section 6.2) sorts the ways a
program can read from a socket by two questions: while no data has arrived, what does the
program's thread do, and when the data is there, which call moves it into the program's
buffer? Blocking I/O sleeps inside recv(), which then copies; non-blocking I/O keeps calling
recv() and getting EAGAIN; multiplexed I/O sleeps in select/poll/epoll_wait and then calls
recv(); asynchronous I/O hands the kernel the buffer up front and is told when the bytes are
already in it. (Stevens's fifth model, signal-driven I/O with SIGIO, is left out here.)

``watch(read)`` answers the first question from the kernel's side: it runs ``read(sock)`` in
a thread on one end of a fresh socket pair, samples ``/proc/self/task/TID/syscall`` (the
system call that thread is in, or ``running``; man 5 proc) while nothing has been sent, and
measures the thread's CPU time; then it sends the payload and waits for ``read`` to return.
``read`` answers the second question itself: it returns the bytes and a few words on which
call put them in its buffer. Whatever happens, the socket pair is shut down and closed, and
a thread that does not end is reported (it is named with the course's prefix, so the leak
check lists it).
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .core import checks
from .core.registry import THREAD_PREFIX
from .observe.syscalls import thread_syscalls

__all__ = ["Watched", "watch"]

SAMPLE_S = 0.002  # how often the reading thread's system call is sampled
JOIN_S = 2.0  # how long read() gets to return once the data is there


@dataclass(frozen=True)
class Watched:
    """What one read did: ``waiting`` maps each state seen while no data was there (a system
    call name, or "running") to its share of the samples; ``cpu_ms`` is the CPU time the
    reading thread used in all; ``data`` and ``how`` are what read() returned (``error``
    what it raised instead)."""

    name: str
    waiting: dict[str, float]
    samples: int
    cpu_ms: float
    data: bytes | None
    how: str
    error: BaseException | None = None

    def waiting_text(self) -> str:
        """The states seen while waiting, most frequent first: "recvfrom 100%"."""
        return ", ".join(f"{state} {share:.0%}" for state, share in self.waiting.items()) or "(no samples)"


def watch(read: Callable[[socket.socket], tuple[bytes, str]], *, name: str = "", wait_s: float = 0.15,
          payload: bytes = b"hello") -> Watched:
    """Run ``read(sock)`` in a thread; watch it for `wait_s` with nothing sent; send `payload`.

    `read` gets the receiving end of a connected AF_UNIX stream socket pair and returns
    ``(data, how)``. `wait_s` is in (0, 5] s. TypeError if `read` is not callable or
    `payload` is not non-empty bytes.
    """
    if not callable(read):
        raise TypeError(f"read must be a function read(sock) -> (bytes, str), got {type(read).__name__} {read!r}")
    checks.seconds("wait_s", wait_s, high=5)
    if not isinstance(payload, bytes) or not payload:
        raise TypeError(f"payload must be non-empty bytes, got {payload!r:.40}")
    name = name or getattr(read, "__name__", "read")
    sender, receiver = socket.socketpair()
    outcome: dict[str, object] = {}
    ready = threading.Event()

    def body() -> None:
        outcome["tid"] = threading.get_native_id()
        ready.set()
        cpu0 = time.thread_time()
        try:
            outcome["result"] = read(receiver)
        except BaseException as exc:  # noqa: BLE001 - reported in Watched.error
            outcome["error"] = exc
        finally:
            outcome["cpu"] = time.thread_time() - cpu0

    thread = threading.Thread(target=body, name=f"{THREAD_PREFIX}-iomodel-{name}", daemon=True)
    seen: collections.Counter[str] = collections.Counter()
    try:
        thread.start()
        ready.wait(JOIN_S)
        tid = outcome.get("tid")
        end = time.monotonic() + wait_s
        while time.monotonic() < end and thread.is_alive() and isinstance(tid, int):
            state = thread_syscalls([tid]).get(tid)
            if state is not None:
                seen[state] += 1
            time.sleep(SAMPLE_S)
        sender.sendall(payload)
        thread.join(JOIN_S)
    finally:
        for sock in (sender, receiver):  # wakes a read() still blocked on the pair
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        thread.join(JOIN_S)
        sender.close()
        receiver.close()
    total = sum(seen.values())
    waiting = {state: n / total for state, n in seen.most_common()} if total else {}
    error = outcome.get("error")
    if thread.is_alive():
        error = TimeoutError(f"{name}: read() had not returned {JOIN_S:g} s after the data was sent")
    result = outcome.get("result")
    data, how = result if isinstance(result, tuple) and len(result) == 2 else (None, "")
    return Watched(name, waiting, total, 1e3 * float(outcome.get("cpu", 0.0)),  # type: ignore[arg-type]
                   data, str(how), error if isinstance(error, BaseException) else None)
