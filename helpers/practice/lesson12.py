"""Checks for the exercises of lesson 12 (TCP is a byte stream).

1. ``take_messages(buffer)``: a sans-IO length-prefix decoder. The caller appends whatever
   recv() returned to `buffer`; the function removes every complete message from its front
   and returns them as (type, body), leaving an incomplete one in place. The check feeds a
   stream whole, one byte at a time, with trailing bytes, and over a real socket whose peer
   cuts it at random places.
2. ``recv_line(sock, limit)``: one line from a socket, CRLF or LF removed, without reading
   past the newline (the check reads the bytes after the lines itself), refusing a line
   that reaches `limit` bytes (the check counts what the function took from the kernel), and
   raising EOFError when the peer closes mid-line.
3. ``read_typed(sock)``: one message of the original course's format, whose type a C client
   may have sent without htonl(); the check plays a correct client and that C client.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable
from typing import Any

from ..closing import drain
from ..framing import encode_message
from ..hostile import cut, endless_line
from ..servers import TCPServer
from .core import Trial, exercise

Pairs = list[tuple[int, bytes]]


def _pairs(out: object) -> Pairs | None:
    """The learner's messages as (type, body) pairs, or None if they are not such a list."""
    if not isinstance(out, list):
        return None
    pairs = []
    for item in out:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], (bytes, bytearray, memoryview))):
            return None
        pairs.append((item[0], bytes(item[1])))
    return pairs


def _still_open(t: Trial, sock: socket.socket, name: str) -> None:
    t.require(sock.fileno() != -1, f"{name} closed the socket.", "Leave closing to the caller: the check still "
              "reads from the socket afterwards.")


def _short(pairs: object, limit: int = 3) -> str:
    """A list of messages, cut down to a few, for a sentence."""
    if not isinstance(pairs, list):
        return f"{pairs!r:.80}"
    more = f", ... ({len(pairs)} in all)" if len(pairs) > limit else ""
    return ", ".join(f"({k}, {b!r:.30})" for k, b in pairs[:limit]) + more if pairs else "[]"


# -- 1. take_messages ----------------------------------------------------------------------

MESSAGES: Pairs = [(1, b"first message"), (2, b""), (7, b"a third, longer message"), (3, bytes(range(256)))]
SOCKET_MESSAGES = 30  # random messages sent over the socket, cut into pieces of 1-13 bytes

TAKE_HINT = (
    "Loop: while the buffer holds at least 8 bytes, read the header with "
    "struct.unpack_from('!II', buffer) (length, type); if the buffer holds fewer than 8 + length "
    "bytes, stop and wait for more; otherwise take the body, delete those 8 + length bytes from "
    "the front (del buffer[:8 + length]) and go on. Return the list of (type, body) pairs, [] "
    "when none is complete."
)


def _stream(messages: Pairs) -> bytes:
    return b"".join(encode_message(body, kind) for kind, body in messages)


def _byte_by_byte(take: Callable[[bytearray], Any], stream: bytes) -> list[tuple[int, Any]]:
    """Feed `stream` one byte at a time; (index of the byte, what take() returned) when not []."""
    buffer, seen = bytearray(), []
    for i in range(len(stream)):
        buffer.append(stream[i])
        out = take(buffer)
        if out != []:
            seen.append((i, out))
    return seen


def _over_socket(take: Callable[[bytearray], Any], sock: socket.socket) -> tuple[list[Any], list[int], bytes]:
    """Read `sock` to its end, feeding take(); (what it returned, recv() sizes, bytes left)."""
    buffer, got, sizes = bytearray(), [], []
    while data := sock.recv(4096):
        sizes.append(len(data))
        buffer += data
        got.append(take(buffer))
    return got, sizes, bytes(buffer)


@exercise("12", 1, "take_messages(): a length-prefix decoder without I/O", hint=TAKE_HINT)
def check_take_messages(t: Trial, take_messages: object) -> str:
    stream = _stream(MESSAGES)
    buffer = bytearray(stream)
    out = t.call(take_messages, buffer, name="take_messages()", timeout_s=1.0,
                 hang_hint="With 8 + length bytes in hand, delete them from the buffer, or the loop sees the "
                           "same header again for ever.").value
    whole = _pairs(out)
    t.require(whole is not None, f"take_messages() returned {out!r:.80}, not a list of (type, body) pairs.",
              TAKE_HINT)
    t.require(whole == MESSAGES, f"Given a buffer holding {len(MESSAGES)} whole messages ({len(stream)} bytes), "
              f"take_messages() returned {_short(whole)}; expected {_short(MESSAGES)}.",
              "Keep looping while a whole message is in the buffer: one recv() often brings several, "
              "and one has an empty body. The header is '!II': length first, then type.")
    t.require(not buffer, f"take_messages() returned every message but left {len(buffer)} bytes in the buffer.",
              "Delete each message from the front of the buffer once you have taken it: del buffer[:8 + length].")

    ends = [i - 1 for i in _offsets(MESSAGES)]
    seen = t.call(_byte_by_byte, take_messages, stream, name="take_messages()", timeout_s=2.0).value
    t.require(all(_pairs(o) is not None for _, o in seen),
              f"Fed one byte at a time, take_messages() returned {seen[0][1]!r:.60} after byte {seen[0][0]}: "
              "not a list of pairs.", "Return [] while no message is complete.")
    got = [(i, m) for i, o in seen for m in _pairs(o) or []]
    t.require([m for _, m in got] == MESSAGES, f"Fed the same stream one byte at a time, take_messages() "
              f"returned {_short([m for _, m in got])}.",
              "A message is complete only when the buffer holds its whole header and body; until then, "
              "return [] and leave the bytes where they are.")
    t.require([i for i, _ in got] == ends, f"Fed one byte at a time, the messages came out after bytes "
              f"{[i for i, _ in got]}, but they were complete after bytes {ends}.",
              "Hand a message out as soon as its last byte is in, and not before.")

    partial = encode_message(b"the next one", 9)
    buffer = bytearray(stream + partial[:5])
    first = t.call(take_messages, buffer, name="take_messages()", timeout_s=1.0).value
    kept = bytes(buffer)
    buffer += partial[5:]
    second = t.call(take_messages, buffer, name="take_messages()", timeout_s=1.0).value
    t.require(_pairs(first) == MESSAGES and kept == partial[:5], f"With 5 bytes of the next header after the "
              f"messages, take_messages() returned {_short(_pairs(first))} and left {kept!r} in the buffer "
              f"(expected the messages, and {partial[:5]!r} left).",
              "Bytes after the last whole message belong to the next one: leave them in the buffer.")
    t.require(_pairs(second) == [(9, b"the next one")], f"Once the rest of that message arrived, "
              f"take_messages() returned {_short(_pairs(second))}.", TAKE_HINT)

    rng = random.Random()
    sent = [(rng.randrange(1, 100), rng.randbytes(rng.randrange(0, 40))) for _ in range(SOCKET_MESSAGES)]
    with TCPServer(cut(_stream(sent), largest=13, seed=rng.randrange(2**32))) as peer:
        sock = t.connect(peer.address)
        outs, sizes, left = t.call(_over_socket, take_messages, sock, name="take_messages()", timeout_s=5.0).value
        sock.close()
    received = [m for o in outs for m in _pairs(o) or []]
    t.require(received == sent and not left, f"Over a real socket, {SOCKET_MESSAGES} messages arrived in "
              f"{len(sizes)} recv() calls of {min(sizes, default=0)} to {max(sizes, default=0)} bytes; "
              f"take_messages() returned {len(received)} messages ({sum(r == s for r, s in zip(received, sent))} "
              f"right) and left {len(left)} bytes.", TAKE_HINT)
    return (f"take_messages() returned all {len(MESSAGES)} messages of a whole buffer, each at its last byte "
            f"when fed one byte at a time, kept a half header for later, and decoded {SOCKET_MESSAGES} messages "
            f"that arrived in {len(sizes)} recv() calls of {min(sizes)} to {max(sizes)} bytes.")


def _offsets(messages: Pairs) -> list[int]:
    """Where each message ends in the stream (offset after its last byte)."""
    ends, at = [], 0
    for _, body in messages:
        at += 8 + len(body)
        ends.append(at)
    return ends


# -- 2. recv_line --------------------------------------------------------------------------

LINE_PIECES = [2, 5, 1]  # b"PING 1\r\n" arrives as b"PI", b"NG 1\r", b"\n"
LINES = b"PING 1\r\nPING 2\n"
AFTER_LINES = b"AFTER THE LINES"
LINE_PAUSE_S = 0.02  # between the pieces: the reader sees them apart
LINE_LIMIT = 4096  # the limit the check passes for the flood
FLOOD = 1 << 20  # a "line" of 1 MiB without a newline
SLACK = 64 * 1024 + 2  # a reader may read one recv() past its limit before it notices

LINE_HINT = (
    "Peek first: sock.recv(n, socket.MSG_PEEK) shows what is queued without taking it; find b'\\n' "
    "in it, then recv() exactly up to and including the newline (or all you peeked, if there is "
    "none, and loop). Or read one byte per recv(), as the C course does. Strip b'\\n' and a b'\\r' "
    "before it. recv() returning b'' means the peer closed: raise EOFError. Once `limit` bytes "
    "came without a newline, raise ValueError."
)


@exercise("12", 2, "recv_line(): a line reader with a limit", hint=LINE_HINT)
def check_recv_line(t: Trial, recv_line: object) -> str:
    with TCPServer(cut(LINES + AFTER_LINES, sizes=LINE_PIECES, pause_s=LINE_PAUSE_S)) as peer:
        sock = t.connect(peer.address)
        first = t.call(recv_line, sock, 100, name="recv_line(sock, 100)", timeout_s=2.0,
                       hang_hint="The first line arrives in three pieces: keep reading until you see b'\\n'.").value
        second = t.call(recv_line, sock, 100, name="recv_line(sock, 100)", timeout_s=2.0,
                        hang_hint="Did the first call read the second line too and keep it? Read only up to "
                                  "the newline.").value
        _still_open(t, sock, "recv_line()")
        sock.settimeout(2.0)
        rest = bytearray()
        while data := sock.recv(4096):
            rest += data
        sock.close()
    t.require((first, second) != (b"PING 1\r", b"PING 2"), "recv_line() returned b'PING 1\\r': the CR of the "
              "CRLF ending is still there.", "Remove b'\\r\\n' or b'\\n' from the end of the line.")
    t.require((first, second) == (b"PING 1", b"PING 2"), f"The peer sent {LINES!r} (the first line in three "
              f"pieces); recv_line() returned {first!r:.40}, then {second!r:.40}.", LINE_HINT)
    t.require(bytes(rest) == AFTER_LINES, f"After the two lines the socket still held {bytes(rest)!r}, not "
              f"{AFTER_LINES!r}: {len(AFTER_LINES) - len(rest)} bytes were taken by recv_line() and lost with it.",
              "Read only up to the newline: peek with MSG_PEEK, then recv() exactly that many bytes; the rest "
              "belongs to the next message.")

    with TCPServer(cut(b"no newline here", sizes=[15])) as peer:
        sock = t.connect(peer.address)
        out = t.call(recv_line, sock, 100, name="recv_line(sock, 100)", timeout_s=1.0, expect=(EOFError,),
                     hang_hint="The peer closed without a newline, so recv() returns b'' now, and again on "
                               "every call: stop and raise EOFError.")
        sock.close()
    t.require(isinstance(out.error, EOFError), f"The peer sent b'no newline here' and closed; recv_line() "
              f"returned {out.value!r:.40} instead of raising EOFError.",
              "An unfinished line is not a line: when recv() returns b'', raise EOFError.")

    with TCPServer(endless_line(FLOOD)) as peer:
        sock = t.connect(peer.address)
        out = t.call(recv_line, sock, LINE_LIMIT, name=f"recv_line(sock, {LINE_LIMIT})", timeout_s=3.0,
                     expect=(ValueError, EOFError),
                     hang_hint=f"Stop once {LINE_LIMIT} bytes came without a newline: raise ValueError.")
        _still_open(t, sock, "recv_line()")
        left = drain(sock, timeout_s=5.0)
        sock.close()
    taken = FLOOD - left
    t.require(not isinstance(out.error, EOFError), f"The peer sent {FLOOD:,} bytes without a newline; "
              f"recv_line(sock, {LINE_LIMIT}) read {taken:,} of them and raised EOFError at the end.",
              f"Count the bytes: once {LINE_LIMIT} have come without a newline, raise ValueError.")
    t.require(isinstance(out.error, ValueError), f"The peer sent {FLOOD:,} bytes without a newline; "
              f"recv_line(sock, {LINE_LIMIT}) returned {out.value!r:.40} after reading {taken:,} bytes.",
              f"Raise ValueError once {LINE_LIMIT} bytes came without a newline.")
    t.require(taken <= LINE_LIMIT + SLACK, f"recv_line(sock, {LINE_LIMIT}) raised ValueError, but only after "
              f"taking {taken:,} bytes from the kernel.",
              f"Never ask recv() for more than the limit allows: min(4096, {LINE_LIMIT} - len(line) + 2).")
    return (f"recv_line() read b'PING 1' (sent in three pieces) and b'PING 2', left {AFTER_LINES!r} in the "
            f"socket, raised EOFError on an unfinished line, and refused a {FLOOD:,}-byte line after taking "
            f"{taken:,} bytes from the kernel ({type(out.error).__name__}: {out.error}).")


# -- 3. read_typed -------------------------------------------------------------------------

TYPES = [1, 2, 300, 65535]
TYPED_HINT = (
    "Read 8 bytes with a readn loop and unpack them with '!II' (length, type). Types in this "
    "protocol are below 65536, so a type of 65536 or more came from a client that forgot "
    "htonl(): swap its bytes (h.framing.byteswap32(t), or struct.unpack('<I', header[4:])[0]). "
    "Then read exactly `length` body bytes."
)


def _typed_stream(messages: Pairs, c_client: bool) -> bytes:
    """The messages as a correct client sends them, or as the C client that forgot htonl(type) on x86."""
    order = "<I" if c_client else "!I"  # '<': little-endian, what x86 stores in memory
    return b"".join(struct.pack("!I", len(body)) + struct.pack(order, kind) + body for kind, body in messages)


def _read_all(read_typed: Callable[[socket.socket], Any], sock: socket.socket, n: int) -> list[Any] | None:
    """`n` calls of read_typed(sock); None if the first returns None (the stub)."""
    out = [read_typed(sock)]
    if out[0] is None:
        return None
    return out + [read_typed(sock) for _ in range(n - 1)]


@exercise("12", 3, "read_typed(): live with a client that forgot htonl()", hint=TYPED_HINT)
def check_read_typed(t: Trial, read_typed: object) -> str:
    rng = random.Random()
    messages = [(kind, rng.randbytes(rng.randrange(0, 30))) for kind in TYPES]
    for who, c_client in [("a correct client", False), ("the C client", True)]:
        with TCPServer(cut(_typed_stream(messages, c_client), largest=5, seed=rng.randrange(2**32))) as peer:
            sock = t.connect(peer.address)
            out = t.call(_read_all, read_typed, sock, len(messages), name="read_typed()", timeout_s=3.0,
                         hang_hint="A hang here usually means a wrong length: the length was sent in network "
                                   "order (htonl), so read it with '!I'.", error_hints={
                             struct.error: "recv(8) returned fewer than 8 bytes: the headers arrive in pieces. "
                                           "Loop until you have all 8 (readn() above does)."}).value
            sock.close()
        got = _pairs(out)
        t.require(got is not None, f"read_typed() returned {_short(out)}, not (type, body) pairs.", TYPED_HINT)
        assert got is not None
        wire = _typed_stream(messages[:1], c_client)[:8].hex(" ")
        t.require([b for _, b in got] == [b for _, b in messages],
                  f"From {who}, the bodies came back as {_short(got)}; expected {_short(messages)}.",
                  "Read the length with '!I' (network order), then exactly that many body bytes.")
        t.require([k for k, _ in got] == TYPES, f"From {who} (first header on the wire: {wire}), read_typed() "
                  f"returned types {[k for k, _ in got]}; the client meant {TYPES}.", TYPED_HINT)
    return (f"read_typed() returned types {TYPES} from a correct client and from the C client, whose type 1 "
            f"is 16777216 in network order, with every body intact although the headers arrived in pieces "
            f"of 1 to 5 bytes.")
