"""TIME_WAIT and port reuse (lesson 07): wait for a socket state, pack the per-socket port
range, read the port sysctls, and the ephemeral-port arithmetic.

Theory of operation. The side of a TCP connection that closes first (the active closer)
ends in TIME_WAIT for TCP_TIMEWAIT_LEN, 60 s on Linux (``include/net/tcp.h``; a constant,
not a sysctl). The kernel keeps a small "timewait socket" that owns no file descriptor and
belongs to no process, so it shows in /proc/net/tcp with inode 0 and a TIME_WAIT timer.
While it lives, it keeps its local port and its 4-tuple:

* bind() to that port fails with EADDRINUSE unless both the timewait socket (it inherits
  SO_REUSEADDR from the socket it replaced) and the new socket set SO_REUSEADDR;
* connect() choosing a port (bind to port 0 or no bind) skips ports whose 4-tuple to the
  same destination is in TIME_WAIT, unless ``net.ipv4.tcp_tw_reuse`` allows reusing it
  (0 never, 1 always, 2 loopback only) once ``tcp_tw_reuse_delay`` ms have passed;
* connect() from a port the program bound itself may take over the TIME_WAIT 4-tuple when
  TCP timestamps make it safe (``tcp_twsk_unique()`` in ``net/ipv4/tcp_ipv4.c``).

The notebook writes the socket calls out; this module only watches /proc and does the
arithmetic. It never writes a sysctl.
"""

from __future__ import annotations

import math
import random
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path

from . import checks
from .diagrams import SequenceDiagram
from .features import kernel_version, require_linux
from .observe import SocketEntry, SocketTable, TcpState, _check_addr, socket_table

__all__ = [
    "TIME_WAIT_S",
    "IP_LOCAL_PORT_RANGE",
    "PORT_RANGE_KERNEL",
    "state_of",
    "connection_rows",
    "wait_for_state",
    "wait_gone",
    "wait_for_count",
    "has_port_range_option",
    "pack_port_range",
    "unpack_port_range",
    "read_sysctl",
    "local_port_range",
    "tw_reuse",
    "tw_reuse_delay_ms",
    "free_port_window",
    "window_starts",
    "ports_held",
    "exhaustion_time_s",
    "close_diagram",
    "matrix_html",
]

#: TCP_TIMEWAIT_LEN in include/net/tcp.h: how long Linux keeps a socket in TIME_WAIT (s).
TIME_WAIT_S = 60

#: The per-socket port range option (<linux/in.h>, Linux 6.3); Python may lack the name.
IP_LOCAL_PORT_RANGE: int = getattr(socket, "IP_LOCAL_PORT_RANGE", 51)

#: The first kernel with IP_LOCAL_PORT_RANGE ("inet: Add IP_LOCAL_PORT_RANGE socket option").
PORT_RANGE_KERNEL = (6, 3)

_SYSCTL = Path("/proc/sys/net/ipv4")
_POLL_S = 0.005  # how often wait_for_state() re-reads /proc/net/tcp (s)

Address = tuple[str, int]


# --------------------------------------------------------------------------- watching states


def state_of(local: Address, remote: Address) -> str | None:
    """The state name of the socket with this 4-tuple now, or None if the table has no such row."""
    rows = socket_table(local=local, remote=remote)
    return rows[0].state.name if rows else None


def connection_rows(a: Address, b: Address) -> SocketTable:
    """Both ends of the connection between addresses `a` and `b`, as far as they still exist."""
    return SocketTable(list(socket_table(local=a, remote=b)) + list(socket_table(local=b, remote=a)))


def wait_for_state(local: Address, remote: Address, state: str | TcpState, *, timeout_s: float = 2.0) -> SocketEntry:
    """Wait until the socket with this 4-tuple shows `state` in /proc/net/tcp; return its row.

    Closing is asynchronous (the FIN and its ACK cross the loopback in softirq context), so a
    lesson that just called close() waits here rather than sleeping a guessed time.
    Raises TimeoutError naming the rows actually seen, and ValueError for a bad timeout.
    """
    require_linux("the socket table (/proc/net/tcp)")
    want = TcpState.parse(state)
    timeout_s = checks.seconds("timeout_s", timeout_s, high=60)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = socket_table(local=local, remote=remote)
        for row in rows:
            if row.state is want:
                return row
        if time.monotonic() >= deadline:
            seen = ", ".join(rows.states()) or "no socket at all"
            raise TimeoutError(
                f"{local} -> {remote} did not reach {want.name} within {timeout_s} s; the table shows: {seen}"
            )
        time.sleep(_POLL_S)


def wait_gone(local: Address, remote: Address, *, timeout_s: float = 2.0) -> SocketTable:
    """Wait until no socket with this 4-tuple is left in /proc/net/tcp; return the empty table.

    Raises TimeoutError naming the states still there; TypeError/ValueError for a timeout
    that is not a number of seconds in (0, 120] (TIME_WAIT lasts 60 s).
    """
    require_linux("the socket table (/proc/net/tcp)")
    timeout_s = checks.seconds("timeout_s", timeout_s, high=120)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = socket_table(local=local, remote=remote)
        if not rows:
            return rows
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{local} -> {remote} is still in the table after {timeout_s} s: {rows.states()}")
        time.sleep(_POLL_S)


def wait_for_count(
    state: str | TcpState, count: int, *, remote: Address | None = None, timeout_s: float = 2.0
) -> SocketTable:
    """Wait until at least `count` sockets connected to `remote` show `state`; return them.

    One table read per poll, so it is quick even when the namespace holds many sockets.
    Raises TimeoutError with the states seen; ValueError for a bad count or a timeout that
    is not a number of seconds in (0, 120].
    """
    require_linux("the socket table (/proc/net/tcp)")
    want = TcpState.parse(state)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive number of sockets, got {count!r}")
    timeout_s = checks.seconds("timeout_s", timeout_s, high=120)
    _check_addr("remote", remote)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = socket_table(remote=remote)
        matching = SocketTable(r for r in rows if r.state is want)
        if len(matching) >= count:
            return matching
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"only {len(matching)} of {count} sockets to {remote} reached {want.name} within {timeout_s} s; "
                f"the table shows: {rows.states()}"
            )
        time.sleep(_POLL_S)


# --------------------------------------------------------------------------- IP_LOCAL_PORT_RANGE


def has_port_range_option() -> bool:
    """True if this kernel knows IP_LOCAL_PORT_RANGE (Linux >= 6.3)."""
    return kernel_version() >= PORT_RANGE_KERNEL


def pack_port_range(lo: int, hi: int) -> bytes:
    """The setsockopt(IPPROTO_IP, IP_LOCAL_PORT_RANGE) value: a u32 ``lo | hi << 16``.

    It goes as 4 bytes, because Python passes an int option as a signed C int and any
    `hi` >= 32768 overflows it. lo = hi = 0 clears the option. Raises ValueError for ports
    outside 0-65535 or lo > hi (the kernel answers EINVAL to that).
    """
    _check_ports(lo, hi)
    if lo > hi:
        raise ValueError(f"the range is empty: lo={lo} > hi={hi}; the kernel would answer EINVAL")
    return struct.pack("=I", lo | hi << 16)


def _check_ports(lo: int, hi: int, prefix: str = "") -> None:
    for name, port in (("lo", lo), ("hi", hi)):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"{prefix}{name} must be a port number 0-65535, got {port!r}")


def unpack_port_range(raw: bytes) -> tuple[int, int]:
    """Decode getsockopt(IPPROTO_IP, IP_LOCAL_PORT_RANGE, 4) into (lo, hi); ValueError
    unless `raw` is exactly 4 bytes, TypeError for a non-bytes value."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"unpack_port_range() needs the 4 bytes of getsockopt(), got {type(raw).__name__} {raw!r}")
    if len(raw) != 4:
        raise ValueError(f"IP_LOCAL_PORT_RANGE is a 4-byte u32, got {len(raw)} bytes")
    (value,) = struct.unpack("=I", raw)
    return value & 0xFFFF, value >> 16


# --------------------------------------------------------------------------- sysctls (read only)


def read_sysctl(name: str) -> str:
    """Read /proc/sys/net/ipv4/<name> (never written here). FileNotFoundError names the kernel gap."""
    require_linux(f"net.ipv4.{name}")
    if not isinstance(name, str) or not name or "/" in name or "\0" in name or name.startswith("."):
        raise ValueError(f"a net.ipv4 sysctl name such as 'tcp_tw_reuse', got {name!r}")
    path = _SYSCTL / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: this kernel has no net.ipv4.{name}") from None


def local_port_range() -> tuple[int, int]:
    """net.ipv4.ip_local_port_range: the (first, last) port connect() and bind(0) choose from."""
    lo, hi = (int(x) for x in read_sysctl("ip_local_port_range").split())
    return lo, hi


def tw_reuse() -> int:
    """net.ipv4.tcp_tw_reuse: 0 never, 1 always, 2 (the default) loopback traffic only."""
    return int(read_sysctl("tcp_tw_reuse"))


def tw_reuse_delay_ms() -> int | None:
    """net.ipv4.tcp_tw_reuse_delay in ms; None on kernels without it, where the delay is
    one second counted in whole seconds (so 1 to 2 s)."""
    try:
        return int(read_sysctl("tcp_tw_reuse_delay"))
    except FileNotFoundError:
        return None


def window_starts(used: set[int], lo: int, hi: int, size: int) -> list[int]:
    """Every p in [lo, hi - size + 1] such that ports p .. p + size - 1 are all outside `used`."""
    _check_ports(lo, hi)
    _check_size(size, 65536)
    if not all(isinstance(p, int) for p in used):
        raise TypeError(f"used must hold port numbers (ints), got {sorted(map(repr, used))[:5]}")
    inside = sorted(p for p in used if lo <= p <= hi)
    starts: list[int] = []
    for gap_lo, gap_hi in zip([lo - 1, *inside], [*inside, hi + 1]):  # free ports lie strictly between
        starts += range(gap_lo + 1, gap_hi - size + 1)
    return starts


def free_port_window(
    size: int, *, within: tuple[int, int] | None = None, toward: tuple[str, int] | None = None
) -> tuple[int, int]:
    """A random window of `size` consecutive ports, inside the ephemeral range, that no TCP
    socket in this network namespace uses as its local port right now: (lo, hi) inclusive.

    The per-socket range only narrows net.ipv4.ip_local_port_range (a range outside it is
    ignored), so the window is taken from it. Every free window is considered and one is
    picked at random, which keeps two learners apart on a shared host.

    A range crowded with other programs' connections (thousands of clients in TIME_WAIT,
    say: connect() takes even ports first, so no 10 consecutive ports may be free) can have
    no such window. Given `toward`, the server our connects will go to, the window may then
    include ports whose only users are connections to other destinations: the kernel lends
    a port to connect() whenever the 4-tuple differs (unless the port was bound explicitly).
    ValueError for a size outside 1-1000 or ports outside 0-65535, TypeError for a `within`
    that is not a (lo, hi) tuple or a `toward` that is not a (host, port) tuple.
    """
    require_linux("the socket table (/proc/net/tcp)")
    _check_size(size, 1000)
    if within is not None and not (isinstance(within, tuple) and len(within) == 2):
        raise TypeError(f"within must be a (lo, hi) tuple of ports such as (40000, 40999), got {within!r}")
    toward = _check_addr("toward", toward)
    lo, hi = within if within is not None else local_port_range()
    _check_ports(lo, hi, "within: ")
    if hi - lo + 1 < size:
        raise ValueError(f"the range {lo}-{hi} holds fewer than {size} ports")
    table = socket_table()
    used = {e.local[1] for e in table}
    starts = window_starts(used, lo, hi, size)
    if not starts and toward is not None:
        conflicting = {e.local[1] for e in table if e.remote == toward or e.remote[1] == 0}
        starts = window_starts(conflicting, lo, hi, size)
    if not starts:
        waiting = sum(e.state is TcpState.TIME_WAIT for e in table)
        busy = sum(lo <= p <= hi for p in used)
        raise RuntimeError(
            f"no {size} consecutive free ports in {lo}-{hi}: {busy} of its ports are in use "
            f"({waiting} sockets in TIME_WAIT); wait a minute for TIME_WAIT to expire"
        )
    start = random.SystemRandom().choice(starts)
    return start, start + size - 1


def _check_size(size: int, most: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= most:
        raise ValueError(f"size must be 1-{most} ports, got {size!r}")


# --------------------------------------------------------------------------- arithmetic


def _check_rate(rate_per_s: float) -> float:
    if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, (int, float)) or not math.isfinite(rate_per_s):
        raise ValueError(f"the rate must be a finite number of connections per second, got {rate_per_s!r}")
    if rate_per_s < 0:
        raise ValueError(f"the rate must be >= 0 connections per second, got {rate_per_s}")
    return float(rate_per_s)


def ports_held(rate_per_s: float, t_s: float, *, time_wait_s: float = TIME_WAIT_S) -> float:
    """Ports held in TIME_WAIT `t_s` seconds after a client starts opening and closing (it
    closes first) `rate_per_s` short connections per second to one server IP:port.

    Each port is held for `time_wait_s`, so the count grows as rate * t and levels off at
    rate * time_wait_s (if the range is big enough).
    """
    rate = _check_rate(rate_per_s)
    t_s = checks.seconds("t_s", t_s, zero_ok=True)
    return rate * min(t_s, checks.seconds("time_wait_s", time_wait_s))


def exhaustion_time_s(rate_per_s: float, ports: int, *, time_wait_s: float = TIME_WAIT_S) -> float:
    """Seconds until a client opening `rate_per_s` connections per second to one server
    IP:port has every one of `ports` ports in TIME_WAIT; math.inf if it never does (the
    rate is at most ports / time_wait_s, the highest sustainable rate)."""
    rate = _check_rate(rate_per_s)
    time_wait_s = checks.seconds("time_wait_s", time_wait_s)
    if isinstance(ports, bool) or not isinstance(ports, int) or ports < 1:
        raise ValueError(f"ports must be a positive count, got {ports!r}")
    if rate * time_wait_s <= ports:
        return math.inf
    return ports / rate


# --------------------------------------------------------------------------- drawing


def close_diagram(
    first: str,
    *,
    after_first: dict[str, str | None],
    after_second: dict[str, str | None],
    timer_s: float | None,
) -> SequenceDiagram:
    """The close ladder between Client and Server, built from the states /proc showed.

    `first` is "client" or "server" (who called close() first); `after_first` and
    `after_second` map "client"/"server" to the state name seen after each close() (None:
    no row left). Each arrow is the segment that state change proves: FIN_WAIT2 proves the
    first FIN was acknowledged, TIME_WAIT proves the second FIN arrived, and a vanished row
    proves the last ACK did.
    """
    if first not in ("client", "server"):
        raise ValueError(f"first must be 'client' or 'server', got {first!r}")
    for name, value in (("after_first", after_first), ("after_second", after_second)):
        if not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a dict such as {{'client': 'FIN_WAIT2', 'server': None}}, got {value!r}")
    if timer_s is not None:
        checks.seconds("timer_s", timer_s, zero_ok=True)
    second = "server" if first == "client" else "client"
    a, p = first.capitalize(), second.capitalize()

    def seen(state: str | None) -> str:
        return f"{state} (seen)" if state else "no row left (seen)"

    d = SequenceDiagram("Client", "Server", title=f"{a} closes first")
    d.note(a, "ESTABLISHED")
    d.note(p, "ESTABLISHED")
    d.message(a, p, "FIN (close)")
    d.message(p, a, "ACK", reply=True)
    d.note(a, seen(after_first.get(first)))
    d.note(p, seen(after_first.get(second)))
    d.message(p, a, "FIN (close)")
    d.note(p, "LAST_ACK (too brief to catch on loopback)")
    d.message(a, p, "ACK", reply=True)
    left = after_second.get(first)
    if left and timer_s is not None:
        d.note(a, f"{left} (seen), {timer_s:.1f} s left")
    else:
        d.note(a, seen(left))
    d.note(p, seen(after_second.get(second)))
    return d


def matrix_html(results: dict[tuple[bool, bool], str]) -> str:
    """An HTML 2x2 table of restart outcomes keyed by (old sets SO_REUSEADDR, new sets it)."""
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict {{(old_reuse, new_reuse): outcome}}, got {results!r}")

    def cell(key: tuple[bool, bool]) -> str:
        outcome = results.get(key, "not run")
        colour = "#2e7d32" if outcome == "restarted" else "#c62828"
        return f'<td style="color:{colour};font-weight:bold">{outcome}</td>'

    head = "<tr><th></th><th>new listener sets SO_REUSEADDR</th><th>new listener does not</th></tr>"
    rows = "".join(
        f"<tr><th>old listener {label}</th>{cell((old, True))}{cell((old, False))}</tr>"
        for old, label in ((True, "set SO_REUSEADDR"), (False, "did not"))
    )
    return f"<table>{head}{rows}</table>"
