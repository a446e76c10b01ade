"""The same HTTP session on asyncio: the peer the reactor is measured against.

Theory of operation. To compare *event loops* and not parsers, this server runs the very
same ``ServerSession`` (``http.py``) as the reactor, only inside an ``asyncio.Protocol``:
``data_received`` feeds the session and writes its answer with ``transport.write`` (which
is asyncio's own output-buffer pattern), and the same idle timeout is kept with
``loop.call_later``. asyncio's loop is the stdlib's reactor (``selector_events.py``).

``AsyncioHttpServer`` runs it in its own thread with its own loop (``asyncio.run()``
fails inside a Jupyter kernel, whose thread already runs a loop), named with the course
prefix, and stops it from any thread with ``loop.call_soon_threadsafe``. ``serve()`` runs it
in the foreground, for a server process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections import deque
from typing import Any

from ..core import checks, registry
from ..core.accept import asyncio_listener, asyncio_paused
from ..core.registry import THREAD_PREFIX
from ..servers import ServerError
from .http import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEAD_BYTES, MAX_KEPT_ERRORS, Router, ServerSession, demo_router
from .httpserver import DEFAULT_IDLE_TIMEOUT_S, check_idle_timeout
from .server import listening_socket

__all__ = ["AsyncioHttpProtocol", "AsyncioHttpServer"]

BACKLOG = 1024  # listen() backlog, as the reactor's TcpServer


class AsyncioHttpProtocol(asyncio.Protocol):
    """One HTTP connection on asyncio, with the reactor's session and idle timeout."""

    def __init__(self, router: Router, idle_timeout_s: float, server: AsyncioHttpServer | None = None,
                 **limits: int):
        self.session = ServerSession(router, errors=server.route_errors if server is not None else None, **limits)
        self.idle_timeout_s = idle_timeout_s
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.progress = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # asyncio sets it too, since 3.7
        self.progress = time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(self.idle_timeout_s, self._check_idle)
        if self.server is not None:
            self.server.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        session = self.session
        before = session.requests
        out, close = session.receive(data)
        if out:
            self.transport.write(out)
        if close:
            self.transport.close()
        if session.requests != before:
            self.progress = time.monotonic()

    def eof_received(self) -> bool:
        self.session.receive(b"")
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.server is not None:
            self.server.transports.discard(self.transport)

    def _check_idle(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        left = self.progress + self.idle_timeout_s - time.monotonic()
        if left > 0:
            self.timer = asyncio.get_running_loop().call_later(left, self._check_idle)
            return
        if self.server is not None:
            self.server.timeouts += 1
        self.transport.abort()


class AsyncioHttpServer:
    """``loop.create_server`` with AsyncioHttpProtocol, in a background thread; a context manager."""

    kind = "http-asyncio"

    def __init__(self, router: Router | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, start: bool = True):
        check_idle_timeout(idle_timeout_s)
        self.router = router if router is not None else demo_router()
        self.limits = {"max_head_bytes": max_head_bytes, "max_body_bytes": max_body_bytes}
        ServerSession(self.router, **self.limits)  # check the router and the limits now
        self.idle_timeout_s = idle_timeout_s
        #: the latest exceptions raised by routes (each answered 500), as HttpServer.route_errors
        self.route_errors: deque[BaseException] = deque(maxlen=MAX_KEPT_ERRORS)
        self.timeouts = 0
        self.transports: set[Any] = set()
        self.errors: list[BaseException] = []
        self.listener = asyncio_listener(listening_socket(host, port, backlog=BACKLOG))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.name = f"{self.kind}:{self.address[1]}"
        self.paused = 0  # accept() out of descriptors: asyncio paused accepting (core.accept)
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        self._server: asyncio.AbstractServer | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None
        registry.register(self)
        if start:
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._thread = threading.Thread(target=self._run, args=(ready,), name=f"{THREAD_PREFIX}-{self.name}",
                                            daemon=True)
            self._thread.start()
            ready.result(timeout=10)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Where asyncio would log an error (from a background thread: never print)."""
        if asyncio_paused(context):
            self.paused += 1
            return
        self.errors.append(context.get("exception") or RuntimeError(context["message"]))

    def _factory(self) -> AsyncioHttpProtocol:
        return AsyncioHttpProtocol(self.router, self.idle_timeout_s, self, **self.limits)

    async def _start(self) -> None:
        # create_server() calls listen() again, with backlog=100 unless told: keep the listener's.
        self._server = await self.loop.create_server(self._factory, sock=self.listener, backlog=BACKLOG)

    def _run(self, ready: concurrent.futures.Future[None] | None = None) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            if ready is not None:
                ready.set_exception(exc)
            self.loop.close()
            return
        if ready is not None:
            ready.set_result(None)
        try:
            self.loop.run_forever()
        finally:
            self._server.close()
            for t in list(self.transports):
                t.abort()
            self.loop.run_until_complete(self._server.wait_closed())
            self.loop.run_until_complete(asyncio.sleep(0))  # let connection_lost callbacks run
            self.loop.close()

    def serve_forever(self) -> None:
        """Run the loop in this thread until stop() (for a server process)."""
        self._run()

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop the loop, close every connection and the listener, join the thread. Idempotent.
        TypeError/ValueError, before stopping anything, if `timeout_s` is not a number of seconds
        in [0, 600]."""
        checks.seconds("timeout_s", timeout_s, high=600, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            if not self.loop.is_closed():
                try:
                    self.loop.call_soon_threadsafe(self.loop.stop)
                except RuntimeError:
                    pass
            if self._thread is not None:
                self._thread.join(timeout_s)
            self.listener.close()
            registry.unregister(self)
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} still running after {timeout_s} s")
        if raise_errors and self.errors:
            errors, self.errors = self.errors, []
            raise ServerError(self.name, errors) from errors[0]

    def __enter__(self) -> AsyncioHttpServer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        return f"<AsyncioHttpServer {self.name} {'running' if self.running else 'stopped'}>"
