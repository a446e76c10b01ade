"""Checks for the exercises of lesson 09 (keep-alive vs heartbeats).

1. ``keepalive_within(sock, deadline_s)``: switch keep-alive on and choose its three timers
   so a vanished peer is declared dead within `deadline_s`, with at least 3 probes. The
   check reads the options back, asks for an impossible deadline (ValueError), then makes
   the peer vanish for real (``helpers.filters.drop_all``: its kernel drops every segment)
   and watches the probes go unanswered (``tcp_info.probes``) until ETIMEDOUT.
2. ``heartbeat(sock, every_s, misses)``: PING every `every_s`, give up after `misses`
   PONGs in a row went missing. The peer is a real process: the check freezes it with
   SIGSTOP for a moment (a hiccup the heartbeat must survive), then for good. It counts
   the PINGs sent after the final freeze from the socket's own counter (data_segs_out),
   and shows them waiting, acknowledged, in the frozen peer's receive queue.
3. ``serve_heartbeats(conn, silence_s)``: the server's half: answer each PING line, and
   close once nothing has arrived for `silence_s`. The client is a child process that
   pings, then freezes itself (SIGSTOP); the check reads when the last data arrived from
   the kernel (``tcp_info.last_data_recv_ms``) through a second descriptor of the socket.
"""

from __future__ import annotations

import socket
import threading
import time

from .. import filters, netns
from ..closing import ChildProcess, connected_pair
from ..core.registry import THREAD_PREFIX
from ..keepalive import vanished_peer, watch_vanished_peer
from ..observe import entries_for, tcp_info
from ..servers import ProcessServer
from .core import Trial, exercise

# -- 1. keepalive_within -------------------------------------------------------------------

LIVE_DEADLINE_S = 4  # the live run: 1 s idle + 3 probes x 1 s is the only way to make it
LOOSE_DEADLINE_S = 60  # read back only
IMPOSSIBLE_DEADLINE_S = 2  # below 1 + 3 x 1 s: no setting can make it
MIN_PROBES = 3
LATE_MARGIN_S = 0.75  # the kernel's timers fire on time; this is for a busy machine

KEEPALIVE_HINT = (
    "setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1) switches keep-alive on; TCP_KEEPIDLE, TCP_KEEPINTVL "
    "and TCP_KEEPCNT (IPPROTO_TCP, whole seconds >= 1) set its timers. A dead peer is declared "
    "after idle + count x interval seconds: keep count >= 3, pick an interval, and give the "
    "rest of the deadline to idle; raise ValueError when idle would fall below 1 s."
)
_OPTIONS = (("TCP_KEEPIDLE", socket.TCP_KEEPIDLE), ("TCP_KEEPINTVL", socket.TCP_KEEPINTVL),
            ("TCP_KEEPCNT", socket.TCP_KEEPCNT))


def _read_back(sock: socket.socket) -> tuple[int, tuple[int, int, int]]:
    """(SO_KEEPALIVE, (idle, interval, count)) as the kernel holds them."""
    on = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    idle, interval, count = (sock.getsockopt(socket.IPPROTO_TCP, opt) for _, opt in _OPTIONS)
    return on, (idle, interval, count)


def _require_settings(t: Trial, sock: socket.socket, returned: object, deadline_s: int) -> tuple[int, int, int]:
    on, held = _read_back(sock)
    t.require(on == 1, f"After keepalive_within() the kernel reports SO_KEEPALIVE = {on}: with it off, "
              f"TCP_KEEPIDLE = {held[0]} and the others are never used, and no probe is ever sent.",
              "Also call sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1).")
    t.require(isinstance(returned, tuple) and tuple(returned) == held, f"keepalive_within() returned "
              f"{returned!r:.60}, but the kernel holds (idle, interval, count) = {held}.",
              "Return the three values you set, as a tuple (idle, interval, count).")
    idle, interval, count = held
    t.require(count >= MIN_PROBES, f"TCP_KEEPCNT is {count}: the connection would be declared dead after "
              f"{count} lost probe{'s' if count != 1 else ''}.", "A single lost segment is not a dead peer "
              "(RFC 1122, section 4.2.3.6): use at least 3 probes.")
    t.require(idle + count * interval <= deadline_s, f"With idle {idle} s + {count} probes x {interval} s = "
              f"{idle + count * interval} s, a dead peer is found after the {deadline_s} s deadline.",
              "Give the deadline's remainder, after count x interval, to idle.")
    return held


def _vanish(client: socket.socket, peer: socket.socket, held: tuple[int, int, int]) -> tuple[dict | None, str]:
    """Make the peer vanish and watch until the verdict: on the learner's own socket where this
    process may attach the filter, else on a copy of the settings in a namespace of our own.
    (None, why) where neither works."""
    limit_s = LIVE_DEADLINE_S + LATE_MARGIN_S + 1.0
    if filters.support()[0]:
        return watch_vanished_peer(client, peer, limit_s, progress="TCP_INFO samples until the verdict"), "your socket"
    idle, interval, count = held
    try:
        return netns.run_in_netns(vanished_peer, idle_s=idle, interval_s=interval, count=count, limit_s=limit_s,
                                  timeout_s=limit_s + 5), "a connection with your settings in a private namespace"
    except netns.NamespaceUnavailable as exc:
        return None, (f"the kernel refuses this process a socket filter on a TCP socket, and a network namespace "
                      f"of its own ({exc.reason})")


@exercise("09", 1, "keepalive_within(): keep-alive timers from a deadline", hint=KEEPALIVE_HINT)
def check_keepalive_within(t: Trial, keepalive_within: object) -> str:
    loose = t.socket()
    returned = t.call(keepalive_within, loose, LOOSE_DEADLINE_S, name="keepalive_within()", timeout_s=1.0).value
    loose_held = _require_settings(t, loose, returned, LOOSE_DEADLINE_S)
    impossible = t.call(keepalive_within, t.socket(), IMPOSSIBLE_DEADLINE_S, name="keepalive_within()",
                        timeout_s=1.0, expect=(ValueError,))
    t.require(isinstance(impossible.error, ValueError), f"keepalive_within(sock, {IMPOSSIBLE_DEADLINE_S}) returned "
              f"{impossible.value!r:.60}, but no setting finds a dead peer within {IMPOSSIBLE_DEADLINE_S} s: "
              f"the least is 1 s idle + {MIN_PROBES} probes x 1 s.", "Raise ValueError, naming the deadline, "
              "when idle would be below 1 s.")
    client, peer = (t.own(s) for s in connected_pair())
    returned = t.call(keepalive_within, client, LIVE_DEADLINE_S, name="keepalive_within()", timeout_s=1.0).value
    idle, interval, count = _require_settings(t, client, returned, LIVE_DEADLINE_S)
    seen, where = _vanish(client, peer, (idle, interval, count))
    if seen is None:
        return (f"For {LOOSE_DEADLINE_S} s you chose idle, interval, count = {loose_held}, for {LIVE_DEADLINE_S} s "
                f"({idle}, {interval}, {count}), and you refused {IMPOSSIBLE_DEADLINE_S} s: the kernel holds what you "
                f"set. (A vanishing peer cannot be staged on this machine, so the probes were not watched: {where}.)")
    probes = max(row[2] for row in seen["timeline"])
    t.require(seen["error"] == "ETIMEDOUT", f"The peer vanished, and {seen['after_s']:.1f} s later the connection "
              f"showed {seen['error'] or 'no error'} (at most {probes} unanswered probes).", KEEPALIVE_HINT)
    t.require(seen["after_s"] <= LIVE_DEADLINE_S + LATE_MARGIN_S and probes == count, f"ETIMEDOUT came after "
              f"{seen['after_s']:.2f} s and {probes} unanswered probes; the deadline was {LIVE_DEADLINE_S} s.",
              KEEPALIVE_HINT)
    return (f"For {LOOSE_DEADLINE_S} s you chose idle, interval, count = {loose_held}, and you refused "
            f"{IMPOSSIBLE_DEADLINE_S} s. For {LIVE_DEADLINE_S} s ({idle}, {interval}, {count}): when the peer of "
            f"{where} vanished, tcp_info.probes counted {probes} unanswered probes and recv() raised ETIMEDOUT "
            f"{seen['after_s']:.2f} s later.")


# -- 2. heartbeat --------------------------------------------------------------------------

EVERY_S, MISSES = 0.2, 3
HICCUP_AT_S, HICCUP_S = 0.5, 0.35  # a short freeze: one PONG comes late, then the peer answers again
FREEZE_AT_S = 1.5  # frozen for good from here
PING_LIMIT = 40  # more PINGs than this before the final freeze: the loop does not keep the pace

HEARTBEAT_HINT = (
    "Loop: send b'PING n\\n', wait at most every_s for 'PONG n' (wait_for_pong() from the lesson "
    "does that); a PONG resets the count of misses to 0, a timeout adds one. Return the number "
    "of PONGs received once `misses` PINGs in a row went unanswered."
)


def _freeze_twice(peer: ProcessServer, sock: socket.socket, started: float, stop: threading.Event,
                  seen: dict) -> None:
    """The check's second thread: a hiccup (SIGSTOP, SIGCONT), then a freeze for good."""
    try:
        if stop.wait(max(0.0, started + HICCUP_AT_S - time.monotonic())):
            return
        peer.pause()
        seen["hiccup"] = time.monotonic() - started
        if stop.wait(HICCUP_S):
            return
        peer.resume()
        if stop.wait(max(0.0, started + FREEZE_AT_S - time.monotonic())):
            return
        seen["segs_at_freeze"] = tcp_info(sock).data_segs_out
        peer.pause()
        seen["frozen"] = time.monotonic() - started
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:  # the check ended the socket or the peer
        seen["error"] = f"{type(exc).__name__}: {exc}"


@exercise("09", 2, "heartbeat(): give up after N missed PONGs", hint=HEARTBEAT_HINT)
def check_heartbeat(t: Trial, heartbeat: object) -> str:
    seen: dict = {}
    stop = threading.Event()
    with ProcessServer("pong") as peer:
        sock = t.connect(peer.address)
        started = time.monotonic()
        freezer = threading.Thread(target=_freeze_twice, args=(peer, sock, started, stop, seen),
                                   name=f"{THREAD_PREFIX}-check-09-2-freezer", daemon=True)
        freezer.start()
        try:
            out = t.call(heartbeat, sock, EVERY_S, MISSES, name="heartbeat()", timeout_s=FREEZE_AT_S + 2.5,
                         hang_hint="After the peer froze, no PONG ever came. Count each PING left without "
                                   "a PONG for every_s, and return after `misses` in a row.")
            gave_up = time.monotonic() - started
            rows = entries_for(sock) if sock.fileno() != -1 else []
        finally:
            stop.set()
            freezer.join()
    t.require("error" not in seen, f"The check could not freeze the peer: {seen.get('error')}.",
              "Leave the socket open while heartbeat() runs.")
    t.require("frozen" in seen, f"heartbeat() gave up {gave_up:.2f} s after it started. The peer had paused "
              f"for {HICCUP_S:g} s at {seen.get('hiccup', HICCUP_AT_S):.2f} s and then answered again: a "
              "single late PONG is a hiccup, not a dead peer.",
              f"Count misses in a row and reset the count when a PONG arrives; give up at `misses` ({MISSES}).")
    after = tcp_info(sock).data_segs_out - seen["segs_at_freeze"] if sock.fileno() != -1 else None
    t.require(after is not None, "heartbeat() closed the socket.", "Leave closing to the caller.")
    t.require(seen["segs_at_freeze"] <= PING_LIMIT, f"{seen['segs_at_freeze']} PINGs went out before "
              f"{FREEZE_AT_S:g} s: the loop does not wait every_s between them.", HEARTBEAT_HINT)
    t.require(after == MISSES, f"After the peer froze for good at {seen['frozen']:.2f} s, heartbeat() sent "
              f"{after} PING{'s' if after != 1 else ''} before giving up at {gave_up:.2f} s; it should give each of "
              f"{MISSES} PINGs every_s ({EVERY_S:g} s) to be answered.", HEARTBEAT_HINT)
    t.require(isinstance(out.value, int) and out.value >= 4, f"heartbeat() returned {out.value!r:.40}; the peer "
              "answered at least 4 PINGs before it froze.", "Return how many PONGs arrived.")
    queued = next((r.recv_q for r in rows if r.local == sock.getpeername()), None)
    return (f"heartbeat() rode out the peer's {HICCUP_S:g} s pause, then, after the real freeze at "
            f"{seen['frozen']:.2f} s, sent {after} PINGs, each unanswered for {EVERY_S:g} s, and gave up at "
            f"{gave_up:.2f} s with {out.value} PONGs received. The frozen peer's kernel had acknowledged those PINGs: "
            f"they wait unread in its receive queue (Recv-Q {queued} bytes).")


# -- 3. serve_heartbeats -------------------------------------------------------------------

SILENCE_S = 0.5
CLIENT_PINGS, CLIENT_EVERY_S = 5, 0.15

SERVE_HINT = (
    "Set conn.settimeout(silence_s) and read: each recv() then waits at most silence_s for "
    "the next bytes. Answer every complete line b'PING n' with b'PONG n\\n' (a recv() may hold "
    "part of a line, or several). On TimeoutError the client has been silent too long: close "
    "the connection and return the number of PINGs answered; on b'' it closed: return too."
)

# The client, a child process: PING, wait for the right PONG, pause; after the last, freeze itself.
_CLIENT = """
import os, signal, socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
lines = sock.makefile("rb")
for n in range(1, int(sys.argv[3]) + 1):
    sock.sendall(b"PING %d\\n" % n)
    if lines.readline() != b"PONG %d\\n" % n:
        break
    time.sleep(float(sys.argv[4]))
os.kill(os.getpid(), signal.SIGSTOP)  # frozen: its kernel still answers, the program says nothing
"""


@exercise("09", 3, "serve_heartbeats(): close a silent client", hint=SERVE_HINT)
def check_serve_heartbeats(t: Trial, serve_heartbeats: object) -> str:
    listener = t.own(socket.create_server(("127.0.0.1", 0)))
    listener.settimeout(5.0)
    with ChildProcess(_CLIENT, *listener.getsockname(), CLIENT_PINGS, CLIENT_EVERY_S):
        conn = t.own(listener.accept()[0])
        witness = t.own(conn.dup())  # a second descriptor: tcp_info() still works after the learner's close()
        answered = t.call(serve_heartbeats, conn, SILENCE_S, name="serve_heartbeats()", timeout_s=3.0,
                          hang_hint="The client went silent. A recv() without a timeout waits for ever: "
                                    "conn.settimeout(silence_s) before reading.").value
        info = tcp_info(witness)
    t.require(answered == CLIENT_PINGS, f"serve_heartbeats() returned {answered!r:.40}; the client sent "
              f"{CLIENT_PINGS} PINGs, one every {CLIENT_EVERY_S:g} s, each after the PONG to the one before.",
              SERVE_HINT)
    silent_ms = info.last_data_recv_ms
    t.require(silent_ms >= 0.9 * SILENCE_S * 1000, f"You answered all {answered} PINGs, but closed only "
              f"{silent_ms} ms after the client's last bytes: not a silence of {SILENCE_S:g} s.",
              "Time the silence from the last bytes received (a timeout per recv()), not from the start.")
    t.require(silent_ms <= SILENCE_S * 1000 + 500, f"serve_heartbeats() returned {silent_ms} ms after the "
              f"client's last bytes, well past the {SILENCE_S:g} s of silence.", SERVE_HINT)
    t.require(conn.fileno() == -1, "serve_heartbeats() returned but left the connection open.",
              "Close the connection (conn.close()) when you give up on the client.")
    return (f"You answered all {answered} PINGs and closed {silent_ms} ms after the client's last bytes "
            f"(the kernel's tcp_info.last_data_recv_ms). The frozen client's kernel had acknowledged every PONG "
            f"({info.unacked} segments unacknowledged), yet its program said nothing: only the silence told.")
