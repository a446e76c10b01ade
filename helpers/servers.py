"""Real servers in the background, that always stop: TCP, UDP and Unix-domain.

Theory of operation. A lesson wants "the other side" of a connection without spelling it
out every time, so these classes run it in a background thread (or, with ProcessServer, in
a child process a lesson can pause or kill). Three rules hold for all of them:

* They bind 127.0.0.1 port 0 unless told otherwise, and report the kernel's choice in
  ``.address``. A port is never picked by binding 0, closing and reusing the number:
  another process (on JupyterHub, another learner) could take it in between.
* They never print. Output from a background thread lands in whatever notebook cell runs
  next, so handlers *return* what they saw: the value goes on ``.results``, and an
  exception is kept and raised by ``stop()`` as a ServerError, with the original as cause.
* They always stop: each is a context manager, ``stop()`` is idempotent, a wake-up
  socketpair interrupts the accept loop at once (no polling interval), open connections
  are shut down so handlers blocked in recv() return, and ``stop_all()`` stops whatever a
  cell left running. ``live_servers()`` lists them, so tests can prove nothing leaked.

Out of file descriptors, a stream server pauses accepting and retries (``core.accept``, the
course's one accept policy) instead of spinning on a listener that stays readable.
"""

from __future__ import annotations

import errno
import os
import queue
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from .addresses import loopback_host
from .behaviours import STREAM_BEHAVIOURS
from .core import checks, spawn
from .core.accept import SelectorAcceptor
from .core.checks import family_for
from .core.proc import proc_stat
from .core.registry import THREAD_PREFIX, register, unregister
from .core.wakeup import WakeableSelector

__all__ = [
    "ServerError",
    "TCPServer",
    "LoopServer",
    "UDPServer",
    "UnixStreamServer",
    "ProcessServer",
    "listening_socket",
    "port_holder",
    "shut_down",
    "check_backlog",
]

StreamHandler = Callable[[socket.socket], Any]
ServerLoop = Callable[[socket.socket, socket.socket], Any]
DatagramHandler = Callable[[bytes, Any], "bytes | None"]


class ServerError(RuntimeError):
    """A server's handler raised; ``__cause__`` is the first exception, ``.errors`` all."""

    def __init__(self, server: str, errors: list[BaseException]):
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        hint = ""
        if isinstance(first, ConnectionError):
            hint = " If your experiment resets connections on purpose, catch it in the handler."
        super().__init__(f"{server}: a handler raised {type(first).__name__}: {first}{more}.{hint}")
        self.errors = errors


_PORT_ZERO = " (0 lets the kernel choose)"


def check_backlog(backlog: int) -> int:
    """`backlog` if it is an int in 0-65535: listen() takes a C int, and the kernel silently caps it
    at net.core.somaxconn (4096 by default). ValueError naming the value otherwise."""
    if isinstance(backlog, bool) or not isinstance(backlog, int) or not 0 <= backlog <= 65535:
        raise ValueError(f"backlog must be an int >= 0 (at most 65535, and the kernel caps it), got {backlog!r}")
    return backlog


def _check_handler(handler: Any, signature: str) -> None:
    if handler is not None and not callable(handler):
        raise TypeError(f"handler must be a function {signature}, or None; got {handler!r}")


def listening_socket(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    backlog: int = 128,
    reuse_addr: bool = True,
    reuse_port: bool = False,
) -> socket.socket:
    """A non-blocking TCP socket bound to (host, port) and listening; closed again if
    bind() or listen() fails (the rollback socketserver.TCPServer does too). ValueError
    for a host that is not an address of this machine (EADDRNOTAVAIL)."""
    checks.port("port", port, note=_PORT_ZERO)
    check_backlog(backlog)
    sock = socket.socket(family_for(host), socket.SOCK_STREAM)
    try:
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _bind(sock, host, port)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def port_holder(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT to `host` port 0 that never listens.

    It keeps the port the kernel chose for server processes that bind it with SO_REUSEPORT
    too (nobody else can take it: another socket without SO_REUSEPORT, or of another user,
    gets EADDRINUSE), and as it does not listen it receives no connections (man 7 socket).
    The caller closes it once the group stops.
    """
    sock = socket.socket(loopback_host("host", host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _bind(sock, host, 0)
    except BaseException:
        sock.close()
        raise
    return sock


def shut_down(conns: list[socket.socket]) -> None:
    """shutdown(SHUT_RDWR) each connection, so a thread blocked in its recv() gets b"" at once
    and returns (close() from another thread would not wake it); closed ones are skipped."""
    for conn in conns:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed meanwhile, or never connected
            pass


def _bind(sock: socket.socket, host: str, port: int) -> None:
    """bind(), with EADDRNOTAVAIL turned into a ValueError that names the host."""
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ValueError(f"host {host!r} is not an address of this machine; bind '127.0.0.1' (or '::1')") from exc
        raise


class _BackgroundServer:
    """Shared life cycle: a socket, a loop thread woken by a socketpair, a registry entry."""

    kind = "server"

    def __init__(self, sock: socket.socket, *, name: str):
        self.sock = sock
        self.name = name
        self.results: queue.Queue[Any] = queue.Queue()
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._stopped = False
        # The loop's descriptors are all made here, its selector's included: a server whose
        # constructor returned needs no new descriptor to serve what it can already accept,
        # and a process out of descriptors gets EMFILE here, not a loop thread that dies unseen.
        try:
            self._wakeup = WakeableSelector()
        except BaseException:
            sock.close()
            raise
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        register(self)
        self._start_thread(self._loop, "loop")

    # -- subclasses implement these
    def _loop(self) -> None:
        raise NotImplementedError

    def _close_connections(self) -> None:
        """Unblock handlers (stream servers shut their connections down)."""

    # -- shared machinery
    @property
    def address(self) -> Any:
        """The address the kernel bound, e.g. ('127.0.0.1', 43817): connect here."""
        return self._address

    def _start_thread(self, target: Callable[..., None], role: str, *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"{THREAD_PREFIX}-{self.name}-{role}", daemon=True
        )
        with self._lock:  # started under the lock: stop() never sees a thread it cannot join yet
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _wait_readable(self, sel: selectors.BaseSelector) -> bool:
        """Block until the server socket is readable; False once stop() woke us."""
        return not self._wakeup.woken(sel.select())

    def result(self, timeout_s: float = 5.0) -> Any:
        """The next value a handler returned; TimeoutError if none arrives in time."""
        timeout_s = checks.seconds("timeout_s", timeout_s, zero_ok=True)
        try:
            return self.results.get(timeout=timeout_s)
        except queue.Empty:
            problem = f"; handler errors so far: {self.errors!r}" if self.errors else ""
            raise TimeoutError(f"{self.name}: no handler finished within {timeout_s} s{problem}") from None

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop serving, close every socket, join the threads. Safe to call twice.

        Raises ServerError if a handler raised (unless raise_errors is False). A handler
        still running after `timeout_s` (blocked on something other than its socket) is
        left behind with a ResourceWarning naming its thread; stop() returns anyway.
        """
        timeout_s = checks.seconds("timeout_s", timeout_s, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            self._stopping.set()
            self._wakeup.wake()
            deadline = time.monotonic() + timeout_s
            # Two passes: the loop thread may accept one last connection and start its handler
            # after we looked; once the loop thread has exited, nothing new can start.
            for _ in range(2):
                self._close_connections()
                with self._lock:
                    threads = list(self._threads)
                for thread in threads:
                    if thread is not threading.current_thread():
                        thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            self._wakeup.close()
            self.sock.close()
            unregister(self)
            if stuck:
                warnings.warn(
                    f"{self.name}: handler threads still running after {timeout_s} s: {stuck}; "
                    "a handler that blocks on something other than its socket cannot be stopped",
                    ResourceWarning,
                    stacklevel=2,
                )
        if raise_errors and self.errors:
            errors, self.errors = self.errors, []
            raise ServerError(self.name, errors) from errors[0]

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # If the block itself failed, that error matters more than a handler's.
        self.stop(raise_errors=exc_type is None)

    def __del__(self) -> None:
        if not getattr(self, "_stopped", True):
            warnings.warn(f"unstopped server {self.name}", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.name} {state}>"


class _StreamServer(_BackgroundServer):
    """Accept connections and run `handler(conn)` for each in its own thread."""

    def __init__(self, sock: socket.socket, handler: StreamHandler | None, *, accept: bool, name: str):
        self.handler = handler
        self.accept_connections = accept
        self.accepted = 0
        self._conns: set[socket.socket] = set()
        self._acceptor: SelectorAcceptor | None = None
        super().__init__(sock, name=name)

    @property
    def paused(self) -> int:
        """How many times accept() ran out of file descriptors and accepting paused (core.accept)."""
        return self._acceptor.paused if self._acceptor is not None else 0

    def _loop(self) -> None:
        sel = self._wakeup.selector  # made (the wake-up socket in it) by the constructor; stop() closes it
        if not self.accept_connections:  # a listener nobody accepts from (backlog demos)
            self._wait_readable(sel)
            return
        self._acceptor = acceptor = SelectorAcceptor(sel, self.sock)
        while True:
            if self._wakeup.woken(sel.select(acceptor.timeout())):
                return  # stop() woke us
            for conn in acceptor.accept():
                conn.setblocking(True)
                self.accepted += 1
                with self._lock:
                    self._conns.add(conn)
                self._start_thread(self._serve, f"conn{self.accepted}", conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.handler is None:
                self._stopping.wait()  # hold the connection open without reading it
            else:
                result = self.handler(conn)
                self.results.put(result)
        except OSError as exc:
            if not self._stopping.is_set():
                self.errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - handed back to stop(), never lost
            self.errors.append(exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _close_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        shut_down(conns)


class TCPServer(_StreamServer):
    """A TCP server in a background thread, one thread per connection, on a loopback address.

    ``handler(conn)`` runs for each accepted connection; its return value goes on
    ``.results``. With ``handler=None`` connections are accepted and held open without
    being read (a peer that never reads). With ``accept=False`` nobody calls accept(), so
    connections pile up in the accept queue (at most ``backlog`` + 1 on Linux).
    """

    kind = "tcp"

    def __init__(
        self,
        handler: StreamHandler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 128,
        accept: bool = True,
        reuse_addr: bool = True,
    ):
        _check_handler(handler, "taking a socket")  # before the socket exists, so nothing leaks
        loopback_host("host", host)  # course servers never listen on the network
        sock = listening_socket(host, port, backlog=backlog, reuse_addr=reuse_addr)
        self._address = sock.getsockname()[:2]
        super().__init__(sock, handler, accept=accept, name=f"tcp:{self._address[1]}")


class LoopServer(_BackgroundServer):
    """A TCP listener on loopback whose event loop you write, run in a background thread.

    ``loop(listener, wake)`` gets the non-blocking listening socket and a socket that
    becomes readable when ``stop()`` is called: watch both (with poll(), epoll, ...), and
    return once `wake` is readable, closing the connections the loop accepted. Its return
    value goes on ``.results``; what it raises is kept and raised by ``stop()`` as a
    ServerError. A loop that ignores `wake` cannot be stopped: ``stop()`` then warns and
    returns, as for a stuck handler.
    """

    kind = "tcp"

    def __init__(self, loop: ServerLoop, *, host: str = "127.0.0.1", backlog: int = 128):
        if not callable(loop):
            raise TypeError(f"loop must be a function taking (listener, wake), got {loop!r}")
        loopback_host("host", host)  # course servers never listen on the network
        sock = listening_socket(host, 0, backlog=backlog)
        self._address = sock.getsockname()[:2]
        self._serve_loop = loop
        super().__init__(sock, name=f"loop:{self._address[1]}")

    def _loop(self) -> None:
        try:
            self.results.put(self._serve_loop(self.sock, self._wakeup.reader))
        except BaseException as exc:  # noqa: BLE001 - handed back to stop(), never lost
            self.errors.append(exc)


class UnixStreamServer(_StreamServer):
    """A Unix-domain stream server; `path` is a filesystem path or, starting with a NUL
    byte (b"\\0name" or "\\0name"), an abstract name. Default: a fresh path in a temp dir,
    removed on stop."""

    kind = "unix"

    def __init__(self, handler: StreamHandler | None = None, *, path: str | bytes | None = None, backlog: int = 128):
        _check_handler(handler, "taking a socket")
        check_backlog(backlog)
        if path is not None and not isinstance(path, (str, bytes)):
            raise TypeError(f"path must be a str or bytes socket path (or None for a fresh one), got {path!r}")
        if path is not None and not path:
            raise ValueError("path must not be empty; pass None for a fresh path in a temporary directory")
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="course-unix-")
            path = os.path.join(self._tmpdir.name, "server.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
            sock.setblocking(False)
            self._address = sock.getsockname()
        except BaseException:
            sock.close()
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
            raise
        try:
            super().__init__(sock, handler, accept=True, name=f"unix:{path!r}")  # closes sock if it fails
        except BaseException:
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
            raise

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop as the base class does, then remove the temporary socket file."""
        try:
            super().stop(timeout_s, raise_errors=raise_errors)
        finally:
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None


class UDPServer(_BackgroundServer):
    """A UDP server on a loopback address, in a background thread: ``handler(data, addr)``
    runs per datagram and its return value, unless None, is sent back to the sender. Every
    (addr, data) received also goes on ``.results``."""

    kind = "udp"

    def __init__(self, handler: DatagramHandler | None = None, *, host: str = "127.0.0.1", port: int = 0):
        checks.port("port", port, note=_PORT_ZERO)
        _check_handler(handler, "(data, addr) -> bytes | None")
        self.handler = handler
        sock = socket.socket(loopback_host("host", host), socket.SOCK_DGRAM)
        try:
            _bind(sock, host, port)
            sock.setblocking(False)
            self._address = sock.getsockname()[:2]
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, name=f"udp:{self._address[1]}")

    def _loop(self) -> None:
        sel = self._wakeup.selector  # made (the wake-up socket in it) by the constructor; stop() closes it
        sel.register(self.sock, selectors.EVENT_READ)
        while self._wait_readable(sel):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # e.g. ECONNREFUSED queued by an earlier ICMP error
                self.errors.append(exc)
                continue
            self.results.put((addr, data))
            if self.handler is None:
                continue
            try:
                reply = self.handler(data, addr)
                if reply is not None:
                    self.sock.sendto(reply, addr)
            except Exception as exc:  # noqa: BLE001 - handed back to stop()
                self.errors.append(exc)


class ProcessServer:
    """A TCP server in a child process, for lessons that pause (SIGSTOP), resume or kill
    the peer. `behaviour` names a handler in behaviours.STREAM_BEHAVIOURS ('echo',
    'discard', 'pong', 'hold').

    The child (``core.spawn``: ``python -I``, in this process's group) runs a TCPServer on
    127.0.0.1 port 0 and reports the address in its handshake; it exits when we close its
    stdin. Its stderr is kept and shown if it fails.
    """

    kind = "process"

    def __init__(self, behaviour: str = "echo", *, start_timeout_s: float = 10.0):
        start_timeout_s = checks.seconds("start_timeout_s", start_timeout_s, high=600)
        if not isinstance(behaviour, str) or behaviour not in STREAM_BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; choose one of {sorted(STREAM_BEHAVIOURS)}")
        self.behaviour = behaviour
        self.name = f"process:{behaviour}"
        self._stopped = False
        # In our process group: a paused child cannot see end of file, so only a group kill (a
        # restart of the notebook's kernel) would end it if it is paused when we die.
        self._child = spawn.Child("helpers.servers:process_server_child", {"behaviour": behaviour},
                                  name=self.name, start_timeout_s=start_timeout_s, own_group=False)
        host, port = self._child.hello["address"]
        self._address = (host, port)
        self.name = f"process:{behaviour}:{port}"
        register(self)

    @property
    def address(self) -> tuple[str, int]:
        """Where the child listens, e.g. ('127.0.0.1', 40123)."""
        return self._address

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The child's Popen object."""
        return self._child.process

    @property
    def pid(self) -> int:
        """The child's process id (what `kill` and /proc/PID want)."""
        return self._child.pid

    @property
    def running(self) -> bool:
        """True while the child process exists (paused counts as running)."""
        return self._child.running

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last `limit` characters the child wrote to stderr ('' once stopped)."""
        return self._child.stderr_tail(limit)

    def pause(self, timeout_s: float = 2.0) -> None:
        """Freeze the child (SIGSTOP): its kernel still answers TCP, the program does not.

        Signals are delivered asynchronously, so this waits until /proc says it stopped.
        RuntimeError if the child has exited (killed, or the server stopped).
        """
        self._check_alive("pause", timeout_s)
        self._child.signal(signal.SIGSTOP)
        self._wait_for_process_state(lambda state: state in "tT", "stopped", timeout_s, every_thread=True)

    def resume(self, timeout_s: float = 2.0) -> None:
        """Unfreeze the child (SIGCONT) and wait until it runs again; RuntimeError if it exited."""
        self._check_alive("resume", timeout_s)
        self._child.signal(signal.SIGCONT)
        self._wait_for_process_state(lambda state: state not in "tT", "running", timeout_s)

    def _check_alive(self, action: str, timeout_s: float) -> None:
        checks.seconds("timeout_s", timeout_s, high=60)
        if not self._child.running:
            raise RuntimeError(f"cannot {action} {self.name}: its child exited with code "
                               f"{self._child.process.returncode}; start a new ProcessServer")

    def _wait_for_process_state(self, ok: Callable[[str], bool], what: str, timeout_s: float, *,
                                every_thread: bool = False) -> None:
        """Wait until the child's state letter satisfies `ok`; with `every_thread`, the state of
        each of its threads (a group stop reaches the threads one by one: the main thread may
        show T while the thread serving a connection still runs, and reads one more message)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if every_thread:
                    tasks = os.listdir(f"/proc/{self.pid}/task")
                    states = [proc_stat(f"/proc/{self.pid}/task/{tid}/stat")[0] for tid in tasks]
                else:
                    states = [proc_stat(f"/proc/{self.pid}/stat")[0]]
            except OSError:  # a thread ended while we read: look again
                states = []
            if states and all(ok(state) for state in states):
                return
            time.sleep(0.001)
        raise TimeoutError(f"{self.name}: child pid {self.pid} was not {what} after {timeout_s} s")

    def kill(self) -> int:
        """Kill the child at once (SIGKILL): its kernel closes its sockets. Returns the exit code."""
        return self._child.kill()

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Resume if paused, close the child's stdin (it exits), SIGTERM then SIGKILL it if it
        does not; reap it. Safe to call twice."""
        del raise_errors  # the child's failures are reported by stderr_tail()
        timeout_s = checks.seconds("timeout_s", timeout_s, zero_ok=True)
        if self._stopped:
            return
        self._stopped = True
        self._child.stop(min(timeout_s, spawn.MAX_WAIT_S))
        unregister(self)

    def __enter__(self) -> ProcessServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ProcessServer {self.name} pid={self.pid} {'running' if self.running else 'stopped'}>"


def process_server_child(config: dict[str, Any]) -> None:
    """ProcessServer's child (run by core.spawn): serve the behaviour until stdin closes."""
    with TCPServer(STREAM_BEHAVIOURS[config["behaviour"]]) as server:
        spawn.ready(address=list(server.address))
        for _ in spawn.commands():  # no commands: end of file means stop
            pass
        server.stop(raise_errors=False)
