"""Measure what the kernel did: TCP_INFO, the socket table, kernel counters, open fds.

Theory of operation. Linux exposes three views of TCP, each with its own trust level:

* ``getsockopt(IPPROTO_TCP, TCP_INFO)`` describes one socket (struct tcp_info in
  <linux/tcp.h>): its state, timers in microseconds, and how many segments it sent and
  received. It is the trustworthy evidence, because no other process touches it.
* ``/proc/net/tcp`` and ``/proc/net/tcp6`` list every TCP socket of this network namespace,
  as ``ss -tan`` does: state, addresses, queues and the pending timer. For a LISTEN socket
  the rx_queue column is the accept queue (connections the kernel completed and
  ``accept()`` has not taken yet).
* ``/proc/net/snmp`` and ``/proc/net/netstat`` hold namespace-wide counters (``netstat
  -s``). Other processes' traffic moves them too, so lessons diff them around an experiment
  and assert only on changes they caused, with margins.

This module only measures; drawing lives in ``plots`` and ``diagrams``.
"""

from __future__ import annotations

import difflib
import enum
import errno
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

from .features import require_linux

__all__ = [
    "ksoftirqd_cpu_s",
    "proc_stat",
    "TcpState",
    "TcpInfo",
    "tcp_info",
    "SocketEntry",
    "SocketTable",
    "socket_table",
    "entries_for",
    "parse_proc_tcp",
    "decode_proc_address",
    "Counters",
    "CounterDiff",
    "kernel_counters",
    "counters_diff",
    "FdEntry",
    "open_fds",
]

PROC_NET = Path("/proc/net")


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


# --------------------------------------------------------------------------- TCP_INFO

# struct tcp_info, in order, from <linux/tcp.h>. The kernel returns as many bytes as it
# knows; fields beyond what it returned stay None (older kernels stop earlier).
_TCP_INFO_LAYOUT: list[tuple[str, str]] = [
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"),
    ("backoff", "B"), ("options", "B"), ("_wscale", "B"), ("_flags", "B"),
    ("rto_us", "I"), ("ato_us", "I"), ("snd_mss", "I"), ("rcv_mss", "I"),
    ("unacked", "I"), ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent_ms", "I"), ("last_ack_sent_ms", "I"),
    ("last_data_recv_ms", "I"), ("last_ack_recv_ms", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt_us", "I"), ("rttvar_us", "I"),
    ("snd_ssthresh", "I"), ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt_us", "I"), ("rcv_space", "I"), ("total_retrans", "I"),
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"),
    ("bytes_received", "Q"), ("segs_out", "I"), ("segs_in", "I"),
    ("notsent_bytes", "I"), ("min_rtt_us", "I"), ("data_segs_in", "I"),
    ("data_segs_out", "I"), ("delivery_rate", "Q"), ("busy_time_us", "Q"),
    ("rwnd_limited_us", "Q"), ("sndbuf_limited_us", "Q"), ("delivered", "I"),
    ("delivered_ce", "I"), ("bytes_sent", "Q"), ("bytes_retrans", "Q"),
    ("dsack_dups", "I"), ("reord_seen", "I"), ("rcv_ooopack", "I"), ("snd_wnd", "I"),
    ("rcv_wnd", "I"), ("rehash", "I"), ("total_rto", "H"), ("total_rto_recoveries", "H"),
    ("total_rto_time_ms", "I"),
]
_TCP_INFO_MAX = 512  # bytes asked for; the kernel returns min(this, sizeof its struct)


@dataclass(frozen=True)
class TcpInfo:
    """One socket's struct tcp_info. Units are in the names (``_us``, ``_ms``); None = not
    reported by this kernel.

    For a LISTEN socket the kernel reuses two fields: ``unacked`` is the current accept
    queue length and ``sacked`` the queue's limit (the backlog passed to listen()).
    """

    state: TcpState
    ca_state: int
    retransmits: int
    probes: int
    backoff: int
    options: int
    snd_wscale: int
    rcv_wscale: int
    rto_us: int
    ato_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    sacked: int
    lost: int
    retrans: int
    fackets: int
    last_data_sent_ms: int
    last_ack_sent_ms: int
    last_data_recv_ms: int
    last_ack_recv_ms: int
    pmtu: int
    rcv_ssthresh: int
    rtt_us: int
    rttvar_us: int
    snd_ssthresh: int
    snd_cwnd: int
    advmss: int
    reordering: int
    rcv_rtt_us: int
    rcv_space: int
    total_retrans: int
    pacing_rate: int | None = None
    max_pacing_rate: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None
    segs_out: int | None = None
    segs_in: int | None = None
    notsent_bytes: int | None = None
    min_rtt_us: int | None = None
    data_segs_in: int | None = None
    data_segs_out: int | None = None
    delivery_rate: int | None = None
    busy_time_us: int | None = None
    rwnd_limited_us: int | None = None
    sndbuf_limited_us: int | None = None
    delivered: int | None = None
    delivered_ce: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    dsack_dups: int | None = None
    reord_seen: int | None = None
    rcv_ooopack: int | None = None
    snd_wnd: int | None = None
    rcv_wnd: int | None = None
    rehash: int | None = None
    total_rto: int | None = None
    total_rto_recoveries: int | None = None
    total_rto_time_ms: int | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> TcpInfo:
        """Decode the bytes getsockopt(TCP_INFO) returned (any kernel's length).

        TypeError for anything but bytes-like data; ValueError if it is shorter than 104
        bytes or its first byte is no TCP state.
        """
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise TypeError(f"TcpInfo.from_bytes() needs the bytes of getsockopt(TCP_INFO), got {type(raw).__name__}")
        if len(raw) < 104:  # up to total_retrans: every kernel since 2.6 returns this much
            raise ValueError(f"TCP_INFO returned {len(raw)} bytes, expected at least 104")
        values: dict[str, int] = {}
        offset = 0
        for name, code in _TCP_INFO_LAYOUT:
            size = struct.calcsize(code)
            if offset + size > len(raw):
                break
            (values[name],) = struct.unpack_from("=" + code, raw, offset)
            offset += size
        wscale = values.pop("_wscale")
        values.pop("_flags")
        values["snd_wscale"] = wscale & 0x0F
        values["rcv_wscale"] = wscale >> 4
        if values["state"] not in {s.value for s in TcpState}:
            raise ValueError(f"TCP_INFO state byte is {values['state']}, not a TCP state (1-12): not struct tcp_info")
        values["state"] = TcpState(values["state"])
        return cls(**values)

    def as_dict(self) -> dict[str, object]:
        """The fields the kernel reported, with the state as its name."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.name if isinstance(value, TcpState) else value
        return out


def tcp_info(sock: socket.socket) -> TcpInfo:
    """Read struct tcp_info for a TCP socket (connected, listening or closing).

    Raises TypeError for anything that is not a TCP socket, and ValueError for a closed one.
    """
    require_linux("TCP_INFO")
    _require_tcp_socket(sock, "tcp_info()")
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_MAX)
    return TcpInfo.from_bytes(raw)


def _require_tcp_socket(sock: socket.socket, who: str) -> None:
    """TypeError unless `sock` is an AF_INET/AF_INET6 SOCK_STREAM socket; ValueError if closed."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"{who} needs a TCP socket, got {type(sock).__name__}")
    if sock.fileno() == -1:
        raise ValueError(f"{who} needs an open socket; this one is closed")
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        kind = getattr(sock.type, "name", sock.type)
        fam = getattr(sock.family, "name", sock.family)
        raise TypeError(f"{who} needs a TCP socket, got a {fam}/{kind} socket")


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


def _proc_row(line: str, cols: list[str]) -> SocketEntry:
    """The columns /proc/net/{tcp,udp}{,6} share, decoded; ValueError naming the line."""
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
                yield _proc_row(line, cols)

    return rows()


# NETLINK_SOCK_DIAG numbers, from <linux/netlink.h>, <linux/sock_diag.h>, <linux/inet_diag.h>
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_DIAG_REQ = struct.Struct("=BBBxI")  # family, protocol, ext, states (then the sockid)
_DIAG_MSG = struct.Struct("=BBBB")  # family, state, timer, retrans (then the sockid)
_DIAG_TAIL = struct.Struct("=IIIII")  # expires (ms), rqueue, wqueue, uid, inode
_NOCOOKIE = 0xFFFFFFFF


def _sockid(local: tuple[str, int], remote: tuple[str, int]) -> bytes:
    src = ipaddress.ip_address(local[0]).packed.ljust(16, b"\0")
    dst = ipaddress.ip_address(remote[0]).packed.ljust(16, b"\0")
    return struct.pack("!HH", local[1], remote[1]) + src + dst + struct.pack("=III", 0, _NOCOOKIE, _NOCOOKIE)


class DiagRow(NamedTuple):
    """One socket as NETLINK_SOCK_DIAG reports it (struct inet_diag_msg, <linux/inet_diag.h>)."""

    state: int
    timer: int
    retransmits: int
    local: Address
    remote: Address
    expires_ms: int
    rqueue: int
    wqueue: int
    uid: int
    inode: int
    attrs: dict[int, bytes]  # extra attributes by type (INET_DIAG_SKMEMINFO = 7, ...)


def _diag_ask(
    family: int, protocol: int, sockid: bytes, flags: int, *, ext: int = 0, attr: bytes = b""
) -> socket.socket:
    """A netlink socket that has sent one SOCK_DIAG_BY_FAMILY request (the caller closes it)."""
    body = _DIAG_REQ.pack(family, protocol, ext, 0xFFFFFFFF) + sockid + attr
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    try:
        nl.sendto(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, 1, 0) + body, (0, 0))
    except BaseException:
        nl.close()
        raise
    return nl


def _diag_errno(reply: bytes, offset: int) -> int:
    """The errno of the NLMSG_ERROR message at `offset` (the kernel sends it negated)."""
    return -struct.unpack_from("=i", reply, offset + _NLMSG_HDR.size)[0]


def _diag_row(reply: bytes, offset: int, family: int) -> DiagRow:
    """The inet_diag_msg in the netlink message at `offset`, with its attributes."""
    (length,) = struct.unpack_from("=I", reply, offset)
    msg = offset + _NLMSG_HDR.size
    state, timer, retrans = _DIAG_MSG.unpack_from(reply, msg)[1:]
    sport, dport = struct.unpack_from("!HH", reply, msg + 4)
    width = 4 if family == socket.AF_INET else 16
    src = ipaddress.ip_address(reply[msg + 8:msg + 8 + width])
    dst = ipaddress.ip_address(reply[msg + 24:msg + 24 + width])
    tail = _DIAG_TAIL.unpack_from(reply, msg + 52)
    attrs: dict[int, bytes] = {}
    at = msg + 72
    while at + 4 <= offset + length:
        alen, atype = struct.unpack_from("=HH", reply, at)
        if alen < 4:
            break
        attrs[atype & 0x3FFF] = reply[at + 4:at + alen]
        at += (alen + 3) & ~3
    return DiagRow(state, timer, retrans, (str(src), sport), (str(dst), dport), *tail, attrs)


def _sock_diag_lookup(local: Address, remote: Address) -> SocketEntry | None:
    """Ask the kernel for the one TCP socket with this 4-tuple (None if there is none)."""
    family = socket.AF_INET6 if ipaddress.ip_address(local[0]).version == 6 else socket.AF_INET
    with _diag_ask(family, socket.IPPROTO_TCP, _sockid(local, remote), _NLM_F_REQUEST) as nl:
        reply = nl.recv(8192)
    _, kind, _, _, _ = _NLMSG_HDR.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        err = _diag_errno(reply, 0)
        if err == errno.ENOENT:
            return None  # no socket with this 4-tuple
        raise OSError(err, f"sock_diag lookup failed: {os.strerror(err)}")
    row = _diag_row(reply, 0, family)
    if row.state == TcpState.LISTEN.value:
        return None  # an exact lookup falls back to a listener on the local port; not this 4-tuple
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


_NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH: every socket, not one
_NLMSG_DONE = 3
_INET_DIAG_REQ_BYTECODE = 1
_BC_S_GE, _BC_S_LE = 2, 3  # bytecode ops "local port >=" and "<=": together, "=="
_BC_OP = struct.Struct("=BBH")  # code, jump if true, jump if false (bytes ahead)


def _local_port_filter(port: int) -> bytes:
    """inet_diag bytecode keeping the sockets whose local port is `port` (``ss sport = :N``).

    Each test is an op and a second op carrying the port; a jump to the end accepts, a jump
    to 4 bytes past it rejects (see inet_diag_bc_run in net/ipv4/inet_diag.c).
    """
    ops = b""
    for offset, code in ((0, _BC_S_GE), (8, _BC_S_LE)):
        ops += _BC_OP.pack(code, 8, 16 - offset + 4) + _BC_OP.pack(0, 0, port)
    return ops


def sock_diag_dump(
    family: int, protocol: int, *, ext: int = 0, local_port: int | None = None
) -> Iterator[DiagRow]:
    """Every socket of `protocol` and `family` over NETLINK_SOCK_DIAG, as ``ss`` lists them.

    `ext` asks for extra attributes (bit N-1 for attribute N). `local_port` makes the kernel
    keep only that port, so the answer is one pass over its table; unlike a read of
    /proc/net/*, which resumes by position page by page and can skip or repeat a socket while
    others come and go. OSError if the kernel refuses (EPROTONOSUPPORT: no diag module).
    """
    attr = b""
    if local_port is not None:
        code = _local_port_filter(local_port)
        attr = struct.pack("=HH", 4 + len(code), _INET_DIAG_REQ_BYTECODE) + code
    with _diag_ask(family, protocol, bytes(48), _NLM_F_REQUEST | _NLM_F_DUMP, ext=ext, attr=attr) as nl:
        while True:
            reply = nl.recv(65536)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(reply):
                length, kind, _, _, _ = _NLMSG_HDR.unpack_from(reply, offset)
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    err = _diag_errno(reply, offset)
                    raise OSError(err, f"sock_diag dump failed: {os.strerror(err)}")
                yield _diag_row(reply, offset, family)
                offset += (length + 3) & ~3


def _check_addr(name: str, addr: Address | None) -> Address | None:
    if addr is None:
        return None
    if not (isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[0], str)
            and isinstance(addr[1], int) and not isinstance(addr[1], bool)):
        raise TypeError(f"{name} must be a (host, port) tuple such as ('127.0.0.1', 8080), got {addr!r}")
    if not 0 <= addr[1] <= 65535:
        raise ValueError(f"{name} port must be 0-65535, got {addr[1]}")
    try:
        return (str(ipaddress.ip_address(addr[0])), addr[1])
    except ValueError:
        raise ValueError(f"{name} host must be an IP address such as '127.0.0.1', got {addr[0]!r}") from None


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
    otherwise /proc/net/tcp and tcp6 are read whole. TypeError or ValueError, naming the
    argument, for an address that is not an (IP str, port) tuple, a port outside 0-65535,
    or `states` that is not a list of state names.
    """
    require_linux("the socket table (/proc/net/tcp)")
    local, remote = _check_addr("local", local), _check_addr("remote", remote)
    if port is not None and (isinstance(port, bool) or not (isinstance(port, int) and 0 <= port <= 65535)):
        raise ValueError(f"port must be an int in 0-65535, got {port!r}")
    if states is not None and (isinstance(states, (str, TcpState)) or not isinstance(states, Iterable)):
        raise TypeError(f"states must be a list of state names, such as ['LISTEN'], got {states!r}")
    wanted = {TcpState.parse(s) for s in states} if states is not None else None
    if local is not None and remote is not None and port is None:
        # A whole 4-tuple names one connection: ask the kernel for it alone, as ``ss``
        # does, instead of reading every socket of a possibly crowded namespace.
        try:
            entry = _sock_diag_lookup(local, remote)
        except OSError as exc:
            if not (isinstance(exc, PermissionError) or exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT)):
                raise
        else:
            return SocketTable([entry] if entry is not None and (wanted is None or entry.state in wanted) else [])
    table = SocketTable()
    seen: set[tuple[Address, Address, int]] = set()
    for name in ("tcp", "tcp6"):
        path = PROC_NET / name
        if not path.exists():
            continue
        for e in parse_proc_tcp(path.read_text()):
            if local is not None and e.local != local:
                continue
            if remote is not None and e.remote != remote:
                continue
            if port is not None and port not in (e.local[1], e.remote[1]):
                continue
            if wanted is not None and e.state not in wanted:
                continue
            # The kernel fills this file a page per read() and finds its place again by
            # hash bucket and offset, so while other sockets come and go one read can list
            # the same socket twice, its timer a few ms apart. A socket is its 4-tuple plus
            # inode (0 for a half-open request or a TIME_WAIT, whose 4-tuple is unique;
            # SO_REUSEPORT listeners share an address but not an inode); keep the first.
            key = (e.local, e.remote, e.inode)
            if key in seen:
                continue
            seen.add(key)
            table.append(e)
    return table


def entries_for(sock: socket.socket) -> SocketTable:
    """Both ends of `sock`'s connection as rows of the socket table (this end first).

    A listening socket gives its one LISTEN row. Works after close() as long as you
    saved the addresses: see socket_table(local=..., remote=...). TypeError for a socket
    that is not TCP, ValueError for a closed one.
    """
    _require_tcp_socket(sock, "entries_for()")
    local = sock.getsockname()[:2]
    try:
        remote = sock.getpeername()[:2]
    except OSError:  # not connected: a listener
        return socket_table(local=local, states=["LISTEN"])
    mine = socket_table(local=local, remote=remote)
    theirs = socket_table(local=remote, remote=local)
    return SocketTable([*mine, *theirs])


# --------------------------------------------------------------------------- counters


class Counters(Mapping[str, int]):
    """A snapshot of /proc/net/snmp and /proc/net/netstat: 'Tcp.OutRsts' -> 9, ...

    Keys are 'Group.Name' as ``nstat`` prints them without its prefix (TcpExt.DelayedACKs,
    Udp.NoPorts, Icmp.OutDestUnreachs). An unknown key raises KeyError with close matches.
    """

    def __init__(self, values: dict[str, int]):
        self._values = values

    def __getitem__(self, key: str) -> int:
        try:
            return self._values[key]
        except KeyError:
            close = difflib.get_close_matches(str(key), self._values, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"no kernel counter {key!r}{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def diff(self, before: Counters) -> dict[str, int]:
        """Counters that changed since `before`, as {name: increase}."""
        return {k: v - before._values.get(k, 0) for k, v in self._values.items() if v != before._values.get(k, 0)}


def _parse_snmp_style(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    lines = text.splitlines()
    for header, data in zip(lines[::2], lines[1::2]):
        group, names = header.split(":", 1)
        _, nums = data.split(":", 1)
        for name, num in zip(names.split(), nums.split()):
            values[f"{group}.{name}"] = int(num)
    return values


def kernel_counters() -> Counters:
    """Read every counter of /proc/net/snmp and /proc/net/netstat now."""
    require_linux("kernel counters (/proc/net/snmp)")
    values: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        path = PROC_NET / name
        if path.exists():
            values.update(_parse_snmp_style(path.read_text()))
    return Counters(values)


class CounterDiff:
    """What changed between entering and leaving a ``counters_diff()`` block."""

    def __init__(self, before: Counters):
        self.before = before
        self.after: Counters | None = None

    @property
    def changed(self) -> dict[str, int]:
        """{name: increase} for the counters that moved; read it after the block ends."""
        if self.after is None:
            raise RuntimeError("read .changed after the `with counters_diff()` block ends")
        return self.after.diff(self.before)

    def __getitem__(self, key: str) -> int:
        """The increase of one counter (0 if it did not move)."""
        if self.after is None:
            raise RuntimeError("read counters after the `with counters_diff()` block ends")
        return self.after[key] - self.before[key]


@contextmanager
def counters_diff() -> Iterator[CounterDiff]:
    """Snapshot the kernel counters around a block; the result's .changed says what moved.

    Counters are shared by the whole network namespace: other programs move them too.
    """
    diff = CounterDiff(kernel_counters())
    try:
        yield diff
    finally:
        diff.after = kernel_counters()


# --------------------------------------------------------------------------- fds


@dataclass(frozen=True)
class FdEntry:
    """One open file descriptor: its number, what it points to, and a socket's inode."""

    fd: int
    target: str
    socket_inode: int | None


def _check_pid(pid: int | str) -> int | str:
    """`pid` if it is a positive int or 'self'; ValueError otherwise, ProcessLookupError if
    no such process exists."""
    if isinstance(pid, bool) or not (pid == "self" or isinstance(pid, int) and pid > 0):
        raise ValueError(f"pid must be a positive int or 'self', got {pid!r}")
    if not Path(f"/proc/{pid}").exists():
        raise ProcessLookupError(f"no process with pid {pid}")
    return pid


def open_fds(pid: int | str = "self") -> list[FdEntry]:
    """The open fds of a process (default: this one), as ``ls -l /proc/PID/fd`` shows them.

    ValueError for a pid that is not a positive int or 'self', ProcessLookupError for a
    process that does not exist, PermissionError for another user's process.
    """
    require_linux("the fd listing (/proc/PID/fd)")
    base = Path(f"/proc/{_check_pid(pid)}/fd")
    out = []
    for entry in sorted(base.iterdir(), key=lambda p: int(p.name)):
        try:
            target = os.readlink(entry)
        except OSError:  # closed between listing and reading (e.g. the listing's own fd)
            continue
        inode = int(target[8:-1]) if target.startswith("socket:[") else None
        out.append(FdEntry(int(entry.name), target, inode))
    return out


def proc_stat(path: str) -> list[str]:
    """The fields of a /proc/<pid>/stat (or /proc/<pid>/task/<tid>/stat) file after the command
    name, which may itself hold spaces and ')': [0] is field 3 (state), [1] ppid, [2] pgrp,
    [11] utime, [12] stime, [36] processor (man 5 proc). OSError if the process is gone."""
    with open(path, "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].decode("ascii").split()


_KSOFTIRQD: list[int] = []  # the pids of the kernel's ksoftirqd/N threads, found once


def ksoftirqd_cpu_s() -> float:
    """CPU seconds the kernel's ksoftirqd threads (one per CPU) have used so far.

    On loopback, TCP's receive processing runs as a softirq, normally right in the sending
    thread and charged to its CPU time. When softirqs keep coming (a busy CPU) the kernel
    hands the rest to its per-CPU ksoftirqd thread (kernel/softirq.c), and then no
    ``time.thread_time()`` of ours sees that work. A "CPU per byte"
    measurement adds the change of this value over the trial, so the deferred part counts
    too. Resolution: one clock tick (usually 10 ms). 0.0 if /proc shows no ksoftirqd.
    """
    if not _KSOFTIRQD:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().startswith("ksoftirqd/"):
                            _KSOFTIRQD.append(int(entry))
                except OSError:
                    continue
    ticks = 0
    for pid in _KSOFTIRQD:
        try:
            fields = proc_stat(f"/proc/{pid}/stat")
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")
