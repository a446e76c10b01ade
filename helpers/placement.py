"""Which CPU a thread runs on, and pinning it to one: for measurements smaller than a wake-up.

Theory of operation. A round trip between two threads of ours wakes the other thread twice.
If both threads are on the same CPU, a wake-up is a context switch. If they are on two
CPUs, the waker must interrupt the other CPU (an inter-processor interrupt), which may be
idle in a power-saving state or, in a virtual machine, not running at all until the
hypervisor schedules it. On a 2-core VM that costs about four times a whole same-CPU round
trip, far more than the difference between two socket families. The scheduler places and
moves threads as it likes, so an unpinned measurement of small latencies mostly measures
where the threads happened to be. ``pinned()`` fixes that for one thread while it runs,
with ``sched_setaffinity(2)`` on the calling thread (pid 0), which needs no privilege.

Which CPU to pin to matters too. Two ping-pong measurements pinned to the same CPU take
turns on it, and each round trip then includes the other's: both families come out the
same. So ``idlest_cpus()`` looks at the kernel's per-CPU counters in /proc/stat for a
moment and returns the CPUs that were idle the most, not always CPU 0: on a shared
JupyterHub node, every learner running the lesson at once would otherwise pile onto CPU 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .core import checks
from .core.proc import proc_stat

__all__ = ["usable_cpus", "idlest_cpus", "thread_cpu", "pinned"]


#: The CPUs this process could run on when this module was imported (a container may narrow
#: them). Kept, because a thread inherits its creator's mask: asked from inside a pinned
#: thread, or from a thread it started, the kernel would answer with the one pinned CPU.
_USABLE = sorted(os.sched_getaffinity(0))


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, sorted (as its affinity mask was at import)."""
    return list(_USABLE)


def _idle_ticks() -> dict[int, int]:
    """{cpu: idle + iowait ticks so far}, from the ``cpuN`` lines of /proc/stat (man 5 proc)."""
    ticks = {}
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks[int(name[3:])] = int(fields[3]) + int(fields[4])
    return ticks


def idlest_cpus(sample_s: float = 0.05) -> list[int]:
    """The usable CPUs, the one idle the most over the next `sample_s` seconds first.

    Ties (common: a tick is 10 ms) keep the kernel's numbering. `sample_s` is 0.01-1 s.
    """
    if checks.seconds("sample_s", sample_s, high=1) < 0.01:
        raise ValueError(f"sample_s must be a number of seconds in [0.01, 1], got {sample_s!r}")
    before = _idle_ticks()
    time.sleep(sample_s)
    return by_idle_time(usable_cpus(), before, _idle_ticks())


def by_idle_time(cpus: list[int], before: dict[int, int], after: dict[int, int]) -> list[int]:
    """`cpus`, the one whose idle count grew the most from `before` to `after` first (stable)."""
    return sorted(cpus, key=lambda cpu: -(after.get(cpu, 0) - before.get(cpu, 0)))


def thread_cpu() -> int:
    """The CPU the calling thread last ran on (field 39, ``processor``, of /proc/thread-self/stat)."""
    return int(proc_stat(f"/proc/self/task/{threading.get_native_id()}/stat")[36])


@contextmanager
def pinned(cpu: int) -> Iterator[int]:
    """Run the calling thread on CPU `cpu` only, until the block ends; then restore its old mask.

    ValueError if `cpu` is not one this process may use (see ``usable_cpus()``).
    """
    allowed = usable_cpus()
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu not in allowed:
        raise ValueError(f"cpu must be one of the CPUs this process may use, {allowed}, got {cpu!r}")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})  # pid 0: this thread only, not the whole process
    except OSError as exc:  # EINVAL: the CPU went offline, or a cpuset took it away since import
        raise ValueError(f"cannot run on CPU {cpu} now: {exc.strerror}") from exc
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)
