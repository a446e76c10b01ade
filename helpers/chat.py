"""A line-based chat room, as state and rules only (sans-IO): lesson 14's server logic.

Theory of operation. A chat server has two jobs that are easy to tangle: waiting on many
sockets (select, poll, epoll: lessons 14-16) and deciding who gets which bytes. This
module does only the second. The I/O loop tells a ``ChatRoom`` what happened on a
connection (``join``, ``receive`` with the bytes recv() returned, ``leave``) and gets back
a list of actions to carry out: ``Send(to, data)`` and ``Close(who, reason)``. The room never
touches a socket, so the same class serves a select loop, a poll loop, asyncio, or a test
that feeds one byte at a time.

The protocol is lines of UTF-8 text ending in LF (CRLF accepted), framed by
``framing.LineDecoder``:

* a new member is called ``guest<N>`` and is greeted; the others hear "* guest<N> joined";
* ``/name NEW`` renames the sender (letters, digits, ``_`` and ``-``, at most 16);
* any other line is broadcast to everyone else as ``name: text``;
* ``receive(who, b"")`` means recv() returned b"": the member left (end of stream); the
  others hear "* name left". A line longer than ``max_line_size`` closes that member with
  a reason (the peer broke the protocol), and the others hear why; the complete lines
  before it are still acted on, so the outcome does not depend on how TCP split the bytes.
* bytes that are not UTF-8 are replaced (U+FFFD), not fatal.

Lines from the server start with ``* ``; relayed messages start with the sender's name.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass

from .framing import LineDecoder, RemoteProtocolError

__all__ = ["Send", "Close", "Action", "ChatRoom", "NAME_PATTERN", "DEFAULT_MAX_LINE_SIZE"]

#: Names a member may take with /name: short, printable, no spaces (so "name: text" parses).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
#: Longest chat line accepted, in bytes without the terminator: a chat line is a sentence,
#: and a small bound keeps one member from making the server buffer much on its behalf.
DEFAULT_MAX_LINE_SIZE = 1024
#: The most a room accepts as max_line_size: 1 MiB is already far more than a sentence.
MAX_LINE = 1 << 20


@dataclass(frozen=True)
class Send:
    """Send `data` (complete lines) to member `to`."""

    to: Hashable
    data: bytes


@dataclass(frozen=True)
class Close:
    """Close member `who`'s connection; `reason` says why (for logs, not the wire)."""

    who: Hashable
    reason: str


Action = Send | Close


def _line(text: str) -> bytes:
    return text.encode("utf-8") + b"\n"


class ChatRoom:
    """Who is in the room, and what each event makes the server send.

    Members are identified by any hashable key the I/O layer chooses (a socket, an fd, a
    number). Every method returns the actions to carry out, in order.
    """

    def __init__(self, max_line_size: int = DEFAULT_MAX_LINE_SIZE):
        if isinstance(max_line_size, bool) or not isinstance(max_line_size, int) or not 1 <= max_line_size <= MAX_LINE:
            raise ValueError(f"max_line_size must be an int in 1..{MAX_LINE} (bytes a line), got {max_line_size!r}")
        self.max_line_size = max_line_size
        self._names: dict[Hashable, str] = {}
        self._decoders: dict[Hashable, LineDecoder] = {}
        self._joined = 0

    @property
    def members(self) -> dict[Hashable, str]:
        """A copy of {member key: name}, in the order they joined."""
        return dict(self._names)

    def _known(self, who: Hashable) -> None:
        if who not in self._names:
            raise KeyError(f"{who!r} is not in the room; call join({who!r}) when its connection is accepted")

    def _to_others(self, who: Hashable, data: bytes) -> list[Action]:
        return [Send(other, data) for other in self._names if other != who]

    def join(self, who: Hashable) -> list[Action]:
        """A connection was accepted: greet it and tell the others."""
        if who in self._names:
            raise ValueError(f"{who!r} already joined; each connection joins once")
        self._joined += 1
        name = f"guest{self._joined}"
        others = len(self._names)
        self._names[who] = name
        self._decoders[who] = LineDecoder(self.max_line_size)
        greeting = _line(f"* welcome, you are {name}; {others} other(s) here; /name NEW to rename")
        return [Send(who, greeting), *self._to_others(who, _line(f"* {name} joined"))]

    def receive(self, who: Hashable, data: bytes) -> list[Action]:
        """Bytes arrived from `who` (any split); b"" means end of stream (the member left).

        Complete lines are acted on at once; a partial line waits for the rest. A line
        longer than ``max_line_size`` ends in ``Close(who, ...)``.
        """
        self._known(who)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"receive() needs the bytes recv() returned, got {type(data).__name__}: {data!r:.60}")
        if not data:
            return self.leave(who, "left")
        decoder = self._decoders[who]
        actions: list[Action] = []
        try:
            decoder.feed(data)
        except RemoteProtocolError as exc:
            error: RemoteProtocolError | None = exc
        else:
            error = None
        try:  # after an error the decoder still hands out the lines complete before it
            while (raw := decoder.maybe_next_line()) is not None:
                actions += self._on_line(who, raw.decode("utf-8", errors="replace"))
        except RemoteProtocolError as exc:
            error = exc
        if error is not None:  # the same words however the bytes were split (error.value is "at least")
            refusal = f"* you sent a line over the limit of {self.max_line_size} bytes; closing"
            actions += [Send(who, _line(refusal)), *self.leave(who, "sent a line that is too long")]
        return actions

    def _on_line(self, who: Hashable, text: str) -> list[Action]:
        name = self._names[who]
        command, _, rest = text.partition(" ")
        if command == "/name":  # "/nameabc" is a message, not a rename to "abc"
            new = rest.strip()
            if not NAME_PATTERN.match(new):
                return [Send(who, _line(f"* {new!r} is not a name: use 1-16 letters, digits, _ or -"))]
            if new in self._names.values():
                return [Send(who, _line(f"* {new} is taken"))]
            self._names[who] = new
            return [Send(who, _line(f"* you are {new}")), *self._to_others(who, _line(f"* {name} is now {new}"))]
        return self._to_others(who, _line(f"{name}: {text}"))

    def leave(self, who: Hashable, reason: str = "left") -> list[Action]:
        """Remove `who` (EOF, an error, or the server's decision) and tell the others."""
        self._known(who)
        name = self._names.pop(who)
        del self._decoders[who]
        return [Close(who, reason), *self._to_others(who, _line(f"* {name} {reason}"))]
