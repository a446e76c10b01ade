"""A lossy UDP relay: a bad network between a client and a server, on loopback.

Theory of operation. Loopback never loses, duplicates or reorders a datagram, so a lesson
about reliability needs a network that does. ``LossyRelay`` is a small UDP "middlebox": the
client sends to ``relay.address`` instead of the server; the relay forwards each datagram
to the server, and the server's replies back to the client, after deciding its fate:

* **dropped** with probability ``loss``;
* **duplicated** (sent twice) with probability ``duplicate``;
* **reordered** with probability ``reorder``: held back until the next datagram in the same
  direction has gone out (or ``hold_s`` passes), so that one overtakes it;
* **delayed** by ``delay_s`` (one way), like a longer path.

The fates come from ``FateDrawer``, a seeded random source with no I/O: the n-th datagram
in each direction gets the same fate for the same seed, whatever the timing, so an
experiment can be repeated exactly and a test can predict which datagrams vanish.

The relay runs in one background thread named with core.registry.THREAD_PREFIX (so leak checks
see it), registered like the course's servers (so ``stop_all()`` stops it), woken by a
socketpair rather than polling, and it never prints: ``.stats`` says what it did. One
client at a time: replies go to the address that sent the latest datagram. A relay needs no
new descriptor once it runs (it accepts nothing), so a process out of descriptors keeps
relaying; one that cannot even make the relay's sockets gets the OSError, and nothing leaks.
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from .addresses import loopback_address, loopback_host
from .core import checks
from .core.registry import THREAD_PREFIX, register, unregister
from .core.wakeup import WakeableSelector
from .servers import ServerError

__all__ = ["Fate", "FateDrawer", "DirectionStats", "RelayStats", "LossyRelay", "validate_probability"]

MAX_DELAY_S = 1.0  # more than this is not "a longer path" any more, and it slows lessons down
MAX_DATAGRAM = 65535  # the largest UDP payload we could ever receive, IPv6 jumbograms aside


def validate_probability(name: str, value: float) -> float:
    """Return `value` as a float if it is a probability in [0, 1]; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} must be a probability between 0 and 1 (0.2 means 20%), got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class Fate:
    """What the relay does to one datagram."""

    drop: bool
    duplicate: bool
    reorder: bool


class FateDrawer:
    """Seeded fates for a stream of datagrams (no I/O, so tests can replay it).

    Every call draws three random numbers, even for a dropped datagram, so the fate of the
    n-th datagram depends only on the seed and n.
    """

    def __init__(self, *, loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0, seed: int = 0):
        self.loss = validate_probability("loss", loss)
        self.duplicate = validate_probability("duplicate", duplicate)
        self.reorder = validate_probability("reorder", reorder)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int (the same seed gives the same fates), got {seed!r}")
        self._rng = random.Random(seed)

    def next(self) -> Fate:
        """The fate of the next datagram."""
        a, b, c = self._rng.random(), self._rng.random(), self._rng.random()
        drop = a < self.loss
        return Fate(drop=drop, duplicate=not drop and b < self.duplicate, reorder=not drop and c < self.reorder)


@dataclass
class DirectionStats:
    """Counts for one direction of the relay (client to server, or back)."""

    received: int = 0  # datagrams that reached the relay
    dropped: int = 0
    duplicated: int = 0  # datagrams sent twice
    reordered: int = 0  # datagrams another one actually overtook
    sent: int = 0  # datagrams the relay sent on (duplicates count twice)
    dropped_indexes: list[int] = field(default_factory=list)  # n-th datagram (0-based) dropped


@dataclass
class RelayStats:
    """What the relay did, per direction."""

    to_server: DirectionStats = field(default_factory=DirectionStats)
    to_client: DirectionStats = field(default_factory=DirectionStats)


class _Direction:
    """Fates, held datagram and counters for one direction."""

    def __init__(self, drawer: FateDrawer, stats: DirectionStats):
        self.drawer = drawer
        self.stats = stats
        self.held: tuple[bytes, float] | None = None  # (datagram, release time)


class LossyRelay:
    """Relay UDP between a client and `server_address`, losing, duplicating, reordering
    and delaying datagrams as told. Use it as a context manager; ``stop()`` is idempotent.

    Arguments: `loss`, `duplicate`, `reorder` are probabilities in [0, 1] applied to each
    datagram in both directions; `delay_s` is the added one-way delay (0 to 1 s); `hold_s`
    is the longest a reordered datagram waits for one to overtake it (0 to 1 s); `seed`
    makes the fates repeatable. The relay listens on `host` (127.0.0.1 or ::1) port 0:
    ``relay.address`` is where the client sends. `host` and the server must be loopback
    addresses of the same IP version (ValueError otherwise; TypeError for a wrong type).
    """

    kind = "lossy-relay"

    def __init__(
        self,
        server_address: tuple[str, int],
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay_s: float = 0.0,
        hold_s: float = 0.005,
        seed: int = 0,
        host: str = "127.0.0.1",
    ):
        if not isinstance(server_address, tuple):
            raise TypeError(f"server_address must be a (host, port) tuple, got {server_address!r}")
        loopback_address("server_address", server_address)
        family = loopback_host("host", host)
        if loopback_host("server_address host", server_address[0]) != family:
            raise ValueError(f"the relay host {host!r} and server {server_address[0]!r} must be the same IP version")
        self.delay_s = checks.seconds("delay_s", delay_s, high=MAX_DELAY_S, zero_ok=True)
        self.hold_s = checks.seconds("hold_s", hold_s, high=MAX_DELAY_S, zero_ok=True)
        self.server_address = (server_address[0], server_address[1])
        self.stats = RelayStats()
        self.errors: list[BaseException] = []
        self._dirs = {
            "to_server": _Direction(FateDrawer(loss=loss, duplicate=duplicate, reorder=reorder, seed=seed),
                                    self.stats.to_server),
            "to_client": _Direction(FateDrawer(loss=loss, duplicate=duplicate, reorder=reorder, seed=seed + 1),
                                    self.stats.to_client),
        }
        self.loss, self.duplicate, self.reorder, self.seed = loss, duplicate, reorder, seed
        self._client: Any = None
        self._queue: list[tuple[float, int, str, bytes]] = []  # (due time, tie-breaker, direction, datagram)
        self._counter = 0
        self._stopped = False
        # Every descriptor the relay thread will need is made here, the selector's epoll one
        # included: once the constructor returns, relaying needs no new descriptor, and a
        # process out of them gets EMFILE from the constructor, not a relay that dies unseen.
        made: list[Any] = []  # closed again if a later one fails (EMFILE: no descriptor left)
        try:
            made.append(socket.socket(family, socket.SOCK_DGRAM))  # faces the client
            made.append(socket.socket(family, socket.SOCK_DGRAM))  # faces the server
            made.append(WakeableSelector())
        except BaseException:
            for thing in made:
                thing.close()
            raise
        self.front, self.back, self._wakeup = made
        try:
            self.front.bind((host, 0))
            self.back.bind((host, 0))
            self.front.setblocking(False)
            self.back.setblocking(False)
            self._address = self.front.getsockname()[:2]
            self._wakeup.selector.register(self.front, selectors.EVENT_READ, "to_server")
            self._wakeup.selector.register(self.back, selectors.EVENT_READ, "to_client")
        except BaseException:
            self._close_sockets()
            raise
        self.name = f"lossy:{self._address[1]}"
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{self.name}-relay", daemon=True)
        register(self)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """Where the client should send, e.g. ('127.0.0.1', 40211)."""
        return self._address

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    # -- the relay thread
    def _run(self) -> None:
        try:
            while True:  # the selector was made with the sockets; stop() closes it
                events = self._wakeup.selector.select(self._next_wait())
                if self._wakeup.woken(events):
                    return
                for key, _ in events:
                    self._drain(key.fileobj, key.data)  # type: ignore[arg-type]
                self._release_due()
        except BaseException as exc:  # noqa: BLE001 - handed back to stop(), never printed
            self.errors.append(exc)

    def _next_wait(self) -> float | None:
        times = [t for t, *_ in self._queue[:1]]
        times += [d.held[1] for d in self._dirs.values() if d.held is not None]
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _drain(self, sock: socket.socket, direction: str) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier forward; UDP lets us ignore it
            if direction == "to_server":
                self._client = addr
            elif addr[:2] != self.server_address:
                continue  # not from our server: a stray datagram, not ours to relay
            self._on_datagram(direction, data)

    def _on_datagram(self, direction: str, data: bytes) -> None:
        d = self._dirs[direction]
        index = d.stats.received
        d.stats.received += 1
        fate = d.drawer.next()
        if fate.drop:
            d.stats.dropped += 1
            d.stats.dropped_indexes.append(index)
            return
        copies = 2 if fate.duplicate else 1
        d.stats.duplicated += copies - 1
        if d.held is not None:  # this datagram overtakes the one held back
            held, _ = d.held
            d.held = None
            d.stats.reordered += 1
            self._schedule(direction, data, copies)
            self._schedule(direction, held, 1)
            return
        if fate.reorder:
            self._schedule(direction, data, copies - 1)
            d.held = (data, time.monotonic() + self.hold_s)
            return
        self._schedule(direction, data, copies)

    def _schedule(self, direction: str, data: bytes, copies: int) -> None:
        due = time.monotonic() + self.delay_s
        for _ in range(copies):
            self._counter += 1
            heapq.heappush(self._queue, (due, self._counter, direction, data))

    def _release_due(self) -> None:
        now = time.monotonic()
        for direction, d in self._dirs.items():
            if d.held is not None and d.held[1] <= now:  # nobody overtook it in time
                data, d.held = d.held[0], None
                self._schedule(direction, data, 1)
        while self._queue and self._queue[0][0] <= now:
            _, _, direction, data = heapq.heappop(self._queue)
            self._send(direction, data)

    def _send(self, direction: str, data: bytes) -> None:
        if direction == "to_server":
            sock, dest = self.back, self.server_address
        else:
            sock, dest = self.front, self._client
        if dest is None:
            return
        try:
            sock.sendto(data, dest)
            self._dirs[direction].stats.sent += 1
        except (BlockingIOError, ConnectionRefusedError):
            pass  # a full buffer or a stale ICMP error: UDP may lose it, and so may we

    # -- life cycle
    def _close_sockets(self) -> None:
        for thing in (self._wakeup, self.front, self.back):
            thing.close()

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop relaying, close the sockets, join the thread. Safe to call twice.

        Datagrams still delayed or held are discarded (the network lost them). Raises
        ServerError if the relay thread failed (unless raise_errors is False), and ValueError,
        before stopping anything, if `timeout_s` is not a number of seconds in [0, 600].
        """
        checks.seconds("timeout_s", timeout_s, high=600.0, zero_ok=True)
        if not self._stopped:
            self._stopped = True
            self._wakeup.wake()
            self._thread.join(timeout_s)
            if self._thread.is_alive():  # cannot happen unless the thread is wedged
                warnings.warn(f"{self.name}: relay thread still running after {timeout_s} s", ResourceWarning,
                              stacklevel=2)
            self._close_sockets()
            unregister(self)
        if raise_errors and self.errors:
            errors, self.errors = self.errors, []
            raise ServerError(self.name, errors) from errors[0]

    def __enter__(self) -> LossyRelay:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(raise_errors=exc_type is None)

    def __del__(self) -> None:
        if not getattr(self, "_stopped", True):
            warnings.warn(f"unstopped relay {self.name}", ResourceWarning, stacklevel=1)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<LossyRelay {self.name} -> {self.server_address[1]} loss={self.loss} dup={self.duplicate} "
                f"reorder={self.reorder} delay_s={self.delay_s} {state}>")
