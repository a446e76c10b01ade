"""Checks for the exercises of lesson 18 (async I/O).

1. ``EchoProtocol``: an asyncio Protocol that echoes. The check serves it on an asyncio loop
   of its own (``aio.AsyncioServer(protocol=...)``, in a thread: the notebook's loop must not
   run learner callbacks), connects several clients first, then has each send its own random
   bytes in pieces, and reads what comes back to each.
2. ``ask(host, port, request, timeout_s)``: a coroutine on asyncio streams that sends a
   request and returns the one line answered, raising TimeoutError when none comes in time,
   and closing its connection either way. The check runs it in a fresh event loop in a
   thread, against a server that answers in two pieces and one that never answers, and asks
   the servers whether the connection was closed (they see its FIN).
3. ``Sender(data)``: a Protocol that sends `data` to each client, respecting
   ``pause_writing()`` / ``resume_writing()``, then closes. The check's client does not
   read for a while; the check samples the transport's write buffer meanwhile (from the
   server's loop thread), then reads everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import selectors
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..aio import AsyncioServer
from ..servers import TCPServer
from .core import Trial, exercise
from .peers import BUFFER_LIMIT, HOLD_S, READ_DEADLINE_S, peak_while_unread, read_to_eof, slow_client

# -- shared ---------------------------------------------------------------------------------


def _protocol_class(t: Trial, cls: object, name: str, method: str) -> type:
    """`cls` if it is an asyncio Protocol class that defines `method`; NOT DONE YET if it does not."""
    t.require(isinstance(cls, type) and issubclass(cls, asyncio.BaseProtocol),
              f"{name} is {type(cls).__name__} {cls!r:.60}, not a class derived from asyncio.Protocol.",
              f"class {name}(asyncio.Protocol): ... with the methods the exercise names.")
    if getattr(cls, method) is getattr(asyncio.Protocol, method):
        t.not_done(f"{name} defines no {method}() yet: it is still the stub.")
    return cls  # type: ignore[return-value]


def _asyncio_bug(err: BaseException) -> bool:
    """True for CPython gh-156512: a protocol that closes its transport inside resume_writing()
    makes asyncio's selector transport call _call_connection_lost() twice; the second call
    fails on attributes the first cleared. Not the learner's error (fixed in later Pythons)."""
    frames = traceback.extract_tb(err.__traceback__)
    return isinstance(err, AttributeError) and bool(frames) and frames[-1].name == "_call_connection_lost" and all(
        "asyncio" in f.filename for f in frames)


def _errors(t: Trial, server: AsyncioServer, name: str) -> None:
    """NOT YET naming the first exception the learner's callbacks raised in the loop, if any."""
    errors = [e for e in server.errors if not _asyncio_bug(e)]
    if errors:
        err = errors[0]
        t.fail(f"Your {name} raised {type(err).__name__}: {err}".rstrip(": ") + " in the event loop (asyncio "
               "closes that connection).", "Read the exception: the loop called your method and it failed there.")


# -- 1. EchoProtocol ------------------------------------------------------------------------

CLIENTS = 5
PIECES = (3_000, 20_000, 500)  # bytes each client sends, in three writes, interleaved with the others
COLLECT_S = 2.0

ECHO_HINT = (
    "connection_made(self, transport): keep it on self (self.transport = transport): each "
    "connection gets its own protocol object. data_received(self, data): self.transport.write(data)."
)


def _collect(clients: list[socket.socket], want: int, timeout_s: float) -> list[bytes]:
    """Read from every client until all the bytes sent came back somewhere, or `timeout_s`
    passes; what each client got."""
    got = [bytearray() for _ in clients]
    with selectors.DefaultSelector() as sel:
        for i, c in enumerate(clients):
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, i)
        deadline = time.monotonic() + timeout_s
        while sum(map(len, got)) < want * len(clients) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except (BlockingIOError, ConnectionError):
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                got[key.data] += data
            if not sel.get_map():
                break
    return [bytes(g) for g in got]


@exercise("18", 1, "an asyncio Protocol echo server", hint=ECHO_HINT)
def check_echo_protocol(t: Trial, EchoProtocol: object) -> str:  # noqa: N803 - the learner's class name
    cls = _protocol_class(t, EchoProtocol, "EchoProtocol", "data_received")
    server = AsyncioServer(protocol=cls)
    try:
        clients = [t.connect(server.address) for _ in range(CLIENTS)]  # all connected before anyone sends
        payloads = [[os.urandom(n) for n in PIECES] for _ in clients]
        try:
            for k in range(len(PIECES)):
                for c, pieces in zip(clients, payloads):
                    c.sendall(pieces[k])
        except ConnectionError:  # the server closed a connection: its error is reported below
            pass
        got = _collect(clients, sum(PIECES), COLLECT_S)
    finally:
        server.stop(raise_errors=False)  # its errors are the learner's: said below, not raised
    _errors(t, server, "EchoProtocol")
    sent = [b"".join(p) for p in payloads]
    if got != sent:
        counts = ", ".join(f"{len(g):,}" for g in got)
        mixed = [i for i, g in enumerate(got, 1) if any(o[:64] in g for j, o in enumerate(sent, 1) if j != i)]
        said = (f"; client {mixed[0]} got bytes other clients had sent" if mixed
                else "" if any(len(g) != len(m) for g, m in zip(got, sent)) else "; not the same bytes in order")
        t.fail(f"{CLIENTS} clients connected, then each sent {sum(PIECES):,} bytes of its own. They got back "
               f"{counts} bytes{said}.", ECHO_HINT)
    return (f"{CLIENTS} clients were connected at once, each sent {sum(PIECES):,} random bytes in "
            f"{len(PIECES)} writes, interleaved, and each got exactly its own bytes back, in order: one protocol "
            f"object per connection, {server.accepted} in all, on one event loop thread.")


# -- 2. ask() with a timeout ----------------------------------------------------------------

TIMEOUT_S = 0.3  # what the check passes as timeout_s
OUTER_S = 2.0  # the check stops waiting for ask() after this long
PIECE_PAUSE_S = 0.05  # the two-piece server's pause between "po" and "ng\n"
EOF_WAIT_S = 1.0  # how long a server waits for the client's FIN after its answer (or silence)

ASK_HINT = (
    "reader, writer = await asyncio.open_connection(host, port); then try: writer.write(request); "
    "await writer.drain(); return await asyncio.wait_for(reader.readline(), timeout_s) and finally: "
    "writer.close(); await writer.wait_closed()."
)


class StillWaiting(Exception):
    """ask() neither answered nor raised TimeoutError in time (the check cancelled it)."""


async def _bounded(coro: Any, limit_s: float) -> Any:
    """Await `coro` for at most `limit_s`; then cancel it and raise StillWaiting (not TimeoutError,
    which is what the learner's ask() raises on purpose)."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
        raise StillWaiting(f"no line and no TimeoutError after {limit_s:g} s, so the check cancelled it")
    return task.result()


def _run(ask: Callable[..., Any], *args: Any) -> Any:
    """asyncio.run() of the learner's coroutine, bounded: this runs in a thread with no loop."""
    result = ask(*args)
    if not asyncio.iscoroutine(result):
        return result  # None from a stub; anything else is judged by the check
    return asyncio.run(_bounded(result, OUTER_S))


def _answer_in_two_pieces(conn: socket.socket) -> dict[str, Any]:
    request = conn.recv(1024)
    conn.sendall(b"po")
    time.sleep(PIECE_PAUSE_S)  # the experiment: the line arrives in two pieces
    conn.sendall(b"ng\n")
    return _wait_for_fin(conn, request)


def _never_answer(conn: socket.socket) -> dict[str, Any]:
    return _wait_for_fin(conn, conn.recv(1024), OUTER_S + EOF_WAIT_S)


def _wait_for_fin(conn: socket.socket, request: bytes, timeout_s: float = EOF_WAIT_S) -> dict[str, Any]:
    """Read until the client's FIN (or timeout_s); when it came (time.monotonic()), or None."""
    conn.settimeout(timeout_s)
    try:
        while conn.recv(1024):
            pass
        fin_at: float | None = time.monotonic()
    except (TimeoutError, ConnectionError):
        fin_at = None
    return {"request": request, "fin_at": fin_at}


@exercise("18", 2, "ask(): asyncio streams with a timeout", hint=ASK_HINT)
def check_ask(t: Trial, ask: object) -> str:
    t.require(callable(ask) and asyncio.iscoroutinefunction(ask), f"ask is {type(ask).__name__} {ask!r:.60}, not "
              "a coroutine function.", "Define it with `async def ask(host, port, request, timeout_s):`.")
    with TCPServer(_answer_in_two_pieces) as server:
        host, port = server.address
        out = t.call(_run, ask, host, port, b"ping\n", TIMEOUT_S, name="ask()", timeout_s=OUTER_S + 1,
                     expect=(StillWaiting,))
        seen = server.result(timeout_s=EOF_WAIT_S + 1)
    t.require(out.error is None, f"The server answered b'pong\\n' in two pieces, but after {OUTER_S:g} s ask() had "
              "not returned, so the check cancelled it.", "reader.read() waits for the end of the connection; "
              "reader.readline() returns at the newline.")
    line = out.value
    t.require(seen["request"] == b"ping\n", f"The server received {seen['request']!r:.60}, not the request.",
              "writer.write(request), then await writer.drain().")
    t.require(line in (b"pong\n", b"pong"), f"The server answered b'po', then 50 ms later b'ng\\n'; ask() returned "
              f"{line!r:.60}.", "reader.readline() waits for the whole line; reader.read(n) returns the first piece.")
    t.require(seen["fin_at"] is not None, f"ask() returned its line, but the server saw no FIN within "
              f"{EOF_WAIT_S:g} s: the connection was left open.", "finally: writer.close(); await writer.wait_closed()")

    with TCPServer(_never_answer) as server:
        host, port = server.address
        started = time.monotonic()
        out = t.call(_run, ask, host, port, b"ping\n", TIMEOUT_S, name="ask()", timeout_s=OUTER_S + 1,
                     expect=(TimeoutError, asyncio.TimeoutError, StillWaiting))
        ended = time.monotonic()
        seen = server.result(timeout_s=OUTER_S + EOF_WAIT_S + 1)
    took = ended - started
    t.require(not isinstance(out.error, StillWaiting), f"The server never answered; after {OUTER_S:g} s ask() had "
              "neither returned nor raised TimeoutError, so the check cancelled it.", "Wrap the read in "
              "asyncio.wait_for(reader.readline(), timeout_s): without a deadline it waits as long as the server "
              "stays silent.")
    t.require(out.error is not None, f"The server never answered, and ask() returned {out.value!r:.60} after "
              f"{took:.2f} s instead of raising TimeoutError.", "Let asyncio.wait_for() raise its TimeoutError.")
    t.require(took >= 0.8 * TIMEOUT_S, f"ask() raised TimeoutError after {took:.2f} s, before its {TIMEOUT_S:g} s "
              "were up.", "Give the whole timeout_s to the wait for the line.")
    closed = seen["fin_at"] is not None and seen["fin_at"] - ended <= EOF_WAIT_S
    t.require(closed, f"ask() raised TimeoutError after {took:.2f} s, but the server saw no FIN within "
              f"{EOF_WAIT_S:g} s: the connection stayed open.", "Close the writer in a finally: block, so a "
              "timeout closes the connection too.")
    return (f"ask() returned {line!r} from a server that sent it in two pieces, and raised TimeoutError after "
            f"{took:.2f} s (timeout_s = {TIMEOUT_S:g}) when the server stayed silent; both times the server saw "
            "your FIN: the connection was closed.")


# -- 3. Sender: flow control ----------------------------------------------------------------

DATA = 16 << 20  # bytes to send: far more than the kernel's buffers hold
SENDER_HINT = (
    "Write in chunks (e.g. 64 KiB) from connection_made() while self.paused is False; pause_writing() "
    "sets it True, resume_writing() sets it False and writes more. When all is written, "
    "self.transport.close() (it sends what is buffered first)."
)


@exercise("18", 3, "Sender: pause_writing() and resume_writing()", hint=SENDER_HINT)
def check_sender(t: Trial, Sender: object) -> str:  # noqa: N803 - the learner's class name
    cls = _protocol_class(t, Sender, "Sender", "connection_made")
    data = os.urandom(DATA)
    t.call(cls, data, name="Sender(data)", timeout_s=1.0)  # a TypeError here is named before any server starts
    server = AsyncioServer(protocol=lambda: cls(data))
    try:
        client = slow_client(t, server.address)
        try:
            peak = peak_while_unread(server.loop, lambda: [tr.get_write_buffer_size() for tr in server.transports])
        except TimeoutError:
            t.fail("The server's event loop did not answer for 1 s: one of your callbacks is blocking it, "
                   "so it can never call resume_writing().", "Return from pause_writing() at once; write "
                   "again when resume_writing() is called.")
        total, digest, eof = read_to_eof(client)
    finally:
        server.stop(raise_errors=False)  # its errors are the learner's: said below, not raised
    _errors(t, server, "Sender")
    t.require(peak <= BUFFER_LIMIT, f"While the client read nothing for {HOLD_S:g} s, your transport held "
              f"{peak:,} bytes in its write buffer: asyncio called pause_writing() and the writing went on.",
              SENDER_HINT)
    t.require(total == DATA and digest == hashlib.sha256(data).hexdigest(), f"The client received {total:,} of "
              f"{DATA:,} bytes" + ("" if total == DATA else " before the sending stopped") + (
                  "." if total != DATA else ", not in the order sent."),
              "In resume_writing(), go on writing where you stopped.")
    t.require(eof, f"The client received all {DATA:,} bytes, but the connection was not closed within "
              f"{READ_DEADLINE_S:g} s.", "Once everything is written, call self.transport.close().")
    return (f"While the client read nothing for {HOLD_S:g} s, your transport never held more than {peak:,} bytes "
            f"(of {DATA:,} to send); then the client received every byte, in order, and the end of file.")
