"""The TCP socket table: every TCP socket of this network namespace, as ``ss -tan`` lists it.

Theory of operation. ``/proc/net/tcp`` and ``/proc/net/tcp6`` list every TCP socket of this
network namespace: state, addresses, queues and the pending timer (``man 5 proc``). For a
LISTEN socket the rx_queue column is the accept queue (connections the kernel completed and
``accept()`` has not taken yet). The kernel produces the file a page per read() and finds
its place again by hash bucket and offset, so one read of a busy namespace can list a socket
twice; ``socket_table()`` keeps each socket once. Asked for one whole 4-tuple, it asks the
kernel for that one connection over NETLINK_SOCK_DIAG (``core.sockdiag``) instead, as ``ss``
does. ``TcpState`` holds the kernel's state numbers (include/net/tcp_states.h).
``socket_drops()`` reads one socket's drop counter the same way (its SK_MEMINFO_DROPS).
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import os
import re
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..core import checks
from ..core.features import require_linux
from ..core.proc import PROC_NET
from ..core.sockdiag import INET_DIAG_SKMEMINFO, DiagRow, meminfo_drops, sock_diag_dump, sock_diag_lookup

__all__ = [
    "Address",
    "TcpState",
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
]

class TcpState(enum.Enum):
    """TCP states with the kernel's numbers (include/net/tcp_states.h)."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12

    @classmethod
    def parse(cls, name: str | TcpState) -> TcpState:
        """Accept 'TIME_WAIT', 'time-wait' or a TcpState; an unknown name lists the valid ones."""
        if isinstance(name, TcpState):
            return name
        key = str(name).strip().upper().replace("-", "_")
        try:
            return cls[key]
        except KeyError:
            valid = ", ".join(s.name for s in cls)
            raise ValueError(f"unknown TCP state {name!r}; valid states: {valid}") from None

    @classmethod
    def parse_all(cls, states: str | TcpState | Iterable[str | TcpState]) -> frozenset[TcpState]:
        """One state (a name or a TcpState) or several, as a set. TypeError for anything else,
        ValueError for an unknown name or none at all."""
        if isinstance(states, (str, TcpState)):
            states = [states]
        if not isinstance(states, Iterable):
            raise TypeError(f"states must be a TCP state name such as 'TIME_WAIT', or a list of them, got {states!r}")
        wanted = frozenset(cls.parse(s) for s in states)
        if not wanted:
            raise ValueError("states is empty: name at least one TCP state to wait for, e.g. 'CLOSE_WAIT'")
        return wanted



# --------------------------------------------------------------------------- socket table

Address = tuple[str, int]


class TimerKind(enum.Enum):
    """The `tr` column of /proc/net/tcp: which timer is pending on the socket."""

    NONE = 0
    RETRANSMIT = 1  # also the zero-window probe and loss-probe timers
    KEEPALIVE = 2  # also the SYN-ACK timer of a listener's request socket
    TIME_WAIT = 3
    PROBE = 4  # zero window probe


@dataclass(frozen=True)
class SocketEntry:
    """One row of /proc/net/tcp{,6}: what ``ss -tan`` shows for one socket.

    ``send_q`` is bytes not yet acknowledged by the peer; ``recv_q`` is bytes received and
    not yet read by the application, except on a LISTEN socket, where it is the accept
    queue length. ``timer_s`` is the time left on the pending timer, in seconds.
    """

    state: TcpState
    local: Address
    remote: Address
    send_q: int
    recv_q: int
    timer: TimerKind
    timer_s: float
    retransmits: int
    uid: int
    inode: int

    def row(self) -> tuple[str, int, int, str, str, str]:
        """The columns printed by SocketTable, ss-style."""
        timer = "" if self.timer is TimerKind.NONE else f"{self.timer.name.lower()} {self.timer_s:.1f}s"
        return (self.state.name, self.recv_q, self.send_q, _fmt(self.local), _fmt(self.remote), timer)


def _fmt(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SocketTable(list[SocketEntry]):
    """A list of SocketEntry that prints like ``ss -tan`` (text and HTML)."""

    _HEADER = ("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Timer")

    def __repr__(self) -> str:
        rows = [self._HEADER] + [tuple(str(c) for c in e.row()) for e in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if not self:
            lines.append("(no matching sockets)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in self._HEADER)
        body = "".join(
            "<tr>" + "".join(f"<td>{c}</td>" for c in e.row()) + "</tr>" for e in self
        )
        if not self:
            body = f'<tr><td colspan="{len(self._HEADER)}">(no matching sockets)</td></tr>'
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def states(self) -> list[str]:
        """The state names, in table order (handy for assertions)."""
        return [e.state.name for e in self]


_PROC_ADDRESS = re.compile(r"([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})")


def decode_proc_address(hex_addr: str) -> Address:
    """Decode an address column of /proc/net/{tcp,udp}{,6} ('0100007F:1F90' -> ('127.0.0.1', 8080)).

    The kernel prints 8 (IPv4) or 32 (IPv6) hex digits, ':', then 4 hex digits of port;
    anything else raises ValueError showing the text (TypeError for a non-str).
    """
    if not isinstance(hex_addr, str):
        raise TypeError(f"decode_proc_address() needs a str such as '0100007F:1F90', got {type(hex_addr).__name__}")
    match = _PROC_ADDRESS.fullmatch(hex_addr)
    if match is None:
        raise ValueError(
            f"not a /proc/net address column: {hex_addr!r}; expected 8 or 32 hex digits, ':', "
            "4 hex digits (e.g. '0100007F:1F90')"
        )
    host_hex, port_hex = match.groups()
    raw = bytes.fromhex(host_hex)
    # The kernel prints each 32-bit word of the address in host byte order.
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    packed = b"".join(w[::-1] for w in words) if _LITTLE_ENDIAN else raw
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        host = f"::ffff:{ip.ipv4_mapped}"
    else:
        host = str(ip)
    return (host, int(port_hex, 16))


_LITTLE_ENDIAN = struct.pack("=I", 1) == struct.pack("<I", 1)
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


_HEX_PAIR = re.compile(r"([0-9A-Fa-f]+):([0-9A-Fa-f]+)")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_DECIMAL = re.compile(r"[0-9]+")


def _proc_number(text: str, pattern: re.Pattern[str], what: str) -> int:
    if pattern.fullmatch(text) is None:
        raise ValueError(f"{what} is {text!r}")
    return int(text, 16 if pattern is _HEX else 10)


def parse_proc_row(line: str, cols: list[str] | None = None) -> SocketEntry:
    """The columns /proc/net/{tcp,udp}{,6} share, decoded from one `line` (split into `cols`
    if the caller has not already); ValueError naming the line."""
    cols = line.split() if cols is None else cols
    try:
        queues, timer = _HEX_PAIR.fullmatch(cols[4]), _HEX_PAIR.fullmatch(cols[5])
        if queues is None or timer is None:
            raise ValueError(f"queues {cols[4]!r} and timer {cols[5]!r} must be hex:hex")
        state = _proc_number(cols[3], _HEX, "the state")
        if state not in {s.value for s in TcpState}:
            raise ValueError(f"state {state} is no TCP state (1-12)")
        timer_kind = int(timer[1], 16)
        return SocketEntry(
            state=TcpState(state),
            local=decode_proc_address(cols[1]),
            remote=decode_proc_address(cols[2]),
            send_q=int(queues[1], 16),
            recv_q=int(queues[2], 16),
            timer=TimerKind(timer_kind) if timer_kind <= 4 else TimerKind.NONE,
            timer_s=int(timer[2], 16) / _CLK_TCK,
            retransmits=_proc_number(cols[6], _HEX, "retrnsmt"),
            uid=_proc_number(cols[7], _DECIMAL, "uid"),
            inode=_proc_number(cols[9], _DECIMAL, "inode"),
        )
    except ValueError as exc:
        raise ValueError(f"not a /proc/net socket row ({exc}): {line[:200]!r}") from None


def parse_proc_tcp(text: str) -> Iterator[SocketEntry]:
    """The rows of a /proc/net/tcp or tcp6 text as SocketEntry, in file order.

    The first line (the header) is skipped, and so is any line of fewer than 10 columns
    (a blank line). A line with 10 or more columns that is not a socket row (non-hex, a
    state that is no TCP state, a malformed address) raises ValueError showing the line.
    TypeError for a text that is not a str.
    """
    if not isinstance(text, str):  # checked now, not at the first next()
        raise TypeError(f"parse_proc_tcp() needs the str text of /proc/net/tcp, got {type(text).__name__}")

    def rows() -> Iterator[SocketEntry]:
        for line in text.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 10:
                yield parse_proc_row(line, cols)

    return rows()


def _from_diag(row: DiagRow) -> SocketEntry:
    """A sock_diag answer as a row of the table (its timer is in ms there, in ticks here)."""
    return SocketEntry(
        state=TcpState(row.state),
        local=row.local,
        remote=row.remote,
        send_q=row.wqueue,
        recv_q=row.rqueue,
        timer=TimerKind(row.timer) if row.timer <= 4 else TimerKind.NONE,
        timer_s=row.expires_ms / 1000,
        retransmits=row.retransmits,
        uid=row.uid,
        inode=row.inode,
    )


def socket_table(
    *,
    local: Address | None = None,
    remote: Address | None = None,
    port: int | None = None,
    states: Iterable[str | TcpState] | None = None,
) -> SocketTable:
    """Every TCP socket in this network namespace, optionally filtered (like ``ss -tan``).

    `local` and `remote` are (host, port) pairs that must match exactly (together: the
    4-tuple); `port` matches either end; `states` keeps only those states ('TIME_WAIT', ...).
    Given the whole 4-tuple (and no `port`), the kernel is asked for that one connection
    over NETLINK_SOCK_DIAG, which stays fast in a namespace with many thousands of sockets;
    given a port (`port`, or the port of `local` or `remote`), the kernel is asked for the
    sockets on that port the same way, in one pass (a read of /proc/net/tcp resumes page by
    page, so while other programs' sockets come and go it can skip one of ours: on a shared
    machine, other users' lessons churn sockets all the time); with no port, and where
    sock_diag is refused, /proc/net/tcp and tcp6 are read whole. TypeError or ValueError,
    naming the argument, for an address that is not an (IP str, port) tuple, a port outside
    0-65535, or `states` that is not a list of state names.
    """
    require_linux("the socket table (/proc/net/tcp)")
    local = None if local is None else checks.ip_port("local", local)
    remote = None if remote is None else checks.ip_port("remote", remote)
    if port is not None:
        checks.port("port", port)
    if states is not None and (isinstance(states, (str, TcpState)) or not isinstance(states, Iterable)):
        raise TypeError(f"states must be a list of state names, such as ['LISTEN'], got {states!r}")
    wanted = {TcpState.parse(s) for s in states} if states is not None else None
    if local is not None and remote is not None and port is None:
        # A whole 4-tuple names one connection: ask the kernel for it alone, as ``ss``
        # does, instead of reading every socket of a possibly crowded namespace.
        try:
            row = sock_diag_lookup(local, remote)
        except OSError as exc:
            if not (isinstance(exc, PermissionError) or exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT)):
                raise
        else:
            entry = None if row is None else _from_diag(row)
            return SocketTable([entry] if entry is not None and (wanted is None or entry.state in wanted) else [])
    table = SocketTable()
    seen: set[tuple[Address, Address, int]] = set()
    for e in _tcp_rows(port, local, remote):
        if local is not None and e.local != local:
            continue
        if remote is not None and e.remote != remote:
            continue
        if port is not None and port not in (e.local[1], e.remote[1]):
            continue
        if wanted is not None and e.state not in wanted:
            continue
        # The kernel fills /proc/net/tcp a page per read() and finds its place again by
        # hash bucket and offset, so while other sockets come and go one read can list
        # the same socket twice, its timer a few ms apart (and the two dumps of a port
        # both list a connection from the port to itself). A socket is its 4-tuple plus
        # inode (0 for a half-open request or a TIME_WAIT, whose 4-tuple is unique;
        # SO_REUSEPORT listeners share an address but not an inode); keep the first.
        key = (e.local, e.remote, e.inode)
        if key in seen:
            continue
        seen.add(key)
        table.append(e)
    return table


def _tcp_rows(port: int | None, local: Address | None, remote: Address | None) -> Iterator[SocketEntry]:
    """The TCP sockets that may match: those on the port asked for, from sock_diag (the
    local-port and remote-port dumps of both families), or every one from /proc/net."""
    if port is not None:
        asks = [{"local_port": port}, {"remote_port": port}]
    elif local is not None:
        asks = [{"local_port": local[1]}]
    elif remote is not None:
        asks = [{"remote_port": remote[1]}]
    else:
        asks = []
    if asks:
        try:
            rows = [_from_diag(row) for family in (socket.AF_INET, socket.AF_INET6) for ask in asks
                    for row in sock_diag_dump(family, socket.IPPROTO_TCP, **ask)]
        except OSError as exc:
            if not (isinstance(exc, PermissionError) or exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT)):
                raise
        else:
            yield from rows
            return
    for name in ("tcp", "tcp6"):
        path = PROC_NET / name
        if path.exists():
            yield from parse_proc_tcp(path.read_text())


def entries_for(sock: socket.socket) -> SocketTable:
    """Both ends of `sock`'s connection as rows of the socket table (this end first).

    A socket with no peer yet (a listener, or a connect() still in SYN_SENT) gives its own
    row alone, told apart from others on its address by inode. Works after close() as long
    as you saved the addresses: see socket_table(local=..., remote=...). TypeError for a
    socket that is not TCP, ValueError for a closed one.
    """
    checks.tcp_socket("entries_for()", sock)
    local = sock.getsockname()[:2]
    try:
        remote = sock.getpeername()[:2]
    except OSError:  # no peer yet: a listener, or a handshake in progress
        inode = os.fstat(sock.fileno()).st_ino
        return SocketTable([row for row in socket_table(local=local) if row.inode == inode])
    mine = socket_table(local=local, remote=remote)
    theirs = socket_table(local=remote, remote=local)
    return SocketTable([*mine, *theirs])



def socket_drops(sock: socket.socket) -> int | None:
    """How many packets the kernel dropped for this TCP socket (its sk_drops counter, which
    ``ss -tm`` prints as ``d<N>``); None where the kernel does not say (no sock_diag).

    For a listener these are the SYNs and handshake ACKs it dropped because its accept
    queue was full: the same events TcpExt.ListenDrops counts for the whole namespace, but
    for this socket alone. TypeError for a socket that is not TCP, ValueError for a closed
    one, LookupError if the kernel lists no such socket.
    """
    require_linux("per-socket drop counts (sock_diag)")
    checks.tcp_socket("socket_drops()", sock)
    inode = os.fstat(sock.fileno()).st_ino
    port = sock.getsockname()[1]
    try:
        rows = list(sock_diag_dump(sock.family, socket.IPPROTO_TCP, ext=1 << (INET_DIAG_SKMEMINFO - 1),
                                   local_port=port))
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
            return None
        raise
    for row in rows:
        if row.inode == inode:
            return meminfo_drops(row)
    raise LookupError(f"the kernel lists no TCP socket with inode {inode} on port {port}; is it bound?")


WAIT_POLL_S = 0.001  # how often wait_for_row() asks again: on loopback a state changes within microseconds


def wait_for_row(local: Address, remote: Address, states: str | TcpState | Iterable[str | TcpState], *,
                 timeout_s: float = 2.0) -> SocketEntry:
    """Wait until the socket with this 4-tuple shows one of `states` in the kernel's table; return its row.

    For a socket without a descriptor any more (after close(): FIN_WAIT2, TIME_WAIT, ...) or
    the peer's end: the kernel is asked for this one 4-tuple (``socket_table``). Closing is
    asynchronous (the FIN and its ACK cross loopback in softirq context), so a lesson waits
    here rather than sleeping a guessed time. The one 4-tuple wait of the helpers
    (``timewait.wait_for_state`` and ``closing.wait_for_row`` call it; a socket still open is
    watched through its TCP_INFO by ``closing.wait_for_state``). Raises TimeoutError naming
    what the table showed instead; ValueError for unknown or no states; TypeError/ValueError
    for a timeout that is not a number of seconds in (0, 600].
    """
    wanted = TcpState.parse_all(states)
    checks.seconds("timeout_s", timeout_s, high=600)
    require_linux("the socket table (/proc/net/tcp, sock_diag)")
    deadline = time.monotonic() + timeout_s
    while True:
        rows = socket_table(local=local, remote=remote)
        for row in rows:
            if row.state in wanted:
                return row
        if time.monotonic() >= deadline:
            names = " or ".join(sorted(s.name for s in wanted))
            seen = ", ".join(rows.states()) or "no socket at all"
            raise TimeoutError(f"{local} -> {remote} did not reach {names} within {timeout_s} s; "
                               f"the table shows: {seen}")
        time.sleep(WAIT_POLL_S)
