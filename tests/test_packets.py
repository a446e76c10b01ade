"""helpers.packets: Ethernet/IPv4/IPv6/TCP/ICMP parsing on hand-built bytes, checksums,
relative sequence numbers; fuzzed so nothing but ValueError ever escapes."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import packets as p

F = p.TcpFlags

# --------------------------------------------------------------------------- builders


def tcp_bytes(sport: int = 40001, dport: int = 5000, seq: int = 1000, ack: int = 0, flags: int = F.SYN,
              window: int = 65495, options: bytes = b"", payload: bytes = b"") -> bytes:
    options += b"\0" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, offset << 12 | flags, window, 0, 0) + options + payload


def ipv4_bytes(payload: bytes, src: str = "127.0.0.1", dst: str = "127.0.0.2", proto: int = 6,
               frag: int = 0x4000, padding: bytes = b"") -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, frag, 64, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + payload + padding


def ipv6_bytes(payload: bytes, src: str = "::1", dst: str = "::1", nxt: int = 6) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nxt, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def eth(payload: bytes, ethertype: int = p.ETH_P_IP) -> bytes:
    return b"\0" * 12 + struct.pack("!H", ethertype) + payload


SYN_OPTIONS = (
    b"\x02\x04\xff\xd7"  # MSS 65495
    b"\x04\x02"  # SACK permitted
    b"\x08\x0a\x00\x00\x00\x2a\x00\x00\x00\x00"  # timestamps 42, 0
    b"\x01"  # NOP
    b"\x03\x03\x07"  # window scale 7
)


# --------------------------------------------------------------------------- TCP


def test_parse_a_syn_with_its_options() -> None:
    frame = p.parse_frame(eth(ipv4_bytes(tcp_bytes(options=SYN_OPTIONS))))
    assert frame.ethernet == p.Ethernet("00:00:00:00:00:00", "00:00:00:00:00:00", 0x0800)
    assert frame.ip is not None and frame.ip.src == ipaddress.IPv4Address("127.0.0.1") and frame.ip.ttl == 64
    assert frame.ip.dont_fragment and frame.ip.header_length == 20
    seg = frame.tcp
    assert seg is not None
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (40001, 5000, 1000, 0)
    assert seg.flags == F.SYN and seg.flags.short() == "SYN"
    assert (seg.mss, seg.window_scale, seg.sack_permitted, seg.timestamps) == (65495, 7, True, (42, 0))
    assert seg.header_length == 40 and seg.length == 0
    assert frame.endpoints == ((ipaddress.IPv4Address("127.0.0.1"), 40001), (ipaddress.IPv4Address("127.0.0.2"), 5000))


def test_payload_stops_at_the_ip_total_length() -> None:
    frame = p.parse_frame(eth(ipv4_bytes(tcp_bytes(flags=F.PSH | F.ACK, payload=b"hello"), padding=b"\0" * 6)))
    assert frame.tcp is not None and frame.tcp.payload == b"hello"
    assert frame.tcp.flags.short() == "PSH,ACK"


def test_ipv6_tcp_frame() -> None:
    frame = p.parse_frame(eth(ipv6_bytes(tcp_bytes(flags=F.FIN | F.ACK, payload=b"x")), p.ETH_P_IPV6))
    assert isinstance(frame.ip, p.IPv6Header) and frame.ip.dst == ipaddress.IPv6Address("::1")
    assert frame.tcp is not None and frame.tcp.flags.short() == "FIN,ACK" and frame.tcp.payload == b"x"


def test_non_ip_and_later_fragments_are_not_parsed_as_tcp() -> None:
    assert p.parse_frame(eth(b"\0" * 28, 0x0806)).ip is None  # ARP
    frag = p.parse_frame(eth(ipv4_bytes(b"\0" * 24, frag=0x0003)))  # offset 24 bytes: no TCP header here
    assert frag.ip is not None and frag.ip.fragment_offset == 24 and frag.tcp is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0" * 13, r"^an Ethernet header needs at least 14 bytes, got 13$"),
        (eth(b"\x45" + b"\0" * 10), r"^an IPv4 header needs at least 20 bytes, got 11$"),
        (eth(b"\x65" + b"\0" * 19), r"^not an IPv4 header: version field is 6$"),
        (eth(b"\x44" + b"\0" * 19), r"^IPv4 header length field says 16 bytes; the minimum is 20$"),
        (eth(ipv4_bytes(b"")[:17]), r"^an IPv4 header needs at least 20 bytes, got 17$"),
        (eth(ipv4_bytes(tcp_bytes())[:30]), r"^IPv4 total length 40 does not fit"),
        (eth(ipv4_bytes(b"\0" * 12)), r"^a TCP header needs at least 20 bytes, got 12$"),
        (eth(ipv6_bytes(b"")[:39], p.ETH_P_IPV6), r"^an IPv6 header needs at least 40 bytes, got 39$"),
    ],
)
def test_truncated_headers_are_named(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.parse_frame(data)


def test_bad_tcp_offsets_and_options() -> None:
    short = bytearray(tcp_bytes())
    short[12] = 4 << 4
    with pytest.raises(ValueError, match=r"^TCP data offset says a 16-byte header; the minimum is 20$"):
        p.parse_tcp(bytes(short))
    long = bytearray(tcp_bytes())
    long[12] = 15 << 4
    with pytest.raises(ValueError, match=r"^TCP header says 60 bytes, only 20 captured$"):
        p.parse_tcp(bytes(long))
    with pytest.raises(ValueError, match=r"^TCP option kind 2 at offset 0 has a bad length 9$"):
        p.parse_tcp(tcp_bytes(options=b"\x02\x09\0\0"))
    with pytest.raises(ValueError, match=r"^TCP option kind 2 at offset 3 has no length byte$"):
        p.parse_tcp(tcp_bytes(options=b"\x01\x01\x01\x02"))


def test_every_prefix_of_a_frame_parses_or_names_the_problem() -> None:
    whole = eth(ipv4_bytes(tcp_bytes(options=SYN_OPTIONS, payload=b"abc")))
    for cut in range(len(whole)):
        with pytest.raises(ValueError):
            p.parse_frame(whole[:cut])
    assert p.parse_frame(whole).tcp is not None


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_value_error(data: bytes) -> None:
    for parse in (p.parse_frame, p.parse_tcp, p.parse_icmp, p.parse_ipv4, p.parse_ipv6):
        try:
            parse(data)
        except ValueError:
            pass


@given(
    sport=st.integers(0, 65535), dport=st.integers(0, 65535), seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1), flags=st.integers(0, 255), window=st.integers(0, 65535),
    mss=st.none() | st.integers(0, 65535), ws=st.none() | st.integers(0, 14), payload=st.binary(max_size=64),
)
def test_tcp_fields_round_trip(sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                               mss: int | None, ws: int | None, payload: bytes) -> None:
    options = b"" if mss is None else b"\x02\x04" + struct.pack("!H", mss)
    options += b"" if ws is None else b"\x03\x03" + bytes([ws])
    frame = p.parse_frame(eth(ipv4_bytes(tcp_bytes(sport, dport, seq, ack, flags, window, options, payload))))
    seg = frame.tcp
    assert seg is not None
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (sport, dport, seq, ack)
    assert (int(seg.flags), seg.window) == (flags, window)
    assert (seg.mss, seg.window_scale, seg.payload) == (mss, ws, payload)


# --------------------------------------------------------------------------- ICMP and checksum


def test_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement): checksum 220d.
    assert p.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert p.internet_checksum(b"") == 0xFFFF
    assert p.internet_checksum(b"\x01") == p.internet_checksum(b"\x01\x00")


@given(st.binary(max_size=300).filter(lambda b: len(b) % 2 == 0))
def test_a_message_with_its_checksum_sums_to_zero(data: bytes) -> None:
    csum = p.internet_checksum(data)
    assert p.internet_checksum(data + struct.pack("!H", csum)) == 0


@given(st.integers(0, 65535), st.integers(0, 65535), st.binary(max_size=100))
def test_echo_request_round_trips(ident: int, seq: int, payload: bytes) -> None:
    msg = p.parse_icmp(p.build_icmp_echo(ident, seq, payload))
    assert (msg.type, msg.code, msg.ident, msg.seq, msg.payload) == (8, 0, ident, seq, payload)
    assert msg.checksum_ok and not msg.is_echo_reply
    reply = p.parse_icmp(p.build_icmp_echo(ident, seq, payload, reply=True))
    assert reply.is_echo_reply and reply.checksum_ok


def test_a_corrupted_echo_fails_its_checksum() -> None:
    raw = bytearray(p.build_icmp_echo(1, 2, b"abcd"))
    raw[-1] ^= 0xFF
    assert not p.parse_icmp(bytes(raw)).checksum_ok
    frame = p.parse_frame(eth(ipv4_bytes(p.build_icmp_echo(7, 9), proto=1)))
    assert frame.icmp is not None and frame.icmp.seq == 9 and frame.tcp is None


@pytest.mark.parametrize(("ident", "seq"), [(-1, 0), (0, 65536), ("1", 0)])
def test_echo_rejects_out_of_range_fields(ident: object, seq: object) -> None:
    with pytest.raises(ValueError, match=r"^ICMP echo (ident|seq) must be an int in 0-65535, got "):
        p.build_icmp_echo(ident, seq)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- relative numbers


def _conversation(client_isn: int, server_isn: int) -> list[p.Frame]:
    c, s = ("127.0.0.1", 40001), ("127.0.0.1", 5000)

    def seg(src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, payload: bytes = b"",
            options: bytes = b"", window: int = 512) -> p.Frame:
        raw = tcp_bytes(src[1], dst[1], seq % 2**32, ack % 2**32, flags, window, options, payload)
        return p.parse_frame(eth(ipv4_bytes(raw, src=src[0], dst=dst[0])))

    ws = b"\x03\x03\x07"
    return [
        seg(c, s, client_isn, 0, F.SYN, options=ws, window=65495),
        seg(s, c, server_isn, client_isn + 1, F.SYN | F.ACK, options=ws, window=65483),
        seg(c, s, client_isn + 1, server_isn + 1, F.ACK),
        seg(c, s, client_isn + 1, server_isn + 1, F.PSH | F.ACK, b"hello"),
        seg(s, c, server_isn + 1, client_isn + 6, F.ACK),
        seg(c, s, client_isn + 6, server_isn + 1, F.FIN | F.ACK),
    ]


@pytest.mark.parametrize(("client_isn", "server_isn"), [(1000, 5000), (2**32 - 3, 2**32 - 1)])
def test_relative_numbers_count_from_each_isn_even_across_wraparound(client_isn: int, server_isn: int) -> None:
    rel = p.relative_numbers(_conversation(client_isn, server_isn))
    assert [(r.flags.short(), r.seq, r.ack, r.length) for r in rel] == [
        ("SYN", 0, None, 0),
        ("SYN,ACK", 0, 1, 0),
        ("ACK", 1, 1, 0),
        ("PSH,ACK", 1, 1, 5),
        ("ACK", 1, 6, 0),
        ("FIN,ACK", 6, 1, 0),
    ]
    assert rel[0].window_bytes == 65495  # never scaled on a SYN
    assert rel[2].window_bytes == 512 << 7  # both SYNs offered scaling
    assert rel[3].label() == "PSH,ACK seq=1 ack=1 len=5 win=65536"


def test_window_not_scaled_unless_both_syns_offer_it() -> None:
    frames = _conversation(1, 1)
    no_ws = p.parse_frame(eth(ipv4_bytes(tcp_bytes(5000, 40001, 1, 2, F.SYN | F.ACK, 100))))
    rel = p.relative_numbers([frames[0], no_ws, frames[2]])
    assert rel[2].window_bytes == rel[2].window == 512
