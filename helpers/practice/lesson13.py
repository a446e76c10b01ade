"""Checks for the exercises of lesson 13 (defensive networking).

1. ``read_reply(sock, timeout_s)``: wait at most `timeout_s` for the peer's answer and say
   what happened: the bytes, "silent" (nothing in time) or "closed" (end of stream, or a
   reset). The check's peer is a child process it answers through, freezes (SIGSTOP),
   resumes and kills; then a connection closed with unread data, which resets.
2. ``read_bounded(sock, max_size)``: one length-prefixed message, refusing a length over
   `max_size` before anything is allocated for the body. The check measures what Python
   allocated while the function met a peer that announces 64 MiB and sends 9 bytes.
3. ``read_some(sock, buffer, limit)``: read what waits on a non-blocking socket into a
   buffer that never grows past `limit`. The check's sender writes until its kernel says
   EAGAIN; what the function leaves unread stays in the kernel, and TCP holds the sender.
"""

from __future__ import annotations

import socket

from ..closing import connected_pair, queued, wait_for_inq
from ..framing import encode_message
from ..hostile import announce, cut, peak_allocated
from ..observe import tcp_info
from ..servers import ProcessServer, TCPServer
from .core import Trial, exercise

# -- 1. read_reply -------------------------------------------------------------------------

FROZEN_WAIT_S = 0.3  # the timeout the check gives read_reply() while the peer is frozen
REPLY_HINT = (
    "sock.settimeout(timeout_s), then one recv(4096): return the bytes it returns; b'' means the "
    "peer closed: return 'closed'. Catch TimeoutError (nothing came in time) and return 'silent', "
    "and ConnectionResetError (the peer's kernel reset the connection) and return 'closed'."
)
OSERROR_HINT = (
    "TimeoutError is a subclass of OSError, so `except OSError` catches the timeout too. Catch "
    "TimeoutError first (return 'silent'), then ConnectionResetError (return 'closed')."
)


def _answer(value: object) -> str:
    return repr(value) if isinstance(value, (bytes, str)) else f"{value!r:.40} ({type(value).__name__})"


@exercise("13", 1, "read_reply(): a frozen peer or a closed one?", hint=REPLY_HINT)
def check_read_reply(t: Trial, read_reply: object) -> str:
    with ProcessServer("echo") as peer:
        sock = t.connect(peer.address)
        sock.sendall(b"ping")
        alive = t.call(read_reply, sock, 2.0, name="read_reply(sock, 2.0)", timeout_s=3.0,
                       hang_hint="Give recv() a timeout: sock.settimeout(timeout_s).").value
        t.require(alive == b"ping", f"The peer echoed b'ping'; read_reply() returned {_answer(alive)}.", REPLY_HINT)

        peer.pause()  # SIGSTOP: its kernel still ACKs, its program reads nothing
        sock.sendall(b"are you there?")
        out = t.call(read_reply, sock, FROZEN_WAIT_S, name=f"read_reply(sock, {FROZEN_WAIT_S})",
                     timeout_s=FROZEN_WAIT_S + 1.5, hang_hint="A frozen peer never answers: without a timeout, "
                     "recv() waits for ever. Call sock.settimeout(timeout_s) before recv().")
        unacked = tcp_info(sock).unacked
        t.require(out.value != "closed", f"While the peer was frozen (SIGSTOP), read_reply() returned 'closed' "
                  f"after {out.wall_s:.2f} s, but the connection was fine: {unacked} segments were unacknowledged "
                  "by the peer's kernel.", OSERROR_HINT)
        t.require(out.value == "silent", f"While the peer was frozen, read_reply() returned {_answer(out.value)} "
                  f"after {out.wall_s:.2f} s.", REPLY_HINT)
        t.require(out.wall_s >= FROZEN_WAIT_S * 0.8, f"read_reply(sock, {FROZEN_WAIT_S}) said 'silent' after only "
                  f"{out.wall_s:.2f} s.", "Wait the whole timeout_s before you say the peer is silent.")
        frozen_s = out.wall_s

        peer.resume()  # SIGCONT: the echo was only late
        late = t.call(read_reply, sock, 2.0, name="read_reply(sock, 2.0)", timeout_s=3.0).value
        t.require(late == b"are you there?", f"After SIGCONT the frozen peer echoed b'are you there?'; read_reply() "
                  f"returned {_answer(late)}.", "A timeout costs no bytes: the answer is still on its way.")

        peer.kill()  # SIGKILL: its kernel closes its socket; nothing was left unread, so a FIN
        out = t.call(read_reply, sock, 2.0, name="read_reply(sock, 2.0)", timeout_s=3.0)
        t.require(out.value == "closed", f"The peer was killed and its kernel sent a FIN; read_reply() returned "
                  f"{_answer(out.value)} after {out.wall_s:.2f} s.", "recv() returns b'' at end of stream: "
                  "return 'closed' then.")
        crash_s = out.wall_s

    client, server = (t.own(s) for s in connected_pair())
    client.sendall(b"never read")
    wait_for_inq(server, 10)
    server.close()  # closed with unread bytes: its kernel sends a RST, not a FIN (lesson 08)
    out = t.call(read_reply, client, 2.0, name="read_reply(sock, 2.0)", timeout_s=3.0, error_hints={
        ConnectionResetError: "A peer that closes with unread bytes sends a RST, and recv() raises "
                              "ConnectionResetError: catch it, that peer is closed too."})
    t.require(out.value == "closed", f"The peer closed with 10 bytes unread, so its kernel sent a RST; "
              f"read_reply() returned {_answer(out.value)}.", REPLY_HINT)
    return (f"read_reply() returned the echo while the peer ran, 'silent' after {frozen_s:.2f} s while it was "
            f"frozen (its kernel had ACKed everything: {unacked} segments unacknowledged), the late echo after "
            f"SIGCONT, 'closed' {crash_s * 1000:.0f} ms after SIGKILL (a FIN), and 'closed' on a reset.")


# -- 2. read_bounded -----------------------------------------------------------------------

MAX_SIZE = 1000  # the limit the check passes
CLAIM = 64 << 20  # what the hostile peer announces: 64 MiB
PEAK_LIMIT = 1 << 20  # a reader that refuses at the header allocates far less than this

BOUNDED_HINT = (
    "Read the 8-byte header with a readn loop, unpack it with '!II', and if length > max_size "
    "raise ValueError naming the length, before you read or allocate anything for the body. "
    "Then read exactly length bytes (a readn loop: recv() may return fewer)."
)


def _pair(value: object) -> object:
    """(type, body) as (int, bytes) when the learner returned such a pair; else the value as it is."""
    if (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], int)
            and isinstance(value[1], (bytes, bytearray, memoryview))):
        return (value[0], bytes(value[1]))
    return value


@exercise("13", 2, "read_bounded(): refuse a hostile length before allocating", hint=BOUNDED_HINT)
def check_read_bounded(t: Trial, read_bounded: object) -> str:
    messages = [(1, b"small"), (2, b""), (3, bytes(range(250)) * 4)]  # the last is exactly MAX_SIZE bytes
    stream = b"".join(encode_message(body, kind) for kind, body in messages)
    with TCPServer(cut(stream, largest=64)) as peer:
        sock = t.connect(peer.address)
        got = [t.call(read_bounded, sock, MAX_SIZE, name=f"read_bounded(sock, {MAX_SIZE})", timeout_s=2.0,
                      hang_hint="Read exactly the announced length, no more: recv() for more waits for "
                                "bytes that will not come.", error_hints={
                          ValueError: "Two usual causes: a body read short before (recv() may return fewer "
                                      "bytes than asked: loop, or use h.framing.readn), so this header came from the "
                                      f"middle of a body; or a message of exactly max_size ({MAX_SIZE}) bytes was "
                                      "refused (refuse only a length over it)."}).value for _ in messages]
        sock.close()
    pairs = [_pair(g) for g in got]
    shown = [f"type {p[0]}, {len(p[1])} bytes" if isinstance(p, tuple) else _answer(p) for p in pairs]
    t.require(pairs == messages, f"A peer sent messages of types 1, 2, 3 with bodies of "
              f"{[len(b) for _, b in messages]} bytes (in pieces); read_bounded() returned {shown}."[:300],
              "Return (type, body), the body read whole: recv() returns what has arrived, often less than "
              "asked, so loop (or use h.framing.readn).")

    with TCPServer(announce(CLAIM)) as peer:
        sock = t.connect(peer.address)
        peak, out = peak_allocated(lambda: t.call(
            read_bounded, sock, MAX_SIZE, name=f"read_bounded(sock, {MAX_SIZE})", timeout_s=2.0,
            expect=(Exception,), hang_hint="The peer announced 64 MiB and sent 9 bytes: refuse the length "
            "at the header, instead of waiting for a body you would never accept."))
        left = queued(sock)[0] if sock.fileno() != -1 else 0
        sock.close()
    err = out.error
    what = f"raised {type(err).__name__}: {err}" if err is not None else f"returned {_answer(out.value)}"
    t.require(peak < PEAK_LIMIT, f"A peer announced {CLAIM:,} bytes and sent 9; read_bounded() allocated "
              f"{peak / (1 << 20):.1f} MiB meanwhile, and {what}."[:400],
              "Compare the length with max_size right after unpacking the header, before recv(length) or "
              "bytearray(length): both allocate what the peer announced.")
    t.require(isinstance(err, ValueError), f"A peer announced {CLAIM:,} bytes (limit {MAX_SIZE}); read_bounded() "
              f"{what}."[:400], "Raise ValueError for a length over max_size.")
    t.require(str(CLAIM) in str(err) or f"{CLAIM:,}" in str(err), f"read_bounded() refused with ValueError: {err}",
              f"Name the announced length in the message ({CLAIM}): whoever reads the log needs it.")
    return (f"read_bounded() read 3 messages cut into pieces (one of exactly {MAX_SIZE} bytes), and refused a "
            f"{CLAIM:,}-byte claim at the header with a peak of {peak / 1024:.0f} KiB allocated ({err}); "
            f"{left} body bytes were still unread in the kernel.")


# -- 3. read_some --------------------------------------------------------------------------

FIRST_LIMIT, SECOND_LIMIT, BIG_LIMIT = 10_000, 16_000, 1 << 20
PATTERN = bytes(range(251)) * 1024  # byte at stream offset p is p % 251: order and gaps show
SOME_HINT = (
    "Loop while len(buffer) < limit: data = sock.recv(limit - len(buffer)); on BlockingIOError "
    "(nothing waits) stop; on b'' (end of stream) stop; else buffer += data. Return how many "
    "bytes you appended. Never ask recv() for more than the room left in the buffer."
)


def _expected(start: int, n: int) -> bytes:
    return bytes((start + i) % 251 for i in range(n))


def _fill(writer: socket.socket) -> int:
    """Send the pattern without blocking until the kernel says EAGAIN; the bytes it took."""
    writer.setblocking(False)
    sent = 0
    try:
        while True:
            at = sent % 251
            sent += writer.send(PATTERN[at:at + 64 * 1004])
    except BlockingIOError:
        return sent


@exercise("13", 3, "read_some(): a bounded buffer", hint=SOME_HINT)
def check_read_some(t: Trial, read_some: object) -> str:
    writer, reader = (t.own(s) for s in connected_pair(bufsize=64 * 1024))
    offered = _fill(writer)
    wait_for_inq(reader, SECOND_LIMIT)
    reader.setblocking(False)
    buffer = bytearray()
    hints = {BlockingIOError: "On a non-blocking socket, recv() raises BlockingIOError when nothing waits: "
                              "catch it and return what you have read so far."}
    n1 = t.call(read_some, reader, buffer, FIRST_LIMIT, name=f"read_some(sock, buffer, {FIRST_LIMIT})",
                timeout_s=2.0, error_hints=hints).value
    t.require(len(buffer) <= FIRST_LIMIT, f"read_some(sock, buffer, {FIRST_LIMIT}) left {len(buffer):,} bytes in "
              "the buffer, over the limit.", SOME_HINT)
    t.require(n1 == len(buffer) == FIRST_LIMIT, f"With {offered:,} bytes on their way, read_some(sock, empty buffer, "
              f"{FIRST_LIMIT}) returned {n1!r:.20} and the buffer holds {len(buffer):,} bytes.", SOME_HINT)
    t.require(bytes(buffer) == _expected(0, FIRST_LIMIT), "The buffer holds the right number of bytes, but not the "
              "bytes sent, in order.", "Append each recv() result to the end of the buffer.")

    n2 = t.call(read_some, reader, buffer, SECOND_LIMIT, name=f"read_some(sock, buffer, {SECOND_LIMIT})",
                timeout_s=2.0, error_hints=hints).value
    t.require(len(buffer) <= SECOND_LIMIT, f"The buffer held {FIRST_LIMIT:,} bytes; read_some(sock, buffer, "
              f"{SECOND_LIMIT}) made it {len(buffer):,}, over the limit.",
              "Ask recv() for at most limit - len(buffer) bytes: the room left.")
    t.require(n2 == SECOND_LIMIT - FIRST_LIMIT and bytes(buffer) == _expected(0, SECOND_LIMIT),
              f"The buffer held {FIRST_LIMIT:,} bytes; read_some(sock, buffer, {SECOND_LIMIT}) returned {n2!r:.20} "
              f"and left {len(buffer):,}.", SOME_HINT)

    before = queued(reader)[0]
    n3 = t.call(read_some, reader, buffer, SECOND_LIMIT, name="read_some() on a full buffer", timeout_s=2.0,
                error_hints=hints).value
    after = queued(reader)[0]
    t.require(n3 == 0 and after >= before and len(buffer) == SECOND_LIMIT, f"On a full buffer read_some() returned "
              f"{n3!r:.20}; the kernel's receive queue went from {before:,} to {after:,} bytes.",
              "A full buffer takes nothing: return 0 without calling recv().")
    held = queued(writer)[1]

    del buffer[:]
    n4 = t.call(read_some, reader, buffer, BIG_LIMIT, name=f"read_some(sock, buffer, {BIG_LIMIT})",
                timeout_s=2.0, error_hints=hints, hang_hint="Leave the socket non-blocking: when nothing waits, "
                "recv() raises BlockingIOError and you stop.").value
    t.require(not reader.getblocking(), "read_some() made the socket blocking.", "Leave the socket as you got it.")
    t.require(isinstance(n4, int) and 0 < n4 == len(buffer) <= BIG_LIMIT and bytes(buffer) ==
              _expected(SECOND_LIMIT, len(buffer)), f"With room for {BIG_LIMIT:,} bytes, read_some() returned "
              f"{n4!r:.20} and the buffer holds {len(buffer):,} bytes.", SOME_HINT)
    return (f"read_some() filled the buffer to exactly {FIRST_LIMIT:,}, then {SECOND_LIMIT:,} bytes, and took "
            f"nothing while it was full: {before:,} more bytes waited in your kernel's receive queue and {held:,} "
            f"in the sender's send queue, held by the two kernels, not by your buffer. With room again it read "
            f"the {n4:,} bytes that had come and stopped at EAGAIN.")

