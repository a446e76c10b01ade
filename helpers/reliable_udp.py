"""Reliable delivery over UDP: sequence numbers, acknowledgements and retransmission.

Theory of operation. UDP hands each datagram to the network once; it may be lost,
duplicated or reordered (RFC 768 promises nothing more, and RFC 8085 section 3.3 tells
applications that need reliability to add it themselves). This module adds it the classic
way, as a *selective repeat* protocol (stop-and-wait is the special case ``window=1``):

* The sender numbers each message (``seq`` 0, 1, 2, ...) and keeps at most ``window``
  unacknowledged messages in flight. Each has a timer; when it runs out (``rto_s``) the
  message is sent again. Real protocols adapt the timeout to the measured round trip
  (RFC 6298); a fixed one keeps the lesson readable.
* The receiver acknowledges every DATA datagram it gets, even a duplicate (its earlier ACK
  may have been lost). Each ACK names the ``seq`` it answers and the *cumulative* point
  ``next_expected``: everything below it has arrived, so one ACK that survives makes up
  for earlier ones that were lost. Out-of-order messages wait in a buffer; messages are
  delivered to the application in order, each exactly once; duplicates are counted and
  dropped.

Wire format (network byte order):

    DATA  | type=1 (u8) | seq (u32) | payload ...
    ACK   | type=2 (u8) | seq (u32) | next_expected (u32) |

``Sender`` and ``Receiver`` do no I/O (bytes in, bytes out, the time passed in), so tests
can run them over a simulated network; ``Transfer`` (the sending loop, which ``send_all``
runs) and ``Receiver.handle`` connect them to real sockets (a helpers.UDPServer runs the
receiving side).
"""

from __future__ import annotations

import enum
import math
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "PacketType",
    "Data",
    "Ack",
    "MalformedPacket",
    "DeliveryTimeout",
    "encode_data",
    "encode_ack",
    "decode",
    "Event",
    "Sender",
    "Receiver",
    "SendReport",
    "Transfer",
    "send_all",
    "MAX_PAYLOAD",
]

_DATA = struct.Struct("!BI")
_ACK = struct.Struct("!BII")
MAX_SEQ = 2**32 - 1
# 65507 = 65535 (IPv4 total length) - 20 (IP header) - 8 (UDP header); our header takes 5.
MAX_PAYLOAD = 65507 - _DATA.size
MAX_WINDOW = 1024  # far more than loopback needs; a bound keeps the receiver's buffer bounded


class PacketType(enum.IntEnum):
    """The first byte of every datagram."""

    DATA = 1
    ACK = 2


@dataclass(frozen=True)
class Data:
    """A numbered message."""

    seq: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    """"I got `seq`, and everything below `next_expected`"."""

    seq: int
    next_expected: int


class MalformedPacket(ValueError):
    """A datagram that is not one of ours (the peer, or something else, sent garbage)."""


class DeliveryTimeout(TimeoutError):
    """send_all() ran out of time before every message was acknowledged."""


def _check_seq(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ValueError(f"{name} must be an int in 0-{MAX_SEQ} (a u32), got {value!r}")


def encode_data(seq: int, payload: bytes) -> bytes:
    """The DATA datagram for message `seq`."""
    _check_seq("seq", seq)
    if not isinstance(payload, (bytes, bytearray)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}; encode text first, e.g. s.encode()")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes does not fit one UDP datagram (max {MAX_PAYLOAD})")
    return _DATA.pack(PacketType.DATA, seq) + bytes(payload)


def encode_ack(seq: int, next_expected: int) -> bytes:
    """The ACK datagram for `seq`, with the cumulative point `next_expected`."""
    _check_seq("seq", seq)
    _check_seq("next_expected", next_expected)
    return _ACK.pack(PacketType.ACK, seq, next_expected)


def decode(datagram: bytes) -> Data | Ack:
    """Parse one datagram; MalformedPacket says what is wrong with it.

    TypeError if `datagram` is not bytes at all (a str, None): a bug in the caller.
    """
    if not isinstance(datagram, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode() needs the bytes recvfrom() returned, got {type(datagram).__name__}")
    datagram = bytes(datagram)
    if len(datagram) < _DATA.size:
        raise MalformedPacket(f"datagram of {len(datagram)} bytes is shorter than the {_DATA.size}-byte header")
    kind = datagram[0]
    if kind == PacketType.DATA:
        (_, seq) = _DATA.unpack_from(datagram)
        return Data(seq, bytes(datagram[_DATA.size :]))
    if kind == PacketType.ACK:
        if len(datagram) != _ACK.size:
            raise MalformedPacket(f"an ACK is {_ACK.size} bytes, got {len(datagram)}")
        _, seq, next_expected = _ACK.unpack(datagram)
        return Ack(seq, next_expected)
    raise MalformedPacket(f"unknown packet type {kind} (expected 1 = DATA or 2 = ACK)")


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be an int in 1-{MAX_WINDOW} (1 = stop-and-wait), got {window!r}")
    return window


@dataclass(frozen=True)
class Event:
    """One thing the sender did or saw, at time `t_s` (the clock passed to it)."""

    t_s: float
    seq: int
    kind: str  # "send", "retransmit" or "ack"


class Sender:
    """The sending half, without I/O: call ``poll(now)`` for datagrams to send,
    ``datagram_received(data, now)`` for each ACK, ``next_timeout(now)`` for how long to
    wait; ``done`` once every message is acknowledged.

    `window` messages at most are in flight (1 = stop-and-wait); a message unacknowledged
    for `rto_s` seconds is sent again.
    """

    def __init__(self, messages: Sequence[bytes], *, window: int = 8, rto_s: float = 0.03):
        if len(messages) > MAX_SEQ:
            raise ValueError(f"at most {MAX_SEQ} messages per transfer, got {len(messages)}")
        for i, m in enumerate(messages):
            if not isinstance(m, (bytes, bytearray)):
                raise TypeError(f"message {i} must be bytes, got {type(m).__name__}")
            if len(m) > MAX_PAYLOAD:
                raise ValueError(f"message {i} has {len(m)} bytes; one datagram carries at most {MAX_PAYLOAD}")
        if isinstance(rto_s, bool) or not isinstance(rto_s, (int, float)) or not 0 < rto_s <= 10:
            raise ValueError(f"rto_s must be a number of seconds in (0, 10], got {rto_s!r}")
        self.messages = [bytes(m) for m in messages]
        self.window = _check_window(window)
        self.rto_s = float(rto_s)
        self.base = 0  # lowest unacknowledged seq
        self.next_seq = 0  # next seq never sent yet
        self.acked = [False] * len(messages)
        self.sent_at: dict[int, float] = {}  # in-flight seq -> time of its last transmission
        self.transmissions = 0
        self.retransmissions = 0
        self.acks = 0
        self.ignored = 0  # malformed datagrams and ACKs for messages never sent
        self.events: list[Event] = []

    @property
    def done(self) -> bool:
        """True once every message is acknowledged."""
        return self.base == len(self.messages)

    def poll(self, now: float) -> list[bytes]:
        """Datagrams to send at time `now`: timed-out ones again, then new ones the window allows."""
        out = []
        for seq, sent in sorted(self.sent_at.items()):
            if sent + self.rto_s <= now:
                out.append(self._transmit(seq, now, "retransmit"))
        while self.next_seq < len(self.messages) and self.next_seq < self.base + self.window:
            out.append(self._transmit(self.next_seq, now, "send"))
            self.next_seq += 1
        return out

    def _transmit(self, seq: int, now: float, kind: str) -> bytes:
        self.sent_at[seq] = now
        self.transmissions += 1
        if kind == "retransmit":
            self.retransmissions += 1
        self.events.append(Event(now, seq, kind))
        return encode_data(seq, self.messages[seq])

    def datagram_received(self, datagram: bytes, now: float) -> None:
        """Take in one datagram from the receiver (an ACK); anything else is counted and ignored."""
        try:
            packet = decode(datagram)
        except MalformedPacket:
            self.ignored += 1
            return
        if not isinstance(packet, Ack) or packet.seq >= self.next_seq or packet.next_expected > self.next_seq:
            self.ignored += 1  # not an ACK, or one for a message we never sent
            return
        self.acks += 1
        self.events.append(Event(now, packet.seq, "ack"))
        self._mark(packet.seq)
        for seq in range(self.base, packet.next_expected):
            self._mark(seq)
        while self.base < len(self.messages) and self.acked[self.base]:
            self.base += 1

    def _mark(self, seq: int) -> None:
        self.acked[seq] = True
        self.sent_at.pop(seq, None)

    def next_deadline(self) -> float | None:
        """The time (same clock as `now`) the earliest retransmission is due; None when done.

        With nothing in flight and messages left to send, that is "at once" (-inf).
        """
        if self.done:
            return None
        if not self.sent_at:
            return -math.inf
        return min(self.sent_at.values()) + self.rto_s

    def next_timeout(self, now: float) -> float | None:
        """Seconds until the earliest retransmission is due (0 if overdue); None when done."""
        deadline = self.next_deadline()
        return None if deadline is None else max(0.0, deadline - now)


class Receiver:
    """The receiving half, without I/O: feed it datagrams, send back what it returns.

    ``delivered`` holds the payloads in order, each exactly once. Messages ahead of a gap
    wait in a buffer of at most `max_buffered` entries; a DATA beyond that is dropped
    unacknowledged (a sender whose window is no larger never sends one).
    """

    def __init__(self, *, max_buffered: int = MAX_WINDOW):
        self.max_buffered = _check_window(max_buffered)
        self.next_expected = 0
        self.delivered: list[bytes] = []
        self.buffer: dict[int, bytes] = {}
        self.duplicates = 0  # DATA for a seq already delivered or buffered
        self.out_of_order = 0  # DATA that arrived ahead of a gap
        self.ignored = 0  # malformed datagrams, ACKs, DATA beyond the buffer
        self.peer: object | None = None  # handle(): the sender's address, from its first DATA
        self.foreign = 0  # handle(): datagrams from another address than the peer's

    def datagram_received(self, datagram: bytes) -> bytes | None:
        """Take one datagram; return the ACK to send back, or None if it is to be ignored."""
        try:
            packet = decode(datagram)
        except MalformedPacket:
            self.ignored += 1
            return None
        if not isinstance(packet, Data) or packet.seq >= self.next_expected + self.max_buffered:
            self.ignored += 1
            return None
        seq = packet.seq
        if seq < self.next_expected or seq in self.buffer:
            self.duplicates += 1
        elif seq == self.next_expected:
            self.delivered.append(packet.payload)
            self.next_expected += 1
            while self.next_expected in self.buffer:
                self.delivered.append(self.buffer.pop(self.next_expected))
                self.next_expected += 1
        else:
            self.out_of_order += 1
            self.buffer[seq] = packet.payload
        return encode_ack(seq, self.next_expected)

    def handle(self, data: bytes, addr: object) -> bytes | None:
        """A helpers.UDPServer handler: ``UDPServer(receiver.handle)`` runs the receiving side.

        The address of the first well-formed DATA becomes the peer; datagrams from any other
        address are ignored and counted in ``foreign``. On a shared host anyone may send to
        our port, and an unconnected UDP socket accepts them all (lesson 11): without this, a
        forged DATA from another process would be delivered as the sender's.
        """
        if self.peer is None:
            try:
                is_data = isinstance(decode(data), Data)
            except MalformedPacket:
                is_data = False
            if is_data:
                self.peer = addr
        elif addr != self.peer:
            self.foreign += 1
            return None
        return self.datagram_received(data)


@dataclass
class SendReport:
    """What send_all() did: counts, time, and the sender's event log (times from 0)."""

    messages: int
    payload_bytes: int
    elapsed_s: float
    transmissions: int
    retransmissions: int
    acks: int
    events: list[Event] = field(default_factory=list)

    @property
    def goodput_kB_s(self) -> float:
        """Application bytes delivered per second, in kB/s (1 kB = 1000 bytes)."""
        return self.payload_bytes / self.elapsed_s / 1000 if self.elapsed_s > 0 else math.inf


class Transfer:
    """The sending loop of ``send_all()``, one step per message acknowledged: iterate to run it.

    ``for acked in Transfer(sock, dest, messages)`` sends every message reliably to the
    Receiver at `dest` over the UDP socket `sock` and yields 1, 2, ... ``len(messages)``, once
    per message as the messages are acknowledged in order, so ``h.progress(transfer,
    desc=...)`` shows how far it got. When the loop ends, ``report`` holds the SendReport.
    Iterating raises DeliveryTimeout (a TimeoutError) if the transfer takes longer than
    `deadline_s`, saying how far it got. The socket's timeout is changed while it runs and
    restored after. TypeError for a socket that is not UDP, ValueError for bad arguments.
    """

    def __init__(
        self,
        sock: socket.socket,
        dest: tuple[str, int],
        messages: Sequence[bytes],
        *,
        window: int = 8,
        rto_s: float = 0.03,
        deadline_s: float = 10.0,
    ):
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_DGRAM:
            kind = getattr(getattr(sock, "type", None), "name", type(sock).__name__)
            raise TypeError(f"send_all() needs a UDP (SOCK_DGRAM) socket, got {kind}")
        if isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float)) or not 0 < deadline_s <= 600:
            raise ValueError(f"deadline_s must be a number of seconds in (0, 600], got {deadline_s!r}")
        self.sock, self.dest, self.deadline_s = sock, dest, float(deadline_s)
        self.sender = Sender(messages, window=window, rto_s=rto_s)
        self.report: SendReport | None = None

    def __len__(self) -> int:
        return len(self.sender.messages)

    def __iter__(self) -> Iterator[int]:
        sender, sock = self.sender, self.sock
        old_timeout = sock.gettimeout()
        start = time.monotonic()
        try:
            while not sender.done:
                now = time.monotonic()
                if now - start > self.deadline_s:
                    raise DeliveryTimeout(
                        f"only {sender.base} of {len(sender.messages)} messages acknowledged after "
                        f"{self.deadline_s:g} s ({sender.retransmissions} retransmissions); is the receiver "
                        f"running at {self.dest}?"
                    )
                for datagram in sender.poll(now):  # timed-out messages again, then what the window allows
                    sock.sendto(datagram, self.dest)
                wait = sender.next_timeout(time.monotonic())
                if wait is None:
                    break
                sock.settimeout(max(wait, 0.0001))  # wait for an ACK no longer than the next timer
                try:
                    data = sock.recv(MAX_PAYLOAD + _DATA.size)
                except TimeoutError:
                    continue
                except ConnectionRefusedError:
                    continue  # an ICMP error from an earlier send; the retransmit timer covers it
                before = sender.base
                sender.datagram_received(data, time.monotonic())
                yield from range(before + 1, sender.base + 1)
        finally:
            sock.settimeout(old_timeout)
        events = [Event(e.t_s - start, e.seq, e.kind) for e in sender.events]
        self.report = SendReport(
            messages=len(sender.messages),
            payload_bytes=sum(len(m) for m in sender.messages),
            elapsed_s=time.monotonic() - start,
            transmissions=sender.transmissions,
            retransmissions=sender.retransmissions,
            acks=sender.acks,
            events=events,
        )


def send_all(
    sock: socket.socket,
    dest: tuple[str, int],
    messages: Sequence[bytes],
    *,
    window: int = 8,
    rto_s: float = 0.03,
    deadline_s: float = 10.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """Send every message reliably to the Receiver at `dest` over the UDP socket `sock`.

    Returns once every message is acknowledged (``Transfer`` is the loop). Raises
    DeliveryTimeout (a TimeoutError) if that takes longer than `deadline_s`, saying how far
    it got; ValueError for bad arguments. The socket's timeout is changed while this runs
    and restored after. `on_progress(acknowledged, total)` is called each time one more
    message is acknowledged in order (e.g. to move a progress bar).
    """
    transfer = Transfer(sock, dest, messages, window=window, rto_s=rto_s, deadline_s=deadline_s)
    for acked in transfer:
        if on_progress is not None:
            on_progress(acked, len(transfer))
    assert transfer.report is not None  # set when the loop ends
    return transfer.report
