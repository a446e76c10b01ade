"""helpers.observe against real loopback sockets."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from helpers import observe
from helpers.observe import TcpState


@pytest.fixture
def pair():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    yield listener, client, server
    for s in (client, server, listener):
        s.close()


def test_tcp_info_counts_the_handshake(pair) -> None:
    _, client, server = pair
    info = observe.tcp_info(client)
    assert info.state is TcpState.ESTABLISHED
    assert (info.segs_out, info.segs_in) == (2, 1)
    assert info.snd_mss > 0 and info.rto_us >= 200_000
    assert observe.tcp_info(server).segs_in == 2


def test_tcp_info_of_a_listener_reports_its_accept_queue() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=7) as listener:
        with socket.create_connection(listener.getsockname()):
            time.sleep(0.02)
            info = observe.tcp_info(listener)
    assert info.state is TcpState.LISTEN
    assert (info.unacked, info.sacked) == (1, 7)


def test_tcp_info_rejects_what_is_not_tcp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(TypeError, match=r"^tcp_info\(\) needs a TCP socket, got a AF_INET/SOCK_DGRAM socket$"):
            observe.tcp_info(udp)
    with pytest.raises(TypeError, match="got str"):
        observe.tcp_info("not a socket")  # type: ignore[arg-type]
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        observe.tcp_info(closed)


def test_tcp_info_from_short_bytes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 104"):
        observe.TcpInfo.from_bytes(b"\x01" * 10)


def test_socket_table_filters_by_four_tuple(pair) -> None:
    _, client, server = pair
    mine = observe.socket_table(local=client.getsockname(), remote=client.getpeername())
    assert [e.state for e in mine] == [TcpState.ESTABLISHED]
    both = observe.entries_for(client)
    assert [e.local for e in both] == [client.getsockname(), server.getsockname()]
    assert "ESTABLISHED" in repr(both) and "<table>" in both._repr_html_()


def test_socket_table_shows_queues(pair) -> None:
    _, client, server = pair
    client.sendall(b"x" * 1000)
    time.sleep(0.02)
    (row,) = observe.socket_table(local=server.getsockname(), remote=server.getpeername())
    assert row.recv_q == 1000


def test_time_wait_row_has_a_countdown(pair) -> None:
    _, client, server = pair
    local, remote = client.getsockname(), client.getpeername()
    client.close()  # the client closes first: it ends in TIME_WAIT
    server.recv(1)
    server.close()
    time.sleep(0.02)
    (row,) = observe.socket_table(local=local, remote=remote)
    assert row.state is TcpState.TIME_WAIT
    assert row.timer is observe.TimerKind.TIME_WAIT and 50 < row.timer_s <= 60


def test_socket_table_rejects_bad_filters() -> None:
    with pytest.raises(ValueError, match=r"unknown TCP state 'TIMEWAIT'; valid states: ESTABLISHED"):
        observe.socket_table(states=["TIMEWAIT"])
    with pytest.raises(ValueError, match=r"port must be 0-65535, got 70000"):
        observe.socket_table(local=("127.0.0.1", 70000))
    with pytest.raises(TypeError, match=r"must be a \(host, port\) tuple"):
        observe.socket_table(remote="127.0.0.1:80")  # type: ignore[arg-type]
    assert TcpState.parse("time-wait") is TcpState.TIME_WAIT


def test_counters_diff_sees_a_reset() -> None:
    placeholder = socket.socket()
    placeholder.bind(("127.0.0.1", 0))
    with observe.counters_diff() as diff:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(placeholder.getsockname())
    placeholder.close()
    assert diff["Tcp.OutRsts"] >= 1 and diff.changed["Tcp.AttemptFails"] >= 1


def test_counters_name_close_matches() -> None:
    with pytest.raises(KeyError, match="did you mean Tcp.OutRsts"):
        observe.kernel_counters()["Tcp.OutRst"]
    with observe.counters_diff() as diff:
        with pytest.raises(RuntimeError, match="after the `with counters_diff\\(\\)` block"):
            _ = diff.changed


def test_open_fds_lists_our_socket() -> None:
    with socket.socket() as s:
        entries = {e.fd: e for e in observe.open_fds()}
        assert entries[s.fileno()].socket_inode is not None


def test_ipv6_rows_decode(pair) -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback in this container")
    with listener, socket.create_connection(listener.getsockname()[:2]) as c:
        rows = observe.socket_table(local=c.getsockname()[:2])
        assert rows and rows[0].local[0] == "::1"


def test_exact_lookup_agrees_with_proc(pair) -> None:
    _, client, server = pair
    client.sendall(b"y" * 300)
    time.sleep(0.02)
    local, remote = server.getsockname(), server.getpeername()
    (fast,) = observe.socket_table(local=local, remote=remote)  # NETLINK_SOCK_DIAG
    (slow,) = [e for e in observe.socket_table(port=local[1]) if e.local == local and e.remote == remote]
    assert (fast.state, fast.recv_q, fast.inode) == (slow.state, slow.recv_q, slow.inode) == (
        TcpState.ESTABLISHED, 300, slow.inode)
    assert observe.socket_table(local=local, remote=("127.0.0.1", 9)) == []
    assert observe.socket_table(local=local, remote=remote, states=["LISTEN"]) == []


def test_exact_lookup_falls_back_to_proc_without_netlink(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    # A mock, because a sandbox that forbids NETLINK_SOCK_DIAG cannot be made here.
    def refused(*_: object) -> None:
        raise PermissionError(1, "netlink not allowed here")

    _, client, _ = pair
    monkeypatch.setattr(observe, "_sock_diag_lookup", refused)
    rows = observe.socket_table(local=client.getsockname(), remote=client.getpeername())
    assert rows.states() == ["ESTABLISHED"] and rows[0].local == client.getsockname()


def test_ksoftirqd_cpu_s_counts_up() -> None:
    """The kernel's ksoftirqd threads exist on Linux, and their CPU time only grows."""
    first = observe.ksoftirqd_cpu_s()
    assert observe._KSOFTIRQD, "no ksoftirqd/N thread found in /proc"
    assert 0.0 <= first <= observe.ksoftirqd_cpu_s()


def test_proc_stat_fields_survive_a_command_name_with_parentheses() -> None:
    assert observe.proc_stat("/proc/self/stat")[1:3] == [str(os.getppid()), str(os.getpgid(0))]
    seen = {}

    def named() -> None:  # a thread's comm is ours to set, spaces and ')' included
        tid = threading.get_native_id()
        with open(f"/proc/self/task/{tid}/comm", "w") as f:
            f.write("a) S 1 (b")
        seen["fields"] = observe.proc_stat(f"/proc/self/task/{tid}/stat")

    t = threading.Thread(target=named)
    t.start()
    t.join()
    assert seen["fields"][0] in "RS" and seen["fields"][1] == str(os.getppid()), seen


# Two rows of one read of /proc/net/tcp, recorded while other programs opened and closed
# sockets (ports changed; columns after the inode cut): the kernel listed one half-open request socket twice, its
# timer 10 ms apart. That happened in about 1 of 60 reads under heavy churn, too rarely to
# wait for in a test, so the test replays the recorded shape from a file.
_DOUBLE_LISTED_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9637 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 65276550
  16: 0100007F:9637 0100007F:B68C 03 00000000:00000000 01:0000005E 00000000     0        0 0
  17: 0100007F:9637 0100007F:B68C 03 00000000:00000000 01:0000005D 00000000     0        0 0
 303: 0100007F:B68C 0100007F:9637 01 00000000:00000000 00:00000000 00000000     0        0 65276551
"""


def test_socket_table_lists_a_socket_once_when_the_kernel_listed_it_twice(tmp_path, monkeypatch) -> None:
    (tmp_path / "tcp").write_text(_DOUBLE_LISTED_TCP)
    monkeypatch.setattr(observe, "PROC_NET", tmp_path)
    rows = observe.socket_table(port=0x9637)
    assert rows.states() == ["LISTEN", "SYN_RECV", "ESTABLISHED"], rows
    assert rows[1].timer_s == pytest.approx(0.94)  # the first listing is kept


def test_socket_table_keeps_listeners_that_share_an_address() -> None:
    """SO_REUSEPORT listeners have one address and no peer; their inodes tell them apart."""
    first = socket.socket()
    second = socket.socket()
    try:
        for s in (first, second):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        second.bind(first.getsockname())
        for s in (first, second):
            s.listen()
        rows = observe.socket_table(local=first.getsockname(), states=["LISTEN"])
        assert sorted(r.inode for r in rows) == sorted(os.fstat(s.fileno()).st_ino for s in (first, second)), rows
    finally:
        first.close()
        second.close()
