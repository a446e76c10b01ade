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

A lesson runs a client out of ports for real by narrowing the range connect() picks from,
in one of two ways (``run_in_port_window()``): the per-socket option IP_LOCAL_PORT_RANGE
(Linux >= 6.3, any user), or, on older kernels, a private network namespace
(``helpers.netns``), because ``net.ipv4.ip_local_port_range`` belongs to a network namespace
and the namespace's owner may set it there. The experiment is a function written in the
notebook; here it gets a listener and the window, in this process or in the namespace.

The notebook writes the socket calls out; this module watches /proc, runs the experiment
in its window and does the arithmetic. It never writes a sysctl of this machine (only of
a private namespace it created).
"""

from __future__ import annotations

import inspect
import math
import random
import socket
import struct
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import netns
from .core import checks, recordings
from .core.features import IP_LOCAL_PORT_RANGE, PORT_RANGE_KERNEL, kernel_version, port_range_option, require_linux
from .core.proc import ephemeral_port_range, sysctl
from .diagrams import SequenceDiagram
from .observe import SocketEntry, SocketTable, TcpState, socket_table, wait_for_row
from .placement import idlest_cpus, pinned

__all__ = [
    "TIME_WAIT_S",
    "IP_LOCAL_PORT_RANGE",
    "PORT_RANGE_KERNEL",
    "state_of",
    "connection_rows",
    "wait_for_state",
    "wait_gone",
    "wait_for_count",
    "close_in_order",
    "has_port_range_option",
    "pack_port_range",
    "unpack_port_range",
    "read_sysctl",
    "tw_reuse",
    "tw_reuse_delay_ms",
    "free_port_window",
    "window_starts",
    "WINDOW_WAYS",
    "WindowRun",
    "port_window_way",
    "run_in_port_window",
    "save_window_runs",
    "load_window_runs",
    "ports_held",
    "exhaustion_time_s",
    "close_diagram",
    "matrix_html",
]

#: TCP_TIMEWAIT_LEN in include/net/tcp.h: how long Linux keeps a socket in TIME_WAIT (s).
TIME_WAIT_S = 60

_POLL_S = 0.005  # how often wait_gone() and wait_for_count() re-read the table (s)

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
    """Wait until the socket with this 4-tuple shows `state` in the kernel's table; return its row.

    Closing is asynchronous (the FIN and its ACK cross the loopback in softirq context), so a
    lesson that just called close() waits here rather than sleeping a guessed time
    (``observe.wait_for_row`` does the waiting). Raises TimeoutError naming the rows actually
    seen, and ValueError for a bad state or timeout (at most 60 s: TIME_WAIT's length).
    """
    return wait_for_row(local, remote, TcpState.parse(state), timeout_s=checks.seconds("timeout_s", timeout_s,
                                                                                       high=60))


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
    if remote is not None:
        checks.ip_port("remote", remote)
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


def close_in_order(
    first: str, *, listener: socket.socket | None = None, client_port: int = 0, linger_zero: bool = False
) -> tuple[Address, Address]:
    """One connection on 127.0.0.1 closed with `first` ("client" or "server") closing first;
    return (client address, server address) once the close is over.

    The connection goes to `listener` (a listening socket on 127.0.0.1, left open) or to a
    new one. The client binds `client_port` first, with SO_REUSEADDR (0: the kernel picks).
    Normally the first closer is left in TIME_WAIT, and this waits until it is. With
    `linger_zero`, `first` closes with SO_LINGER {on, 0}: a RST instead of a FIN, and nobody
    waits (this waits until both rows are gone). ValueError for an unknown `first`.
    """
    if first not in ("client", "server"):
        raise ValueError(f"first must be 'client' or 'server', got {first!r}")
    client_port = checks.port("client_port", client_port)
    own = listener is None
    if listener is None:
        listener = socket.create_server(("127.0.0.1", 0))
    try:
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind(("127.0.0.1", client_port))
            client.connect(listener.getsockname())
            conn, _ = listener.accept()
            with conn:
                ends = {"client": client, "server": conn}
                addr = {name: s.getsockname()[:2] for name, s in ends.items()}
                other = "server" if first == "client" else "client"
                if linger_zero:
                    ends[first].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                ends[first].close()
                if not linger_zero:
                    ends[other].recv(1)  # b"": the FIN arrived
                ends[other].close()
    finally:
        if own:
            listener.close()
    if linger_zero:
        wait_gone(addr[first], addr[other])
        wait_gone(addr[other], addr[first])
    else:
        wait_for_state(addr[first], addr[other], "TIME_WAIT")
    return addr["client"], addr["server"]


# --------------------------------------------------------------------------- IP_LOCAL_PORT_RANGE


def has_port_range_option() -> bool:
    """True if this kernel knows IP_LOCAL_PORT_RANGE (Linux >= 6.3): the probe
    ``helpers.core.features.port_range_option()``, which a test may switch off."""
    return port_range_option().available


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
    checks.port(f"{prefix}lo", lo)
    checks.port(f"{prefix}hi", hi)


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
    if not isinstance(name, str) or not name or "/" in name or "\0" in name or "." in name:
        raise ValueError(f"a net.ipv4 sysctl name such as 'tcp_tw_reuse', got {name!r}")
    return sysctl(f"net.ipv4.{name}")


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
    toward = None if toward is None else checks.ip_port("toward", toward)
    lo, hi = within if within is not None else ephemeral_port_range()
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


# --------------------------------------------------------------------------- running out of ports for real

#: How run_in_port_window() narrows the ports connect() may pick from.
WINDOW_WAYS = ("socket option", "namespace")

#: The sysctls a WindowRun reports, read where the experiment ran (each namespace has its own).
WINDOW_SYSCTLS = ("ip_local_port_range", "tcp_tw_reuse", "tcp_tw_reuse_delay", "tcp_rfc1337", "tcp_timestamps")

_NAMESPACE_WINDOW_LO = 40000  # the window's first port inside a private namespace (all ports are free there)


@dataclass(frozen=True)
class WindowRun:
    """What an experiment returned, run with connect() limited to the ports `window` (lo, hi).

    ``way`` is "socket option" (IP_LOCAL_PORT_RANGE on each socket, in this process) or
    "namespace" (a private network namespace whose ip_local_port_range is the window);
    ``sysctls`` holds the net.ipv4 settings where it ran, as text (None if absent);
    ``source`` says "live, ..." or, for a run loaded by load_window_runs(), where and when it
    was recorded. Never assert on a run whose ``live`` is False.
    """

    way: str
    window: tuple[int, int]
    result: Any
    sysctls: dict[str, str | None] = field(default_factory=dict)
    source: str = ""

    @property
    def live(self) -> bool:
        """False for a run recorded earlier (load_window_runs)."""
        return self.source.startswith("live")


def port_window_way() -> tuple[str | None, str]:
    """(way, why): how run_in_port_window() narrows the port range here, or (None, why not)."""
    option = port_range_option()
    if option.available:
        return "socket option", option.detail
    status = netns.support()
    if status.available:
        return "namespace", f"{option.detail}, so a private network namespace gets its own ip_local_port_range"
    return None, f"{option.detail}, and no private namespace is allowed here: {status.reason}"


def _read_window_sysctls() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in WINDOW_SYSCTLS:
        try:
            out[name] = " ".join(sysctl(f"net.ipv4.{name}").split())
        except FileNotFoundError:
            out[name] = None
    return out


# Runs in the namespace's child, after the experiment's own source: make the listener first
# (its port comes from the full range, so it is never inside the window), then narrow the
# namespace's range to the window, then call the experiment with no per-socket option.
_NAMESPACE_MAIN = """

def main(entry, size, window_lo, sysctls, kwargs):
    import os, socket
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one CPU (run_in_port_window)
    with socket.create_server(("127.0.0.1", 0)) as server:
        lo = window_lo if not window_lo <= server.getsockname()[1] < window_lo + size else window_lo + 2 * size
        with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
            f.write(f"{lo} {lo + size - 1}")
        result = globals()[entry](server, None, **kwargs)
    read = {}
    for name in sysctls:
        try:
            with open(f"/proc/sys/net/ipv4/{name}") as f:
                read[name] = " ".join(f.read().split())
        except FileNotFoundError:
            read[name] = None
    return {"window": [lo, lo + size - 1], "result": result, "sysctls": read}
"""


def _function_source(fn: Callable[..., Any]) -> str:
    if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
        raise TypeError(f"the experiment must be a function defined with def, got {fn!r}")
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise TypeError(f"cannot read the source of {fn.__name__}(); define it in a file or a notebook cell") from exc


def run_in_port_window(
    experiment: Callable[..., Any],
    *,
    size: int,
    uses: Iterable[Callable[..., Any]] = (),
    way: str | None = None,
    timeout_s: float = 20.0,
    **kwargs: Any,
) -> WindowRun:
    """Call ``experiment(server, port_range, **kwargs)`` with connect() limited to `size` ports.

    `server` is a listening TCP socket on 127.0.0.1 (outside the window); `port_range` is the
    IP_LOCAL_PORT_RANGE value to set on each client socket, or None when the whole network
    namespace is already narrowed to the window. `way` is one of WINDOW_WAYS, or None for
    what this kernel allows (``port_window_way()``). In a namespace the experiment runs in a
    child process: it and the functions in `uses` (which it calls) are sent as source, so
    they import what they need; `kwargs` and the result must be JSON data. The experiment
    runs on one CPU (its close handshakes then arrive in order: see the lesson).

    ValueError for a size outside 1-1000 or an unknown way; RuntimeError (from
    free_port_window) when this namespace has no free window; NamespaceUnavailable where
    the namespace way is impossible; NamespaceError if the experiment raised in the child.
    """
    _check_size(size, 1000)
    if way is None:
        way, why = port_window_way()
        if way is None:
            raise netns.NamespaceUnavailable(why)
    if way not in WINDOW_WAYS:
        raise ValueError(f"way must be one of {WINDOW_WAYS}, got {way!r}")
    if not callable(experiment):
        raise TypeError(f"the experiment must be a function, got {experiment!r}")
    if way == "socket option":
        if not has_port_range_option():
            raise ValueError(f"way 'socket option' needs IP_LOCAL_PORT_RANGE (Linux 6.3), not Linux "
                             f"{kernel_version()[0]}.{kernel_version()[1]}; use way='namespace'")
        with pinned(idlest_cpus()[0]), socket.create_server(("127.0.0.1", 0)) as server:
            lo, hi = free_port_window(size, toward=server.getsockname())  # the listener's port is in use: never inside
            result = experiment(server, pack_port_range(lo, hi), **kwargs)
        return WindowRun(way, (lo, hi), result, _read_window_sysctls(), "live, IP_LOCAL_PORT_RANGE on each socket")
    sources = [_function_source(fn) for fn in (*uses, experiment)]
    # Annotations stay text: the child has not imported what they name (socket.socket, ...).
    source = "from __future__ import annotations\n\n" + "\n\n".join(sources) + _NAMESPACE_MAIN
    answer = netns.run_in_netns(source, timeout_s=timeout_s, entry=experiment.__name__, size=size,
                                window_lo=_NAMESPACE_WINDOW_LO, sysctls=list(WINDOW_SYSCTLS), kwargs=kwargs)
    lo, hi = answer["window"]
    return WindowRun(way, (lo, hi), answer["result"], answer["sysctls"], "live, in a private network namespace")


_RUN_KEYS = {"way", "window", "result", "sysctls"}


def save_window_runs(runs: Mapping[str, Any], path: str, where: str) -> None:
    """Store live WindowRuns (a dict whose values are runs or dicts of runs) as JSON, labelled
    with `where`, the kernel and the time, for load_window_runs() where no live run is possible.
    TypeError for anything else or an empty `where`; ValueError for a recorded run."""
    recordings.check_where(where)

    def plain(value: Any) -> Any:
        if isinstance(value, WindowRun):
            if not value.live:
                raise ValueError("a recorded run cannot be recorded again; record a live one")
            return {"way": value.way, "window": list(value.window), "result": value.result, "sysctls": value.sysctls}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        raise TypeError(f"save_window_runs() stores WindowRuns (or dicts of them), got {type(value).__name__}")

    stored = plain(runs)  # every check before the file is touched
    recordings.write(path, {"recorded": recordings.label(where, by="helpers.timewait"), "runs": stored})


def load_window_runs(path: str) -> dict[str, Any]:
    """The runs save_window_runs() stored, each a WindowRun whose ``source`` names the recording.
    ValueError naming the file for one that is not such a recording."""
    def build(label: str, data: dict[str, Any]) -> dict[str, Any]:
        def back(value: Any) -> Any:
            if isinstance(value, dict) and set(value) == _RUN_KEYS:
                return WindowRun(value["way"], tuple(value["window"]), value["result"], value["sysctls"],
                                 f"RECORDED earlier: {label}")
            if isinstance(value, dict):
                return {k: back(v) for k, v in value.items()}
            raise ValueError(f"unexpected {type(value).__name__} among the runs")

        return back(data["runs"])

    return recordings.read(path, "save_window_runs()", build)  # also from an edition's folder (notebooks/zh-CN/)


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
