"""One service, eight server models: the C10K lesson's servers (original course lectures 24-29).

Theory of operation. Every model serves the same two tiny protocols, written once without
I/O in ``helpers.services``: ``echo`` sends back what it got, and ``http`` answers ``GET /``
with a 3-byte ``200 OK`` body (keep-alive, the capstone's HTTP session underneath). What
differs is *who waits for the kernel*:

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

The reactors are the capstone's framework (``helpers.reactor``, lesson 19): its event loop,
acceptor and TCP connections, with the service as the protocol; ``asyncio`` is
``helpers.aio.AsyncioServer`` (imported when first used, so a child serving another model
does not load asyncio). The blocking models are here.

Thread models run in this process (``ThreadPerConnection(...)`` and friends); any model
also runs in a child process with ``ModelProcess(model)``, which is how the lesson
measures memory (the Pss of the process tree, from /proc/PID/smaps_rollup) and CPU time
(/proc/PID/stat) without the notebook's own memory in the way. ``fork`` and
``reuseport`` are child processes by nature. Children are started the course's one way
(``helpers.core.spawn``: ``python -I``, never a fork of the multi-threaded Jupyter kernel,
``model_child`` as the entry); they exit when their stdin closes, and ``stop()`` kills the
whole process group if they do not.

Every model accepts by the course's one policy (``helpers.core.accept``): out of file
descriptors, it pauses accepting for a second and retries, and counts the pauses in
``paused``; it neither spins on the listener nor keeps each failure.

Rules shared with ``helpers.servers``: 127.0.0.1 port 0, ``.address`` from
``getsockname()``, every thread named with the ``course-server`` prefix, ``stop()``
idempotent and joining every thread, context managers, no printing from background
threads (errors are kept in ``.errors`` and raised by ``stop()`` as a ServerError).
"""

from __future__ import annotations

import os
import queue
import resource
import selectors
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .addresses import loopback_host
from .core import checks, registry, spawn
from .core.accept import SelectorAcceptor
from .core.limits import NR_OPEN, raise_nofile_limit
from .core.proc import child_pids, ephemeral_port_count, proc_stat
from .core.registry import THREAD_PREFIX
from .core.wakeup import WakeableSelector
from .reactor.connection import TcpConnection
from .reactor.server import TcpServer
from .servers import ServerError, listening_socket, port_holder, shut_down
from .services import SERVICES, make_service, serve_blocking

__all__ = [
    "MODELS",
    "OPTIONS",
    "ServiceProtocol",
    "ThreadPerConnection",
    "ThreadPool",
    "PollReactor",
    "EpollReactor",
    "MainSubReactors",
    "ModelProcess",
    "ForkPerConnection",
    "ReusePortProcesses",
    "start_model",
    "start_models",
    "C10KPlan",
    "plan_c10k",
    "process_tree",
    "child_states",
    "pss_kb",
    "rss_kb",
    "cpu_seconds",
    "fork_server",
    "reap_children",
]

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

#: listen() backlog: Linux caps it at net.core.somaxconn (4096 since 5.4); the C10K demo
#: opens connections in bursts, and a full accept queue drops SYNs (1 s retransmit).
BACKLOG = 4096
MAX_WAIT_S = 600.0  # the longest a start, stop or wait here may be asked to take
#: Per-model options and their ranges: the one table ModelProcess, start_model() and the
#: classes' own checks share.
OPTIONS: dict[str, dict[str, tuple[int, int]]] = {"pool": {"workers": (1, 256)}, "main-sub": {"subs": (1, 64)}}


def _check_service(service: object) -> str:
    if service not in SERVICES:
        raise ValueError(f"service must be one of {SERVICES}, got {service!r}")
    return service  # type: ignore[return-value]


def _check_options(model: str, options: dict[str, Any]) -> None:
    """The options `model` takes (workers= for pool, subs= for main-sub), each in its range."""
    allowed = OPTIONS.get(model, {})
    for key, value in options.items():
        if key not in allowed:
            takes = ", ".join(f"{k}=" for k in allowed) or "no options"
            raise TypeError(f"model {model!r} takes {takes}, got {key}={value!r}")
        checks.count(key, value, *allowed[key])


def _model_options(options: dict[str, Any], *, in_child: bool) -> dict[str, Any]:
    """The options left for the model itself once the server's own arguments are taken out."""
    own = ("processes", "start_timeout_s") if in_child else ("host", "port", "reuse_port")
    return {k: v for k, v in options.items() if k not in own}


def _check_listen(host: object, port: object) -> None:
    """host: a loopback IP literal; port: an int in 0-65535 (0: the kernel picks)."""
    loopback_host("host", host)
    checks.port("port", port, note=" (0 lets the kernel choose)")


# ------------------------------------------------------------- blocking-call models


class _BlockingModel:
    """Listener, acceptor thread, wake-up socketpair, named threads, idempotent stop()."""

    model = "?"

    def __init__(self, service: str = "echo", *, host: str = "127.0.0.1", port: int = 0, reuse_port: bool = False):
        _check_service(service)  # the arguments first, before anything opens
        _check_listen(host, port)
        self.service = service
        self.errors: list[BaseException] = []
        self._accepted = 0
        self._acceptor: SelectorAcceptor | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self.listener = listening_socket(host, port, backlog=BACKLOG, reuse_port=reuse_port)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.name = f"{self.model}:{self.address[1]}"
        try:  # every descriptor the acceptor needs, its selector's included, before it starts
            self._wakeup = WakeableSelector()
        except BaseException:
            self.listener.close()
            raise
        registry.register(self)
        try:
            self._start()
        except BaseException:
            self.stop(raise_errors=False)
            raise

    def _start(self) -> None:
        self._thread(self._accept_loop, "acceptor")

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

    def _accept_loop(self) -> None:
        """Wait for connections (or the wake-up), accept them, hand each to _take()."""
        sel = self._wakeup.selector  # made by the constructor, so a starved process can still accept
        self._acceptor = acceptor = SelectorAcceptor(sel, self.listener, limit=BACKLOG)
        while not self._stopping.is_set():
            sel.select(acceptor.timeout())
            for conn in acceptor.accept():
                self._accepted += 1
                self._take(conn)

    def _take(self, conn: socket.socket) -> None:
        """Give one accepted connection a thread of its own (the pool queues it instead)."""
        conn.setblocking(True)
        with self._lock:
            self._conns.add(conn)
        if self._stopping.is_set():  # stop() may have missed it: unblock it here
            shut_down([conn])  # (a peer that already reset it makes shutdown() fail: nothing to unblock)
        self._thread(self._serve, f"conn{self._accepted}", conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            serve_blocking(conn, self.service)
        except ConnectionError:
            pass  # the peer reset its connection: the peer's business, not an error here
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self._accepted

    @property
    def paused(self) -> int:
        """How many times accept() ran out of file descriptors and accepting paused (core.accept)."""
        return self._acceptor.paused if self._acceptor is not None else 0

    def serving(self) -> int:
        """Connections with a live thread of their own (thread creation takes time)."""
        with self._lock:
            return sum(t.is_alive() for t in self._threads if t.name.rsplit("-", 1)[1].startswith("conn"))

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    def _shutdown(self) -> None:
        """Unblock every serving thread: recv() returns b"" at once on a shut-down socket."""
        with self._lock:
            conns = list(self._conns)
        shut_down(conns)

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop serving, close every socket, join every thread; safe to call twice.

        Raises ServerError if a thread failed (unless raise_errors is False), and
        TypeError/ValueError, before stopping anything, if `timeout_s` is not a number of
        seconds in [0, 600].
        """
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            self._stopping.set()
            self._wakeup.wake()
            deadline = time.monotonic() + timeout_s
            # Two passes: the acceptor may start one last connection's thread after we
            # looked; once the acceptor has exited (joined in the first pass), nothing new starts.
            for _ in range(2):
                self._shutdown()
                with self._lock:
                    threads = list(self._threads)
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            self._wakeup.close()
            self.listener.close()
            registry.unregister(self)
            if stuck:
                warnings.warn(f"{self.name}: threads still running after {timeout_s} s: {stuck}", stacklevel=2)
        if raise_errors and self.errors:
            errors, self.errors = self.errors, []
            raise ServerError(self.name, errors) from errors[0]

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {'running' if self.running else 'stopped'}>"


class ThreadPerConnection(_BlockingModel):
    """Thread per connection: an acceptor thread starts one blocking thread per client."""

    model = "thread"


class ThreadPool(_BlockingModel):
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
        for i in range(self.workers):
            self._thread(self._worker, f"worker{i}")
        super()._start()

    def _take(self, conn: socket.socket) -> None:
        """Queue one accepted connection for the next free worker.

        Listed first, then checked: stop() sets the flag before it lists the connections to
        shut down, so a connection it missed is shut down here (checking first would let one
        slip between the check and the list, and a worker would wait on it forever).
        """
        conn.setblocking(True)
        with self._lock:
            self._conns.add(conn)
        if self._stopping.is_set():
            shut_down([conn])  # its worker reads b"" at once; a queued one is closed by stop()
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


class ServiceProtocol:
    """A service on the capstone's reactor: bytes from the connection through the service's
    ``receive()``, the answer back with the connection's output-buffer write."""

    __slots__ = ("service", "conn")

    def __init__(self, service: str):
        self.service = make_service(service)
        self.conn: TcpConnection | None = None

    def connection_made(self, conn: TcpConnection) -> None:
        self.conn = conn

    def data_received(self, data: memoryview) -> None:
        conn = self.conn  # write() may lose the connection (EPIPE): keep our own reference
        answer, close = self.service.receive(data)
        if answer:
            conn.write(answer)  # copies what the kernel did not take: the memoryview lives this call only
        if close:
            conn.close()

    def eof_received(self) -> bool:
        return False  # close once the answers already queued are sent

    def connection_lost(self, exc: BaseException | None) -> None:
        self.conn = None


class PollReactor(TcpServer):
    """A single-threaded reactor on poll(2): one loop thread serves every connection."""

    kind = "poll"
    backend = "poll"
    subs = 0

    def __init__(self, service: str = "echo", *, host: str = "127.0.0.1", port: int = 0, reuse_port: bool = False):
        _check_service(service)
        _check_listen(host, port)
        self.service = service
        super().__init__(lambda: ServiceProtocol(service), host=host, port=port, threads=self.subs,
                         backend=self.backend, backlog=BACKLOG, reuse_port=reuse_port)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self.acceptor.accepted

    def serving(self) -> int:
        """Connections open in the loops."""
        return self.open_connections()


class EpollReactor(PollReactor):
    """The same single-threaded reactor on epoll(7)."""

    kind = "epoll"
    backend = "epoll"


class MainSubReactors(EpollReactor):
    """A main reactor accepts; `subs` sub-reactor threads serve, connections dealt round-robin."""

    kind = "main-sub"

    def __init__(self, service: str = "echo", *, subs: int = 2, **kw: Any):
        _check_options("main-sub", {"subs": subs})
        self.subs = subs
        super().__init__(service, **kw)


IN_PROCESS: dict[str, type[Any] | None] = {
    "thread": ThreadPerConnection,
    "pool": ThreadPool,
    "poll": PollReactor,
    "epoll": EpollReactor,
    "main-sub": MainSubReactors,
    "asyncio": None,  # helpers.aio.AsyncioServer, imported when first used: asyncio alone is ~5 MB per process
}


# ------------------------------------------------------------ process measurements

PID_MAX = 1 << 22  # the largest pid Linux can give (kernel.pid_max's ceiling, 4194304)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (from /proc/PID/task/*/children).

    `pid` must be an int >= 1 (ValueError otherwise); a process that is gone is still listed.
    """
    tree, todo = [], [checks.count("pid", pid, 1, PID_MAX)]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += child_pids(p)
    return tree


def child_states(pid: int) -> list[str]:
    """The state letter of each child of `pid`, from field 3 of /proc/CHILD/stat (man 5 proc):
    S sleeping, R running, Z zombie (exited, not yet collected by waitpid()). A child reaped
    while we look is left out; [] for a process that is gone. ValueError for a bad pid."""
    states = []
    for kid in child_pids(checks.count("pid", pid, 1, PID_MAX)):
        try:
            states.append(proc_stat(f"/proc/{kid}/stat")[0])
        except OSError:
            continue
    return states


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
    return _proc_kb(checks.count("pid", pid, 1, PID_MAX), "status", "VmRSS")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of `pid`, its live descendants and its reaped children, in s."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = proc_stat(f"/proc/{p}/stat")
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime (stat fields 14-17)
    return total / os.sysconf("SC_CLK_TCK")


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
    checks.count("connections", connections, 1, 200_000)
    if fd_hard_limit is not None and fd_hard_limit != resource.RLIM_INFINITY:
        checks.count("fd_hard_limit", fd_hard_limit, FD_MARGIN + 1, 1 << 30)
    checks.count("min_clients", min_clients, 1, MAX_PROCESSES)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if fd_hard_limit is None else fd_hard_limit
    if hard == resource.RLIM_INFINITY:
        hard = NR_OPEN
    per_process = max(0, hard - FD_MARGIN)
    notes = []
    target = min(connections, per_process * MAX_PROCESSES)
    if target < connections:
        notes.append(f"the fd hard limit is {hard} per process, so {MAX_PROCESSES} processes per side hold at most "
                     f"{target:,} connections, not {connections:,}; ask your administrator to raise "
                     "`nofile` in /etc/security/limits.conf to go further")
    servers = max(1, -(-target // per_process)) if per_process else 0
    clients = max(min_clients, -(-target // per_process)) if per_process else 0
    ports = ephemeral_port_count()
    sources = [f"127.0.0.{i + 1}" for i in range(max(1, -(-target // int(ports * PORT_SHARE))))]
    if servers > 1:
        notes.append(f"{servers} server processes share the port with SO_REUSEPORT (fd limit {hard})")
    if len(sources) > 1:
        notes.append(f"{len(sources)} source addresses, as one gives at most {ports:,} ports")
    return C10KPlan(connections, target, servers, min(clients, MAX_PROCESSES), sources, hard, ports,
                    "; ".join(notes) or "one server process and the default source address suffice")


# ------------------------------------------------------------------ child processes


def _in_process(model: str, service: str, **kw: Any) -> Any:
    """Start in-process model `model` (asyncio gets the C10K backlog, as every other model)."""
    if model == "asyncio":
        from .aio import AsyncioServer

        return AsyncioServer(service, backlog=BACKLOG, **kw)
    return IN_PROCESS[model](service, **kw)  # type: ignore[misc]


class ModelProcess:
    """Run model `model` in `processes` child processes (``core.spawn``, ``model_child``).

    With processes > 1, the children listen on one port with SO_REUSEPORT: this process
    keeps the port with a socket that never listens (``servers.port_holder``), and every
    child binds it. ``stats()`` asks each child for its counters; ``pss_kb()`` and
    ``cpu_seconds()`` measure the whole tree.
    """

    def __init__(self, model: str, service: str = "echo", *, processes: int = 1, start_timeout_s: float = 10.0,
                 **options: Any):
        if model not in MODELS or model == "reuseport":
            choices = [m for m in MODELS if m != "reuseport"]
            raise ValueError(f"model must be one of {choices} (use ReusePortProcesses for 'reuseport'), got {model!r}")
        _check_service(service)
        checks.count("processes", processes, 1, 32)
        checks.seconds("start_timeout_s", start_timeout_s, high=MAX_WAIT_S)
        _check_options(model, options)
        self.model, self.service, self.options = model, service, options
        self.name = f"{model}-process"
        self.children: list[spawn.Child] = []
        self._stopped = False
        self._holder: socket.socket | None = None
        registry.register(self)
        try:
            port = 0
            if processes > 1:
                self._holder = port_holder()
                port = self._holder.getsockname()[1]
            config = {"model": model, "service": service, "port": port, "reuse_port": processes > 1,
                      "options": options}
            for _ in range(processes):  # start them all, then wait: Python starts side by side
                self.children.append(spawn.Child("helpers.c10k:model_child", config, name=self.name,
                                                 start_timeout_s=start_timeout_s, wait=False))
            for child in self.children:
                port = child.wait_ready()["address"][1]
        except BaseException:
            self.stop()
            raise
        self.address: tuple[str, int] = ("127.0.0.1", port)
        self.name = f"{model}-process:{port}"

    @property
    def pids(self) -> list[int]:
        """The server processes' ids (not counting fork's per-connection children)."""
        return [c.pid for c in self.children]

    def stats(self) -> list[dict[str, Any]]:
        """Each child's counters: connections accepted and now serving, accept pauses, errors."""
        return [child.ask({"cmd": "stats"}, 5.0) for child in self.children]

    def wait_serving(self, n: int, timeout_s: float = 5.0) -> bool:
        """Wait until the children serve at least `n` connections between them (a thread,
        a process or a loop entry each); False if that did not happen within `timeout_s`."""
        checks.count("n", n, 0, 1 << 30)
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
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
        return not self._stopped and all(c.running for c in self.children)

    def stop(self, timeout_s: float = 3.0, *, raise_errors: bool = True) -> None:
        """Close the children's stdin (they exit), then SIGTERM, then SIGKILL their process
        groups; reap every child. Safe to call twice. TypeError/ValueError, before stopping
        anything, if `timeout_s` is not a number of seconds in [0, 600]."""
        del raise_errors  # a child's errors are in its stats() and stderr
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S, zero_ok=True)
        if self._stopped:
            return
        self._stopped = True
        for child in self.children:  # stdin closed on every child first: they exit side by side
            child.send_eof()
        for child in self.children:
            child.stop(timeout_s)
        if self._holder is not None:
            self._holder.close()
        registry.unregister(self)

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
    _check_service(service)
    _check_options(model, _model_options(options, in_child=in_child or model in ("fork", "reuseport")))
    if model == "reuseport":
        return ReusePortProcesses(service, **options)
    if model == "fork":
        return ForkPerConnection(service, **options)
    if in_child:
        return ModelProcess(model, service, **options)
    return _in_process(model, service, **options)


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
    _check_service(service)
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


def reap_children() -> list[int]:
    """Collect every child process that has exited, without waiting; return their pids.

    Called from the SIGCHLD handler. Signals do not queue: children that exit close together
    may raise one SIGCHLD between them, so one call must collect all of them (a loop), and it
    must not wait for children still serving (WNOHANG: waitpid() returns pid 0 for "none has
    exited yet"; it raises ChildProcessError when there is no child at all). man 2 waitpid.
    """
    reaped = []
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children left at all
            return reaped
        if pid == 0:  # children remain, none has exited
            return reaped
        reaped.append(pid)


def _serve_child(conn: socket.socket, service: str) -> int:
    """In the forked child: serve one connection with blocking calls; the exit code."""
    try:
        conn.setblocking(True)
        serve_blocking(conn, service)
    except ConnectionError:
        pass  # the peer reset its connection: the peer's business
    except BaseException:  # noqa: BLE001 - report by the exit code, then exit anyway
        return 1
    return 0


def fork_server(listener: socket.socket, service: str, reap: Callable[[], list[int]] = reap_children) -> None:
    """The fork model's server process: accept, fork() a child per connection, reap the children.

    Single-threaded on purpose: fork() copies only the calling thread, so forking a process
    with other threads can leave locks held forever in the child. After fork() both processes
    hold the connection and the listener: the child closes the listener (and the connections
    accepted in the same batch, each for a child of its own), the parent closes the connection
    (else the peer would never see the connection end). SIGCHLD calls `reap` (a list of
    the children it collected), so no exited child stays a zombie. Stops at end of file on
    stdin (``core.spawn``), answers {"cmd": "stats"}.
    """
    children: set[int] = set()
    signal.signal(signal.SIGCHLD, lambda *_: children.difference_update(reap()))
    commands = spawn.CommandReader()
    with selectors.DefaultSelector() as sel:
        sel.register(commands, selectors.EVENT_READ)
        acceptor = SelectorAcceptor(sel, listener, limit=BACKLOG)
        try:
            while True:
                if any(key.fileobj is commands for key, _ in sel.select(acceptor.timeout())):
                    if (batch := commands.read()) is None:
                        return  # end of file: the parent wants us gone
                    if any(c.get("cmd") == "stats" for c in batch):
                        spawn.say({"accepted": acceptor.accepted, "serving": len(children),
                                   "paused": acceptor.paused, "errors": [], "error_count": 0})
                batch = acceptor.accept()
                for i, conn in enumerate(batch):
                    # SIGCHLD blocked until the pid is in `children`: a child may exit at once.
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
                    pid = os.fork()
                    if pid == 0:  # the child: its own copies of both sockets; it never returns
                        code = 1
                        try:
                            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                            signal.signal(signal.SIGTERM, signal.SIG_DFL)
                            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                            listener.close()  # only the parent accepts
                            for other in batch[i + 1:]:
                                other.close()  # accepted with ours, not yet handed to their own child
                            sel.close()
                            code = _serve_child(conn, service)
                        finally:
                            os._exit(code)
                    children.add(pid)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                    conn.close()  # the parent's copy: the child's keeps the connection open
        finally:
            _end_children(children)


def _end_children(children: set[int]) -> None:
    """SIGTERM every child still serving, and wait for each."""
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


def model_child(config: dict[str, Any]) -> None:
    """A model's server process (run by core.spawn): serve, answer 'stats', stop at end of file."""
    raise_nofile_limit()
    model, service = config["model"], config["service"]
    if model == "fork":
        with listening_socket("127.0.0.1", config["port"], backlog=BACKLOG,
                              reuse_port=config["reuse_port"]) as listener:
            spawn.ready(address=list(listener.getsockname()[:2]))
            fork_server(listener, service)
        return
    server = _in_process(model, service, port=config["port"], reuse_port=config["reuse_port"], **config["options"])
    try:
        spawn.ready(address=list(server.address))
        for command in spawn.commands():
            if command.get("cmd") == "stats":
                errors = list(server.errors)
                spawn.say({"accepted": server.accepted, "serving": server.serving(), "paused": server.paused,
                           "threads": threading.active_count(), "errors": [repr(e) for e in errors[:10]],
                           "error_count": len(errors)})
    finally:
        server.stop(raise_errors=False)
