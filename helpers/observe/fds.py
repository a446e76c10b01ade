"""Open file descriptors: what ``ls -l /proc/PID/fd`` (and ``lsof``) shows for a process.

Theory of operation. Each entry of /proc/PID/fd is a symbolic link named by the fd number;
its target is a path, or ``socket:[INODE]`` for a socket. The inode is the same number the
socket tables (/proc/net/tcp, ``ss -e``) print, which is how a socket row is matched to the
process that holds it.

An epoll instance is an fd too (``anon_inode:[eventpoll]``), and its interest list lives in
the kernel. /proc/PID/fdinfo/N prints that list, one line per watched fd (``man 5 proc``,
fs/eventpoll.c ``ep_show_fdinfo``): ``tfd:`` the watched fd, ``events:`` the registered mask
in hex (the kernel adds EPOLLERR and EPOLLHUP to every mask), ``data:`` the 64-bit
``epoll_event.data`` it hands back with each event. ``epoll_interest()`` reads it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core import checks
from ..core.features import require_linux

__all__ = ["FdEntry", "open_fds", "EpollEntry", "epoll_interest"]

@dataclass(frozen=True)
class FdEntry:
    """One open file descriptor: its number, what it points to, and a socket's inode."""

    fd: int
    target: str
    socket_inode: int | None



def open_fds(pid: int | str = "self") -> list[FdEntry]:
    """The open fds of a process (default: this one), as ``ls -l /proc/PID/fd`` shows them.

    ValueError for a pid that is not a positive int or 'self', ProcessLookupError for a
    process that does not exist, PermissionError for another user's process.
    """
    require_linux("the fd listing (/proc/PID/fd)")
    base = Path(f"/proc/{checks.pid(pid)}/fd")
    out = []
    for entry in sorted(base.iterdir(), key=lambda p: int(p.name)):
        try:
            target = os.readlink(entry)
        except OSError:  # closed between listing and reading (e.g. the listing's own fd)
            continue
        inode = int(target[8:-1]) if target.startswith("socket:[") else None
        out.append(FdEntry(int(entry.name), target, inode))
    return out


@dataclass(frozen=True)
class EpollEntry:
    """One fd on an epoll instance's interest list, as the kernel keeps it.

    ``events`` is the registered mask (EPOLLERR and EPOLLHUP are always in it: the kernel
    adds them); ``data`` is ``epoll_event.data``, the 64 bits handed back with each event.
    That field is a C union: a C program may store a pointer there (``data.ptr``), while
    Python's ``select.epoll`` stores the fd in its low 32 bits (``data.fd``) and leaves the
    other 32 as they happened to be; ``data_fd`` reads those low 32 bits.
    """

    fd: int
    events: int
    data: int

    @property
    def data_fd(self) -> int:
        """``data.fd``: the low 32 bits of ``data`` (what Python's select.epoll put there)."""
        return self.data & 0xFFFFFFFF


_TFD = re.compile(r"^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)", re.M)


def epoll_interest(epoll: object, pid: int | str = "self") -> list[EpollEntry]:
    """The interest list of an epoll instance, read from /proc/PID/fdinfo (sorted by fd).

    `epoll` is a ``select.epoll`` object or its fd number (in process `pid`, default this
    one). TypeError for anything else, ValueError for a closed epoll or an fd that is not
    an epoll instance, ProcessLookupError for a process that does not exist.
    """
    require_linux("the epoll interest list (/proc/PID/fdinfo)")
    fileno = getattr(epoll, "fileno", None)
    if callable(fileno) and hasattr(epoll, "poll") and hasattr(epoll, "register"):
        if getattr(epoll, "closed", False):
            raise ValueError("epoll_interest() needs an open epoll instance, got a closed one")
        fd = fileno()
    elif isinstance(epoll, int) and not isinstance(epoll, bool) and epoll >= 0:
        fd = epoll
    else:
        raise TypeError(f"epoll_interest() takes a select.epoll or its fd (an int >= 0), "
                        f"got {type(epoll).__name__} {epoll!r}")
    base = Path(f"/proc/{checks.pid(pid)}")
    try:
        target = os.readlink(base / "fd" / str(fd))
        text = (base / "fdinfo" / str(fd)).read_text()
    except FileNotFoundError:
        raise ValueError(f"fd {fd} is not open in process {pid}") from None
    if target != "anon_inode:[eventpoll]":
        raise ValueError(f"fd {fd} is not an epoll instance: it is {target}")
    return sorted((EpollEntry(int(fd_), int(ev, 16), int(data, 16)) for fd_, ev, data in _TFD.findall(text)),
                  key=lambda e: e.fd)
