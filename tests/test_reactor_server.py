"""helpers.reactor: the loop, the pieces and the HTTP server, against real clients on loopback."""

from __future__ import annotations

import gc
import http.client
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers.observe import EPOLL_WAITS, blocked_in
from helpers.reactor import (
    AsyncioHttpServer,
    BaseProtocol,
    Buffer,
    BufferFull,
    Channel,
    EventLoop,
    HttpServer,
    ReusePortGroup,
    TcpServer,
)
from helpers.reactor.acceptor import Acceptor


def get(conn: http.client.HTTPConnection, path: str = "/", **kw) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn.request("GET", path, **kw)
    r = conn.getresponse()
    return r.status, r.read(), r


def read_until_close(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# -- the pieces ------------------------------------------------------------------------------
def _wait_in_epoll_wait(thread: threading.Thread, timeout_s: float = 5.0) -> None:
    """Wait until the kernel shows `thread` asleep in epoll_wait (observe.blocked_in reads
    /proc/self/task/TID/syscall)."""
    waits = blocked_in([thread.native_id], timeout_s, expect=EPOLL_WAITS)
    assert waits and set(waits.values()) <= EPOLL_WAITS, \
        f"{thread.name} is not in epoll_wait after {timeout_s} s: {waits}"


def test_loop_wakes_for_another_threads_task_without_polling():
    loop = EventLoop()
    done = threading.Event()
    t = threading.Thread(target=loop.run, name="course-server-test-loop")
    t.start()
    _wait_in_epoll_wait(t)  # with no timer: only the wake-up can get it out
    started = time.monotonic()
    loop.call_soon_threadsafe(done.set)
    assert done.wait(2)
    woke_s = time.monotonic() - started
    loop.stop()
    t.join(2)
    assert not t.is_alive() and loop.closed and woke_s < 0.5
    with pytest.raises(RuntimeError, match="is closed"):
        loop.call_soon_threadsafe(print)


def test_timers_run_in_order_and_cancel():
    loop = EventLoop(backend="poll")
    seen: list[str] = []
    loop.call_later(0.02, seen.append, "b")
    loop.call_later(0.01, seen.append, "a")
    loop.call_later(0.015, seen.append, "x").cancel()
    loop.call_later(0.03, loop.stop)
    loop.run()
    assert seen == ["a", "b"]


def test_callback_errors_are_kept_not_raised():
    loop = EventLoop()
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run()
    assert isinstance(loop.errors[0], ZeroDivisionError)


def test_channel_read_and_write_readiness():
    a, b = socket.socketpair()
    loop = EventLoop()
    got: list[bytes] = []
    ch = Channel(a.fileno(), on_read=lambda: got.append(a.recv(10)))
    loop.add_channel(ch)
    b.send(b"hi")
    loop.run_once()
    assert got == [b"hi"]
    ch.want_write()
    ch.on_write = lambda: (got.append(b"writable"), ch.stop_writing(), loop.update_channel(ch))
    loop.update_channel(ch)
    loop.run_once()
    assert got[-1] == b"writable" and not ch.writing
    loop.remove_channel(ch)
    loop.close()
    a.close()
    b.close()


def test_buffer_is_bounded_and_compacts():
    a, b = socket.socketpair()
    buf = Buffer(8)
    b.send(b"12345678")
    assert buf.recv_into(a) == 8
    with pytest.raises(BufferFull):
        buf.recv_into(a)
    buf.consume(6)
    b.send(b"abc")
    assert buf.recv_into(a) == 3 and bytes(buf.data()) == b"78abc"  # moved to the front, then filled
    with pytest.raises(ValueError, match="cannot consume 99"):
        buf.consume(99)
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        Buffer(0)
    a.close()
    b.close()


class _EmfileListener:
    """A listening socket whose accept() fails like a process out of fds."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.calls = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self):
        self.calls += 1
        raise OSError(24, "Too many open files")

    def close(self) -> None:
        self.sock.close()


def test_acceptor_pauses_on_emfile_instead_of_spinning():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())  # keeps the listener readable
    loop = EventLoop()
    fake = _EmfileListener(listener)
    acc = Acceptor(loop, fake, lambda s, a: None, retry_delay_s=0.2)  # type: ignore[arg-type]
    try:
        loop.run_once()  # registers the listener, sees it readable, accept() fails: pause
        assert (acc.paused, fake.calls) == (1, 1)
        started = time.monotonic()
        loop.run_once()  # sleeps until the retry timer (nothing to spin on), then watches again
        loop.run_once()  # readable again, accept() fails again: a second pause
        assert (acc.paused, fake.calls) == (2, 2) and time.monotonic() - started >= 0.19
    finally:
        acc.close()
        loop.close()
    client.close()


# The clients of the EMFILE test live in another process, so that once this process has no
# fd left, only the server's accept() is short of one.
_EMFILE_CLIENTS = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()                                   # wait for "go"
held = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
print("connected", flush=True)
sys.stdin.readline()                                   # hold them until told
"""


def test_acceptor_survives_real_emfile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with HttpServer(threads=0) as srv:
        child = subprocess.Popen([sys.executable, "-c", _EMFILE_CLIENTS, *map(str, srv.address)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        # No fd may come free during the test: a socket of an earlier test that only the
        # cyclic garbage collector would close would give accept() an fd after all.
        gc.collect()
        gc.disable()
        try:
            lowest_free = os.open(os.devnull, os.O_RDONLY)  # the lowest free fd: all below are taken
            os.close(lowest_free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no fd left for accept()
            try:
                child.stdin.write(b"go\n")
                child.stdin.flush()
                assert child.stdout.readline() == b"connected\n"
                # The loop thread pauses within microseconds of waking; on a busy machine it may
                # wake late, so wait for the pause itself (bounded, only a failure waits it out).
                deadline = time.monotonic() + 30
                while srv.acceptor.paused == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        finally:
            gc.enable()
            child.stdin.close()
            child.stdout.close()
            child.wait(5)
        assert srv.acceptor.paused >= 1, f"no pause after EMFILE; accepted {srv.acceptor.accepted} connection(s)"
        c = http.client.HTTPConnection(*srv.address, timeout=5)  # after the pause: served again
        assert get(c)[0] == 200
        c.close()


# -- the HTTP server with real clients ----------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"threads": 2}, {"backend": "poll"}], ids=["single", "main+2sub", "poll"])
def test_keepalive_sequence_on_one_connection(kw):
    with HttpServer(**kw) as srv:
        c = http.client.HTTPConnection(*srv.address, timeout=5)
        for _ in range(20):
            assert get(c)[:2] == (200, b"Hello, world!\n")
        c.request("POST", "/echo", body=b"x" * 100_000)
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"x" * 100_000
        status, body, r = get(c, "/nope")
        assert status == 404 and r.getheader("Content-Length") == str(len(body))
        c.close()
        assert srv.accepted == 1


def test_pipelined_requests_are_answered_in_order():
    with HttpServer() as srv, socket.create_connection(srv.address) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                  + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  + b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_close(s)
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", data) == [b"200", b"200", b"404"]
    assert b"\r\n\r\nabc" in data and data.endswith(b"not found\n")


def test_http10_and_connection_close_end_the_connection():
    with HttpServer() as srv:
        for request in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            with socket.create_connection(srv.address) as s:
                s.sendall(request)
                data = read_until_close(s)  # returns only because the server closed
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in data
        with socket.create_connection(srv.address) as s:  # HTTP/1.0 keep-alive stays open
            s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
            s.settimeout(5)
            data = b""
            while data.count(b"Hello") < 2:
                data += s.recv(4096)
            assert data.count(b"Connection: keep-alive") == 2


@pytest.mark.parametrize("request_bytes, status", [
    (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", b"413"),
])
def test_bad_requests_get_an_error_with_length_then_close(request_bytes: bytes, status: bytes):
    with HttpServer() as srv, socket.create_connection(srv.address) as s:
        s.sendall(request_bytes)
        data = read_until_close(s)
        assert data.startswith(b"HTTP/1.1 " + status) and b"Content-Length: " in data
        assert b"Connection: close" in data
        assert srv.errors == []


def test_slowloris_is_closed_while_others_are_served():
    with HttpServer(idle_timeout_s=0.5) as srv, socket.create_connection(srv.address) as slow:
        slow.settimeout(5)
        started = time.monotonic()
        c = http.client.HTTPConnection(*srv.address, timeout=5)
        served = 0
        closed_at = None
        for i, byte in enumerate(b"GET / HTTP/1.1\r\nHost: x\r\n" * 10):
            try:
                slow.send(bytes([byte]))  # one byte every 20 ms: never a whole request in time
            except OSError:
                closed_at = time.monotonic() - started
                break
            assert get(c)[0] == 200
            served += 1
            time.sleep(0.02)
            if i % 5 == 0:
                try:
                    slow.setblocking(False)
                    if slow.recv(1) == b"":
                        closed_at = time.monotonic() - started
                        break
                except BlockingIOError:
                    pass
                finally:
                    slow.setblocking(True)
        c.close()
        assert closed_at is not None and 0.45 <= closed_at < 3, closed_at
        assert served >= 5 and srv.timeouts == 1


def test_idle_keepalive_connection_is_closed_but_busy_one_is_not():
    with HttpServer(idle_timeout_s=0.3) as srv:
        busy = http.client.HTTPConnection(*srv.address, timeout=5)
        idle = socket.create_connection(srv.address)
        deadline = time.monotonic() + 0.9
        while time.monotonic() < deadline:  # three timeouts' worth of requests
            assert get(busy)[0] == 200
            time.sleep(0.01)
        idle.settimeout(2)
        assert idle.recv(1) == b""  # closed by the server
        assert get(busy)[0] == 200
        busy.close()
        idle.close()
        assert srv.timeouts == 1


def test_half_close_after_request_still_gets_the_answer():
    with HttpServer() as srv, socket.create_connection(srv.address) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        assert b"Hello, world!" in read_until_close(s)


def test_stop_is_idempotent_and_closes_clients():
    srv = HttpServer(threads=2)
    clients = [socket.create_connection(srv.address) for _ in range(4)]
    for s in clients:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    srv.stop()
    srv.stop()
    for s in clients:
        assert s.recv(10) == b""
        s.close()
    assert not [t for t in threading.enumerate() if srv.name in t.name]


def test_protocol_errors_surface_at_stop():
    class Boom:
        def connection_made(self, conn):
            pass

        def data_received(self, data):
            raise RuntimeError("protocol bug")

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            pass

    from helpers.servers import ServerError

    srv = TcpServer(Boom)
    with socket.create_connection(srv.address) as s:
        s.sendall(b"x")
        assert read_until_close(s) == b""  # that connection is closed, the server lives on
    with pytest.raises(ServerError, match="protocol bug"):
        srv.stop()


def test_thousand_concurrent_keepalive_connections_all_answered():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2300:
        pytest.skip(f"needs 2300 fds (client + server ends), the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    try:
        with HttpServer(threads=2) as srv:
            socks = [socket.create_connection(srv.address, timeout=10) for _ in range(1000)]
            try:
                for _round in range(2):  # twice: the connections stay open between requests
                    for s in socks:
                        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    answered = 0
                    for s in socks:
                        data = b""
                        while not data.endswith(b"Hello, world!\n"):
                            data += s.recv(4096)
                        answered += data.startswith(b"HTTP/1.1 200")
                    assert answered == 1000
                assert srv.open_connections() == 1000
            finally:
                for s in socks:
                    s.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_asyncio_server_same_answers():
    with AsyncioHttpServer(idle_timeout_s=0.3) as srv:
        c = http.client.HTTPConnection(*srv.address, timeout=5)
        assert get(c)[:2] == (200, b"Hello, world!\n")
        c.close()
        with socket.create_connection(srv.address) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
            assert read_until_close(s).startswith(b"HTTP/1.1 431")
        with socket.create_connection(srv.address) as s:
            assert read_until_close(s) == b"" and srv.timeouts == 1


def test_reuseport_group_spreads_connections_and_reaps_workers():
    with ReusePortGroup(2) as group:
        pids = group.pids
        for _ in range(20):
            c = http.client.HTTPConnection(*group.address, timeout=5)
            assert get(c)[0] == 200
            c.close()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] != "Z"


def _fds_and_rss(pid: int) -> tuple[int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss_pages = int(open(f"/proc/{pid}/statm").read().split()[1])
    return fds, rss_pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.parametrize("threads", [0, 2], ids=["single", "main+2sub"])
def test_no_fd_or_memory_growth_over_100k_requests(threads: int):
    """A server process answers 100,000+ requests on fresh keep-alive connections each round,
    with no stall (every request answered), and ends with the fds and memory it had after warm-up."""
    from helpers.loadgen import LoadGenerator
    from helpers.reactor.processes import start_server_process

    server = start_server_process("reactor", threads=threads)
    try:
        with LoadGenerator(workers=2) as load:
            def round_() -> int:
                r = load.run(("127.0.0.1", server.port), connections=50, duration_s=2.0, service="http")
                assert r.unanswered == 0 and r.error_count == 0 and r.connect_failures == 0, (r.errors, r)
                return r.answered
            round_()  # warm-up: caches, the allocator's arenas, the listen queue
            time.sleep(0.2)
            fds0, rss0 = _fds_and_rss(server.pid)
            total = 0
            while total < 100_000:
                total += round_()
            time.sleep(0.2)  # the last connections' FINs
            fds1, rss1 = _fds_and_rss(server.pid)
    finally:
        code = server.stop()
    mib = 2**20
    print(f"threads={threads}: {total} requests; fds {fds0} -> {fds1}; RSS {rss0 / mib:.1f} -> {rss1 / mib:.1f} MiB")
    assert code == 0
    assert fds1 == fds0
    assert rss1 - rss0 < 4 * 2**20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MiB over {total} requests"


def test_server_half_close_sends_fin_after_the_buffer_and_keeps_reading():
    got: list[bytes] = []

    class HalfCloser:
        def connection_made(self, conn):
            self.conn = conn

        def data_received(self, data):
            got.append(bytes(data))
            if bytes(data) == b"bye":
                self.conn.write(b"x" * 3_000_000)  # more than the kernel takes at once
                self.conn.shutdown_write()  # FIN goes out only after all of it

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            pass

    with TcpServer(HalfCloser) as srv, socket.create_connection(srv.address) as s:
        s.sendall(b"bye")
        data = read_until_close(s)  # ends at the server's FIN
        assert data == b"x" * 3_000_000
        s.sendall(b"still reading?")  # our direction is still open
        deadline = time.monotonic() + 5
        while got[-1] != b"still reading?" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [b"bye", b"still reading?"]


# -- the framework's user API ------------------------------------------------------------------


def test_sub_reactors_are_in_their_loops_when_the_server_returns():
    with TcpServer(BaseProtocol, threads=3) as srv:
        threads = srv.pool.threads
        assert [t.ready.is_set() for t in threads] == [True] * 3  # set from inside each loop, before we returned
        tids = [t.native_id for t in threads]
        waits = blocked_in(tids, expect=EPOLL_WAITS)  # the kernel's view: asleep in epoll, no connection yet
        assert len(waits) == 3 and set(waits.values()) <= EPOLL_WAITS, waits


def test_write_completed_runs_from_the_loop_after_the_output_is_in_the_kernel():
    events: list[tuple[str, int]] = []
    done = threading.Event()

    class Chunks(BaseProtocol):
        def __init__(self) -> None:
            self.left = 40  # 40 chunks of 256 KiB: far more than the kernel's buffers

        def connection_made(self, conn) -> None:
            super().connection_made(conn)
            self.write_next()

        def write_next(self) -> None:
            events.append(("write", len(self.conn.outbuf)))
            self.conn.write(b"x" * (256 << 10))
            self.left -= 1

        def write_completed(self) -> None:
            assert not self.conn.outbuf  # everything written so far is in the kernel
            events.append(("completed", 0))
            if self.left:
                self.write_next()
            else:
                self.conn.close()

        def connection_lost(self, exc) -> None:
            done.set()

    with TcpServer(Chunks, threads=1) as srv:
        client = socket.create_connection(srv.address)
        time.sleep(0.2)  # the client does not read yet: the output waits in the server
        got = len(read_until_close(client))
        client.close()
        assert done.wait(2)
    assert got == 40 * (256 << 10)
    writes = [n for what, n in events if what == "write"]
    assert len(writes) == 40 and max(writes) == 0, writes  # never wrote while output was still waiting
    assert [what for what, _ in events].count("completed") == 40


def test_a_protocol_without_write_completed_is_served_as_before():
    with HttpServer(threads=1) as srv:
        conn = http.client.HTTPConnection(*srv.address, timeout=5)
        assert get(conn)[0] == 200
        conn.close()
