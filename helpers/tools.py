"""The classic network tools, rebuilt from what the kernel exposes to any user.

Theory of operation. ``ss``, ``lsof``, ``ifconfig``/``ip`` and ``ping`` are small programs
over kernel interfaces a Python process can read itself:

* ``lsof`` joins two tables: /proc/PID/fd says "fd 7 is socket:[40123]" (an inode number),
  and /proc/net/{tcp,tcp6,unix} say which socket has inode 40123. ``lsof()`` does that
  join. It sees the sockets of this network namespace only, as ``lsof -i`` would. UDP
  sockets come from ``udp_ports.udp_table``, which asks over netlink, like ``ss -uan``.
* ``ss -tan`` asks the kernel over netlink (sock_diag); ``observe.socket_table`` reads the
  older /proc/net/tcp. ``parse_ss()`` reads ss's output so a lesson can cross-check the two.
* ``ifconfig`` / ``ip -s link``: per-interface byte and packet counters are in
  /proc/net/dev; an interface's flags, MTU and primary IPv4 address come from the
  ioctls of man 7 netdevice (SIOCGIFFLAGS, SIOCGIFMTU, SIOCGIFADDR), which need no
  privilege. IPv6 addresses are in /proc/net/if_inet6 (read by ``helpers.addresses``).
* The real tools themselves, where installed: ``run_tool()`` runs one (bounded by a timeout)
  and says plainly when it is missing; ``run_tool_during()`` keeps one running (tcpdump)
  while the caller makes some traffic; ``NstatIncrements`` gives ``nstat`` a history file of
  its own, so its "increments since last time" cover exactly one experiment.
* ``ping`` sends ICMP echo requests (RFC 792). An unprivileged process may open
  ``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`` only if its group is inside the sysctl
  ``net.ipv4.ping_group_range`` (man 7 icmp); root does not bypass that check. A raw ICMP
  socket (SOCK_RAW) needs CAP_NET_RAW instead: that is how ``ping`` works as root or as a
  binary installed with the capability. ``ping()`` tries the datagram socket first, then
  the raw one, and otherwise raises PingUnavailable saying which rule stopped it. Where it
  does, a lesson shows a run of ``ping()`` recorded earlier (``save_recording()``,
  ``load_recording()``), labelled with where, when and the kernel.

Building and parsing the ICMP bytes is sans-IO, in ``helpers.packets``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .addresses import parse_if_inet6
from .core import checks, recordings
from .core.features import find_program, require_linux, switched_off, why_missing
from .observe import Address, TcpState, open_fds, socket_table
from .packets import build_icmp_echo, parse_icmp, parse_ipv4
from .udp_ports import udp_table
from .unix import UnixState, unix_table

__all__ = [
    "OpenFile",
    "OpenFileTable",
    "lsof",
    "unix_sockets",
    "SsRow",
    "parse_ss",
    "run_ss",
    "find_tool",
    "ToolRun",
    "run_tool",
    "run_tool_during",
    "NstatIncrements",
    "IfCounters",
    "parse_proc_net_dev",
    "interface_counters",
    "Interface",
    "interfaces",
    "PingPermission",
    "ping_permission",
    "PingUnavailable",
    "open_icmp_socket",
    "PingResult",
    "ping",
    "save_recording",
    "load_recording",
]

PROC_NET = Path("/proc/net")

# --------------------------------------------------------------------------- lsof


@dataclass(frozen=True)
class OpenFile:
    """One fd of a process and what it is: 'TCP', 'TCP6', 'UDP', 'UDP6', 'UNIX', 'socket'
    (a socket of another family, e.g. netlink) or 'file' (anything else: a path, a pipe)."""

    fd: int
    kind: str
    description: str
    inode: int | None = None
    state: str | None = None
    local: Address | str | None = None
    remote: Address | None = None

    def __str__(self) -> str:
        return f"fd {self.fd} -> {self.kind} {self.description}"


class OpenFileTable(list[OpenFile]):
    """A list of OpenFile that prints one 'fd N -> KIND ...' line per entry."""

    def __repr__(self) -> str:
        return "\n".join(str(f) for f in self) if self else "(no matching fds)"

    def by_fd(self) -> dict[int, OpenFile]:
        """{fd: OpenFile}, for lookups in checks."""
        return {f.fd: f for f in self}


def _addr(a: Address) -> str:
    host, port = a
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unix_sockets() -> dict[int, tuple[str, str, str]]:
    """/proc/net/unix as {inode: (type, state, path)}, e.g. ('STREAM', 'LISTEN', '/tmp/x.sock');
    an abstract name starts with '@', an unnamed socket (socketpair(), a client) has path ''.
    Parsed by unix.parse_proc_net_unix, which also rejoins a path containing a newline."""
    out: dict[int, tuple[str, str, str]] = {}
    for e in unix_table():
        kind = e.type.name.removeprefix("SOCK_") if isinstance(e.type, socket.SocketKind) else str(e.type)
        state = "LISTEN" if e.listening else e.state.name if isinstance(e.state, UnixState) else str(e.state)
        out[e.inode] = (kind, state, e.path or "")
    return out


def _udp_sockets() -> dict[int, tuple[str, Address, Address]]:
    """Every UDP socket as {inode: ('UDP' or 'UDP6', local, remote)}, from udp_ports.udp_table."""
    return {e.inode: ("UDP6" if ":" in e.local[0] else "UDP", e.local, e.remote) for e in udp_table()}


def lsof(pid: int | str = "self", *, fds: Iterable[int] | None = None, sockets_only: bool = False) -> OpenFileTable:
    """The open fds of a process (default: this one), sockets resolved like ``lsof -p PID``.

    Each socket fd is looked up by its inode in /proc/net/{tcp,tcp6,udp,udp6,unix}, giving
    e.g. ``fd 57 -> TCP 127.0.0.1:40001 -> 127.0.0.1:5000 ESTABLISHED``. `fds` keeps only
    those fd numbers; `sockets_only` drops files and pipes. Another user's process gives
    PermissionError (as lsof shows nothing for it without root). ValueError for a pid that
    is not a positive int or 'self', or `fds` that is not a collection of fd numbers.
    """
    checks.pid(pid)
    wanted = None if fds is None else _check_fds(fds)
    tcp = {e.inode: e for e in socket_table()}
    udp = _udp_sockets()
    unix = unix_sockets()
    table = OpenFileTable()
    for entry in open_fds(pid):
        if wanted is not None and entry.fd not in wanted:
            continue
        inode = entry.socket_inode
        if inode is None:
            if not sockets_only:
                table.append(OpenFile(entry.fd, "file", entry.target))
            continue
        if inode in tcp:
            e = tcp[inode]
            kind = "TCP6" if ":" in e.local[0] else "TCP"
            desc = f"{_addr(e.local)} -> {_addr(e.remote)} {e.state.name}"
            if e.state is TcpState.LISTEN:
                desc = f"{_addr(e.local)} LISTEN"
            table.append(OpenFile(entry.fd, kind, desc, inode, e.state.name, e.local, e.remote))
        elif inode in udp:
            kind, local, remote = udp[inode]
            connected = remote[1] != 0
            desc = f"{_addr(local)} -> {_addr(remote)}" if connected else f"{_addr(local)} (unconnected)"
            state = "CONNECTED" if connected else "UNCONNECTED"
            table.append(OpenFile(entry.fd, kind, desc, inode, state, local, remote if connected else None))
        elif inode in unix:
            kind, state, path = unix[inode]
            name = path or "(unnamed)"
            table.append(OpenFile(entry.fd, "UNIX", f"{kind} {name} {state}", inode, state, path or None))
        else:
            table.append(OpenFile(entry.fd, "socket", f"inode {inode} (netlink, raw or packet socket)", inode))
    return table


def _check_fds(fds: Iterable[int]) -> set[int]:
    numbers = list(fds) if isinstance(fds, Iterable) and not isinstance(fds, (str, bytes)) else None
    if numbers is None or any(isinstance(fd, bool) or not isinstance(fd, int) or fd < 0 for fd in numbers):
        raise ValueError(f"fds must be a list of fd numbers (ints >= 0), such as [3, 4], got {fds!r}")
    return set(numbers)


# --------------------------------------------------------------------------- ss


@dataclass(frozen=True)
class SsRow:
    """One row of ``ss -tan``: state, queues and the two ends."""

    state: TcpState
    recv_q: int
    send_q: int
    local: Address
    remote: Address


# ss names states as the kernel's tcp_state_name() does.
_SS_STATES = {
    "ESTAB": TcpState.ESTABLISHED, "SYN-SENT": TcpState.SYN_SENT, "SYN-RECV": TcpState.SYN_RECV,
    "FIN-WAIT-1": TcpState.FIN_WAIT1, "FIN-WAIT-2": TcpState.FIN_WAIT2, "TIME-WAIT": TcpState.TIME_WAIT,
    "UNCONN": TcpState.CLOSE, "CLOSE-WAIT": TcpState.CLOSE_WAIT, "LAST-ACK": TcpState.LAST_ACK,
    "LISTEN": TcpState.LISTEN, "CLOSING": TcpState.CLOSING,
}
_SS_ADDR = re.compile(r"^\[?(?P<host>[^\]]*?)\]?(?:%[\w.-]+)?:(?P<port>\d{1,5}|\*)$", re.ASCII)


def _parse_ss_addr(text: str) -> Address:
    m = _SS_ADDR.match(text)
    if m is None:
        raise ValueError(f"not an ss address: {text!r} (expected e.g. '127.0.0.1:5000' or '[::1]:5000')")
    host = "::" if m["host"] == "*" else m["host"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an ss address: {text!r} (ss -n prints numeric addresses only)") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        host = f"::ffff:{ip.ipv4_mapped}"  # as observe.socket_table writes them
    else:
        host = str(ip)
    port = 0 if m["port"] == "*" else int(m["port"])
    if port > 65535:
        raise ValueError(f"not an ss address: {text!r} (port {port} is above 65535)")
    return (host, port)


def parse_ss(text: str) -> list[SsRow]:
    """Parse the output of ``ss -tan`` (with or without its header line).

    Blank lines and the header are skipped; any other line that is not a row (an unknown
    state, queues that are not decimal numbers, a bad address) raises ValueError showing it.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_ss() needs the str output of `ss -tan`, got {type(text).__name__}")
    rows: list[SsRow] = []
    for line in text.splitlines():
        cols = line.split()
        if not cols or cols[0] == "State":
            continue
        if len(cols) < 5 or cols[0] not in _SS_STATES or not (cols[1].isascii() and cols[1].isdigit()
                                                             and cols[2].isascii() and cols[2].isdigit()):
            raise ValueError(f"not an `ss -tan` row: {line!r}")
        rows.append(SsRow(_SS_STATES[cols[0]], int(cols[1]), int(cols[2]),
                          _parse_ss_addr(cols[3]), _parse_ss_addr(cols[4])))
    return rows


def run_ss(*args: str, timeout_s: float = 5.0) -> str | None:
    """Run ``ss`` (iproute2) with `args` (default ``-tan``) and return its output, or None
    if ss is not installed. Raises RuntimeError with ss's message if it fails, TimeoutError
    after `timeout_s` seconds (ss is killed), TypeError for an argument that is not a str."""
    if not all(isinstance(a, str) for a in args):
        raise TypeError(f"ss arguments must be str, such as run_ss('-tan'), got {args!r}")
    run = run_tool("ss", *(args or ("-tan",)), timeout_s=timeout_s)
    if not run.found:
        return None
    if run.returncode != 0:
        raise RuntimeError(f"ss {' '.join(args)} failed ({run.returncode}): {run.stderr.strip()}")
    return run.stdout


# --------------------------------------------------------------------------- the real tools

def find_tool(name: str) -> str | None:
    """The path of program `name` (on PATH, or in /usr/sbin or /sbin), or None if it is not
    installed: the probe ``helpers.core.features.find_program()``, which the doctor asks too."""
    return find_program(name)


@dataclass(frozen=True)
class ToolRun:
    """One run of a real tool: the command line, whether the tool exists here, what it printed."""

    command: str
    found: bool
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """True if the tool exists and exited with 0."""
        return self.found and self.returncode == 0

    def lines(self, *needles: str, header: int = 1) -> list[str]:
        """The first `header` lines of the output, then every later line containing one of `needles`."""
        out = self.stdout.splitlines()
        return out[:header] + [line for line in out[header:] if any(n in line for n in needles)]

    def show(self, *needles: str, header: int = 1) -> str:
        """The command and its (filtered) output, or why there is none, as a terminal shows it."""
        if not self.found:  # stderr then says why: not installed, or a test switched the probe off
            return f"$ {self.command}\n({self.command.split()[0]} is {self.stderr or 'not installed here'})"
        body = self.lines(*needles, header=header) if needles else self.stdout.splitlines()
        text = "\n".join([f"$ {self.command}", *body])
        if self.stderr.strip():
            text += "\n" + "\n".join(f"[stderr] {line}" for line in self.stderr.strip().splitlines()[-4:])
        if self.returncode:
            text += f"\n[exit status {self.returncode}]"
        return text


def _missing_here(name: str) -> str:
    why = why_missing(name)
    return "not installed here" if why == "not installed" else why


def _command(name: str, args: tuple[str, ...]) -> str:
    return " ".join([name, *(a if a and " " not in a else repr(a) for a in args)])


def _check_args(name: str, args: tuple[str, ...]) -> None:
    if not all(isinstance(a, str) for a in args):
        raise TypeError(f"{name} arguments must be str, such as run_tool('ss', '-tan'), got {args!r}")


def run_tool(name: str, *args: str, timeout_s: float = 5.0, env: dict[str, str] | None = None) -> ToolRun:
    """Run program `name` with `args` and return what it did (``found`` False if it is not
    installed). The tool is killed after `timeout_s` seconds (TimeoutError). `env` adds
    variables to the environment. ValueError for a bad name or timeout, TypeError for an
    argument that is not a str."""
    timeout_s = checks.seconds("timeout_s", timeout_s, high=60)
    _check_args(name, args)
    exe = find_tool(name)
    if exe is None:
        return ToolRun(_command(name, args), False, stderr=_missing_here(name))
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout_s, check=False,
                              env={**os.environ, **(env or {})}, errors="replace")
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped it
        raise TimeoutError(f"{_command(name, args)} did not finish within {timeout_s} s") from None
    return ToolRun(_command(name, args), True, done.returncode, done.stdout, done.stderr)


def run_tool_during(name: str, *args: str, action: Callable[[], Any], ready: str, quiet_s: float = 0.3,
                    timeout_s: float = 5.0) -> tuple[ToolRun, Any]:
    """Start program `name` (e.g. tcpdump), wait until its stderr says `ready` (e.g.
    "listening on"), call ``action()``, then let the tool run until its output has been quiet
    for `quiet_s` and stop it with SIGINT (as Ctrl-C would). Returns (ToolRun, what action
    returned). If the tool is missing, or exits before it is ready (no permission, say),
    ``action`` is not called and the result is None. Nothing is left running: the tool is
    killed after `timeout_s` at the latest. ValueError/TypeError for bad arguments."""
    timeout_s = checks.seconds("timeout_s", timeout_s, high=60)
    quiet_s = checks.seconds("quiet_s", quiet_s, high=10)
    _check_args(name, args)
    if not callable(action) or not isinstance(ready, str) or not ready:
        raise TypeError(f"action must be a function and ready a non-empty str, got {action!r}, {ready!r}")
    exe = find_tool(name)
    if exe is None:
        return ToolRun(_command(name, args), False, stderr=_missing_here(name)), None
    proc = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    out, err, result = bytearray(), bytearray(), None
    deadline = time.monotonic() + timeout_s

    def read_for(seconds: float) -> bool:
        """Read what arrives for `seconds` (until the deadline); True if anything did."""
        got, until = False, min(deadline, time.monotonic() + seconds)
        while (left := until - time.monotonic()) > 0:
            ready_fds, _, _ = select.select([proc.stdout, proc.stderr], [], [], left)
            for f in ready_fds:
                chunk = os.read(f.fileno(), 65536)
                (out if f is proc.stdout else err).extend(chunk)
                got = got or bool(chunk)
            if not ready_fds or proc.poll() is not None:
                break
        return got

    try:
        while ready.encode() not in err and proc.poll() is None and time.monotonic() < deadline:
            read_for(0.05)
        if ready.encode() in err and proc.poll() is None:
            result = action()
            while proc.poll() is None and time.monotonic() < deadline and read_for(quiet_s):
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        rest_out, rest_err = proc.communicate(timeout=max(0.5, deadline - time.monotonic()))
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    run = ToolRun(_command(name, args), True, proc.returncode, (out + rest_out).decode(errors="replace"),
                  (err + rest_err).decode(errors="replace"))
    return run, result


class NstatIncrements:
    """``nstat`` around an experiment, with a history file of its own (NSTAT_HISTORY).

    nstat prints how much each counter grew since its last run, which it remembers in a
    history file shared by every nstat the user runs. With a file of our own, entering the
    block records a start (``nstat -n``) and leaving it asks for the increments since then:
    ``.values`` maps 'TcpActiveOpens' and the like to increments ({} if nstat is missing,
    ``.run`` says what happened). The history file is removed at the end.
    """

    def __init__(self, *names: str):
        _check_args("nstat", names)
        self.names = names
        self.values: dict[str, int] = {}
        self.run: ToolRun | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> NstatIncrements:
        self._dir = tempfile.TemporaryDirectory(prefix="course-nstat-")
        self._env = {"NSTAT_HISTORY": os.path.join(self._dir.name, "history")}
        first = run_tool("nstat", "-n", env=self._env)
        if not first.ok:
            self.run = first
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.run is None:
                self.run = run_tool("nstat", "-z", *self.names, env=self._env)
                for line in self.run.stdout.splitlines():
                    cols = line.split()
                    if len(cols) >= 2 and not line.startswith("#") and cols[1].isdigit():
                        self.values[cols[0]] = int(cols[1])
        finally:
            if self._dir is not None:
                self._dir.cleanup()


# --------------------------------------------------------------------------- interfaces


@dataclass(frozen=True)
class IfCounters:
    """An interface's counters from /proc/net/dev (since boot, or since it was created)."""

    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int

    def __sub__(self, other: IfCounters) -> IfCounters:
        return IfCounters(*(a - b for a, b in zip(self._values(), other._values())))

    def _values(self) -> tuple[int, ...]:
        return (self.rx_bytes, self.rx_packets, self.rx_errors, self.rx_dropped,
                self.tx_bytes, self.tx_packets, self.tx_errors, self.tx_dropped)


def parse_proc_net_dev(text: str) -> dict[str, IfCounters]:
    """Parse /proc/net/dev: two header lines, then 'name: 8 receive and 8 transmit columns'.

    ValueError showing the first line that is not such a row (no name, fewer than 16
    columns, a column that is not a decimal number); TypeError for a non-str.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_proc_net_dev() needs the str text of /proc/net/dev, got {type(text).__name__}")
    out: dict[str, IfCounters] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        cols = rest.split()
        if not sep or not name.strip() or len(cols) < 16 or not all(c.isascii() and c.isdigit() for c in cols):
            raise ValueError(f"not a /proc/net/dev row: {line!r}")
        v = [int(c) for c in cols]
        out[name.strip()] = IfCounters(v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11])
    return out


def interface_counters() -> dict[str, IfCounters]:
    """Every interface's byte and packet counters now (what ``ip -s link`` prints)."""
    require_linux("interface counters (/proc/net/dev)")
    return parse_proc_net_dev((PROC_NET / "dev").read_text())


SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
SIOCGIFMTU = 0x8921
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40  # <net/if.h>


@dataclass(frozen=True)
class Interface:
    """One network interface as ``ip addr`` / ``ifconfig`` shows it."""

    name: str
    index: int
    up: bool
    loopback: bool
    mtu: int
    ipv4: ipaddress.IPv4Interface | None  # primary address with prefix, e.g. 127.0.0.1/8
    ipv6: list[ipaddress.IPv6Address] = field(default_factory=list)
    counters: IfCounters | None = None

    def __str__(self) -> str:
        flags = ",".join(f for f, on in (("UP", self.up), ("LOOPBACK", self.loopback)) if on) or "DOWN"
        lines = [f"{self.index}: {self.name} <{flags}> mtu {self.mtu}"]
        if self.ipv4 is not None:
            lines.append(f"    inet {self.ipv4}")
        lines += [f"    inet6 {a}" for a in self.ipv6]
        if self.counters is not None:
            c = self.counters
            lines.append(f"    RX {c.rx_bytes} bytes {c.rx_packets} packets  "
                         f"TX {c.tx_bytes} bytes {c.tx_packets} packets")
        return "\n".join(lines)


def _ifreq(sock: socket.socket, request: int, name: str) -> bytes:
    # struct ifreq: char ifr_name[16] then a 24-byte union (man 7 netdevice).
    return fcntl.ioctl(sock.fileno(), request, struct.pack("16s24s", name.encode(), b""))


def interfaces() -> list[Interface]:
    """Every interface with its flags, MTU, primary IPv4 address, IPv6 addresses and counters.

    Unprivileged: ioctls on an ordinary UDP socket and files in /proc. SIOCGIFADDR gives
    one IPv4 address per interface (the primary); secondary addresses need netlink.
    """
    require_linux("the interface list (SIOCGIF* ioctls, /proc/net/dev)")
    counters = interface_counters()
    inet6 = PROC_NET / "if_inet6"
    v6 = parse_if_inet6(inet6.read_text()) if inet6.exists() else []
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in socket.if_nameindex():
            try:
                (flags,) = struct.unpack_from("H", _ifreq(s, SIOCGIFFLAGS, name), 16)
                (mtu,) = struct.unpack_from("i", _ifreq(s, SIOCGIFMTU, name), 16)
            except OSError:  # ENODEV: the interface went away since if_nameindex()
                continue
            try:
                addr = socket.inet_ntoa(_ifreq(s, SIOCGIFADDR, name)[20:24])
                mask = socket.inet_ntoa(_ifreq(s, SIOCGIFNETMASK, name)[20:24])
                ipv4 = ipaddress.IPv4Interface(f"{addr}/{mask}")
            except OSError:  # EADDRNOTAVAIL: no IPv4 address on this interface
                ipv4 = None
            out.append(Interface(
                name, index, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK), mtu, ipv4,
                sorted(a for a, n in v6 if n == name), counters.get(name),
            ))
    return out


# --------------------------------------------------------------------------- ping


@dataclass(frozen=True)
class PingPermission:
    """What net.ipv4.ping_group_range says about this process (man 7 icmp)."""

    low: int
    high: int
    gids: tuple[int, ...]  # the process's real group and supplementary groups

    @property
    def allowed(self) -> bool:
        """True if one of our groups is inside [low, high] (an empty range when low > high)."""
        return any(self.low <= g <= self.high for g in self.gids)

    def explain(self) -> str:
        """The rule in one sentence, with this machine's numbers."""
        rng = f"net.ipv4.ping_group_range = {self.low} {self.high}"
        if self.low > self.high:
            return (f"{rng}: an empty range (low > high), so no group, root's included, may "
                    "open an ICMP datagram socket. This is the kernel's default.")
        verdict = "includes" if self.allowed else "does not include"
        return f"{rng} {verdict} our groups {list(self.gids)}."


def ping_permission() -> PingPermission:
    """Read /proc/sys/net/ipv4/ping_group_range (never written here) and our groups."""
    require_linux("ICMP datagram sockets (net.ipv4.ping_group_range)")
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    gids = tuple(sorted({os.getgid(), *os.getgroups()}))
    return PingPermission(low, high, gids)


class PingUnavailable(PermissionError):
    """Neither an ICMP datagram socket nor a raw ICMP socket may be opened here."""


def open_icmp_socket() -> tuple[socket.socket, str]:
    """An ICMP socket for ping, and its kind: 'datagram' (SOCK_DGRAM, allowed by
    ping_group_range) or 'raw' (SOCK_RAW, needs CAP_NET_RAW).

    Raises PingUnavailable explaining both refusals when neither opens (or when a test
    switched the probe "icmp" off: helpers.core.features).
    """
    why = switched_off("icmp")
    if why:
        raise PingUnavailable(f"ICMP sockets are {why}")
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), "datagram"
    except PermissionError as exc:
        dgram_error = exc
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), "raw"
    except PermissionError as exc:
        raw_error = exc
    perm = ping_permission()
    raise PingUnavailable(
        f"socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) failed with errno {dgram_error.errno} "
        f"({os.strerror(dgram_error.errno or 13)}): {perm.explain()} "
        f"socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) failed with errno {raw_error.errno} "
        f"({os.strerror(raw_error.errno or 1)}): a raw socket needs CAP_NET_RAW (root, or a "
        "ping binary installed with that capability). An administrator could widen the range, "
        "e.g. sysctl net.ipv4.ping_group_range='0 2147483647'; a lesson must not."
    )


@dataclass
class PingResult:
    """The outcome of ping(): which socket kind was used, and one RTT per echo (None = lost)."""

    host: str
    kind: str
    rtts_ms: list[float | None]
    idents: list[int]  # the identifier each reply carried (on a datagram socket: the kernel's)
    sent_ident: int
    #: (type, code) of every ICMP message read that carried our identifier and a sequence number
    #: we sent: the replies (type 0), and on a raw socket our own requests too (type 8)
    seen: list[tuple[int, int]] = field(default_factory=list)
    #: False for a run recorded earlier (load_recording()): never assert on it
    live: bool = True
    #: where the run comes from: "live, on this machine" or the recording's label
    source: str = "live, on this machine"

    @property
    def received(self) -> list[float]:
        """The RTTs of the echoes that came back, in ms."""
        return [r for r in self.rtts_ms if r is not None]

    def to_json(self) -> dict[str, Any]:
        """What the run saw, JSON-ready (for a recording)."""
        return {"host": self.host, "kind": self.kind, "rtts_ms": list(self.rtts_ms), "idents": list(self.idents),
                "sent_ident": self.sent_ident, "seen": [list(s) for s in self.seen]}


def save_recording(run: PingResult, path: str | Path, where: str) -> None:
    """Store a live `run` of ping() as JSON, labelled with `where` (the machine, the socket's
    circumstances), the time and the kernel, for load_recording() where no ICMP socket opens.

    TypeError for a `run` that is not a PingResult or an empty `where`; ValueError for a run
    that is itself a recording.
    """
    if not isinstance(run, PingResult):
        raise TypeError(f"save_recording() needs the PingResult that ping() returned, got {type(run).__name__}")
    label = recordings.label(where, by="helpers.tools.ping()")  # TypeError for an empty `where`
    if not run.live:
        raise ValueError("this run is itself a recording; record a live one")
    recordings.write(path, {"recorded": label, "ping": run.to_json()})


def load_recording(path: str | Path) -> PingResult:
    """A run of ping() recorded earlier by save_recording(), marked ``live=False``, its
    ``source`` the recording's label. ValueError naming the file for anything else."""
    def build(label: str, data: dict[str, Any]) -> PingResult:
        run = data["ping"]
        return PingResult(run["host"], run["kind"], list(run["rtts_ms"]), list(run["idents"]), run["sent_ident"],
                          [(t, c) for t, c in run["seen"]], live=False, source=f"RECORDED earlier: {label}")

    return recordings.read(path, "tools.save_recording()", build)  # also from an edition's folder (notebooks/zh-CN/)


def ping(host: str = "127.0.0.1", count: int = 5, *, interval_s: float = 0.01, timeout_s: float = 1.0,
         payload_size: int = 56) -> PingResult:
    """Send `count` ICMP echo requests to an IPv4 `host`, one every `interval_s`, and time
    each reply (RFC 792). Raises PingUnavailable where no ICMP socket may be opened, and
    ValueError for a bad argument."""
    try:
        ipaddress.IPv4Address(host if isinstance(host, str) else None)  # the int 1 would pass as 0.0.0.1
    except ValueError:
        raise ValueError(f"host must be an IPv4 address such as '127.0.0.1', got {host!r}") from None
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        raise ValueError(f"count must be an int in 1-1000, got {count!r}")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (interval_s, timeout_s))
    if not numbers or not 0 <= interval_s <= 10 or not 0 < timeout_s <= 30:
        raise ValueError(f"need 0 <= interval_s <= 10 and 0 < timeout_s <= 30, got {interval_s!r}, {timeout_s!r}")
    if isinstance(payload_size, bool) or not isinstance(payload_size, int) or not 0 <= payload_size <= 1400:
        raise ValueError(f"payload_size must be 0-1400 bytes (one unfragmented packet), got {payload_size!r}")
    sock, kind = open_icmp_socket()
    sent_ident = os.getpid() & 0xFFFF
    rtts: list[float | None] = []
    idents: list[int] = []
    seen: list[tuple[int, int]] = []
    with sock:
        for seq in range(count):
            payload = struct.pack("!Q", seq) + bytes(payload_size - 8) if payload_size >= 8 else bytes(payload_size)
            started = time.perf_counter()
            sock.sendto(build_icmp_echo(sent_ident, seq, payload), (host, 0))
            expect = sock.getsockname()[1] if kind == "datagram" else sent_ident  # the kernel's id
            rtt, ident = _await_reply(sock, kind, expect, seq, started, timeout_s, seen)
            rtts.append(rtt)
            if ident is not None:
                idents.append(ident)
            if seq + 1 < count and interval_s:
                time.sleep(interval_s)
    return PingResult(host, kind, rtts, idents, sent_ident, seen)


def _await_reply(sock: socket.socket, kind: str, ident: int, seq: int, started: float,
                 timeout_s: float, seen: list[tuple[int, int]]) -> tuple[float | None, int | None]:
    deadline = started + timeout_s
    while (left := deadline - time.perf_counter()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        data = sock.recv(65535)
        arrived = time.perf_counter()
        try:
            if kind == "raw":  # a raw socket sees the IP header, and every ICMP message on the host
                _ip, data = parse_ipv4(data)
            msg = parse_icmp(data)
        except ValueError:  # a truncated or foreign message: not our reply
            continue
        if msg.seq == seq and msg.ident == ident:
            seen.append((msg.type, msg.code))
        if msg.is_echo_reply and msg.seq == seq and msg.ident == ident:
            return (arrived - started) * 1000, msg.ident
    return None, None
