"""UDP ports: who is bound where (the UDP socket table), and a port where nobody receives.

Theory of operation. The kernel lists every UDP socket in the network namespace, with local
and remote address, state (07 = not connected, 01 = connected, the TCP numbers reused),
queues, owner uid, inode and drops. ``ss -uan`` asks for that list over netlink
(NETLINK_SOCK_DIAG, man 7 sock_diag), and so does ``udp_table()``. /proc/net/udp{,6} has the
same columns but is no snapshot: it is produced a page per read() call, and each page finds
its place again by counting sockets from the start, so while other programs open and close
UDP sockets a read can skip a socket or list it twice. It is read only where the kernel
lacks UDP sock_diag.

A lesson about ICMP "port unreachable" needs a UDP port that no socket receives on. The
usual tricks race: "bind port 0, read the number, close, send there" leaves a moment in which
another program (on JupyterHub, another learner) may bind the number, and "check
/proc/net/udp, then send" has the same gap between check and send. ``unreachable_port()``
closes the gap instead: it keeps a socket bound to the port, and ``connect()``s that socket
to its own address. A connected UDP socket accepts datagrams only from its peer (``man 2
connect``), so a datagram from any other socket matches no receiver and the kernel answers it
with ICMP port unreachable, exactly as for an unbound port, while the port stays ours: no
other socket can bind it unless both set SO_REUSEADDR or SO_REUSEPORT, and ours sets neither.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .core import checks
from .core.checks import family_for
from .core.features import require_linux
from .core.proc import PROC_NET
from .core.sockdiag import INET_DIAG_SKMEMINFO, meminfo_drops, sock_diag_dump
from .observe import parse_proc_row

__all__ = ["UdpEntry", "udp_table", "UnreachablePort", "unreachable_port"]

_STATES = {1: "connected", 7: "unconnected"}  # the st column: TCP_ESTABLISHED, TCP_CLOSE


@dataclass(frozen=True)
class UdpEntry:
    """One row of /proc/net/udp{,6}. ``drops`` counts datagrams the kernel threw away for
    this socket (a full receive buffer); ``remote`` is ('0.0.0.0', 0) unless connected."""

    local: tuple[str, int]
    remote: tuple[str, int]
    state: str  # "connected" or "unconnected"
    send_q: int
    recv_q: int
    uid: int
    inode: int
    drops: int


def _parse(text: str) -> Iterator[UdpEntry]:
    """The rows of /proc/net/udp{,6} text: the header and lines of fewer than 13 columns are
    skipped; another line that is not a row raises ValueError showing it (observe.parse_proc_row)."""
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 13:
            continue
        row = parse_proc_row(line, cols)
        if not re.fullmatch(r"[0-9]+", cols[12]):
            raise ValueError(f"not a /proc/net/udp row (drops is {cols[12]!r}): {line[:200]!r}")
        yield UdpEntry(
            local=row.local,
            remote=row.remote,
            state=_STATES.get(row.state.value, f"state {row.state.value}"),
            send_q=row.send_q,
            recv_q=row.recv_q,
            uid=row.uid,
            inode=row.inode,
            drops=int(cols[12]),
        )


def udp_table(port: int | None = None) -> list[UdpEntry]:
    """Every UDP socket in this network namespace, or only those bound to local `port`.

    Asks the kernel over netlink, as ``ss -uan`` does, and reads /proc/net/udp{,6} only
    where the kernel has no UDP sock_diag. The netlink answer for one port comes from one
    pass over the kernel's table; /proc/net/udp is read a page at a time, each page found
    again by counting sockets from the start, so while other programs open and close UDP
    sockets one read can skip a socket or list it twice (measured: 7% of reads, under
    heavy churn).
    """
    require_linux("the UDP socket table (/proc/net/udp)")
    if port is not None:
        checks.port("port", port)
    try:
        return _from_netlink(port)
    except OSError as exc:
        if not (isinstance(exc, PermissionError) or exc.errno in _NO_DIAG):
            raise
    out: dict[int, UdpEntry] = {}
    for name in ("udp", "udp6"):
        path = PROC_NET / name
        if path.exists():
            for e in _parse(path.read_text()):
                if port is None or e.local[1] == port:
                    out.setdefault(e.inode, e)  # listed twice in one read: keep the first
    return list(out.values())


_NO_DIAG = (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ENOENT)  # no UDP sock_diag here


def _from_netlink(port: int | None) -> list[UdpEntry]:
    """udp_table() over NETLINK_SOCK_DIAG, with the drop count from the socket's meminfo."""
    out: dict[int, UdpEntry] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            rows = list(sock_diag_dump(family, socket.IPPROTO_UDP, ext=1 << (INET_DIAG_SKMEMINFO - 1),
                                       local_port=port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno == errno.EAFNOSUPPORT:
                continue  # a kernel without IPv6
            raise
        for r in rows:
            drops = meminfo_drops(r) or 0
            out.setdefault(r.inode, UdpEntry(
                local=r.local,
                remote=r.remote,
                state=_STATES.get(r.state, f"state {r.state}"),
                send_q=r.wqueue,
                recv_q=r.rqueue,
                uid=r.uid,
                inode=r.inode,
                drops=drops,
            ))
    return list(out.values())


@dataclass(frozen=True)
class UnreachablePort:
    """A UDP address where no socket receives datagrams from anyone but itself.

    ``admit(sender)`` opens the port to one sender: the blocker connects to that address, so
    from then on the kernel delivers that sender's datagrams to it (``received()`` reads
    them) and still refuses everyone else's. Lesson 11 uses it to show that a send() which
    raised ECONNREFUSED sent nothing: the port is open by then, and nothing arrives.
    """

    address: tuple[str, int]
    blocker: socket.socket  # bound to `address` and connected to it: it holds the port
    rows: list[UdpEntry]  # /proc/net/udp rows that could receive for `address` (only the blocker)

    def admit(self, sender: tuple[str, int]) -> None:
        """Accept datagrams from `sender` (an (ip, port) pair) from now on, and from no one else."""
        checks.ip_port("sender", sender)
        self.blocker.connect(sender)

    def received(self, *, quiet_s: float = 0.05) -> list[bytes]:
        """The datagrams admitted so far, read until none has arrived for `quiet_s` seconds."""
        checks.seconds("quiet_s", quiet_s, high=10)
        out = []
        while select.select([self.blocker], [], [], quiet_s)[0]:
            try:
                out.append(self.blocker.recv(65535))
            except BlockingIOError:  # woken, but nothing there after all
                continue
            except ConnectionRefusedError:  # an ICMP error for the blocker's own earlier send: none here
                continue
        return out


@contextmanager
def unreachable_port(host: str = "127.0.0.1") -> Iterator[UnreachablePort]:
    """Hold a UDP port on `host` (loopback) where datagrams from other sockets find no
    receiver, so the kernel answers them with ICMP port unreachable.

    Checks /proc/net/udp that the blocker is the only socket on the port; RuntimeError if
    another socket shares it (possible only if someone uses SO_REUSEPORT tricks).
    ValueError for a host that is not a loopback IP address, TypeError for a non-str.
    """
    family = family_for(host)
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"host must be a loopback address such as '127.0.0.1' or '::1', got {host!r}")
    blocker = socket.socket(family, socket.SOCK_DGRAM)
    try:
        blocker.bind((host, 0))
        address = blocker.getsockname()[:2]
        blocker.connect(address)  # accept datagrams only from ourselves: from anyone else, none
        blocker.setblocking(False)
        # Sockets that could receive datagrams for `address`: bound to it or to a wildcard.
        rows = [r for r in udp_table(address[1]) if r.local[0] in (address[0], "0.0.0.0", "::")]
        mine = os.fstat(blocker.fileno()).st_ino
        others = [r for r in rows if r.inode != mine]
        if others or len(rows) != 1:
            raise RuntimeError(f"UDP port {address[1]} is shared with other sockets: {others}; try again")
        yield UnreachablePort(address, blocker, rows)
    finally:
        blocker.close()
