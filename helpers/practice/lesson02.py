"""Checks for the exercises of lesson 02 (the TCP handshake).

1. ``knock(address)``: connect and say what happened: "connected", or the errno's name. On
   a port where a socket is bound but nobody listens, the kernel answers the SYN with a RST
   and connect() fails with ECONNREFUSED at once; the namespace's Tcp.OutRsts counter moves.
   On a listening port the handshake completes in the kernel: the connection then waits in
   the listener's accept queue, though nobody called accept().
2. ``connect_within(sock, address, timeout_s)``: connect with a deadline. Against a listener
   with room, the learner's connection lands in the accept queue (the LISTEN row's Recv-Q)
   before any accept(); against a full accept queue the kernel drops the SYN (the
   listener's own drop counter moves) and only a timeout ends the wait.
3. ``make_listener(room)``: a listener whose accept queue holds exactly `room` connections.
   Linux admits backlog + 1, so the answer is listen(room - 1); the check fills the queue
   and counts what the kernel admitted (TCP_INFO) and dropped (the listener's sk_drops).
"""

from __future__ import annotations

import socket
import time

from ..observe import TcpState, counters_diff, socket_drops, tcp_info
from .core import Trial, exercise

SETTLE_S = 2.0  # the longest a check waits for the kernel to finish a loopback handshake
POLL_S = 0.001


def _listener(t: Trial, backlog: int) -> socket.socket:
    sock = t.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def _wait(condition: object, timeout_s: float = SETTLE_S) -> bool:
    """Poll `condition()` until it is true or `timeout_s` passes; return the last answer."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


# -- 1. knock ------------------------------------------------------------------------------

KNOCK_HINT = (
    "Make a TCP socket in a `with` block and call connect(address). If connect() raises "
    "ConnectionRefusedError (or another OSError), return errno.errorcode[exc.errno], e.g. "
    "'ECONNREFUSED'; if it returns, return 'connected'."
)


@exercise("02", 1, "knock: connect, or say why not", hint=KNOCK_HINT)
def check_knock(t: Trial, knock: object) -> str:
    placeholder = t.socket()
    placeholder.bind(("127.0.0.1", 0))  # holds the port; no listen(): the kernel answers SYNs with RST
    closed = placeholder.getsockname()
    with counters_diff() as moved:
        out = t.call(knock, closed, name="knock()", timeout_s=2.0, error_hints={
            ConnectionRefusedError: "connect() raised ConnectionRefusedError: catch it and return the name of its "
                                    "errno, errno.errorcode[exc.errno]."})
    rsts, fails = moved["Tcp.OutRsts"], moved["Tcp.AttemptFails"]
    t.require(out.value == "ECONNREFUSED", f"Nothing listens on {closed[0]} port {closed[1]}, so the kernel answers "
              f"a SYN there with a RST (Tcp.OutRsts moved by {rsts} during the call), but knock() returned "
              f"{out.value!r:.40}.", KNOCK_HINT)
    t.require(rsts >= 1 and fails >= 1, f"knock() returned 'ECONNREFUSED', but during the call the kernel sent no "
              f"RST and no connection attempt failed (Tcp.OutRsts +{rsts}, Tcp.AttemptFails +{fails}).",
              "Return what connect() really did: call it, and name the errno it raised.")
    listener = _listener(t, 8)
    address = listener.getsockname()
    done = t.call(knock, address, name="knock()", timeout_s=2.0).value
    t.require(done == "connected", f"A listener waits on {address[0]} port {address[1]}, but knock() returned "
              f"{done!r:.40}.", KNOCK_HINT)
    queued = tcp_info(listener).unacked  # for a LISTEN socket: the accept queue's length
    t.require(queued == 1, f"knock() said 'connected', but the listener's accept queue holds {queued} connections: "
              "the kernel completed no handshake there.", "Return 'connected' only after connect() returned.")
    return (f"knock() got ECONNREFUSED after {out.wall_s * 1e3:.1f} ms from a port with no listener: the kernel "
            f"answered the SYN with a RST (Tcp.OutRsts +{rsts}). On a listening port it said 'connected', and its "
            "connection waited in the accept queue: the kernel had completed the handshake before anyone called "
            "accept().")


# -- 2. connect_within ---------------------------------------------------------------------

WITHIN_HINT = (
    "sock.settimeout(timeout_s), then sock.connect(address) in a try block: return "
    "'connected' if it returns, 'timed out' if it raises TimeoutError (socket.timeout)."
)
FULL_TIMEOUT_S = 0.3  # what the check asks for against the full queue
FULL_LIMIT_S = 0.9  # 3x that: a connect() that waited for the SYN's retransmission (1 s) took longer


@exercise("02", 2, "connect with a deadline", hint=WITHIN_HINT)
def check_connect_within(t: Trial, connect_within: object) -> str:
    roomy = _listener(t, 4)
    sock = t.socket()
    out = t.call(connect_within, sock, roomy.getsockname(), 1.0, name="connect_within()", timeout_s=3.0)
    t.require(out.value == "connected", f"The listener had room, yet connect_within() returned {out.value!r:.40}.",
              WITHIN_HINT)
    state = tcp_info(sock).state
    t.require(state is TcpState.ESTABLISHED, f"connect_within() said 'connected' but the socket is {state.name}.",
              WITHIN_HINT)
    recv_q = tcp_info(roomy).unacked  # a listener's Recv-Q: connections waiting for accept() (man 7 tcp)
    t.require(recv_q == 1, f"Your socket is ESTABLISHED, but the listener's Recv-Q shows {recv_q} connections "
              "waiting for accept().", WITHIN_HINT)

    full = _listener(t, 0)  # listen(0): room for one connection
    t.connect(full.getsockname())  # takes it
    if not _wait(lambda: tcp_info(full).unacked == 1):
        raise RuntimeError("the check's own connection never reached the accept queue")
    before = socket_drops(full)
    late = t.socket()
    out = t.call(connect_within, late, full.getsockname(), FULL_TIMEOUT_S, name="connect_within()", timeout_s=2.0,
                 hang_hint="The accept queue was full, so the kernel dropped the SYN and connect() waits for a "
                           "SYN-ACK that comes only after a retransmission (1 s, then 3 s, ...). Give the socket "
                           "a timeout first: sock.settimeout(timeout_s).")
    dropped = socket_drops(full) - before if before is not None else None
    seen = f" (the listener counted {dropped} dropped SYN{'s' * (dropped != 1)})" if dropped is not None else ""
    t.require(out.value == "timed out", f"The accept queue was full and the kernel dropped the SYN{seen}; "
              f"connect_within(sock, address, {FULL_TIMEOUT_S}) returned {out.value!r:.40} after {out.wall_s:.2f} s.",
              WITHIN_HINT)
    t.require(out.wall_s < FULL_LIMIT_S, f"connect_within() said 'timed out', but only after {out.wall_s:.2f} s; "
              f"it was given {FULL_TIMEOUT_S} s.", "Use the timeout_s you are given: sock.settimeout(timeout_s).")
    return (f"connect_within() connected, and its connection sat in the listener's accept queue (Recv-Q {recv_q}) "
            f"before anyone called accept(). Against a full queue the kernel dropped the SYN{seen}, and your "
            f"function gave up after {out.wall_s:.2f} s, as asked.")


# -- 3. make_listener ----------------------------------------------------------------------

ROOM_HINT = (
    "Linux admits one connection more than the backlog into the accept queue (it refuses "
    "only when the queue holds *more* than the backlog). So bind(('127.0.0.1', 0)), then "
    "listen(room - 1)."
)


def _fill(t: Trial, listener: socket.socket, clients: int) -> tuple[int, int, int | None]:
    """Connect `clients` non-blocking clients one by one, waiting for each to be admitted or
    dropped; return (accept queue length, clients in SYN_SENT, drops the listener counted)."""
    address = listener.getsockname()
    before = socket_drops(listener)
    stuck = 0
    for _ in range(clients):
        drops = socket_drops(listener)
        c = t.socket()
        c.setblocking(False)
        c.connect_ex(address)  # EINPROGRESS: the kernel runs the handshake
        _wait(lambda c=c, drops=drops: tcp_info(c).state is TcpState.ESTABLISHED  # admitted, or
              or (drops is not None and socket_drops(listener) != drops), 0.5)  # its SYN dropped
        stuck += tcp_info(c).state is TcpState.SYN_SENT
    queued = tcp_info(listener).unacked
    return queued, stuck, (socket_drops(listener) - before) if before is not None else None


@exercise("02", 3, "a listener with room for exactly n", hint=ROOM_HINT)
def check_make_listener(t: Trial, make_listener: object) -> str:
    seen = []
    for room in (1, 4):
        call = f"make_listener({room})"
        sock = t.call(make_listener, room, name=call, timeout_s=1.0).value
        t.require(isinstance(sock, socket.socket), f"{call} returned {type(sock).__name__} {sock!r:.60}, not a "
                  "socket.", ROOM_HINT)
        t.own(sock)
        t.require(sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM, f"{call} returned a "
                  f"{sock.family.name}/{sock.type.name} socket, not a TCP one.", ROOM_HINT)
        name = sock.getsockname()
        t.require(name[0] == "127.0.0.1" and name[1] != 0, f"{call} returned a socket bound to {name}.",
                  "bind(('127.0.0.1', 0)) first.")
        info = tcp_info(sock)
        t.require(info.state is TcpState.LISTEN, f"{call} returned a socket in {info.state.name}, not LISTEN.",
                  "Call listen(...) before returning it.")
        queued, stuck, dropped = _fill(t, sock, room + 2)
        t.require(queued == room, f"{call} made a listener with backlog {info.sacked}: with {room + 2} clients "
                  f"knocking and nobody calling accept(), its accept queue took {queued} connections, not {room}.",
                  ROOM_HINT)
        drops = f", dropped {dropped} SYNs" if dropped is not None else ""
        seen.append(f"backlog {info.sacked}: queued {queued}{drops}, {stuck} clients left in SYN_SENT")
    return "Your listeners held exactly what was asked. " + "; ".join(seen) + "."
