"""Hostile arguments to the capstone's public API (helpers.reactor), reviewed in one table.

Each row calls one public constructor or method with a wrong type or an out-of-range value
and expects a fast, clear error: the exception type, and words its message must contain (the
parameter's name and what is allowed). Around every call we check that nothing was left
running: no thread, no server in the registry, no new fd, no child process. Rows where the
behaviour was right from the start stay in the table: it documents the contract.
A second part checks what a learner's route can do wrong (lab 06): return the wrong thing,
raise, or be no function at all.
"""

from __future__ import annotations

import http.client
import math
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from helpers.core import registry
from helpers.reactor import (
    AsyncioHttpServer,
    Buffer,
    Channel,
    EventLoop,
    EventLoopThreadPool,
    HttpServer,
    ReusePortGroup,
    Router,
    TcpServer,
    demo_router,
    start_server_process,
)
from helpers.reactor.http import Response, ServerSession


class _Echo:
    """The smallest protocol: whatever arrives goes back."""

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def data_received(self, data: memoryview) -> None:
        self.conn.write(bytes(data))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.conn = None


def _loop_call(method: str, *args: Any) -> Callable[[], Any]:
    """Call EventLoop().method(*args) on a fresh loop, closing the loop whatever happens."""
    def call() -> Any:
        loop = EventLoop()
        try:
            return getattr(loop, method)(*args)
        finally:
            loop.close()
    return call


def _pool(n: Any) -> Callable[[], Any]:
    def call() -> Any:
        loop = EventLoop()
        try:
            pool = EventLoopThreadPool(loop, n, name="hostile")
            pool.stop()
        finally:
            loop.close()
    return call


NAN, INF = math.nan, math.inf

# (label, call, expected exception, words the message must contain)
ROWS: list[tuple[str, Callable[[], Any], type[BaseException], tuple[str, ...]]] = [
    # TcpServer / HttpServer: threads, backend, port, host, factory
    ("TcpServer threads=-1", lambda: TcpServer(_Echo, threads=-1), ValueError, ("threads", "-1")),
    ("TcpServer threads='2'", lambda: TcpServer(_Echo, threads="2"), ValueError, ("threads", "'2'")),
    ("TcpServer threads=True", lambda: TcpServer(_Echo, threads=True), ValueError, ("threads", "True")),
    ("TcpServer threads=10**6", lambda: TcpServer(_Echo, threads=10**6), ValueError, ("threads", "1000000")),
    ("TcpServer backend='kqueue'", lambda: TcpServer(_Echo, backend="kqueue"), ValueError, ("backend", "kqueue")),
    ("TcpServer port=70000", lambda: TcpServer(_Echo, port=70000), ValueError, ("port", "70000")),
    ("TcpServer port=-1", lambda: TcpServer(_Echo, port=-1), ValueError, ("port", "-1")),
    ("TcpServer port='80'", lambda: TcpServer(_Echo, port="80"), TypeError, ("port", "'80'")),
    ("TcpServer backlog=-5", lambda: TcpServer(_Echo, backlog=-5), ValueError, ("backlog", "-5")),
    ("TcpServer backlog='x'", lambda: TcpServer(_Echo, backlog="x"), ValueError, ("backlog", "'x'")),
    ("TcpServer host='no such host'", lambda: TcpServer(_Echo, host="no such host"), ValueError, ("host",)),
    ("TcpServer factory=None", lambda: TcpServer(None), TypeError, ("protocol_factory", "callable")),
    ("HttpServer idle_timeout_s=0", lambda: HttpServer(idle_timeout_s=0), ValueError, ("idle_timeout_s", "0")),
    ("HttpServer idle_timeout_s=nan", lambda: HttpServer(idle_timeout_s=NAN), ValueError, ("idle_timeout_s", "nan")),
    ("HttpServer idle_timeout_s=inf", lambda: HttpServer(idle_timeout_s=INF), ValueError, ("idle_timeout_s", "inf")),
    ("HttpServer idle_timeout_s='5'", lambda: HttpServer(idle_timeout_s="5"), TypeError, ("idle_timeout_s", "'5'")),
    ("HttpServer max_head_bytes=-1", lambda: HttpServer(max_head_bytes=-1), ValueError, ("max_head_bytes", "-1")),
    ("HttpServer max_body_bytes='1'", lambda: HttpServer(max_body_bytes="1"), ValueError, ("max_body_bytes", "'1'")),
    ("HttpServer router=42", lambda: HttpServer(42), TypeError, ("router", "42")),
    ("HttpServer threads=-1", lambda: HttpServer(threads=-1), ValueError, ("threads", "-1")),
    # the asyncio twin takes the same arguments and refuses the same values
    ("AsyncioHttpServer idle_timeout_s=-1", lambda: AsyncioHttpServer(idle_timeout_s=-1), ValueError,
     ("idle_timeout_s", "-1")),
    ("AsyncioHttpServer idle_timeout_s=nan", lambda: AsyncioHttpServer(idle_timeout_s=NAN), ValueError,
     ("idle_timeout_s", "nan")),
    ("AsyncioHttpServer max_head_bytes=-1", lambda: AsyncioHttpServer(max_head_bytes=-1), ValueError,
     ("max_head_bytes", "-1")),
    ("AsyncioHttpServer router='x'", lambda: AsyncioHttpServer("x"), TypeError, ("router", "'x'")),
    ("AsyncioHttpServer port=70000", lambda: AsyncioHttpServer(port=70000), ValueError, ("port", "70000")),
    # the loop, its timers, its pool of threads
    ("EventLoop backend='select'", lambda: EventLoop("select"), ValueError, ("backend", "select")),
    ("call_later delay='1'", _loop_call("call_later", "1", print), TypeError, ("delay_s", "'1'")),
    ("call_later delay=nan", _loop_call("call_later", NAN, print), ValueError, ("delay_s", "nan")),
    ("call_later delay=inf", _loop_call("call_later", INF, print), ValueError, ("delay_s", "inf")),
    ("call_later delay=-1", _loop_call("call_later", -1, print), ValueError, ("delay_s", "-1")),
    ("call_later fn=None", _loop_call("call_later", 1, None), TypeError, ("callable", "None")),
    ("call_soon fn=None", _loop_call("call_soon", None), TypeError, ("callable", "None")),
    ("call_soon_threadsafe fn=3", _loop_call("call_soon_threadsafe", 3), TypeError, ("callable", "3")),
    ("EventLoopThreadPool n=-1", _pool(-1), ValueError, ("-1",)),
    ("EventLoopThreadPool n='2'", _pool("2"), ValueError, ("'2'",)),
    # the pieces
    ("Buffer capacity=0", lambda: Buffer(0), ValueError, ("capacity", "0")),
    ("Buffer capacity=True", lambda: Buffer(True), ValueError, ("capacity", "True")),
    ("Channel fd=-1", lambda: Channel(-1), ValueError, ("fd", "-1")),
    ("Channel fd='3'", lambda: Channel("3"), TypeError, ("fd", "'3'")),
    ("Router.add path='x'", lambda: Router().add("GET", "x", print), ValueError, ("path", "'x'")),
    ("Router.add method=7", lambda: Router().add(7, "/", print), TypeError, ("method", "7")),
    ("Router.add method='GE T'", lambda: Router().add("GE T", "/", print), ValueError, ("method", "'GE T'")),
    ("Router.add handler='hi'", lambda: Router().add("GET", "/", "hi"), TypeError, ("handler", "callable")),
    ("ServerSession router=None", lambda: ServerSession(None), TypeError, ("router", "None")),
    # servers in processes
    ("ReusePortGroup workers=0", lambda: ReusePortGroup(0), ValueError, ("workers", "0")),
    ("ReusePortGroup workers='2'", lambda: ReusePortGroup("2"), TypeError, ("workers", "'2'")),
    ("ReusePortGroup threads=-1", lambda: ReusePortGroup(1, threads=-1), ValueError, ("threads", "-1")),
    ("ReusePortGroup idle_timeout_s=0", lambda: ReusePortGroup(1, idle_timeout_s=0), ValueError,
     ("idle_timeout_s", "0")),
    ("start_server_process kind='nginx'", lambda: start_server_process("nginx"), ValueError, ("kind", "nginx")),
    # checked before any process starts (was: the child started, failed, and its error came back)
    ("start_server_process threads=-1", lambda: start_server_process("reactor", threads=-1), ValueError,
     ("threads (sub-reactors) must be an int in 0-64, got -1",)),
    ("start_server_process backend='kqueue'", lambda: start_server_process("reactor", backend="kqueue"),
     ValueError, ("backend", "'kqueue'")),
    ("start_server_process host='0.0.0.0'", lambda: start_server_process("reactor", host="0.0.0.0"),
     ValueError, ("host", "loopback")),
    ("start_server_process nope=1", lambda: start_server_process("reactor", nope=1), TypeError, ("nope",)),
]


def _snapshot() -> tuple[set[str], int, list[Any], set[int]]:
    """Threads, open fds, live servers and child processes of this test process."""
    threads = {t.name for t in threading.enumerate()}
    fds = len(os.listdir("/proc/self/fd"))
    children: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            children.update(int(pid) for pid in f.read().split())
    return threads, fds, list(registry.live_servers()), children


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("label", "call", "error", "words"), ROWS, ids=[r[0] for r in ROWS])
def test_hostile_argument_gives_a_clear_error(label: str, call: Callable[[], Any], error: type[BaseException],
                                              words: tuple[str, ...]) -> None:
    threads0, fds0, live0, children0 = _snapshot()
    with pytest.raises(error) as caught:
        result = call()
        for leftover in (result,):  # a call that wrongly succeeded must not leak what it started
            if hasattr(leftover, "stop"):
                leftover.stop()
    message = str(caught.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{label}: the message {message!r} does not say {missing}"
    threads1, fds1, live1, children1 = _snapshot()
    assert threads1 <= threads0, f"{label} left threads {threads1 - threads0}"
    assert live1 == live0, f"{label} left servers running: {live1}"
    assert children1 <= children0, f"{label} left child processes {children1 - children0}"
    assert fds1 <= fds0, f"{label} left {fds1 - fds0} file descriptors open"


# -- what a learner's route can do wrong ------------------------------------------------------------

BAD_ROUTES: list[tuple[str, Callable[[Any], Any]]] = [
    ("returns None", lambda req: None),
    ("returns a str", lambda req: "hello"),
    ("returns bytes", lambda req: b"hello"),
    ("a str body", lambda req: Response(200, "hello")),
    ("status 'ok'", lambda req: Response("ok", b"x")),
    ("status 99", lambda req: Response(99, b"x")),
    ("header with CRLF", lambda req: Response(200, b"x", [("X-Evil", "a\r\nSet-Cookie: y=1")])),
    ("header not a pair", lambda req: Response(200, b"x", ["X-Oops"])),
    ("raises", lambda req: 1 / 0),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("threads", [0, 2])
def test_bad_routes_answer_500_and_the_server_goes_on(threads: int) -> None:
    """A route that returns nonsense or raises: the client gets a 500 with a length at once (not
    a closed connection or a hang), the error is kept for the learner, other routes still work."""
    router = demo_router()
    for i, (_, route) in enumerate(BAD_ROUTES):
        router.add("GET", f"/bad{i}", route)
    with HttpServer(router, threads=threads) as server:
        conn = http.client.HTTPConnection(*server.address, timeout=5)
        try:
            for i, (label, _) in enumerate(BAD_ROUTES):
                conn.request("GET", f"/bad{i}")
                reply = conn.getresponse()
                body = reply.read()
                assert reply.status == 500, f"route that {label}: {reply.status} {body!r}"
                assert reply.getheader("Content-Length") == str(len(body))
                conn.request("GET", "/")  # the same keep-alive connection still serves
                ok = conn.getresponse()
                assert ok.status == 200 and ok.read() == b"Hello, world!\n", label
        finally:
            conn.close()
        kept = server.route_errors
    assert len(kept) == len(BAD_ROUTES), kept
    assert all(isinstance(e, Exception) for e in kept)
