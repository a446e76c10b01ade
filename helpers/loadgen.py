"""A load generator in worker processes: N connections, closed loop or a fixed rate, latency percentiles.

Theory of operation. A benchmark is only as good as its client: one Python thread
driving thousands of sockets becomes the bottleneck long before a server does, and its
own pauses show up as server latency. So ``LoadGenerator`` starts ``workers`` child
processes (the course's one way, ``helpers.core.spawn``: ``python -I``, ``worker_child`` as
the entry, never a fork of the multi-threaded Jupyter kernel) and splits the connections
among them. Each worker drives its share from one epoll loop with non-blocking sockets.
One worker is enough for a few hundred connections (lesson 18); lesson 17 uses two.

* **Closed loop** (``rate=None``): each connection sends a request, waits for the whole
  answer, records the latency and sends the next one, until ``duration_s`` ends. The
  server's speed sets the pace, as with ``wrk``.
* **Open loop** (``rate=R``): requests leave on a fixed schedule (R per second in total)
  whether or not earlier ones were answered; a request's latency runs from the moment it
  was *due*, so a stalled server cannot hide its stall by slowing the client down (the
  "coordinated omission" trap).

Every request is counted: ``sent``, ``answered`` (a complete and correct answer: the same
bytes for echo, a ``200`` with its whole body for http), and ``unanswered`` (still
waiting when the drain time after the run ran out). After ``duration_s`` no new request
starts; a connection closes as soon as its last answer is in, and the others wait up to
``drain_s``. A connection closes with RST by default (SO_LINGER 0, lesson 08: thousands of
load connections leave no TIME_WAIT behind); ``reset=False`` closes with FIN instead, as a
polite client does, for a server that counts a reset as an error.

``hold()`` is the C10K demo's client: each worker opens its connections in batches (a
listener's accept queue holds at most ``somaxconn`` waiting connections; more SYNs are
dropped and retried after 1 s), echoes a token on every one of them, reports progress,
and keeps them open until ``release()``.

The worker protocol is core.spawn's JSON lines: commands on the worker's stdin, events on
its stdout. ``LoadResult`` is the course's one record of a load run (``httpbench``'s
keep-alive client fills it too).
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import math
import os
import resource
import selectors
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from .addresses import loopback_address
from .core import checks, spawn
from .core.limits import raise_nofile_limit
from .core.proc import ephemeral_port_count

__all__ = ["percentile", "LoadResult", "HoldResult", "LoadGenerator", "HTTP_REQUEST"]

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CONNECT_BATCH = 1000  # connections a worker opens before waiting for them (below somaxconn 4096)
#: Linux's IP_BIND_ADDRESS_NO_PORT (include/uapi/linux/in.h); the socket module has it from 3.12.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
FD_MARGIN = 64  # descriptors a worker needs besides its connections (stdio, epoll, the interpreter's own)
MAX_WAIT_S = 600.0  # the longest hold() or release() may be asked to wait
MAX_DRAIN_S = 30.0  # the longest a run waits for its last answers


# ------------------------------------------------------------ argument checks (parent side)


def _callable_or_none(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function to call (or None), got {value!r}")


def _addresses(addresses: object) -> list[tuple[str, int]]:
    """A non-empty list of loopback (host, port) pairs; a lone pair is named as the mistake it is."""
    if not isinstance(addresses, (list, tuple)) or not addresses:
        raise TypeError(f"addresses must be a non-empty list of (host, port) pairs, got {addresses!r}")
    if len(addresses) == 2 and isinstance(addresses[0], str):
        raise TypeError(f"addresses must be a list of (host, port) pairs: write [{tuple(addresses)!r}], "
                        f"not {addresses!r}")
    return [loopback_address(f"addresses[{i}]", a) for i, a in enumerate(addresses)]


def _check_capacity(connections: int, workers: int, pairs: int, how: str) -> None:
    """Refuse, before anything opens, more connections than the fd limit or the port range allow.

    Each worker holds its share of the connections (plus FD_MARGIN descriptors) under the
    hard RLIMIT_NOFILE; each (source address, server address) pair gives at most one
    connection per ephemeral port.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_worker = -(-connections // workers)
    if hard != resource.RLIM_INFINITY and per_worker + FD_MARGIN > hard:
        fits = (hard - FD_MARGIN) * workers
        raise ValueError(f"connections={connections} over {workers} worker(s) is {per_worker} per process, but the "
                         f"fd hard limit (RLIMIT_NOFILE, `ulimit -Hn`) is {hard}: use at most {max(0, fits)} "
                         f"connections with {workers} workers, more workers (up to 32), or a higher `nofile` limit")
    ports = ephemeral_port_count()
    if connections > ports * pairs:
        raise ValueError(f"connections={connections} exceed the {ports * pairs} that {how} can give (one per "
                         f"ephemeral port, ip_local_port_range has {ports}): use at most {ports * pairs}"
                         + ("" if how.startswith("hold") else ", or hold() with more source addresses"))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of `values` by the nearest-rank method.

    The smallest value such that at least q % of the values are less than or equal to it:
    of 1..100, p50 is 50 and p99 is 99; p0 is the minimum, p100 the maximum. Returns nan
    for no values; raises ValueError for q outside [0, 100] and TypeError or ValueError for
    `values` that are not a sequence of real numbers (a NaN has no rank).
    """
    if isinstance(q, bool) or not isinstance(q, (int, float)):
        raise TypeError(f"q must be a percentage (a number in [0, 100]), got {type(q).__name__} {q!r}")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be a percentage in [0, 100], got {q!r}")
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes, bytearray)):
        raise TypeError(f"values must be a list of numbers, got {type(values).__name__} {values!r:.60}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"values must be numbers, got {type(v).__name__} {v!r} among them")
        if math.isnan(v):
            raise ValueError("values contain NaN, which has no place in an ordering: drop it before asking")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LoadResult:
    """What one load run measured (summed over the workers): the course's one load record."""

    connections: int
    connected: int
    connect_failures: int
    seconds: float
    sent: int
    answered: int
    unanswered: int
    conns_answered: int  # connections that got at least one answer
    error_count: int
    errors: list[str] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list, repr=False)
    sample: Any = None  # what run(on_ready=...) returned, once every connection was open

    @property
    def per_second(self) -> float:
        """Answered requests per second of the run."""
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """The q-th latency percentile in milliseconds (nan if nothing was answered)."""
        return percentile(self.latencies_us, q) / 1000

    @property
    def p50_ms(self) -> float:
        """Median latency (ms)."""
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        """99th percentile latency (ms): 1 request in 100 took longer."""
        return self.percentile_ms(99)

    @property
    def complete(self) -> bool:
        """Every connection connected, every request sent was answered, no errors."""
        return (self.connect_failures == 0 and self.sent == self.answered and self.unanswered == 0
                and self.error_count == 0)


@dataclass
class HoldResult:
    """What ``hold()`` opened: connections held open and echoed, and how long it took."""

    requested: int
    opened: int
    echoed: int
    failed: int
    seconds: float
    errors: list[str] = field(default_factory=list)


class LoadGenerator:
    """`workers` load-generating processes; use in a ``with`` block (they are always reaped)."""

    def __init__(self, workers: int = 2):
        checks.count("workers", workers, 1, 32)
        self.workers: list[spawn.Child] = []
        self._holding: list[spawn.Child] = []
        try:
            for _ in range(workers):  # start them all, then wait: Python starts side by side
                self.workers.append(spawn.Child("helpers.loadgen:worker_child", name="load worker", wait=False))
            for w in self.workers:
                w.wait_ready()
        except BaseException:
            self.close()
            raise

    # -- talking to several workers at once
    def _collect(self, workers: list[spawn.Child], until: str, timeout_s: float,
                 on_event: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Wait for one `until` event from each worker; other events go to on_event."""
        results: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            for i, w in enumerate(workers):
                sel.register(w.fileno(), selectors.EVENT_READ, i)
            while len(results) < len(workers):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"load workers did not report {until!r} within {timeout_s} s")
                for key, _ in sel.select(left):
                    for message in workers[key.data].take():
                        if message.get("event") == until:
                            results[key.data] = message
                            sel.unregister(key.fd)
                        elif message.get("event") == "error":
                            raise RuntimeError(f"load worker failed: {message['error']}")
                        elif on_event is not None:
                            on_event(key.data, message)
        return [results[i] for i in range(len(workers))]

    @staticmethod
    def _split(total: int, parts: int) -> list[int]:
        return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]

    def run(self, address: tuple[str, int], *, connections: int, duration_s: float = 0.3, service: str = "echo",
            payload: int = 64, rate: float | None = None, drain_s: float = 3.0, reset: bool = True,
            on_ready: Callable[[], Any] | None = None) -> LoadResult:
        """Load the server at `address` with `connections` connections for `duration_s`.

        `service` is 'echo' (requests of `payload` bytes, answered by the same bytes) or
        'http' (GET requests, answered by a 200 with Content-Length). `rate` is requests
        per second in total (open loop), or None for a closed loop. ``on_ready()``, if
        given, is called once every connection is open and before the first request
        (e.g. to read the server's memory with N connections); its value lands in
        ``.sample``. `reset` closes the connections with RST at the end (no TIME_WAIT left);
        False closes them with FIN once their answers are in. `address` is a (host, port)
        pair on loopback; `drain_s` is in [0, 30] s.
        Raises TypeError/ValueError for bad arguments (before any worker is told anything),
        among them more connections than the workers' fd limit or one source address's
        ephemeral ports allow; TimeoutError if the workers hang, RuntimeError if one dies.
        """
        if not self.workers:
            raise RuntimeError("this LoadGenerator is closed; start a new one")
        checks.count("connections", connections, 1, 100_000)
        checks.seconds("duration_s", duration_s, high=30)
        if service not in ("echo", "http"):
            raise ValueError(f"service must be 'echo' or 'http', got {service!r}")
        checks.count("payload", payload, 1, 65536, note=" bytes")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1e6):
            raise ValueError(f"rate must be None (closed loop) or requests/s in (0, 1e6], got {rate!r}")
        checks.seconds("drain_s", drain_s, high=MAX_DRAIN_S, zero_ok=True)
        if not isinstance(reset, bool):
            raise TypeError(f"reset must be True (close with RST) or False (close with FIN), got {reset!r}")
        _callable_or_none("on_ready", on_ready)
        (address,) = _addresses([address])
        if self._holding:
            raise RuntimeError("release() the held connections before a run")
        workers = self.workers[: min(len(self.workers), connections)]
        _check_capacity(connections, len(workers), 1, "one source address to one server")
        shares = self._split(connections, len(workers))
        for w, n in zip(workers, shares):
            w.send({"cmd": "run", "address": list(address[:2]), "connections": n, "duration_s": duration_s,
                    "service": service, "payload": payload, "drain_s": drain_s, "reset": reset,
                    "rate": None if rate is None else rate * n / connections})
        ready = self._collect(workers, "connected", 30.0)
        sampled = on_ready() if on_ready is not None else None
        for w in workers:
            w.send({"cmd": "go"})
        done = self._collect(workers, "done", duration_s + drain_s + 30.0)
        latencies = [x for d in done for x in d["latencies_us"]]
        return LoadResult(
            connections=connections,
            connected=sum(r["connected"] for r in ready),
            connect_failures=sum(r["failed"] for r in ready),
            seconds=max(d["seconds"] for d in done),
            sent=sum(d["sent"] for d in done),
            answered=sum(d["answered"] for d in done),
            unanswered=sum(d["unanswered"] for d in done),
            conns_answered=sum(d["conns_answered"] for d in done),
            error_count=sum(d["error_count"] for d in done) + sum(len(r["errors"]) for r in ready),
            errors=[e for m in ready + done for e in m["errors"]][:10],
            latencies_us=latencies,
            sample=sampled,
        )

    def hold(self, addresses: Sequence[tuple[str, int]], *, connections: int, sources: Sequence[str] = ("127.0.0.1",),
             progress: Callable[[int], None] | None = None, timeout_s: float = 60.0) -> HoldResult:
        """Open `connections` connections spread over the workers, echo a token on each,
        and keep them open until ``release()``.

        Connections go round-robin to `addresses` (servers) and bind round-robin to the
        source addresses `sources` (127.0.0.x: each gives another ~28,000 ephemeral
        ports). ``progress(n)`` is called with the number opened so far. Raises
        TypeError/ValueError before anything opens for bad arguments, among them more
        connections than the workers' fd limit or the sources' ephemeral ports allow
        (``c10k.plan_c10k()`` plans within both).
        """
        if not self.workers:
            raise RuntimeError("this LoadGenerator is closed; start a new one")
        checks.count("connections", connections, 1, 1_000_000)
        if not addresses or not sources:
            raise ValueError("hold() needs at least one server address and one source address")
        addresses = _addresses(addresses)
        sources = self._sources(sources, addresses)
        _callable_or_none("progress", progress)
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
        _check_capacity(connections, len(self.workers), len(sources) * len(addresses),
                        f"hold() from {len(sources)} source(s) to {len(addresses)} server(s)")
        if self._holding:
            raise RuntimeError("already holding connections: release() them first")
        shares = self._split(connections, len(self.workers))
        workers = [w for w, n in zip(self.workers, shares) if n]
        opened = [0] * len(workers)

        def on_event(i: int, message: dict[str, Any]) -> None:
            if message.get("event") == "progress":
                opened[i] = message["opened"]
                if progress is not None:
                    progress(sum(opened))

        started = time.perf_counter()
        offset = 0
        for i, (w, n) in enumerate(zip(workers, shares)):
            w.send({"cmd": "hold", "addresses": [list(a[:2]) for a in addresses], "connections": n,
                    "sources": list(sources), "offset": offset, "worker": i})
            offset += n
        self._holding = workers
        held = self._collect(workers, "held", timeout_s, on_event)
        seconds = time.perf_counter() - started
        if progress is not None:
            progress(sum(h["opened"] for h in held))
        return HoldResult(
            requested=connections, opened=sum(h["opened"] for h in held), echoed=sum(h["echoed"] for h in held),
            failed=sum(h["failed"] for h in held), seconds=seconds, errors=[e for h in held for e in h["errors"]][:10],
        )

    @staticmethod
    def _sources(sources: object, addresses: list[tuple[str, int]]) -> list[str]:
        """Loopback source addresses of the servers' IP version (bind() needs the same family)."""
        if not isinstance(sources, (list, tuple)) or not all(isinstance(s, str) for s in sources):
            raise TypeError(f"sources must be a list of loopback addresses such as ['127.0.0.1', '127.0.0.2'], "
                            f"got {sources!r}")
        versions = {ipaddress.ip_address(host).version for host, _ in addresses}
        for source in sources:
            try:
                ip = ipaddress.ip_address(source)
            except ValueError:
                ip = None
            if ip is None or not ip.is_loopback or (list(sources) != ["127.0.0.1"] and versions != {ip.version}):
                raise ValueError(f"sources must be loopback addresses of the servers' IP version (127.x.y.z for "
                                 f"127.0.0.1), got {source!r}")
        return list(sources)

    def release(self, timeout_s: float = 30.0) -> None:
        """Close every connection ``hold()`` opened (waits until the workers did)."""
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
        workers, self._holding = self._holding, []
        for w in workers:
            w.send({"cmd": "release"})
        self._collect(workers, "released", timeout_s)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [w.pid for w in self.workers]

    def close(self) -> None:
        """End every worker (stdin closed, then SIGTERM and SIGKILL if it lingers) and reap it. Idempotent."""
        for w in self.workers:
            w.send_eof()
        for w in self.workers:
            w.stop(5.0)
        self.workers = []
        self._holding = []

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------- the worker process


_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}


def _connect_all(targets: list[tuple[str, int]], sources: list[str | None], n: int, *, first: int = 0,
                 on_batch: Callable[[list[socket.socket]], None] | None = None, reset: bool = True,
                 timeout_s: float = 10.0) -> tuple[list[socket.socket], list[str]]:
    """Open n non-blocking connections in batches of CONNECT_BATCH; return (sockets, errors).

    Connection k (counting from `first`) goes to targets[k % len] from sources[k % len].
    ``on_batch(socks)`` runs after each batch connected (the hold demo echoes there).
    A batch's connections that are not up after `timeout_s` count as failed. With `reset`,
    closing a socket sends RST (SO_LINGER 0).
    """
    socks: list[socket.socket] = []
    errors: list[str] = []
    with selectors.DefaultSelector() as sel:
        for start in range(0, n, CONNECT_BATCH):
            deadline = time.monotonic() + timeout_s
            pending = []
            for k in range(first + start, first + min(n, start + CONNECT_BATCH)):
                host, port = targets[k % len(targets)]
                s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                try:
                    if reset:
                        # Close with RST (SO_LINGER 0, lesson 08): thousands of finished load
                        # connections must not sit in TIME_WAIT for 60 s, holding ports of the
                        # loopback every lesson and every user of a shared machine draws from.
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    s.setblocking(False)
                    source = sources[k % len(sources)]
                    if source is not None:
                        # Choose the port at connect(), by the whole 4-tuple, not at bind().
                        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                        s.bind((source, 0))
                    code = s.connect_ex((host, port))
                    if code not in (0, errno.EINPROGRESS):
                        raise OSError(code, os.strerror(code))
                except OSError as exc:
                    s.close()
                    errors.append(f"connect: {exc}")
                    continue
                sel.register(s, selectors.EVENT_WRITE)
                pending.append(s)
            waiting = set(pending)
            while waiting and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    waiting.discard(key.fileobj)
                    sel.unregister(key.fileobj)
            batch = []
            for s in pending:
                code = 1 if s in waiting else s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if s in waiting:
                    sel.unregister(s)
                if code:
                    errors.append("connect: " + ("timed out" if s in waiting else os.strerror(code)))
                    s.close()
                else:
                    batch.append(s)
            socks += batch
            if on_batch is not None:
                on_batch(batch)
    return socks, errors


class _Client:
    """One load connection: what it must still send, what it got, when requests were due."""

    __slots__ = ("sock", "out", "inbuf", "due", "answered", "closed", "writing")

    def __init__(self, sock: socket.socket):
        self.sock, self.out, self.inbuf = sock, bytearray(), bytearray()
        self.due: collections.deque[float] = collections.deque()
        self.answered = 0
        self.closed = False
        self.writing = False  # registered for EVENT_WRITE (output is waiting)


def _take_answers(c: _Client, service: str, payload: bytes, errors: list[str]) -> int:
    """Remove complete answers from c.inbuf; return how many were complete and correct."""
    done = 0
    if service == "echo":
        size = len(payload)
        while len(c.inbuf) >= size:
            if c.inbuf[:size] != payload:
                errors.append(f"wrong echo: {bytes(c.inbuf[:40])!r}")
            else:
                done += 1
            del c.inbuf[:size]
        return done
    while (end := c.inbuf.find(b"\r\n\r\n")) >= 0:
        head = bytes(c.inbuf[:end]).lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if len(c.inbuf) < end + 4 + length:
            break
        if not head.startswith(b"http/1.1 200"):
            errors.append(f"bad answer: {head[:40]!r}")
        else:
            done += 1
        del c.inbuf[: end + 4 + length]
    return done


def _drive(socks: list[socket.socket], cfg: dict[str, Any]) -> dict[str, Any]:
    """Run the closed or open loop over connected sockets; return the counts."""
    service, duration_s, rate = cfg["service"], cfg["duration_s"], cfg["rate"]
    payload = bytes((i % 26) + 97 for i in range(cfg["payload"]))
    request = payload if service == "echo" else HTTP_REQUEST
    clients = [_Client(s) for s in socks]
    errors: list[str] = []
    latencies: list[int] = []
    sent = 0
    sel = selectors.EpollSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    open_clients = len(clients)

    def send(c: _Client, due: float) -> None:
        nonlocal sent
        c.due.append(due)
        sent += 1
        c.out += request
        flush(c)

    def flush(c: _Client) -> None:
        try:
            n = c.sock.send(c.out)
            del c.out[:n]
        except BlockingIOError:
            pass
        except OSError as exc:
            errors.append(f"send: {exc}")
            return close(c)
        if c.writing != bool(c.out):
            c.writing = bool(c.out)
            sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.writing else 0), c)

    def close(c: _Client) -> None:
        nonlocal open_clients
        if not c.closed:
            c.closed = True
            open_clients -= 1
            sel.unregister(c.sock)
            c.sock.close()

    start = time.perf_counter()
    deadline = start + duration_s
    drain_end = deadline + cfg["drain_s"]
    next_k = 0  # open loop: request k is due at start + k / rate, on connection k % n
    if not rate:
        for c in clients:
            send(c, start)
    while open_clients:
        now = time.perf_counter()
        if rate:
            while start + next_k / rate <= min(now, deadline):
                c = clients[next_k % len(clients)]
                if not c.closed:
                    send(c, start + next_k / rate)
                next_k += 1
        if now >= deadline:
            for c in clients:  # past the deadline: a connection with nothing in flight is done
                if not c.closed and not c.due:
                    close(c)
            if not open_clients or now >= drain_end:
                break
            wait = drain_end - now
        else:
            wait = deadline - now
            if rate:
                wait = min(wait, max(0.0, start + next_k / rate - now))
        for key, events in sel.select(wait):
            c = key.data
            if c.closed:
                continue
            if events & selectors.EVENT_WRITE:
                flush(c)
                if c.closed:
                    continue
            if not events & selectors.EVENT_READ:
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                data, why = b"", f"recv: {exc}"
            else:
                why = "the server closed the connection"
            if not data:
                errors.append(why)
                close(c)
                continue
            c.inbuf += data
            done = _take_answers(c, service, payload, errors)
            now = time.perf_counter()
            for _ in range(min(done, len(c.due))):
                latencies.append(int((now - c.due.popleft()) * 1e6))
                c.answered += 1
                if not rate and now < deadline:
                    send(c, now)
    unanswered = sum(len(c.due) for c in clients)
    for c in clients:
        close(c)
    sel.close()
    return {"event": "done", "sent": sent, "answered": len(latencies), "unanswered": unanswered,
            "conns_answered": sum(1 for c in clients if c.answered), "latencies_us": latencies,
            "seconds": time.perf_counter() - start,
            "error_count": len(errors), "errors": errors[:5]}


def _hold(cfg: dict[str, Any]) -> list[socket.socket]:
    """Open and echo cfg['connections'] connections; report progress; return them."""
    targets = [tuple(a) for a in cfg["addresses"]]
    sources: list[str | None] = list(cfg["sources"])
    if sources == ["127.0.0.1"]:
        sources = [None]  # let the kernel pick the source as usual
    stats = {"opened": 0, "echoed": 0, "errors": []}

    def echo_batch(batch: list[socket.socket]) -> None:
        tokens = {}
        with selectors.DefaultSelector() as sel:
            for s in batch:
                token = f"c10k {cfg['offset'] + stats['opened'] + len(tokens):07d}\n".encode()
                tokens[s] = [token, b""]
                try:
                    s.send(token)  # 13 bytes into an empty send buffer: never partial
                    sel.register(s, selectors.EVENT_READ)
                except OSError as exc:
                    stats["errors"].append(f"send: {exc}")
            deadline = time.monotonic() + 10
            waiting = len(sel.get_map())
            while waiting and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    s = key.fileobj
                    try:
                        got = s.recv(64)
                    except OSError as exc:
                        got = b""
                        stats["errors"].append(f"recv: {exc}")
                    entry = tokens[s]
                    entry[1] += got
                    if not got or len(entry[1]) >= len(entry[0]):
                        sel.unregister(s)
                        waiting -= 1
                        if entry[1] == entry[0]:
                            stats["echoed"] += 1
        stats["opened"] += len(batch)
        spawn.say({"event": "progress", "opened": stats["opened"]})

    socks, errors = _connect_all(targets, sources, cfg["connections"], first=cfg["offset"], on_batch=echo_batch)
    errs = (errors + stats["errors"])[:5]
    spawn.say({"event": "held", "opened": len(socks), "echoed": stats["echoed"],
          "failed": cfg["connections"] - len(socks), "errors": errs})
    return socks


def worker_child(config: dict[str, Any]) -> None:
    """A load worker (run by core.spawn): serve run/hold/release commands until stdin closes."""
    del config  # every setting comes with each command
    raise_nofile_limit()  # 1024 descriptors are too few for a thousand connections
    spawn.ready()
    held: list[socket.socket] = []
    commands = spawn.commands()
    for cmd in commands:
        try:
            if cmd["cmd"] == "run":
                socks, errors = _connect_all([tuple(cmd["address"])], [None], cmd["connections"], reset=cmd["reset"])
                spawn.say({"event": "connected", "connected": len(socks), "failed": cmd["connections"] - len(socks),
                           "errors": errors[:5]})
                go = next(commands, {"cmd": "exit"})
                if go["cmd"] != "go":
                    for s in socks:
                        s.close()
                    return
                spawn.say(_drive(socks, cmd))
            elif cmd["cmd"] == "hold":
                held = _hold(cmd)
            elif cmd["cmd"] == "release":
                for s in held:
                    s.close()
                held = []
                spawn.say({"event": "released"})
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            spawn.say({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
    for s in held:
        s.close()
