"""helpers.addresses: port range and port lists, local addresses, special ranges, /proc rows."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import addresses as a

# --------------------------------------------------------------------------- ports


def test_ephemeral_port_range_matches_a_real_bind() -> None:
    low, high = a.ephemeral_port_range()
    assert 1 <= low <= high <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert low <= s.getsockname()[1] <= high


def test_parse_port_list_examples() -> None:
    assert a.parse_port_list("") == set()
    assert a.parse_port_list("\n") == set()
    assert a.parse_port_list("8080") == {8080}
    assert a.parse_port_list("8080,9000-9002\n") == {8080, 9000, 9001, 9002}
    assert a.parse_port_list("0-0,65535") == {0, 65535}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http", r"^not a port or port range: 'http' \(expected e\.g\. '8080' or '9000-9010'\)$"),
        ("1-x", r"^not a port or port range: '1-x'"),
        ("9010-9000", r"^bad port range '9010-9000': need 0 <= low <= high <= 65535$"),
        ("70000", r"^bad port range '70000'"),
        ("-5", r"^not a port or port range: '-5'"),
    ],
)
def test_parse_port_list_rejects_bad_items(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        a.parse_port_list(text)


port_ranges = st.lists(
    st.tuples(st.integers(0, 65535), st.integers(0, 50)).map(lambda t: (t[0], min(65535, t[0] + t[1]))),
    max_size=8,
)


@given(port_ranges)
def test_parse_port_list_round_trips(ranges: list[tuple[int, int]]) -> None:
    text = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
    expected = {p for lo, hi in ranges for p in range(lo, hi + 1)}
    assert a.parse_port_list(text) == expected


@given(st.text(max_size=30))
def test_parse_port_list_never_crashes_otherwise(text: str) -> None:
    try:
        ports = a.parse_port_list(text)
    except ValueError:
        return
    assert all(0 <= p <= 65535 for p in ports)


def test_reserved_local_ports_is_a_set_of_ports() -> None:
    assert all(0 <= p <= 65535 for p in a.reserved_local_ports())


# --------------------------------------------------------------------------- local addresses

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 192.0.2.2
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 192.0.2.2
        /24 link UNICAST
        /32 host LOCAL
"""


def test_parse_fib_trie_takes_the_local_host_leaves_once() -> None:
    assert a.parse_fib_trie(FIB_TRIE) == [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address("192.0.2.2")]
    assert a.parse_fib_trie("") == []


def test_local_addresses_include_loopback() -> None:
    addrs = a.local_addresses()
    assert ipaddress.IPv4Address("127.0.0.1") in addrs
    for addr in addrs:
        if addr.version == 4:
            with socket.socket() as s:  # every listed IPv4 address is bindable here
                s.bind((str(addr), 0))


# --------------------------------------------------------------------------- special ranges


@pytest.mark.parametrize(
    ("address", "rfc"),
    [
        ("127.0.0.53", "RFC 1122 3.2.1.3"),
        ("10.1.2.3", "RFC 1918"),
        ("172.31.255.255", "RFC 1918"),
        ("192.168.0.1", "RFC 1918"),
        ("169.254.1.1", "RFC 3927"),
        ("198.51.100.7", "RFC 5737"),
        ("224.0.0.251", "RFC 5771"),
        ("fe80::1", "RFC 4291"),
        ("2001:db8::1", "RFC 3849"),
        ("fd00::2", "RFC 4193"),
    ],
)
def test_special_ranges_names_the_rfc(address: str, rfc: str) -> None:
    assert [r.rfc for r in a.special_ranges(address)] == [rfc]


def test_special_ranges_boundaries() -> None:
    assert a.special_ranges("172.32.0.1") == []  # just past 172.16.0.0/12
    assert a.special_ranges("8.8.8.8") == []
    assert a.special_ranges(ipaddress.ip_address("::1"))[0].name == "loopback"


def test_special_ranges_agree_with_ipaddress() -> None:
    for r in a.SPECIAL_RANGES:
        first = r.network.network_address
        if r.name == "loopback":
            assert first.is_loopback or (first + 1).is_loopback
        if r.name == "link-local":
            assert first.is_link_local
        if r.name == "multicast":
            assert first.is_multicast


def test_special_ranges_rejects_non_addresses() -> None:
    message = r"^not an IP address: 'localhost' \(expected e\.g\. '127\.0\.0\.1' or '::1'\)$"
    with pytest.raises(ValueError, match=message):
        a.special_ranges("localhost")


def test_addresses_in_prefix() -> None:
    assert a.addresses_in_prefix(24) == 256
    assert a.addresses_in_prefix(32) == 1
    assert a.addresses_in_prefix(0) == 2**32
    assert a.addresses_in_prefix(64, 6) == 2**64
    assert a.addresses_in_prefix(8) == ipaddress.ip_network("10.0.0.0/8").num_addresses


@pytest.mark.parametrize(
    ("prefix", "version", "message"),
    [
        (33, 4, r"^an IPv4 prefix length is 0-32 bits, got /33$"),
        (-1, 4, r"^an IPv4 prefix length is 0-32 bits, got /-1$"),
        (129, 6, r"^an IPv6 prefix length is 0-128 bits, got /129$"),
        (24, 5, r"^version must be 4 or 6, got 5$"),
    ],
)
def test_addresses_in_prefix_rejects(prefix: int, version: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        a.addresses_in_prefix(prefix, version)


# --------------------------------------------------------------------------- raw rows


def test_proc_net_row_shows_the_port_in_hex() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        row = a.proc_net_row(s)
        local = row.split()[1]
        assert local.endswith(f":{s.getsockname()[1]:04X}")
        assert local.split(":")[0] in ("0100007F", "7F000001")  # little- or big-endian host


def test_proc_net_row_needs_a_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(LookupError, match=r"^no row in /proc/net/tcp for socket inode \d+"):
            a.proc_net_row(s)
