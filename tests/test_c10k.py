"""helpers.c10k: every server model echoes and answers HTTP correctly under concurrency, and stops cleanly."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import warnings

import pytest

from helpers import c10k
from helpers.core import registry

ALL_MODELS = list(c10k.MODELS)


def _echo_concurrently(address: tuple[str, int], clients: int = 40, rounds: int = 3) -> list[bytes]:
    """Open `clients` connections at once, each sending unique messages; return what came back."""
    socks = [socket.create_connection(address, timeout=10) for _ in range(clients)]
    got = []
    try:
        for r in range(rounds):
            for i, s in enumerate(socks):
                s.sendall(f"client {i} round {r}|".encode())
            for i, s in enumerate(socks):
                want = f"client {i} round {r}|".encode()
                data = b""
                while len(data) < len(want):
                    chunk = s.recv(100)
                    assert chunk, f"client {i}: connection closed after {data!r}"
                    data += chunk
                got.append(data)
    finally:
        for s in socks:
            s.close()
    return got


@pytest.mark.parametrize("model", ALL_MODELS)
def test_model_echoes_under_concurrency_and_stops(model: str) -> None:
    # The pool gets as many workers as clients: with fewer, the rest wait (test below).
    options = {"workers": 40} if model == "pool" else {}
    with c10k.start_model(model, "echo", **options) as srv:
        assert srv.address[0] == "127.0.0.1" and srv.address[1] > 0
        assert srv in registry.live_servers()
        got = _echo_concurrently(srv.address)
    assert got == [f"client {i} round {r}|".encode() for r in range(3) for i in range(40)]
    assert not srv.running and srv not in registry.live_servers()
    srv.stop()  # idempotent


@pytest.mark.parametrize("model", ALL_MODELS)
def test_model_answers_http_keepalive(model: str) -> None:
    with c10k.start_model(model, "http") as srv:
        conn = http.client.HTTPConnection(*srv.address, timeout=10)
        try:
            for _ in range(3):  # three requests on one keep-alive connection
                conn.request("GET", "/")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"ok\n")
        finally:
            conn.close()


@pytest.mark.parametrize("model", ["thread", "epoll", "asyncio"])
def test_model_in_child_process_reports_stats_and_memory(model: str) -> None:
    with c10k.start_model(model, "echo", in_child=True) as srv:
        assert _echo_concurrently(srv.address, clients=5, rounds=1)
        stats = srv.stats()
        assert stats[0]["accepted"] == 5 and stats[0]["errors"] == []
        held = [socket.create_connection(srv.address) for _ in range(7)]
        try:
            assert srv.wait_serving(7)  # a thread, a transport or a loop entry for each
            assert not srv.wait_serving(8, timeout_s=0.1)
        finally:
            for s in held:
                s.close()
        assert srv.pss_kb() > 1000 and srv.cpu_seconds() > 0  # starting Python alone takes a few ticks
        pid = srv.pids[0]
    assert not os.path.exists(f"/proc/{pid}")  # exited and reaped


def test_fork_children_are_reaped_and_stop_kills_open_ones() -> None:
    held: list[socket.socket] = []
    try:
        with c10k.ForkPerConnection("echo") as srv:
            held = [socket.create_connection(srv.address) for _ in range(5)]
            _echo_concurrently(srv.address, clients=5, rounds=1)  # 5 more children, which exit
            for s in held:
                s.sendall(b"x")
                assert s.recv(1) == b"x"
            # The server + one child per held connection, once the other 5 exited and were reaped.
            deadline = time.monotonic() + 5
            while len(c10k.process_tree(srv.pids[0])) != 1 + 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(c10k.process_tree(srv.pids[0])) == 1 + 5
            stats = srv.stats()[0]
            assert stats["accepted"] == 10 and stats["serving"] == 5
            pid = srv.pids[0]
        assert not os.path.exists(f"/proc/{pid}")  # reaped, and its children with it
        for s in held:
            assert s.recv(1) == b""  # the children were stopped: their ends are closed
    finally:
        for s in held:
            s.close()


def test_each_fork_child_holds_only_its_own_connection() -> None:
    """Connections accepted in one batch: each child closes the listener and its batch-mates,
    the parent closes every connection (counted in /proc/PID/fd); no child is a zombie."""
    from helpers.observe import open_fds

    def sockets(pid: int) -> int:
        return sum(fd.socket_inode is not None for fd in open_fds(pid))

    with c10k.ForkPerConnection("echo") as srv:
        clients = [socket.create_connection(srv.address, timeout=5) for _ in range(6)]  # queued together
        try:
            for c in clients:
                c.sendall(b"x")
                assert c.recv(1) == b"x"
            # A child can answer before the parent has run close() on its own copy; the
            # parent answers "stats" only between accept batches, so after this it has.
            assert srv.wait_serving(6)
            server = srv.pids[0]
            kids = c10k.process_tree(server)[1:]
            assert len(kids) == 6 and sockets(server) == 1  # the listener alone
            assert [sockets(k) for k in kids] == [1] * 6
            assert c10k.child_states(server) and "Z" not in c10k.child_states(server)
        finally:
            for c in clients:
                c.close()
        deadline = time.monotonic() + 5
        while c10k.child_states(server) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c10k.child_states(server) == []  # every child exited and was reaped


def test_child_states_refuses_a_bad_pid() -> None:
    with pytest.raises(ValueError, match=r"^pid must be"):
        c10k.child_states(0)


def test_reuseport_processes_share_one_port() -> None:
    with c10k.ReusePortProcesses("echo", processes=2) as srv:
        assert len(srv.pids) == 2
        _echo_concurrently(srv.address, clients=40, rounds=1)
        per_process = [s["accepted"] for s in srv.stats()]
    assert sum(per_process) == 40 and all(n > 0 for n in per_process)  # the kernel used both


def test_pool_serves_at_most_workers_connections_at_once() -> None:
    with c10k.ThreadPool("echo", workers=2) as srv:
        a, b, c = (socket.create_connection(srv.address, timeout=5) for _ in range(3))
        with a, b, c:
            for s in (a, b):
                s.sendall(b"1")
                assert s.recv(1) == b"1"
            c.sendall(b"3")
            c.settimeout(0.3)
            with pytest.raises(TimeoutError):
                c.recv(1)  # both workers are busy with a and b: c waits in the queue
            a.close()  # frees a worker, which takes c from the queue
            c.settimeout(5)
            assert c.recv(1) == b"3"


def test_stop_unblocks_thread_models_with_idle_clients() -> None:
    for model in ("thread", "pool", "main-sub", "asyncio"):
        srv = c10k.start_model(model, "echo")
        idle = [socket.create_connection(srv.address) for _ in range(3)]
        deadline = time.monotonic() + 5
        while srv.accepted < 3 and time.monotonic() < deadline:  # closing a listener resets
            time.sleep(0.005)  # connections still in its accept queue; wait until accepted
        srv.stop(timeout_s=2)
        assert not [t for t in threading.enumerate() if t.name.startswith(f"course-server-{srv.name}")]
        for s in idle:
            assert s.recv(1) == b""  # the server closed its end
            s.close()


def test_a_connection_the_pool_takes_while_stopping_is_not_left_with_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The acceptor hands a connection over just as stop() looks for connections to shut down:
    stop() must still unblock the worker that gets it. This forces the one interleaving where
    the hand-over starts before stop() and ends after stop() took its list."""
    snapshot_taken = threading.Event()
    real_setblocking, real_shut_down = socket.socket.setblocking, c10k.shut_down

    def slow_setblocking(self: socket.socket, flag: bool) -> None:  # the acceptor, inside _take()
        if threading.current_thread().name.endswith("-acceptor") and not snapshot_taken.is_set():
            snapshot_taken.wait(5)
        real_setblocking(self, flag)

    def slow_shut_down(conns: list[socket.socket]) -> None:  # stop(), between its list and the workers' None
        snapshot_taken.set()
        time.sleep(0.3)  # the acceptor finishes its hand-over in here
        real_shut_down(conns)

    monkeypatch.setattr(socket.socket, "setblocking", slow_setblocking)
    monkeypatch.setattr(c10k, "shut_down", slow_shut_down)
    srv = c10k.ThreadPool("echo", workers=2)
    with socket.create_connection(srv.address, timeout=5) as client:
        deadline = time.monotonic() + 5
        while srv.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "threads still running" would be the bug
            srv.stop(timeout_s=2)
        assert not [t for t in threading.enumerate() if t.name.startswith(f"course-server-{srv.name}")]
        assert client.recv(1) == b""  # the server closed its end


def test_a_connection_thread_started_while_stopping_is_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    """The acceptor starts one last connection's thread after stop() listed the threads to
    join: stop() must still wait for it. Forced here: the acceptor's hand-over is held until
    stop() joins the acceptor, and the connection's thread takes 0.2 s to finish."""
    joining = threading.Event()
    real_setblocking, real_join, real_serve = socket.socket.setblocking, threading.Thread.join, c10k.serve_blocking

    def slow_setblocking(self: socket.socket, flag: bool) -> None:  # the acceptor, inside _take()
        if threading.current_thread().name.endswith("-acceptor") and not joining.is_set():
            joining.wait(5)
        real_setblocking(self, flag)

    def join(self: threading.Thread, timeout: float | None = None) -> None:
        if self.name.endswith("-acceptor"):
            joining.set()
        real_join(self, timeout)

    def slow_serve(conn: socket.socket, service: str) -> None:
        time.sleep(0.2)
        real_serve(conn, service)

    monkeypatch.setattr(socket.socket, "setblocking", slow_setblocking)
    monkeypatch.setattr(threading.Thread, "join", join)
    monkeypatch.setattr(c10k, "serve_blocking", slow_serve)
    srv = c10k.ThreadPerConnection("echo")
    with socket.create_connection(srv.address, timeout=5) as client:
        deadline = time.monotonic() + 5
        while srv.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        srv.stop(timeout_s=2)
        assert not [t for t in threading.enumerate() if t.name.startswith(f"course-server-{srv.name}")]
        assert client.recv(1) == b""


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"^service must be one of \('echo', 'http'\), got 'ftp'$"):
        c10k.start_model("epoll", "ftp")
    with pytest.raises(ValueError, match=r"^model must be one of"):
        c10k.start_model("green-threads")
    with pytest.raises(ValueError, match=r"^workers must be an int in 1-256, got 0$"):
        c10k.ThreadPool(workers=0)
    assert not registry.live_servers()


@pytest.mark.parametrize("model", ["thread", "epoll", "asyncio"])
def test_a_protocol_error_closes_only_that_connection(model: str) -> None:
    with c10k.start_model(model, "http") as srv:
        with socket.create_connection(srv.address, timeout=5) as bad, socket.create_connection(srv.address) as good:
            bad.sendall(b"hello\r\n\r\n")
            answer = b""
            while chunk := bad.recv(1000):  # the 400 answer, then the server closes
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in answer
            good.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = good.recv(1000)
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok\n")


def test_plan_c10k_fits_the_fd_limit_and_the_port_range() -> None:
    plan = c10k.plan_c10k(10_000, fd_hard_limit=20_000)
    assert (plan.connections, plan.server_processes, plan.client_processes) == (10_000, 1, 2)
    assert plan.sources == ["127.0.0.1"]
    big = c10k.plan_c10k(50_000, fd_hard_limit=20_000)
    per_process = 20_000 - c10k.FD_MARGIN
    assert big.connections == 50_000 and big.server_processes * per_process >= 50_000
    assert big.client_processes * per_process >= 50_000
    assert len(big.sources) * big.ports_per_source * c10k.PORT_SHARE >= 50_000
    assert "SO_REUSEPORT" in big.note


def test_plan_c10k_plans_fewer_connections_under_a_low_limit_and_says_why() -> None:
    plan = c10k.plan_c10k(10_000, fd_hard_limit=1024)
    assert plan.connections == (1024 - c10k.FD_MARGIN) * c10k.MAX_PROCESSES < 10_000
    assert plan.server_processes == plan.client_processes == c10k.MAX_PROCESSES
    assert "fd hard limit is 1024" in plan.note and "not 10,000" in plan.note
    with pytest.raises(ValueError, match=r"^connections must be an int in 1-200000, got 0$"):
        c10k.plan_c10k(0)


def test_start_models_starts_several_children_and_each_serves() -> None:
    started = c10k.start_models({"epoll": {}, "pool": {"workers": 4}})
    try:
        for server in started.values():
            assert _echo_concurrently(server.address, clients=4, rounds=1)
    finally:
        for server in started.values():
            server.stop()
    assert not registry.live_servers()
