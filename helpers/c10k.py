"""One service, eight server models: the C10K lesson's servers (original course lectures 24-29).

Theory of operation. Every model serves the same two tiny protocols, written once as
sans-IO classes (bytes in, bytes out, no sockets): ``echo`` sends back what it got, and
``http`` answers every ``GET`` request head with the same 3-byte ``200 OK`` (keep-alive,
no request bodies). What differs is *who waits for the kernel*:

=================  ============================================================
``fork``           a process per connection: ``accept()``, ``fork()``, the child
                   serves with blocking calls (man 2 fork, man 2 waitpid)
``thread``         a thread per connection, blocking calls (man 7 pthreads)
``pool``           N threads take connections from a queue; one connection
                   occupies one thread until it closes
``poll``           one thread, non-blocking sockets, ``poll(2)`` (a reactor)
``epoll``          the same loop on ``epoll(7)``
``main-sub``       a main reactor accepts and hands each connection to one of
                   N sub-reactors, each a thread with its own epoll loop
``asyncio``        the standard library's event loop, in its own thread
``reuseport``      N processes, each a full epoll reactor, all listening on
                   the same port with ``SO_REUSEPORT`` (man 7 socket): the
                   kernel spreads new connections over them
=================  ============================================================

Thread models run in this process (``ThreadPerConnection(...)`` and friends); any model
also runs in a child process with ``ModelProcess(model)``, which is how the lesson
measures memory (the Pss of the process tree, from /proc/PID/smaps_rollup) and CPU time
(/proc/PID/stat) without the notebook's own memory in the way. ``fork`` and
``reuseport`` are child processes by nature. Children are started with ``subprocess``
(never by forking the multi-threaded Jupyter kernel) and run this file as a script with
``python -I``, so it imports only the standard library; they exit when their stdin
closes or on SIGTERM, and ``stop()`` kills the whole process group if they do not.

Rules shared with ``helpers.servers``: 127.0.0.1 port 0, ``.address`` from
``getsockname()``, every thread named with the ``course-server`` prefix, ``stop()``
idempotent and joining every thread, context managers, no printing from background
threads (errors are kept in ``.errors`` and raised by ``stop()``).
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import json
import os
import queue
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MODELS",
    "SERVICES",
    "HTTP_RESPONSE",
    "ProtocolError",
    "ModelError",
    "make_service",
    "serve_blocking",
    "ThreadPerConnection",
    "ThreadPool",
    "PollReactor",
    "EpollReactor",
    "MainSubReactors",
    "AsyncioServer",
    "ModelProcess",
    "ForkPerConnection",
    "ReusePortProcesses",
    "start_model",
    "start_models",
    "raise_nofile_limit",
    "C10KPlan",
    "plan_c10k",
    "ephemeral_ports",
    "process_tree",
    "pss_kb",
    "cpu_seconds",
]

THREAD_PREFIX = "course-server"  # the same prefix as helpers.servers.THREAD_PREFIX (tested)

#: model name -> what it is, in the order the lesson shows them.
MODELS: dict[str, str] = {
    "fork": "process per connection (fork)",
    "thread": "thread per connection",
    "pool": "thread pool + connection queue",
    "poll": "single reactor, poll",
    "epoll": "single reactor, epoll",
    "main-sub": "main + sub-reactors (threads)",
    "asyncio": "asyncio event loop",
    "reuseport": "reactors in processes (SO_REUSEPORT)",
}

SERVICES = ("echo", "http")

#: The whole answer to every HTTP request: status line, two headers, a 3-byte body.
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
#: A request head longer than this without its blank line is refused (nginx's default
#: client_header_buffer_size is 1 KiB, large_client_header_buffers 8 KiB).
MAX_REQUEST_HEAD = 8192
RECV_SIZE = 65536  # bytes asked of recv() at once: a loopback segment can be that large
#: listen() backlog: Linux caps it at net.core.somaxconn (4096 since 5.4); the C10K demo
#: opens connections in bursts, and a full accept queue drops SYNs (1 s retransmit).
BACKLOG = 4096
MAX_WAIT_S = 600.0  # the longest a start, stop or wait here may be asked to take
#: Per-model options and their ranges: the one table ModelProcess, start_model() and the
#: classes' own checks share (the classes run in child processes too, from this file alone).
OPTIONS: dict[str, dict[str, tuple[int, int]]] = {"pool": {"workers": (1, 256)}, "main-sub": {"subs": (1, 64)}}


# ----------------------------------------------------------------- argument checks
# Standard library only: this file also runs as a script in the server processes.


def _count(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}-{high}, got {value!r}")
    return value


def _seconds(name: str, value: object, *, zero_ok: bool = False) -> float:
    """helpers.checks.seconds() with high=MAX_WAIT_S (copied: this file also runs as a stdlib-only
    script): TypeError for a non-number or a bool, ValueError for NaN, inf or out of range."""
    interval = f"{'[' if zero_ok else '('}0, {MAX_WAIT_S:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds in {interval}, got {type(value).__name__} {value!r}")
    if not (value >= 0 if zero_ok else value > 0) or not value <= MAX_WAIT_S:  # NaN fails both
        raise ValueError(f"{name} must be a number of seconds in {interval}, got {value!r}")
    return float(value)


def _check_options(model: str, options: dict[str, Any]) -> None:
    """The options `model` takes (workers= for pool, subs= for main-sub), each in its range."""
    allowed = OPTIONS.get(model, {})
    for key, value in options.items():
        if key not in allowed:
            takes = ", ".join(f"{k}=" for k in allowed) or "no options"
            raise TypeError(f"model {model!r} takes {takes}, got {key}={value!r}")
        _count(key, value, *allowed[key])


def _model_options(options: dict[str, Any], *, in_child: bool) -> dict[str, Any]:
    """The options left for the model itself once the server's own arguments are taken out."""
    own = ("processes", "start_timeout_s") if in_child else ("host", "port", "reuse_port")
    return {k: v for k, v in options.items() if k not in own}


def _check_listen(host: object, port: object) -> None:
    """host: a loopback IP literal; port: an int in 0-65535 (0: the kernel picks)."""
    try:
        loopback = isinstance(host, str) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"host must be a loopback address such as '127.0.0.1' or '::1', got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int in 0-65535 (0 lets the kernel choose), got {type(port).__name__} "
                        f"{port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0-65535 (0 lets the kernel choose), got {port}")


def _check_conn(conn: object, who: str) -> None:
    """behaviours.check_connection's checks (that module cannot be imported from the script)."""
    if not isinstance(conn, socket.socket):
        raise TypeError(f"{who}() needs a connected stream socket, got {type(conn).__name__} {conn!r}")
    if conn.fileno() == -1:
        raise ValueError(f"{who}() needs an open socket; this one is closed")
    if conn.type != socket.SOCK_STREAM:
        kind = getattr(conn.type, "name", conn.type)
        raise ValueError(f"{who}() needs a connected stream (TCP) socket, got a {kind} socket")
    if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError(f"{who}() needs a connected socket, got a listening one: pass what accept() returns")


def _check_pid(pid: object) -> int:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
        raise ValueError(f"pid must be a process id (an int >= 1), got {pid!r}")
    return pid


# --------------------------------------------------------------------------- services


class ProtocolError(ValueError):
    """The peer broke the protocol (e.g. an HTTP request head over MAX_REQUEST_HEAD bytes)."""


class EchoService:
    """Echo: every byte received is the answer."""

    def feed(self, data: bytes) -> bytes:
        """Bytes received -> bytes to send back."""
        return data


class HttpService:
    """A minimal HTTP/1.1 responder: one fixed 200 answer per request head (GET, no body)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> bytes:
        """Bytes received -> the answers for every complete request head in them.

        Bytes after the last complete head stay buffered. Raises ProtocolError when a
        head grows past MAX_REQUEST_HEAD bytes or does not start like an HTTP request.
        """
        self.buffer += data
        answers = 0
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            if b" HTTP/1." not in head.split(b"\r\n", 1)[0]:
                raise ProtocolError(f"not an HTTP/1.x request line: {head[:60]!r}")
            answers += 1
        if len(self.buffer) > MAX_REQUEST_HEAD:
            raise ProtocolError(f"request head longer than {MAX_REQUEST_HEAD} bytes without a blank line")
        return HTTP_RESPONSE * answers


def make_service(name: str) -> EchoService | HttpService:
    """A fresh per-connection protocol object for service `name` ('echo' or 'http')."""
    if name == "echo":
        return EchoService()
    if name == "http":
        return HttpService()
    raise ValueError(f"service must be one of {SERVICES}, got {name!r}")


def serve_blocking(conn: socket.socket, service: str) -> None:
    """Serve one connection with blocking calls until the peer closes it.

    This is the whole of the fork, thread and pool models' per-connection work: recv,
    compute the answer, sendall, repeat; b"" from recv() means the peer closed.
    """
    protocol = make_service(service)
    _check_conn(conn, "serve_blocking")
    while data := conn.recv(RECV_SIZE):
        answer = protocol.feed(data)
        if answer:
            conn.sendall(answer)


# ----------------------------------------------------------------- shared life cycle


class ModelError(RuntimeError):
    """A model's thread failed; ``.errors`` lists every exception, ``__cause__`` the first."""

    def __init__(self, name: str, errors: list[BaseException]):
        first = errors[0]
        super().__init__(f"{name}: {len(errors)} error(s), the first {type(first).__name__}: {first}")
        self.errors = errors


def _register(server: Any, add: bool) -> None:
    """Add to or remove from helpers.servers' registry (skipped when this file runs as a
    stand-alone script in a server process)."""
    if not __package__:
        return
    from . import servers

    (servers.register if add else servers.unregister)(server)


def _listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _InProcessModel:
    """Listener, wake-up socketpair, named threads, idempotent stop(): shared by thread models."""

    model = "?"

    def __init__(self, service: str = "echo", *, host: str = "127.0.0.1", port: int = 0, reuse_port: bool = False):
        make_service(service)  # validate the arguments before opening anything
        _check_listen(host, port)
        self.service = service
        self.errors: list[BaseException] = []
        self._accepted = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self.listener = _listener(host, port, reuse_port=reuse_port)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.name = f"{self.model}:{self.address[1]}"
        self._wake_r, self._wake_w = socket.socketpair()
        _register(self, True)
        try:
            self._start()
        except BaseException:
            self.stop(raise_errors=False)
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Unblock every thread (subclasses close or shut down their connections)."""

    def _thread(self, target: Callable[..., None], role: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(
            target=self._guard, args=(target, *args), name=f"{THREAD_PREFIX}-{self.name}-{role}", daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except OSError as exc:
            if not self._stopping.is_set():
                self.errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - handed to stop(), never lost
            self.errors.append(exc)

    def _accept_ready(self) -> list[socket.socket]:
        """accept() until the queue is empty (the listener is non-blocking)."""
        conns = []
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return conns
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):  # out of fds: keep what we have
                    self.errors.append(exc)
                    return conns
                raise
            self._accepted += 1
            conns.append(conn)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self._accepted

    def serving(self) -> int:
        """Connections open and being served right now (each model counts its own way)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop serving, close every socket, join every thread; safe to call twice.

        Raises ModelError if a thread failed (unless raise_errors is False), and ValueError,
        before stopping anything, if `timeout_s` is not a number of seconds in [0, 600].
        """
        _seconds("timeout_s", timeout_s, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            self._stopping.set()
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
            self._shutdown()
            deadline = time.monotonic() + timeout_s
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            self.listener.close()
            self._wake_r.close()
            self._wake_w.close()
            _register(self, False)
            if stuck:
                warnings.warn(f"{self.name}: threads still running after {timeout_s} s: {stuck}", stacklevel=2)
        if raise_errors and self.errors:
            errors, self.errors = self.errors, []
            raise ModelError(self.name, errors) from errors[0]

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {'running' if self.running else 'stopped'}>"


# ------------------------------------------------------------- blocking-call models


class ThreadPerConnection(_InProcessModel):
    """Thread per connection: an acceptor thread starts one blocking thread per client."""

    model = "thread"

    def _start(self) -> None:
        self._conns: set[socket.socket] = set()
        self._thread(self._accept_loop, "acceptor")

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                sel.select()
                for conn in self._accept_ready():
                    self._take(conn)

    def _take(self, conn: socket.socket) -> None:
        """Give one accepted connection a thread of its own."""
        conn.setblocking(True)
        with self._lock:
            self._conns.add(conn)
        if self._stopping.is_set():  # stop() may have missed it: unblock it here
            conn.shutdown(socket.SHUT_RDWR)
        self._thread(self._serve, f"conn{self.accepted}", conn)

    def serving(self) -> int:
        """Connections with a live thread of their own (thread creation takes time)."""
        with self._lock:
            return sum(t.is_alive() for t in self._threads if t.name.rsplit("-", 1)[1].startswith("conn"))

    def _serve(self, conn: socket.socket) -> None:
        try:
            serve_blocking(conn, self.service)
        except (ConnectionError, ProtocolError):
            pass  # the peer reset, or broke the protocol: close its connection
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _shutdown(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # recv() in the serving thread returns b"" at once
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ThreadPool(ThreadPerConnection):
    """A fixed pool of `workers` threads; the acceptor puts connections on a queue.

    A worker serves one connection until it closes, so with more open connections than
    workers, the rest wait in the queue unanswered: the limit of this model.
    """

    model = "pool"

    def __init__(self, service: str = "echo", *, workers: int = 8, **kw: Any):
        _check_options("pool", {"workers": workers})
        self.workers = workers
        self.queue: queue.Queue[socket.socket | None] = queue.Queue()
        super().__init__(service, **kw)

    def _start(self) -> None:
        self._conns = set()
        for i in range(self.workers):
            self._thread(self._worker, f"worker{i}")
        self._thread(self._accept_loop, "acceptor")

    def _take(self, conn: socket.socket) -> None:
        """Queue one accepted connection for the next free worker."""
        if self._stopping.is_set():
            conn.close()
            return
        conn.setblocking(True)
        with self._lock:
            self._conns.add(conn)
        self.queue.put(conn)

    def _worker(self) -> None:
        while (conn := self.queue.get()) is not None:
            self._serve(conn)

    def serving(self) -> int:
        """Connections accepted and open: served by a worker or waiting in the queue."""
        with self._lock:
            return len(self._conns)

    def _shutdown(self) -> None:
        super()._shutdown()
        for _ in range(self.workers):
            self.queue.put(None)  # one "no more work" per worker, behind the queued connections

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop as every model does, then close connections still waiting in the queue."""
        try:
            super().stop(timeout_s, raise_errors=raise_errors)
        finally:
            while True:
                try:
                    conn = self.queue.get_nowait()
                except queue.Empty:
                    break
                if conn is not None:
                    conn.close()


# ----------------------------------------------------------------- reactor models


class _Connection:
    """A reactor's state for one client: its protocol object and unsent output."""

    __slots__ = ("sock", "protocol", "out", "events")

    def __init__(self, sock: socket.socket, service: str):
        self.sock = sock
        self.protocol = make_service(service)
        self.out = bytearray()
        self.events = selectors.EVENT_READ  # what the selector watches for


class EventLoop:
    """One reactor: a selector, optionally a listener, a wake-up socketpair, connections.

    ``run()`` is the loop body of a thread. Each turn: wait for readiness; a readable
    listener means accept every queued connection; a readable connection means one
    recv(), the protocol's answer, and a send() of as much as the kernel takes (the rest
    is kept in ``out`` and the socket watched for EVENT_WRITE until it drains); the
    wake-up socket means "new connections were handed to you" or "stop".
    """

    def __init__(
        self,
        selector_class: type[selectors.BaseSelector],
        service: str,
        *,
        listener: socket.socket | None = None,
        on_accept: Callable[[socket.socket], None] | None = None,
    ):
        self.selector = selector_class()
        self.service = service
        self.listener = listener
        self.on_accept = on_accept  # a main reactor hands connections on instead of serving them
        self.connections: dict[int, _Connection] = {}
        self.handed: collections.deque[socket.socket] = collections.deque()
        self.accepted = 0
        self.stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if listener is not None:
            self.selector.register(listener, selectors.EVENT_READ, "listener")

    def wake(self) -> None:
        """Interrupt select() from another thread."""
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # the buffer is full: a wake-up is already pending, or we are closing

    def hand(self, sock: socket.socket) -> None:
        """Give this loop a connection to serve (called from another thread)."""
        self.handed.append(sock)
        self.wake()

    def stop(self) -> None:
        """Ask run() to return (thread-safe)."""
        self.stopping = True
        self.wake()

    def run(self) -> None:
        try:
            while not self.stopping:
                for key, events in self.selector.select():
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._woken()
                    else:
                        self._ready(key.data, events)
        finally:
            self.close()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    return  # out of fds: the connection stays queued until one closes
                raise
            self.accepted += 1
            if self.on_accept is not None:
                self.on_accept(sock)
            else:
                self._add(sock)

    def _add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        conn = _Connection(sock, self.service)
        self.connections[sock.fileno()] = conn
        self.selector.register(sock, selectors.EVENT_READ, conn)

    def _woken(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self.handed:
            self._add(self.handed.popleft())

    def _ready(self, conn: _Connection, events: int) -> None:
        try:
            if events & selectors.EVENT_READ:
                data = conn.sock.recv(RECV_SIZE)
                if not data:
                    return self._drop(conn)
                conn.out += conn.protocol.feed(data)
            if conn.out:
                sent = conn.sock.send(conn.out)
                del conn.out[:sent]
        except BlockingIOError:
            pass
        except (ConnectionError, ProtocolError):
            return self._drop(conn)
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if conn.events != want:  # watch for writability only while output waits
            conn.events = want
            self.selector.modify(conn.sock, want, conn)

    def _drop(self, conn: _Connection) -> None:
        self.selector.unregister(conn.sock)
        del self.connections[conn.sock.fileno()]
        conn.sock.close()

    def close(self) -> None:
        """Close every connection, the selector and the wake-up pair (idempotent)."""
        for conn in list(self.connections.values()):
            conn.sock.close()
        self.connections.clear()
        while self.handed:
            self.handed.popleft().close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


class PollReactor(_InProcessModel):
    """A single-threaded reactor on poll(2): one thread serves every connection."""

    model = "poll"
    selector_class: type[selectors.BaseSelector] = selectors.PollSelector

    def _start(self) -> None:
        self.loop = EventLoop(self.selector_class, self.service, listener=self.listener)
        self._thread(self.loop.run, "loop")

    def _shutdown(self) -> None:
        self.loop.stop()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self.loop.accepted

    def serving(self) -> int:
        """Connections registered with the loop."""
        return len(self.loop.connections)


class EpollReactor(PollReactor):
    """The same single-threaded reactor on epoll(7)."""

    model = "epoll"
    selector_class = selectors.EpollSelector


class MainSubReactors(_InProcessModel):
    """A main reactor accepts; `subs` sub-reactor threads serve, connections dealt round-robin."""

    model = "main-sub"

    def __init__(self, service: str = "echo", *, subs: int = 2, **kw: Any):
        _check_options("main-sub", {"subs": subs})
        self.n_subs = subs
        super().__init__(service, **kw)

    def _start(self) -> None:
        self.subs = [EventLoop(selectors.EpollSelector, self.service) for _ in range(self.n_subs)]
        self.main = EventLoop(selectors.EpollSelector, self.service, listener=self.listener, on_accept=self._deal)
        for i, sub in enumerate(self.subs):
            self._thread(sub.run, f"sub{i}")
        self._thread(self.main.run, "main")

    def _deal(self, sock: socket.socket) -> None:
        self.subs[self.main.accepted % self.n_subs].hand(sock)

    def _shutdown(self) -> None:
        for loop in [self.main, *self.subs]:
            loop.stop()

    @property
    def accepted(self) -> int:
        """Connections accepted so far (by the main reactor)."""
        return self.main.accepted

    def serving(self) -> int:
        """Connections registered with a sub-reactor."""
        return sum(len(sub.connections) for sub in self.subs)


class AsyncioServer(_InProcessModel):
    """asyncio's event loop (a reactor too: epoll underneath) in its own thread.

    ``asyncio.run()`` cannot run inside a Jupyter kernel (its loop is already running),
    so this thread makes its own loop with ``asyncio.new_event_loop()``.
    """

    model = "asyncio"

    def _start(self) -> None:
        import asyncio

        self._asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        self._transports: set[Any] = set()
        ready = threading.Event()
        self._thread(self._run, "loop", ready)
        if not ready.wait(5.0):
            raise TimeoutError(f"{self.name}: the asyncio loop did not start within 5 s")
        if self.errors:
            raise self.errors[0]

    def _protocol(self) -> Any:
        service, transports, model = self.service, self._transports, self

        class Serve(self._asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport, self.protocol = transport, make_service(service)
                transports.add(transport)
                model._accepted += 1  # only the loop thread counts

            def data_received(self, data: bytes) -> None:
                try:
                    self.transport.write(self.protocol.feed(data))
                except ProtocolError:
                    self.transport.abort()

            def connection_lost(self, exc: BaseException | None) -> None:
                transports.discard(self.transport)

        return Serve()

    def _run(self, ready: threading.Event) -> None:
        loop = self.loop
        try:
            # create_server() calls listen() again, with backlog=100 unless told: at 1,024
            # connections at once that queue overflows and handshakes stall for seconds.
            server = loop.run_until_complete(loop.create_server(self._protocol, sock=self.listener, backlog=BACKLOG))
            self._server = server
        except BaseException:
            ready.set()
            loop.close()
            raise
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for transport in list(self._transports):
                transport.abort()
            loop.run_until_complete(self._asyncio.sleep(0))  # let connection_lost() run
            loop.close()

    def serving(self) -> int:
        """Connections with a live transport."""
        return len(self._transports)

    def _shutdown(self) -> None:
        if hasattr(self, "loop") and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:
                pass  # the loop closed in between


IN_PROCESS: dict[str, type[_InProcessModel]] = {
    "thread": ThreadPerConnection,
    "pool": ThreadPool,
    "poll": PollReactor,
    "epoll": EpollReactor,
    "main-sub": MainSubReactors,
    "asyncio": AsyncioServer,
}


# ------------------------------------------------------------ process measurements


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (from /proc/PID/task/*/children).

    `pid` must be an int >= 1 (ValueError otherwise); a process that is gone is still listed.
    """
    tree, todo = [], [_check_pid(pid)]
    while todo:
        p = todo.pop()
        tree.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(x) for x in f.read().split()]
            except OSError:
                continue
    return tree


def _proc_kb(pid: int, path: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size of `pid` and its descendants, in KiB.

    Pss shares each page among the processes that map it, so forked children that share
    their parent's pages copy-on-write are not counted many times over (man 5 proc,
    /proc/PID/smaps_rollup).
    """
    return sum(_proc_kb(p, "smaps_rollup", "Pss") for p in process_tree(pid))


def rss_kb(pid: int) -> int:
    """VmRSS of `pid` alone, in KiB (/proc/PID/status); 0 for a process that is gone."""
    return _proc_kb(_check_pid(pid), "status", "VmRSS")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of `pid`, its live descendants and its reaped children, in s."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (stat field 3): utime, stime, cutime, cstime are 14-17.
        total += sum(int(x) for x in fields[11:15])
    return total / ticks


def raise_nofile_limit(want: int | None = None) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to `want` (default: the hard limit).

    Returns the previous (soft, hard), to restore with resource.setrlimit. A soft limit
    can be raised up to the hard limit without privileges (man 2 setrlimit), so a larger
    `want` stops at the hard limit; `want` must be an int >= 1 (ValueError otherwise).
    The limit is never lowered.
    """
    if want is not None and (isinstance(want, bool) or not isinstance(want, int) or want < 1):
        raise ValueError(f"want must be a number of file descriptors (an int >= 1) or None for the hard limit, "
                         f"got {want!r}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # "unlimited": Linux's nr_open default
    target = ceiling if want is None else min(want, ceiling)
    if soft != resource.RLIM_INFINITY and target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard


# ------------------------------------------------------------------- the C10K plan

FD_MARGIN = 64  # descriptors a Python process needs besides its connections (stdio, pipes, epoll)
MAX_PROCESSES = 8  # per side: more would only crowd a small machine
#: Use at most this share of a source address's ephemeral ports: connect() searches the
#: range for a free port, and the search slows sharply as the range fills up (measured
#: here: 25,000 of 28,232 ports per source took ~50 s of system time, 12,500 took ~1 s).
PORT_SHARE = 0.5


@dataclass
class C10KPlan:
    """How to hold `connections` connections within the per-process fd limit and the port range."""

    requested: int
    connections: int  # what will be attempted (less than requested if limits forbid more)
    server_processes: int
    client_processes: int
    sources: list[str]
    fd_hard_limit: int
    ports_per_source: int
    note: str


def ephemeral_ports() -> int:
    """How many local ports connect() can choose from (/proc/sys/net/ipv4/ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28232  # Linux's default range, 32768-60999


def plan_c10k(connections: int, fd_hard_limit: int | None = None, *, min_clients: int = 2) -> C10KPlan:
    """Split `connections` over server and client processes and loopback source addresses.

    Every connection costs one fd in a server process and one in a client process, so a
    side needs ceil(connections / (hard limit - FD_MARGIN)) processes. One source address
    gives one ephemeral port per connection to a given server address and port; past
    PORT_SHARE of the port range, the plan adds 127.0.0.2, 127.0.0.3, ... (all of 127/8 is
    loopback). If even MAX_PROCESSES per side cannot hold them, fewer connections are
    planned and `note` says why. `fd_hard_limit` (default: this process's) must be an int
    above FD_MARGIN; `min_clients` an int in 1-MAX_PROCESSES.
    """
    if isinstance(connections, bool) or not isinstance(connections, int) or not 1 <= connections <= 200_000:
        raise ValueError(f"connections must be an int in 1-200000, got {connections!r}")
    if fd_hard_limit is not None and fd_hard_limit != resource.RLIM_INFINITY:
        _count("fd_hard_limit", fd_hard_limit, FD_MARGIN + 1, 1 << 30)
    _count("min_clients", min_clients, 1, MAX_PROCESSES)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if fd_hard_limit is None else fd_hard_limit
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    per_process = max(0, hard - FD_MARGIN)
    notes = []
    target = min(connections, per_process * MAX_PROCESSES)
    if target < connections:
        notes.append(f"the fd hard limit is {hard} per process, so {MAX_PROCESSES} processes per side hold at most "
                     f"{target:,} connections, not {connections:,}; ask your administrator to raise "
                     "`nofile` in /etc/security/limits.conf to go further")
    servers = max(1, -(-target // per_process)) if per_process else 0
    clients = max(min_clients, -(-target // per_process)) if per_process else 0
    ports = ephemeral_ports()
    sources = [f"127.0.0.{i + 1}" for i in range(max(1, -(-target // int(ports * PORT_SHARE))))]
    if servers > 1:
        notes.append(f"{servers} server processes share the port with SO_REUSEPORT (fd limit {hard})")
    if len(sources) > 1:
        notes.append(f"{len(sources)} source addresses, as one gives at most {ports:,} ports")
    return C10KPlan(connections, target, servers, min(clients, MAX_PROCESSES), sources, hard, ports,
                    "; ".join(notes) or "one server process and the default source address suffice")


# ------------------------------------------------------------------ child processes


class ModelProcess:
    """Run model `model` in `processes` child processes (python -I this file).

    With processes > 1, the children listen on one port with SO_REUSEPORT: the first
    binds port 0 and reports the port, the others bind that port. ``stats()`` asks each
    child for its counters; ``pss_kb()`` and ``cpu_seconds()`` measure the whole tree.
    """

    def __init__(self, model: str, service: str = "echo", *, processes: int = 1, start_timeout_s: float = 10.0,
                 **options: Any):
        if model not in MODELS or model == "reuseport":
            choices = [m for m in MODELS if m != "reuseport"]
            raise ValueError(f"model must be one of {choices} (use ReusePortProcesses for 'reuseport'), got {model!r}")
        make_service(service)
        _count("processes", processes, 1, 32)
        _seconds("start_timeout_s", start_timeout_s)
        _check_options(model, options)
        self.model, self.service, self.options = model, service, options
        self.name = f"{model}-process"
        self.children: list[subprocess.Popen[bytes]] = []
        self._stopped = False
        self._deadline_s = start_timeout_s
        _register(self, True)
        try:
            port = 0
            for _ in range(processes):
                port = self._spawn(port, reuse_port=processes > 1)
        except BaseException:
            self.stop()
            raise
        self.address: tuple[str, int] = ("127.0.0.1", port)
        self.name = f"{model}-process:{port}"

    def _spawn(self, port: int, *, reuse_port: bool) -> int:
        config = json.dumps({"model": self.model, "service": self.service, "port": port,
                             "reuse_port": reuse_port, "options": self.options})
        child = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "serve", config],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stop() can kill grandchildren too
        )
        self.children.append(child)
        reply = self._read(child, self._deadline_s)
        return int(reply["address"][1])

    def _read(self, child: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
        assert child.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(child.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise TimeoutError(f"{self.name}: child {child.pid} did not answer within {timeout_s} s")
        line = child.stdout.readline()
        if not line:
            err = child.stderr.read().decode(errors="replace")[-1500:] if child.stderr else ""
            raise RuntimeError(f"{self.name}: child {child.pid} exited ({child.wait()}): {err}")
        return json.loads(line)

    @property
    def pids(self) -> list[int]:
        """The server processes' ids (not counting fork's per-connection children)."""
        return [c.pid for c in self.children]

    def stats(self) -> list[dict[str, Any]]:
        """Each child's counters: connections accepted and now serving, errors."""
        out = []
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(b"stats\n")
            child.stdin.flush()
            out.append(self._read(child, 5.0))
        return out

    def wait_serving(self, n: int, timeout_s: float = 5.0) -> bool:
        """Wait until the children serve at least `n` connections between them (a thread,
        a process or a loop entry each); False if that did not happen within `timeout_s`."""
        _count("n", n, 0, 1 << 30)
        _seconds("timeout_s", timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            if sum(s["serving"] for s in self.stats()) >= n:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def pss_kb(self) -> int:
        """Memory of every server process and their children: the sum of Pss, in KiB."""
        return sum(pss_kb(pid) for pid in self.pids)

    def rss_kb(self) -> int:
        """VmRSS summed over the server processes (not their children), in KiB."""
        return sum(rss_kb(pid) for pid in self.pids)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server processes and their children, in s."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    @property
    def running(self) -> bool:
        """True while every child is alive and stop() has not been called."""
        return not self._stopped and all(c.poll() is None for c in self.children)

    def stop(self, timeout_s: float = 3.0, *, raise_errors: bool = True) -> None:
        """Close the children's stdin (they exit), then SIGTERM, then SIGKILL the process
        groups; reap every child. Safe to call twice. ValueError, before stopping anything,
        if `timeout_s` is not a number of seconds in [0, 600]."""
        del raise_errors  # a child's errors are in its stats() and stderr
        _seconds("timeout_s", timeout_s, zero_ok=True)
        if self._stopped:
            return
        self._stopped = True
        for child in self.children:
            try:
                if child.stdin:
                    child.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            try:
                child.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill_group(child, signal.SIGTERM)
                try:
                    child.wait(1.0)
                except subprocess.TimeoutExpired:
                    self._kill_group(child, signal.SIGKILL)
                    child.wait()
            self._kill_group(child, signal.SIGKILL)  # a forked grandchild left behind, if any
            for stream in (child.stdout, child.stderr):
                if stream:
                    stream.close()
        _register(self, False)

    @staticmethod
    def _kill_group(child: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(child.pid, sig)  # start_new_session: the group id is the child's pid
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> ModelProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pids={self.pids} {'running' if self.running else 'stopped'}>"


class ForkPerConnection(ModelProcess):
    """Process per connection: a child server process that fork()s once per client."""

    def __init__(self, service: str = "echo", **kw: Any):
        super().__init__("fork", service, **kw)


class ReusePortProcesses(ModelProcess):
    """`processes` epoll reactors in child processes sharing one port with SO_REUSEPORT."""

    def __init__(self, service: str = "echo", *, processes: int = 2, **kw: Any):
        super().__init__("epoll", service, processes=processes, **kw)
        self.name = self.name.replace("epoll-process", f"reuseport-x{processes}")


def start_model(model: str, service: str = "echo", *, in_child: bool = False, **options: Any) -> Any:
    """Start model `model` (a key of MODELS) serving `service`; use it in a ``with`` block.

    Thread models run in this process unless `in_child` is true; 'fork' and 'reuseport'
    always run in child processes. Options: workers= (pool), subs= (main-sub),
    processes= (reuseport); TypeError for an option the model does not take.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
    make_service(service)
    _check_options(model, _model_options(options, in_child=in_child or model in ("fork", "reuseport")))
    if model == "reuseport":
        return ReusePortProcesses(service, **options)
    if model == "fork":
        return ForkPerConnection(service, **options)
    if in_child:
        return ModelProcess(model, service, **options)
    return IN_PROCESS[model](service, **options)


def start_models(specs: dict[str, dict[str, Any]], service: str = "echo") -> dict[str, Any]:
    """Start several models in child processes at once: {model: options} -> {model: server}.

    Each child takes a fraction of a second to start Python; starting them side by side
    (one short-lived thread each) costs about as long as the slowest. If one fails, the
    others are stopped and the error is raised. Every spec is checked before any starts.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not isinstance(specs, dict) or not specs:
        raise TypeError(f"specs must be a non-empty dict {{model: options dict}}, e.g. {{'epoll': {{}}}}, "
                        f"got {specs!r}")
    make_service(service)
    for model, opts in specs.items():
        if model not in MODELS:
            raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
        if not isinstance(opts, dict):
            raise TypeError(f"the options of {model!r} must be a dict such as {{'workers': 8}} or {{}}, got {opts!r}")
        _check_options(model, _model_options(opts, in_child=True))

    with ThreadPoolExecutor(max_workers=max(1, len(specs)), thread_name_prefix=f"{THREAD_PREFIX}-start") as pool:
        futures = {m: pool.submit(start_model, m, service, in_child=True, **opts) for m, opts in specs.items()}
    started, errors = {}, []
    for model, future in futures.items():
        try:
            started[model] = future.result()
        except Exception as exc:  # noqa: BLE001 - the first is raised after the others are stopped
            errors.append(exc)
    if errors:
        for server in started.values():
            server.stop()
        raise errors[0]
    return started


# ------------------------------------------------------------- the child's main code


class _ControlChannel:
    """Line commands on the child's stdin ('stats'), end of file meaning 'stop'."""

    def __init__(self) -> None:
        self.buffer = b""

    def read(self, answer: Callable[[], dict[str, Any]]) -> bool:
        """Handle what arrived on stdin; False once it is closed."""
        data = os.read(0, 4096)
        if not data:
            return False
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip() == b"stats":
                _say(answer())
        return True


def _say(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _fork_server(listener: socket.socket, service: str) -> None:
    """The fork model's server process: accept, fork, let the child serve, reap it.

    Single-threaded on purpose: fork() copies only the calling thread, so forking a
    process with other threads can leave locks held forever in the child.
    """
    children: set[int] = set()
    accepted = [0]

    def reap(*_: Any) -> None:  # SIGCHLD: a child exited; collect it so it is no zombie
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)

    signal.signal(signal.SIGCHLD, reap)
    control = _ControlChannel()
    stats = lambda: {"accepted": accepted[0], "serving": len(children), "errors": []}  # noqa: E731
    with selectors.DefaultSelector() as sel:
        sel.register(listener, selectors.EVENT_READ)
        sel.register(0, selectors.EVENT_READ)
        try:
            running = True
            while running:
                for key, _ in sel.select():
                    if key.fd == 0:
                        running = control.read(stats)
                        continue
                    while True:
                        try:
                            conn, _addr = listener.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        accepted[0] += 1
                        # Block SIGCHLD so a child that exits at once is reaped after we add it.
                        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
                        pid = os.fork()
                        if pid == 0:  # the child: serve this one connection, then exit
                            code = 0
                            try:
                                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                                listener.close()
                                sel.close()
                                conn.setblocking(True)
                                serve_blocking(conn, service)
                            except (ConnectionError, ProtocolError):
                                pass
                            except BaseException:  # noqa: BLE001 - report, then exit anyway
                                code = 1
                            finally:
                                os._exit(code)
                        children.add(pid)
                        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                        conn.close()  # the child has its own copy of the descriptor
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            for pid in list(children):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for pid in list(children):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass


def _child_main(config_json: str) -> None:
    config = json.loads(config_json)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    raise_nofile_limit()
    model, service = config["model"], config["service"]
    if model == "fork":
        listener = _listener("127.0.0.1", config["port"], reuse_port=config["reuse_port"])
        _say({"address": list(listener.getsockname()[:2]), "pid": os.getpid()})
        try:
            _fork_server(listener, service)
        finally:
            listener.close()
        return
    server = IN_PROCESS[model](service, port=config["port"], reuse_port=config["reuse_port"], **config["options"])
    _say({"address": list(server.address), "pid": os.getpid()})
    control = _ControlChannel()

    def stats() -> dict[str, Any]:
        return {"accepted": server.accepted, "serving": server.serving(), "threads": threading.active_count(),
                "errors": [repr(e) for e in server.errors]}

    try:
        while control.read(stats):
            pass
    finally:
        server.stop(raise_errors=False)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: python -I c10k.py serve '{\"model\": \"epoll\", \"service\": \"echo\", ...}'")
    _child_main(sys.argv[2])
