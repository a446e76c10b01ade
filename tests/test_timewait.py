"""helpers.timewait against real loopback sockets: states, the port-range option, arithmetic."""

from __future__ import annotations

import errno
import math
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import netns, socket_table
from helpers import timewait as tw
from helpers.core.proc import ephemeral_port_range

ROOT = Path(__file__).resolve().parent.parent


def _closed_pair(first: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Open a loopback connection, let `first` close first; return (closer, other) addresses."""
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        with conn:
            ends = {"client": client, "server": conn}
            addr = {name: s.getsockname() for name, s in ends.items()}
            second = "server" if first == "client" else "client"
            ends[first].close()
            assert ends[second].recv(1) == b""
            ends[second].close()
    return addr[first], addr[second]


@pytest.mark.parametrize("first", ["client", "server"])
def test_wait_for_state_finds_the_active_closer_in_time_wait(first: str) -> None:
    closer, other = _closed_pair(first)
    row = tw.wait_for_state(closer, other, "TIME_WAIT")
    assert row.local == closer and row.remote == other
    assert 0 < row.timer_s <= tw.TIME_WAIT_S
    assert row.inode == 0  # no process owns a TIME_WAIT socket
    tw.wait_gone(other, closer)
    assert tw.state_of(other, closer) is None
    assert tw.connection_rows(closer, other).states() == ["TIME_WAIT"]


def test_wait_for_state_times_out_naming_what_it_saw() -> None:
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        with conn:
            seen = r"did not reach TIME_WAIT within 0.05 s; the table shows: ESTABLISHED$"
            with pytest.raises(TimeoutError, match=seen):
                tw.wait_for_state(client.getsockname(), conn.getsockname(), "TIME_WAIT", timeout_s=0.05)


def test_wait_for_state_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown TCP state 'TIMEWAIT'"):
        tw.wait_for_state(("127.0.0.1", 1), ("127.0.0.1", 2), "TIMEWAIT")
    with pytest.raises(ValueError, match=r"timeout_s must be a number of seconds in \(0, 60\], got -1"):
        tw.wait_for_state(("127.0.0.1", 1), ("127.0.0.1", 2), "TIME_WAIT", timeout_s=-1)
    with pytest.raises(ValueError, match="count must be a positive number of sockets, got 0"):
        tw.wait_for_count("TIME_WAIT", 0)


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_pack_port_range_round_trips(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    raw = tw.pack_port_range(lo, hi)
    assert len(raw) == 4
    assert tw.unpack_port_range(raw) == (lo, hi)


def test_pack_port_range_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match=r"^the range is empty: lo=10 > hi=5; the kernel would answer EINVAL$"):
        tw.pack_port_range(10, 5)
    with pytest.raises(ValueError, match=r"^hi must be an int in 0-65535, got 70000$"):
        tw.pack_port_range(1, 70000)
    with pytest.raises(ValueError, match="4-byte u32, got 3 bytes"):
        tw.unpack_port_range(b"abc")


@pytest.mark.skipif(not tw.has_port_range_option(), reason="IP_LOCAL_PORT_RANGE needs Linux 6.3")
def test_port_range_option_limits_connect_to_the_window() -> None:
    lo, hi = tw.free_port_window(3)
    assert hi - lo + 1 == 3
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        clients = []
        try:
            for _ in range(4):
                s = socket.socket()
                clients.append(s)
                s.setsockopt(socket.IPPROTO_IP, tw.IP_LOCAL_PORT_RANGE, tw.pack_port_range(lo, hi))
                assert tw.unpack_port_range(s.getsockopt(socket.IPPROTO_IP, tw.IP_LOCAL_PORT_RANGE, 4)) == (lo, hi)
            for s in clients[:3]:
                s.connect(listener.getsockname())
            assert sorted(s.getsockname()[1] for s in clients[:3]) == [lo, lo + 1, lo + 2]
            with pytest.raises(OSError) as info:
                clients[3].connect(listener.getsockname())
            assert info.value.errno == errno.EADDRNOTAVAIL
        finally:
            for s in clients:
                s.close()


def test_window_starts_skip_used_ports() -> None:
    assert tw.window_starts({12, 15}, 10, 20, 3) == [16, 17, 18]
    assert tw.window_starts(set(), 10, 12, 3) == [10]
    assert tw.window_starts({11}, 10, 12, 2) == []
    assert tw.window_starts({5, 99}, 10, 13, 2) == [10, 11, 12]  # ports outside the range do not matter


@given(st.sets(st.integers(0, 60)), st.integers(1, 8))
def test_window_starts_are_exactly_the_free_windows(used: set[int], size: int) -> None:
    expected = [p for p in range(10, 51 - size + 1) if not used.intersection(range(p, p + size))]
    assert tw.window_starts(used, 10, 50, size) == expected


def test_free_port_window_avoids_ports_in_use() -> None:
    with socket.socket() as used:
        used.bind(("127.0.0.1", 0))
        used.listen()
        lo, hi = tw.free_port_window(3)
        taken = {e.local[1] for e in socket_table()}
        assert hi - lo == 2 and not taken.intersection(range(lo, hi + 1))
    with pytest.raises(ValueError, match="holds fewer than 10 ports"):
        tw.free_port_window(10, within=(40000, 40004))


def test_sysctls_are_read() -> None:
    lo, hi = ephemeral_port_range()
    assert 0 < lo <= hi <= 65535
    assert tw.tw_reuse() in (0, 1, 2)
    with pytest.raises(ValueError, match="a net.ipv4 sysctl name"):
        tw.read_sysctl("../../etc/passwd")
    with pytest.raises(FileNotFoundError, match="this kernel has no net.ipv4.no_such_knob"):
        tw.read_sysctl("no_such_knob")


def test_exhaustion_arithmetic() -> None:
    assert tw.exhaustion_time_s(0, 1000) == math.inf
    assert tw.exhaustion_time_s(50, 3000) == math.inf  # exactly sustainable: 50/s * 60 s = 3000
    assert tw.exhaustion_time_s(51, 3000) == pytest.approx(3000 / 51)
    assert tw.exhaustion_time_s(100, 1000) == pytest.approx(10.0)
    assert tw.ports_held(10, 5) == 50
    assert tw.ports_held(10, 600) == 600  # levels off after 60 s
    with pytest.raises(ValueError, match=r"^the rate must be >= 0 connections per second, got -1$"):
        tw.exhaustion_time_s(-1, 1000)
    with pytest.raises(ValueError, match="finite number"):
        tw.exhaustion_time_s(float("nan"), 1000)
    with pytest.raises(ValueError, match="ports must be a positive count"):
        tw.exhaustion_time_s(10, 0)


def test_close_diagram_and_matrix() -> None:
    d = tw.close_diagram(
        "server",
        after_first={"server": "FIN_WAIT2", "client": "CLOSE_WAIT"},
        after_second={"server": "TIME_WAIT", "client": None},
        timer_s=59.9,
    )
    src = d.mermaid()
    assert "Server->>Client: FIN (close)" in src
    assert "TIME_WAIT (seen), 59.9 s left" in src
    with pytest.raises(ValueError, match="first must be 'client' or 'server'"):
        tw.close_diagram("both", after_first={}, after_second={}, timer_s=None)
    html = tw.matrix_html({(True, True): "restarted", (False, False): "EADDRINUSE"})
    assert html.count("<tr>") == 3 and "not run" in html


# --------------------------------------------------------------------------- closing in order, port windows


@pytest.mark.parametrize("first", ["client", "server"])
def test_close_in_order_leaves_the_first_closer_in_time_wait(first: str) -> None:
    client, server = tw.close_in_order(first)
    closer, other = (client, server) if first == "client" else (server, client)
    assert [r.state.name for r in socket_table(local=closer, remote=other)] == ["TIME_WAIT"]
    assert socket_table(local=other, remote=closer) == []


def test_close_in_order_with_linger_zero_leaves_nobody_waiting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client, server = tw.close_in_order("client", listener=listener, linger_zero=True)
        assert listener.fileno() != -1, "a listener that was passed in stays open"
    assert socket_table(local=client, remote=server) == [] and socket_table(local=server, remote=client) == []


def test_close_in_order_binds_the_port_it_is_given() -> None:
    first, _ = tw.close_in_order("client")
    again, _ = tw.close_in_order("client", client_port=first[1])  # SO_REUSEADDR: beside its own TIME_WAIT
    assert again == first
    with pytest.raises(ValueError, match=r"^first must be 'client' or 'server', got 'both'$"):
        tw.close_in_order("both")


def connect_until_refused(server: socket.socket, port_range: bytes | None, first: str, attempts: int) -> dict:
    """The lesson's experiment: connect until refused, `first` closing each connection first."""
    import errno
    import socket

    ports, failed = [], None
    for attempt in range(1, attempts + 1):
        with socket.socket() as client:
            if port_range is not None:
                client.setsockopt(socket.IPPROTO_IP, 51, port_range)
            try:
                client.connect(server.getsockname())
            except OSError as exc:
                failed = [attempt, errno.errorcode[exc.errno]]
                break
            conn, _ = server.accept()
            with conn:
                ports.append(client.getsockname()[1])
                closer, other = (client, conn) if first == "client" else (conn, client)
                closer.close()
                other.recv(1)
    return {"ports": ports, "failed": failed}


def twice(server: socket.socket, port_range: bytes | None, n: int) -> dict:
    """Calls the other experiment (sent along with `uses` into a namespace)."""
    served = connect_until_refused(server, port_range, "server", n)  # leaves the client's ports free
    return {"served": served, "filled": connect_until_refused(server, port_range, "client", n + 1)}


def _ways() -> list:
    return [pytest.param("socket option", marks=pytest.mark.skipif(not tw.has_port_range_option(),
                                                                    reason="IP_LOCAL_PORT_RANGE needs Linux 6.3")),
            pytest.param("namespace", marks=pytest.mark.skipif(not netns.support().available,
                                                                reason="no private namespaces here"))]


@pytest.mark.parametrize("way", _ways())
def test_a_window_of_ports_runs_out_when_the_client_closes_first(way: str) -> None:
    run = tw.run_in_port_window(connect_until_refused, size=4, way=way, first="client", attempts=6)
    lo, hi = run.window
    assert hi - lo == 3 and run.way == way and run.live
    assert sorted(run.result["ports"]) == list(range(lo, hi + 1))
    assert run.result["failed"] == [5, "EADDRNOTAVAIL"]
    assert run.sysctls["tcp_timestamps"] in ("0", "1", "2"), run.sysctls  # man 7 tcp
    if way == "socket option":  # read in this namespace: the same file we can read
        assert run.sysctls["tcp_timestamps"] == Path("/proc/sys/net/ipv4/tcp_timestamps").read_text().strip()
    if way == "namespace":  # the namespace's own range is the window
        assert run.sysctls["ip_local_port_range"] == f"{lo} {hi}"
    served = tw.run_in_port_window(connect_until_refused, size=4, way=way, first="server", attempts=10)
    assert served.result["failed"] is None and len(served.result["ports"]) == 10
    assert set(served.result["ports"]) <= set(range(served.window[0], served.window[1] + 1))


@pytest.mark.parametrize("way", _ways())
def test_an_experiment_may_call_the_functions_it_uses(way: str) -> None:
    run = tw.run_in_port_window(twice, size=4, way=way, uses=[connect_until_refused], n=4)
    assert run.result["served"] == {"ports": run.result["served"]["ports"], "failed": None}
    assert run.result["filled"]["failed"] == [5, "EADDRNOTAVAIL"]


def test_port_window_way_says_how_or_why_not() -> None:
    way, why = tw.port_window_way()
    assert way in (*tw.WINDOW_WAYS, None) and why
    if tw.has_port_range_option():
        assert way == "socket option" and "IP_LOCAL_PORT_RANGE" in why


def test_run_in_port_window_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^size must be 1-1000 ports, got 0$"):
        tw.run_in_port_window(connect_until_refused, size=0)
    with pytest.raises(ValueError, match=r"^way must be one of \('socket option', 'namespace'\), got 'magic'$"):
        tw.run_in_port_window(connect_until_refused, size=3, way="magic")
    with pytest.raises(TypeError, match=r"^the experiment must be a function, got 5$"):
        tw.run_in_port_window(5, size=3, way="socket option")  # type: ignore[arg-type]


def test_window_runs_are_recorded_and_replayed_as_recordings(tmp_path) -> None:
    live = tw.WindowRun("socket option", (40000, 40009), {"ports": [40000]}, {"tcp_tw_reuse": "2"}, "live, test")
    path = str(tmp_path / "runs.json")
    tw.save_window_runs({"one": live, "two": {"client": live}}, path, "on a test machine")
    back = tw.load_window_runs(path)
    assert back["one"].result == live.result and back["two"]["client"].window == (40000, 40009)
    assert not back["one"].live and back["one"].source.startswith("RECORDED earlier: recorded by helpers.timewait")
    with pytest.raises(ValueError, match="a recorded run cannot be recorded again"):
        tw.save_window_runs({"one": back["one"]}, path, "again")
    with pytest.raises(TypeError, match="stores WindowRuns"):
        tw.save_window_runs({"one": 5}, path, "here")
    (tmp_path / "bad.json").write_text('{"recorded": "x", "runs": {"one": [1]}}')
    with pytest.raises(ValueError, match="not a recording made by save_window_runs"):
        tw.load_window_runs(str(tmp_path / "bad.json"))


@pytest.mark.parametrize("path", ["07-ports.json"])
def test_the_lessons_recorded_windows_load(path: str) -> None:
    runs = tw.load_window_runs(str(ROOT / "notebooks" / "recorded" / path))
    assert runs["exhausted"]["client"].result["failed"][:2] == [11, "EADDRNOTAVAIL"]
    assert not runs["retried"].live
