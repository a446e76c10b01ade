"""Checks for the exercises of lesson 04 (UDP).

1. ``udp_echo(sock, count)``: a UDP server loop. Three clients send datagrams of 0 to
   9,000 bytes to one bound socket before the loop runs, so they wait, interleaved, in its
   one receive queue; the loop must answer each, whole, at the address recvfrom() gave.
2. ``ask(sock, server, request, timeout_s, tries)``: a client that waits with a timeout and
   asks again. One server ignores the first two requests (as if the network lost them) and
   answers the third; another never answers, and ask() must give up with TimeoutError after
   `tries` requests, each followed by a real wait (the server's clock says how long).
3. ``send_reliably(sock, dest, messages, rto_s)``: stop-and-wait with sequence numbers, in
   the wire format of ``helpers.reliable_udp``. First a server that is slow twice: its late
   ACKs for a message arrive while the sender already waits for the next one, whose first
   copy was lost, so a sender that takes any ACK as its own moves on too early and that
   message never arrives. Then a lossy relay (loss, duplicates, reordering both ways).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from ..lossy import LossyRelay
from ..reliable_udp import Data, MalformedPacket, Receiver, decode
from ..servers import UDPServer
from .core import Trial, exercise

# -- 1. udp_echo ---------------------------------------------------------------------------

CLIENTS = 3
SIZES = (12, 0, 1400, 9000)  # bytes; an empty datagram is a message too, and 9,000 needs a big buffer

ECHO_HINT = (
    "Loop count times: data, address = sock.recvfrom(65535) takes one whole datagram off the "
    "queue and says who sent it (65,535 covers the largest); sock.sendto(data, address) sends "
    "it back there. Collect the addresses in a list and return it."
)


def _collect(sock: socket.socket, expected: int, timeout_s: float = 1.0) -> list[bytes]:
    """The datagrams that reach `sock`: wait (at most `timeout_s`) for `expected` of them, then
    take whatever else is already queued."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65535))
        except TimeoutError:
            break
    sock.setblocking(False)
    while True:
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            return got


def _settled(count: object, current: Any, timeout_s: float = 1.0) -> int:
    """What `current()` counts once it has reached `count` or stopped within `timeout_s`: a
    datagram sent just before the learner's function returned may still be on its way."""
    deadline = time.monotonic() + timeout_s
    while current() != count and time.monotonic() < deadline:
        time.sleep(0.005)
    return current()


@exercise("04", 1, "a UDP echo server loop", hint=ECHO_HINT)
def check_udp_echo(t: Trial, udp_echo: object) -> str:
    server = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    clients = [t.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(CLIENTS)]
    for client in clients:
        client.bind(("127.0.0.1", 0))  # so the address recvfrom() reports is the one getsockname() says
    sent: list[list[bytes]] = [[] for _ in clients]
    arrivals = []
    for size in SIZES:  # interleaved: client 0, 1, 2, then each one's next datagram
        for i, client in enumerate(clients):
            data = os.urandom(size)
            client.sendto(data, server.getsockname())
            sent[i].append(data)
            arrivals.append(client.getsockname())
    total = len(arrivals)
    out = t.call(udp_echo, server, total, name="udp_echo()", timeout_s=2.0, error_hints={
        OSError: "An unconnected UDP socket has no peer: send() and recv() need one. Use recvfrom() to learn "
                 "who sent each datagram and sendto(data, address) to answer.",
    }, hang_hint=f"{total} datagrams were waiting; after answering count of them the loop must return "
                 "(for _ in range(count): ...), not wait for more.")
    got = [_collect(client, len(mine)) for client, mine in zip(clients, sent)]
    for i, (mine, back) in enumerate(zip(sent, got)):
        cut = [(len(a), len(b)) for a, b in zip(mine, back) if len(b) < len(a) and a.startswith(b)]
        t.require(not cut, f"Client {i} sent a datagram of {cut[0][0]:,} bytes and got back only {cut[0][1]:,}: "
                  "recvfrom() returned no more than its buffer size, and the kernel discarded the rest."
                  if cut else "", "Ask recvfrom() for 65535 bytes: one call returns one datagram, and whatever "
                  "does not fit in the buffer is lost, not kept for the next call.")
        counts = ", ".join(f"client {k}: {len(g)}" for k, g in enumerate(got))
        t.require(len(back) == len(mine), f"Each client sent {len(mine)} datagrams, but the replies that came back "
                  f"were {counts}.", "Answer each datagram at the address recvfrom() returned with it: "
                  "sock.sendto(data, address). Several clients share the one server socket.")
        t.require(sorted(back) == sorted(mine), f"Client {i} got {len(back)} replies, but not the bytes it had sent.",
                  "Send back exactly the bytes recvfrom() returned, one sendto() per datagram.")
    served = out.value
    t.require(isinstance(served, list) and sorted(map(tuple, served)) == sorted(arrivals),
              f"Every client got its datagrams back, but udp_echo() returned {served!r:.100} instead of the "
              f"{total} addresses, one per datagram in the order they arrived.",
              "Append each address recvfrom() returned to a list and return the list.")
    ports = sorted({port for _, port in arrivals})
    return (f"udp_echo() answered {total} datagrams from {CLIENTS} clients (ports {', '.join(map(str, ports))}) "
            f"on one socket, with no accept() and no socket per client: each client got exactly its own "
            f"{len(SIZES)} datagrams back, whole ({min(SIZES)} to {max(SIZES):,} bytes).")


# -- 2. ask: a receive timeout, and retries ----------------------------------------------------

TIMEOUT_S, TRIES, IGNORED = 0.1, 3, 2  # the check's arguments, and how many requests the server ignores
REQUEST = b"what time is it?"

ASK_HINT = (
    "sock.settimeout(timeout_s) makes recvfrom() raise TimeoutError when no reply comes in time. "
    "Loop tries times: sendto(request, server), then try recvfrom(); return the reply, or on "
    "TimeoutError go round again. After the last try, raise TimeoutError yourself."
)


class _Forgetful:
    """A UDPServer handler that ignores the first `ignore` requests, then answers; it keeps the
    time each request arrived (the server's clock, not the client's)."""

    def __init__(self, ignore: int):
        self.ignore = ignore
        self.arrived: list[float] = []

    def __call__(self, data: bytes, addr: Any) -> bytes | None:
        self.arrived.append(time.monotonic())
        return None if len(self.arrived) <= self.ignore else b"answer to " + data


def _gaps_ms(times: list[float]) -> list[int]:
    return [round((b - a) * 1000) for a, b in zip(times, times[1:])]


@exercise("04", 2, "a client with a timeout that asks again", hint=ASK_HINT)
def check_ask(t: Trial, ask: Any) -> str:
    def asked(*args: Any) -> tuple[str, Any]:
        return ("returned", ask(*args))  # so that giving up with None is not taken for an untouched stub

    forgetful = _Forgetful(IGNORED)
    with UDPServer(forgetful) as server:
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out = t.call(ask, sock, server.address, REQUEST, TIMEOUT_S, TRIES, name="ask()", timeout_s=3.0,
                     error_hints={TimeoutError: f"The server ignored the first request, as if the network had lost "
                                                f"it. When recvfrom() times out, send the request again (up to "
                                                f"tries={TRIES} times)."},
                     hang_hint="Nothing came back for the first request: set sock.settimeout(timeout_s) so that "
                               "recvfrom() gives up and you can ask again.")
    reply = out.value
    requests, gaps = len(forgetful.arrived), _gaps_ms(forgetful.arrived)
    t.require(reply == b"answer to " + REQUEST, f"ask() returned {reply!r:.60}, not the server's reply "
              f"{b'answer to ' + REQUEST!r}.", "Return the bytes recvfrom() gave you.")
    t.require(requests == IGNORED + 1, f"The server received {requests} requests; it answered the third.",
              "Send the request once per try, and stop as soon as a reply has come.")
    t.require(min(gaps) >= TIMEOUT_S * 500, f"The requests reached the server {gaps} ms apart: ask() sent again "
              f"before waiting {TIMEOUT_S * 1000:.0f} ms for a reply.", "Wait with recvfrom() on a socket "
              "with settimeout(timeout_s) before asking again.")

    with UDPServer() as silent:  # receives, never answers
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        started = time.monotonic()
        gave_up = t.call(asked, sock, silent.address, REQUEST, TIMEOUT_S, TRIES, name="ask()", timeout_s=3.0,
                         expect=(TimeoutError,))
        waited_s = time.monotonic() - started
    silent_requests = silent.results.qsize()
    t.require(isinstance(gave_up.error, TimeoutError), f"Nobody answered, but ask() returned "
              f"{gave_up.value[1] if gave_up.value else None!r:.60} instead of raising TimeoutError.",
              f"After {TRIES} requests without a reply, raise TimeoutError: the caller must know nobody answered.")
    t.require(silent_requests == TRIES, f"Against a server that never answers, ask() sent {silent_requests} "
              f"requests before giving up, not tries={TRIES}.", "Count the tries: one request per try.")
    return (f"ask() got its answer with request number {IGNORED + 1}, after the server had ignored {IGNORED}; "
            f"the requests arrived {' and '.join(map(str, gaps))} ms apart (the timeout is "
            f"{TIMEOUT_S * 1000:.0f} ms). Against a server that never answers it sent {TRIES} requests and "
            f"raised TimeoutError after {waited_s:.2f} s.")


# -- 3. send_reliably: stop-and-wait -----------------------------------------------------------

RTO_S = 0.04  # the sender's retransmission timeout the check passes
SLOW = {2, 5}  # the server answers the first copy of these messages late...
SLOW_S = 5 * RTO_S  # ...by this much: the sender retransmits meanwhile, and each copy gets an ACK
SLOW_MESSAGES = 8
RELAY_MESSAGES, RELAY_SEED = 20, 7

RELIABLE_HINT = (
    "For each message, numbered seq = 0, 1, 2, ...: send h.reliable_udp.encode_data(seq, payload), "
    "then wait (settimeout(rto_s)) for an ACK with h.reliable_udp.decode(sock.recv(64)). Only an Ack "
    "whose seq is this message's acknowledges it: ignore others and keep waiting; on TimeoutError "
    "send the same datagram again. Count every sendto() and return the count."
)


class _SlowOnce:
    """A UDPServer handler around a Receiver: the first copy of each message in SLOW is answered
    late (the server sleeps: that is the experiment), and the first copy of the message after it
    is lost. Counts every datagram it gets."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.seen: set[int] = set()
        self.datagrams = 0
        self.lost: list[int] = []

    def __call__(self, data: bytes, addr: Any) -> bytes | None:
        self.datagrams += 1
        try:
            packet = decode(data)
        except MalformedPacket:
            packet = None
        if isinstance(packet, Data) and packet.seq not in self.seen:
            self.seen.add(packet.seq)
            if packet.seq in SLOW:
                time.sleep(SLOW_S)  # a slow server: its ACK comes after the sender's timer ran out
            elif packet.seq - 1 in SLOW:
                self.lost.append(packet.seq)
                return None  # this copy is lost: the sender must send it again
        return self.receiver.handle(data, addr)


def _messages(n: int) -> list[bytes]:
    return [f"message {i:02} ".encode() + os.urandom(8).hex().encode() for i in range(n)]


def _delivered(t: Trial, receiver: Receiver, messages: list[bytes], after: str) -> None:
    got = receiver.delivered
    gap = len(got) if got == messages[: len(got)] else None
    if gap is not None and gap < len(messages):
        waiting = sorted(receiver.buffer)
        stale = gap in {s + 1 for s in SLOW} and after == "slow"
        t.fail(f"send_reliably() returned, but the receiver had only messages 0-{gap - 1} in order: message "
               f"{gap} never arrived" + (f" (messages {waiting[0]}-{waiting[-1]} arrived after it and wait for it)"
                                         if waiting else "") + ".",
               f"Message {gap}'s first copy was lost, and what reached your sender meanwhile was a late ACK "
               f"for message {gap - 1}. Check the seq of each ACK: only Ack.seq == {gap} acknowledges message "
               f"{gap}; ignore the others and keep waiting (and resending)." if stale else RELIABLE_HINT)
    t.require(got == messages, f"The receiver delivered {len(got)} messages, not the {len(messages)} sent, in "
              "order.", RELIABLE_HINT)


@exercise("04", 3, "stop-and-wait with sequence numbers", hint=RELIABLE_HINT)
def check_send_reliably(t: Trial, send_reliably: Any) -> str:
    hang = ("A copy of a message was lost and no ACK will come for it: wait with a timeout "
            "(sock.settimeout(rto_s)) and send the message again when it runs out.")
    messages = _messages(SLOW_MESSAGES)
    slow = _SlowOnce()
    with UDPServer(slow) as server:
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        count = t.call(send_reliably, sock, server.address, messages, RTO_S, name="send_reliably()",
                       timeout_s=5.0, hang_hint=hang).value
        received = _settled(count, lambda: slow.datagrams)
    _delivered(t, slow.receiver, messages, "slow")
    t.require(count == received, f"All messages arrived. send_reliably() returned {count!r:.40}, but the "
              f"server received {received} datagrams from it.", "Count every sendto(), first copies and "
              "retransmissions, and return the count.")
    late_acks = slow.receiver.duplicates

    messages = _messages(RELAY_MESSAGES)
    receiver = Receiver()
    with UDPServer(receiver.handle) as server, \
            LossyRelay(server.address, loss=0.2, duplicate=0.1, reorder=0.1, delay_s=0.001, seed=RELAY_SEED) as relay:
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        count = t.call(send_reliably, sock, relay.address, messages, RTO_S, name="send_reliably()",
                       timeout_s=5.0, hang_hint=hang).value
        relayed = _settled(count, lambda: relay.stats.to_server.received)
    _delivered(t, receiver, messages, "relay")
    stats = relay.stats
    t.require(count == relayed, f"All messages arrived through the lossy relay. send_reliably() "
              f"returned {count!r:.40}, but the relay received {relayed} datagrams from it.",
              "Count every sendto() and return the count.")
    return (f"Past the slow server, all {SLOW_MESSAGES} messages arrived in order: {late_acks} late ACKs for "
            f"earlier messages reached your sender while message {min(slow.lost)}'s first copy was lost, and it "
            f"waited for the right one. Through the lossy relay, all {RELAY_MESSAGES} arrived in order, exactly "
            f"once, after {count - RELAY_MESSAGES} retransmissions ({stats.to_server.dropped} DATA and "
            f"{stats.to_client.dropped} ACKs lost, {stats.to_server.duplicated + stats.to_client.duplicated} "
            "datagrams duplicated).")
