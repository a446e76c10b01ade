"""Checks for the exercises of lesson 11 (connected UDP).

1. ``udp_probe(sock, address, timeout_s)``: connect the UDP socket, send one datagram and
   report what came back: "open" (a reply), "closed" (ConnectionRefusedError: the ICMP port
   unreachable reached the connected socket) or "silent" (nothing within `timeout_s`). The
   check gives it a held port where nobody receives (``udp_ports.unreachable_port``), a UDP
   echo server, and a server that receives but never answers.
2. ``send_all(sock, datagrams)``: send every datagram on a connected socket; when send()
   raises ConnectionRefusedError, that call sent nothing, so send the same datagram again.
   The port is closed for the first datagram and opens (``UnreachablePort.admit``) once its
   ICMP error is stored on the socket: the next send() is refused, and only a sender that
   resends gets every later datagram through. The receiver's own queue is the evidence.
3. ``fetch(sock, server)``: a TFTP-style exchange (RFC 1350). The server answers a request
   from a new port of its own; the client must learn that port from ``recvfrom()``,
   ``connect()`` to it, then ``send()`` an ACK and ``recv()`` the rest. Meanwhile a third
   socket sends junk to the client: a connected socket never sees it.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Any

from ..servers import UDPServer
from ..udp_ports import UnreachablePort, unreachable_port
from .core import Trial, exercise

# -- 1. udp_probe --------------------------------------------------------------------------

PROBE_TIMEOUT_S = 0.5  # what the check passes as timeout_s
PROBE_HINT = (
    "sock.settimeout(timeout_s); sock.connect(address); sock.send(b'ping'); then sock.recv(): a "
    "datagram back means 'open'; ConnectionRefusedError (the ICMP port unreachable, which only a "
    "connected socket hears) means 'closed'; TimeoutError means 'silent'."
)


def _echo(data: bytes, addr: Any) -> bytes:
    return data


def _peer(t: Trial, sock: socket.socket, name: str) -> tuple[str, int] | None:
    """The socket's peer address, None if it is not connected; NOT YET if the learner closed it."""
    t.require(sock.fileno() != -1, f"{name} closed the socket it was given.", "Leave closing to the caller.")
    try:
        return sock.getpeername()[:2]
    except OSError:  # ENOTCONN: never connected
        return None


@exercise("11", 1, "a connected probe that hears ICMP errors", hint=PROBE_HINT)
def check_probe(t: Trial, udp_probe: object) -> str:
    errors = {ConnectionRefusedError: "recv() (or send()) raised ConnectionRefusedError: that IS the answer. "
              "Catch it and return 'closed'.",
              TimeoutError: "recv() timed out: catch TimeoutError and return 'silent'."}
    with unreachable_port() as nobody:
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed = t.call(udp_probe, sock, nobody.address, PROBE_TIMEOUT_S, name="udp_probe()", timeout_s=3.0,
                        error_hints=errors, hang_hint=PROBE_HINT)
    if closed.value == "silent":
        t.fail(f"For a port where nobody receives, udp_probe() waited {closed.wall_s:.2f} s and returned 'silent'. "
               "The kernel did answer with ICMP port unreachable, but an unconnected socket is never told.",
               "connect(address) the socket before sending: then the next send() or recv() raises "
               "ConnectionRefusedError.")
    t.require(closed.value == "closed", f"For a port where nobody receives, udp_probe() returned "
              f"{closed.value!r:.40}.", PROBE_HINT)

    with UDPServer(_echo) as echo:
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        opened = t.call(udp_probe, sock, echo.address, PROBE_TIMEOUT_S, name="udp_probe()", timeout_s=3.0,
                        error_hints=errors, hang_hint=PROBE_HINT).value
    t.require(opened == "open", f"For an echo server that answers every datagram, udp_probe() returned "
              f"{opened!r:.40}.", "A datagram back from recv() means 'open'.")

    with UDPServer() as quiet:  # receives, never answers
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent = t.call(udp_probe, sock, quiet.address, PROBE_TIMEOUT_S, name="udp_probe()", timeout_s=3.0,
                        error_hints=errors, hang_hint=PROBE_HINT)
        peer = _peer(t, sock, "udp_probe()")
    t.require(silent.value == "silent", f"For a server that receives but never answers, udp_probe() returned "
              f"{silent.value!r:.40} after {silent.wall_s:.2f} s.", PROBE_HINT)
    t.require(silent.wall_s >= 0.8 * PROBE_TIMEOUT_S, f"udp_probe() said 'silent' after only {silent.wall_s:.2f} s, "
              f"before timeout_s ({PROBE_TIMEOUT_S} s) had passed.", "Wait for an answer with "
              "sock.settimeout(timeout_s) and recv(), and say 'silent' only when it times out.")
    t.require(peer == quiet.address, f"After udp_probe() the socket was connected to {peer!r}, not to the "
              f"address probed ({quiet.address!r}).", "connect(address) the socket you were given.")
    return (f"'closed' after {closed.wall_s * 1e3:.1f} ms (the ICMP error, reported to the connected socket), "
            f"'open' for the echo server, and 'silent' after {silent.wall_s:.2f} s for the server that never "
            "answers; the socket was connected to the address each time.")


# -- 2. send_all ---------------------------------------------------------------------------

DATAGRAMS = [f"datagram {i}".encode() for i in range(1, 7)]
RESEND_HINT = (
    "Loop over the datagrams; for each one, call send() until it does not raise "
    "ConnectionRefusedError. The error is about an earlier datagram (reported on the next call), "
    "and the call that raised it sent nothing, so send the same datagram again. Count the refusals."
)


class _OpensAfterTheFirst(list):
    """The datagrams, which open the port when the second one is asked for.

    By then the first datagram's ICMP error should be stored on the socket (it makes the
    socket readable); the check waits for that, then admits the socket to the port.
    """

    def __init__(self, items: list[bytes], sock: socket.socket, port: UnreachablePort):
        super().__init__(items)
        self._sock, self._port = sock, port
        self.opened = threading.Event()
        self.error_was_pending = False

    def _open(self) -> None:
        if not self.opened.is_set():
            self.error_was_pending = bool(select.select([self._sock], [], [], 1.0)[0])
            self._port.admit(self._sock.getsockname())
            self.opened.set()

    def __iter__(self):  # type: ignore[override]
        for i, item in enumerate(list.__iter__(self)):
            if i == 1:
                self._open()
            yield item

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, int) and index in (1, 1 - len(self)):
            self._open()
        return list.__getitem__(self, index)


@exercise("11", 2, "resend after ECONNREFUSED", hint=RESEND_HINT)
def check_resend(t: Trial, send_all: object) -> str:
    with unreachable_port() as nobody:
        sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(nobody.address)
        datagrams = _OpensAfterTheFirst(DATAGRAMS, sock, nobody)
        out = t.call(send_all, sock, datagrams, name="send_all()", timeout_s=3.0, hang_hint=RESEND_HINT,
                     error_hints={ConnectionRefusedError: "send() raised ConnectionRefusedError: catch it, and send "
                                  "the same datagram again (the failed call sent nothing)."})
        arrived = nobody.received() if datagrams.opened.is_set() else []
    t.require(datagrams.opened.is_set(), "send_all() never asked for the second datagram.",
              "Send every datagram of the list, in order.")
    t.require(datagrams.error_was_pending, "The port opened before the first datagram's error came back: "
              "send_all() asked for the second datagram before sending the first.",
              "Send each datagram as you go through the list (for datagram in datagrams: ...).")
    expected = DATAGRAMS[1:]  # the first went to a closed port; the rest after it opened
    missing = [d.decode() for d in expected if d not in arrived]
    t.require(not missing, f"The port opened after the first datagram; the receiver then got "
              f"{[d.decode() for d in arrived]}, missing {missing}: the send() that raised "
              "ConnectionRefusedError sent nothing.", RESEND_HINT)
    t.require(arrived == expected, f"The receiver got {[d.decode() for d in arrived]}: some datagram came "
              "twice or out of order.", "Resend only the datagram whose send() raised, once it succeeds move on.")
    t.require(out.value == 1, f"Every datagram after the first arrived, but send_all() returned {out.value!r:.40}; "
              "exactly one send() raised ConnectionRefusedError.", "Return how many times send() was refused.")
    return (f"The first datagram met a closed port; its ICMP error made the next send() raise "
            f"ConnectionRefusedError, which sent nothing. You sent that datagram again, and the receiver got "
            f"all {len(expected)} datagrams after the first, in order (counted in its own queue).")


# -- 3. fetch ------------------------------------------------------------------------------

FETCH_HINT = (
    "sock.sendto(b'GET', server); part1, transfer = sock.recvfrom(100) (the reply comes from a new "
    "port); sock.connect(transfer); sock.send(b'ACK'); part2 = sock.recv(100); return part1 + part2."
)
PARTS = (b"hello, ", b"world")
WAIT_S = 1.5  # how long the server's transfer socket waits for the ACK


@exercise("11", 3, "sendto() first, then connect() to the port that answered", hint=FETCH_HINT)
def check_fetch(t: Trial, fetch: object) -> str:
    seen: dict[str, Any] = {}
    intruder = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))

    def serve(data: bytes, client: Any) -> None:  # runs in the server's thread, per datagram
        if data != b"GET" or "transfer" in seen:
            return None
        transfer = t.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a new port for this transfer, as in TFTP
        transfer.bind(("127.0.0.1", 0))
        seen["transfer"], seen["client"] = transfer.getsockname(), client
        transfer.settimeout(WAIT_S)
        transfer.sendto(PARTS[0], client)
        try:
            seen["ack"], seen["ack_from"] = transfer.recvfrom(100)
        except OSError as exc:  # no ACK came (or the check ended): the transfer stops here
            seen["no_ack"] = type(exc).__name__
            return None
        intruder.sendto(b"junk", client)  # another socket's datagram, just before the last part
        transfer.sendto(PARTS[1], client)
        return None

    sock = t.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with UDPServer(serve) as server:
        out = t.call(fetch, sock, server.address, name="fetch()",
                     timeout_s=2.0, hang_hint="The reply came from another port than the one you sent to. A socket "
                     "connected to the server's first address drops it: use sendto() and recvfrom() first, and "
                     "connect() to the address recvfrom() returned.")
        got = out.value
    t.require(not (isinstance(got, bytes) and b"junk" in got),
              f"fetch() returned {got!r:.60}: another socket's datagram got in.",
              "connect() to the port the first reply came from: a connected UDP socket receives only from its peer.")
    t.require("ack" in seen, f"The server sent {PARTS[0]!r} from port {seen.get('transfer', ('', '?'))[1]} and "
              f"waited {WAIT_S} s for b'ACK' there; none came.", FETCH_HINT)
    t.require(seen["ack"] == b"ACK", f"The server got {seen['ack']!r:.40} instead of b'ACK'.", FETCH_HINT)
    t.require(got == PARTS[0] + PARTS[1], f"fetch() returned {got!r:.60}, not {PARTS[0] + PARTS[1]!r}.", FETCH_HINT)
    peer = _peer(t, sock, "fetch()")
    t.require(peer == seen["transfer"], f"fetch() got the right bytes, but its socket's peer is {peer!r}, not the "
              f"transfer port {seen['transfer']!r}.", "connect() to the address recvfrom() returned.")
    return (f"You sent GET to port {server.address[1]}, got the first part from port {seen['transfer'][1]}, "
            f"connected there and sent the ACK; the junk another socket sent you meanwhile never reached your "
            f"connected socket, and fetch() returned {got!r}.")
