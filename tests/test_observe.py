"""helpers.observe against real loopback sockets."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest

from helpers import closing, observe
from helpers.core import proc
from helpers.observe import TcpState, tables


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
            # connect() returns once the SYN-ACK came; the listener queues the connection when
            # the ACK that follows arrives, so wait for it rather than guess a time.
            assert _wait_until(lambda: observe.tcp_info(listener).unacked == 1), observe.tcp_info(listener)
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
    assert closing.wait_for_inq(server, 1000) == 1000  # the kernel's own count (SIOCINQ) first
    (row,) = observe.socket_table(local=server.getsockname(), remote=server.getpeername())
    assert row.recv_q == 1000


def test_time_wait_row_has_a_countdown(pair) -> None:
    _, client, server = pair
    local, remote = client.getsockname(), client.getpeername()
    client.close()  # the client closes first: it ends in TIME_WAIT
    server.recv(1)
    server.close()
    closing.wait_for_row(local, remote, TcpState.TIME_WAIT)  # the last ACK crosses loopback in softirq
    (row,) = observe.socket_table(local=local, remote=remote)
    assert row.state is TcpState.TIME_WAIT
    assert row.timer is observe.TimerKind.TIME_WAIT and 50 < row.timer_s <= 60


def test_socket_table_rejects_bad_filters() -> None:
    with pytest.raises(ValueError, match=r"unknown TCP state 'TIMEWAIT'; valid states: ESTABLISHED"):
        observe.socket_table(states=["TIMEWAIT"])
    with pytest.raises(ValueError, match=r"^local port must be an int in 0-65535, got 70000$"):
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
    assert closing.wait_for_inq(server, 300) == 300
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
    monkeypatch.setattr(tables, "sock_diag_lookup", refused)
    rows = observe.socket_table(local=client.getsockname(), remote=client.getpeername())
    assert rows.states() == ["ESTABLISHED"] and rows[0].local == client.getsockname()


def test_ksoftirqd_cpu_s_counts_up() -> None:
    """The kernel's ksoftirqd threads exist on Linux, and their CPU time only grows."""
    first = observe.ksoftirqd_cpu_s()
    assert proc._KSOFTIRQD, "no ksoftirqd/N thread found in /proc"
    assert 0.0 <= first <= observe.ksoftirqd_cpu_s()


def test_ksoftirqd_cpu_s_per_cpu_adds_up_in_nanoseconds() -> None:
    """Each CPU's ksoftirqd counts apart, the parts add up to the whole, and the time is finer
    than a clock tick (a 0.1 s trial may defer only a few ms to ksoftirqd)."""
    per_cpu = {cpu: observe.ksoftirqd_cpu_s([cpu]) for cpu in proc._ksoftirqd_pids()}
    total = observe.ksoftirqd_cpu_s()
    assert observe.ksoftirqd_cpu_s([]) == 0.0
    assert sum(per_cpu.values()) <= total <= sum(per_cpu.values()) + 1.0, (per_cpu, total)
    if os.path.exists("/proc/self/schedstat"):
        assert any(round(v * 1e9) % 10_000_000 for v in per_cpu.values()), per_cpu  # not whole 10 ms ticks
    with pytest.raises(TypeError, match="CPU numbers"):
        observe.ksoftirqd_cpu_s(["0"])


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
    monkeypatch.setattr(tables, "PROC_NET", tmp_path)
    rows = observe.SocketTable(e for e in observe.socket_table() if 0x9637 in (e.local[1], e.remote[1]))
    assert rows.states() == ["LISTEN", "SYN_RECV", "ESTABLISHED"], rows
    assert rows[1].timer_s == pytest.approx(0.94)  # the first listing is kept


def test_socket_table_asks_the_kernel_for_one_port_in_one_pass(tmp_path, monkeypatch) -> None:
    """Given a port, the table comes from sock_diag (one pass over the kernel's table, which
    a read of /proc/net/tcp is not while other users' sockets come and go): with /proc/net
    pointed at an empty folder, a half-closed pair on the port is still listed, whole."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    try:
        client.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the FIN has arrived: conn is in CLOSE_WAIT
        closing.wait_for_state(client, "FIN_WAIT2")  # (TCP_INFO) once its FIN is acknowledged
        monkeypatch.setattr(tables, "PROC_NET", tmp_path)
        port = server.getsockname()[1]
        rows = observe.socket_table(port=port)
        assert sorted(rows.states()) == ["CLOSE_WAIT", "FIN_WAIT2", "LISTEN"], rows
        # connect() may reuse the ephemeral port of an earlier connection to another address
        # that is still in TIME_WAIT: its row matches these one-sided filters too
        live = lambda table: [r.state.name for r in table if r.state is not TcpState.TIME_WAIT]  # noqa: E731
        assert live(observe.socket_table(local=client.getsockname())) == ["FIN_WAIT2"]
        assert live(observe.socket_table(remote=client.getsockname())) == ["CLOSE_WAIT"]
        assert all(r.inode for r in rows) and {r.uid for r in rows} == {os.getuid()}, rows
    finally:
        for s in (client, conn, server):
            s.close()


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


def _wait_until(condition, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_socket_drops_counts_the_syns_a_full_listener_dropped() -> None:
    """listen(0) admits one connection; each further client's SYN is dropped once, and the
    listener's own drop counter (sk_drops, over sock_diag) counts exactly those."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        assert observe.socket_drops(listener) == 0
        clients = [socket.socket() for _ in range(4)]
        try:
            for c in clients:
                c.setblocking(False)
                c.connect_ex(listener.getsockname())
            assert _wait_until(lambda: observe.socket_drops(listener) == 3), observe.socket_drops(listener)
            states = [observe.tcp_info(c).state for c in clients]
            assert states.count(TcpState.ESTABLISHED) == 1 and states.count(TcpState.SYN_SENT) == 3, states
        finally:
            for c in clients:
                c.close()


def test_socket_drops_is_none_without_sock_diag(monkeypatch: pytest.MonkeyPatch) -> None:
    # A mock, because a sandbox that forbids NETLINK_SOCK_DIAG cannot be made here.
    def refused(*_: object, **__: object) -> None:
        raise PermissionError(1, "netlink not allowed here")

    monkeypatch.setattr(tables, "sock_diag_dump", refused)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert observe.socket_drops(listener) is None


def test_socket_drops_refuses_what_is_not_a_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(TypeError, match=r"^socket_drops\(\) needs a TCP socket, got a AF_INET/SOCK_DGRAM socket$"):
            observe.socket_drops(udp)


def test_epoll_interest_is_the_kernels_list_with_masks_and_data() -> None:
    a, b = socket.socketpair()
    ep = select.epoll()
    try:
        ep.register(a.fileno(), select.EPOLLIN | select.EPOLLET)
        ep.register(b.fileno(), select.EPOLLOUT)
        got = {e.fd: e for e in observe.epoll_interest(ep)}
        assert set(got) == {a.fileno(), b.fileno()}
        # the kernel adds EPOLLERR | EPOLLHUP to every mask; Python stores the fd in data.fd, the
        # union's low 32 bits (the other 32 are whatever was on CPython's stack)
        assert got[a.fileno()].events == select.EPOLLIN | select.EPOLLET | select.EPOLLERR | select.EPOLLHUP
        assert got[b.fileno()].events == select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
        assert all(e.data_fd == e.fd == e.data & 0xFFFFFFFF for e in got.values())
        ep.modify(b.fileno(), select.EPOLLIN)
        ep.unregister(a.fileno())
        assert [(e.fd, e.events & ~(select.EPOLLERR | select.EPOLLHUP)) for e in observe.epoll_interest(ep.fileno())] \
            == [(b.fileno(), select.EPOLLIN)]
    finally:
        ep.close()
        a.close()
        b.close()


def test_epoll_interest_refuses_what_is_no_open_epoll() -> None:
    with socket.socket() as s:
        with pytest.raises(ValueError, match=rf"^fd {s.fileno()} is not an epoll instance: it is socket:\[\d+\]$"):
            observe.epoll_interest(s.fileno())
    ep = select.epoll()
    ep.close()
    with pytest.raises(ValueError, match=r"^epoll_interest\(\) needs an open epoll instance, got a closed one$"):
        observe.epoll_interest(ep)
    with pytest.raises(TypeError, match=r"^epoll_interest\(\) takes a select.epoll or its fd \(an int >= 0\), got str"):
        observe.epoll_interest("3")


def test_entries_for_a_socket_without_a_peer_is_its_own_row() -> None:
    """A listener gives its LISTEN row, not its SO_REUSEPORT twin's; a connect() that no one
    answers (listen(0) with its one slot taken: the SYN is dropped) gives its SYN_SENT row."""
    with socket.socket() as first, socket.socket() as twin:
        for s in (first, twin):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        twin.bind(first.getsockname())
        first.listen(0)
        twin.listen(0)
        rows = observe.entries_for(first)
        assert rows.states() == ["LISTEN"] and rows[0].inode == os.fstat(first.fileno()).st_ino, rows
    with socket.create_server(("127.0.0.1", 0), backlog=0) as full:
        waiting = [socket.socket() for _ in range(3)]
        try:
            for c in waiting:
                c.setblocking(False)
                c.connect_ex(full.getsockname())
            assert _wait_until(lambda: observe.socket_drops(full) >= 2)
            stuck = [c for c in waiting if observe.tcp_info(c).state is TcpState.SYN_SENT]
            assert stuck, [observe.tcp_info(c).state for c in waiting]
            assert observe.entries_for(stuck[0]).states() == ["SYN_SENT"]
        finally:
            for c in waiting:
                c.close()
