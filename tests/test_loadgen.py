"""helpers.loadgen: percentiles on known data, every request counted against a counting server,
closed-loop echo runs against the course's servers (what echoload did), held connections."""

from __future__ import annotations

import math
import os
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import aio, behaviours, c10k, servers
from helpers.loadgen import LoadGenerator, percentile

#: What the counting server answers each request with: a 200 with a 3-byte body.
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


def test_percentile_nearest_rank_on_known_data() -> None:
    data = list(range(1, 101))
    assert percentile(data, 50) == 50
    assert percentile(data, 99) == 99
    assert percentile(data, 100) == 100
    assert percentile(data, 0) == 1
    assert percentile([5, 1, 3], 50) == 3  # unsorted input
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 51) == 3
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"^q must be a percentage in \[0, 100\], got 101$"):
        percentile(data, 101)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_a_value_with_enough_below(values: list[int], q: float) -> None:
    p = percentile(values, q)
    assert p in values
    assert sum(v <= p for v in values) >= q / 100 * len(values)
    assert sum(v < p for v in values) < max(1, q / 100 * len(values))


class CountingHTTPServer:
    """An independent oracle: a thread that counts request heads and answers each."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.requests = 0
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, name="course-server-counting-accept")
        self.acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="course-server-counting-conn")
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            try:
                while data := conn.recv(65536):
                    buf += data
                    n = buf.count(b"\r\n\r\n")
                    buf = buf[buf.rfind(b"\r\n\r\n") + 4 :] if n else buf
                    with self.lock:
                        self.requests += n
                    conn.sendall(HTTP_OK * n)
            except ConnectionResetError:
                pass  # load generator clients close with RST (SO_LINGER 0): that is their EOF

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)


@pytest.mark.parametrize("rate", [None, 2000.0])
def test_counts_every_request(rate: float | None) -> None:
    server = CountingHTTPServer()
    try:
        with LoadGenerator(workers=2) as lg:
            result = lg.run(server.address, connections=10, duration_s=0.3, service="http", rate=rate)
    finally:
        server.close()
    assert result.complete, result
    assert result.sent == result.answered == server.requests == len(result.latencies_us) > 0
    assert result.conns_answered == 10
    if rate is not None:  # open loop: the schedule, not the server, sets the count
        assert abs(result.sent - rate * 0.3) <= 0.1 * rate * 0.3 + 10


def test_echo_run_against_epoll_model_and_unanswered_requests_counted() -> None:
    with c10k.EpollReactor("echo") as srv, LoadGenerator(workers=2) as lg:
        result = lg.run(srv.address, connections=20, duration_s=0.2, payload=100,
                        on_ready=lambda: srv.accepted)
    assert result.complete and result.answered > 20
    assert result.sample <= 20  # called after the clients connected, before any request
    assert result.p50_ms <= result.p99_ms
    # A pool of 1 worker, kept busy by our own connection: the load's requests wait in the queue.
    with c10k.ThreadPool("echo", workers=1) as srv, LoadGenerator(workers=1) as lg:
        with socket.create_connection(srv.address, timeout=5) as busy:
            busy.sendall(b"x")
            assert busy.recv(1) == b"x"  # the only worker now serves `busy` until it closes
            result = lg.run(srv.address, connections=2, duration_s=0.1, drain_s=0.2)
    assert not result.complete
    assert (result.sent, result.answered, result.unanswered, result.conns_answered) == (2, 0, 2, 0)


def test_hold_opens_echoes_and_releases() -> None:
    seen = []
    with c10k.EpollReactor("echo") as srv, LoadGenerator(workers=2) as lg:
        held = lg.hold([srv.address], connections=300, progress=seen.append)
        assert held.opened == held.echoed == 300 and held.failed == 0
        assert srv.serving() == 300
        lg.release()
    assert seen[-1] == 300


def test_bad_arguments() -> None:
    with LoadGenerator(workers=1) as lg:
        with pytest.raises(ValueError, match=r"^connections must be an int in 1-100000, got 0$"):
            lg.run(("127.0.0.1", 1), connections=0)
        with pytest.raises(ValueError, match=r"^service must be 'echo' or 'http', got 'ftp'$"):
            lg.run(("127.0.0.1", 1), connections=1, service="ftp")
        refused = lg.run(("127.0.0.1", 1), connections=2, duration_s=0.1)  # nobody listens on port 1
    assert refused.connect_failures == 2 and refused.sent == 0 and not refused.complete


def test_closed_loop_echo_with_graceful_close_leaves_a_threaded_server_without_errors() -> None:
    # reset=False closes with FIN: the thread-per-connection echo handler sees EOF, not ECONNRESET,
    # so its stop() raises nothing (with RST, behaviours.echo would raise ConnectionResetError).
    with servers.TCPServer(behaviours.echo) as srv, LoadGenerator(workers=1) as lg:
        seen = []
        result = lg.run(srv.address, connections=5, duration_s=0.2, reset=False,
                        on_ready=lambda: seen.append(1) or "x")
    assert result.complete and result.connected == 5 and result.answered > 5
    assert result.sample == "x" and seen == [1]
    assert result.per_second > 0 and result.p50_ms > 0


def test_one_generator_serves_several_runs() -> None:
    with LoadGenerator(workers=1) as lg, aio.AsyncioServer("echo") as srv:
        first = lg.run(srv.address, connections=3, duration_s=0.1)
        second = lg.run(srv.address, connections=50, duration_s=0.1, payload=1000)
        pid = lg.pids[0]
    assert (first.connected, second.connected) == (3, 50)
    assert first.complete and second.complete and first.answered > 0 and second.answered > 0
    assert not os.path.exists(f"/proc/{pid}")  # the worker exited with the block, and was reaped


def test_nobody_listening_is_reported_not_raised() -> None:
    with socket.socket() as s, LoadGenerator(workers=1) as lg:  # bound, not listening: connect() is refused
        s.bind(("127.0.0.1", 0))
        result = lg.run(s.getsockname(), connections=2, duration_s=0.1)
    assert result.connected == 0 and result.connect_failures == 2 and result.answered == 0
    assert any("Connection refused" in e for e in result.errors), result.errors
