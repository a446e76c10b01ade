"""helpers.httpbench against the real http.server over loopback."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from helpers import httpbench
from helpers.core.registry import THREAD_PREFIX
from helpers.servers import ServerError


class Hello(BaseHTTPRequestHandler):
    """Keep-alive handler answering in two writes: headers, then body."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HelloNoDelay(Hello):
    disable_nagle_algorithm = True


class Broken(Hello):
    def do_GET(self) -> None:
        raise ValueError("handler bug")


def _course_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_serve_http_answers_keepalive_requests_and_stops_cleanly() -> None:
    with httpbench.serve_http(Hello) as server:
        assert server.address[0] == "127.0.0.1" and server.address[1] > 0
        conn = http.client.HTTPConnection(*server.address, timeout=5)
        for _ in range(3):  # three requests on one connection: keep-alive works
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"hello\n"
        assert any(name.startswith(f"{THREAD_PREFIX}-{server.name}-conn") for name in _course_threads())
        # the connection stays open: stop() must shut it down to end the handler thread
    assert not server.running
    assert _course_threads() == []
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(*server.address, timeout=5).connect()


def test_stop_is_idempotent() -> None:
    server = httpbench.serve_http(Hello)
    server.stop()
    server.stop()
    assert _course_threads() == []


def test_handler_errors_are_raised_by_stop_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    server = httpbench.serve_http(Broken)
    conn = http.client.HTTPConnection(*server.address, timeout=5)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.request("GET", "/")
        conn.getresponse()
    conn.close()
    with pytest.raises(ServerError, match=r"ValueError: handler bug") as info:
        server.stop()
    assert isinstance(info.value.__cause__, ValueError)
    assert capsys.readouterr().err == ""


def test_serve_http_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"^serve_http\(\) needs a BaseHTTPRequestHandler subclass"):
        httpbench.serve_http(len)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^serve_http\(\) binds IPv4 loopback only"):
        httpbench.serve_http(Hello, host="0.0.0.0")


def test_keepalive_load_counts_answered_requests() -> None:
    with httpbench.serve_http(HelloNoDelay) as server:
        result = httpbench.keepalive_load(server.address, connections=2, duration_s=0.3)
    assert result.connections == 2
    assert result.answered == result.sent == len(result.latencies_us) > 10 and result.complete
    assert 0.25 < result.seconds < 2.0
    assert result.per_second == pytest.approx(result.answered / result.seconds)
    assert _course_threads() == []


def test_two_writes_stall_on_nagle_and_not_with_nodelay() -> None:
    """The effect lesson 10 builds on: each keep-alive answer waits for a delayed ACK."""
    with httpbench.serve_http(Hello) as server:
        nagle = httpbench.keepalive_load(server.address, connections=2, duration_s=0.5)
    with httpbench.serve_http(HelloNoDelay) as server:
        nodelay = httpbench.keepalive_load(server.address, connections=2, duration_s=0.5)
    assert nagle.p50_ms >= 20, nagle.p50_ms
    assert nodelay.p50_ms < 5, nodelay.p50_ms
    assert nodelay.per_second >= 2 * nagle.per_second


def test_keepalive_load_reports_refused_connection() -> None:
    server = httpbench.serve_http(Hello)
    address = server.address
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        httpbench.keepalive_load(address, connections=2, duration_s=0.2)
    assert _course_threads() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connections": 0}, r"^connections must be an int in 1-64, got 0$"),
        ({"connections": 1000}, r"^connections must be an int in 1-64, got 1000$"),
        ({"duration_s": 0}, r"^duration_s must be a number of seconds in \(0, 10\], got 0$"),
        ({"duration_s": 3600}, r"^duration_s must be a number of seconds in \(0, 10\], got 3600$"),
    ],
)
def test_keepalive_load_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        httpbench.keepalive_load(("127.0.0.1", 1), **kwargs)
