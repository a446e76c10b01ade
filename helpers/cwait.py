"""select(2) and poll(2) called the way a C program calls them, with their structures in view.

Theory of operation. Python's ``select.select()`` takes lists and hands back new lists, and
``select.poll()`` keeps its array inside an object: both hide what the kernel reads and
writes. Lessons 14 and 15 make the same system calls through ctypes, with the C structures
in the learner's hands:

* ``FdSet`` is glibc's ``fd_set``: ``FD_SETSIZE`` (1024) bits, one per descriptor number,
  stored in an array of ``unsigned long`` (``man 2 select``, "fd_set"). ``add()`` is
  ``FD_SET``, ``fd in s`` is ``FD_ISSET``. ``select()`` takes the sets by pointer and the
  kernel *overwrites* each one with the subset that is ready, so a loop keeps a full set
  and copies it before every call (the original course's ``select01.c``:
  ``readmask = allreads;``). Python's ``select.select()`` does the same work for you: it
  builds new sets from your lists on every call.
* ``PollFd`` is ``struct pollfd {int fd; short events; short revents;}`` (``man 2 poll``).
  The kernel reads ``fd`` and ``events`` and writes only ``revents``, so the array is
  reused as it is. An entry whose ``fd`` is negative is skipped: its ``revents`` comes
  back 0 ("an easy way of ignoring a file descriptor for a single poll() call").

The calls go to libc through ``ctypes.CDLL(None, use_errno=True)``; a failed call raises
OSError with the errno the kernel gave. Every call here needs a timeout, so a lesson cell
can never wait for ever.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable
from typing import Any

from .core.features import require_linux

__all__ = ["FD_SETSIZE", "FdSet", "PollFd", "pollfds", "select", "poll"]

#: Bits in glibc's fd_set: descriptors numbered FD_SETSIZE or more have no bit (man 2 select).
FD_SETSIZE = 1024
_LONG_BITS = 8 * ctypes.sizeof(ctypes.c_ulong)
#: The longest a call here may wait: a lesson step, not a service.
MAX_TIMEOUT_S = 60.0
#: The largest event mask a `short` holds.
_MAX_EVENTS = 0x7FFF


def _fd(value: Any, *, negative_ok: bool = False) -> int:
    """A descriptor number from an int or anything with fileno() (a socket)."""
    fd = value.fileno() if hasattr(value, "fileno") else value
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"a descriptor is an int or an object with fileno() (a socket), got {value!r}")
    if fd < 0 and not negative_ok:
        raise ValueError(f"descriptor numbers are >= 0, got {fd} (a closed socket's fileno() is -1)")
    return fd


class FdSet(ctypes.Structure):
    """glibc's ``fd_set``: one bit per descriptor number below FD_SETSIZE (1024)."""

    _fields_ = [("fds_bits", ctypes.c_ulong * (FD_SETSIZE // _LONG_BITS))]

    @classmethod
    def of(cls, fds: Iterable[Any]) -> FdSet:
        """``FD_ZERO`` then ``FD_SET`` for each of `fds` (ints or sockets)."""
        out = cls()
        for fd in fds:
            out.add(fd)
        return out

    def add(self, fd: Any) -> None:
        """``FD_SET(fd, &set)``. ValueError for fd 1024 or more: the set has no bit for it."""
        n = _fd(fd)
        if n >= FD_SETSIZE:
            raise ValueError(f"fd {n} has no bit in an fd_set: it holds FD_SETSIZE = {FD_SETSIZE} bits, for "
                             f"descriptors 0 to {FD_SETSIZE - 1}; watch it with poll() instead")
        self.fds_bits[n // _LONG_BITS] |= 1 << (n % _LONG_BITS)

    def __contains__(self, fd: object) -> bool:
        """``FD_ISSET(fd, &set)``."""
        n = _fd(fd)
        return n < FD_SETSIZE and bool(self.fds_bits[n // _LONG_BITS] >> (n % _LONG_BITS) & 1)

    def members(self) -> list[int]:
        """The descriptor numbers whose bit is set, lowest first."""
        return [i * _LONG_BITS + b for i, word in enumerate(self.fds_bits) if word
                for b in range(_LONG_BITS) if word >> b & 1]

    def copy(self) -> FdSet:
        """A new set with the same bits: C's ``readmask = allreads;``."""
        out = FdSet()
        ctypes.memmove(ctypes.byref(out), ctypes.byref(self), ctypes.sizeof(FdSet))
        return out

    def __repr__(self) -> str:
        return f"FdSet({self.members()})"


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class PollFd(ctypes.Structure):
    """``struct pollfd``: the kernel reads ``fd`` and ``events`` and writes ``revents``."""

    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]

    def __repr__(self) -> str:
        return f"PollFd(fd={self.fd}, events={self.events:#x}, revents={self.revents:#x})"


_libc: Any = None


def _call(name: str, *args: Any) -> int:
    global _libc
    require_linux(f"calling {name}() through libc")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result = getattr(_libc, name)(*args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}(): {os.strerror(err)} ({errno.errorcode.get(err, err)})")
    return result


def _timeout(timeout_s: object) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"timeout_s must be a number of seconds, got {timeout_s!r}")
    if not 0 <= timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g} s (0: just look), got {timeout_s!r}")
    return float(timeout_s)


def select(nfds: int, read: FdSet | None = None, write: FdSet | None = None, *, timeout_s: float) -> int:
    """libc ``select(nfds, read, write, NULL, &timeout)``: how many descriptors are ready.

    The kernel looks at descriptors 0 to ``nfds - 1`` and *overwrites* `read` and `write`
    with the ones that are ready (both empty after a timeout). `timeout_s` (0-60) is
    required. OSError if the call fails (EBADF for a closed descriptor in a set).
    """
    if isinstance(nfds, bool) or not isinstance(nfds, int) or not 0 <= nfds <= FD_SETSIZE:
        raise ValueError(f"nfds is the highest descriptor in the sets + 1, between 0 and {FD_SETSIZE}, got {nfds!r}")
    for name, s in (("read", read), ("write", write)):
        if s is not None and not isinstance(s, FdSet):
            raise TypeError(f"{name} must be an FdSet (or None), got {type(s).__name__} {s!r}")
    seconds = _timeout(timeout_s)
    tv = _Timeval(int(seconds), int(round((seconds - int(seconds)) * 1e6)))
    return _call("select", ctypes.c_int(nfds), ctypes.byref(read) if read is not None else None,
                 ctypes.byref(write) if write is not None else None, None, ctypes.byref(tv))


def pollfds(entries: Iterable[tuple[Any, int]]) -> ctypes.Array[PollFd]:
    """An array of ``struct pollfd`` from (fd or socket, events) pairs; revents start at 0.

    A negative fd (-1) is allowed: poll() skips that entry.
    """
    rows = list(entries)
    out = (PollFd * len(rows))()
    for i, entry in enumerate(rows):
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise TypeError(f"each entry is a (fd, events) pair such as (sock, select.POLLIN), got {entry!r}")
        fd, events = entry
        if isinstance(events, bool) or not isinstance(events, int) or not 0 <= events <= _MAX_EVENTS:
            raise ValueError(f"events must be an int mask of POLL* bits (0 to {_MAX_EVENTS:#x}), got {events!r}")
        out[i] = PollFd(_fd(fd, negative_ok=True), events, 0)
    return out


def poll(fds: ctypes.Array[PollFd], *, timeout_s: float) -> int:
    """libc ``poll(fds, len(fds), timeout)``: how many entries have a non-zero ``revents``.

    The kernel writes each entry's ``revents`` and leaves ``fd`` and ``events`` as they
    were. `timeout_s` (0-60) is required; poll(2) itself counts in milliseconds.
    """
    if not isinstance(fds, ctypes.Array) or fds._type_ is not PollFd:
        raise TypeError(f"fds must be an array made by pollfds([...]), got {type(fds).__name__}")
    timeout_ms = int(round(_timeout(timeout_s) * 1000))
    return _call("poll", fds, ctypes.c_ulong(len(fds)), ctypes.c_int(timeout_ms))
