"""Run the standard library's http.server in the background and measure requests per second.

Theory of operation. Lesson 10 shows that ``http.server`` answers each request with two
writes (status line and headers, then the body) and so meets Nagle's algorithm and the
client's delayed ACK on every keep-alive request. To measure that, it needs two pieces
of plumbing, kept here so the notebook can show only the handler classes:

* ``serve_http(handler_class)`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 port 0 in a
  background thread and always stops it: ``shutdown()`` (ends ``serve_forever``), then
  ``server_close()`` (closes the listener), then every open keep-alive connection is shut
  down so its handler thread returns, and every thread is joined. Every thread is named
  with the ``course-server`` prefix, so the course's leak checks see one that survives.
  Errors raised inside a handler are collected (the stdlib would print them to stderr
  from a background thread) and raised by ``stop()`` as ``servers.ServerError``. Out of
  file descriptors, accepting pauses for a second (the course's accept policy,
  ``core.accept``): socketserver alone would log the error and find the listener readable
  again at once, forever.
* ``keepalive_load(address)`` is a small client: a few ``http.client`` connections, one
  per thread, each sending GET requests back to back on one keep-alive connection for a
  fixed time, and counting the answers in the course's one load record,
  ``loadgen.LoadResult``.

Both run in this process, so client and server share one interpreter: the absolute
numbers are lower than a C client would see, but a 40 ms stall per request is visible at
any speed.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .addresses import loopback_address
from .core import checks
from .core.accept import RETRY_DELAY_S, starved
from .core.registry import THREAD_PREFIX
from .loadgen import LoadResult
from .servers import ServerError, shut_down

__all__ = ["HTTPServerThread", "serve_http", "keepalive_load"]

# socketserver's serve_forever() checks for shutdown() once per poll interval (its default
# is 0.5 s, so every stop would cost up to half a second); 0.05 s keeps a lesson quick.
POLL_INTERVAL_S = 0.05
MAX_STOP_S = 600.0  # the longest stop() may be asked to wait for threads


def _check_host(host: object) -> str:
    """An IPv4 loopback literal (ThreadingHTTPServer is AF_INET); ValueError naming the value otherwise."""
    try:
        ip = ipaddress.ip_address(host) if isinstance(host, str) else None
    except ValueError:
        ip = None
    ok = ip is not None and ip.version == 4 and ip.is_loopback
    if not ok:
        raise ValueError(f"serve_http() binds IPv4 loopback only (127.x.y.z), got {host!r}")
    return host  # type: ignore[return-value]


class _CourseHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer whose threads are named, tracked and joined, and errors kept."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler_class: type[BaseHTTPRequestHandler], name: str):
        self.course_name = name
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.paused = 0  # accept() out of descriptors: how many times accepting paused
        super().__init__(address, handler_class)

    def get_request(self) -> tuple[socket.socket, Any]:
        """accept(); out of descriptors, wait RETRY_DELAY_S first (stop() ends the wait at once).

        socketserver drops an accept() error and waits for the listener again, which is still
        readable (the connection stays queued): without the pause this thread would spin.
        """
        try:
            return super().get_request()
        except OSError as exc:
            if starved(exc):
                self.paused += 1
                self.stopping.wait(RETRY_DELAY_S)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection in a named thread (the stdlib's are 'Thread-N')."""
        with self.lock:
            self.connections.add(request)
            self.threads = [t for t in self.threads if t.is_alive()]
            n = len(self.threads) + 1
            thread = threading.Thread(
                target=self.process_request_thread,
                args=(request, client_address),
                name=f"{THREAD_PREFIX}-{self.course_name}-conn{n}",
                daemon=True,
            )
            self.threads.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep the exception for stop() instead of printing it from a background thread."""
        exc = sys.exc_info()[1]
        if exc is None:
            return
        if isinstance(exc, OSError) and self.stopping.is_set():
            return  # we shut the connection down ourselves
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            return  # a client went away mid-request: not the handler's fault
        self.errors.append(exc)


class HTTPServerThread:
    """A running ThreadingHTTPServer; use ``serve_http()`` to get one.

    ``address`` is where it listens, ``requests`` how many requests it answered so far
    (counted by wrapping the handler), ``stop()`` ends it and is safe to call twice.
    """

    def __init__(self, handler_class: type[BaseHTTPRequestHandler], *, host: str = "127.0.0.1", port: int = 0):
        if not (isinstance(handler_class, type) and issubclass(handler_class, BaseHTTPRequestHandler)):
            raise TypeError(
                f"serve_http() needs a BaseHTTPRequestHandler subclass (a class, not an instance), "
                f"got {handler_class!r}"
            )
        _check_host(host)
        checks.port("port", port, note=" (0 lets the kernel choose)")
        self.handler_class = handler_class
        self._stopped = False
        self.server = _CourseHTTPServer((host, port), handler_class, name="http:?")
        port = self.server.server_address[1]
        self.name = f"http:{port}"
        self.server.course_name = self.name
        self.address: tuple[str, int] = (host, port)
        self._loop = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name=f"{THREAD_PREFIX}-{self.name}-loop",
            daemon=True,
        )
        self._loop.start()

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    @property
    def paused(self) -> int:
        """How many times accept() ran out of file descriptors and accepting paused."""
        return self.server.paused

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions handlers raised so far (stop() raises them)."""
        return self.server.errors

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """shutdown() + server_close(), shut open connections down, join every thread.

        Raises ServerError if a handler raised (unless raise_errors is False), and
        RuntimeError if a thread is still alive after `timeout_s`; TypeError or ValueError,
        before stopping anything, if `timeout_s` is not a number of seconds in [0, 600].
        """
        checks.seconds("timeout_s", timeout_s, high=MAX_STOP_S, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            srv = self.server
            srv.stopping.set()
            srv.shutdown()  # returns once serve_forever() has left its loop
            srv.server_close()  # closes the listening socket
            with srv.lock:
                conns = list(srv.connections)
                threads = [self._loop, *srv.threads]
            shut_down(conns)  # handlers waiting for the next keep-alive request return
            deadline = time.monotonic() + timeout_s
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            if stuck:
                raise RuntimeError(f"{self.name}: threads still running after {timeout_s} s: {stuck}")
        if raise_errors and self.server.errors:
            errors, self.server.errors = self.server.errors, []
            raise ServerError(self.name, errors) from errors[0]

    def __enter__(self) -> HTTPServerThread:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        return f"<HTTPServerThread {self.name} {'running' if self.running else 'stopped'}>"


def serve_http(handler_class: type[BaseHTTPRequestHandler], *, host: str = "127.0.0.1",
               port: int = 0) -> HTTPServerThread:
    """Start ``ThreadingHTTPServer((host, port), handler_class)`` in a background thread.

    Use it in a ``with`` block; the server stops (and its threads are joined) at the end.
    `host` must be an IPv4 loopback address (127.x.y.z): a benchmark server has no
    business listening where other machines can reach it. `port` 0 lets the kernel choose.
    """
    _check_host(host)
    return HTTPServerThread(handler_class, host=host, port=port)


def keepalive_load(
    address: tuple[str, int], *, connections: int = 4, duration_s: float = 1.0, path: str = "/"
) -> LoadResult:
    """Send GET `path` back to back on `connections` keep-alive connections for `duration_s`.

    Each connection runs in its own thread with ``http.client``, reads every response
    body in full, and stops starting new requests at the deadline; a request is sent only
    after the previous answer, so none is left unanswered. `address` is a (host,
    port) pair on loopback; `path` starts with '/' and holds no spaces or control characters.
    Raises TypeError/ValueError for bad arguments (before any thread starts), and the first
    client error (e.g. ConnectionRefusedError, or RuntimeError for a non-200 answer) after
    all threads are joined.
    """
    checks.count("connections", connections, 1, 64)
    checks.seconds("duration_s", duration_s, high=10)
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() or not c.isprintable() for c in path):
        raise ValueError(f"path must be a str starting with '/' without spaces or control characters, got {path!r}")
    host, port = loopback_address("address", address)
    latencies: list[list[int]] = [[] for _ in range(connections)]  # per connection, in us
    errors: list[BaseException] = []
    deadline = [0.0]

    def start_clock() -> None:  # run by the barrier once every client has connected
        deadline[0] = time.perf_counter() + duration_s

    start = threading.Barrier(connections + 1, action=start_clock)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.connect()
            start.wait()
            mine = latencies[i]
            while time.perf_counter() < deadline[0]:
                t0 = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {path} answered {response.status} {response.reason}")
                mine.append(int((time.perf_counter() - t0) * 1e6))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            start.abort()
        finally:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(i,), name=f"{THREAD_PREFIX}-httpload-client{i}", daemon=True)
        for i in range(connections)
    ]
    for t in threads:
        t.start()
    try:
        start.wait(timeout=5)  # every client connected: start the clock together
    except threading.BrokenBarrierError:
        pass
    began = deadline[0] - duration_s if deadline[0] else time.perf_counter()
    for t in threads:
        t.join(duration_s + 10)
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    flat = [x for per_conn in latencies for x in per_conn]
    return LoadResult(connections=connections, connected=connections, connect_failures=0, seconds=seconds,
                      sent=len(flat), answered=len(flat), unanswered=0,
                      conns_answered=sum(1 for per_conn in latencies if per_conn), error_count=0,
                      latencies_us=flat)
