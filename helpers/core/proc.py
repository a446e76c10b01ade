"""Readers of /proc: process stat lines, sysctls, the ephemeral port range, ksoftirqd time.

Theory of operation. Linux shows its state as text files under /proc (``man 5 proc``), and
everything here only reads them, as a normal user may: nothing writes a sysctl. Each reader
lives here once, so every helper that needs, say, the ephemeral port range asks the same
function and gets the same answer and the same error.

* ``/proc/PID/stat`` is one line; the command name (field 2) is in parentheses and may hold
  spaces and ')' itself, so the fields after it are found from the *last* ')'.
* ``/proc/sys/a/b/c`` is the sysctl ``a.b.c``; a missing file means this kernel has no such
  setting (an older kernel, or a module not loaded).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .features import require_linux

__all__ = ["PROC_NET", "PROC_SYS", "proc_stat", "child_pids", "sysctl", "ephemeral_port_range",
           "ephemeral_port_count", "ksoftirqd_cpu_s"]

PROC_NET = Path("/proc/net")
PROC_SYS = Path("/proc/sys")


def proc_stat(path: str) -> list[str]:
    """The fields of a /proc/<pid>/stat (or /proc/<pid>/task/<tid>/stat) file after the command
    name, which may itself hold spaces and ')': [0] is field 3 (state), [1] ppid, [2] pgrp,
    [11] utime, [12] stime, [36] processor (man 5 proc). OSError if the process is gone."""
    with open(path, "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].decode("ascii").split()


def child_pids(pid: int | str) -> list[int]:
    """The live children of process `pid` ('self' for this one), from /proc/PID/task/TID/children
    (one file per thread: a child belongs to the thread that forked it). [] once `pid` is gone."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return kids


def sysctl(name: str) -> str:
    """The value of sysctl `name` ('net.ipv4.tcp_tw_reuse'), read from /proc/sys, stripped.

    Never written here. ValueError for a name that is not dotted words (a '/', a NUL or an
    empty part could leave /proc/sys), FileNotFoundError naming the setting this kernel lacks.
    """
    if not isinstance(name, str) or not all(part and part[0] != "." for part in name.split(".")) or any(
        bad in name for bad in ("/", "\0")
    ):
        raise ValueError(f"a sysctl name such as 'net.ipv4.tcp_tw_reuse', got {name!r}")
    require_linux(f"the sysctl {name}")
    path = PROC_SYS / name.replace(".", "/")
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: this kernel has no {name}") from None


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (low, high), both ends included.

    Read from net.ipv4.ip_local_port_range ("32768 60999" by default); bind() to port 0
    and connect() on an unbound socket pick from it, for IPv4 and IPv6 alike (``man 7 ip``).
    """
    low, high = (int(x) for x in sysctl("net.ipv4.ip_local_port_range").split())
    return low, high


def ephemeral_port_count() -> int:
    """How many local ports connect() can choose from for one destination; Linux's default
    (28,232: 32768-60999) where the range cannot be read."""
    try:
        low, high = ephemeral_port_range()
    except (OSError, ValueError):  # no /proc/sys here (LinuxRequiredError is a RuntimeError: not hidden)
        return 28232
    return high - low + 1


_KSOFTIRQD: dict[int, int] = {}  # CPU number -> pid of the kernel's ksoftirqd/N thread, found once


def _ksoftirqd_pids() -> dict[int, int]:
    if not _KSOFTIRQD:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    continue
                if comm.startswith("ksoftirqd/") and comm[len("ksoftirqd/"):].isdigit():
                    _KSOFTIRQD[int(comm[len("ksoftirqd/"):])] = int(entry)
    return _KSOFTIRQD


def _thread_cpu_s(pid: int) -> float:
    """CPU seconds thread `pid` has run: nanoseconds from /proc/PID/schedstat where the kernel
    keeps it (CONFIG_SCHED_INFO), else utime + stime from /proc/PID/stat in clock ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9  # first field: time on the CPU, in ns
    except (OSError, ValueError, IndexError):
        fields = proc_stat(f"/proc/{pid}/stat")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ksoftirqd_cpu_s(cpus: Iterable[int] | None = None) -> float:
    """CPU seconds the kernel's ksoftirqd threads (one per CPU) have used so far; with `cpus`,
    only the threads of those CPUs.

    On loopback, TCP's receive processing runs as a softirq, normally right in the sending
    thread and charged to its CPU time. When softirqs keep coming (a busy CPU) the kernel
    hands the rest to the ksoftirqd thread of that CPU (kernel/softirq.c), and then no
    ``time.thread_time()`` of ours sees that work. A "CPU per byte" measurement adds the
    change of this value over the trial, so the deferred part counts too; naming the CPUs
    the measured threads may run on (``os.sched_getaffinity(0)``) leaves out the softirq
    work other processes cause elsewhere. Read in nanoseconds from /proc/PID/schedstat: a
    trial of 0.1 s may defer only a few ms, below the 10 ms tick of /proc/PID/stat, the
    fallback. 0.0 if /proc shows no ksoftirqd.
    """
    wanted = None if cpus is None else set(cpus)
    if wanted is not None and not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in wanted):
        raise TypeError(f"cpus must be CPU numbers (ints >= 0), got {sorted(map(repr, wanted))}")
    total = 0.0
    for cpu, pid in _ksoftirqd_pids().items():
        if wanted is None or cpu in wanted:
            try:
                total += _thread_cpu_s(pid)
            except OSError:
                continue
    return total
