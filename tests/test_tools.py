"""helpers.tools: lsof, ss, interfaces and ping, against real sockets and the real tools."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import fallback_checks
import pytest

from helpers import addresses, netns, observe, servers, tools

# --------------------------------------------------------------------------- lsof


def test_lsof_resolves_tcp_udp_and_unix_sockets() -> None:
    with servers.TCPServer(handler=None) as srv, tempfile.TemporaryDirectory() as tmp:
        client = socket.create_connection(srv.address)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp_conn = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp_conn.connect(("::1", 9))  # connect() on UDP sends nothing; it only fixes the peer
        pair = socket.socketpair()
        named = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        named.bind(os.path.join(tmp, "s.sock"))
        named.listen()
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        abstract.bind(b"\0course-test-tools-%d" % os.getpid())
        try:
            deadline = time.monotonic() + 5
            while srv.accepted < 1 and time.monotonic() < deadline:  # the server thread accepts on its own time
                time.sleep(0.001)
            rows = tools.lsof().by_fd()
            local, remote = client.getsockname(), client.getpeername()
            expected = f"TCP {local[0]}:{local[1]} -> {remote[0]}:{remote[1]} ESTABLISHED"
            assert str(rows[client.fileno()]) == f"fd {client.fileno()} -> {expected}"
            assert str(rows[srv.sock.fileno()]) == f"fd {srv.sock.fileno()} -> TCP 127.0.0.1:{srv.address[1]} LISTEN"
            server_end = [r for r in rows.values() if r.local == remote and r.remote == local]
            assert len(server_end) == 1 and server_end[0].state == "ESTABLISHED"
            u = rows[udp.fileno()]
            assert (u.kind, u.state, u.local, u.remote) == ("UDP", "UNCONNECTED", udp.getsockname(), None)
            u6 = rows[udp_conn.fileno()]
            assert (u6.kind, u6.state, u6.remote) == ("UDP6", "CONNECTED", ("::1", 9))
            for s in pair:
                assert rows[s.fileno()].description == "STREAM (unnamed) CONNECTED"
            assert rows[named.fileno()].description == f"STREAM {os.path.join(tmp, 's.sock')} LISTEN"
            assert rows[abstract.fileno()].description == f"DGRAM @course-test-tools-{os.getpid()} UNCONNECTED"
            only = tools.lsof(fds=[udp.fileno()])
            assert [f.fd for f in only] == [udp.fileno()]
        finally:
            for s in (client, udp, udp_conn, *pair, named, abstract):
                s.close()


def test_lsof_lists_files_unless_sockets_only() -> None:
    with open(__file__) as fh:
        all_rows = tools.lsof().by_fd()
        row = all_rows[fh.fileno()]
        assert row.kind == "file" and row.description == str(Path(__file__).resolve())
        assert fh.fileno() not in tools.lsof(sockets_only=True).by_fd()


def test_lsof_rejects_bad_pids() -> None:
    with pytest.raises(ValueError, match=r"^pid must be a positive int or 'self', got 'me'$"):
        tools.lsof("me")
    with pytest.raises(ValueError, match=r"^pid must be a positive int or 'self', got 0$"):
        tools.lsof(0)
    max_pid = int(Path("/proc/sys/kernel/pid_max").read_text())
    with pytest.raises(ProcessLookupError, match=rf"^no process with pid {max_pid}$"):
        tools.lsof(max_pid)  # pids are always below pid_max


def test_lsof_of_our_own_pid_matches_self() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert str(tools.lsof(os.getpid()).by_fd()[s.fileno()]) == str(tools.lsof().by_fd()[s.fileno()])


# --------------------------------------------------------------------------- ss

SS_SAMPLE = """\
State      Recv-Q Send-Q        Local Address:Port          Peer Address:Port Process
LISTEN     0      128               127.0.0.1:5000               0.0.0.0:*
ESTAB      0      0                 127.0.0.1:40001            127.0.0.1:5000
TIME-WAIT  0      0                     [::1]:5001                 [::1]:40002
LISTEN     0      4096          127.0.0.53%lo:53                 0.0.0.0:*
FIN-WAIT-2 0      0      [::ffff:127.0.0.1]:40003  [::ffff:127.0.0.1]:5000
LISTEN     0      128                       *:22                       *:*
"""


def test_parse_ss_sample() -> None:
    rows = tools.parse_ss(SS_SAMPLE)
    assert [(r.state.name, r.local, r.remote) for r in rows] == [
        ("LISTEN", ("127.0.0.1", 5000), ("0.0.0.0", 0)),
        ("ESTABLISHED", ("127.0.0.1", 40001), ("127.0.0.1", 5000)),
        ("TIME_WAIT", ("::1", 5001), ("::1", 40002)),
        ("LISTEN", ("127.0.0.53", 53), ("0.0.0.0", 0)),
        ("FIN_WAIT2", ("::ffff:127.0.0.1", 40003), ("::ffff:127.0.0.1", 5000)),
        ("LISTEN", ("::", 22), ("::", 0)),
    ]
    assert rows[0].send_q == 128


def test_parse_ss_rejects_other_text() -> None:
    with pytest.raises(ValueError, match=r"^not an `ss -tan` row: 'Netid State'$"):
        tools.parse_ss("Netid State")
    with pytest.raises(ValueError, match=r"^not an ss address: 'localhost:80'"):
        tools.parse_ss("ESTAB 0 0 localhost:80 127.0.0.1:5")


def test_ss_and_proc_net_tcp_agree_on_a_real_connection() -> None:
    with servers.TCPServer(handler=None) as srv, socket.create_connection(srv.address) as c:
        text = tools.run_ss("-tan")
        if text is None:
            pytest.skip("ss (iproute2) is not installed")
        port = srv.address[1]
        from_ss = {(r.state.name, r.local, r.remote) for r in tools.parse_ss(text) if port in (r.local[1], r.remote[1])}
        from_proc = {(e.state.name, e.local, e.remote) for e in observe.socket_table(port=port)}
        assert from_ss == from_proc
        assert ("ESTABLISHED", c.getsockname(), c.getpeername()) in from_ss


# --------------------------------------------------------------------------- interfaces

DEV_SAMPLE = """\
Inter-|   Receive                                                |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
    lo: 1000       10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 2000       20    1    2    0     0          0         0      300       3    4    5    0     0       0          0
"""


def test_parse_proc_net_dev_sample() -> None:
    dev = tools.parse_proc_net_dev(DEV_SAMPLE)
    assert dev["lo"] == tools.IfCounters(1000, 10, 0, 0, 1000, 10, 0, 0)
    assert dev["eth0"] == tools.IfCounters(2000, 20, 1, 2, 300, 3, 4, 5)
    assert dev["eth0"] - dev["lo"] == tools.IfCounters(1000, 10, 1, 2, -700, -7, 4, 5)
    with pytest.raises(ValueError, match=r"^not a /proc/net/dev row: 'lo 1 2'$"):
        tools.parse_proc_net_dev("a\nb\nlo 1 2")


def test_lo_counters_move_with_a_transfer() -> None:
    before = tools.interface_counters()["lo"]
    with servers.TCPServer(lambda conn: conn.recv(1)) as srv, socket.create_connection(srv.address) as c:
        c.sendall(b"x" * 100_000)
    moved = tools.interface_counters()["lo"] - before
    assert moved.tx_bytes >= 100_000 and moved.rx_bytes >= 100_000 and moved.tx_packets >= 3


def test_interfaces_show_loopback_and_agree_with_addresses() -> None:
    ifaces = tools.interfaces()
    lo = next(i for i in ifaces if i.name == "lo")
    assert lo.up and lo.loopback and lo.ipv4 == ipaddress.IPv4Interface("127.0.0.1/8")
    assert lo.index == socket.if_nametoindex("lo") and lo.mtu >= 1500
    assert "inet 127.0.0.1/8" in str(lo)
    known = set(addresses.local_addresses())
    assert {i.ipv4.ip for i in ifaces if i.ipv4} <= known
    assert {a for i in ifaces for a in i.ipv6} <= known


# --------------------------------------------------------------------------- ping


def test_ping_permission_rules() -> None:
    assert not tools.PingPermission(1, 0, (0,)).allowed
    assert "empty range" in tools.PingPermission(1, 0, (0,)).explain()
    assert tools.PingPermission(100, 200, (5, 150)).allowed
    expected = "net.ipv4.ping_group_range = 0 0 does not include our groups [1000]."
    assert tools.PingPermission(0, 0, (1000,)).explain() == expected
    perm = tools.ping_permission()
    assert os.getgid() in perm.gids


def _may_open(kind: int) -> bool:
    try:
        socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    return True


def test_ping_loopback_or_explain_why_not() -> None:
    dgram, raw = _may_open(socket.SOCK_DGRAM), _may_open(socket.SOCK_RAW)
    assert dgram == tools.ping_permission().allowed
    if not (dgram or raw):
        with pytest.raises(tools.PingUnavailable, match=r"ping_group_range = .*CAP_NET_RAW"):
            tools.ping(count=1)
        return
    result = tools.ping("127.0.0.1", count=5, interval_s=0)
    assert result.kind == ("datagram" if dgram else "raw")
    assert len(result.received) == 5 and all(0 < r < 1000 for r in result.received)
    if result.kind == "raw":
        assert set(result.idents) == {result.sent_ident}  # a raw socket sends our identifier as built
        assert {t for t, _ in result.seen} == {0, 8}  # it reads our requests (type 8) as well as the replies
    else:
        assert {t for t, _ in result.seen} == {0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "localhost"}, r"^host must be an IPv4 address such as '127.0.0.1', got 'localhost'$"),
        ({"count": 0}, r"^count must be an int in 1-1000, got 0$"),
        ({"count": True}, r"^count must be an int in 1-1000, got True$"),
        ({"interval_s": -1}, r"^need 0 <= interval_s <= 10 and 0 < timeout_s <= 30"),
        ({"timeout_s": 0}, r"^need 0 <= interval_s <= 10 and 0 < timeout_s <= 30"),
        ({"payload_size": 5000}, r"^payload_size must be 0-1400 bytes"),
    ],
)
def test_ping_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tools.ping(**kwargs)


def _ping_in_private_namespace() -> dict:
    # Runs in a child inside a new user + network namespace (helpers.netns). There the
    # sysctl belongs to the private namespace only, and its gids are those mapped inside.
    from pathlib import Path

    from helpers import tools

    Path("/proc/sys/net/ipv4/ping_group_range").write_text("0 0")
    result = tools.ping("127.0.0.1", count=3, interval_s=0)
    return {"kind": result.kind, "received": len(result.received), "idents": result.idents}


def test_ping_over_a_datagram_socket_in_a_private_namespace() -> None:
    """The unprivileged path, exercised where we may widen the range: in a network namespace
    of our own (the machine's setting is never touched)."""
    if not netns.support().available:
        pytest.skip(f"no private namespace here: {netns.support().reason}")
    answer = netns.run_in_netns(_ping_in_private_namespace, timeout_s=20)
    assert answer["kind"] in ("datagram", "raw")
    if os.geteuid() != 0:  # a normal user holds no CAP_NET_RAW outside, so this was the datagram socket
        assert answer["kind"] == "datagram"
    assert answer["received"] == 3 and len(set(answer["idents"])) == 1


def test_a_ping_run_is_recorded_and_shown_labelled(tmp_path: Path) -> None:
    recorded = tools.load_recording("recorded/06-tools-ping.json")  # the lesson's recording
    assert not recorded.live and fallback_checks.RECORDED.search(recorded.source), recorded.source
    assert recorded.kind == "datagram" and len(recorded.received) == 20 and set(recorded.seen) == {(0, 0)}
    assert len(set(recorded.idents)) == 1 and recorded.idents[0] != recorded.sent_ident  # the kernel's identifier
    with pytest.raises(ValueError, match=r"^this run is itself a recording; record a live one$"):
        tools.save_recording(recorded, tmp_path / "again.json", "in a test")
    with pytest.raises(TypeError, match=r"^save_recording\(\) needs the PingResult that ping\(\) returned, got dict$"):
        tools.save_recording(recorded.to_json(), tmp_path / "again.json", "in a test")  # type: ignore[arg-type]
    (tmp_path / "other.json").write_text('{"recorded": "x"}')
    with pytest.raises(ValueError, match=r"other\.json is not a recording made by tools\.save_recording\(\): "
                                         r"KeyError: 'ping'$"):
        tools.load_recording(tmp_path / "other.json")
    try:
        live = tools.ping("127.0.0.1", count=3, interval_s=0)
    except tools.PingUnavailable as exc:
        pytest.skip(f"no live ping here to record: {exc}")
    with pytest.raises(TypeError, match=r"^where must say where it was recorded \(machine\) as a non-empty str"):
        tools.save_recording(live, tmp_path / "ping.json", "")
    tools.save_recording(live, tmp_path / "ping.json", "in a test")
    again = tools.load_recording(tmp_path / "ping.json")
    assert re.fullmatch(r"RECORDED earlier: recorded by helpers\.tools\.ping\(\) in a test, \d{4}-\d\d-\d\d "
                        r"\d\d:\d\d UTC, Linux \S+", again.source), again.source
    assert (again.kind, again.rtts_ms, again.idents, again.sent_ident, again.seen) == (
        live.kind, live.rtts_ms, live.idents, live.sent_ident, live.seen)


# --------------------------------------------------------------------------- the real tools

READY_THEN_ECHO = (  # a stand-in for tcpdump: says it is ready, prints each line it is sent, stops on Ctrl-C
    "import sys, time\n"
    "print('listening on stdin', file=sys.stderr, flush=True)\n"
    "try:\n"
    "    for n in range(1000):\n"
    "        print(f'tick {n}', flush=True)\n"
    "        time.sleep(0.05 if n < 3 else 10)\n"
    "except KeyboardInterrupt:\n"
    "    print('stopped', file=sys.stderr, flush=True)\n"
)


@pytest.fixture
def python(monkeypatch: pytest.MonkeyPatch) -> str:
    """This interpreter's program name, with its folder first on PATH: ./course runs the venv's
    python without activating the venv, and a normal user's PATH may have no `python` at all."""
    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    return os.path.basename(sys.executable)


def test_run_tool_runs_a_real_program_and_says_when_one_is_missing(python: str) -> None:
    run = tools.run_tool(python, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert run.found and run.returncode == 3 and run.stdout == "out\n" and run.stderr == "err\n" and not run.ok
    assert run.show().endswith("[stderr] err\n[exit status 3]")
    missing = tools.run_tool("no-such-tool-here", "-x")
    assert not missing.found and missing.show() == "$ no-such-tool-here -x\n(no-such-tool-here is not installed here)"
    assert tools.find_tool("no-such-tool-here") is None and tools.find_tool(python)
    with pytest.raises(TimeoutError, match=r"did not finish within 0.2 s"):
        tools.run_tool(python, "-c", "import time; time.sleep(5)", timeout_s=0.2)
    with pytest.raises(ValueError, match=r"^a program name such as 'ss' or 'lsof', got 'ss; rm'$"):
        tools.run_tool("ss; rm")


def test_tool_output_is_filtered_keeping_the_header() -> None:
    run = tools.ToolRun("t", True, 0, "State Port\nLISTEN :5000\nESTAB :6000\nESTAB :5000\n")
    assert run.lines(":5000") == ["State Port", "LISTEN :5000", "ESTAB :5000"]
    assert run.show(":6000") == "$ t\nState Port\nESTAB :6000"


def test_run_tool_during_waits_until_ready_then_stops_the_tool(python: str) -> None:
    calls = []
    before = set(threading.enumerate())
    run, result = tools.run_tool_during(python, "-c", READY_THEN_ECHO, ready="listening on",
                                        action=lambda: calls.append(1) or "acted", quiet_s=0.3)
    assert result == "acted" and calls == [1]
    assert run.stdout.splitlines()[:3] == ["tick 0", "tick 1", "tick 2"], run.stdout
    assert "stopped" in run.stderr and run.returncode == 0, run  # SIGINT, as Ctrl-C
    assert set(threading.enumerate()) == before


def test_run_tool_during_skips_the_action_when_the_tool_cannot_start(python: str) -> None:
    calls = []
    run, result = tools.run_tool_during(python, "-c", "import sys; print('no permission', file=sys.stderr); "
                                        "sys.exit(1)", ready="listening on", action=lambda: calls.append(1))
    assert (result, calls, run.returncode) == (None, [], 1) and "no permission" in run.stderr
    run, result = tools.run_tool_during("no-such-tool-here", ready="x", action=lambda: calls.append(1))
    assert not run.found and result is None and calls == []
    with pytest.raises(TypeError, match="action must be a function"):
        tools.run_tool_during(python, ready="x", action=None)  # type: ignore[arg-type]


@pytest.mark.skipif(tools.find_tool("nstat") is None, reason="nstat (iproute2) is not installed here")
def test_nstat_increments_cover_exactly_one_experiment() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with tools.NstatIncrements("TcpActiveOpens") as nstat:
            for _ in range(4):
                socket.create_connection(listener.getsockname()).close()
    assert nstat.run is not None and nstat.run.ok and nstat.values["TcpActiveOpens"] >= 4, nstat.run
    assert set(nstat.values) == {"TcpActiveOpens"}
    history = nstat._env["NSTAT_HISTORY"]
    assert not os.path.exists(history), "the private history file is removed"
