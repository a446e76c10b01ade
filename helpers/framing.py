"""Message framing over a byte stream: length-prefixed messages and lines, without I/O.

Theory of operation. TCP delivers bytes, not messages: one send() may arrive in several
recv() calls and several send() calls in one. A protocol marks its own boundaries, and
this module holds the two classic ways, written "sans-IO" (as h11 is): a decoder is fed
whatever bytes arrived and hands back complete messages, so the same code works over a
blocking socket, a selector loop or a test that feeds one byte at a time.

* Length-prefixed, in the original course's wire format (lecture 16): an 8-byte header
  ``!II`` = message length, message type, both unsigned 32-bit in network byte order
  (big-endian), then the body. The length counts the body only, not the header.
* Delimited lines: a line ends at LF; a CR just before it is dropped too (CRLF, as
  RFC 9112 and RFC 5321 use, and bare LF, which lenient peers send).

Both decoders are bounded, which is what makes them safe against a hostile peer:

* A header is checked the moment its 8 bytes are complete: a length above
  ``max_message_size`` is refused before anything is allocated for the body (a naive
  ``sock.recv(length)`` with length 0xFFFFFFFF would ask for 4 GiB).
* A line longer than ``max_line_size`` is refused as soon as that many bytes arrived
  without a newline, not when the newline finally comes.
* So the bytes a decoder holds are at most: the complete messages you have not taken out
  yet, plus one incomplete message of at most ``HEADER.size + max_message_size`` bytes
  (or one line of ``max_line_size + 1``). The socket functions below never read past the
  message they return, so they never leave complete messages behind.
* The result does not depend on how the bytes were split: messages (or lines) that were
  complete before the offending header (or line) can still be taken out after the
  ``feed()`` that raised, and only then does the decoder raise again. The offending bytes
  and everything after them are dropped at once, so a refused peer costs no memory.

A ``maybe_`` method returns None when it needs more bytes. Errors say who is at fault:
``RemoteProtocolError`` (the peer sent something we refuse; ``.value`` and ``.limit`` say
what), ``IncompleteReadError`` (the peer closed mid-message), ``LocalProtocolError`` (our
own code asked for something the format cannot carry), ``MessageTimeout`` (a message took
longer than its deadline: a slow or frozen peer).

The thin socket functions at the end (``readn``, ``read_message``, ``read_line``,
``send_message``) are the only I/O here: loops of recv() around the decoders.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the protocol layer imports no socket module: callers hand sockets in
    import socket

__all__ = [
    "HEADER",
    "MAX_U32",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "FramingError",
    "RemoteProtocolError",
    "IncompleteReadError",
    "LocalProtocolError",
    "MessageTimeout",
    "Message",
    "encode_message",
    "encode_line",
    "byteswap32",
    "MessageDecoder",
    "LineDecoder",
    "readn",
    "read_message",
    "read_line",
    "send_message",
]

#: The header: message length (body only) and message type, u32 each, network byte order.
HEADER = struct.Struct("!II")
#: The largest value a u32 field can carry (4 GiB - 1).
MAX_U32 = 0xFFFFFFFF
#: Largest body accepted by default: 1 MiB. Precedents: the `websockets` library's
#: max_size is 1 MiB, gRPC's default receive limit 4 MiB. A lesson message is far smaller.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: Longest line accepted by default, without its terminator: 8 KiB. Precedents: nginx's
#: large_client_header_buffers is 8 KiB per header line, h11's limit 16 KiB per head.
DEFAULT_MAX_LINE_SIZE = 8 * 1024
#: Most bytes asked of one recv() by the socket functions: memory per call stays bounded
#: by what arrived, not by what a header claims.
RECV_CHUNK = 64 * 1024


class FramingError(Exception):
    """Base class of every framing error in this module."""


class RemoteProtocolError(FramingError):
    """The peer sent bytes this framing refuses; close the connection.

    ``value`` is the offending value (a length, a byte count) and ``limit`` the bound it
    broke, when there is one.
    """

    def __init__(self, message: str, *, value: int | None = None, limit: int | None = None):
        super().__init__(message)
        self.value = value
        self.limit = limit


class IncompleteReadError(RemoteProtocolError):
    """The peer closed the connection in the middle of a message or line.

    ``partial`` holds the bytes of the unfinished message, ``expected`` how many the
    message needed in all (None when unknown, as for a line).
    """

    def __init__(self, message: str, *, partial: bytes, expected: int | None):
        super().__init__(message, value=len(partial), limit=expected)
        self.partial = partial
        self.expected = expected


class LocalProtocolError(FramingError, ValueError):
    """Our own code asked for something the wire format cannot carry (a bug here, not
    in the peer): a body too long for its limit, a type outside 0..2**32-1, a newline
    inside a line."""


class MessageTimeout(TimeoutError):
    """A message (or line) did not complete within its deadline: a slow or frozen peer.

    ``received`` is how many bytes of it had arrived, ``expected`` how many it needed
    (None if unknown), ``deadline_s`` the deadline that expired.
    """

    def __init__(self, message: str, *, received: int, expected: int | None, deadline_s: float):
        super().__init__(message)
        self.received = received
        self.expected = expected
        self.deadline_s = deadline_s


@dataclass(frozen=True)
class Message:
    """One decoded message: its type (u32) and its body."""

    type: int
    body: bytes


def _check_limit(name: str, value: int, top: int = MAX_U32) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"{name} must be an int in 0..{top}, got {value!r}")
    return value


def byteswap32(value: int) -> int:
    """`value` with its four bytes reversed: what a u32 looks like read in the other order.

    >>> byteswap32(1)   # a little-endian 1 read as big-endian
    16777216
    """
    _check_limit("value", value)
    return int.from_bytes(value.to_bytes(4, "big"), "little")


def encode_message(body: bytes, type: int = 1, *, max_message_size: int = MAX_U32) -> bytes:
    """Header plus body, ready for sendall(): ``!II`` (len(body), type) then `body`.

    Raises LocalProtocolError if the body is longer than `max_message_size` (at most
    2**32-1, what the length field can carry) or `type` does not fit in a u32.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"body must be bytes, got {_type_name(body)}; encode text first, e.g. s.encode()")
    _check_limit("max_message_size", max_message_size)
    if isinstance(type, bool) or not isinstance(type, int) or not 0 <= type <= MAX_U32:
        raise LocalProtocolError(f"message type must be an int in 0..{MAX_U32} (a u32), got {type!r}")
    body = bytes(body)  # a memoryview's len() counts items, not bytes (e.g. array('I'))
    size = len(body)
    if size > max_message_size:
        raise LocalProtocolError(
            f"body of {size} bytes is over the limit of {max_message_size} bytes; split it or raise the limit"
        )
    return HEADER.pack(size, type) + body


def encode_line(line: bytes, *, terminator: bytes = b"\r\n") -> bytes:
    """`line` plus its terminator (CRLF by default, or LF). Refuses a line holding LF."""
    if not isinstance(line, (bytes, bytearray)):
        raise LocalProtocolError(f"line must be bytes, got {_type_name(line)}; encode text first, e.g. s.encode()")
    if terminator not in (b"\r\n", b"\n"):
        raise LocalProtocolError(f"terminator must be b'\\r\\n' or b'\\n', got {terminator!r}")
    if b"\n" in line:
        raise LocalProtocolError(f"a line cannot contain LF (b'\\n'); it would end early: {bytes(line[:40])!r}")
    return bytes(line) + terminator


def _type_name(obj: object) -> str:
    return type(obj).__name__  # the builtin: only encode_message's parameter shadows it


def _check_data(data: object) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"feed() needs the bytes recv() returned, got {_type_name(data)}: {data!r:.60}")


class MessageDecoder:
    """Turn a stream of bytes into Messages; bounded, and never does I/O.

    Feed it bytes with ``feed()`` as they arrive, take messages out with
    ``maybe_next_message()`` (None: it needs more bytes), and call ``feed_eof()`` when the
    peer closes. A header whose length exceeds `max_message_size` raises
    RemoteProtocolError inside the ``feed()`` that completed it. After an error, the
    messages that were complete before the offending header can still be taken out
    (``maybe_next_message()``); then every call raises the same error.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.max_message_size = _check_limit("max_message_size", max_message_size)
        self._buf = bytearray()
        self._checked = 0  # offset of the first header not yet checked against the limit
        self._eof = False
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: complete messages not yet taken out plus any incomplete one."""
        return len(self._buf)

    @property
    def bytes_needed(self) -> int:
        """How many more bytes complete the next header or message (0 if one is ready).

        A reader that asks recv() for no more than this never reads past a message.
        """
        self._raise_if_broken()
        if len(self._buf) < HEADER.size:
            return HEADER.size - len(self._buf)
        length, _ = HEADER.unpack_from(self._buf)
        return max(0, HEADER.size + length - len(self._buf))

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: FramingError) -> FramingError:
        self._error = error
        return error

    def _check_headers(self) -> None:
        """Check every complete header buffered so far, once each."""
        while self._checked + HEADER.size <= len(self._buf):
            length, kind = HEADER.unpack_from(self._buf, self._checked)
            if length > self.max_message_size:
                del self._buf[self._checked :]  # keep the complete messages before it, drop the rest
                raise self._fail(
                    RemoteProtocolError(
                        f"peer announced a {length}-byte message (type {kind}), over the limit of "
                        f"{self.max_message_size} bytes; refused before reading its body",
                        value=length,
                        limit=self.max_message_size,
                    )
                )
            self._checked += HEADER.size + length

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer (any amount, split anywhere).

        Raises RemoteProtocolError if a header completed by `data` announces a message
        over the limit, LocalProtocolError if called after feed_eof().
        """
        _check_data(data)
        self._raise_if_broken()
        if self._eof:
            raise LocalProtocolError("feed() after feed_eof(): the peer already closed this stream")
        self._buf += data
        self._check_headers()

    def maybe_next_message(self) -> Message | None:
        """The next complete message, or None if more bytes are needed.

        After an error: the messages complete before it, then the error again.
        """
        if len(self._buf) < HEADER.size:
            self._raise_if_broken()
            return None
        length, kind = HEADER.unpack_from(self._buf)
        end = HEADER.size + length
        if len(self._buf) < end:
            self._raise_if_broken()
            return None
        body = bytes(self._buf[HEADER.size : end])
        del self._buf[:end]
        self._checked -= end
        return Message(kind, body)

    def next_messages(self) -> list[Message]:
        """Every complete message buffered now (possibly none)."""
        out = []
        while (msg := self.maybe_next_message()) is not None:
            out.append(msg)
        return out

    def feed_eof(self) -> None:
        """Note that the peer closed. Raises IncompleteReadError if it closed mid-message.

        Complete messages still buffered can be taken out afterwards.
        """
        self._raise_if_broken()
        self._eof = True
        pending = self._pending_partial()
        if pending:
            if len(pending) >= HEADER.size:
                expected = HEADER.size + HEADER.unpack_from(pending)[0]
                what = f"{len(pending)} of {expected} bytes"
            else:
                expected = HEADER.size
                what = f"{len(pending)} of {HEADER.size} header bytes"
            del self._buf[len(self._buf) - len(pending) :]  # the error holds them (.partial)
            raise self._fail(
                IncompleteReadError(
                    f"peer closed the connection in the middle of a message: got {what}",
                    partial=pending,
                    expected=expected,
                )
            )

    def _pending_partial(self) -> bytes:
        """The incomplete message at the end of the buffer (b'' if none)."""
        offset = 0
        while offset + HEADER.size <= len(self._buf):
            length, _ = HEADER.unpack_from(self._buf, offset)
            if offset + HEADER.size + length > len(self._buf):
                break
            offset += HEADER.size + length
        return bytes(self._buf[offset:])


class LineDecoder:
    """Turn a stream of bytes into lines ending in LF or CRLF; bounded, no I/O.

    ``maybe_next_line()`` returns a line without its terminator (None: more bytes
    needed). A line whose content is longer than `max_line_size` raises
    RemoteProtocolError as soon as the bytes show it, newline or not; the lines complete
    before it can still be taken out, then every call raises the same error.
    """

    def __init__(self, max_line_size: int = DEFAULT_MAX_LINE_SIZE):
        self.max_line_size = _check_limit("max_line_size", max_line_size, top=1 << 30)
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for LF
        self._eof = False
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: complete lines not yet taken out plus any incomplete one."""
        return len(self._buf)

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _too_long(self, start: int, seen: int) -> FramingError:
        del self._buf[start:]  # keep the complete lines before it, drop the rest
        self._scanned = len(self._buf)
        self._error = RemoteProtocolError(
            f"peer sent a line of at least {seen} bytes without ending it, over the limit of "
            f"{self.max_line_size} bytes; refused",
            value=seen,
            limit=self.max_line_size,
        )
        return self._error

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer. Raises RemoteProtocolError on an over-long line."""
        _check_data(data)
        self._raise_if_broken()
        if self._eof:
            raise LocalProtocolError("feed() after feed_eof(): the peer already closed this stream")
        self._buf += data
        self._check_lengths()

    def _check_lengths(self) -> None:
        # Walk the complete lines once each; then bound the unfinished one. Its content may
        # reach max_line_size, plus one byte for a CR whose LF has not arrived yet.
        start = self._line_start()
        while True:
            nl = self._buf.find(b"\n", self._scanned)
            if nl < 0:
                self._scanned = len(self._buf)
                if len(self._buf) - start > self.max_line_size + 1:
                    raise self._too_long(start, len(self._buf) - start)
                return
            content = nl - start - (1 if nl > start and self._buf[nl - 1] == 0x0D else 0)
            if content > self.max_line_size:
                raise self._too_long(start, content)
            self._scanned = nl + 1
            start = nl + 1

    def _line_start(self) -> int:
        # Start of the line containing offset _scanned: just after the last LF before it.
        return self._buf.rfind(b"\n", 0, self._scanned) + 1

    def maybe_next_line(self) -> bytes | None:
        """The next line without its CRLF or LF, or None if more bytes are needed.

        After an error: the lines complete before it, then the error again.
        """
        nl = self._buf.find(b"\n", 0, self._scanned)
        if nl < 0:
            self._raise_if_broken()
            return None
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        self._scanned -= nl + 1
        return line[:-1] if line.endswith(b"\r") else line

    def feed_eof(self) -> None:
        """Note that the peer closed. Raises IncompleteReadError if it closed mid-line."""
        self._raise_if_broken()
        self._eof = True
        start = self._line_start()
        if start < len(self._buf):
            partial = bytes(self._buf[start:])
            del self._buf[start:]  # the error holds them (.partial)
            self._scanned = len(self._buf)
            self._error = IncompleteReadError(
                f"peer closed the connection in the middle of a line: {len(partial)} bytes without a newline",
                partial=partial,
                expected=None,
            )
            raise self._error


# -- the thin I/O layer: blocking sockets -------------------------------------------------


class _Deadline:
    """Apply one overall deadline to a series of recv() calls, restoring the timeout after."""

    def __init__(self, sock: socket.socket, deadline_s: float | None):
        if deadline_s is not None and (
            isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float)) or not 0 < deadline_s < 1e9
        ):
            raise ValueError(f"deadline_s must be a number of seconds > 0, or None; got {deadline_s!r}")
        self.sock = sock
        self.deadline_s = deadline_s
        self.started = time.monotonic()
        self.saved = sock.gettimeout()

    def recv(self, n: int, flags: int = 0, *, received: int, expected: int | None) -> bytes:
        if self.deadline_s is None:
            return self.sock.recv(n, flags)
        remaining = self.deadline_s - (time.monotonic() - self.started)
        try:
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            return self.sock.recv(n, flags)
        except TimeoutError:
            of = f" of {expected}" if expected is not None else ""
            raise MessageTimeout(
                f"deadline of {self.deadline_s:g} s passed with {received}{of} bytes received; "
                "the peer is too slow or frozen: close the connection",
                received=received,
                expected=expected,
                deadline_s=self.deadline_s,
            ) from None

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.deadline_s is not None:
            self.sock.settimeout(self.saved)


def readn(sock: socket.socket, n: int, *, deadline_s: float | None = None) -> bytes:
    """Read exactly `n` bytes from a blocking socket (recv() may return fewer per call).

    Raises IncompleteReadError (with ``.partial``) if the peer closes first, and
    MessageTimeout if `deadline_s` seconds pass first. Memory grows with what arrives,
    at most RECV_CHUNK bytes per recv(), never with `n` up front.
    """
    _check_limit("n", n, top=1 << 40)
    got = bytearray()
    with _Deadline(sock, deadline_s) as deadline:
        while len(got) < n:
            data = deadline.recv(min(n - len(got), RECV_CHUNK), received=len(got), expected=n)
            if not data:
                raise IncompleteReadError(
                    f"peer closed the connection after {len(got)} of {n} bytes", partial=bytes(got), expected=n
                )
            got += data
    return bytes(got)


def read_message(
    sock: socket.socket, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, deadline_s: float | None = None
) -> Message | None:
    """Read one length-prefixed message; None if the peer closed cleanly before it began.

    Never reads past the message, so calls can be mixed with other reads. Raises
    RemoteProtocolError for a length over `max_message_size` (checked as soon as the
    8-byte header is in, before the body is read), IncompleteReadError if the peer closes
    mid-message, MessageTimeout if the whole message takes longer than `deadline_s`.
    """
    decoder = MessageDecoder(max_message_size)
    with _Deadline(sock, deadline_s) as deadline:
        while (msg := decoder.maybe_next_message()) is None:
            expected = decoder.buffered + decoder.bytes_needed if decoder.buffered >= HEADER.size else None
            data = deadline.recv(min(decoder.bytes_needed, RECV_CHUNK), received=decoder.buffered, expected=expected)
            if not data:
                decoder.feed_eof()  # raises IncompleteReadError if a message had begun
                return None
            decoder.feed(data)
    return msg


def read_line(
    sock: socket.socket, *, max_line_size: int = DEFAULT_MAX_LINE_SIZE, deadline_s: float | None = None
) -> bytes | None:
    """Read one line (CRLF or LF, removed); None if the peer closed cleanly before it.

    Looks ahead with MSG_PEEK and then consumes only up to the newline, so it never
    reads past the line. Raises RemoteProtocolError for a line over `max_line_size`,
    IncompleteReadError if the peer closes mid-line, MessageTimeout after `deadline_s`.
    """
    import socket  # here, not at the top: the protocol layer above needs no socket module

    decoder = LineDecoder(max_line_size)
    with _Deadline(sock, deadline_s) as deadline:
        while (line := decoder.maybe_next_line()) is None:
            want = min(RECV_CHUNK, decoder.max_line_size + 2 - decoder.buffered)
            peeked = deadline.recv(want, socket.MSG_PEEK, received=decoder.buffered, expected=None)
            if not peeked:
                decoder.feed_eof()  # raises IncompleteReadError if a line had begun
                return None
            nl = peeked.find(b"\n")
            take = nl + 1 if nl >= 0 else len(peeked)
            while take:  # the peeked bytes are queued already: these recv() calls do not wait
                data = sock.recv(take)
                if not data:
                    break
                decoder.feed(data)
                take -= len(data)
    return line


def send_message(sock: socket.socket, body: bytes, type: int = 1) -> None:
    """Send one length-prefixed message with sendall()."""
    sock.sendall(encode_message(body, type))
