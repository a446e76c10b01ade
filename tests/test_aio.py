"""helpers.aio: the asyncio server in a thread (its services are tested in test_services.py), /proc readers."""

from __future__ import annotations

import asyncio
import http.client
import os
import platform
import socket
import threading

import pytest

from helpers import aio, servers
from helpers.core import registry

# ---- AsyncioServer (real sockets)

def test_asyncio_echo_round_trip_on_loopback() -> None:
    with aio.AsyncioServer("echo") as srv:
        assert srv.address[0] == "127.0.0.1" and srv.address[1] > 0
        assert srv in registry.live_servers()
        names = [t.name for t in threading.enumerate()]
        assert f"{registry.THREAD_PREFIX}-{srv.name}-loop" in names
        with socket.create_connection(srv.address, timeout=5) as c:
            c.sendall(b"hello")
            assert c.recv(100) == b"hello"
        assert type(srv.loop._selector).__name__ == "EpollSelector"
    assert not srv.running and srv not in registry.live_servers()
    assert srv.loop.is_closed()


def test_asyncio_http_serves_http_client_and_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    for host in ("127.0.0.1", "::1"):
        try:
            srv = aio.AsyncioServer("http", host=host)
        except OSError as exc:  # ::1 may be unconfigured in a container
            pytest.skip(f"cannot bind {host}: {exc}")
        with srv:
            conn = http.client.HTTPConnection(host, srv.address[1], timeout=5)
            for _ in range(2):  # keep-alive: two requests on one connection
                conn.request("GET", "/")
                resp = conn.getresponse()
                assert (resp.status, resp.read()) == (200, b"ok\n")
            conn.close()


def test_asyncio_http_closes_after_a_hostile_head() -> None:
    with aio.AsyncioServer("http") as srv, socket.create_connection(srv.address, timeout=5) as c:
        c.sendall(b"GET /" + b"a" * 10_000)
        answer = b""
        while chunk := c.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 431 ")


def _assert_closed_by_the_server(clients: list[socket.socket]) -> None:
    """Each client sees its connection closed (EOF, or a reset: abort() resets), then closes it."""
    for c in clients:
        try:
            assert c.recv(10) == b""
        except ConnectionResetError:  # abort() resets: also a closed connection
            pass
        c.close()


def test_stop_closes_open_connections_and_is_idempotent() -> None:
    srv = aio.AsyncioServer("echo")
    clients = [socket.create_connection(srv.address, timeout=5) for _ in range(3)]
    for c in clients:
        c.sendall(b"x")
        assert c.recv(1) == b"x"
    assert srv.connections == 3 and srv.accepted == 3
    srv.stop()
    srv.stop()
    _assert_closed_by_the_server(clients)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^service must be one of \('echo', 'http'\), got 'ftp'$"):
        aio.AsyncioServer("ftp")
    with pytest.raises(ValueError, match=r"^backlog must be an int >= 0"):
        aio.AsyncioServer("echo", backlog=-1)
    with pytest.raises(ValueError, match=r"^host must be an IP address"):
        aio.AsyncioServer("echo", host="localhost")


# ---- /proc readers

def test_process_status_counts_a_new_thread() -> None:
    before = aio.process_status()
    assert set(before) == {"Threads", "VmRSS", "VmSize"} and before["Threads"] >= 1
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name=f"{registry.THREAD_PREFIX}-test-waiter")
    t.start()
    try:
        # Other threads of the test process may start or end meanwhile: compare with the
        # kernel's task list read right around the same moment, until two reads agree.
        for _ in range(50):
            tasks = os.listdir("/proc/self/task")
            threads = aio.process_status()["Threads"]
            if os.listdir("/proc/self/task") == tasks:
                break
        assert threads == len(tasks) and str(t.native_id) in tasks
        waits = aio.blocked_in([t.native_id])
        if platform.machine() == "x86_64":
            assert waits == {t.native_id: "futex"}
        else:
            assert t.native_id in waits
    finally:
        stop.set()
        t.join()


def test_thread_syscalls_shows_the_loop_in_epoll_wait() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("syscall names are known for x86_64 only")
    with aio.AsyncioServer("echo") as srv:
        waits = aio.blocked_in([srv.thread_native_id], expect=aio.EPOLL_WAITS)
        assert waits[srv.thread_native_id] in aio.EPOLL_WAITS


# ---- a protocol someone else wrote

class _Upper(asyncio.Protocol):
    """Answers every chunk in upper case: a protocol the server did not write."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[attr-defined]


def test_a_protocol_factory_is_served_and_its_transports_tracked_and_closed() -> None:
    srv = aio.AsyncioServer(protocol=_Upper)
    try:
        assert srv.name.startswith("asyncio-protocol:")
        clients = [socket.create_connection(srv.address, timeout=5) for _ in range(2)]
        for c in clients:
            c.sendall(b"abc")
            assert c.recv(10) == b"ABC"
        assert srv.accepted == 2 and srv.connections == 2 and len(srv.transports) == 2
    finally:
        srv.stop()
    _assert_closed_by_the_server(clients)


def test_an_error_in_someone_elses_protocol_is_kept_not_printed() -> None:
    class Broken(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            raise KeyError("oops")

    srv = aio.AsyncioServer(protocol=Broken)
    with socket.create_connection(srv.address, timeout=5) as c:
        c.sendall(b"x")
        assert c.recv(10) == b""  # asyncio closes the connection whose protocol failed
    with pytest.raises(servers.ServerError, match=r"KeyError"):
        srv.stop()


def test_a_protocol_that_is_no_factory_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^protocol must be a protocol factory \(a class or function\), got 3$"):
        aio.AsyncioServer(protocol=3)  # type: ignore[arg-type]
