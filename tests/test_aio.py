"""helpers.aio: the asyncio server in a thread, the sans-IO HTTP responder, /proc readers."""

from __future__ import annotations

import http.client
import os
import platform
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import aio, servers

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


# ---- HttpResponder (no I/O)

def test_responder_whole_request() -> None:
    r = aio.HttpResponder()
    assert r.feed(REQUEST) == aio.HTTP_OK
    assert r.requests == 1


def test_responder_one_byte_at_a_time_says_nothing_until_complete() -> None:
    r = aio.HttpResponder()
    out = [r.feed(REQUEST[i:i + 1]) for i in range(len(REQUEST))]
    assert out[:-1] == [b""] * (len(REQUEST) - 1)
    assert out[-1] == aio.HTTP_OK


def test_responder_keeps_trailing_bytes_buffered() -> None:
    r = aio.HttpResponder()
    assert r.feed(REQUEST * 2 + REQUEST[:5]) == aio.HTTP_OK * 2
    assert r.feed(REQUEST[5:]) == aio.HTTP_OK
    assert r.requests == 3


def test_responder_refuses_an_endless_head_with_431() -> None:
    r = aio.HttpResponder(max_head=100)
    with pytest.raises(aio.ProtocolError, match=r"^request head over 100 bytes with no end$") as info:
        r.feed(b"GET /" + b"a" * 200)
    assert info.value.response.startswith(b"HTTP/1.1 431 ")


def test_responder_refuses_a_long_complete_head_with_431() -> None:
    r = aio.HttpResponder(max_head=50)
    with pytest.raises(aio.ProtocolError, match=r"^request head of \d+ bytes is over 50$"):
        r.feed(b"GET /" + b"a" * 60 + b" HTTP/1.1\r\n\r\n")


def test_responder_refuses_a_bad_request_line_with_400() -> None:
    with pytest.raises(aio.ProtocolError, match=r"^not an HTTP request line") as info:
        aio.HttpResponder().feed(b"HELLO\r\n\r\n")
    assert info.value.response.startswith(b"HTTP/1.1 400 ")


@given(st.lists(st.integers(min_value=0, max_value=3 * len(REQUEST)), max_size=6), st.integers(1, 3))
def test_responder_any_split_gives_one_answer_per_request(cuts: list[int], n: int) -> None:
    data = REQUEST * n
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    r = aio.HttpResponder()
    assert b"".join(r.feed(p) for p in pieces) == aio.HTTP_OK * n


# ---- AsyncioServer (real sockets)

def test_asyncio_echo_round_trip_on_loopback() -> None:
    with aio.AsyncioServer("echo") as srv:
        assert srv.address[0] == "127.0.0.1" and srv.address[1] > 0
        assert srv in servers.live_servers()
        names = [t.name for t in threading.enumerate()]
        assert f"{servers.THREAD_PREFIX}-{srv.name}-loop" in names
        with socket.create_connection(srv.address, timeout=5) as c:
            c.sendall(b"hello")
            assert c.recv(100) == b"hello"
        assert type(srv.loop._selector).__name__ == "EpollSelector"
    assert not srv.running and srv not in servers.live_servers()
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


def test_stop_closes_open_connections_and_is_idempotent() -> None:
    srv = aio.AsyncioServer("echo")
    clients = [socket.create_connection(srv.address, timeout=5) for _ in range(3)]
    for c in clients:
        c.sendall(b"x")
        assert c.recv(1) == b"x"
    assert srv.connections == 3 and srv.accepted == 3
    srv.stop()
    srv.stop()
    for c in clients:
        try:
            assert c.recv(10) == b""
        except ConnectionResetError:  # abort() resets: also a closed connection
            pass
        c.close()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^service must be one of \('echo', 'http'\), got 'ftp'$"):
        aio.AsyncioServer("ftp")
    with pytest.raises(ValueError, match=r"^backlog must be an int >= 0"):
        aio.AsyncioServer("echo", backlog=-1)
    with pytest.raises(ValueError, match=r"^host must be an IP address"):
        aio.AsyncioServer("echo", host="localhost")


def test_http_blocking_under_a_thread_per_connection_server() -> None:
    with servers.TCPServer(aio.http_blocking) as srv:
        with socket.create_connection(srv.address, timeout=5) as c:
            c.sendall(REQUEST * 2)
            got = b""
            while len(got) < 2 * len(aio.HTTP_OK):
                got += c.recv(4096)
            assert got == aio.HTTP_OK * 2
        assert srv.result() == 2


# ---- /proc readers

def test_process_status_counts_a_new_thread() -> None:
    before = aio.process_status()
    assert set(before) == {"Threads", "VmRSS", "VmSize"} and before["Threads"] >= 1
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name=f"{servers.THREAD_PREFIX}-test-waiter")
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
