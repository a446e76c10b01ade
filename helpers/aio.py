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

The two services are the ones lesson 17 measures: ``echo`` sends back what it got, and
``http`` answers each ``GET`` request head with a 3-byte ``200 OK`` body on a keep-alive
connection. ``HttpResponder`` is the HTTP part without I/O (bytes in, bytes out), so the
same code also serves the thread-per-connection variant, ``http_blocking(conn)``.

``process_status()`` and ``thread_syscalls()`` read /proc/self (man 5 proc): how many
threads and how much memory this process has, and in which system call each thread waits.
"""

from __future__ import annotations

import asyncio
import platform
import socket
import threading
import time
from pathlib import Path
from typing import Any

from . import checks
from .addresses import loopback_host
from .behaviours import check_connection
from .servers import THREAD_PREFIX, ServerError, listening_socket, register, unregister

__all__ = [
    "SERVICES",
    "ProtocolError",
    "HttpResponder",
    "http_blocking",
    "AsyncioServer",
    "process_status",
    "thread_syscalls",
    "blocked_in",
    "SYSCALL_NAMES",
]

SERVICES = ("echo", "http")
MAX_HEAD = 8192  # bytes of one request head; nginx's default large_client_header_buffers is 8 KiB
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
HTTP_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
HTTP_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_BACKLOG = 65535  # listen() backlogs beyond this are nonsense: Linux caps them at net.core.somaxconn
MAX_WAIT_S = 600.0  # the longest a start, stop or wait here may be asked to take


class ProtocolError(ValueError):
    """The peer broke the tiny HTTP protocol; ``.response`` is what to send before closing."""

    def __init__(self, message: str, response: bytes):
        super().__init__(message)
        self.response = response


class HttpResponder:
    """The tiny HTTP service without I/O: feed it bytes, get back the bytes to send.

    Every complete request head (ending in a blank line, RFC 9112 section 2.1) gets one
    ``200 OK`` with the body ``ok\\n``; requests have no body, connections stay open
    (HTTP/1.1 keep-alive). A head longer than ``MAX_HEAD`` bytes, or one that does not
    start with a method and a target, raises ProtocolError carrying a 431 or 400 answer.
    """

    def __init__(self, max_head: int = MAX_HEAD):
        if isinstance(max_head, bool) or not isinstance(max_head, int) or not 1 <= max_head <= 1 << 20:
            raise ValueError(f"max_head must be an int in 1-{1 << 20} bytes, got {max_head!r}")
        self.max_head = max_head
        self._buffer = bytearray()
        self.requests = 0

    def feed(self, data: bytes) -> bytes:
        """Add received bytes; return the responses now due (b'' if a head is incomplete).

        `data` must be bytes-like (TypeError otherwise: decode nothing, the wire carries bytes).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed() takes the bytes received (bytes), got {type(data).__name__} {data!r:.60}")
        self._buffer += data
        out = bytearray()
        while (end := self._buffer.find(b"\r\n\r\n")) != -1:
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            if end > self.max_head:
                raise ProtocolError(f"request head of {end} bytes is over {self.max_head}", HTTP_TOO_LARGE)
            if len(head.split(b"\r\n", 1)[0].split(b" ")) != 3:
                raise ProtocolError(f"not an HTTP request line: {head[:60]!r}", HTTP_BAD)
            self.requests += 1
            out += HTTP_OK
        if len(self._buffer) > self.max_head:
            raise ProtocolError(f"request head over {self.max_head} bytes with no end", HTTP_TOO_LARGE)
        return bytes(out)


def http_blocking(conn: socket.socket) -> int:
    """The http service with blocking calls, for servers.TCPServer (thread per connection).

    Returns the number of requests answered; a broken request gets its 4xx answer and the
    connection is closed. Refuses (TypeError/ValueError) what behaviours.check_connection does.
    """
    check_connection(conn, "http_blocking")
    responder = HttpResponder()
    while data := conn.recv(65536):
        try:
            conn.sendall(responder.feed(data))
        except ProtocolError as exc:
            conn.sendall(exc.response)
            break
    return responder.requests


class _EchoProtocol(asyncio.Protocol):
    """Echo: every data_received() is written straight back."""

    def __init__(self, server: AsyncioServer):
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._transports.add(transport)
        self.server.accepted += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.server.bytes_in += len(data)
        self.transport.write(data)

    # Flow control: if the peer stops reading, stop reading from it too (else our buffer grows).
    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._transports.discard(self.transport)


class _HttpProtocol(_EchoProtocol):
    """HTTP: bytes go through an HttpResponder; a protocol error answers 4xx and closes."""

    def __init__(self, server: AsyncioServer):
        super().__init__(server)
        self.responder = HttpResponder()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.server.bytes_in += len(data)
        try:
            self.transport.write(self.responder.feed(data))
        except ProtocolError as exc:
            self.transport.write(exc.response)
            self.transport.close()  # close() sends what is buffered first, then FIN


_PROTOCOLS = {"echo": _EchoProtocol, "http": _HttpProtocol}


class AsyncioServer:
    """An asyncio server (echo or http) on its own event loop in a background thread.

    ``.loop`` is the loop (look at ``type(server.loop._selector)``), ``.thread_native_id``
    the kernel's id for its thread, ``.connections`` the open connections now,
    ``.accepted`` all connections so far. Use it as a context manager, or call ``stop()``.
    """

    kind = "asyncio"

    def __init__(self, service: str = "echo", *, host: str = "127.0.0.1", port: int = 0, backlog: int = 1024,
                 start_timeout_s: float = 5.0):
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, got {service!r}")
        if isinstance(backlog, bool) or not isinstance(backlog, int) or not 0 <= backlog <= MAX_BACKLOG:
            raise ValueError(f"backlog must be an int >= 0 and <= {MAX_BACKLOG}, got {backlog!r}")
        loopback_host("host", host)  # "host must be an IP address ..." for a name such as 'localhost'
        checks.seconds("start_timeout_s", start_timeout_s, high=MAX_WAIT_S)
        self.service = service
        self.backlog = backlog
        self.errors: list[BaseException] = []
        self.accepted = 0
        self.bytes_in = 0
        self._transports: set[Any] = set()
        self._stopped = False
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        sock = listening_socket(host, port, backlog=backlog)
        self._address = sock.getsockname()[:2]
        self.sock = sock
        self.name = f"asyncio-{service}:{self._address[1]}"
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
        self.errors.append(context.get("exception") or RuntimeError(context.get("message", "asyncio error")))

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            factory = _PROTOCOLS[self.service]
            # create_server() calls listen() again, with its own backlog (default 100): pass ours.
            self._server = loop.run_until_complete(
                loop.create_server(lambda: factory(self), sock=self.sock, backlog=self.backlog)
            )
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


#: x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) a waiting thread shows.
SYSCALL_NAMES_X86_64 = {
    0: "read", 7: "poll", 17: "pread64", 23: "select", 43: "accept", 44: "sendto", 45: "recvfrom",
    202: "futex", 232: "epoll_wait", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4",
    426: "io_uring_enter", 441: "epoll_pwait2",
}
#: The same for arm64 (include/uapi/asm-generic/unistd.h), which has no plain epoll_wait or poll.
SYSCALL_NAMES_AARCH64 = {
    22: "epoll_pwait", 63: "read", 67: "pread64", 72: "pselect6", 73: "ppoll", 98: "futex", 202: "accept",
    206: "sendto", 207: "recvfrom", 242: "accept4", 426: "io_uring_enter", 441: "epoll_pwait2",
}
SYSCALL_NAMES = {"x86_64": SYSCALL_NAMES_X86_64, "aarch64": SYSCALL_NAMES_AARCH64}.get(platform.machine(), {})
EPOLL_WAITS = {"epoll_wait", "epoll_pwait", "epoll_pwait2"}  # what an idle epoll loop may wait in


def thread_syscalls(tids: list[int] | None = None) -> dict[int, str]:
    """For each thread of this process (or those in `tids`), the system call it waits in.

    Reads /proc/self/task/TID/syscall: the syscall number while the thread is blocked in
    one, ``running`` while it runs. Names are known for x86_64 and arm64; elsewhere 'syscall N'.
    Threads that exit while we read are left out. `tids` must be a list of ints (thread ids).
    """
    _check_tids(tids)
    out: dict[int, str] = {}
    for tid in tids if tids is not None else sorted(int(t) for t in Path("/proc/self/task").iterdir()
                                                    if t.name.isdigit()):
        try:
            text = Path(f"/proc/self/task/{tid}/syscall").read_text().split()
        except OSError:
            continue
        if not text:
            continue
        if text[0] == "running":
            out[tid] = "running"
        elif text[0] == "-1":
            out[tid] = "in the kernel, not in a system call"
        else:
            number = int(text[0])
            out[tid] = SYSCALL_NAMES.get(number, f"syscall {number}")
    return out


def _check_tids(tids: object) -> None:
    if tids is None:
        return
    if not isinstance(tids, (list, tuple, set, frozenset)) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tids):
        raise TypeError(f"tids must be a list of thread ids (ints >= 1, e.g. server.thread_native_id), got {tids!r}")


def blocked_in(tids: list[int], timeout_s: float = 2.0, *, expect: set[str] | None = None,
               settle_s: float = 0.01) -> dict[int, str]:
    """Like thread_syscalls(tids), once the threads have settled (at most `timeout_s`).

    A server thread that just answered is busy for a moment (running, or in futex while it
    takes the interpreter lock back, which on a busy machine can last a while); once idle it
    sits in the system call it waits in. Settled means: every thread in one of the calls in
    `expect`, if given; otherwise no thread running and the same answer twice, `settle_s`
    apart. At the deadline the latest answer is returned as it is, so a caller that asserts
    on it sees what the threads were really doing. `timeout_s` is in (0, 600] s and
    `settle_s` in (0, 1] s; `expect` is a set of system call names such as {"epoll_wait"}.
    """
    if tids is None:
        raise TypeError("blocked_in() needs the thread ids to watch, got None")
    _check_tids(tids)
    checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
    if isinstance(settle_s, bool) or not isinstance(settle_s, (int, float)) or not 0 < settle_s <= 1:
        raise ValueError(f"settle_s must be a number of seconds in (0, 1], got {settle_s!r}")
    if expect is not None and not (isinstance(expect, (set, frozenset)) and all(isinstance(e, str) for e in expect)):
        raise TypeError(f"expect must be a set of system call names such as {{'epoll_wait'}}, or None, got {expect!r}")
    deadline = time.monotonic() + timeout_s
    previous: dict[int, str] = {}
    while True:
        now = thread_syscalls(tids)
        if expect is not None:
            settled = len(now) == len(tids) and set(now.values()) <= expect
        else:
            settled = "running" not in now.values() and now == previous
        if settled or time.monotonic() > deadline:
            return now
        previous = now
        time.sleep(settle_s)
