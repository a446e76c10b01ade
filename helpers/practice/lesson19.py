"""Checks for the exercises of lesson 19 (a reactor HTTP server).

1. ``UpperLines``: a protocol on the course's ``TcpServer`` (derived from
   ``reactor.BaseProtocol``) that greets each client and answers every complete line with
   its number of words and the line in upper case (not a byte-by-byte answer, so a protocol
   that answers each piece as it comes, without framing lines, does not pass). The check
   serves it with two sub-reactors, connects several clients, has them send lines cut into
   small pieces, interleaved and a moment apart (so each piece is its own recv(), and a
   line's start waits in the protocol while the loop's shared input buffer is reused), then
   half-closes each client and reads until the server closes.
2. ``Sender(data)``: a protocol that sends `data` one chunk at a time, the next chunk from
   ``write_completed()``, then closes. The check's client does not read for a while; the
   check samples the connection's output buffer meanwhile (from the connection's loop
   thread), then reads everything.
3. ``body_length(values)``: the Content-Length rule (RFC 9110 section 8.6, RFC 9112 section
   6.3): the values of a request's Content-Length headers -> the body's length, or
   ``HttpError(400)``. The check calls it on a table of cases, then serves HTTP with it on the
   reactor and sends pipelined requests whose lengths are good, duplicated, signed or in
   conflict, and reads the statuses that come back (a wrong length would make the server
   read part of a body as the next request).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import selectors
import socket
import time

from ..reactor.connection import BaseProtocol
from ..reactor.http import HttpError
from ..reactor.httpserver import HttpServer
from ..reactor.server import TcpServer
from .core import Trial, exercise
from .peers import BUFFER_LIMIT, HOLD_S, READ_DEADLINE_S, peak_while_unread, read_to_eof, slow_client

# -- shared ---------------------------------------------------------------------------------


def _protocol_class(t: Trial, cls: object, name: str, method: str) -> type:
    """`cls` if it is a class derived from BaseProtocol that overrides `method`; NOT DONE YET if not."""
    t.require(isinstance(cls, type) and issubclass(cls, BaseProtocol),
              f"{name} is {type(cls).__name__} {cls!r:.60}, not a class derived from h.reactor.BaseProtocol.",
              f"class {name}(h.reactor.BaseProtocol): ... with the methods the exercise names.")
    if getattr(cls, method) is getattr(BaseProtocol, method):
        t.not_done(f"{name} defines no {method}() yet: it is still the stub.")
    return cls  # type: ignore[return-value]


def _errors(t: Trial, server: TcpServer, name: str) -> None:
    """NOT YET naming the first exception the learner's callbacks raised in a loop, if any."""
    if server.errors:
        err = server.errors[0]
        t.fail(f"Your {name} raised {type(err).__name__}: {err}".rstrip(": ") + " in the reactor's loop (the "
               "framework closed that connection).", "Read the exception: the loop called your method and it "
               "failed there.")


def _read_until_eof(clients: list[socket.socket], timeout_s: float) -> tuple[list[bytes], list[bool]]:
    """Read every client until the server closes it or `timeout_s` passes: (bytes, EOF seen) each."""
    got = [bytearray() for _ in clients]
    eof = [False] * len(clients)
    with selectors.DefaultSelector() as sel:
        for i, c in enumerate(clients):
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, i)
        deadline = time.monotonic() + timeout_s
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except ConnectionError:
                    data = b""
                if not data:
                    eof[key.data] = True
                    sel.unregister(key.fileobj)
                got[key.data] += data
    return [bytes(g) for g in got], eof


# -- 1. UpperLines ------------------------------------------------------------------------------

CLIENTS = 4
LINES = 6  # lines per client
PIECE_PAUSE_S = 0.004  # between rounds of pieces: each piece arrives as its own recv()
READ_S = 2.0

UPPER_HINT = (
    "connection_made(self, conn): self.conn = conn; self.pending = bytearray(); conn.write(b'ready\\n'). "
    "data_received(self, data): self.pending += data (a copy: data is only valid during the call); then "
    "while b'\\n' in self.pending: cut one line off the front (line, with its b'\\n') and "
    "self.conn.write(b'%d ' % len(line.split()) + line.upper())."
)


def _lines(rng: random.Random) -> list[bytes]:
    words = ["epoll", "reactor", "channel", "buffer", "acceptor", "loop", "socket", "kernel"]
    return [(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + "\n").encode() for _ in range(LINES)]


def _answer(line: bytes) -> bytes:
    return b"%d " % len(line.split()) + line.upper()


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, len(data) // 20)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@exercise("19", 1, "a line protocol on TcpServer", hint=UPPER_HINT)
def check_upper_lines(t: Trial, UpperLines: object) -> str:  # noqa: N803 - the learner's class name
    cls = _protocol_class(t, UpperLines, "UpperLines", "data_received")
    rng = random.Random(19)
    sent = [_lines(rng) for _ in range(CLIENTS)]
    pieces = [_pieces(b"".join(lines), rng) for lines in sent]
    server = TcpServer(cls, threads=2)
    try:
        clients = [t.connect(server.address) for _ in range(CLIENTS)]
        for c in clients:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece leaves at once
        try:
            for k in range(max(map(len, pieces))):  # round k: each client sends its k-th piece
                for c, ps in zip(clients, pieces):
                    if k < len(ps):
                        c.sendall(ps[k])
                time.sleep(PIECE_PAUSE_S)  # the experiment: the server reads piece by piece
            for c in clients:
                c.shutdown(socket.SHUT_WR)
        except ConnectionError:  # the server closed a connection: what came back says why
            pass
        got, eof = _read_until_eof(clients, READ_S)
    finally:
        server.stop(raise_errors=False)  # its errors are the learner's: said below, not raised
    _errors(t, server, "UpperLines")
    nothing = [i for i, g in enumerate(got, 1) if not g]
    t.require(not nothing, f"Client {nothing[0] if nothing else 0} received nothing at all.", UPPER_HINT)
    t.require(all(g.startswith(b"ready\n") for g in got), f"The first bytes a client received were "
              f"{got[0][:20]!r}, not b'ready\\n'.", "In connection_made(), conn.write(b'ready\\n').")
    want = [b"ready\n" + b"".join(_answer(line) for line in lines) for lines in sent]
    for i, (g, w, lines) in enumerate(zip(got, want, sent), 1):
        if g == w:
            continue
        answers = g[len(b"ready\n"):].split(b"\n")
        ok = sum(1 for a, line in zip(answers, lines) if a + b"\n" == _answer(line))
        t.fail(f"Client {i} sent {len(lines)} lines in {len(pieces[i - 1])} pieces; the first {ok} answers were "
               f"right, then came {answers[ok][:40]!r} where {_answer(lines[ok])[:40]!r} was due.",
               "data is a view of the loop's input buffer, which the next recv() overwrites: copy it "
               "(self.pending += data, or bytes(data)) before the call returns, and answer complete lines only.")
    t.require(all(eof), f"The clients sent FIN after their last line, but {eof.count(False)} of {CLIENTS} "
              f"connections were still open {READ_S:g} s later.", "BaseProtocol.eof_received() returns False "
              "(close once the answers are sent): do not override it to return True.")
    return (f"{CLIENTS} clients on 2 sub-reactors each got b'ready\\n', then sent {LINES} lines cut into "
            f"{sum(map(len, pieces))} pieces in all; each got exactly one answer per line, in order, and "
            "the server closed each connection after the client's FIN.")


# -- 2. Sender: write_completed() -----------------------------------------------------------------

DATA = 8 << 20  # bytes to send: far more than the kernel's buffers hold
SENDER_HINT = (
    "__init__ keeps data and a position; connection_made() keeps conn and calls a send_next() that writes "
    "data[pos:pos + 65536] and advances pos; write_completed() calls send_next() again, and once pos reaches "
    "len(data), self.conn.close() (it sends what is buffered first)."
)


@exercise("19", 2, "Sender: the next chunk from write_completed()", hint=SENDER_HINT)
def check_sender(t: Trial, Sender: object) -> str:  # noqa: N803 - the learner's class name
    cls = _protocol_class(t, Sender, "Sender", "write_completed")
    data = os.urandom(DATA)
    t.call(cls, data, name="Sender(data)", timeout_s=1.0)  # a TypeError here is named before any server starts
    server = TcpServer(lambda: cls(data), threads=1)
    try:
        client = slow_client(t, server.address)
        loop = server.pool.loops[0]
        try:
            peak = peak_while_unread(loop, lambda: [len(c.outbuf) for c in server.connections[loop]])
        except TimeoutError:
            t.fail("The server's loop did not answer for 1 s: one of your callbacks is blocking it.",
                   "Return from write_completed() at once, after one conn.write().")
        total, digest, eof = read_to_eof(client)
    finally:
        server.stop(raise_errors=False)  # its errors are the learner's: said below, not raised
    _errors(t, server, "Sender")
    t.require(peak <= BUFFER_LIMIT, f"While the client read nothing for {HOLD_S:g} s, the connection held "
              f"{peak:,} bytes in its output buffer: more was written than the kernel could take.", SENDER_HINT)
    t.require(total == DATA and digest == hashlib.sha256(data).hexdigest(), f"The client received {total:,} of "
              f"{DATA:,} bytes" + ("" if total == DATA else ", then nothing more") + (
                  "." if total != DATA else ", not in the order sent."),
              "In write_completed(), go on writing where you stopped, until all of data is written.")
    t.require(eof, f"The client received all {DATA:,} bytes, but the connection was not closed within "
              f"{READ_DEADLINE_S:g} s.", "Once everything is written, call self.conn.close().")
    return (f"While the client read nothing for {HOLD_S:g} s, the connection never held more than {peak:,} bytes "
            f"(of {DATA:,} to send) in its output buffer; then the client received every byte, in order, and the "
            "end of file.")


# -- 3. body_length(): the Content-Length rule ----------------------------------------------------

BAD = 400
#: Content-Length values of one request -> the body length, or BAD (RFC 9110 section 8.6: 1*DIGIT; a
#: list of identical values may be taken as one; anything else is refused, RFC 9112 section 6.3)
CASES: list[tuple[list[str], int]] = [
    ([], 0), (["5"], 5), (["007"], 7), (["0"], 0), (["+5"], BAD), (["-1"], BAD), (["5", "5"], 5),
    (["5", "6"], BAD), (["5, 5"], 5), (["5,6"], BAD), (["5_0"], BAD), (["0x10"], BAD), ([""], BAD),
    (["5 5"], BAD),
]
ECHO = "POST /echo HTTP/1.1\r\nHost: lesson19\r\n{}\r\n{}"
LAST = "GET / HTTP/1.1\r\nHost: lesson19\r\nConnection: close\r\n\r\n"
#: What the check sends on one connection each (all pipelined, in one send), and the statuses due.
LIVE: list[tuple[str, str, list[int]]] = [
    ("Content-Length: 5", ECHO.format("Content-Length: 5\r\n", "hello") + LAST, [200, 200]),
    ("Content-Length: 3 twice", ECHO.format("Content-Length: 3\r\nContent-Length: 3\r\n", "abc") + LAST,
     [200, 200]),
    ("Content-Length: +3", ECHO.format("Content-Length: +3\r\n", "abc") + LAST, [BAD]),
    ("Content-Length: 3, then 5", ECHO.format("Content-Length: 3\r\nContent-Length: 5\r\n", "abcde") + LAST,
     [BAD]),
]
READ_S = 2.0

LENGTH_HINT = (
    "Split every value on commas and strip each part; each part must be 1*DIGIT (part.isascii() and "
    "part.isdigit(): int() also takes '+5', '-1' and '5_0'); no parts: 0; all parts equal: that number; "
    "otherwise raise h.reactor.HttpError(400, 'why')."
)


def _exchange(address: tuple[str, int], data: bytes, t: Trial) -> bytes:
    """Send `data` on a new connection in one send(); read until the server closes (or READ_S)."""
    sock = t.connect(address)
    sock.sendall(data)
    sock.settimeout(READ_S)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionError):
        pass
    sock.close()
    return out


@exercise("19", 3, "body_length(): the Content-Length rule", hint=LENGTH_HINT)
def check_body_length(t: Trial, body_length: object) -> str:
    for values, want in CASES:
        out = t.call(body_length, values, name=f"body_length({values!r})", timeout_s=1.0, expect=(HttpError,),
                     error_hints={ValueError: "A ValueError would be the server's own bug: refuse the peer's "
                                  "value with h.reactor.HttpError(400, 'why')."})
        refused = isinstance(out.error, HttpError)
        said = f"raised HttpError({out.error.status})" if refused else f"returned {out.value!r}"  # type: ignore[union-attr]
        if want == BAD:
            t.require(isinstance(out.error, HttpError) and out.error.status == BAD, f"body_length({values!r}) {said}; "
                      "that value cannot frame a body, so the answer is HttpError(400).", LENGTH_HINT)
        else:
            t.require(out.error is None and out.value == want and type(out.value) is int,
                      f"body_length({values!r}) {said}; the body is {want} bytes long.", LENGTH_HINT)
    got = []
    server = HttpServer(body_length=body_length)
    try:
        for label, data, _ in LIVE:
            got.append((label, _exchange(server.address, data.encode(), t)))
    finally:
        server.stop(raise_errors=False)
    _errors(t, server, "body_length()")
    for (label, _data, want), (_, answer) in zip(LIVE, got):
        statuses = [int(x) for x in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
        t.require(statuses == want, f"A POST with {label}, then a GET, in one send(): the server answered "
                  f"{statuses or 'nothing'}, not {want}.", LENGTH_HINT)
    return (f"{len(CASES)} cases of the rule were right. On the reactor, a POST with Content-Length: 5 (and one "
            "with 3, twice) and a GET sent together were both answered; with +3, or 3 then 5, the server answered "
            "400 and closed, so no byte of those bodies was taken for the start of the next request.")
