"""Checks for the exercises of lesson 08 (shutdown vs close).

1. ``request_until_eof(sock, request)``: send a request, half-close with
   shutdown(SHUT_WR), read the reply up to EOF. The check's server answers only after EOF,
   and looks up the learner's end of the connection in the kernel's table at that moment:
   a FIN_WAIT state proves the FIN came from a socket that was still open.
2. ``close_unread(sock)``: wait for bytes the peer sends late, count them without reading
   them (MSG_PEEK), then close(): the unread bytes turn the close into a reset. The check's
   peer sees ECONNRESET, the kernel's TCPAbortOnClose counter moves, and no TIME_WAIT is
   left for the 4-tuple.
3. ``answer_and_close(sock, reply)``: a lingering close (RFC 9112 section 9.6): send the
   reply, shutdown(SHUT_WR), read and discard until the client's EOF, close. The check's
   client pipelined a second request that stays unread: a plain close() would reset the
   connection and destroy the end of the reply; here the client must read every byte and
   a clean EOF, and the learner's end must reach TIME_WAIT (a graceful close).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import socket
import time

from ..closing import lookup, wait_for_inq, wait_for_row
from ..observe import TcpState, counters_diff, tcp_info
from ..servers import TCPServer
from .core import Trial, exercise


def _error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


# -- 1. request_until_eof ------------------------------------------------------------------

REPLY_BYTES = 192 << 10  # the answer's body: several pieces, so one recv() cannot get it all
REPLY_PIECE = 32 << 10
REPLY_PAUSE_S = 0.005  # between pieces: the answer arrives in parts, as over a real network

EOF_HINT = (
    "After sendall(request), call sock.shutdown(socket.SHUT_WR): it sends a FIN (end of file "
    "for the server) and leaves your socket open for reading. Then loop over recv() and "
    "collect the chunks until it returns b'' (the server's own end of file); return the bytes."
)


def _answer_after_eof(conn: socket.socket, body: bytes) -> dict:
    """The check's server: read the request up to EOF, look at both ends, then answer."""
    request = bytearray()
    try:
        while chunk := conn.recv(65536):
            request += chunk
        mine = tcp_info(conn).state.name  # CLOSE_WAIT: the client's FIN has arrived
        theirs = [e.state.name for e in lookup(conn.getpeername(), conn.getsockname())]
        reply = hashlib.sha256(request).hexdigest().encode() + b"\n" + body
        for start in range(0, len(reply), REPLY_PIECE):
            conn.sendall(reply[start:start + REPLY_PIECE])
            time.sleep(REPLY_PAUSE_S)  # the experiment: the answer comes in pieces
    except OSError as exc:  # the learner's side went away (a hang the check stopped)
        return {"request": bytes(request), "error": _error_name(exc)}
    return {"request": bytes(request), "server_state": mine, "client_states": theirs, "reply": reply}


@exercise("08", 1, "request_until_eof(): half-close, then read to EOF", hint=EOF_HINT)
def check_request_until_eof(t: Trial, request_until_eof: object) -> str:
    request = b"REPORT " + os.urandom(6).hex().encode() + b"\n"
    with TCPServer(functools.partial(_answer_after_eof, body=os.urandom(REPLY_BYTES))) as peer:
        sock = t.connect(peer.address)
        got = t.call(request_until_eof, sock, request, name="request_until_eof()", timeout_s=2.0,
                     hang_hint="The server answers only once it has read your request to end of file, and it "
                               "never saw that end: after sendall(), call sock.shutdown(socket.SHUT_WR).",
                     error_hints={OSError: "close() gives the socket up for reading too. shutdown(socket.SHUT_WR) "
                                           "ends only your sending side and keeps the socket readable."}).value
        seen = peer.result(timeout_s=3.0)
    t.require(isinstance(got, (bytes, bytearray)), f"request_until_eof() returned {got!r:.60}, not bytes.", EOF_HINT)
    t.require(seen["request"] == request, f"The server received {seen['request']!r:.60} instead of the "
              f"{len(request)}-byte request {request!r}.", "Send the whole request with sendall() before shutdown().")
    if "error" in seen and sock.fileno() != -1:
        t.fail(f"The server read your request to end of file, but its answer failed with {seen['error']}: your "
               "kernel answered it with a reset. A socket that has shut down reading (SHUT_RD, or SHUT_RDWR) and "
               "sent its FIN resets the connection when data arrives (RFC 1122, section 4.2.2.13).",
               "shutdown(socket.SHUT_WR) ends only your sending side; keep the reading side open for the answer.")
    t.require("error" not in seen, f"The server read your request to end of file, but its answer failed with "
              f"{seen.get('error')}: your socket was closed before the answer came.",
              "Keep the socket open until recv() returns b''; shutdown(SHUT_WR) ends only your sending side.")
    reply = seen["reply"]
    t.require(len(got) > 0, f"request_until_eof() returned nothing, while the server answered {len(reply):,} "
              "bytes after your FIN.", "shutdown(socket.SHUT_WR) closes only the sending side; SHUT_RD or "
              "SHUT_RDWR also shut the reading side, and recv() then returns b'' at once.")
    t.require(bytes(got) == reply, f"request_until_eof() returned {len(got):,} bytes; the server sent "
              f"{len(reply):,} in {len(reply) // REPLY_PIECE + 1} pieces, then closed.",
              "One recv() returns what has arrived so far. Keep calling it until it returns b'' (end of "
              "file) and join the chunks.")
    fin_wait = [s for s in seen["client_states"] if s.startswith("FIN_WAIT")]
    t.require(seen["server_state"] == "CLOSE_WAIT" and fin_wait, f"When the server reached end of file its "
              f"socket was {seen['server_state']} and the kernel showed your end as {seen['client_states']}.",
              EOF_HINT)
    return (f"The server read your {len(request)}-byte request up to end of file; at that moment the kernel showed "
            f"its socket in CLOSE_WAIT and yours in {fin_wait[0]}: your FIN had arrived and your socket was still "
            f"open. It then answered {len(reply):,} bytes in pieces, and you read every one of them, up to b''.")


# -- 2. close_unread -----------------------------------------------------------------------

LATE_S = 0.1  # the peer's bytes arrive this long after the call starts
LATE_BYTES = 3000

UNREAD_HINT = (
    "sock.recv(65536, socket.MSG_PEEK) waits until the peer's bytes have arrived, like any "
    "recv(), and returns them while leaving them queued: count them that way, then "
    "sock.close() with them still unread, and return the count."
)


def _late_talker(conn: socket.socket) -> dict:
    """The check's peer: send LATE_BYTES after LATE_S, then see how the connection ends."""
    time.sleep(LATE_S)  # the experiment: the bytes come late
    fin_first = tcp_info(conn).state is TcpState.CLOSE_WAIT  # the other side closed before they came
    try:
        conn.sendall(b"u" * LATE_BYTES)
        conn.settimeout(3.0)
        ended = "EOF" if conn.recv(1) == b"" else "data"
    except OSError as exc:
        ended = _error_name(exc)
    return {"fin_first": fin_first, "ended": ended}


@exercise("08", 2, "close_unread(): close with unread data, and reset", hint=UNREAD_HINT)
def check_close_unread(t: Trial, close_unread: object) -> str:
    with TCPServer(_late_talker) as peer:
        sock = t.connect(peer.address)
        tuple4 = (sock.getsockname(), sock.getpeername())
        with counters_diff() as moved:
            count = t.call(close_unread, sock, name="close_unread()", timeout_s=2.0,
                           hang_hint="Nothing more arrives after the 3,000 bytes: peek once "
                                     "(MSG_PEEK), then close.").value
        t.require(sock.fileno() == -1, f"close_unread() returned {count!r:.40} but left the socket open, so "
                  "nothing ended the connection.", "Call sock.close() before you return.")
        seen = peer.result(timeout_s=5.0)
    t.require(not seen["fin_first"], "Your close() came before the peer's bytes arrived: the kernel had "
              "nothing unread, so it ended the connection with a FIN, a polite end of file.",
              "Wait for the bytes first: a blocking recv(65536, socket.MSG_PEEK) returns once they are there.")
    t.require(seen["ended"] == "ECONNRESET", f"The peer's recv() saw {seen['ended']}, not ECONNRESET: when you "
              "closed, nothing was left unread, so the kernel sent a FIN.", "Do not recv() the bytes; "
              "peek with MSG_PEEK, which leaves them queued, and close with them still there.")
    t.require(count == LATE_BYTES, f"The peer's recv() raised ECONNRESET, but close_unread() returned "
              f"{count!r:.40}, while {LATE_BYTES:,} bytes were waiting.",
              "Return len(sock.recv(65536, socket.MSG_PEEK)), measured just before close().")
    left = lookup(*tuple4).states()
    aborts = moved["TcpExt.TCPAbortOnClose"]
    t.require(aborts >= 1 and not left, f"The peer saw ECONNRESET, but the kernel's TCPAbortOnClose moved by "
              f"{aborts} and your 4-tuple shows {left}.", UNREAD_HINT)
    return (f"You closed with {count:,} bytes unread. The kernel answered with a reset: the peer's recv() raised "
            f"ECONNRESET, TcpExt.TCPAbortOnClose moved by {aborts}, and no TIME_WAIT was left for your 4-tuple.")


# -- 3. answer_and_close -------------------------------------------------------------------

PIPELINED = b"GET /a\nGET /b\n"  # two requests in one go; the server answers only the first
FIRST = len(b"GET /a\n")
LINGER_REPLY = 1 << 20  # far more than the buffers hold: part of it is still queued at close()
READ_PIECE, READ_PAUSE_S = 16 << 10, 0.002  # the client reads 16 KiB every 2 ms: about 0.15 s for the reply

LINGER_HINT = (
    "Send the reply with sendall(); shutdown(socket.SHUT_WR) to send your FIN after it; then "
    "recv() and throw away whatever arrives until recv() returns b'' (the client's own end of "
    "file), counting the bytes; then close(). Nothing is unread at close(), so no reset."
)


def _pipelining_client(conn: socket.socket) -> dict:
    """The check's client: two requests at once, then read the reply slowly until EOF or reset."""
    digest, received = hashlib.sha256(), 0
    try:
        conn.sendall(PIPELINED)
        while data := conn.recv(READ_PIECE):
            digest.update(data)
            received += len(data)
            time.sleep(READ_PAUSE_S)  # the experiment: a reader slower than the writer
        ended = "EOF"
    except OSError as exc:
        ended = _error_name(exc)
    return {"received": received, "sha256": digest.hexdigest(), "ended": ended}


@exercise("08", 3, "answer_and_close(): a lingering close", hint=LINGER_HINT)
def check_answer_and_close(t: Trial, answer_and_close: object) -> str:
    reply = os.urandom(LINGER_REPLY)
    with TCPServer(_pipelining_client) as peer:
        sock = t.connect(peer.address)
        wait_for_inq(sock, len(PIPELINED), timeout_s=3.0)
        sock.recv(FIRST, socket.MSG_WAITALL)  # the first request, handled; the second stays unread
        tuple4 = (sock.getsockname(), sock.getpeername())
        out = t.call(answer_and_close, sock, reply, name="answer_and_close()", timeout_s=3.0,
                     hang_hint="The client closes once it has read the reply to end of file, and it gets "
                               "there only after your shutdown(socket.SHUT_WR).")
        try:
            seen = peer.result(timeout_s=2.0)
        except TimeoutError:
            t.fail(f"answer_and_close() returned {out.value!r:.40}, and 2 s later the client was still waiting for "
                   "the end of the reply: it never got your FIN.", LINGER_HINT)
    lost = len(reply) - seen["received"]
    if seen["ended"] != "EOF":
        gone = f", and threw away the {lost:,} bytes it had not sent yet" if lost else ""
        t.fail(f"The client read {seen['received']:,} of {len(reply):,} bytes and then got {seen['ended']}: when "
               f"you closed, its second request ({len(PIPELINED) - FIRST} bytes) was still unread, so the kernel "
               f"reset the connection{gone}.",
               "shutdown(SHUT_WR) alone does not help; read until the client's EOF before close().")
    t.require(seen["received"] == len(reply) and seen["sha256"] == hashlib.sha256(reply).hexdigest(),
              f"The client got {seen['received']:,} bytes and EOF, but not the {len(reply):,} bytes of the reply.",
              "Send the reply with sendall() before anything else.")
    try:
        row = wait_for_row(*tuple4, "TIME_WAIT", timeout_s=2.0).state.name
    except TimeoutError:
        row = ", ".join(lookup(*tuple4).states()) or "no row at all"
    t.require(row == "TIME_WAIT", f"The client got every byte and EOF, but the kernel shows your 4-tuple as {row}, "
              "not TIME_WAIT: a reset, not a FIN exchange, ended it (the second request was still unread when "
              "you closed).", LINGER_HINT)
    t.require(out.value == len(PIPELINED) - FIRST, f"answer_and_close() returned {out.value!r:.40}; the bytes "
              f"it read and discarded before the client's EOF were {len(PIPELINED) - FIRST}.",
              "Count what each recv() returns while you drain, and return the total.")
    return (f"The client read all {len(reply):,} bytes and a clean EOF; you drained the "
            f"{out.value} unread bytes of its second request before closing, so no reset was sent, and the kernel "
            f"keeps your 4-tuple in TIME_WAIT, the mark of a graceful close by the side that sent the first FIN.")
