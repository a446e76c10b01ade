"""Measure what the kernel did: TCP_INFO, the socket table, kernel counters, open fds.

Theory of operation. Linux exposes three views of TCP, each with its own trust level, and
this package has one module per view, plus one for file descriptors:

* ``tcpinfo``: ``getsockopt(IPPROTO_TCP, TCP_INFO)`` describes one socket (struct tcp_info).
  It is the trustworthy evidence, because no other process touches it.
* ``tables``: ``/proc/net/tcp`` and ``tcp6`` list every TCP socket of this network
  namespace, as ``ss -tan`` does: state, addresses, queues and the pending timer.
* ``counters``: ``/proc/net/snmp`` and ``/proc/net/netstat`` hold namespace-wide counters
  (``netstat -s``). Other processes' traffic moves them too, so lessons diff them around an
  experiment and assert only on changes they caused, with margins.
* ``fds``: ``/proc/PID/fd``, what ``lsof`` shows for one process, and the interest list
  of an epoll fd from ``/proc/PID/fdinfo``.
* ``syscalls``: ``/proc/self/task/TID/syscall``, the system call each thread waits in.

This package only measures; drawing lives in ``plots`` and ``diagrams``. Every name is
importable from here (``helpers.observe.tcp_info``); each is defined in one module above,
or in ``helpers.core.proc`` for the /proc readers (``proc_stat``, ``ksoftirqd_cpu_s``).
"""

from __future__ import annotations

from ..core.proc import ksoftirqd_cpu_s, proc_stat
from .counters import CounterDiff, Counters, counters_diff, kernel_counters
from .fds import EpollEntry, FdEntry, epoll_interest, open_fds
from .syscalls import EPOLL_WAITS, SYSCALL_NAMES, blocked_in, thread_syscalls
from .tables import (
    Address,
    SocketEntry,
    SocketTable,
    TcpState,
    TimerKind,
    decode_proc_address,
    entries_for,
    parse_proc_row,
    parse_proc_tcp,
    socket_drops,
    socket_table,
    wait_for_row,
)
from .tcpinfo import TcpInfo, tcp_info

__all__ = [
    "ksoftirqd_cpu_s",
    "proc_stat",
    "TcpState",
    "TcpInfo",
    "tcp_info",
    "TimerKind",
    "SocketEntry",
    "SocketTable",
    "socket_table",
    "entries_for",
    "socket_drops",
    "wait_for_row",
    "parse_proc_tcp",
    "parse_proc_row",
    "decode_proc_address",
    "Address",
    "Counters",
    "CounterDiff",
    "kernel_counters",
    "counters_diff",
    "FdEntry",
    "EpollEntry",
    "epoll_interest",
    "open_fds",
    "SYSCALL_NAMES",
    "EPOLL_WAITS",
    "thread_syscalls",
    "blocked_in",
]
