"""Checks for the exercises of lesson 10 (Nagle's algorithm, delayed ACK, TCP's windows).

1. ``ask_nodelay(sock, body)``: send a request (a 4-byte length, then the body) as two
   writes with Nagle turned off, and return the server's 2-byte answer. The check times ten
   round trips (a stall is 40 ms or more, a fixed one well under a millisecond on loopback)
   and reads TCP_NODELAY and the client's own data-segment count (TCP_INFO) to see that both
   writes left at once, as separate segments.
2. ``ask_whole(sock, body)``: the same request with Nagle left on, handed to the kernel
   whole (``sendmsg([header, body])``, one joined buffer, or TCP_CORK around the two
   writes). The check wants no stall, one data segment per request, TCP_NODELAY off and no
   cork left in.
3. ``in_flight_limit(sock)``: how many bytes the socket may have in flight right now,
   min(cwnd x MSS, the peer's window), from TCP_INFO. One connection where the peer's small
   buffer binds, one where a small MSS makes cwnd x MSS the smaller; the check computes the
   answer from the same socket's TCP_INFO, read before and after the learner's call.
"""

from __future__ import annotations

import socket
import statistics

from ..behaviours import answer_each
from ..closing import connected_pair
from ..core.features import kernel_version
from ..nagle import STALL_MS, data_segments, time_requests
from ..observe import tcp_info
from ..servers import TCPServer
from .core import Trial, exercise

BODY = b"GET /status please"  # 18 bytes: the request is a 4-byte length, then this
ANSWER = b"ok"
ROUNDS = 10  # a stalled round trip takes >= 40 ms: ten of them stay under half a second
FAST_MS = 5.0  # a fixed round trip on loopback takes tens of microseconds; allow a busy machine


def _exchange(fn: object, t: Trial, name: str, hang_hint: str) -> dict:
    """Connect to a server that answers whole requests; call fn once, then ROUNDS timed times."""
    with TCPServer(answer_each(4 + len(BODY), reply=ANSWER)) as peer:
        sock = t.connect(peer.address)
        first = t.call(fn, sock, BODY, name=name, timeout_s=2.0, hang_hint=hang_hint).value
        t.require(first == ANSWER, f"{name} returned {first!r:.60}; the server answered {ANSWER!r}.",
                  "Return what you read after sending: the 2-byte answer (h.framing.readn(sock, 2)).")
        before = data_segments(sock)
        times_ms, answers = t.call(time_requests, sock, fn, (BODY,), ROUNDS, name=name, timeout_s=4.0,
                                   hang_hint=hang_hint).value
        segments = (data_segments(sock) - before) / ROUNDS
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        cork = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)
        sock.close()
    t.require(all(a == ANSWER for a in answers), f"{name} returned {answers[:3]!r:.80}...",
              "Return the 2-byte answer you read after sending, every time.")
    stalls, median_ms = sum(ms >= STALL_MS for ms in times_ms), statistics.median(times_ms)
    return {"median_ms": median_ms, "segments": segments, "stalls": stalls, "nodelay": nodelay, "cork": cork,
            "stalled": stalls > max(2, ROUNDS // 8) or median_ms >= FAST_MS}


def _timing(run: dict) -> str:
    return (f"{run['stalls']} of {ROUNDS} round trips took {STALL_MS:.0f} ms or more (median "
            f"{run['median_ms']:.2f} ms)")


# -- 1. TCP_NODELAY ------------------------------------------------------------------------

NODELAY_HINT = (
    "Before the two writes, turn Nagle off on the client socket: "
    "sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1). Then sendall() the 4-byte "
    "header (struct.pack('!I', len(body))), sendall() the body, and return h.framing.readn(sock, 2)."
)


@exercise("10", 1, "two writes, Nagle off", hint=NODELAY_HINT)
def check_nodelay(t: Trial, ask_nodelay: object) -> str:
    run = _exchange(ask_nodelay, t, "ask_nodelay()",
                    "The server answers only once it has the whole request: 4 header bytes and the body.")
    if run["stalled"] and not run["nodelay"]:
        t.fail(f"{_timing(run)}: the second write waited for the server's delayed ACK, and TCP_NODELAY was "
               "still 0 on the socket.", NODELAY_HINT)
    t.require(not run["stalled"], f"TCP_NODELAY was set, yet {_timing(run)}.", NODELAY_HINT)
    t.require(run["nodelay"], f"No round trip stalled (median {run['median_ms']:.2f} ms), but TCP_NODELAY is 0 "
              f"and the client sent "
              f"{run['segments']:.1f} data segments per request: you handed over the request whole, which is "
              "exercise 2's fix.", "Here keep the two writes and turn Nagle off with TCP_NODELAY.")
    t.require(run["segments"] >= 1.8, f"No stall and TCP_NODELAY is on, but the client sent only "
              f"{run['segments']:.1f} data segments per request (TCP_INFO data_segs_out).",
              "Write the header and the body with two separate sendall() calls.")
    return (f"{ROUNDS} round trips, median {run['median_ms']:.3f} ms, none waiting for a timer; TCP_NODELAY "
            f"= 1 and {run['segments']:.1f} data segments per request (the client's TCP_INFO): each write "
            "left at once, as its own segment.")


# -- 2. The whole request at once ----------------------------------------------------------

WHOLE_HINT = (
    "Leave Nagle on and give the kernel the whole request at once: sock.sendmsg([header, body]) "
    "(one system call, like writev), or sock.sendall(header + body), or TCP_CORK set to 1 around "
    "the two sendall() calls and back to 0 after them. Then return h.framing.readn(sock, 2)."
)


@exercise("10", 2, "the whole request at once, Nagle on", hint=WHOLE_HINT)
def check_whole(t: Trial, ask_whole: object) -> str:
    run = _exchange(ask_whole, t, "ask_whole()",
                    "A corked socket sends a partial segment only after 200 ms: set TCP_CORK back to 0.")
    t.require(not run["cork"], f"{_timing(run)}, and TCP_CORK was still 1 after ask_whole() returned.",
              "Take the cork out after the last write (setsockopt(..., TCP_CORK, 0)): a corked socket holds "
              "a partial segment for up to 200 ms.")
    t.require(not run["nodelay"], f"TCP_NODELAY is 1 on the socket ({_timing(run)}): that is exercise 1's fix.",
              "Here leave Nagle on, and hand over header and body in one go.")
    t.require(not run["stalled"], f"{_timing(run)}, and the client sent {run['segments']:.1f} data segments "
              "per request: the second piece waited for the server's delayed ACK.", WHOLE_HINT)
    t.require(run["segments"] <= 1.2, f"No stall, but the client sent {run['segments']:.1f} data segments per "
              "request (TCP_INFO data_segs_out).", WHOLE_HINT)
    return (f"{ROUNDS} round trips, median {run['median_ms']:.3f} ms, none waiting for a timer, with Nagle "
            f"on: the client sent {run['segments']:.1f} data segment per request (its TCP_INFO), so nothing "
            "small was left waiting for an ACK.")


# -- 3. What may be in flight --------------------------------------------------------------

IN_FLIGHT_HINT = (
    "info = h.tcp_info(sock); the congestion window is info.snd_cwnd segments of info.snd_mss "
    "bytes, the peer's window info.snd_wnd bytes: return min(info.snd_cwnd * info.snd_mss, info.snd_wnd)."
)
SMALL_BUF = 4096  # the peer's buffers in case A: its window (a few KiB) is far below 10 x MSS
SMALL_MSS = 536  # the sender's MSS in case B: 10 segments of ~500 bytes are far below the peer's window


def _reference(sock: socket.socket) -> tuple[int, int, int]:
    """(the limit, cwnd x MSS, the peer's window) in bytes, from the socket's TCP_INFO now."""
    info = tcp_info(sock)
    return min(info.snd_cwnd * info.snd_mss, info.snd_wnd), info.snd_cwnd * info.snd_mss, info.snd_wnd


@exercise("10", 3, "min(cwnd x MSS, window) from TCP_INFO", hint=IN_FLIGHT_HINT)
def check_in_flight(t: Trial, in_flight_limit_fn: object) -> str:
    if tcp_info(t.own(socket.socket())).snd_wnd is None:
        version = ".".join(map(str, kernel_version()))
        t.fail(f"This kernel (Linux {version}) does not report the peer's window in TCP_INFO (snd_wnd came with "
               "Linux 6.2), so the check cannot know the right answer here.", "Try this exercise on Binder.")
    # Case A: the peer's buffer is tiny, so its window is the smaller limit.
    client, server = (t.own(s) for s in connected_pair(bufsize=SMALL_BUF))
    seen = []
    for sock, case in ((client, "the peer's window"), (None, "cwnd x MSS")):
        if sock is None:  # Case B: a small MSS, so 10 segments (the initial cwnd) are the smaller limit
            listener = t.own(socket.create_server(("127.0.0.1", 0)))
            sock = t.socket()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SMALL_MSS)
            sock.connect(listener.getsockname())
            t.own(listener.accept()[0])
        before = _reference(sock)
        got = t.call(in_flight_limit_fn, sock, name="in_flight_limit()", timeout_s=1.0).value
        after = _reference(sock)
        t.require(before == after, f"The socket's windows changed during the call ({before} then {after}).",
                  "Only read TCP_INFO: do not send or receive on the socket.")
        limit, by_cwnd, window = after
        observed = (f"With cwnd x MSS = {by_cwnd:,} bytes and the peer's window = {window:,} bytes, "
                    f"in_flight_limit() returned {got!r:.40}")
        if got == tcp_info(sock).snd_cwnd:
            t.fail(observed + ": that is cwnd, a count of segments.", "Multiply snd_cwnd by snd_mss to get bytes.")
        t.require(got == limit, observed + f", not {limit:,} ({case} is the smaller one here).", IN_FLIGHT_HINT)
        seen.append(f"{limit:,} bytes when {case} was the smaller (cwnd x MSS {by_cwnd:,}, window {window:,})")
    return "in_flight_limit() matched the kernel's numbers both times: " + "; ".join(seen) + "."
