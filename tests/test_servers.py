"""helpers.servers: real servers that answer, hand results back, and always stop."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import behaviours, servers
from helpers.core import registry
from helpers.observe import TcpState, tcp_info


def test_tcp_echo_and_result() -> None:
    with servers.TCPServer(behaviours.echo) as srv:
        assert srv.address[0] == "127.0.0.1" and srv.address[1] > 0
        with socket.create_connection(srv.address) as c:
            c.sendall(b"hello")
            assert c.recv(100) == b"hello"
        assert srv.result() == 5
    assert not srv.running and srv not in registry.live_servers()


def test_stop_is_idempotent_and_unblocks_handlers() -> None:
    """A handler blocked in recv() (its client sends nothing and stays) is woken by stop(),
    which returns once it has ended; a second stop() does nothing."""
    entered, ended = threading.Event(), threading.Event()

    def blocked(conn: socket.socket) -> int:
        entered.set()
        try:
            return behaviours.discard(conn)
        finally:
            ended.set()

    srv = servers.TCPServer(blocked)
    c = socket.create_connection(srv.address)
    assert entered.wait(2), "the server never ran the handler"
    assert not ended.is_set(), "the handler returned although its client neither sent nor closed"
    started = time.monotonic()
    srv.stop()
    assert ended.is_set(), "stop() returned while the handler was still blocked"
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
        deadline = time.monotonic() + 2  # each connection is queued when its final ACK arrives
        while tcp_info(srv.sock).unacked < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert tcp_info(srv.sock).unacked == 2
        for c in clients:
            c.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"port": 70000}, ValueError, r"^port must be an int in 0-65535 \(0 lets the kernel choose\), got 70000$"),
        ({"port": "80"}, TypeError, r"^port must be an int in 0-65535 \(0 lets the kernel choose\), got str '80'$"),
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
    assert srv not in registry.live_servers()


def test_pause_returns_once_every_thread_of_the_child_has_stopped() -> None:
    """A group stop reaches the threads one by one; pause() must not return while the thread
    serving a connection still runs (it could read the next PING and then freeze, unanswered
    and no longer queued: lesson 09 asserts on that queue)."""
    with servers.ProcessServer("pong") as srv:
        for n in range(20):
            with socket.create_connection(srv.address) as c:
                c.settimeout(2)
                c.sendall(b"PING %d\n" % n)
                assert c.recv(100) == b"PONG %d\n" % n
                srv.pause()
                tids = os.listdir(f"/proc/{srv.pid}/task")
                assert len(tids) >= 2, tids  # the main thread and the connection's
                states = {tid: Path(f"/proc/{srv.pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                          for tid in tids}
                assert set(states.values()) <= {"T", "t"}, states
                srv.resume()


def test_a_process_server_stopped_while_frozen_still_exits_on_sigterm() -> None:
    """stop() resumes a frozen child and asks it to exit: it must leave cleanly (exit 0), not
    be killed after stop()'s timeout because the signal reached one of its server threads."""
    for _ in range(6):  # which thread the kernel picks varies (old code: killed in about half the runs)
        srv = servers.ProcessServer("pong")
        with socket.create_connection(srv.address) as c:
            c.settimeout(2)
            c.sendall(b"PING 1\n")
            assert c.recv(100) == b"PONG 1\n"
            srv.pause()
            c.sendall(b"PING 2\n")  # waits, unread, in the frozen child's queue
            srv.stop()
        assert srv.process.returncode == 0, f"the child was killed ({srv.process.returncode}), not stopped"


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
    assert registry.stop_all() >= 2
    assert not a.running and not b.running


def test_stop_right_after_a_connect_joins_the_late_handler() -> None:
    """stop() racing with accept(): a connection accepted while stop() runs still has its
    handler shut down and joined before stop() returns (it used to be left blocked in recv).
    Some of the 200 rounds must have started a handler, or the race was never run."""
    handled = []

    def handler(conn: socket.socket) -> bytes:
        handled.append(1)
        return conn.recv(1)

    for _ in range(200):
        with servers.TCPServer(handler) as srv, socket.create_connection(srv.address) as c:
            pass  # stop() at once: the accept may happen after stop() looked at the connections
        prefix = f"{registry.THREAD_PREFIX}-{srv.name}-"
        alive = [t.name for t in threading.enumerate() if t.name.startswith(prefix)]
        assert not alive, f"stop() returned with {alive} still running"
        del c
    assert handled, "no round accepted its connection before stopping: the race was not exercised"


def _poll_echo(listener: socket.socket, wake: socket.socket) -> int:
    """A small poll() echo loop, as a lesson writes one: returns the connections it served."""
    import select

    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(wake, select.POLLIN)
    conns: dict[int, socket.socket] = {}
    served = 0
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == wake.fileno():
                    return served
                if fd == listener.fileno():
                    conn, _ = listener.accept()
                    conns[conn.fileno()] = conn
                    poller.register(conn, select.POLLIN)
                    served += 1
                elif data := conns[fd].recv(1024):
                    conns[fd].sendall(data)
                else:
                    poller.unregister(fd)
                    conns.pop(fd).close()
    finally:
        for conn in conns.values():
            conn.close()


def test_loop_server_runs_the_lessons_loop_and_stop_wakes_it() -> None:
    with servers.LoopServer(_poll_echo) as srv:
        assert srv.address[0] == "127.0.0.1" and srv in registry.live_servers()
        assert srv.sock.getblocking() is False, "the loop gets a non-blocking listener"
        with socket.create_connection(srv.address) as c:
            c.sendall(b"ping")
            assert c.recv(10) == b"ping"
        started = time.monotonic()
    assert time.monotonic() - started < 1.0, "stop() woke the loop through its wake-up socket"
    assert srv.result(timeout_s=0) == 1 and srv not in registry.live_servers()


def test_loop_server_hands_the_loops_error_to_stop() -> None:
    def broken(listener: socket.socket, wake: socket.socket) -> None:
        raise RuntimeError("loop failed")

    srv = servers.LoopServer(broken)
    with pytest.raises(servers.ServerError, match=r"a handler raised RuntimeError: loop failed"):
        srv.stop()
    with pytest.raises(TypeError, match=r"^loop must be a function taking \(listener, wake\), got 3$"):
        servers.LoopServer(3)  # type: ignore[arg-type]
