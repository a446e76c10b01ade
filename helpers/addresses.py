"""Addresses: the ephemeral port range, this machine's own addresses, the reserved ranges.

Lesson 01 binds sockets and reads back what the kernel chose; this module reads the
settings and tables it compares against, so the lesson can stay about the socket calls.

* The ephemeral port range is a sysctl, ``/proc/sys/net/ipv4/ip_local_port_range``
  ("32768 60999" by default), shared by IPv4 and IPv6 (``man 7 ip``). Ports listed in
  ``ip_local_reserved_ports`` ("8080,9000-9010") are skipped when the kernel picks one.
* The machine's IPv4 addresses are the ``/32 host LOCAL`` leaves of ``/proc/net/fib_trie``
  (the local routing table); its IPv6 addresses are the rows of ``/proc/net/if_inet6``.
  Both are readable without privileges and need no ``ip`` binary.
* ``SPECIAL_RANGES`` is a short, cited table of the special-purpose blocks of the IANA
  registries that RFC 6890 set up (private use, loopback, link-local, documentation,
  multicast, ...). The stdlib ``ipaddress`` module answers "is this private?"; this table
  answers "which block, and which RFC says so?".

Nothing here opens a socket except ``proc_net_row()``, which only reads /proc.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .features import require_linux

__all__ = [
    "SpecialRange",
    "SPECIAL_RANGES",
    "ephemeral_port_range",
    "parse_port_list",
    "reserved_local_ports",
    "parse_fib_trie",
    "local_addresses",
    "special_ranges",
    "addresses_in_prefix",
    "proc_net_row",
    "loopback_host",
    "loopback_address",
]

PROC_SYS_IPV4 = Path("/proc/sys/net/ipv4")
PROC_NET = Path("/proc/net")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- ports


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (low, high), both ends included.

    Read from /proc/sys/net/ipv4/ip_local_port_range; bind() to port 0 and connect()
    on an unbound socket pick from it, for IPv4 and IPv6 alike.
    """
    require_linux("the ephemeral port range (/proc/sys/net/ipv4/ip_local_port_range)")
    low, high = (int(x) for x in (PROC_SYS_IPV4 / "ip_local_port_range").read_text().split())
    return low, high


def parse_port_list(text: str) -> set[int]:
    """Parse the kernel's port list format: '8080,9000-9002' -> {8080, 9000, 9001, 9002}.

    An empty string (the default for ip_local_reserved_ports) is the empty set. Raises
    ValueError naming the bad item for anything else that is not ports 0-65535 or a
    low-high range with low <= high.
    """
    _require_text("parse_port_list", text)
    ports: set[int] = set()
    for item in text.strip().split(","):
        item = item.strip()
        if not item:
            continue
        low_s, sep, high_s = item.partition("-")
        try:
            low = int(low_s)
            high = int(high_s) if sep else low
        except ValueError:
            raise ValueError(f"not a port or port range: {item!r} (expected e.g. '8080' or '9000-9010')") from None
        if not (0 <= low <= high <= 65535):
            raise ValueError(f"bad port range {item!r}: need 0 <= low <= high <= 65535")
        ports.update(range(low, high + 1))
    return ports


def reserved_local_ports() -> set[int]:
    """Ports the kernel never picks as ephemeral ports (net.ipv4.ip_local_reserved_ports)."""
    require_linux("the reserved port list (/proc/sys/net/ipv4/ip_local_reserved_ports)")
    path = PROC_SYS_IPV4 / "ip_local_reserved_ports"
    return parse_port_list(path.read_text()) if path.exists() else set()


# --------------------------------------------------------------------------- local addresses


def parse_fib_trie(text: str) -> list[ipaddress.IPv4Address]:
    """The local IPv4 addresses in a /proc/net/fib_trie dump (its '/32 host LOCAL' leaves).

    The dump prints each leaf as a '|-- 192.0.2.2' line followed by one line per route,
    e.g. '/32 host LOCAL'. The Main and Local tables repeat the leaves; each address is
    returned once, sorted.
    """
    _require_text("parse_fib_trie", text)
    found: set[ipaddress.IPv4Address] = set()
    leaf: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            leaf = stripped[3:].strip()
        elif leaf is not None and stripped.split()[:3] == ["/32", "host", "LOCAL"]:
            try:
                found.add(ipaddress.IPv4Address(leaf))
            except ValueError:
                raise ValueError(f"not a fib_trie dump: leaf {leaf!r} is not an IPv4 address") from None
    return sorted(found)


def _require_text(who: str, text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{who}() parses text (a str read from /proc), got {type(text).__name__} {text!r}")


def _parse_if_inet6(text: str) -> list[tuple[ipaddress.IPv6Address, str]]:
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 6:
            out.append((ipaddress.IPv6Address(bytes.fromhex(cols[0])), cols[5]))
    return out


def local_addresses() -> list[IPAddress]:
    """This machine's own IP addresses (IPv4 then IPv6), read from /proc without privileges."""
    require_linux("the local address list (/proc/net/fib_trie, /proc/net/if_inet6)")
    addrs: list[IPAddress] = []
    trie = PROC_NET / "fib_trie"
    if trie.exists():
        addrs += parse_fib_trie(trie.read_text())
    inet6 = PROC_NET / "if_inet6"
    if inet6.exists():  # absent when IPv6 is disabled
        addrs += sorted({a for a, _ in _parse_if_inet6(inet6.read_text())})
    return addrs


# --------------------------------------------------------------------------- special ranges


@dataclass(frozen=True)
class SpecialRange:
    """A special-purpose address block, with the RFC that defines it."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    name: str
    rfc: str

    def __str__(self) -> str:
        return f"{self.network} {self.name} ({self.rfc})"


def _r(net: str, name: str, rfc: str) -> SpecialRange:
    return SpecialRange(ipaddress.ip_network(net), name, rfc)


#: The blocks a socket programmer meets most, from the IANA special-purpose registries
#: (RFC 6890) plus multicast (RFC 5771 / RFC 4291), which those registries leave out.
SPECIAL_RANGES: tuple[SpecialRange, ...] = (
    _r("0.0.0.0/8", "this network ('this host' when 0.0.0.0)", "RFC 1122 3.2.1.3"),
    _r("10.0.0.0/8", "private use", "RFC 1918"),
    _r("100.64.0.0/10", "shared address space (carrier-grade NAT)", "RFC 6598"),
    _r("127.0.0.0/8", "loopback", "RFC 1122 3.2.1.3"),
    _r("169.254.0.0/16", "link-local", "RFC 3927"),
    _r("172.16.0.0/12", "private use", "RFC 1918"),
    _r("192.0.0.0/24", "IETF protocol assignments", "RFC 6890"),
    _r("192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737"),
    _r("192.168.0.0/16", "private use", "RFC 1918"),
    _r("198.18.0.0/15", "benchmarking", "RFC 2544"),
    _r("198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737"),
    _r("203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737"),
    _r("224.0.0.0/4", "multicast", "RFC 5771"),
    _r("240.0.0.0/4", "reserved", "RFC 1112"),
    _r("255.255.255.255/32", "limited broadcast", "RFC 919"),
    _r("::/128", "unspecified", "RFC 4291"),
    _r("::1/128", "loopback", "RFC 4291"),
    _r("::ffff:0:0/96", "IPv4-mapped", "RFC 4291"),
    _r("2001:db8::/32", "documentation", "RFC 3849"),
    _r("fc00::/7", "unique local", "RFC 4193"),
    _r("fe80::/10", "link-local", "RFC 4291"),
    _r("ff00::/8", "multicast", "RFC 4291"),
)


def _as_address(address: str | IPAddress) -> IPAddress:
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return address
    if not isinstance(address, str):  # ipaddress would take 1 or True as 0.0.0.1, and 4 bytes as packed
        raise TypeError(
            f"address must be a str such as '127.0.0.1' or an ipaddress object, got {type(address).__name__} "
            f"{address!r}"
        )
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"not an IP address: {address!r} (expected e.g. '127.0.0.1' or '::1')") from None


def special_ranges(address: str | IPAddress) -> list[SpecialRange]:
    """The special-purpose blocks of SPECIAL_RANGES that hold `address` (empty: an ordinary
    global address). Raises ValueError for text that is not an IP address."""
    ip = _as_address(address)
    return [r for r in SPECIAL_RANGES if r.network.version == ip.version and ip in r.network]


def addresses_in_prefix(prefix_len: int, version: int = 4) -> int:
    """How many addresses a /prefix_len block holds: 2 ** (32 - N) for IPv4, 2 ** (128 - N) for IPv6.

    Raises ValueError for a version other than 4 or 6, or a prefix outside 0-32 (0-128).
    """
    bits = {4: 32, 6: 128}.get(version) if type(version) is int else None  # not 4.0, not True
    if bits is None:
        raise ValueError(f"version must be 4 or 6, got {version!r}")
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, int):
        raise TypeError(f"prefix_len must be an int (the N of /N), got {type(prefix_len).__name__} {prefix_len!r}")
    if not 0 <= prefix_len <= bits:
        raise ValueError(f"an IPv{version} prefix length is 0-{bits} bits, got /{prefix_len}")
    return 2 ** (bits - prefix_len)


# --------------------------------------------------------------------------- raw kernel view


def proc_net_row(sock: socket.socket) -> str:
    """The raw line of /proc/net/tcp (or tcp6) for a TCP socket, found by its inode.

    The kernel prints addresses there in hex: each 32-bit word of the IP in host byte
    order and the port as a plain number, which makes it a live byte-order example.
    Raises LookupError if the socket has no row (closed, or not TCP), TypeError for
    something that is not a socket.
    """
    require_linux("/proc/net/tcp")
    if not isinstance(sock, socket.socket):
        raise TypeError(f"proc_net_row() needs a TCP socket, got {type(sock).__name__} {sock!r}")
    if sock.fileno() == -1:
        raise LookupError("no row in /proc/net/tcp for a closed socket: a closed socket has no inode any more")
    inode = os.fstat(sock.fileno()).st_ino
    name = "tcp6" if sock.family == socket.AF_INET6 else "tcp"
    for line in (PROC_NET / name).read_text().splitlines()[1:]:
        cols = line.split()
        if len(cols) > 9 and int(cols[9]) == inode:
            return line.strip()
    raise LookupError(f"no row in /proc/net/{name} for socket inode {inode}; is it an open TCP socket?")


# --------------------------------------------------------------------------- argument checks


def loopback_host(name: str, host: object) -> socket.AddressFamily:
    """Check that `host` (the argument called `name`) is a loopback IP literal; return its family.

    The course's servers, relays and load generators talk to this machine only: 127.x.y.z
    or ::1. Raises TypeError for a non-str, ValueError for a name ('localhost'), a malformed
    address or one outside loopback (such as '0.0.0.0', which listens on every interface).
    """
    if not isinstance(host, str):
        raise TypeError(f"{name} must be an IP address str such as '127.0.0.1' or '::1', got "
                        f"{type(host).__name__} {host!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{name} must be an IP address such as '127.0.0.1' or '::1', got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"{name} must be a loopback address (127.x.y.z or ::1): the course talks to this "
                         f"machine only, got {host!r}")
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def loopback_address(name: str, address: object) -> tuple[str, int]:
    """Check that `address` is a (host, port) pair on loopback with a port in 1-65535; return it.

    A list [host, port] is accepted too (JSON turns tuples into lists). Raises TypeError
    for anything else, ValueError for a host outside loopback or a port out of range.
    """
    if not (isinstance(address, (tuple, list)) and len(address) in (2, 4)):
        raise TypeError(f"{name} must be a (host, port) tuple such as ('127.0.0.1', 8080), got {address!r}")
    host, port = address[0], address[1]
    loopback_host(f"{name} host", host)
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{name} port must be an int in 1-65535, got {type(port).__name__} {port!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"{name} port must be in 1-65535, got {port}")
    return host, port
