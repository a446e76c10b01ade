"""The HTTP/1.1 server: the sans-IO session of ``http.py`` on the reactor, plus an idle timeout.

Theory of operation. ``HttpProtocol`` is the glue between a ``TcpConnection`` and a
``ServerSession``: bytes that arrive go to ``session.receive()``, the answer bytes go to
``conn.write()`` (the output-buffer pattern sends them at once when it can), and when the
session says so the connection closes gracefully, after the last answer is sent. All
answers to a batch of pipelined requests leave in one ``send()``.

**The idle timeout (slowloris).** A slowloris client opens connections and sends a
request one byte every few seconds, so it never finishes and never times out under a
per-read timeout; with enough of them it holds every connection slot of a
thread-per-connection server. Here a connection must deliver a *complete* request within
``idle_timeout_s`` of being accepted or of its previous request; reading a byte does not
reset the clock, completing a request does. A connection that misses the deadline is
closed (``timeouts`` counts them) while every other connection goes on being served.
One timer per connection, rescheduled lazily: the timer fires at the earliest possible
deadline, and if a request completed meanwhile it simply re-arms for the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from ..core import checks
from .connection import TcpConnection
from .dispatcher import DEFAULT_BACKEND
from .http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEAD_BYTES,
    MAX_KEPT_ERRORS,
    BodyLengthRule,
    Router,
    ServerSession,
    demo_router,
)
from .loop import Timer
from .server import TcpServer

__all__ = ["HttpProtocol", "HttpServer", "DEFAULT_IDLE_TIMEOUT_S", "check_idle_timeout"]

#: Seconds a connection may take to deliver its next complete request (nginx's
#: client_header_timeout and keepalive_timeout default to 60 s and 75 s; a lesson wants less).
DEFAULT_IDLE_TIMEOUT_S = 10.0


def check_idle_timeout(idle_timeout_s: float) -> None:
    """Refuse an idle timeout that is not a number of seconds in (0, 3600] (NaN and inf too)."""
    checks.seconds("idle_timeout_s", idle_timeout_s, high=3600)


class _Stats:
    """Counters shared by every loop thread of one server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.timeouts = 0
        self.connections = 0
        self.route_errors: deque[BaseException] = deque(maxlen=MAX_KEPT_ERRORS)  # append is thread-safe


class HttpProtocol:
    """One HTTP connection on the reactor (created per connection by HttpServer)."""

    __slots__ = ("router", "session", "conn", "idle_timeout_s", "progress", "timer", "stats", "limits")

    def __init__(self, router: Router, *, idle_timeout_s: float, stats: _Stats, **limits: Any):
        self.router = router
        self.idle_timeout_s = idle_timeout_s
        self.stats = stats
        self.limits = limits
        self.conn: TcpConnection | None = None
        self.timer: Timer | None = None
        self.progress = 0.0

    def connection_made(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.session = ServerSession(self.router, errors=self.stats.route_errors, **self.limits)
        self.progress = time.monotonic()
        self.timer = conn.loop.call_later(self.idle_timeout_s, self._check_idle)
        with self.stats.lock:
            self.stats.connections += 1

    def data_received(self, data: memoryview) -> None:
        session, conn = self.session, self.conn  # conn: write() may lose the connection (EPIPE)
        before = session.requests
        out, close = session.receive(data)
        if out:
            conn.write(out)
        if close:
            conn.close()
        if session.requests != before:
            self.progress = time.monotonic()

    def eof_received(self) -> bool:
        self.session.receive(b"")
        return False  # close once the answers already queued are sent

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.conn = None  # no cycle: the connection is freed as soon as the loop drops it

    def _check_idle(self) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        left = self.progress + self.idle_timeout_s - time.monotonic()
        if left > 0:  # a request completed since the timer was set: wait for the rest
            self.timer = conn.loop.call_later(left, self._check_idle)
            return
        self.timer = None
        with self.stats.lock:
            self.stats.timeouts += 1
        conn.abort()


class HttpServer(TcpServer):
    """An HTTP/1.1 server on the reactor, in background threads; a context manager.

    `router` answers requests (default: ``demo_router()``, GET / and POST /echo);
    `threads` is the number of sub-reactors (0: the main reactor serves too);
    `idle_timeout_s` closes connections that do not complete a request in time;
    `body_length`, a function (the Content-Length values of a request) -> int, replaces the
    parser's Content-Length rule (lesson 19's exercise; see ``RequestParser``).
    """

    kind = "http-reactor"

    def __init__(self, router: Router | None = None, *, threads: int = 0, backend: str = DEFAULT_BACKEND,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, body_length: BodyLengthRule | None = None,
                 **kwargs: Any):
        check_idle_timeout(idle_timeout_s)
        self.router = router if router is not None else demo_router()
        self.stats = _Stats()
        self.idle_timeout_s = idle_timeout_s
        limits: dict[str, Any] = {"max_head_bytes": max_head_bytes, "max_body_bytes": max_body_bytes}
        if body_length is not None:
            limits["body_length"] = body_length
        ServerSession(self.router, **limits)  # check the limits and the rule here, not in a loop thread

        def factory() -> HttpProtocol:
            return HttpProtocol(self.router, idle_timeout_s=idle_timeout_s, stats=self.stats, **limits)

        super().__init__(factory, threads=threads, backend=backend, **kwargs)

    @property
    def timeouts(self) -> int:
        """Connections closed because they did not complete a request within idle_timeout_s."""
        return self.stats.timeouts

    @property
    def route_errors(self) -> list[BaseException]:
        """The latest exceptions raised by routes (each answered 500), oldest first, at most
        MAX_KEPT_ERRORS: a learner's route bug shows here, not only as a 500 in the client."""
        return list(self.stats.route_errors)

    @property
    def accepted(self) -> int:
        """Connections served so far."""
        return self.stats.connections
