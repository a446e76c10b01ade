"""helpers.servers: real servers that answer, hand results back, and always stop."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from helpers import behaviours, servers
from helpers.observe import TcpState, tcp_info


def test_tcp_echo_and_result() -> None:
    with servers.TCPServer(behaviours.echo) as srv:
        assert srv.address[0] == "127.0.0.1" and srv.address[1] > 0
        with socket.create_connection(srv.address) as c:
            c.sendall(b"hello")
            assert c.recv(100) == b"hello"
        assert srv.result() == 5
    assert not srv.running and srv not in servers.live_servers()


def test_stop_is_idempotent_and_unblocks_handlers() -> None:
    srv = servers.TCPServer(behaviours.discard)
    c = socket.create_connection(srv.address)
    time.sleep(0.02)
    started = time.monotonic()
    srv.stop()
    srv.stop()
    assert time.monotonic() - started < 1.0
    c.close()


def test_handler_errors_are_raised_by_stop() -> None:
    def broken(conn: socket.socket) -> None:
        raise ValueError("bad request")

    srv = servers.TCPServer(broken)
    socket.create_connection(srv.address).close()
    deadline = time.monotonic() + 2
    while not srv.errors and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(servers.ServerError, match=r"a handler raised ValueError: bad request") as info:
        srv.stop()
    assert isinstance(info.value.__cause__, ValueError)


def test_hold_mode_never_reads() -> None:
    with servers.TCPServer(None) as srv, socket.create_connection(srv.address) as c:
        c.setblocking(False)
        sent = 0
        try:
            while True:
                sent += c.send(b"x" * 65536)
        except BlockingIOError:
            pass
        assert sent > 0 and tcp_info(c).state is TcpState.ESTABLISHED


def test_accept_false_fills_the_queue() -> None:
    with servers.TCPServer(accept=False, backlog=1) as srv:
        clients = [socket.create_connection(srv.address) for _ in range(2)]
        time.sleep(0.02)
        assert tcp_info(srv.sock).unacked == 2
        for c in clients:
            c.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"port": 70000}, ValueError, r"^port must be in 0-65535 \(0 lets the kernel choose\), got 70000$"),
        ({"port": "80"}, TypeError, r"^port must be an int, got str '80'$"),
        ({"host": "localhost"}, ValueError, r"host must be an IP address"),
        ({"backlog": -1}, ValueError, r"backlog must be an int >= 0"),
        ({"handler": 42}, TypeError, r"handler must be a function"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        servers.TCPServer(**kwargs)


def test_udp_server_replies_and_records() -> None:
    with servers.UDPServer(lambda data, addr: data.upper()) as srv:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(2)
            c.sendto(b"ping", srv.address)
            assert c.recvfrom(100)[0] == b"PING"
        addr, data = srv.result()
        assert data == b"ping"


def test_unix_server_path_is_removed_on_stop() -> None:
    with servers.UnixStreamServer(behaviours.echo) as srv:
        path = srv.address
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(path)
            c.sendall(b"x")
            assert c.recv(1) == b"x"
    assert not os.path.exists(path)


def test_unix_server_abstract_name() -> None:
    name = f"\0course-test-{os.getpid()}"
    with servers.UnixStreamServer(behaviours.echo, path=name) as srv, socket.socket(socket.AF_UNIX) as c:
        c.connect(srv.address)
        c.sendall(b"y")
        assert c.recv(1) == b"y"


def test_process_server_pause_resume_kill() -> None:
    with servers.ProcessServer("pong") as srv:
        assert srv.pid != os.getpid()
        with socket.create_connection(srv.address) as c:
            c.settimeout(2)
            c.sendall(b"PING 1\n")
            assert c.recv(100) == b"PONG 1\n"
            srv.pause()
            c.settimeout(0.3)
            c.sendall(b"PING 2\n")
            with pytest.raises(TimeoutError):
                c.recv(100)
            srv.resume()
            c.settimeout(2)
            assert c.recv(100) == b"PONG 2\n"
            assert srv.kill() == -9
            assert c.recv(100) == b""  # the dead child's kernel closed its socket
    assert srv not in servers.live_servers()


def test_pong_hangs_up_on_a_line_with_no_end() -> None:
    with servers.TCPServer(behaviours.pong) as srv, socket.create_connection(srv.address, timeout=5) as c:
        c.sendall(b"PING ok\n")
        assert c.recv(100) == b"PONG ok\n"
        c.sendall(b"x" * behaviours.MAX_PING_LINE + b"more, and never a newline")
        try:
            assert c.recv(100) == b""  # a bounded read, then close: not a buffer that grows forever
        except ConnectionResetError:
            pass  # also a hang-up: the server closed with our unread bytes still queued
        assert srv.result(timeout_s=5) == 1


def test_pong_answers_a_line_at_the_limit() -> None:
    line = b"PING " + b"x" * (behaviours.MAX_PING_LINE - 6) + b"\n"
    with servers.TCPServer(behaviours.pong) as srv, socket.create_connection(srv.address, timeout=5) as c:
        c.sendall(line)
        got = b""
        while len(got) < len(line):
            got += c.recv(1 << 16)
        assert got == b"PONG" + line[4:]


def test_process_server_unknown_behaviour() -> None:
    with pytest.raises(ValueError, match=r"unknown behaviour 'ech'; choose one of"):
        servers.ProcessServer("ech")


def test_stop_all_stops_everything() -> None:
    a, b = servers.TCPServer(), servers.UDPServer()
    assert servers.stop_all() >= 2
    assert not a.running and not b.running


def test_stop_right_after_a_connect_joins_the_late_handler() -> None:
    """stop() racing with accept(): a connection accepted while stop() runs still has its
    handler shut down and joined before stop() returns (it used to be left blocked in recv)."""
    for _ in range(200):
        with servers.TCPServer(lambda conn: conn.recv(1)) as srv, socket.create_connection(srv.address) as c:
            pass  # stop() at once: the accept may happen after stop() looked at the connections
        prefix = f"{servers.THREAD_PREFIX}-{srv.name}-"
        alive = [t.name for t in threading.enumerate() if t.name.startswith(prefix)]
        assert not alive, f"stop() returned with {alive} still running"
        del c
