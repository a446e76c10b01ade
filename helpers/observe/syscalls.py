"""Which system call each thread of this process is waiting in, from /proc (man 5 proc).

``/proc/self/task/TID/syscall`` holds the number of the system call a thread is blocked in
(and its arguments), ``running`` while it runs on a CPU. Lessons 03, 17 and 18 read it to
show *where* a server waits: a blocking read(), a select() or poll(), an epoll_wait().
Names are known for x86_64 and arm64; elsewhere a thread shows as 'syscall N'.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

from ..core import checks

__all__ = ["SYSCALL_NAMES", "EPOLL_WAITS", "thread_syscalls", "blocked_in"]

MAX_WAIT_S = 600.0  # the longest blocked_in() may be asked to wait


#: x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) a waiting thread shows.
SYSCALL_NAMES_X86_64 = {
    0: "read", 7: "poll", 17: "pread64", 23: "select", 43: "accept", 44: "sendto", 45: "recvfrom",
    202: "futex", 208: "io_getevents", 209: "io_submit", 232: "epoll_wait", 270: "pselect6", 271: "ppoll",
    281: "epoll_pwait", 288: "accept4", 426: "io_uring_enter", 441: "epoll_pwait2",
}
#: The same for arm64 (include/uapi/asm-generic/unistd.h), which has no plain epoll_wait or poll.
SYSCALL_NAMES_AARCH64 = {
    2: "io_submit", 4: "io_getevents", 22: "epoll_pwait", 63: "read", 67: "pread64", 72: "pselect6", 73: "ppoll",
    98: "futex", 202: "accept",
    206: "sendto", 207: "recvfrom", 242: "accept4", 426: "io_uring_enter", 441: "epoll_pwait2",
}
SYSCALL_NAMES = {"x86_64": SYSCALL_NAMES_X86_64, "aarch64": SYSCALL_NAMES_AARCH64}.get(platform.machine(), {})
EPOLL_WAITS = {"epoll_wait", "epoll_pwait", "epoll_pwait2"}  # what an idle epoll loop may wait in


def thread_syscalls(tids: list[int] | None = None) -> dict[int, str]:
    """For each thread of this process (or those in `tids`), the system call it waits in.

    Reads /proc/self/task/TID/syscall: the syscall number while the thread is blocked in
    one, ``running`` while it runs. Names are known for x86_64 and arm64; elsewhere 'syscall N'.
    Threads that exit while we read are left out. `tids` must be a list of ints (thread ids).
    """
    _check_tids(tids)
    out: dict[int, str] = {}
    for tid in tids if tids is not None else sorted(int(t) for t in Path("/proc/self/task").iterdir()
                                                    if t.name.isdigit()):
        try:
            text = Path(f"/proc/self/task/{tid}/syscall").read_text().split()
        except OSError:
            continue
        if not text:
            continue
        if text[0] == "running":
            out[tid] = "running"
        elif text[0] == "-1":
            out[tid] = "in the kernel, not in a system call"
        else:
            number = int(text[0])
            out[tid] = SYSCALL_NAMES.get(number, f"syscall {number}")
    return out


def _check_tids(tids: object) -> None:
    """TypeError unless `tids` is None or a collection of thread ids."""
    if tids is None:
        return
    if not isinstance(tids, (list, tuple, set, frozenset)) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tids):
        raise TypeError(f"tids must be a list of thread ids (ints >= 1, e.g. server.thread_native_id), got {tids!r}")


def blocked_in(tids: list[int], timeout_s: float = 2.0, *, expect: set[str] | None = None,
               settle_s: float = 0.01) -> dict[int, str]:
    """Like thread_syscalls(tids), once the threads have settled (at most `timeout_s`).

    A server thread that just answered is busy for a moment (running, or in futex while it
    takes the interpreter lock back, which on a busy machine can last a while); once idle it
    sits in the system call it waits in. Settled means: every thread in one of the calls in
    `expect`, if given; otherwise no thread running and the same answer twice, `settle_s`
    apart. At the deadline the latest answer is returned as it is, so a caller that asserts
    on it sees what the threads were really doing. `timeout_s` is in (0, 600] s and
    `settle_s` in (0, 1] s; `expect` is a set of system call names such as {"epoll_wait"}.
    """
    if tids is None:
        raise TypeError("blocked_in() needs the thread ids to watch, got None")
    _check_tids(tids)
    checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
    if isinstance(settle_s, bool) or not isinstance(settle_s, (int, float)) or not 0 < settle_s <= 1:
        raise ValueError(f"settle_s must be a number of seconds in (0, 1], got {settle_s!r}")
    if expect is not None and not (isinstance(expect, (set, frozenset)) and all(isinstance(e, str) for e in expect)):
        raise TypeError(f"expect must be a set of system call names such as {{'epoll_wait'}}, or None, got {expect!r}")
    deadline = time.monotonic() + timeout_s
    previous: dict[int, str] = {}
    while True:
        now = thread_syscalls(tids)
        if expect is not None:
            settled = len(now) == len(tids) and set(now.values()) <= expect
        else:
            settled = "running" not in now.values() and now == previous
        if settled or time.monotonic() > deadline:
            return now
        previous = now
        time.sleep(settle_s)
