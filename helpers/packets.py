"""Packet parsing without I/O: Ethernet, IPv4, IPv6, TCP and ICMP headers from bytes.

Theory of operation. A capture tool (tcpdump, or ``capture_root`` in this course) hands
over whole frames as bytes; everything after that is pure parsing, so it lives here, apart
from any socket, and is tested on hand-built bytes. The layouts are the RFCs':

* Ethernet II: destination MAC, source MAC, EtherType (0x0800 IPv4, 0x86DD IPv6). On
  Linux's loopback device the MACs are zeros, but the header is there (ARPHRD_LOOPBACK).
* IPv4 (RFC 791): IHL (header length in 32-bit words), total length, protocol, TTL, the
  fragment field, addresses. Bytes beyond ``total length`` are link padding, not payload.
* IPv6 (RFC 8200): a fixed 40-byte header; we follow the Next Header only when it is the
  upper layer directly (no extension headers), which is what loopback traffic looks like.
* TCP (RFC 9293): ports, sequence and acknowledgment numbers, data offset, flags, window,
  then options (MSS, window scale RFC 7323, SACK-permitted RFC 2018, timestamps RFC 7323).
* ICMP echo (RFC 792): type 8 request, type 0 reply, code 0, the Internet checksum
  (RFC 1071) over the whole message, an identifier and a sequence number.

Every parser raises ValueError naming the header and the lengths when the bytes are too
short or inconsistent; nothing else escapes, whatever the bytes (the tests fuzz this).
Something that is not bytes at all (a str, None) is a TypeError naming the argument.
``relative_numbers()`` turns raw 32-bit sequence numbers into the small relative ones a
capture tool shows (Wireshark's "relative sequence number"), per direction.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ETH_P_IP",
    "ETH_P_IPV6",
    "IPPROTO_TCP",
    "IPPROTO_ICMP",
    "TcpFlags",
    "Ethernet",
    "IPv4Header",
    "IPv6Header",
    "TcpSegment",
    "IcmpMessage",
    "Frame",
    "RelativeSegment",
    "parse_ethernet",
    "parse_ipv4",
    "parse_ipv6",
    "parse_tcp",
    "parse_icmp",
    "parse_frame",
    "internet_checksum",
    "build_icmp_echo",
    "relative_numbers",
]

ETH_P_IP = 0x0800  # <linux/if_ether.h>
ETH_P_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_ICMP = 1
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TcpFlags(enum.IntFlag):
    """The TCP header's flag bits (RFC 9293 section 3.1, RFC 3168 for ECE and CWR)."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80

    def short(self) -> str:
        """The set flags as tcpdump's letters in a fixed order, e.g. 'SYN,ACK' or 'FIN,ACK'."""
        order = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
        names = [n for n in order if self & TcpFlags[n]]
        return ",".join(names) if names else "none"


def _check_bytes(name: str, data: object) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes (a captured frame or packet), got {type(data).__name__}: {data!r:.60}")


def _need(what: str, data: bytes, size: int) -> None:
    _check_bytes("data", data)
    if len(data) < size:
        raise ValueError(f"{what} needs at least {size} bytes, got {len(data)}")


# --------------------------------------------------------------------------- link layer


@dataclass(frozen=True)
class Ethernet:
    """An Ethernet II header: MAC addresses as 'aa:bb:..' text and the EtherType."""

    dst: str
    src: str
    ethertype: int

    LENGTH = 14


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_ethernet(data: bytes) -> tuple[Ethernet, bytes]:
    """Split a frame into its Ethernet header and the rest (the network-layer packet)."""
    _need("an Ethernet header", data, Ethernet.LENGTH)
    dst, src, ethertype = struct.unpack_from("!6s6sH", data)
    return Ethernet(_mac(dst), _mac(src), ethertype), bytes(data[Ethernet.LENGTH :])


# --------------------------------------------------------------------------- network layer


@dataclass(frozen=True)
class IPv4Header:
    """The fields of an IPv4 header a socket programmer reads (RFC 791)."""

    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    protocol: int
    ttl: int
    header_length: int  # bytes (IHL * 4)
    total_length: int  # bytes, header included
    identification: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int  # bytes

    version = 4


def parse_ipv4(data: bytes) -> tuple[IPv4Header, bytes]:
    """Parse an IPv4 header; return it and its payload (cut at total_length: link padding dropped)."""
    _need("an IPv4 header", data, 20)
    ver_ihl, _tos, total, ident, frag, ttl, proto, _csum, src, dst = struct.unpack_from("!BBHHHBBH4s4s", data)
    if ver_ihl >> 4 != 4:
        raise ValueError(f"not an IPv4 header: version field is {ver_ihl >> 4}")
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < 20:
        raise ValueError(f"IPv4 header length field says {ihl} bytes; the minimum is 20")
    if not ihl <= total <= len(data):
        raise ValueError(f"IPv4 total length {total} does not fit: header {ihl} bytes, {len(data)} bytes captured")
    header = IPv4Header(
        src=ipaddress.IPv4Address(src),
        dst=ipaddress.IPv4Address(dst),
        protocol=proto,
        ttl=ttl,
        header_length=ihl,
        total_length=total,
        identification=ident,
        dont_fragment=bool(frag & 0x4000),
        more_fragments=bool(frag & 0x2000),
        fragment_offset=(frag & 0x1FFF) * 8,
    )
    return header, bytes(data[ihl:total])


@dataclass(frozen=True)
class IPv6Header:
    """The fixed IPv6 header (RFC 8200); `protocol` is the Next Header field."""

    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    protocol: int
    hop_limit: int
    payload_length: int  # bytes after the 40-byte header

    version = 6
    header_length = 40


def parse_ipv6(data: bytes) -> tuple[IPv6Header, bytes]:
    """Parse the fixed IPv6 header; return it and its payload (cut at payload_length)."""
    _need("an IPv6 header", data, 40)
    first, plen, nxt, hops, src, dst = struct.unpack_from("!IHBB16s16s", data)
    if first >> 28 != 6:
        raise ValueError(f"not an IPv6 header: version field is {first >> 28}")
    if 40 + plen > len(data):
        raise ValueError(f"IPv6 payload length {plen} does not fit in the {len(data) - 40} bytes captured")
    header = IPv6Header(ipaddress.IPv6Address(src), ipaddress.IPv6Address(dst), nxt, hops, plen)
    return header, bytes(data[40 : 40 + plen])


# --------------------------------------------------------------------------- TCP


@dataclass(frozen=True)
class TcpSegment:
    """A TCP header and its payload. Options appear only when the segment carries them
    (MSS and window scale only on SYNs, per RFC 9293 and RFC 7323)."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int  # the raw 16-bit field; scale it by the peer's window-scale shift after the SYN
    header_length: int  # bytes (data offset * 4)
    payload: bytes
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None  # (TSval, TSecr)

    @property
    def length(self) -> int:
        """Payload bytes (what tcpdump prints as 'length')."""
        return len(self.payload)


def _parse_tcp_options(raw: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation (padding)
            i += 1
            continue
        if i + 1 >= len(raw):
            raise ValueError(f"TCP option kind {kind} at offset {i} has no length byte")
        size = raw[i + 1]
        if size < 2 or i + size > len(raw):
            raise ValueError(f"TCP option kind {kind} at offset {i} has a bad length {size}")
        body = raw[i + 2 : i + size]
        if kind == 2 and size == 4:
            (out["mss"],) = struct.unpack("!H", body)
        elif kind == 3 and size == 3:
            out["window_scale"] = body[0]
        elif kind == 4 and size == 2:
            out["sack_permitted"] = True
        elif kind == 8 and size == 10:
            out["timestamps"] = struct.unpack("!II", body)
        i += size  # unknown options (SACK blocks, MD5, ...) are skipped by their length
    return out


def parse_tcp(data: bytes) -> TcpSegment:
    """Parse a TCP header with its options; the rest of `data` is the payload."""
    _need("a TCP header", data, 20)
    sport, dport, seq, ack, off_flags, window = struct.unpack_from("!HHIIHH", data)
    hlen = (off_flags >> 12) * 4
    if hlen < 20:
        raise ValueError(f"TCP data offset says a {hlen}-byte header; the minimum is 20")
    if hlen > len(data):
        raise ValueError(f"TCP header says {hlen} bytes, only {len(data)} captured")
    options = _parse_tcp_options(bytes(data[20:hlen]))
    return TcpSegment(
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=TcpFlags(off_flags & 0xFF),
        window=window,
        header_length=hlen,
        payload=bytes(data[hlen:]),
        **options,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- ICMP


def internet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's-complement sum of
    16-bit big-endian words, an odd last byte padded with zero.

    A message that already holds its correct checksum sums to 0 under this function.
    """
    _check_bytes("data", data)
    data = bytes(data)
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_icmp_echo(ident: int, seq: int, payload: bytes = b"", *, reply: bool = False) -> bytes:
    """An ICMP echo request (type 8; with reply=True an echo reply, type 0), checksummed.

    On an unprivileged ICMP datagram socket the kernel replaces `ident` with the socket's
    own identifier (its "port") and fixes the checksum; on a raw socket they go out as built.
    """
    for name, value in (("ident", ident), ("seq", seq)):
        if not (isinstance(value, int) and 0 <= value <= 0xFFFF):
            raise ValueError(f"ICMP echo {name} must be an int in 0-65535, got {value!r}")
    _check_bytes("payload", payload)
    payload = bytes(payload)
    kind = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    csum = internet_checksum(header + payload)
    return struct.pack("!BBHHH", kind, 0, csum, ident, seq) + payload


@dataclass(frozen=True)
class IcmpMessage:
    """An ICMP message; `ident` and `seq` are meaningful for echo (types 0 and 8)."""

    type: int
    code: int
    checksum: int
    ident: int
    seq: int
    payload: bytes
    checksum_ok: bool

    @property
    def is_echo_reply(self) -> bool:
        """True for an echo reply (type 0, code 0)."""
        return self.type == ICMP_ECHO_REPLY and self.code == 0


def parse_icmp(data: bytes) -> IcmpMessage:
    """Parse an ICMP message (without the IP header) and verify its checksum."""
    _need("an ICMP header", data, 8)
    kind, code, csum, ident, seq = struct.unpack_from("!BBHHH", data)
    return IcmpMessage(kind, code, csum, ident, seq, bytes(data[8:]), internet_checksum(data) == 0)


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One captured frame, parsed as far as we understand it: `ip` is None for non-IP
    EtherTypes, `tcp`/`icmp` None for other protocols (or fragments past the first)."""

    ethernet: Ethernet
    ip: IPv4Header | IPv6Header | None
    tcp: TcpSegment | None = None
    icmp: IcmpMessage | None = None

    @property
    def endpoints(self) -> tuple[tuple[IPAddress, int], tuple[IPAddress, int]] | None:
        """((src ip, src port), (dst ip, dst port)) for a TCP frame, else None."""
        if self.ip is None or self.tcp is None:
            return None
        return (self.ip.src, self.tcp.src_port), (self.ip.dst, self.tcp.dst_port)


def parse_frame(data: bytes) -> Frame:
    """Parse an Ethernet frame down to TCP or ICMP where it carries them."""
    eth, rest = parse_ethernet(data)
    ip: IPv4Header | IPv6Header
    if eth.ethertype == ETH_P_IP:
        ip, payload = parse_ipv4(rest)
        first_fragment = ip.fragment_offset == 0
    elif eth.ethertype == ETH_P_IPV6:
        ip, payload = parse_ipv6(rest)
        first_fragment = True
    else:
        return Frame(eth, None)
    if first_fragment and ip.protocol == IPPROTO_TCP:
        return Frame(eth, ip, tcp=parse_tcp(payload))
    if first_fragment and ip.protocol == IPPROTO_ICMP and ip.version == 4:
        return Frame(eth, ip, icmp=parse_icmp(payload))
    return Frame(eth, ip)


# --------------------------------------------------------------------------- relative numbers


@dataclass(frozen=True)
class RelativeSegment:
    """A TCP segment with sequence numbers relative to each side's first one (its ISN).

    `seq` counts from 0 at the sender's SYN, `ack` from 0 at the receiver's SYN (None when
    the ACK flag is off, or before we saw the other side's first segment). `window` is the
    raw field; `window_bytes` is it shifted by the sender's window scale once both SYNs
    offered scaling (RFC 7323 section 2.2; never on a SYN), else the raw field.
    """

    src: tuple[IPAddress, int]
    dst: tuple[IPAddress, int]
    flags: TcpFlags
    seq: int
    ack: int | None
    length: int
    window: int
    window_bytes: int
    segment: TcpSegment

    def label(self) -> str:
        """A one-line summary: 'SYN,ACK seq=0 ack=1 len=0 win=65483' (win in bytes, scaled)."""
        ack = f" ack={self.ack}" if self.ack is not None else ""
        return f"{self.flags.short()} seq={self.seq}{ack} len={self.length} win={self.window_bytes}"


def relative_numbers(frames: Iterable[Frame]) -> list[RelativeSegment]:
    """The TCP frames of `frames`, in order, with relative seq/ack numbers per direction.

    Each endpoint's base is the sequence number of the first segment seen from it (its
    SYN, when the capture started before the connection). Arithmetic is modulo 2**32, as
    TCP's is. Non-TCP frames are skipped.
    """
    isn: dict[tuple[IPAddress, int], int] = {}
    wscale: dict[tuple[IPAddress, int], int | None] = {}  # each side's SYN option
    out: list[RelativeSegment] = []
    for frame in frames:
        ends = frame.endpoints
        if ends is None or frame.tcp is None:
            continue
        src, dst = ends
        seg = frame.tcp
        isn.setdefault(src, seg.seq)
        if seg.flags & TcpFlags.SYN:
            wscale[src] = seg.window_scale
        seq = (seg.seq - isn[src]) % 2**32
        ack = None
        if seg.flags & TcpFlags.ACK and dst in isn:
            ack = (seg.ack - isn[dst]) % 2**32
        shift = wscale.get(src)
        scaled = not seg.flags & TcpFlags.SYN and shift is not None and wscale.get(dst) is not None
        window_bytes = seg.window << min(shift, 14) if scaled and shift is not None else seg.window
        out.append(RelativeSegment(src, dst, seg.flags, seq, ack, seg.length, seg.window, window_bytes, seg))
    return out
