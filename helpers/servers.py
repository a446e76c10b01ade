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
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import checks
from .addresses import loopback_host
from .behaviours import STREAM_BEHAVIOURS
from .observe import proc_stat

__all__ = [
    "ServerError",
    "TCPServer",
    "UDPServer",
    "UnixStreamServer",
    "ProcessServer",
    "family_for",
    "listening_socket",
    "live_servers",
    "register",
    "stop_all",
    "unregister",
]

StreamHandler = Callable[[socket.socket], Any]
DatagramHandler = Callable[[bytes, Any], "bytes | None"]

THREAD_PREFIX = "course-server"  # every thread these servers start is named with this
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent

_live: set[Any] = set()
_live_lock = threading.Lock()


def register(server: Any) -> None:
    """Add a running server (anything with ``stop(raise_errors=...)``) to the registry, so
    ``stop_all()`` and the leak checks see it. Servers defined in other helpers modules
    call this when they start and ``unregister`` when they stop. TypeError for an object
    without a stop() method (stop_all() could not stop it)."""
    if not callable(getattr(server, "stop", None)):
        raise TypeError(f"register() needs a server with a stop(raise_errors=...) method, got {server!r}")
    with _live_lock:
        _live.add(server)


def unregister(server: Any) -> None:
    """Remove a stopped server from the registry (no error if it is not there)."""
    with _live_lock:
        _live.discard(server)


def live_servers() -> list[Any]:
    """Servers started and not yet stopped (threads and child processes)."""
    with _live_lock:
        return sorted(_live, key=id)


def stop_all() -> int:
    """Stop every server still running; return how many there were. Errors are not raised."""
    servers = live_servers()
    for server in servers:
        server.stop(raise_errors=False)
    return len(servers)


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


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__} {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0-65535 (0 lets the kernel choose), got {port}")
    return port


def _check_backlog(backlog: int) -> int:
    # listen() takes a C int; the kernel silently caps it at net.core.somaxconn (4096 by default).
    if isinstance(backlog, bool) or not isinstance(backlog, int) or not 0 <= backlog <= 65535:
        raise ValueError(f"backlog must be an int >= 0 (at most 65535, and the kernel caps it), got {backlog!r}")
    return backlog


def _check_handler(handler: Any, signature: str) -> None:
    if handler is not None and not callable(handler):
        raise TypeError(f"handler must be a function {signature}, or None; got {handler!r}")


def family_for(host: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an IP address literal; TypeError for a non-str (ipaddress
    would take the int 1 as '0.0.0.1'), ValueError naming the host otherwise."""
    if not isinstance(host, str):
        raise TypeError(f"host must be an IP str such as '127.0.0.1' or '::1', got {type(host).__name__} {host!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IP address such as '127.0.0.1' or '::1', got {host!r}") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


_family_for = family_for  # older name, kept while helpers modules move to family_for


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
    _check_port(port)
    _check_backlog(backlog)
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
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        with _live_lock:
            _live.add(self)
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
        for key, _ in sel.select():
            if key.fileobj is self._wake_r:
                return False
        return True

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
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
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
            self.sock.close()
            self._wake_r.close()
            self._wake_w.close()
            with _live_lock:
                _live.discard(self)
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
        super().__init__(sock, name=name)

    def _loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            if not self.accept_connections:  # a listener nobody accepts from (backlog demos)
                self._wait_readable(sel)
                return
            sel.register(self.sock, selectors.EVENT_READ)
            while self._wait_readable(sel):
                try:
                    conn, _ = self.sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        self.errors.append(exc)  # out of fds: report it, do not spin
                        return
                    raise
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
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


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


class UnixStreamServer(_StreamServer):
    """A Unix-domain stream server; `path` is a filesystem path or, starting with a NUL
    byte (b"\\0name" or "\\0name"), an abstract name. Default: a fresh path in a temp dir,
    removed on stop."""

    kind = "unix"

    def __init__(self, handler: StreamHandler | None = None, *, path: str | bytes | None = None, backlog: int = 128):
        _check_handler(handler, "taking a socket")
        _check_backlog(backlog)
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
        super().__init__(sock, handler, accept=True, name=f"unix:{path!r}")

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
        _check_port(port)
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
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
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

    The child binds 127.0.0.1 port 0 and reports the port on its stdout; its stderr is
    kept in a file and shown if it fails.
    """

    kind = "process"

    def __init__(self, behaviour: str = "echo", *, start_timeout_s: float = 10.0):
        start_timeout_s = checks.seconds("start_timeout_s", start_timeout_s, high=600)
        if not isinstance(behaviour, str) or behaviour not in STREAM_BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; choose one of {sorted(STREAM_BEHAVIOURS)}")
        self.behaviour = behaviour
        self.name = f"process:{behaviour}"
        self._stopped = False
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "helpers.servers", behaviour],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        with _live_lock:
            _live.add(self)
        try:
            self._address = self._read_address(start_timeout_s)
        except BaseException:
            self.stop(raise_errors=False)
            raise
        self.name = f"process:{behaviour}:{self._address[1]}"

    def _read_address(self, timeout_s: float) -> tuple[str, int]:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise TimeoutError(f"{self.name}: child did not report its address within {timeout_s} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: child exited with code {self.process.wait()}: {self.stderr_tail()}")
        host, port = json.loads(line)["address"]
        return (host, port)

    @property
    def address(self) -> tuple[str, int]:
        """Where the child listens, e.g. ('127.0.0.1', 40123)."""
        return self._address

    @property
    def pid(self) -> int:
        """The child's process id (what `kill` and /proc/PID want)."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """True while the child process exists (paused counts as running)."""
        return self.process.poll() is None

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last `limit` characters the child wrote to stderr ('' once stopped)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0 (characters), got {limit!r}")
        if self._stderr.closed or limit == 0:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def pause(self, timeout_s: float = 2.0) -> None:
        """Freeze the child (SIGSTOP): its kernel still answers TCP, the program does not.

        Signals are delivered asynchronously, so this waits until /proc says it stopped.
        RuntimeError if the child has exited (killed, or the server stopped).
        """
        self._check_alive("pause", timeout_s)
        self.process.send_signal(signal.SIGSTOP)
        self._wait_for_state(lambda state: state in "tT", "stopped", timeout_s)

    def resume(self, timeout_s: float = 2.0) -> None:
        """Unfreeze the child (SIGCONT) and wait until it runs again; RuntimeError if it exited."""
        self._check_alive("resume", timeout_s)
        self.process.send_signal(signal.SIGCONT)
        self._wait_for_state(lambda state: state not in "tT", "running", timeout_s)

    def _check_alive(self, action: str, timeout_s: float) -> None:
        checks.seconds("timeout_s", timeout_s, high=60)
        if self.process.poll() is not None:
            raise RuntimeError(f"cannot {action} {self.name}: its child exited with code {self.process.returncode}; "
                               "start a new ProcessServer")

    def _wait_for_state(self, ok: Callable[[str], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ok(proc_stat(f"/proc/{self.pid}/stat")[0]):  # the state letter
                return
            time.sleep(0.001)
        raise TimeoutError(f"{self.name}: child pid {self.pid} was not {what} after {timeout_s} s")

    def kill(self) -> int:
        """Kill the child at once (SIGKILL): its kernel closes its sockets. Returns the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Resume if paused, ask the child to exit (SIGTERM), kill it if it does not."""
        del raise_errors  # the child's failures are reported by stderr_tail()
        timeout_s = checks.seconds("timeout_s", timeout_s, zero_ok=True)
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> ProcessServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ProcessServer {self.name} pid={self.pid} {'running' if self.running else 'stopped'}>"


def _child_main(behaviour: str) -> None:
    """Entry point of ProcessServer's child: serve `behaviour` until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with TCPServer(STREAM_BEHAVIOURS[behaviour]) as server:
        print(json.dumps({"address": list(server.address)}), flush=True)
        stop.wait()
        server.stop(raise_errors=False)


if __name__ == "__main__":
    _child_main(sys.argv[1])
