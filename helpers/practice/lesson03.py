"""Checks for the exercises of lesson 03 (reading and writing).

1. ``writen(sock, data)``: send all of `data` on a non-blocking socket, looping over partial
   send()s and waiting in select() while the buffer is full. The peer does not read for a
   moment, so the send buffer really fills: the check sees the partial send and the wait.
2. ``readn_into(sock, buf)``: fill `buf` with recv_into() from a peer that sends in pieces,
   and raise EOFError when the peer closes first.
3. ``waiting(sock)``: how many bytes wait in the receive queue, without taking them and
   without blocking (MSG_PEEK | MSG_DONTWAIT); the kernel's own count (SIOCINQ) is the
   reference.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

from ..closing import connected_pair, queued, wait_for_inq
from ..servers import TCPServer
from .core import Trial, exercise

# -- 1. writen -----------------------------------------------------------------------------

WRITEN_BYTES = 2 << 20  # far more than fits in the buffers below: send() must take part of it
WRITEN_SNDBUF = 64 << 10  # the writer's SO_SNDBUF (the kernel doubles it)
PEER_PAUSE_S = 0.3  # the peer reads nothing this long: the writer has to wait
SPIN_SHARE = 0.3  # a writer busy on the CPU this share of the time (and...)
SPIN_CPU_S = 0.1  # ...at least this long) was retrying send() instead of waiting

WRITEN_HINT = (
    "send() returns how many bytes the kernel took, often fewer than you passed. Loop until "
    "you have sent len(data) bytes, each time sending data[sent:]. When send() raises "
    "BlockingIOError the buffer is full: wait with select.select([], [sock], []) until the "
    "socket is writable, then try again. Return the list of counts send() returned."
)


def _paused_reader(conn: socket.socket) -> tuple[int, str]:
    """The peer: read nothing for PEER_PAUSE_S, then everything until EOF; (bytes, sha256)."""
    time.sleep(PEER_PAUSE_S)  # the experiment: a peer that is slow to read
    digest, total = hashlib.sha256(), 0
    try:
        while data := conn.recv(1 << 20):
            digest.update(data)
            total += len(data)
    except OSError:  # the check gave up and shut the connection down
        pass
    return total, digest.hexdigest()


@exercise("03", 1, "writen() on a non-blocking socket", hint=WRITEN_HINT)
def check_writen(t: Trial, writen: object) -> str:
    data = os.urandom(WRITEN_BYTES)  # random bytes: a repeated or skipped piece shows in the digest
    with TCPServer(_paused_reader) as peer:
        sock = t.connect(peer.address, sndbuf=WRITEN_SNDBUF)
        sock.setblocking(False)
        out = t.call(writen, sock, data, name="writen()", timeout_s=3.0, error_hints={
            BlockingIOError: "A full buffer makes send() (and sendall()) raise BlockingIOError on a non-blocking "
                             "socket. Catch it and wait with select.select([], [sock], []) before trying again.",
        }, hang_hint=WRITEN_HINT)
        counts = out.value
        t.require(isinstance(counts, list) and all(isinstance(c, int) for c in counts),
                  f"writen() returned {counts!r:.80}, not a list of counts.", WRITEN_HINT)
        t.require(sock.fileno() != -1, "writen() closed the socket.", "Leave closing to the caller: "
                  "the check still needs the socket to end the stream.")
        t.require(not sock.getblocking(), "writen() made the socket blocking, so send() waited for it.",
                  "Keep the socket non-blocking and do the waiting yourself, with select(): on a blocking "
                  "socket, sendall() is this very loop, written in C.")
        sock.shutdown(socket.SHUT_WR)  # end of file: the peer stops reading and reports
        received, digest = peer.result(timeout_s=5.0)
    t.require(received <= len(data), f"The peer received {received:,} bytes, more than the {len(data):,} "
              "in data: some were sent twice.", "After a partial send(), continue with data[sent:], not data.")
    t.require(received == len(data), f"The peer received {received:,} of {len(data):,} bytes: writen() returned "
              f"before everything was sent (send() returned {counts[:4]}{'...' if len(counts) > 4 else ''}).",
              WRITEN_HINT)
    t.require(digest == hashlib.sha256(data).hexdigest(), f"The peer received {received:,} bytes, the right "
              "number, but not the same bytes in the same order.",
              "Each send() must start where the last one stopped: data[sent:].")
    t.require(sum(counts) == len(data), f"The counts writen() returned add up to {sum(counts):,}, but "
              f"{len(data):,} bytes were sent.", "Append what each send() returned to the list.")
    spun = out.cpu_s > SPIN_CPU_S and out.cpu_s > SPIN_SHARE * out.wall_s
    t.require(not spun, f"Every byte arrived, but writen() kept the CPU busy for {out.cpu_s:.2f} s of its "
              f"{out.wall_s:.2f} s: it retried send() while the buffer was full.",
              "After BlockingIOError, wait until the socket is writable: select.select([], [sock], []).")
    return (f"writen() handed all {len(data):,} bytes to the kernel in {len(counts)} send() calls; the first took "
            f"only {counts[0]:,} (a partial send). The peer received every byte, in order, and while it was not "
            f"reading your loop waited: {out.cpu_s * 1e3:.0f} ms of CPU in {out.wall_s:.2f} s.")


# -- 2. readn_into -------------------------------------------------------------------------

PIECE, PIECES, PIECE_PAUSE_S = 4096, 8, 0.02  # the dribbling peer: 8 pieces of 4 KiB, 20 ms apart
SHORT_SENT, SHORT_ASKED = 1000, 2000  # the peer that closes early

READN_HINT = (
    "recv_into(view[got:]) writes the next bytes after those you already have and returns how "
    "many it wrote: often fewer than asked. Loop until the buffer is full, counting the calls; "
    "when recv_into() returns 0 the peer has closed (end of file): raise EOFError."
)


def _dribble(conn: socket.socket) -> int:
    for i in range(PIECES):
        conn.sendall(bytes([ord("A") + i]) * PIECE)
        time.sleep(PIECE_PAUSE_S)  # the experiment: the bytes arrive in pieces
    return PIECES


def _short_sender(conn: socket.socket) -> int:
    conn.sendall(b"x" * SHORT_SENT)
    return SHORT_SENT  # returning closes the connection: end of file for the reader


@exercise("03", 2, "readn_into() with recv_into()", hint=READN_HINT)
def check_readn_into(t: Trial, readn_into: object) -> str:
    expected = b"".join(bytes([ord("A") + i]) * PIECE for i in range(PIECES))
    buf = bytearray(len(expected))
    with TCPServer(_dribble) as peer:
        sock = t.connect(peer.address)
        calls = t.call(readn_into, sock, memoryview(buf), name="readn_into()", hang_hint=READN_HINT).value
        sock.close()
    filled = len(buf.rstrip(b"\0"))
    t.require(buf == expected, f"After readn_into() returned, the buffer held {filled:,} of {len(buf):,} "
              f"bytes in the order sent (it starts {bytes(buf[:6])!r}...).", READN_HINT)
    t.require(isinstance(calls, int) and calls >= 2, f"The buffer is right, but readn_into() returned "
              f"{calls!r:.40}; return how many recv_into() calls it made.", READN_HINT)

    with TCPServer(_short_sender) as peer:
        sock = t.connect(peer.address)
        short = bytearray(SHORT_ASKED)
        out = t.call(readn_into, sock, memoryview(short), name="readn_into()", timeout_s=1.0,
                     expect=(EOFError,), hang_hint="The peer closed after 1,000 of 2,000 bytes, so recv_into() "
                     "returns 0 from then on. A loop that keeps asking never ends: raise EOFError when it returns 0.")
        sock.close()
    t.require(isinstance(out.error, EOFError), f"The peer sent {SHORT_SENT:,} bytes and closed; readn_into() for "
              f"{SHORT_ASKED:,} returned {out.value!r:.40} instead of raising EOFError.",
              "When recv_into() returns 0 the buffer can never be filled: raise EOFError, so the caller "
              "cannot mistake a half-filled buffer for a whole one.")
    return (f"readn_into() filled all {len(buf):,} bytes in {calls} recv_into() calls, as the peer's "
            f"{PIECES} pieces of {PIECE:,} bytes arrived, and raised EOFError ({out.error}) when the peer "
            f"closed after {SHORT_SENT:,} of {SHORT_ASKED:,} bytes.")


# -- 3. waiting ----------------------------------------------------------------------------

WAITING_BYTES = 3000
WAITING_HINT = (
    "recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT) returns what waits without taking it "
    "off the queue (MSG_PEEK) and without waiting (MSG_DONTWAIT, for this one call); when "
    "nothing waits it raises BlockingIOError: return 0 then."
)


@exercise("03", 3, "waiting(): peek without blocking", hint=WAITING_HINT)
def check_waiting(t: Trial, waiting: object) -> str:
    writer, reader = (t.own(s) for s in connected_pair())
    empty = t.call(waiting, reader, name="waiting()", timeout_s=1.0, hang_hint="Nothing was waiting, and a "
                   "plain recv() waits for data. Add MSG_DONTWAIT to the flags, and return 0 on BlockingIOError.",
                   error_hints={BlockingIOError: "With MSG_DONTWAIT, recv() raises BlockingIOError when nothing "
                                "waits: catch it and return 0."}).value
    t.require(empty == 0, f"Nothing had been sent yet, but waiting() returned {empty!r:.40}.", WAITING_HINT)

    payload = os.urandom(WAITING_BYTES)
    writer.sendall(payload)
    inq = wait_for_inq(reader, WAITING_BYTES)
    count = t.call(waiting, reader, name="waiting()", timeout_s=1.0).value
    left = queued(reader)[0]
    t.require(left == inq, f"waiting() returned {count!r:.40}, but afterwards only {left:,} of the {inq:,} bytes "
              "were left to read: it took them off the receive queue.",
              "Add MSG_PEEK to the flags: the kernel then copies the bytes out but leaves them queued.")
    t.require(count == inq, f"{inq:,} bytes waited (the kernel's count, SIOCINQ), but waiting() returned "
              f"{count!r:.40}.", "Ask recv() for more than can wait (65536) and return the length of what it gave.")
    t.require(reader.gettimeout() is None, "waiting() left the socket non-blocking: the program's next recv() "
              "would raise BlockingIOError instead of waiting.",
              "Pass MSG_DONTWAIT to one call instead of changing the socket with setblocking(False).")
    t.require(reader.recv(65536) == payload, "The bytes read after waiting() are not the bytes sent.", WAITING_HINT)
    return (f"waiting() said 0 at once on an empty queue, then {count:,} once the bytes had arrived, matching "
            f"the kernel's own count (SIOCINQ), and left all {left:,} in the queue: the next recv() read them "
            "all.")
