"""Checks for the exercises of lesson 15 (poll and non-blocking I/O).

1. ``accept_ready(listener)``: poll() said the non-blocking listener is readable; accept
   every connection waiting, without ever blocking, and return the live ones, non-blocking.
   The check queues three connections and, after poll() reported the listener readable,
   resets the middle one (SO_LINGER 0, close): Linux still hands it to accept(), with
   SO_ERROR = ECONNRESET, and the answer must leave it out. Then one more connection
   arrives, poll() says readable, and another accept() takes it first (as a second worker
   sharing the listener would): the queue is empty and the answer must be [] at once.
2. ``connect_nonblocking(address, timeout_s)``: a connect with a deadline, the
   non-blocking way (EINPROGRESS, poll() for POLLOUT, SO_ERROR). Against a listener it
   returns the connected socket; against a bound port nobody listens on it raises the
   kernel's ECONNREFUSED; against a listener whose accept queue is full the kernel drops
   the SYN (the listener's drop counter moves), so only the deadline ends the wait: it
   raises TimeoutError, and its socket must be closed, not left in SYN_SENT retrying.
3. ``exchange(sock, poller, message)``: send 4 MiB to an echo server and read the echo
   back on one poll() loop, with small buffers on both sides, so a loop that sends
   everything before reading deadlocks. The rest of the message waits in an output buffer,
   and POLLOUT is asked for only while that buffer holds bytes: the check hands over a
   real poll object that notes, at every poll() call, whether POLLOUT was registered and
   whether the kernel had already taken every byte of the message (TCP_INFO's bytes_acked
   plus SIOCOUTQ: all that send() ever accepted).
"""

from __future__ import annotations

import errno
import hashlib
import os
import select
import socket
import struct
import time
from typing import Any

from ..closing import queued
from ..observe import TcpState, socket_drops, socket_table, tcp_info
from ..servers import TCPServer
from .core import Trial, exercise

LINGER_0 = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}: close() sends RST
SETTLE_S = 2.0  # the longest the check waits for loopback to settle (it takes microseconds)


def _wait(condition: Any, what: str) -> None:
    """Wait until `condition()` is true (loopback settles within microseconds); RuntimeError if not."""
    deadline = time.monotonic() + SETTLE_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the check could not stage {what} within {SETTLE_S} s")
        time.sleep(0.001)


def _peer(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None


# -- 1. accept_ready -----------------------------------------------------------------------

ACCEPT_HINT = (
    "Loop: conn, _ = listener.accept() inside try. BlockingIOError means the queue is empty: "
    "return what you have. ConnectionAbortedError (other systems report a reset connection so) "
    "means skip it and go on. After each accept(), read conn.getsockopt(socket.SOL_SOCKET, "
    "socket.SO_ERROR): not 0 means the client reset it while it waited, so close it and go on; "
    "else conn.setblocking(False) and keep it."
)


@exercise("15", 1, "a non-blocking accept that survives a reset", hint=ACCEPT_HINT)
def check_accept_ready(t: Trial, accept_ready: object) -> str:
    listener = t.own(socket.create_server(("127.0.0.1", 0), backlog=8))
    listener.setblocking(False)
    address = listener.getsockname()
    good1, reset, good2 = (t.connect(address) for _ in range(3))
    _wait(lambda: tcp_info(listener).unacked == 3, "three connections in the accept queue")
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    if not poller.poll(1000):
        raise RuntimeError("poll() did not report the listener readable with three connections queued")
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
    reset_address = reset.getsockname()
    reset.close()  # between readiness and accept(): the client resets
    _wait(lambda: not socket_table(local=address, remote=reset_address), "the reset")
    waiting = tcp_info(listener).unacked  # for a LISTEN socket: the accept queue's length

    out = t.call(accept_ready, listener, name="accept_ready(listener)", timeout_s=1.0, error_hints={
        BlockingIOError: "accept() raises BlockingIOError once the queue is empty: catch it and return the list.",
        OSError: "accept() handed you the connection that was reset: a call on it failed. Read SO_ERROR right "
                 "after accept() and close the connection if it is not 0.",
    }, hang_hint="accept() waited: the listener became blocking. Keep it as it was given, non-blocking.")
    conns = out.value
    t.require(isinstance(conns, list) and all(isinstance(c, socket.socket) for c in conns),
              f"accept_ready() returned {conns!r:.60}, not a list of sockets.", ACCEPT_HINT)
    for conn in conns:
        t.own(conn)
    left = tcp_info(listener).unacked
    t.require(left == 0, f"{waiting} connections waited in the accept queue; after accept_ready() {left} still did.",
              "Accept in a loop until accept() raises BlockingIOError: one readiness report can stand for many.")
    live = {good1.getsockname(), good2.getsockname()}
    states = [tcp_info(c).state.name for c in conns]
    t.require(all(_peer(c) in live for c in conns), f"accept_ready() returned {len(conns)} sockets, in states "
              f"{states}: one is the connection the client reset after poll() said readable (CLOSE, no peer "
              "any more).", "Right after accept(), read SO_ERROR: ECONNRESET (not 0) means close it and go on.")
    t.require(len(conns) == 2, f"accept_ready() returned {len(conns)} sockets; two live connections waited.",
              ACCEPT_HINT)
    t.require(all(not c.getblocking() for c in conns), "The connections you returned are blocking: one slow client "
              "would then stop the whole loop.", "Call conn.setblocking(False) on each one you keep.")
    t.require(not listener.getblocking(), "accept_ready() made the listener blocking.",
              "Leave the listener non-blocking: that is what makes an empty queue an error instead of a wait.")

    late = t.connect(address)
    _wait(lambda: tcp_info(listener).unacked == 1, "one more connection in the accept queue")
    if not poller.poll(1000):
        raise RuntimeError("poll() did not report the listener readable with a connection queued")
    other, _ = listener.accept()  # a second worker sharing the listener gets there first
    t.own(other)
    out = t.call(accept_ready, listener, name="accept_ready(listener)", timeout_s=1.0, error_hints={
        BlockingIOError: "poll() said readable, but another accept() took the connection first: accept() then "
                         "raises BlockingIOError. Catch it and return what you have (here: nothing)."},
                 hang_hint="poll() said readable, but another accept() took the connection first, and yours "
                           "waited. Keep the listener non-blocking: then accept() raises BlockingIOError instead.")
    t.require(out.value == [], f"The queue was empty (another accept() had taken {late.getsockname()[1]}'s "
              f"connection), but accept_ready() returned {out.value!r:.60}.", ACCEPT_HINT)
    return (f"{waiting} connections waited and poll() said POLLIN; then a client reset its connection. "
            f"accept_ready() took all {waiting} off the queue and returned the 2 live ones, non-blocking. When "
            f"another accept() had emptied the queue after poll() said readable, it returned [] in "
            f"{out.wall_s * 1e3:.1f} ms instead of waiting.")


# -- 2. connect_nonblocking ----------------------------------------------------------------

CONNECT_HINT = (
    "sock = socket.socket(); sock.setblocking(False); sock.connect_ex(address) returns "
    "EINPROGRESS. Then p = select.poll(); p.register(sock, select.POLLOUT); p.poll(timeout_s * 1000) "
    "(milliseconds!). Nothing came back: close the socket, raise TimeoutError. Else err = "
    "sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR): not 0 means the connect failed: close, "
    "raise OSError(err, os.strerror(err)). 0: return sock."
)
FULL_TIMEOUT_S = 0.3  # the deadline the check gives against the full accept queue
FULL_LIMIT_S = 0.9  # 3x that, and before the SYN's first retransmission (1 s): a connect that waited longer


def _listener(t: Trial, backlog: int) -> socket.socket:
    sock = t.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


@exercise("15", 2, "a connect with a timeout, the non-blocking way", hint=CONNECT_HINT)
def check_connect_nonblocking(t: Trial, connect_nonblocking: object) -> str:
    roomy = _listener(t, 8)
    address = roomy.getsockname()
    sock = t.call(connect_nonblocking, address, 1.0, name="connect_nonblocking()", timeout_s=3.0).value
    t.require(isinstance(sock, socket.socket), f"connect_nonblocking() returned {sock!r:.60}, not a socket.",
              CONNECT_HINT)
    t.own(sock)
    state = tcp_info(sock).state
    t.require(state is TcpState.ESTABLISHED and _peer(sock) == address, f"The socket connect_nonblocking() "
              f"returned is {state.name}, connected to {_peer(sock)}, not to {address}.", CONNECT_HINT)

    closed = t.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the kernel answers a SYN with RST
    out = t.call(connect_nonblocking, closed.getsockname(), 1.0, name="connect_nonblocking()", timeout_s=3.0,
                 expect=(OSError,))
    if out.error is None:
        got = out.value
        what = f"{got!r:.60}"
        if isinstance(got, socket.socket):
            what = f"a socket in state {tcp_info(t.own(got)).state.name}"
        t.fail(f"Nobody listens on port {closed.getsockname()[1]}, so the kernel answered the SYN with a RST, but "
               f"connect_nonblocking() returned {what} instead of raising.", "POLLOUT comes when the "
               "connect ends, well or badly: read SO_ERROR, and raise OSError(err, os.strerror(err)) if it is not 0.")
    err = out.error
    t.require(isinstance(err, OSError) and err.errno == errno.ECONNREFUSED, f"Against a port nobody listens on, "
              f"connect_nonblocking() raised {err!r:.80}; the kernel's answer was ECONNREFUSED.",
              "Raise OSError(err, os.strerror(err)) with the err SO_ERROR gave: Python makes it a "
              "ConnectionRefusedError.")

    full = _listener(t, 0)  # listen(0): room for one connection in the accept queue
    t.connect(full.getsockname())  # takes it: the kernel now drops every SYN
    _wait(lambda: tcp_info(full).unacked == 1, "a full accept queue")
    before = socket_drops(full)
    out = t.call(connect_nonblocking, full.getsockname(), FULL_TIMEOUT_S, name="connect_nonblocking()",
                 timeout_s=3.0, expect=(OSError,), hang_hint=(
                     "The accept queue was full, so the kernel dropped the SYN and the connect waits for a "
                     "retransmission. Give poll() the timeout, in milliseconds: timeout_s * 1000."))
    dropped = socket_drops(full) - before if before is not None else None
    seen = f" (the listener counted {dropped} dropped SYN{'s' * (dropped != 1)})" if dropped is not None else ""
    if isinstance(out.value, socket.socket):
        t.own(out.value)
    t.require(isinstance(out.error, TimeoutError), f"The accept queue was full and the kernel dropped the SYN{seen}; "
              f"connect_nonblocking(address, {FULL_TIMEOUT_S}) gave {out.error or out.value!r:.80} after "
              f"{out.wall_s:.2f} s.", "When poll() returns an empty list, the time is up: close the socket and "
              "raise TimeoutError.")
    t.require(out.wall_s >= 0.8 * FULL_TIMEOUT_S, f"connect_nonblocking() raised TimeoutError after "
              f"{out.wall_s:.3f} s; it was given {FULL_TIMEOUT_S} s.", "poll() counts in milliseconds: pass "
              "timeout_s * 1000, not timeout_s.")
    t.require(out.wall_s < FULL_LIMIT_S, f"connect_nonblocking() raised TimeoutError, but only after "
              f"{out.wall_s:.2f} s; it was given {FULL_TIMEOUT_S} s.", "Give poll() the timeout: timeout_s * 1000.")
    stuck = socket_table(remote=full.getsockname(), states=["SYN_SENT"])
    t.require(not stuck, f"After the TimeoutError, {len(stuck)} socket(s) still sat in SYN_SENT towards the full "
              "listener, retrying the SYN: yours was never closed.", "Close the socket before raising.")
    return (f"connect_nonblocking() connected to a listener, raised ConnectionRefusedError where nobody listened, "
            f"and against a full accept queue, where the kernel dropped the SYN{seen}, gave up after "
            f"{out.wall_s:.2f} s with TimeoutError and closed its socket.")


# -- 3. exchange ---------------------------------------------------------------------------

MESSAGE_BYTES = 4 << 20  # far more than the buffers on the way hold
SMALL_BUF = 64 << 10  # SO_SNDBUF and SO_RCVBUF on both sides (the kernel doubles them)
EXCHANGE_HINT = (
    "Keep out = memoryview(message), the bytes the kernel has not taken yet, and echo = bytearray(). "
    "Loop until the echo is complete: poller.modify(sock, POLLIN | POLLOUT) while out is not empty, "
    "poller.modify(sock, POLLIN) once it is; then for each event from poller.poll(): on POLLOUT, "
    "sent = sock.send(out) and out = out[sent:]; on POLLIN, echo += sock.recv(65536)."
)


class WatchedPoll:
    """A real ``select.poll()`` object that takes notes for the check: it is an instrument
    around the system call, not a stand-in (every ``poll()`` here is a poll(2)).

    At each ``poll()`` call it notes whether POLLOUT was registered for `sock`, and whether
    the kernel had by then taken every byte of the message: TCP_INFO's ``bytes_acked`` plus
    the send queue (SIOCOUTQ) is everything send() ever accepted. (Read in that order: an
    ACK arriving in between can only make the sum smaller, never claim bytes not sent.)
    """

    def __init__(self, sock: socket.socket, total: int):
        self._poll = select.poll()
        self._sock, self._fd, self._total = sock, sock.fileno(), total
        self._masks: dict[int, int] = {}
        self.calls: list[tuple[bool, bool]] = []  # (POLLOUT registered, the kernel had taken everything)
        self.measurable = tcp_info(sock).bytes_acked is not None  # Linux 4.1 and later

    @staticmethod
    def _fd_of(fd: Any) -> int:
        return fd.fileno() if hasattr(fd, "fileno") else fd

    def register(self, fd: Any, eventmask: int = select.POLLIN | select.POLLPRI | select.POLLOUT) -> None:
        self._poll.register(fd, eventmask)
        self._masks[self._fd_of(fd)] = eventmask

    def modify(self, fd: Any, eventmask: int) -> None:
        self._poll.modify(fd, eventmask)
        self._masks[self._fd_of(fd)] = eventmask

    def unregister(self, fd: Any) -> None:
        self._poll.unregister(fd)
        self._masks.pop(self._fd_of(fd), None)

    def taken(self) -> int:
        """Bytes send() has accepted on `sock` so far (-1 if it cannot be read now)."""
        try:
            acked = tcp_info(self._sock).bytes_acked or 0
            return acked + queued(self._sock)[1]
        except (OSError, TypeError, ValueError):  # the learner closed the socket
            return -1

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        wants_out = bool(self._masks.get(self._fd, 0) & select.POLLOUT)
        everything = self.measurable and self.taken() >= self._total
        self.calls.append((wants_out, everything))
        return self._poll.poll(timeout)


def _echo(conn: socket.socket) -> int:
    """The check's echo server: small buffers, echo until end of file; returns the bytes echoed."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
    total = 0
    while data := conn.recv(65536):
        conn.sendall(data)
        total += len(data)
    return total


@exercise("15", 3, "partial writes into an output buffer", hint=EXCHANGE_HINT)
def check_exchange(t: Trial, exchange: object) -> str:
    message = os.urandom(MESSAGE_BYTES)
    with TCPServer(_echo) as server:
        sock = t.socket()
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):  # before connect(): small from the handshake on
            sock.setsockopt(socket.SOL_SOCKET, option, SMALL_BUF)
        sock.settimeout(5.0)
        sock.connect(server.address)
        sock.setblocking(False)
        poller = WatchedPoll(sock, len(message))
        poller.register(sock, select.POLLIN)
        out = t.call(exchange, sock, poller, message, name="exchange()", timeout_s=4.0, error_hints={
            BlockingIOError: "send(), recv() or sendall() on the non-blocking socket found no room or no data. "
                             "Call send() only after POLLOUT and recv() only after POLLIN, and keep what send() "
                             "did not take in your output buffer (sendall() does not say how much it sent)."},
            hang_hint="Nothing moved any more: the echo server stops reading while its echo has nowhere to go, so "
                      "a loop that only sends, or only waits for room, waits for ever. Wait for POLLIN and "
                      "POLLOUT together, and read whatever arrives.")
        echo = out.value
        t.require(isinstance(echo, (bytes, bytearray)), f"exchange() returned {echo!r:.60}, not the bytes echoed.",
                  EXCHANGE_HINT)
        sock.shutdown(socket.SHUT_WR)  # end of file for the echo server
        echoed = server.result(timeout_s=5.0)
    t.require(len(echo) == len(message) and hashlib.sha256(echo).digest() == hashlib.sha256(message).digest(),
              f"The server echoed {echoed:,} bytes; exchange() returned {len(echo):,}"
              f"{', not the same bytes' if len(echo) == len(message) else ''} of the {len(message):,} sent.",
              "Send out[sent:] after a partial send(), and return everything recv() gave, in order.")
    calls = poller.calls
    t.require(calls, "exchange() never called poller.poll().", "Wait with the poller you are given: it already "
              "watches sock for POLLIN.")
    waited_for_room = sum(1 for wants_out, everything in calls if wants_out and not everything)
    t.require(waited_for_room, f"poll() was called {len(calls)} times and never had POLLOUT registered while "
              "bytes of the message waited to be sent.", "While the output buffer holds bytes, "
              "poller.modify(sock, select.POLLIN | select.POLLOUT): POLLOUT says when send() will take more.")
    needless = sum(1 for wants_out, everything in calls if wants_out and everything)
    t.require(not needless, f"After the kernel had taken all {len(message):,} bytes, poll() was called {needless} "
              f"times with POLLOUT still registered, and returned at once each time: an idle socket is always "
              "writable.", "Once the output buffer is empty, poller.modify(sock, select.POLLIN).")
    note = "" if poller.measurable else " (this kernel's TCP_INFO has no bytes_acked: the POLLOUT rule was not timed)"
    return (f"exchange() sent {len(message):,} bytes through {SMALL_BUF >> 10} KiB buffers and read the echo back "
            f"intact in {out.wall_s:.2f} s over {len(calls)} poll() calls. POLLOUT was registered for "
            f"{waited_for_room} of them, all while bytes waited in your output buffer, and never after.{note}")
