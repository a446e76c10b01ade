"""A small NETLINK_SOCK_DIAG client: ask the kernel for sockets the way ``ss`` does.

Theory of operation (``man 7 sock_diag``, <linux/inet_diag.h>). A process opens an
AF_NETLINK socket of protocol NETLINK_SOCK_DIAG and sends one request: a netlink header
(struct nlmsghdr) and a struct inet_diag_req_v2 naming the family, the protocol and, for an
exact lookup, one socket's addresses (struct inet_diag_sockid). The kernel answers with one
netlink message per socket, each a struct inet_diag_msg followed by optional attributes,
and ends a dump with NLMSG_DONE; a failure comes back as NLMSG_ERROR with a negated errno.

Two uses, both unprivileged:

* ``sock_diag_lookup(local, remote)``: the one TCP socket with that 4-tuple, answered from
  the kernel's hash table, so it stays fast in a namespace with many thousands of sockets.
* ``sock_diag_dump(family, protocol)``: every socket (optionally only one local or remote
  port, with a bytecode filter the kernel runs, as ``ss sport = :N`` or ``dport`` does). Unlike a read of /proc/net/*,
  which resumes by position a page at a time and can skip or repeat a socket while others
  come and go, the kernel produces one pass over its table.

Rows come back as ``DiagRow`` with the kernel's numbers (state 1-12, timer 0-4); turning
them into the course's tables is the job of ``helpers.observe`` and ``helpers.udp_ports``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["DiagRow", "sock_diag_lookup", "sock_diag_dump", "meminfo_drops", "TCP_LISTEN", "INET_DIAG_SKMEMINFO"]

Address = tuple[str, int]

# Numbers from <linux/netlink.h>, <linux/sock_diag.h> and <linux/inet_diag.h>.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20  # the request type: "inet_diag_req_v2 follows"
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH: every socket, not one
INET_DIAG_REQ_BYTECODE = 1  # request attribute: a filter program the kernel runs per socket
INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE = 2, 3  # bytecode ops "local port >=" and "<=": together, "=="
INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE = 4, 5  # the same for the remote port
INET_DIAG_NOCOOKIE = 0xFFFFFFFF  # "any socket with these addresses", not one by its cookie
ALL_STATES = 0xFFFFFFFF  # idiag_states: one bit per TCP state; all of them
TCP_LISTEN = 10  # include/net/tcp_states.h
INET_DIAG_SKMEMINFO = 7  # reply attribute: the socket's memory counters (ask with ext=1 << (7 - 1))
SK_MEMINFO_DROPS = 8  # <linux/sock_diag.h>: index of sk_drops among those u32 counters

NLMSG_HDR = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid (16 bytes)
DIAG_REQ = struct.Struct("=BBBxI")  # struct inet_diag_req_v2 up to its sockid: family, protocol, ext, pad, states
BC_OP = struct.Struct("=BBH")  # struct inet_diag_bc_op: code, bytes to jump if true, if false
NLA_HDR = struct.Struct("=HH")  # struct nlattr: len, type (attributes are padded to 4 bytes)

# struct inet_diag_msg, by byte offset from its start (72 bytes, then attributes):
#    0 family, state, timer, retrans      (4 x u8)
#    4 inet_diag_sockid: sport, dport      (2 x be16)
#    8                   src               (16 bytes; IPv4 uses the first 4)
#   24                   dst               (16 bytes)
#   40                   if, cookie        (u32, 2 x u32)
#   52 expires (ms), rqueue, wqueue, uid, inode   (5 x u32)
#   72 attributes (struct nlattr ...)
DIAG_MSG_HEAD = struct.Struct("=BBBB")
SOCKID_PORTS = struct.Struct("!HH")
SRC_AT, DST_AT, TAIL_AT, ATTRS_AT = 8, 24, 52, 72
DIAG_TAIL = struct.Struct("=IIIII")


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


def meminfo_drops(row: DiagRow) -> int | None:
    """The socket's drop count (sk_drops: ``ss -m`` prints it as ``d<N>``) from a row dumped
    with ``ext=1 << (INET_DIAG_SKMEMINFO - 1)``; None if the reply did not carry it."""
    meminfo = row.attrs.get(INET_DIAG_SKMEMINFO, b"")
    if len(meminfo) < 4 * (SK_MEMINFO_DROPS + 1):
        return None
    return struct.unpack_from("=I", meminfo, 4 * SK_MEMINFO_DROPS)[0]


def _sockid(local: Address, remote: Address) -> bytes:
    """struct inet_diag_sockid for an exact lookup (48 bytes; ports in network order)."""
    src = ipaddress.ip_address(local[0]).packed.ljust(16, b"\0")
    dst = ipaddress.ip_address(remote[0]).packed.ljust(16, b"\0")
    cookie = struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)  # if = 0 (any), cookie unset
    return SOCKID_PORTS.pack(local[1], remote[1]) + src + dst + cookie


def _ask(family: int, protocol: int, sockid: bytes, flags: int, *, ext: int = 0, attr: bytes = b"") -> socket.socket:
    """A netlink socket that has sent one SOCK_DIAG_BY_FAMILY request (the caller closes it)."""
    body = DIAG_REQ.pack(family, protocol, ext, ALL_STATES) + sockid + attr
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        nl.sendto(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, 1, 0) + body, (0, 0))
    except BaseException:
        nl.close()
        raise
    return nl


def _errno(reply: bytes, offset: int) -> int:
    """The errno of the NLMSG_ERROR message at `offset` (the kernel sends it negated)."""
    return -struct.unpack_from("=i", reply, offset + NLMSG_HDR.size)[0]


def _row(reply: bytes, offset: int, family: int) -> DiagRow:
    """The inet_diag_msg in the netlink message at `offset`, with its attributes."""
    (length,) = struct.unpack_from("=I", reply, offset)
    msg = offset + NLMSG_HDR.size
    state, timer, retrans = DIAG_MSG_HEAD.unpack_from(reply, msg)[1:]
    sport, dport = SOCKID_PORTS.unpack_from(reply, msg + 4)
    width = 4 if family == socket.AF_INET else 16
    src = ipaddress.ip_address(reply[msg + SRC_AT:msg + SRC_AT + width])
    dst = ipaddress.ip_address(reply[msg + DST_AT:msg + DST_AT + width])
    tail = DIAG_TAIL.unpack_from(reply, msg + TAIL_AT)
    attrs: dict[int, bytes] = {}
    at = msg + ATTRS_AT
    while at + NLA_HDR.size <= offset + length:
        alen, atype = NLA_HDR.unpack_from(reply, at)
        if alen < NLA_HDR.size:
            break
        attrs[atype & 0x3FFF] = reply[at + NLA_HDR.size:at + alen]  # the top two bits are flags
        at += (alen + 3) & ~3
    return DiagRow(state, timer, retrans, (str(src), sport), (str(dst), dport), *tail, attrs)


def sock_diag_lookup(local: Address, remote: Address) -> DiagRow | None:
    """The one TCP socket with this 4-tuple, or None if there is none.

    The kernel's exact lookup falls back to a listener on the local port; that listener is
    not this 4-tuple, so it is None too. OSError if the kernel refuses (EPROTONOSUPPORT: no
    diag module; a PermissionError where netlink is forbidden).
    """
    family = socket.AF_INET6 if ipaddress.ip_address(local[0]).version == 6 else socket.AF_INET
    with _ask(family, socket.IPPROTO_TCP, _sockid(local, remote), NLM_F_REQUEST) as nl:
        reply = nl.recv(8192)
    _, kind, _, _, _ = NLMSG_HDR.unpack_from(reply)
    if kind == NLMSG_ERROR:
        err = _errno(reply, 0)
        if err == errno.ENOENT:
            return None  # no socket with this 4-tuple
        raise OSError(err, f"sock_diag lookup failed: {os.strerror(err)}")
    row = _row(reply, 0, family)
    return None if row.state == TCP_LISTEN else row


def _port_filter(port: int, *, remote: bool = False) -> bytes:
    """inet_diag bytecode keeping the sockets whose local port is `port` (``ss sport = :N``),
    or with `remote` whose remote port is (``ss dport = :N``).

    Each test is an op and a second op carrying the port; a jump to the end accepts, a jump
    to 4 bytes past it rejects (see inet_diag_bc_run in net/ipv4/inet_diag.c).
    """
    ops = b""
    ge, le = (INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE) if remote else (INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE)
    for offset, code in ((0, ge), (8, le)):
        ops += BC_OP.pack(code, 8, 16 - offset + 4) + BC_OP.pack(0, 0, port)
    return ops


def sock_diag_dump(
    family: int, protocol: int, *, ext: int = 0, local_port: int | None = None, remote_port: int | None = None
) -> Iterator[DiagRow]:
    """Every socket of `protocol` and `family` over NETLINK_SOCK_DIAG, as ``ss`` lists them.

    `ext` asks for extra attributes (bit N-1 for attribute N). `local_port` (or instead
    `remote_port`) makes the kernel keep only that port, so the answer is one pass over its
    table; unlike a read of /proc/net/*, which resumes by position page by page and can skip
    or repeat a socket while others come and go. OSError if the kernel refuses
    (EPROTONOSUPPORT: no diag module).
    """
    attr = b""
    if local_port is not None or remote_port is not None:
        code = _port_filter(local_port if local_port is not None else remote_port, remote=local_port is None)
        attr = NLA_HDR.pack(NLA_HDR.size + len(code), INET_DIAG_REQ_BYTECODE) + code
    with _ask(family, protocol, bytes(48), NLM_F_REQUEST | NLM_F_DUMP, ext=ext, attr=attr) as nl:
        while True:
            reply = nl.recv(65536)
            offset = 0
            while offset + NLMSG_HDR.size <= len(reply):
                length, kind, _, _, _ = NLMSG_HDR.unpack_from(reply, offset)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    err = _errno(reply, offset)
                    raise OSError(err, f"sock_diag dump failed: {os.strerror(err)}")
                yield _row(reply, offset, family)
                offset += (length + 3) & ~3
