"""asyncio as a reactor: an echo and a tiny HTTP server on their own event loop, in a thread.

Theory of operation. asyncio's default event loop on Linux is a *reactor*: one thread asks
the kernel "which of these sockets is ready?" (``selectors.EpollSelector``, so epoll_wait(2)),
and for each ready socket the loop itself calls recv() or send() and hands the bytes to a
``Protocol`` callback (``data_received``). Nothing is read until the kernel says it can be.

A Jupyter kernel already runs an asyncio loop in its main thread, so ``asyncio.run()``
fails there ("cannot be called from a running event loop"). This module gives the server
its own loop in its own thread instead:

* ``AsyncioServer(service)`` binds 127.0.0.1 port 0 in the caller's thread (so a bad
  address raises at once and ``.address`` is known), then runs ``loop.create_server()`` and
  ``loop.run_forever()`` in a thread named with the course's ``course-server`` prefix.
* ``stop()`` asks the loop to stop from the outside (``call_soon_threadsafe``, which writes
  to the loop's self-pipe: a wake-up, not a polling interval), closes the listener, aborts
  every open transport, runs the loop once more so ``connection_lost`` callbacks run,
  closes the loop (which closes its epoll fd and self-pipe) and joins the thread.
* Nothing prints: exceptions the loop would log go to ``.errors`` and ``stop()`` raises
  them as ``servers.ServerError``. The server is in ``servers.live_servers()`` while it runs,
  so ``servers.stop_all()`` and the leak checks see it.

The two services are the ones lesson 17 measures (``helpers.services``): ``echo`` sends
back what it got, and ``http`` answers ``GET /`` with a 3-byte ``200 OK`` body on a
keep-alive connection, with the capstone's HTTP session (lesson 19) underneath. Out of file
descriptors, asyncio pauses accepting by itself for a second (the course's accept policy,
``core.accept``); the server counts those pauses in ``paused`` rather than keeping them as
errors.
``AsyncioServer(protocol=factory)`` serves a protocol someone else wrote (a learner's, in
lesson 18's exercises) instead: each connection gets ``factory()``, wrapped so the server
still tracks its transport (``transports``) and closes it on ``stop()``.

``process_status()`` reads /proc/self/status (man 5 proc): how many threads and how much
memory this process has. Which system call each thread waits in (``thread_syscalls()``,
``blocked_in()``) is general, so it lives in ``observe.syscalls``; lesson 18 finds it here too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .addresses import loopback_host
from .core import checks
from .core.accept import asyncio_listener, asyncio_paused
from .core.registry import THREAD_PREFIX, register, unregister
from .observe.syscalls import EPOLL_WAITS, SYSCALL_NAMES, blocked_in, thread_syscalls  # noqa: F401 (re-exported)
from .servers import ServerError, check_backlog, listening_socket
from .services import SERVICES, make_service

__all__ = [
    "SERVICES",
    "AsyncioServer",
    "process_status",
]
# thread_syscalls, blocked_in, SYSCALL_NAMES and EPOLL_WAITS are observe.syscalls' (imported
# above, so lesson 18's h.aio.blocked_in keeps working); they are listed there, not here.

MAX_WAIT_S = 600.0  # the longest a start, stop or wait here may be asked to take


class _ServiceProtocol(asyncio.Protocol):
    """One connection: what arrives goes through the service, its answer goes back."""

    def __init__(self, server: AsyncioServer):
        self.server = server
        self.service = make_service(server.service)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._transports.add(transport)
        self.server.accepted += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.server.bytes_in += len(data)
        answer, close = self.service.receive(data)
        if answer:
            self.transport.write(answer)
        if close:  # the service refused the request (400, 431, ...): close() sends the answer first
            self.transport.close()

    # Flow control: if the peer stops reading, stop reading from it too (else our buffer grows).
    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._transports.discard(self.transport)


class _Tracked(asyncio.Protocol):
    """Someone else's protocol, every callback passed on; the server tracks its transport."""

    def __init__(self, server: AsyncioServer, inner: asyncio.BaseProtocol):
        self.server = server
        self.inner: Any = inner
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.server._transports.add(transport)
        self.server.accepted += 1
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.server.bytes_in += len(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._transports.discard(self.transport)
        self.inner.connection_lost(exc)


class AsyncioServer:
    """An asyncio server (echo or http) on its own event loop in a background thread.

    ``.loop`` is the loop (look at ``type(server.loop._selector)``), ``.thread_native_id``
    the kernel's id for its thread, ``.connections`` the open connections now,
    ``.accepted`` all connections so far. Use it as a context manager, or call ``stop()``.
    """

    kind = "asyncio"

    def __init__(self, service: str = "echo", *, host: str = "127.0.0.1", port: int = 0, backlog: int = 1024,
                 start_timeout_s: float = 5.0, reuse_port: bool = False,
                 protocol: Callable[[], asyncio.BaseProtocol] | None = None):
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, got {service!r}")
        if protocol is not None and not callable(protocol):
            raise TypeError(f"protocol must be a protocol factory (a class or function), got {protocol!r}")
        self.protocol = protocol
        check_backlog(backlog)
        loopback_host("host", host)  # "host must be an IP address ..." for a name such as 'localhost'
        checks.seconds("start_timeout_s", start_timeout_s, high=MAX_WAIT_S)
        self.service = service
        self.backlog = backlog
        self.errors: list[BaseException] = []
        self.accepted = 0
        self.paused = 0  # accept() out of descriptors: asyncio paused accepting (core.accept)
        self.bytes_in = 0
        self._transports: set[Any] = set()
        self._stopped = False
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        sock = asyncio_listener(listening_socket(host, port, backlog=backlog, reuse_port=reuse_port))
        self._address = sock.getsockname()[:2]
        self.sock = sock
        self.name = f"asyncio-{service if protocol is None else 'protocol'}:{self._address[1]}"
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{self.name}-loop", daemon=True)
        register(self)
        self._thread.start()
        if not self._ready.wait(start_timeout_s) or self.errors:
            self.stop(raise_errors=False)
            raise ServerError(self.name, self.errors or [TimeoutError(f"loop not serving after {start_timeout_s} s")])

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Where asyncio would log an error (from a background thread: never print)."""
        if asyncio_paused(context):
            self.paused += 1
            return
        self.errors.append(context.get("exception") or RuntimeError(context.get("message", "asyncio error")))

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            protocol = self.protocol
            make = (lambda: _ServiceProtocol(self)) if protocol is None else (lambda: _Tracked(self, protocol()))
            # create_server() calls listen() again, with its own backlog (default 100): pass ours.
            self._server = loop.run_until_complete(loop.create_server(make, sock=self.sock, backlog=self.backlog))
            loop.call_soon(self._ready.set)
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - handed back to stop(), never lost
            self.errors.append(exc)
        finally:
            try:
                if self._server is not None:
                    self._server.close()  # closes the listening socket
                for transport in list(self._transports):
                    transport.abort()  # close now, without flushing (the server is going away)
                loop.run_until_complete(asyncio.sleep(0))  # let connection_lost() callbacks run
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()  # closes the epoll fd and the self-pipe
                asyncio.set_event_loop(None)
                self._ready.set()

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens, e.g. ('127.0.0.1', 41017)."""
        return self._address

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._transports)

    @property
    def transports(self) -> list[asyncio.BaseTransport]:
        """The open connections' transports (touch them only from the loop's thread)."""
        return list(self._transports)

    def serving(self) -> int:
        """Connections open right now (the same as ``connections``: what every C10K model reports)."""
        return len(self._transports)

    @property
    def thread_native_id(self) -> int | None:
        """The kernel's thread id of the loop thread (a directory in /proc/self/task)."""
        return self._thread.native_id

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop the loop, close the listener and every connection, join the thread. Idempotent.

        Raises ServerError if the loop reported an error (unless raise_errors is False), and
        ValueError, before stopping anything, if `timeout_s` is not a number in [0, 600].
        """
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            if not self.loop.is_closed():
                try:
                    self.loop.call_soon_threadsafe(self.loop.stop)
                except RuntimeError:  # closed between the check and the call
                    pass
            self._thread.join(timeout_s)
            self.sock.close()
            unregister(self)
            if self._thread.is_alive():
                self.errors.append(TimeoutError(f"{self.name}: loop thread still running after {timeout_s} s"))
        if raise_errors and self.errors:
            errors, self.errors = self.errors, []
            raise ServerError(self.name, errors) from errors[0]

    def __enter__(self) -> AsyncioServer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        return f"<AsyncioServer {self.name} {'running' if self.running else 'stopped'}>"


def process_status(pid: int | str = "self") -> dict[str, int]:
    """Threads, VmRSS (KiB) and VmSize (KiB) of a process, from /proc/PID/status (man 5 proc).

    VmRSS is memory actually in RAM; VmSize is the address space reserved, which counts
    every thread's whole stack (8 MiB each by default, ``ulimit -s``) even where untouched.
    `pid` is "self" or a process id (a positive int); ProcessLookupError if there is no such process.
    """
    if pid != "self" and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 1):
        raise ValueError(f"pid must be 'self' or a process id (an int >= 1), got {pid!r}")
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(f"no process {pid}: /proc/{pid}/status does not exist (has it exited?)") from None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS", "VmSize"):
            out[key] = int(value.split()[0])
    return out


