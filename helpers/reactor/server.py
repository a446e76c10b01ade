"""The TCP server: a listening socket, a main reactor with its acceptor, optional sub-reactors.

Theory of operation. ``TcpServer(protocol_factory)`` puts the pieces together:

* a listening socket on 127.0.0.1 port 0 (the kernel picks the port; ``address`` says
  which), with SO_REUSEADDR, and SO_REUSEPORT when several processes share the port;
* a main ``EventLoop`` in a thread named ``course-server-reactor:<port>-main``, running an
  ``Acceptor`` on the listening socket;
* ``threads`` sub-reactor threads (``EventLoopThreadPool``); each accepted socket goes to
  one of them through its task queue and wake-up socketpair, and becomes a
  ``TcpConnection`` with a new protocol object from ``protocol_factory()``.

``stop()`` is idempotent and always leaves nothing behind: the main loop closes the
acceptor and its connections and ends, then each sub-reactor closes its connections and
ends, and every thread is joined. Exceptions raised by protocol code were kept (never
printed from a background thread) and ``stop()`` raises them as a ``ServerError``.
``serve_forever()`` runs the main loop in the calling thread instead (for a server
process); stop it with ``stop()`` from another thread or a signal handler.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from ..core import checks, registry
from ..core.registry import THREAD_PREFIX
from ..servers import ServerError, listening_socket
from .acceptor import Acceptor
from .connection import StreamProtocol, TcpConnection
from .dispatcher import DEFAULT_BACKEND
from .loop import EventLoop
from .threads import EventLoopThreadPool

__all__ = ["TcpServer", "listening_socket"]


class TcpServer:
    """A reactor TCP server running in background threads; a context manager."""

    kind = "reactor"

    def __init__(self, protocol_factory: Callable[[], StreamProtocol], *, host: str = "127.0.0.1",
                 port: int = 0, threads: int = 0, backend: str = DEFAULT_BACKEND, backlog: int = 1024,
                 reuse_port: bool = False, start: bool = True):
        if not callable(protocol_factory):
            raise TypeError(f"protocol_factory must be callable (a class or function returning a protocol), "
                            f"got {type(protocol_factory).__name__} {protocol_factory!r}")
        self.protocol_factory = protocol_factory
        self.errors: list[BaseException] = []
        self._errors_lock = threading.Lock()
        self.listener = listening_socket(host, port, backlog=backlog, reuse_port=reuse_port)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.name = f"{self.kind}:{self.address[1]}"
        self._stopped = False
        self._main_thread: threading.Thread | None = None
        self._foreground = False
        main_loop: EventLoop | None = None
        try:  # roll back what was made if a later step fails (socketserver's habit)
            main_loop = self.main_loop = EventLoop(backend, name=f"{self.name}-main")
            self.main_loop.on_error = self._on_error
            self.pool = EventLoopThreadPool(self.main_loop, threads, name=self.name, backend=backend)
        except BaseException:
            if main_loop is not None:
                main_loop.close()
            self.listener.close()
            raise
        self.connections: dict[EventLoop, set[TcpConnection]] = {}
        for loop in [self.main_loop] + [t.loop for t in self.pool.threads]:
            loop.on_error = self._on_error
            self.connections[loop] = set()
            loop.on_stop(lambda loop=loop: self._close_all(loop))
        self.acceptor = Acceptor(self.main_loop, self.listener, self._on_connection, backlog=backlog)
        self.main_loop.on_stop(self.acceptor.close)
        registry.register(self)  # so stop_all() and the leak checks see it
        if start:
            self._main_thread = threading.Thread(target=self.main_loop.run, name=f"{THREAD_PREFIX}-{self.name}-main",
                                                 daemon=True)
            self._main_thread.start()

    def serve_forever(self) -> None:
        """Run the main loop in this thread (for a server process) until stop(), then clean up."""
        if self._main_thread is not None:
            raise RuntimeError("this server already runs in a background thread (start=True)")
        self._foreground = True
        try:
            self.main_loop.run()
        finally:
            self._stopped = True
            self.pool.stop()
            self.listener.close()
            registry.unregister(self)

    # -- in the main loop's thread ---------------------------------------------------------------
    def _on_connection(self, sock: socket.socket, address: Any) -> None:
        loop = self.pool.next_loop()
        if loop is self.main_loop:
            self._make_connection(loop, sock)
            return
        try:
            loop.call_soon_threadsafe(self._make_connection, loop, sock)
        except RuntimeError:  # that sub-reactor is already shutting down
            sock.close()

    # -- in the owning loop's thread ---------------------------------------------------------------
    def _make_connection(self, loop: EventLoop, sock: socket.socket) -> None:
        conns = self.connections[loop]
        try:
            conn = TcpConnection(loop, sock, self.protocol_factory(), on_closed=conns.discard)
        except BaseException:
            sock.close()
            raise
        if not conn.closed:
            conns.add(conn)

    def _close_all(self, loop: EventLoop) -> None:
        for conn in list(self.connections[loop]):
            conn.abort()

    def _on_error(self, exc: BaseException) -> None:
        with self._errors_lock:
            self.errors.append(exc)

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    @property
    def paused(self) -> int:
        """How many times accept() ran out of file descriptors and the acceptor paused."""
        return self.acceptor.paused

    def open_connections(self) -> int:
        """Connections currently open (a snapshot; the loops may change it meanwhile)."""
        return sum(len(c) for c in self.connections.values())

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Close the listener and every connection, end every loop and join every thread.

        Safe to call twice. Raises ServerError for exceptions protocol code raised, and
        TypeError/ValueError, before stopping anything, if `timeout_s` is not a number of
        seconds in [0, 600].
        """
        checks.seconds("timeout_s", timeout_s, high=600, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            self.main_loop.stop()  # first: no more connections are handed out
            if self._foreground:
                return  # serve_forever() cleans up when its loop returns
            if self._main_thread is not None:
                self._main_thread.join(timeout_s)
            self.pool.stop(timeout_s)
            if not self.listener._closed:  # never started: close it here
                self.listener.close()
            self.main_loop.close()
            registry.unregister(self)
            if self._main_thread is not None and self._main_thread.is_alive():
                raise RuntimeError(f"{self._main_thread.name} still running after {timeout_s} s")
        if raise_errors and self.errors:
            with self._errors_lock:
                errors, self.errors = self.errors, []
            raise ServerError(self.name, errors) from errors[0]

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} threads={len(self.pool.threads)} "
                f"{'running' if self.running else 'stopped'}>")
