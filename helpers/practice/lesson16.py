"""Checks for the exercises of lesson 16 (epoll).

1. ``drain(sock)``: what an edge-triggered loop calls on EPOLLIN: read until recv() raises
   BlockingIOError (EAGAIN) or returns b"" (end of file), and return everything read. The
   check runs its own edge-triggered epoll: pieces larger than one recv() on a TCP
   connection, five datagrams queued behind one report on a datagram socket, then the
   peer's FIN. After each report it reads the receive queue (SIOCINQ): bytes left there
   get no second report, which the check shows by waiting once more.
2. ``send_or_queue(ep, sock, out, data)`` and ``on_writable(ep, sock, out)``: the output
   buffer of a level-triggered loop, with EPOLLOUT in the interest list only while bytes
   wait in `out`. The check's peer reads slowly; the check reads the interest list the
   kernel keeps (/proc/self/fdinfo) after every call, and the bytes the peer received.
3. ``closed_by_peer(sock)``: whether the peer has shut down its sending side, asked of a
   fresh epoll with EPOLLRDHUP and timeout 0, without reading anything. The check tries
   four connections: data and no FIN, data then FIN, nothing, FIN alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import socket
import struct
import termios
import threading
import time
from contextlib import ExitStack

from ..closing import connected_pair, queued, wait_for_inq, wait_for_state
from ..multiplex import event_names
from ..observe import epoll_interest
from .core import Trial, exercise

IN, OUT, ET, RDHUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLET, select.EPOLLRDHUP

# -- 1. drain ------------------------------------------------------------------------------

PIECES = (1_000, 150_000, 7, 120_000)  # bytes per piece on TCP: two are larger than any usual recv() size
DATAGRAMS = (300, 1_200, 45, 800, 2_000)  # sent before one wait: one report for all five
LAST_PIECE = 2_000  # sent just before the FIN
BUFSIZE = 256 << 10  # SO_SNDBUF/SO_RCVBUF of the TCP pair: a whole piece fits in the receive queue
QUIET_S = 0.2  # how long the check waits to show that edge-triggered epoll stays silent

DRAIN_HINT = (
    "Loop: data = sock.recv(65536); on BlockingIOError (EAGAIN) the queue is empty: stop and return "
    "what you collected; on b'' (end of file) stop too; otherwise keep the data and call recv() again. "
    "One recv() per report is the level-triggered habit: edge-triggered epoll does not report the rest."
)


def _bytes(t: Trial, value: object) -> bytes:
    t.require(isinstance(value, (bytes, bytearray, memoryview)), f"drain() returned {value!r:.60}, not bytes.",
              "Collect what each recv() returned and return b''.join(chunks).")
    return bytes(value)  # type: ignore[arg-type]


def _report(t: Trial, ep: select.epoll, what: str) -> None:
    """Wait for the edge-triggered report of new data; a missing one is the check's fault."""
    got = ep.poll(2.0)
    if not got:
        raise RuntimeError(f"edge-triggered epoll did not report {what}")


def _waiting(sock: socket.socket) -> int:
    """Bytes still queued: the whole queue on a stream socket, the next datagram on a datagram one
    (FIONREAD, as man 7 unix describes it for each type)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)))[0]


def _drained(t: Trial, drain: object, ep: select.epoll, sock: socket.socket, what: str, expected: bytes) -> bytes:
    """Call drain() once after a report; fail with what was left behind and epoll's silence."""
    data = _bytes(t, t.call(drain, sock, name="drain()", timeout_s=1.0, error_hints={
        BlockingIOError: "recv() on a non-blocking socket raises BlockingIOError once the queue is empty: catch it, "
                         "it means 'all read', and return what you have."},
        hang_hint="recv() returns b'' at end of file, again and again: stop there too.").value)
    if _waiting(sock):
        later = event_names(ep.poll(QUIET_S))
        said = "nothing" if later == "-" else later
        t.fail(f"After {what}, epoll reported EPOLLIN once; drain() returned {len(data):,} of {len(expected):,} "
               f"bytes and left the rest in the receive queue. Edge-triggered epoll then reported {said} for "
               f"{QUIET_S:g} s: with no new data, nobody would ever tell the loop about them.", DRAIN_HINT)
    t.require(data == expected, f"After {what} drain() returned {len(data):,} bytes, but {len(expected):,} had "
              "been sent, or not in the order sent.", "Keep every chunk recv() returned, in order.")
    return data


@exercise("16", 1, "drain(): read until EAGAIN for an edge-triggered loop", hint=DRAIN_HINT)
def check_drain(t: Trial, drain: object) -> str:
    with ExitStack() as stack:
        writer, reader = (t.own(s) for s in connected_pair(bufsize=BUFSIZE))
        reader.setblocking(False)
        ep = stack.enter_context(select.epoll())
        ep.register(reader.fileno(), IN | ET)
        for size in PIECES:
            piece = os.urandom(size)
            writer.sendall(piece)
            wait_for_inq(reader, size)  # the whole piece has arrived: one report covers it all
            _report(t, ep, f"a piece of {size:,} bytes")
            _drained(t, drain, ep, reader, f"a piece of {size:,} bytes arrived", piece)

        tx, rx = (t.own(s) for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
        rx.setblocking(False)
        dgram_ep = stack.enter_context(select.epoll())
        dgram_ep.register(rx.fileno(), IN | ET)
        datagrams = [os.urandom(n) for n in DATAGRAMS]
        for d in datagrams:
            tx.send(d)  # a Unix datagram is in the peer's queue when send() returns
        _report(t, dgram_ep, "five datagrams")
        _drained(t, drain, dgram_ep, rx, f"{len(datagrams)} datagrams arrived", b"".join(datagrams))

        last = os.urandom(LAST_PIECE)
        writer.sendall(last)
        writer.shutdown(socket.SHUT_WR)  # FIN: end of file after the last piece
        wait_for_state(reader, "CLOSE_WAIT")
        _report(t, ep, "the last piece and the FIN")
        _drained(t, drain, ep, reader, f"{LAST_PIECE:,} bytes and the peer's FIN arrived", last)
    return (f"After each edge-triggered report drain() left nothing behind: pieces of "
            f"{', '.join(f'{n:,}' for n in PIECES)} bytes on TCP, {len(DATAGRAMS)} datagrams behind a single "
            f"report, and the last {LAST_PIECE:,} bytes, stopping at the end of file.")


# -- 2. EPOLLOUT only while output is queued -----------------------------------------------

SMALL = b"hello"
BIG = 2 << 20  # bytes: far more than the buffers below hold, so most must wait in `out`
WRITE_BUFSIZE = 32 << 10  # SO_SNDBUF/SO_RCVBUF of the pair (the kernel doubles them)
READ_CHUNK, READ_PAUSE_S = 64 << 10, 0.005  # the slow peer: 64 KiB, then a pause
DEADLINE_S = 5.0  # the whole transfer, for a check that stalls
SPIN_S = 0.05  # how long the check counts wake-ups of a loop that watches EPOLLOUT for nothing

OUT_HINT = (
    "send_or_queue: if out is empty, try sock.send(data) at once (catch BlockingIOError); append what "
    "the kernel did not take to out; if out is not empty now, ep.modify(sock, EPOLLIN | EPOLLOUT). "
    "on_writable: send from out, del out[:sent]; when out is empty, ep.modify(sock, EPOLLIN). "
    "Both return how many bytes send() took (0 if none)."
)


def _watches_out(ep: select.epoll, sock: socket.socket) -> bool:
    """Does the kernel's interest list (read from /proc/self/fdinfo) hold EPOLLOUT for sock?"""
    entry = next((e for e in epoll_interest(ep) if e.fd == sock.fileno()), None)
    return entry is not None and bool(entry.events & OUT)


def _wakeups(ep: select.epoll) -> int:
    """How many times a loop waiting on `ep` would wake in SPIN_S (a level-triggered EPOLLOUT spins)."""
    woke, end = 0, time.monotonic() + SPIN_S
    while time.monotonic() < end:
        woke += bool(ep.poll(0.01))
    return woke


def _slow_reader(sock: socket.socket, go: threading.Event, result: dict) -> None:
    """The peer: wait for the go, then read in small pieces with pauses until EOF; hash what came."""
    digest, total = hashlib.sha256(), 0
    try:
        go.wait(DEADLINE_S)
        while data := sock.recv(READ_CHUNK):
            digest.update(data)
            total += len(data)
            time.sleep(READ_PAUSE_S)  # the experiment: a reader slower than the writer
    except OSError:  # the check shut the connection down
        pass
    result.update(total=total, digest=digest.hexdigest())


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or reset
        pass


@exercise("16", 2, "EPOLLOUT only while output is queued", hint=OUT_HINT)
def check_output_buffer(t: Trial, send_or_queue: object, on_writable: object) -> str:
    with ExitStack() as stack:
        sock, peer = (t.own(s) for s in connected_pair(bufsize=WRITE_BUFSIZE))
        sock.setblocking(False)
        ep = stack.enter_context(select.epoll())
        ep.register(sock.fileno(), IN)
        out = bytearray()
        call = {"error_hints": {BlockingIOError: "send() on a non-blocking socket raises BlockingIOError when the "
                                "buffer is full: catch it, and keep the bytes in out."}, "timeout_s": 1.0}
        t.call(send_or_queue, ep, sock, out, SMALL, name="send_or_queue()", **call)
        if _watches_out(ep, sock):
            t.fail(f"After send_or_queue() of {len(SMALL)} bytes, with {len(out)} left in out, epoll watched EPOLLOUT: "
                   f"level-triggered, it reported the idle socket {_wakeups(ep)} times in {SPIN_S * 1e3:.0f} ms.",
                   "Register EPOLLOUT only when bytes are left in out; a socket with room is always writable.")
        peer.settimeout(1.0)
        first = peer.recv(100)
        t.require(first == SMALL and not out, f"The peer received {first!r} and out held {len(out)} bytes after "
                  f"send_or_queue({SMALL!r}).", "With out empty, send() the data at once: it fits.")

        go, result = threading.Event(), {}
        reader = threading.Thread(target=_slow_reader, args=(peer, go, result), name="course-server-slow-reader",
                                  daemon=True)
        reader.start()
        stack.callback(reader.join, DEADLINE_S)
        stack.callback(_shut, peer)  # wakes the reader if the check stops early
        stack.callback(go.set)
        data = os.urandom(BIG)
        t.call(send_or_queue, ep, sock, out, data, name="send_or_queue()", **call)
        t.require(len(out) > 0, f"After send_or_queue() of {BIG:,} bytes out holds {len(out):,}: the kernel cannot "
                  f"have taken them all (its buffers hold about {4 * WRITE_BUFSIZE:,}).",
                  "Append to out what send() did not take.")
        t.require(_watches_out(ep, sock), f"{len(out):,} bytes wait in out, but epoll does not watch EPOLLOUT: "
                  "nothing will tell the loop when there is room.", "ep.modify(sock, EPOLLIN | EPOLLOUT) "
                  "once out is not empty.")
        go.set()
        waits, reports, deadline = 0, 0, time.monotonic() + DEADLINE_S
        while out and time.monotonic() < deadline:
            events = ep.poll(0.5)
            waits += 1
            if any(ev & OUT for _, ev in events):
                reports += 1
                t.call(on_writable, ep, sock, out, name="on_writable()", **call)
            elif not events and not _watches_out(ep, sock):
                t.fail(f"{len(out):,} bytes were still in out, but epoll no longer watched EPOLLOUT.",
                       "Switch EPOLLOUT off only once out is empty.")
        t.require(not out, f"After {DEADLINE_S:g} s, {len(out):,} bytes were still in out ({reports} EPOLLOUT "
                  "reports).", OUT_HINT)
        if _watches_out(ep, sock):
            t.fail(f"out is empty, but epoll still watches EPOLLOUT: in {SPIN_S * 1e3:.0f} ms the loop would have "
                   f"woken {_wakeups(ep)} times with nothing to write.",
                   "In on_writable(), once out is empty: ep.modify(sock, EPOLLIN).")
        sock.shutdown(socket.SHUT_WR)  # end of file for the peer: it reports what it received
        reader.join(DEADLINE_S)
    total = len(SMALL) + result.get("total", 0)
    t.require(result.get("total") == BIG and result.get("digest") == hashlib.sha256(data).hexdigest(),
              f"The peer received {total:,} of {len(SMALL) + BIG:,} bytes, or not in the order sent.",
              "on_writable(): send from the front of out and delete exactly what send() took.")
    return (f"A {len(SMALL)}-byte message went out at once with EPOLLIN alone; for {BIG:,} bytes to a slow reader "
            f"EPOLLOUT was on while they waited, {reports} EPOLLOUT reports in {waits} waits emptied out, and then "
            "the interest list held EPOLLIN alone again. The peer received every byte in order.")


# -- 3. closed_by_peer ---------------------------------------------------------------------

SENT = 1_000

RDHUP_HINT = (
    "with select.epoll() as ep: ep.register(sock, select.EPOLLRDHUP); events = ep.poll(0); return "
    "whether any event has the EPOLLRDHUP bit. EPOLLIN is no answer: it also means 'data to read'."
)


@exercise("16", 3, "closed_by_peer() with EPOLLRDHUP", hint=RDHUP_HINT)
def check_closed_by_peer(t: Trial, closed_by_peer: object) -> str:
    cases = [("sent 1,000 bytes, still open", True, False), ("sent 1,000 bytes, then shutdown(SHUT_WR)", True, True),
             ("sent nothing, still open", False, False), ("sent nothing, then shutdown(SHUT_WR)", False, True)]
    for what, sends, closes in cases:
        peer, sock = (t.own(s) for s in connected_pair())
        if sends:
            peer.sendall(os.urandom(SENT))
            wait_for_inq(sock, SENT)
        if closes:
            peer.shutdown(socket.SHUT_WR)
            wait_for_state(sock, "CLOSE_WAIT")  # the FIN has arrived
        before = queued(sock)[0]
        blocking = sock.getblocking()
        out = t.call(closed_by_peer, sock, name="closed_by_peer()", timeout_s=1.0,
                     hang_hint="Wait with timeout 0 (ep.poll(0)): the answer is needed now.")
        t.require(isinstance(out.value, bool), f"closed_by_peer() returned {out.value!r:.40}, not True or False.",
                  RDHUP_HINT)
        t.require(queued(sock)[0] == before, f"Peer {what}: closed_by_peer() took bytes off the receive queue "
                  f"({before:,} before, {queued(sock)[0]:,} after).", "Ask epoll; do not recv().")
        t.require(sock.getblocking() == blocking, "closed_by_peer() changed the socket's blocking mode.",
                  "Leave the socket as you found it: epoll needs no setblocking().")
        t.require(out.value == closes, f"Peer {what}: closed_by_peer() said {out.value}.",
                  RDHUP_HINT if not closes else "Register EPOLLRDHUP: the FIN sets it, data alone does not.")
        peer.close()
        sock.close()
    return ("closed_by_peer() told all four apart without reading a byte: True only after the peer's FIN, whether "
            f"{SENT:,} unread bytes came before it or none.")
