"""Plumbing for lesson 08 (shutdown vs close): hold a connection in a closing state and look.

Theory of operation. On loopback a connection usually closes faster than a program can
look at it, so the lesson needs ways to catch the states in between:

* Both ends in one process. ``connected_pair()`` returns a connected client socket and
  the server's accepted socket, so the notebook can call shutdown() on one and look at
  the other at its own pace; nothing runs in the background.
* A FIN waits behind data. A FIN takes a sequence number after the last byte queued, so
  while the peer's receive window is full, shutdown() or close() changes the state
  (ESTABLISHED -> FIN_WAIT1, CLOSE_WAIT -> LAST_ACK) but the FIN stays in the send queue.
  ``fill_send_queue()`` writes until the kernel says EAGAIN; small buffers
  (``connected_pair(bufsize=...)``) keep that to a few hundred KiB.
* Per-socket evidence first. ``wait_for_state()`` polls TCP_INFO of one socket and
  ``wait_for_row()`` looks up one 4-tuple (a closed socket has no fd left); ``queued()``
  reads the SIOCINQ/SIOCOUTQ ioctls (``man 7 tcp``).
* Look up one connection, not the whole table. /proc/net/tcp lists every socket of the
  namespace; on a shared machine with tens of thousands of sockets, reading and parsing
  it takes about a second. ``lookup()`` asks the kernel for one 4-tuple instead, over
  NETLINK_SOCK_DIAG as ``ss`` does (``man 7 sock_diag``: a request without NLM_F_DUMP
  is an exact lookup), and falls back to the table if netlink is refused.
* Children are always reaped. ``ChildProcess`` runs ``python -c CODE`` (for SIGPIPE,
  which Python ignores in its own process) and kills and waits for it on exit.
* The endings on the wire. ``four_endings()`` is an experiment for ``helpers.capture``: it
  runs in the capture's child process (so it imports what it uses and returns plain data)
  and ends four connections four ways while the packets are recorded.
"""

from __future__ import annotations

import fcntl
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from . import observe
from .addresses import loopback_address, loopback_host
from .behaviours import check_connection
from .capture import mark, watch  # placeholders here: capture() provides the real ones to four_endings()
from .core import checks
from .observe import SocketEntry, SocketTable, TcpState, socket_table, tcp_info

__all__ = [
    "connected_pair",
    "fill_send_queue",
    "drain",
    "queued",
    "wait_for_state",
    "wait_for_inq",
    "wait_for_acked",
    "wait_for_row",
    "lookup",
    "both_ends",
    "signal_name",
    "ChildProcess",
    "four_endings",
]

POLL_S = 0.001  # how often the waits look again: states change within microseconds on loopback
MAX_WAIT_S = 600.0  # the longest any wait here may be asked to take: a lesson step, not a service
MAX_BUFSIZE = 1 << 30  # bytes; the kernel caps SO_SNDBUF/SO_RCVBUF at net.core.wmem_max/rmem_max anyway


def _connected(sock: object, who: str) -> socket.socket:
    """The checks of behaviours.check_connection, plus: the socket has a peer (getpeername works)."""
    check_connection(sock, who)
    assert isinstance(sock, socket.socket)
    try:
        sock.getpeername()
    except OSError:
        raise ValueError(f"{who}() needs a connected socket; this one has no peer (never connected, "
                         "or reset)") from None
    return sock


def connected_pair(*, bufsize: int | None = None, host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """A connected TCP (client, server) pair on loopback; the listener is already closed.

    `bufsize` (bytes) sets SO_SNDBUF and SO_RCVBUF on both ends before the handshake (the
    kernel doubles the value, ``man 7 socket``), so a peer's window fills after a few
    hundred KiB instead of several MiB. Both sockets are blocking; close both when done.
    """
    if bufsize is not None and (isinstance(bufsize, bool) or not isinstance(bufsize, int)
                                or not 1024 <= bufsize <= MAX_BUFSIZE):
        raise ValueError(f"bufsize must be an int of at least 1024 bytes and at most {MAX_BUFSIZE} "
                         f"(or None for the default), got {bufsize!r}")
    family = loopback_host("host", host)
    listener = socket.socket(family, socket.SOCK_STREAM)
    client = socket.socket(family, socket.SOCK_STREAM)
    try:
        for sock in (listener, client):
            if bufsize is not None:  # before listen()/connect(): the window scale is agreed in the handshake
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        listener.bind((host, 0))
        listener.listen(1)
        listener.settimeout(5.0)
        client.settimeout(5.0)
        client.connect(listener.getsockname()[:2])
        server, _ = listener.accept()
    except BaseException:
        client.close()
        raise
    finally:
        listener.close()
    client.settimeout(None)
    server.settimeout(None)
    return client, server


def fill_send_queue(sock: socket.socket, *, limit: int = 64 * 1024 * 1024) -> int:
    """Write zeros without blocking until the kernel refuses (EAGAIN); return the bytes taken.

    Afterwards the peer's receive buffer is full and the rest waits in `sock`'s send queue.
    `limit` (bytes) is a safety stop for a peer that keeps reading; the socket is left
    blocking again. Raises TypeError/ValueError for a `sock` that is not an open, connected
    stream socket, or a `limit` that is not a positive int.
    """
    check_connection(sock, "fill_send_queue")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive number of bytes (an int), got {limit!r}")
    chunk = bytes(64 * 1024)
    total = 0
    sock.setblocking(False)
    try:
        while total < limit:
            try:
                total += sock.send(chunk[: limit - total])
            except BlockingIOError:
                break
    finally:
        sock.setblocking(True)
    return total


def drain(sock: socket.socket, *, timeout_s: float = 5.0) -> int:
    """Read and drop everything until EOF; return the byte count.

    Raises TimeoutError if the peer neither sends nor closes for `timeout_s` seconds
    (a number in (0, 600]).
    """
    check_connection(sock, "drain")
    checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
    total = 0
    sock.settimeout(timeout_s)
    try:
        while data := sock.recv(256 * 1024):
            total += len(data)
    except TimeoutError:
        raise TimeoutError(f"no EOF within {timeout_s} s after {total} bytes: has the peer shut down?") from None
    finally:
        sock.settimeout(None)
    return total


def queued(sock: socket.socket) -> tuple[int, int]:
    """(inq, outq) in bytes: received but not yet read (SIOCINQ), and written but not yet
    acknowledged by the peer, sent or not (SIOCOUTQ). A FIN not yet acknowledged counts 1
    in outq."""
    check_connection(sock, "queued")
    buf = struct.pack("i", 0)
    inq = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf))[0]
    outq = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf))[0]
    return inq, outq


def wait_for_state(
    sock: socket.socket, states: str | TcpState | Iterable[str | TcpState], *, timeout_s: float = 2.0
) -> tuple[TcpState, float]:
    """Poll TCP_INFO until `sock` is in one of `states`; return (state, seconds waited).

    Raises TimeoutError naming the state it stayed in.
    """
    tcp_info(sock)  # TypeError/ValueError for a non-TCP or closed socket, before waiting
    wanted = TcpState.parse_all(states)
    checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
    started = time.perf_counter()
    while True:
        state = tcp_info(sock).state
        waited = time.perf_counter() - started
        if state in wanted:
            return state, waited
        if waited > timeout_s:
            names = ", ".join(sorted(s.name for s in wanted))
            raise TimeoutError(f"socket stayed in {state.name} for {timeout_s} s, waiting for {names}")
        time.sleep(POLL_S)


def wait_for_inq(sock: socket.socket, nbytes: int, *, timeout_s: float = 2.0) -> int:
    """Poll SIOCINQ until at least `nbytes` wait unread in `sock`'s receive queue; return
    how many do. Raises TimeoutError with the count reached."""
    check_connection(sock, "wait_for_inq")
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"nbytes must be >= 0 (an int), got {nbytes!r}")
    checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
    deadline = time.perf_counter() + timeout_s
    while (inq := queued(sock)[0]) < nbytes:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {inq} of {nbytes} bytes arrived within {timeout_s} s")
        time.sleep(POLL_S)
    return inq


def wait_for_acked(sock: socket.socket, *, timeout_s: float = 2.0) -> float:
    """Poll SIOCOUTQ until the peer's kernel has acknowledged every byte written on `sock`;
    return the seconds waited. Raises TimeoutError with the bytes still unacknowledged.

    An ACK says the bytes are in the peer's receive queue: its kernel has them, not yet
    its program (a frozen or crashed program never reads them).
    """
    check_connection(sock, "wait_for_acked")
    checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
    started = time.perf_counter()
    while (outq := queued(sock)[1]) > 0:
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"{outq} bytes still unacknowledged after {timeout_s} s")
        time.sleep(POLL_S)
    return time.perf_counter() - started


def lookup(local: tuple[str, int], remote: tuple[str, int]) -> SocketTable:
    """The socket-table row of one 4-tuple (local, remote), as a SocketTable of 0 or 1 rows.

    observe.socket_table asks the kernel for that connection alone (NETLINK_SOCK_DIAG, as
    ``ss`` does) when given the whole 4-tuple, so this stays fast however many sockets the
    machine has. Both ends must be (host, port) pairs on loopback.
    """
    local, remote = loopback_address("local", local), loopback_address("remote", remote)
    return SocketTable(e for e in socket_table(local=local, remote=remote) if e.state is not TcpState.LISTEN)


def both_ends(sock: socket.socket) -> SocketTable:
    """Both ends of a connected socket's connection, this end first (like observe.entries_for,
    but with two exact lookups instead of two reads of the whole table)."""
    _connected(sock, "both_ends")
    local, remote = sock.getsockname()[:2], sock.getpeername()[:2]
    return SocketTable([*lookup(local, remote), *lookup(remote, local)])


def wait_for_row(
    local: tuple[str, int],
    remote: tuple[str, int],
    states: str | TcpState | Iterable[str | TcpState],
    *,
    timeout_s: float = 2.0,
) -> SocketEntry:
    """Poll the 4-tuple (local, remote) until the kernel shows it in one of `states`.

    For sockets that have no fd any more (after close(): FIN_WAIT2, TIME_WAIT, ...); both ends
    must be on loopback (``observe.wait_for_row`` does the waiting). Raises TimeoutError with
    what the kernel showed instead.
    """
    local, remote = loopback_address("local", local), loopback_address("remote", remote)
    return observe.wait_for_row(local, remote, states, timeout_s=timeout_s)


def signal_name(returncode: int | None) -> str:
    """How a child ended, in words: 'exit 0', 'killed by SIGPIPE', or 'still running'."""
    if returncode is not None and (isinstance(returncode, bool) or not isinstance(returncode, int)):
        raise TypeError(f"returncode must be an int (Popen.returncode) or None, got {returncode!r}")
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


@dataclass
class ChildResult:
    """What a finished child left: its return code (negative = killed by that signal) and output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def how(self) -> str:
        """The end in words, e.g. 'killed by SIGPIPE'."""
        return signal_name(self.returncode)


class ChildProcess:
    """``python -c code *args`` as a child process that is always reaped.

    Use it as a context manager: on exit a child still running is killed (SIGKILL) and
    waited for, and its pipes are closed, whatever happened in the block.
    """

    def __init__(self, code: str, *args: object):
        if not isinstance(code, str) or not code.strip():
            raise ValueError(f"ChildProcess needs Python source code to run with python -c, got {code!r}")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def wait(self, timeout_s: float = 10.0) -> ChildResult:
        """Wait for the child to end and collect its output.

        Raises TimeoutError (after killing and reaping it) if it runs longer than `timeout_s`,
        ValueError (leaving the child alone) if `timeout_s` is not a number in (0, 600].
        """
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S)
        try:
            out, err = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.close()
            raise TimeoutError(f"child {self.pid} still ran after {timeout_s} s; it was killed") from None
        return ChildResult(self.process.returncode, out, err)

    def close(self) -> None:
        """Kill the child if it still runs, reap it, close its pipes. Safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()  # reaps and closes the pipes

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def four_endings() -> dict:
    """Four connections to one listener, ended four ways, for ``helpers.capture.capture()``.

    1. the client half-closes (shutdown(SHUT_WR)); the server still answers, then closes;
    2. the server sends 1000 bytes the client never reads; the client close()s;
    3. the client sets SO_LINGER {1, 0} and close()s, with nothing unread;
    4. the client dup()s its socket, close()s one descriptor, then shutdown(SHUT_WR)s the other.
    Returns what each connection's far end saw, as plain data.
    """
    import socket
    import struct
    import time

    def pair(srv: socket.socket) -> tuple[socket.socket, socket.socket]:
        client = socket.create_connection(srv.getsockname())
        return client, srv.accept()[0]

    def peer_saw(conn: socket.socket) -> str:
        try:
            return "EOF" if conn.recv(100) == b"" else "data"
        except ConnectionResetError:
            return "ECONNRESET"

    srv = socket.create_server(("127.0.0.1", 0))
    watch(srv.getsockname()[1])
    out: dict = {}
    client, conn = pair(srv)  # 1. half-close: the server reads to EOF, then still answers
    client.sendall(b"REPORT please\n")
    client.shutdown(socket.SHUT_WR)
    mark("client shutdown(SHUT_WR)")
    request = b""
    while chunk := conn.recv(100):
        request += chunk
    conn.sendall(b"200 OK, report follows\n")
    conn.close()
    mark("server close()", "Server")
    reply = b""
    while chunk := client.recv(100):
        reply += chunk
    client.close()
    out["half_close"] = {"request": len(request), "reply": len(reply)}
    client, conn = pair(srv)  # 2. close() with 1000 bytes unread
    conn.sendall(b"x" * 1000)
    time.sleep(0.02)  # the bytes land in the client's receive queue
    mark("client close(), 1000 bytes unread")
    client.close()
    out["unread"] = peer_saw(conn)
    conn.close()
    client, conn = pair(srv)  # 3. SO_LINGER {on, 0 s}: close() aborts
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    mark("client close() with SO_LINGER 0")
    client.close()
    out["linger0"] = peer_saw(conn)
    conn.close()
    client, conn = pair(srv)  # 4. two descriptors: close() one, then shutdown() the other
    copy = client.dup()
    mark("client close() of one of two descriptors")
    client.close()
    time.sleep(0.02)  # a FIN would show up here, if close() sent one
    mark("client shutdown(SHUT_WR) on the other")
    copy.shutdown(socket.SHUT_WR)
    out["dup"] = peer_saw(conn)
    copy.close()
    conn.close()
    srv.close()
    return out
