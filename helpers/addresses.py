"""Addresses: the ephemeral port range, this machine's own addresses, the reserved ranges.

Lesson 01 binds sockets and reads back what the kernel chose; this module reads the
settings and tables it compares against, so the lesson can stay about the socket calls.

* The ephemeral port range is a sysctl, ``/proc/sys/net/ipv4/ip_local_port_range``
  ("32768 60999" by default), shared by IPv4 and IPv6 (``man 7 ip``); its one reader,
  ``ephemeral_port_range()``, lives in ``helpers.core.proc`` and is re-exported here. Ports listed in
  ``ip_local_reserved_ports`` ("8080,9000-9010") are skipped when the kernel picks one.
* The machine's IPv4 addresses are the ``/32 host LOCAL`` leaves of ``/proc/net/fib_trie``
  (the local routing table); its IPv6 addresses are the rows of ``/proc/net/if_inet6``.
  Both are readable without privileges and need no ``ip`` binary.
* Each interface's addresses with their prefix lengths come from the kernel over rtnetlink
  (an RTM_GETADDR dump, what ``ip addr`` asks, ``man 7 rtnetlink``); an IPv4 interface's
  netmask from the SIOCGIFNETMASK ioctl (what ``ifconfig`` asks, ``man 7 netdevice``). The
  kernel stores the prefix length and derives the netmask from it.
* ``SPECIAL_RANGES`` is a short, cited table of the special-purpose blocks of the IANA
  registries that RFC 6890 set up (private use, loopback, link-local, documentation,
  multicast, ...). The stdlib ``ipaddress`` module answers "is this private?"; this table
  answers "which block, and which RFC says so?". ``scope()`` says how far an address
  reaches (host, link-local, ..., global), which for multicast the address itself encodes.

* ``ipv6_loopback_problem()`` is the probe for IPv6 on loopback (some containers have none).
  Where it says no, ``run_or_replay()`` gives the lesson's IPv6 rows from a run recorded
  earlier by the same code (``save_recording()``), labelled with where, when and the kernel.

Nothing here sends a packet: the netlink and ioctl requests only ask the kernel.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import checks, recordings
from .core.features import require_linux, switched_off
from .core.proc import PROC_NET, ephemeral_port_range, sysctl
from .core.sockdiag import NLA_HDR, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDR

__all__ = [
    "SpecialRange",
    "SPECIAL_RANGES",
    "ephemeral_port_range",
    "parse_port_list",
    "reserved_local_ports",
    "parse_fib_trie",
    "parse_if_inet6",
    "local_addresses",
    "interface_addresses",
    "interface_netmask",
    "ipv6_loopback_problem",
    "Ipv6Run",
    "run_or_replay",
    "save_recording",
    "special_ranges",
    "scope",
    "sample_block",
    "addresses_in_prefix",
    "proc_net_row",
    "loopback_host",
    "loopback_address",
]


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- ports


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
    try:
        return parse_port_list(sysctl("net.ipv4.ip_local_reserved_ports"))
    except FileNotFoundError:
        return set()


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


def parse_if_inet6(text: str) -> list[tuple[ipaddress.IPv6Address, str]]:
    """The (address, interface name) pairs of a /proc/net/if_inet6 text, in file order.

    Each line is the address as 32 hex digits, then interface index, prefix length, scope,
    flags and the interface name (``man 7 netdevice`` has the flags). TypeError for a non-str.
    """
    _require_text("parse_if_inet6", text)
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
        addrs += sorted({a for a, _ in parse_if_inet6(inet6.read_text())})
    return addrs


RTM_NEWADDR, RTM_GETADDR = 20, 22  # <linux/rtnetlink.h>
IFA_ADDRESS, IFA_LOCAL = 1, 2  # <linux/if_addr.h>: IFA_LOCAL is the interface's own IPv4 address
IFADDRMSG = struct.Struct("=BBBBI")  # struct ifaddrmsg: family, prefixlen, flags, scope, interface index
SIOCGIFNETMASK = 0x891B  # <linux/sockios.h>
_IFREQ_NAME = struct.Struct("16s")  # struct ifreq starts with the interface name (IFNAMSIZ = 16)


def _rtm_addresses(reply: bytes) -> tuple[list[tuple[int, int, bytes]], bool]:
    """(prefix length, interface index, address) of each RTM_NEWADDR in one netlink reply,
    and whether the dump ended (NLMSG_DONE)."""
    found, offset = [], 0
    while offset + NLMSG_HDR.size <= len(reply):
        length, kind, _, _, _ = NLMSG_HDR.unpack_from(reply, offset)
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            err = -struct.unpack_from("=i", reply, offset + NLMSG_HDR.size)[0]
            raise OSError(err, f"RTM_GETADDR failed: {os.strerror(err)}")
        if kind == RTM_NEWADDR:
            _, prefixlen, _, _, index = IFADDRMSG.unpack_from(reply, offset + NLMSG_HDR.size)
            attrs, at = {}, offset + NLMSG_HDR.size + IFADDRMSG.size
            while at + NLA_HDR.size <= offset + length:
                alen, atype = NLA_HDR.unpack_from(reply, at)
                if alen < NLA_HDR.size:
                    break
                attrs[atype] = reply[at + NLA_HDR.size:at + alen]
                at += (alen + 3) & ~3
            addr = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))  # IFA_ADDRESS is the peer on a point-to-point link
            if addr is not None:
                found.append((prefixlen, index, addr))
        offset += (length + 3) & ~3
    return found, False


def interface_addresses() -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """Every address of every interface, with its prefix length, as the kernel stores it:
    ``[("lo", IPv4Interface('127.0.0.1/8')), ...]`` (what ``ip -br addr`` prints).

    Asked over rtnetlink (an RTM_GETADDR dump, ``man 7 rtnetlink``), without privileges.
    OSError if the kernel refuses.
    """
    require_linux("interface addresses (rtnetlink)")
    request = NLMSG_HDR.pack(NLMSG_HDR.size + IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    request += IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    rows: list[tuple[int, int, bytes]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.settimeout(5)
        nl.sendto(request, (0, 0))
        done = False
        while not done:
            found, done = _rtm_addresses(nl.recv(65536))
            rows += found
    out = []
    for prefixlen, index, addr in rows:
        try:
            name = socket.if_indextoname(index)
        except OSError:  # the interface went away meanwhile
            continue
        ip = ipaddress.ip_address(addr)  # 4 bytes: IPv4, 16: IPv6
        out.append((name, ipaddress.ip_interface(f"{ip}/{prefixlen}")))
    return out


def interface_netmask(name: str) -> str | None:
    """The IPv4 netmask of interface `name` ("255.0.0.0" for lo) from the SIOCGIFNETMASK ioctl,
    as ``ifconfig`` shows it; None if the interface has no IPv4 address.

    TypeError for a non-str, ValueError for a name that cannot be an interface name
    (empty, 16 bytes or more, or with a NUL), OSError (ENODEV) for no such interface.
    """
    if not isinstance(name, str):
        raise TypeError(f"interface name must be a str such as 'lo', got {type(name).__name__} {name!r}")
    if not name or len(name.encode()) >= 16 or "\0" in name:
        raise ValueError(f"an interface name is 1-15 bytes without NUL (IFNAMSIZ), got {name!r}")
    require_linux("interface netmasks (SIOCGIFNETMASK)")
    ifreq = _IFREQ_NAME.pack(name.encode()) + bytes(24)  # the name, then a struct sockaddr to fill
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            answer = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, ifreq)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return None  # no IPv4 address on it
            raise
    return socket.inet_ntoa(answer[20:24])  # sockaddr_in at byte 16: family 2, port 2, then the address


def ipv6_loopback_problem() -> str | None:
    """None if a socket can bind ::1 here; otherwise why not ("EAFNOSUPPORT: ...").

    Some containers run without IPv6 (EAFNOSUPPORT) or without ::1 on lo (EADDRNOTAVAIL).
    A test may switch this probe ("ipv6") off: helpers.core.features.
    """
    why = switched_off("ipv6")
    if why:
        return f"IPv6 is {why}"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
    return None


@dataclass(frozen=True)
class Ipv6Run:
    """What an IPv6 experiment returned: live now, or recorded earlier on another machine.

    ``source`` says which: "live, on this machine's ::1" or the recording's label (machine,
    time, kernel) and why no live run was possible. Never assert on a run whose ``live`` is False.
    """

    result: Any
    live: bool
    source: str


def _to_json(value: Any) -> Any:
    """`value` as JSON: tuples and lists as arrays, bytes as {"bytes_hex": ...}; TypeError for
    anything else that JSON cannot hold."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"bytes_hex": bytes(value).hex()}
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v) for k, v in value.items()}
    raise TypeError(f"a recorded result holds str, numbers, bytes, tuples, lists and dicts with str keys, "
                    f"got {type(value).__name__} {value!r:.80}")


def _from_json(value: Any) -> Any:
    """The inverse of _to_json(): every array comes back as a tuple (socket addresses are tuples)."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"bytes_hex"}:
            return bytes.fromhex(value["bytes_hex"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def run_or_replay(fn: Callable[[], Any], recording: str | Path, part: str) -> Ipv6Run:
    """``fn()`` (an experiment on ::1) where ``ipv6_loopback_problem()`` says IPv6 works here;
    otherwise the result of the same experiment recorded as `part` in `recording` (written by
    ``save_recording()``), labelled as such.

    Raises what `fn` raises; TypeError if its result could not be recorded (see _to_json);
    FileNotFoundError (saying why no live run was possible) without IPv6 and without the
    recording; ValueError for a file that is not such a recording or lacks `part`.
    """
    if not callable(fn):
        raise TypeError(f"fn must be the experiment to run (a callable), got {fn!r}")
    if not isinstance(recording, (str, Path)) or not str(recording):
        raise TypeError(f"recording must be a file name (str or pathlib.Path), got {recording!r}")
    if not isinstance(part, str) or not part:
        raise TypeError(f"part must name the experiment in the recording, a non-empty str, got {part!r}")
    problem = ipv6_loopback_problem()
    if problem is None:
        result = fn()
        _to_json(result)  # JSON-ready, so save_recording() can store it
        return Ipv6Run(result, True, "live, on this machine's ::1")

    def replayed(label: str, data: dict[str, Any]) -> Ipv6Run:
        return Ipv6Run(_from_json(data["parts"][part]), False,
                       f"RECORDED earlier: {label} (no IPv6 loopback here: {problem})")

    try:  # also from an edition's folder (notebooks/zh-CN/)
        return recordings.read(recording, "addresses.save_recording()", replayed, part=part)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no IPv6 here ({problem}) and no recording: {exc}") from None


def save_recording(runs: Mapping[str, Ipv6Run], path: str | Path, where: str) -> None:
    """Store live runs of run_or_replay(), {part: run}, as one JSON recording labelled with
    `where` (the machine), the time and the kernel.

    TypeError for anything but a dict of Ipv6Run or an empty `where`; ValueError for a run
    that is itself a recording. Nothing is written unless every run can be stored.
    """
    recordings.check_where(where)
    if not isinstance(runs, Mapping) or not runs:
        raise TypeError(f"runs must be a non-empty dict {{part: Ipv6Run}}, got {runs!r:.80}")
    parts = {}
    for part, run in runs.items():
        if not isinstance(part, str) or not isinstance(run, Ipv6Run):
            raise TypeError(f"runs must map a part's name to the Ipv6Run run_or_replay() returned, got "
                            f"{part!r}: {type(run).__name__}")
        if not run.live:
            raise ValueError(f"the run {part!r} is itself a recording; record a live one")
        parts[part] = _to_json(run.result)
    recordings.write(path, {"recorded": recordings.label(where, by="helpers.addresses"), "parts": parts})


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


_MULTICAST_SCOPES = {1: "interface-local", 2: "link-local", 3: "realm-local", 4: "admin-local", 5: "site-local",
                     8: "organization-local", 14: "global"}  # the scop field of RFC 4291 2.7 (RFC 7346)
_IPV4_LINK_MULTICAST = ipaddress.ip_network("224.0.0.0/24")  # RFC 5771 4: Local Network Control Block
_IPV4_ADMIN_MULTICAST = ipaddress.ip_network("239.0.0.0/8")  # RFC 2365: administratively scoped


def scope(address: str | IPAddress) -> str:
    """How far `address` reaches: "host", "link-local", "site-local", ..., or "global".

    Unicast: loopback is "host"; 169.254/16 and fe80::/10 are "link-local"; the rest is
    "global" (private blocks too: their limit is policy, not scope). Multicast carries its
    scope: IPv6 in the address's 4-bit scop field (ff02::1 is link-local, RFC 4291 2.7);
    IPv4 by block: 224.0.0.0/24 is link-local (RFC 5771 4, never forwarded by a router),
    239/8 "organization-local" (RFC 2365). The unspecified address (0.0.0.0, ::) gives "none".
    ValueError for text that is not an IP address.
    """
    ip = _as_address(address)
    if ip.is_unspecified:
        return "none"
    if ip.is_multicast:
        if ip.version == 6:
            return _MULTICAST_SCOPES.get(ip.packed[1] & 0x0F, f"scope {ip.packed[1] & 0x0F} (unassigned)")
        if ip in _IPV4_LINK_MULTICAST:
            return "link-local"
        return "organization-local" if ip in _IPV4_ADMIN_MULTICAST else "global"
    if ip.is_loopback:
        return "host"
    return "link-local" if ip.is_link_local else "global"


def sample_block(network: str | ipaddress.IPv4Network | ipaddress.IPv6Network, count: int) -> list[IPAddress]:
    """Up to `count` addresses spread evenly over `network`, its first and last included
    (all of them if it has no more than `count`).

    TypeError for a count that is not an int, ValueError for a count below 2 or above
    4096, or a network that ipaddress cannot read.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int, got {type(count).__name__} {count!r}")
    if not 2 <= count <= 4096:
        raise ValueError(f"count must be 2-4096 addresses, got {count}")
    if isinstance(network, str):
        try:
            network = ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"not a network such as '127.0.0.0/8': {network!r}") from None
    elif not isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        raise TypeError(f"network must be a str such as '127.0.0.0/8' or an ipaddress network, got {network!r}")
    size = network.num_addresses
    if size <= count:
        return list(network)
    first, kind = int(network.network_address), type(network.network_address)
    return [kind(first + (size - 1) * i // (count - 1)) for i in range(count)]


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
    checks.port(f"{name} port", port, low=1)
    return host, port
