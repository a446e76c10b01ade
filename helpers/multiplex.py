"""Measure what one wait costs with select, poll and epoll, against the number of idle fds.

Theory of operation. A server that multiplexes many connections asks the kernel, again and
again, "which of these fds can I read now?". The three Linux answers differ in where the
list of fds lives (man 2 select, man 2 poll, man 7 epoll):

* ``select(2)`` takes bit sets of fd numbers, copies them into the kernel on every call,
  checks every fd up to the highest one, and writes the sets back. The sets hold
  ``FD_SETSIZE`` = 1024 bits, so no fd numbered 1024 or more can be watched at all
  (CPython refuses it with ``ValueError: filedescriptor out of range in select()``).
* ``poll(2)`` takes an array of ``struct pollfd``: no limit on fd numbers, but the whole
  array is still copied in and every entry checked on every call.
* ``epoll`` keeps the interest list in the kernel (``epoll_ctl(2)`` once per fd). When an
  fd becomes ready, the kernel's callback puts it on a ready list, and ``epoll_wait(2)``
  returns only that list: its cost follows the number of *ready* fds, not watched ones.

``wait_cost()`` sets up ``idle_fds`` sockets nobody writes to, plus one socket with a byte
waiting (so every wait finds exactly one ready fd), and times ``waits`` zero-timeout waits
with ``time.perf_counter``. Idle fds come from ``socket.socketpair()``: both ends of a pair
are idle, so ``n`` idle fds cost ``n`` descriptors. The soft ``RLIMIT_NOFILE`` (often 1024)
is raised to the hard limit for the measurement and restored after, and every fd is closed.

The numbers include Python's per-call work: ``select.select`` converts its list of fds into
an ``fd_set`` and back on every call (a C program must rebuild its sets each time too,
because select overwrites them), while a ``select.poll`` object keeps its ``pollfd`` array
between calls, so what grows with n in poll's cost is the kernel's copy and scan.

``crowd_below()`` fills every free fd number below 1024 with placeholder sockets, so that the
next socket the process opens lands above select's wall (lesson 14). The kernel hands out
the lowest free number each time (``man 2 open``), so that is the whole trick; on the way
it records whether the soft ``RLIMIT_NOFILE`` stopped the filling first (EMFILE). Numbers
belong to the whole process, not to one thread: ``Crowd.connection()`` makes the lesson's
connection above the wall and fills again any number another thread freed meanwhile.

Two smaller tools serve the lesson's epoll flag demos: ``event_names()`` spells out an
event mask (``EPOLLIN|EPOLLRDHUP``), and ``wakeups()`` counts how many threads, each blocked
in its own epoll on one listening socket, one connection wakes with and without
``EPOLLEXCLUSIVE``.
"""

from __future__ import annotations

import errno
import math
import os
import resource
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from .core import checks
from .core.features import require_linux
from .core.registry import THREAD_PREFIX

__all__ = [
    "FD_SETSIZE",
    "MECHANISMS",
    "WaitCost",
    "SelectLimitError",
    "fd_headroom",
    "more_fds",
    "idle_sockets",
    "wait_cost",
    "sweep",
    "log_counts",
    "select_capacity",
    "Crowd",
    "crowd_below",
    "event_names",
    "Wakeups",
    "wakeups",
]

#: select()'s fd_set size on Linux (glibc's FD_SETSIZE): fds numbered >= 1024 cannot be watched.
FD_SETSIZE = 1024

#: The mechanisms wait_cost() knows, in the order lessons show them.
MECHANISMS = ("select", "poll", "epoll")

#: Descriptors kept free beyond a measurement's own (the caller's files, epoll's own fd, ...).
_SPARE_FDS = 64


class SelectLimitError(ValueError):
    """select() was asked to watch an fd numbered FD_SETSIZE (1024) or more."""


@dataclass(frozen=True)
class WaitCost:
    """One measurement: `waits` zero-timeout waits over `idle_fds` idle fds plus one ready fd.

    ``median_us`` is the median time of one wait in microseconds; ``highest_fd`` the largest
    fd number watched (what select's limit is about).
    """

    mechanism: str
    idle_fds: int
    waits: int
    median_us: float
    p90_us: float
    highest_fd: int


def fd_headroom() -> int:
    """How many more fds this process could open after raising its soft limit to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    return max(0, hard - _open_fd_count() - _SPARE_FDS)


def _is_int(value: object) -> bool:
    """True for an int that is not a bool (isinstance(True, int) is True)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def more_fds(needed: int) -> Iterator[int]:
    """Let this process open `needed` more fds: raise the soft RLIMIT_NOFILE, restore it after.

    Yields the soft limit in force. Raises ValueError, naming the hard limit, when even the
    hard limit leaves no room for `needed` more fds (an unprivileged process cannot raise it).
    """
    if not _is_int(needed) or needed < 0:
        raise ValueError(f"needed must be an int >= 0 (fds), got {needed!r}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _open_fd_count() + needed + _SPARE_FDS
    if hard != resource.RLIM_INFINITY and want > hard:
        raise ValueError(
            f"{needed} more fds do not fit: the hard RLIMIT_NOFILE is {hard} and {_open_fd_count()} "
            f"fds are open; ask for at most {fd_headroom()} (only root can raise the hard limit)"
        )
    raised = soft != resource.RLIM_INFINITY and want > soft
    if raised:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        if raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def idle_sockets(n: int) -> Iterator[list[socket.socket]]:
    """Yield `n` connected sockets that nobody writes to (ends of socketpairs); close all after.

    Call it inside ``more_fds(n)`` when n is large: the default soft limit is often 1024.
    """
    if not _is_int(n) or n < 0:
        raise ValueError(f"the number of idle fds must be an int >= 0, got {n!r}")
    with ExitStack() as stack:
        out: list[socket.socket] = []
        for _ in range(math.ceil(n / 2)):
            a, b = socket.socketpair()
            stack.callback(a.close)
            stack.callback(b.close)
            out += [a, b]
        del out[n:]  # an odd n leaves one end unwatched (and still closed on exit)
        yield out


def _waiter(mechanism: str, fds: list[int], stack: ExitStack) -> Callable[[], list]:
    """A zero-timeout wait over `fds` with `mechanism`, set up once (poll and epoll register here)."""
    if mechanism == "select":
        highest = max(fds)
        if highest >= FD_SETSIZE:
            try:
                select.select(fds, [], [], 0)
            except ValueError as exc:
                raise SelectLimitError(
                    f"select() cannot watch fd {highest}: its fd_set has FD_SETSIZE = {FD_SETSIZE} bits, so "
                    f"fd numbers must be below {FD_SETSIZE} (CPython says: {exc}); use poll or epoll"
                ) from exc
            raise AssertionError(f"select() accepted fd {highest} >= FD_SETSIZE")  # not Linux's select
        return lambda: select.select(fds, [], [], 0)[0]
    if mechanism == "poll":
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return lambda: poller.poll(0)
    if mechanism == "epoll":
        ep = select.epoll()
        stack.callback(ep.close)
        for fd in fds:
            ep.register(fd, select.EPOLLIN)   # epoll_ctl(EPOLL_CTL_ADD), once per fd
        return lambda: ep.poll(0)
    raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")


def wait_cost(mechanism: str, idle_fds: int, waits: int = 300, *, budget_s: float | None = None) -> WaitCost:
    """Time `waits` zero-timeout waits with `mechanism` over `idle_fds` idle fds and one ready fd.

    Args:
        mechanism: "select", "poll" or "epoll".
        idle_fds: sockets watched that never become readable (0 or more).
        waits: waits to time (1-100000); the median of their times is reported.
        budget_s: stop timing after this many seconds (0-3600) even if fewer waits ran (at least 5 run).

    Returns a WaitCost. Raises SelectLimitError (a ValueError) when select would have to
    watch an fd numbered 1024 or more, ValueError for a bad argument or when the hard fd
    limit leaves no room, and AssertionError if a wait does not report exactly the one
    ready fd (an "idle" fd that is not idle would make the measurement meaningless).
    """
    require_linux("epoll and the fd limits of this lesson")
    _check_run(mechanism, idle_fds, waits, budget_s)
    with ExitStack() as stack:
        stack.enter_context(more_fds(idle_fds + 4))
        idle = stack.enter_context(idle_sockets(idle_fds))
        ready, writer = socket.socketpair()
        stack.callback(ready.close)
        stack.callback(writer.close)
        writer.send(b"!")                       # `ready` stays readable: nobody reads it
        fds = [s.fileno() for s in idle] + [ready.fileno()]
        wait = _waiter(mechanism, fds, stack)
        got = wait()
        if len(got) != 1:
            raise AssertionError(f"{mechanism} reported {len(got)} ready fds, expected exactly 1: {got!r}")
        times: list[float] = []
        clock = time.perf_counter
        deadline = None if budget_s is None else clock() + budget_s
        for i in range(waits):
            started = clock()
            wait()
            ended = clock()
            times.append(ended - started)
            if deadline is not None and ended > deadline and i >= 4:
                break
        times.sort()
        return WaitCost(
            mechanism=mechanism,
            idle_fds=idle_fds,
            waits=len(times),
            median_us=statistics.median(times) * 1e6,
            p90_us=times[int(0.9 * (len(times) - 1))] * 1e6,
            highest_fd=max(fds),
        )


def _check_run(mechanism: str, idle_fds: int, waits: int, budget_s: float | None) -> None:
    """wait_cost()'s argument checks, also run by sweep() before its first measurement."""
    if not isinstance(mechanism, str) or mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    if not _is_int(idle_fds) or idle_fds < 0:
        raise ValueError(f"idle_fds must be an int >= 0, got {idle_fds!r}")
    if not _is_int(waits) or not 1 <= waits <= 100_000:
        raise ValueError(f"waits must be an int in 1..100000, got {waits!r}")
    if budget_s is not None:
        checks.seconds("budget_s", budget_s, high=3600, zero_ok=True)


def select_capacity() -> int:
    """The most idle fds ``wait_cost("select", n)`` can watch now without an fd numbered >= 1024.

    The kernel hands out the lowest free fd number each time, so wait_cost's idle sockets
    (n, rounded up to whole pairs) fill the free numbers from the bottom and its ready
    socket takes the next one: that one must be below 1024. Every fd this process already
    holds below 1024 takes a number away from select: that is the lesson.
    """
    with socket.socket(socket.AF_UNIX) as probe:    # takes the lowest free fd number...
        listing_fd = probe.fileno()
    open_now = {int(name) for name in os.listdir("/proc/self/fd")}
    open_now.discard(listing_fd)                    # ...which the listing itself held meanwhile
    free_below = FD_SETSIZE - sum(fd < FD_SETSIZE for fd in open_now)
    return max(0, (free_below - 1) // 2 * 2)


@dataclass
class Crowd:
    """Placeholder sockets that hold every free fd number below `wall` (see crowd_below()).

    ``emfile`` is the OSError that stopped the filling under the soft limit as it was, if one
    did, after ``opened_at_emfile`` sockets with ``highest_at_emfile`` the highest fd; then
    the soft limit was raised from ``soft_before`` to the hard limit. ``refills`` counts the
    times connection() found a number below the wall freed again and filled it.
    """

    wall: int
    placeholders: list[socket.socket]
    soft_before: int
    emfile: OSError | None = None
    opened_at_emfile: int = 0
    highest_at_emfile: int = -1
    refills: int = 0

    @property
    def top(self) -> socket.socket:
        """The placeholder with the highest fd number (wall - 1 unless something else holds it)."""
        return max(self.placeholders, key=lambda s: s.fileno())

    def fill(self) -> None:
        """Open placeholders on every number below the wall that is free now."""
        while True:
            sock = socket.socket()
            if sock.fileno() >= self.wall:  # every number below the wall is taken: this one is not a placeholder
                sock.close()
                return
            self.placeholders.append(sock)

    def connection(self, tries: int = 5) -> tuple[socket.socket, socket.socket, socket.socket]:
        """A listener on 127.0.0.1 and both ends of one TCP connection to it, every fd at or above the wall.

        Fd numbers belong to the whole process: if another thread (in Jupyter, the kernel's own)
        closed one below the wall since the filling, a new socket takes it. Then the three sockets
        are closed, the gap is filled again and the connection remade (counted in ``refills``);
        RuntimeError, with the numbers, if `tries` attempts all landed below the wall.
        """
        checks.count("tries", tries, 1, 100)
        landed: list[int] = []
        for _ in range(tries):
            with ExitStack() as made:
                listener = made.enter_context(socket.create_server(("127.0.0.1", 0)))
                client = made.enter_context(socket.create_connection(listener.getsockname()))
                conn = made.enter_context(listener.accept()[0])
                landed = [s.fileno() for s in (listener, client, conn)]
                if min(landed) >= self.wall:
                    made.pop_all()
                    return listener, client, conn
            self.refills += 1
            self.fill()
        raise RuntimeError(f"{tries} connections in a row got an fd below {self.wall} (the last: {landed}): "
                           "another thread of this process keeps closing descriptors below the wall")


@contextmanager
def crowd_below(wall: int = FD_SETSIZE) -> Iterator[Crowd]:
    """Open placeholder sockets until every fd number below `wall` is taken; close them after.

    The next socket this process opens then gets `wall` or more. The filling starts under the
    soft RLIMIT_NOFILE as it is and records the EMFILE if that stops it (a soft limit of 1024
    does), then raises the soft limit to the hard one and goes on. On exit every placeholder
    is closed and the soft limit restored. ValueError, naming the hard limit, when the hard
    limit leaves no room above `wall` (only root can raise it).
    """
    require_linux("descriptor numbers and RLIMIT_NOFILE")
    if not _is_int(wall) or not 8 <= wall <= 1 << 20:
        raise ValueError(f"wall must be an fd number (an int) between 8 and {1 << 20}, got {wall!r}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wall + _SPARE_FDS:
        raise ValueError(f"the hard RLIMIT_NOFILE is {hard}: this process cannot open fd {wall} and more "
                         f"(it needs {wall + _SPARE_FDS}; only root can raise the hard limit)")
    with ExitStack() as stack:
        crowd = Crowd(wall, [], soft)
        stack.callback(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        stack.callback(_close_all, crowd.placeholders)
        while True:  # until a new socket would get `wall` or more, or the soft limit says EMFILE
            try:
                crowd.fill()
                break
            except OSError as exc:
                if exc.errno != errno.EMFILE or crowd.emfile is not None:
                    raise
                crowd.emfile, crowd.opened_at_emfile = exc, len(crowd.placeholders)
                crowd.highest_at_emfile = max((s.fileno() for s in crowd.placeholders), default=-1)
                if crowd.highest_at_emfile >= wall - 1:
                    break
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # fill on above the soft limit
        if soft != resource.RLIM_INFINITY and soft < wall + _SPARE_FDS:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # room for the sockets above the wall
        yield crowd


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def log_counts(largest: int) -> list[int]:
    """Idle-fd counts for a log-scale axis: 1, 3, 10, 30, ... up to half of `largest`, then `largest`."""
    if not _is_int(largest) or largest < 1:
        raise ValueError(f"the largest count must be an int >= 1, got {largest!r}")
    out, decade = [], 1
    while decade < largest:
        out += [c for c in (decade, 3 * decade) if 2 * c <= largest]
        decade *= 10
    return out + [largest]


def sweep(
    counts: Iterable[int],
    mechanisms: Iterable[str] = MECHANISMS,
    waits: int = 300,
    *,
    budget_s: float | None = 0.25,
    progress: Callable[[Iterable], Iterable] = iter,
) -> dict[str, dict[int, WaitCost | SelectLimitError]]:
    """wait_cost() for every mechanism and count: ``{mechanism: {count: WaitCost}}``.

    Where select cannot run (an fd >= 1024) the entry is the SelectLimitError, and select is
    not tried at larger counts. `progress` wraps the list of runs (pass ``tqdm``). Every
    argument is checked before the first measurement (ValueError, as wait_cost() raises).
    """
    if any(isinstance(a, (str, bytes)) or not isinstance(a, Iterable) for a in (counts, mechanisms)):
        raise ValueError(f"counts and mechanisms must be lists, such as [1, 10] and ['epoll'], got {counts!r}, "
                         f"{mechanisms!r}")
    if not callable(progress):
        raise ValueError(f"progress must be a function wrapping an iterable (such as tqdm), got {progress!r}")
    mechs, counts = list(mechanisms), list(counts)
    for m in mechs:
        _check_run(m, 0, waits, budget_s)
    for n in counts:
        _check_run(MECHANISMS[0], n, waits, budget_s)
    runs = [(m, n) for n in sorted(set(counts)) for m in mechs]
    out: dict[str, dict[int, WaitCost | SelectLimitError]] = {m: {} for m in mechs}
    for mechanism, n in progress(runs):
        table = out[mechanism]
        if any(isinstance(v, SelectLimitError) for v in table.values()):
            continue
        try:
            table[n] = wait_cost(mechanism, n, waits, budget_s=budget_s)
        except SelectLimitError as exc:
            table[n] = exc
    return out


# --------------------------------------------------------------------------- epoll flags

_EVENT_BITS = [
    name for name in ("EPOLLIN", "EPOLLPRI", "EPOLLOUT", "EPOLLERR", "EPOLLHUP", "EPOLLRDHUP")
    if hasattr(select, name)
]


def event_names(events: int | list[tuple[int, int]]) -> str:
    """Name the bits of an epoll event mask, e.g. ``"EPOLLIN|EPOLLRDHUP"``; ``"-"`` for nothing.

    Accepts a mask or what ``epoll.poll()`` returns (a list of (fd, mask) pairs: their masks
    are OR-ed). Unknown bits are shown in hex. ValueError for anything else (a negative
    mask, a bool, a list that is not of (fd, mask) pairs).
    """
    pairs = events if isinstance(events, list) else [(None, events)]
    if not all(isinstance(p, tuple) and len(p) == 2 and _is_int(p[1]) and p[1] >= 0 for p in pairs):
        raise ValueError(f"events must be an epoll mask (an int >= 0) or a list of (fd, mask) pairs, got {events!r}")
    mask = 0
    for _, bits in pairs:
        mask |= bits
    names = [n for n in _EVENT_BITS if mask & getattr(select, n)]
    rest = mask & ~sum(getattr(select, n) for n in _EVENT_BITS)
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "-"


@dataclass(frozen=True)
class Wakeups:
    """How many of `waiters` threads, each blocked in its own epoll on one listening socket,
    woke for one incoming connection. ``all_waiting`` says whether every thread was seen
    blocked in epoll_wait (from /proc/self/task/TID/wchan) before the connection came."""

    exclusive: bool
    waiters: int
    woke: int
    all_waiting: bool


def _blocked_in_epoll(tid: int) -> bool:
    try:
        with open(f"/proc/self/task/{tid}/wchan") as f:
            return "epoll" in f.read()
    except OSError:
        return False


#: After the first waiter wakes, how long to let the others report before waking them all:
#: the kernel runs every wake-up callback of one event in a single pass, within microseconds.
_SETTLE_S = 0.02


def wakeups(exclusive: bool, waiters: int = 4, timeout_s: float = 2.0) -> Wakeups:
    """Count the threads one connection wakes, with or without EPOLLEXCLUSIVE (Linux 4.5+).

    Each of `waiters` threads (2-16) has its own epoll instance watching the same listening
    socket on 127.0.0.1 (EPOLLIN, plus EPOLLEXCLUSIVE if `exclusive`) and a shared stop
    socket, and blocks in epoll_wait. Once /proc shows every thread asleep there (or after
    `timeout_s`), one client connects. Shortly after the first thread reports the listener,
    a byte on the stop socket wakes the rest; a thread counts as woken by the connection if
    its events included the listener. Without EPOLLEXCLUSIVE the kernel wakes every waiter
    (the "thundering herd"); with it, man 7 epoll promises "one or more". Threads are joined
    and every socket closed before returning.
    """
    require_linux("EPOLLEXCLUSIVE")
    if not isinstance(waiters, int) or not 2 <= waiters <= 16:
        raise ValueError(f"waiters must be an int in 2..16, got {waiters!r}")
    if not isinstance(exclusive, bool):
        raise ValueError(f"exclusive must be True or False, got {exclusive!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0.1 <= timeout_s <= 5:
        raise ValueError(f"timeout_s must be in 0.1..5 s, got {timeout_s!r}")
    flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
    woke: list[bool] = []
    tids: list[int] = []
    lock = threading.Lock()
    first = threading.Event()
    with ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        listener.setblocking(False)
        stop_r, stop_w = socket.socketpair()
        stack.callback(stop_r.close)
        stack.callback(stop_w.close)

        def wait_once() -> None:
            with select.epoll() as ep:
                ep.register(listener.fileno(), flags)
                ep.register(stop_r.fileno(), select.EPOLLIN)
                with lock:
                    tids.append(threading.get_native_id())
                events = ep.poll(timeout_s)
            got = any(fd == listener.fileno() for fd, _ in events)
            with lock:
                woke.append(got)
            if got:
                first.set()

        threads = [
            threading.Thread(target=wait_once, name=f"{THREAD_PREFIX}-epoll-waiter-{i}", daemon=True)
            for i in range(waiters)
        ]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                with lock:
                    seen = list(tids)
                if len(seen) == waiters and all(_blocked_in_epoll(tid) for tid in seen):
                    break
                time.sleep(0.001)
            with lock:
                all_waiting = len(tids) == waiters and all(_blocked_in_epoll(tid) for tid in tids)
            with socket.create_connection(listener.getsockname()):
                first.wait(timeout_s)
                time.sleep(_SETTLE_S)
                conn, _ = listener.accept()
                conn.close()
        finally:
            stop_w.send(b"!")                   # wake every thread still asleep
            for t in threads:
                t.join()
    return Wakeups(exclusive=exclusive, waiters=waiters, woke=sum(woke), all_waiting=all_waiting)
