"""helpers.addresses: port range and port lists, local addresses, special ranges, /proc rows."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from pathlib import Path

import fallback_checks
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import addresses as a
from helpers import sockaddr
from helpers.core import features

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


# --------------------------------------------------------------------------- scope, blocks, interfaces


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.53", "host"),
        ("::1", "host"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "link-local"),  # RFC 5771 4: the Local Network Control Block
        ("224.0.1.1", "global"),
        ("239.1.2.3", "organization-local"),  # RFC 2365
        ("ff02::1", "link-local"),  # scop 2
        ("ff01::1", "interface-local"),
        ("ff05::2", "site-local"),
        ("ff0e::1", "global"),
        ("10.1.2.3", "global"),
        ("0.0.0.0", "none"),
        ("::", "none"),
    ],
)
def test_scope(address: str, expected: str) -> None:
    assert a.scope(address) == expected


def test_link_local_multicast_is_what_python_calls_global() -> None:
    """The correction lesson 01 teaches: ipaddress says is_global, the address says link-local."""
    for text in ("224.0.0.251", "ff02::1"):
        ip = ipaddress.ip_address(text)
        assert ip.is_multicast and not ip.is_link_local
        assert a.scope(ip) == "link-local"


def test_sample_block_spreads_evenly_and_keeps_both_ends() -> None:
    sample = a.sample_block("127.0.0.1/6", 5)
    assert [str(x) for x in sample] == ["124.0.0.0", "124.255.255.255", "125.255.255.255", "126.255.255.255",
                                        "127.255.255.255"]
    assert a.sample_block("127.0.0.1/31", 64) == [ipaddress.ip_address("127.0.0.0"), ipaddress.ip_address("127.0.0.1")]
    six = a.sample_block(ipaddress.ip_network("::/126"), 2)
    assert six == [ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::3")]
    whole = a.sample_block("0.0.0.0/0", 64)
    assert len(set(whole)) == 64 and whole[0] == ipaddress.ip_address("0.0.0.0") and str(whole[-1]) == "255.255.255.255"


def test_interface_addresses_agree_with_the_local_table_and_the_netmask_ioctl() -> None:
    """rtnetlink's addresses are the ones /proc/net/fib_trie lists as local, and each IPv4
    one's prefix length is the netmask SIOCGIFNETMASK returns, counted in bits."""
    found = a.interface_addresses()
    assert ("lo", ipaddress.ip_interface("127.0.0.1/8")) in found
    v4 = {iface.ip for _, iface in found if iface.version == 4}
    assert v4 == {x for x in a.local_addresses() if x.version == 4}
    for name, iface in found:
        if iface.version == 4:
            assert a.interface_netmask(name) == str(iface.netmask), (name, iface)


def test_interface_netmask_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match=r"^an interface name is 1-15 bytes without NUL \(IFNAMSIZ\), got ''$"):
        a.interface_netmask("")
    with pytest.raises(TypeError, match=r"^interface name must be a str such as 'lo', got int 1$"):
        a.interface_netmask(1)  # type: ignore[arg-type]
    with pytest.raises(OSError) as info:
        a.interface_netmask("nosuchif0")
    assert info.value.errno == 19  # ENODEV


def test_ipv6_loopback_problem_matches_a_real_bind() -> None:
    problem = a.ipv6_loopback_problem()
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        works = True
    except OSError:
        works = False
    assert (problem is None) == works, problem


# --------------------------------------------------------------------------- IPv6 live or recorded


def _bound_v6() -> tuple:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return s.getsockname(), sockaddr.raw_getsockname(s)


def test_run_or_replay_runs_live_where_ipv6_works_and_the_recording_round_trips(tmp_path: Path) -> None:
    if a.ipv6_loopback_problem() is not None:
        pytest.skip(f"no IPv6 loopback here: {a.ipv6_loopback_problem()}")
    run = a.run_or_replay(_bound_v6, tmp_path / "none.json", "sockaddr")  # live: the file is never read
    name, raw = run.result
    assert run.live and run.source == "live, on this machine's ::1"
    assert name[0] == "::1" and len(name) == 4 and len(raw) == 28 and raw[8:24] == bytes(15) + b"\x01"
    path = tmp_path / "v6.json"
    a.save_recording({"sockaddr": run}, path, "in a test")
    label = json.loads(path.read_text())["recorded"]
    assert re.fullmatch(r"recorded by helpers\.addresses in a test, \d{4}-\d\d-\d\d \d\d:\d\d UTC, Linux \S+", label)
    with features.pretend_missing("ipv6"):
        replay = a.run_or_replay(_bound_v6, path, "sockaddr")
    assert not replay.live and replay.result == (name, raw)  # tuples and bytes come back as they were
    assert replay.source.startswith(f"RECORDED earlier: {label} (no IPv6 loopback here: IPv6 is switched off by ")
    with pytest.raises(ValueError, match=r"^the run 'sockaddr' is itself a recording; record a live one$"):
        a.save_recording({"sockaddr": replay}, tmp_path / "again.json", "in a test")
    assert not (tmp_path / "again.json").exists()


def test_run_or_replay_shows_the_lessons_recording_without_ipv6() -> None:
    calls = []
    with features.pretend_missing("ipv6"):
        runs = {part: a.run_or_replay(lambda: calls.append(1), "recorded/01-sockets-and-addresses.json", part)
                for part in ("exchange", "sockaddr", "link_local")}
    assert not calls, "the experiment ran although IPv6 was switched off"
    assert all(not r.live and fallback_checks.RECORDED.search(r.source) for r in runs.values()), runs
    listener = runs["exchange"].result["listener"]
    assert isinstance(listener, tuple) and listener[0] == "::1" and len(listener) == 4, listener
    name, raw = runs["sockaddr"].result
    assert len(raw) == 28 and int.from_bytes(raw[2:4], "big") == name[1], runs["sockaddr"]
    assert [row[0] for row in runs["link_local"].result] == ["ff02::1", "fe80::1", "ff0e::1"]


def test_run_or_replay_and_save_recording_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^fn must be the experiment to run \(a callable\), got 3$"):
        a.run_or_replay(3, "x.json", "p")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^part must name the experiment in the recording, a non-empty str, got ''$"):
        a.run_or_replay(_bound_v6, "x.json", "")
    with features.pretend_missing("ipv6"):
        with pytest.raises(FileNotFoundError, match=r"^no IPv6 here \(IPv6 is switched off by .*\) and no recording: "):
            a.run_or_replay(_bound_v6, tmp_path / "none.json", "sockaddr")
        (tmp_path / "other.json").write_text('{"recorded": "x", "parts": {}}')
        with pytest.raises(ValueError, match=r"is not a recording of 'sockaddr' made by addresses\.save_recording\(\): "
                                             r"KeyError: 'sockaddr'$"):
            a.run_or_replay(_bound_v6, tmp_path / "other.json", "sockaddr")
    if a.ipv6_loopback_problem() is None:
        with pytest.raises(TypeError, match=r"^a recorded result holds str, numbers, bytes, tuples, lists and dicts "
                                            r"with str keys, got socket "):
            with socket.socket() as s:
                a.run_or_replay(lambda: s, "x.json", "p")
    live = a.Ipv6Run(("::1", 1, 0, 0), True, "live")
    with pytest.raises(TypeError, match=r"^where must say where it was recorded \(machine\) as a non-empty str"):
        a.save_recording({"p": live}, tmp_path / "r.json", " ")
    with pytest.raises(TypeError, match=r"^runs must map a part's name to the Ipv6Run run_or_replay\(\) returned"):
        a.save_recording({"p": ("::1", 1, 0, 0)}, tmp_path / "r.json", "here")  # type: ignore[dict-item]
