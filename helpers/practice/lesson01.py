"""Checks for the exercises of lesson 01 (sockets and addresses).

1. ``pack_sockaddr_in(host, port)``: the 16 bytes of a struct sockaddr_in, packed by hand.
   The kernel judges them, not Python: the check bind()s a socket with those very bytes
   (through the C library, ``helpers.sockaddr.raw_bind``), then compares the address the
   kernel bound, and the bytes its getsockname() writes back, with what was asked.
2. ``open_listener(host)``: a TCP listener on an IPv4 or IPv6 address, on a port the kernel
   picks. The kernel must have it in LISTEN (TCP_INFO) on an ephemeral port, and a client
   must get through to it.
3. ``netmask_to_prefix(mask)`` and ``prefix_to_netmask(n)``: each interface's netmask (the
   SIOCGIFNETMASK ioctl) against the prefix length the kernel stores for it (rtnetlink),
   then every /0 to /32 both ways, and a mask whose one-bits are not contiguous must be
   refused with ValueError.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys

from ..addresses import (
    ephemeral_port_range,
    interface_addresses,
    interface_netmask,
    ipv6_loopback_problem,
    reserved_local_ports,
)
from ..observe import TcpState, tcp_info
from ..sockaddr import raw_bind, raw_getsockname
from .core import Trial, exercise

# -- 1. pack_sockaddr_in -------------------------------------------------------------------

SOCKADDR_HOST = "127.3.2.1"  # loopback, with four different bytes: a reversed address shows
SOCKADDR_HINT = (
    "struct sockaddr_in is 16 bytes: sin_family (2 bytes, in this machine's own byte order: "
    "struct.pack('=H', socket.AF_INET)), sin_port (2 bytes, network byte order: "
    "struct.pack('!H', port)), sin_addr (4 bytes: socket.inet_aton(host)), then 8 zero bytes."
)


def _port_with_two_bytes(t: Trial) -> int:
    """A port the kernel picked for 127.0.0.1 whose two bytes differ, so a port packed in the
    wrong byte order lands elsewhere; held by the trial's socket while the check runs."""
    for _ in range(32):
        holder = t.socket()
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        if port >> 8 != port & 0xFF:
            return port
    raise RuntimeError("the kernel gave 32 ports whose two bytes are equal")  # 1 in 256 each


def _refusal(raw: bytes, exc: OSError) -> tuple[str, str]:
    """What the kernel read in `raw` and why it refused bind(): (observed, hint)."""
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    said = f"The kernel refused bind() with your {len(raw)} bytes ({raw.hex(' ')}): {name}."
    if exc.errno == errno.EINVAL and len(raw) < 16:
        return said + " An IPv4 address is a whole struct sockaddr_in, 16 bytes.", SOCKADDR_HINT
    family = int.from_bytes(raw[:2], sys.byteorder)
    if exc.errno == errno.EAFNOSUPPORT:
        return (said + f" It read sa_family = {family} from the first two bytes, not AF_INET "
                f"({int(socket.AF_INET)})."), ("sa_family is in this machine's own byte order "
                                              f"({sys.byteorder}-endian here): struct.pack('=H', socket.AF_INET).")
    port = int.from_bytes(raw[2:4], "big")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (said + f" It read the address {socket.inet_ntoa(raw[4:8])}, which is not one of this machine's."), (
            "socket.inet_aton(host) gives the 4 address bytes already in network order: put them at bytes 4-7 as "
            "they are.")
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        return said + f" It read port {port} from bytes {raw[2:4].hex(' ')}.", (
            "The port goes in network byte order (big-endian): struct.pack('!H', port).")
    return said, SOCKADDR_HINT


@exercise("01", 1, "pack a sockaddr_in by hand", hint=SOCKADDR_HINT)
def check_pack_sockaddr_in(t: Trial, pack_sockaddr_in: object) -> str:
    port = _port_with_two_bytes(t)
    raw = t.call(pack_sockaddr_in, SOCKADDR_HOST, port, name="pack_sockaddr_in()", timeout_s=1.0).value
    t.require(isinstance(raw, (bytes, bytearray)), f"pack_sockaddr_in() returned {type(raw).__name__} "
              f"{raw!r:.60}, not bytes.", SOCKADDR_HINT)
    raw = bytes(raw)
    t.require(len(raw) <= 128, f"pack_sockaddr_in() returned {len(raw)} bytes; no socket address is that long.",
              SOCKADDR_HINT)
    sock = t.socket()
    try:
        raw_bind(sock, raw)  # the kernel reads the bytes itself
    except OSError as exc:
        t.fail(*_refusal(raw, exc))
    bound = sock.getsockname()
    t.require(bound == (SOCKADDR_HOST, port), f"The kernel took your bytes and bound {bound[0]} port {bound[1]}, not "
              f"{SOCKADDR_HOST} port {port}: it read port bytes {raw[2:4].hex(' ')} big-endian.",
              "The port goes in network byte order (big-endian): struct.pack('!H', port).")
    kernel = raw_getsockname(sock)
    t.require(kernel == raw, f"The kernel bound {SOCKADDR_HOST} port {port}, and getsockname() wrote back "
              f"{len(kernel)} bytes, {kernel.hex(' ')}; yours were {len(raw)} bytes, {raw.hex(' ')}.",
              "A struct sockaddr_in is exactly 16 bytes and its last 8, sin_zero, are zeros.")
    return (f"The kernel took your 16 bytes ({raw.hex(' ')}) and bound {SOCKADDR_HOST} port {port}; its "
            f"getsockname() wrote back the very same bytes: family {int(socket.AF_INET)} in this machine's "
            f"{sys.byteorder}-endian order, port {port} = 0x{port:04x} big-endian, the address, 8 zeros.")


# -- 2. open_listener ----------------------------------------------------------------------

LISTENER_HINT = (
    "Pick the family from the address (AF_INET6 if it contains ':', else AF_INET), then "
    "socket(family, SOCK_STREAM), bind((host, 0)) so the kernel picks the port, listen(), "
    "and return the socket."
)


def _one_listener(t: Trial, open_listener: object, host: str, ports: tuple[int, int, set[int]]) -> str:
    """Check open_listener(host); return 'host port N' for the summary."""
    low, high, reserved = ports
    call = f"open_listener({host!r})"
    sock = t.call(open_listener, host, name=call, timeout_s=2.0, error_hints={
        OSError: "That error came from the kernel or the resolver: does the socket's family match the address "
                 "(AF_INET6 for '::1')?"}).value
    t.require(isinstance(sock, socket.socket), f"{call} returned {type(sock).__name__} {sock!r:.60}, not a socket.",
              LISTENER_HINT)
    t.own(sock)
    want = socket.AF_INET6 if ":" in host else socket.AF_INET
    t.require(sock.family == want and sock.type == socket.SOCK_STREAM, f"{call} returned a "
              f"{sock.family.name}/{sock.type.name} socket; {host} needs {want.name}/SOCK_STREAM.", LISTENER_HINT)
    name = sock.getsockname()
    t.require(name[0] == host and name[1] != 0, f"{call} returned a socket bound to {name[0]!r} port {name[1]}, "
              f"not to {host!r} on a port.", "bind((host, 0)): the address you were given, port 0.")
    t.require(low <= name[1] <= high and name[1] not in reserved, f"{call} listens on port {name[1]}, outside the "
              f"ephemeral range {low}-{high}: a port you chose, not one the kernel picked.",
              "Ask for port 0 and let the kernel choose: a fixed port may be taken, by you or someone else.")
    state = tcp_info(sock).state  # one socket's own row, without reading the whole socket table
    t.require(state is TcpState.LISTEN, f"The kernel has the socket at {host} port {name[1]} in {state.name}, not "
              "LISTEN: it is bound, but takes no connections.", "Call listen() after bind().")
    client = t.connect(name[:2], timeout_s=2.0)
    sock.settimeout(2.0)
    try:
        conn, peer = sock.accept()
    except OSError as exc:
        t.fail(f"A client connected to {host} port {name[1]}, but accept() on your socket failed: {exc!r}.",
               LISTENER_HINT)
    t.own(conn)
    t.require(peer[:2] == client.getsockname()[:2], f"accept() returned a connection from {peer}, not from the "
              f"check's client {client.getsockname()}.", LISTENER_HINT)
    return f"{host} port {name[1]}"


@exercise("01", 2, "a listener on a port the kernel picks", hint=LISTENER_HINT)
def check_open_listener(t: Trial, open_listener: object) -> str:
    low, high = ephemeral_port_range()
    ports = (low, high, reserved_local_ports())
    no_ipv6 = ipv6_loopback_problem()
    hosts = ["127.0.0.1"] if no_ipv6 else ["127.0.0.1", "::1"]
    seen = [_one_listener(t, open_listener, host, ports) for host in hosts]
    note = f" (no IPv6 loopback here, {no_ipv6}, so only IPv4 was tried)" if no_ipv6 else ""
    return (f"Your listeners took {' and '.join(seen)}: ports the kernel picked from its range {low}-{high}. "
            f"The kernel had each in LISTEN, and a client got through to each{note}.")


# -- 3. netmask <-> /N ---------------------------------------------------------------------

NETMASK_HINT = (
    "A /N netmask is N one-bits, then 32 - N zero-bits, written like an IPv4 address. "
    "struct.unpack('!I', socket.inet_aton(mask))[0] reads it as a number (network byte order); "
    "it must equal (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for its count of one-bits n, or it is "
    "no netmask (raise ValueError). Back: socket.inet_ntoa(struct.pack('!I', that number))."
)


def _netmask(n: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@exercise("01", 3, "netmask <-> /N", hint=NETMASK_HINT)
def check_netmask(t: Trial, netmask_to_prefix: object, prefix_to_netmask: object) -> str:
    seen = []
    for name, iface in interface_addresses():  # the prefix lengths the kernel stores (rtnetlink)
        if iface.version != 4:
            continue
        try:
            mask = interface_netmask(name)  # the netmask the kernel derives from it (SIOCGIFNETMASK)
        except OSError:  # the interface went away meanwhile
            continue
        if mask is None:
            continue
        n = iface.network.prefixlen
        got = t.call(netmask_to_prefix, mask, name=f"netmask_to_prefix({mask!r})", timeout_s=1.0).value
        t.require(got == n and _is_int(got), f"The kernel says {name} has {iface.ip}/{n} (rtnetlink) and netmask "
                  f"{mask} (SIOCGIFNETMASK), but netmask_to_prefix({mask!r}) returned {got!r:.40}.", NETMASK_HINT)
        back = t.call(prefix_to_netmask, n, name=f"prefix_to_netmask({n})", timeout_s=1.0).value
        t.require(back == mask, f"The kernel says {name}'s /{n} is the netmask {mask}, but prefix_to_netmask({n}) "
                  f"returned {back!r:.40}.", NETMASK_HINT)
        seen.append(f"{name} {iface.ip}/{n} = {mask}")
    for n in range(33):
        mask = _netmask(n)
        back = t.call(prefix_to_netmask, n, name=f"prefix_to_netmask({n})", timeout_s=1.0).value
        t.require(back == mask, f"prefix_to_netmask({n}) returned {back!r:.40}; a /{n} netmask is {mask}.",
                  NETMASK_HINT)
        got = t.call(netmask_to_prefix, mask, name=f"netmask_to_prefix({mask!r})", timeout_s=1.0).value
        t.require(got == n and _is_int(got), f"netmask_to_prefix({mask!r}) returned {got!r:.40}; {mask} is /{n}.",
                  NETMASK_HINT)
    odd = t.call(netmask_to_prefix, "255.0.255.0", name="netmask_to_prefix('255.0.255.0')", timeout_s=1.0,
                 expect=(ValueError,))
    t.require(isinstance(odd.error, ValueError), f"netmask_to_prefix('255.0.255.0') returned {odd.value!r:.40}; "
              "its one-bits are not contiguous, so it is no /N at all and should raise ValueError.", NETMASK_HINT)
    kernel = "; ".join(seen) if seen else "no interface with an IPv4 address was found"
    return (f"Your conversions agree with the kernel ({kernel}), go both ways for every /0 to /32, and refuse "
            f"255.0.255.0 ({odd.error}).")
