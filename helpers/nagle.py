"""Nagle, delayed ACK and TCP's windows (lesson 10): time request/answer round trips, and
watch a congestion window grow, halve and grow again behind a real bottleneck.

Theory of operation. Two experiments need plumbing the notebook should not spell out.

1. The write-write-read stall. A client writes a request in pieces and waits for the
   answer; the server (``behaviours.answer_each``) answers only once the whole request is
   in. ``round_trips()`` runs that exchange on a fresh connection and times each round trip
   with the learner's own ``request(sock, parts)`` function (the socket calls being taught
   stay in the notebook). Two kernel counts come with the times: the client's data
   segments (``data_segs_out`` in its TCP_INFO: per socket, so trustworthy) and the
   namespace's ``TcpExt.DelayedACKs`` (every connection's, so only ever "at least"). A round
   trip of ``STALL_MS`` or more waited for a timer: Linux's smallest delayed-ACK timeout is
   40 ms (``TCP_DELACK_MIN``), while a loopback round trip takes tens of microseconds.

2. Slow start and congestion avoidance. On the host's loopback nothing is ever lost, so a
   sender never leaves slow start (``snd_ssthresh`` stays at its "infinite" start value).
   ``bottleneck_run()`` therefore sends a bulk transfer inside a private network namespace
   (``helpers.netns``) whose ``lo`` has a token-bucket qdisc (``tc qdisc ... tbf``, man 8
   tc-tbf): 10 Mbit/s with a queue of 40 kB, a real bottleneck with a real queue that
   overflows. The sender's socket uses the ``reno`` algorithm (``TCP_CONGESTION``, allowed
   inside a namespace we own) and segments of 1448 bytes (``TCP_MAXSEG``), as on Ethernet.
   The bucket is small (two segments): tbf then splits TCP's large GSO packets into single
   segments and drops the ones that do not fit, so losses happen per segment, after the
   sender handed them over, as on a real link. (With a bucket that held a whole 64 KiB
   packet, tbf would refuse packets whole and the sender's own kernel would see the drop at
   once: a different story.) The sender reads its TCP_INFO after every send() and returns
   the samples; ``CongestionRun`` finds the phases in them. Where namespaces or ``tc`` are
   missing, a run recorded earlier by the same code is loaded instead, labelled as such.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import netns
from .behaviours import answer_each
from .capture import watch  # capture() provides it inside write_write_read()
from .core import recordings
from .core.features import find_program, why_missing
from .core.proc import sysctl
from .observe import counters_diff, tcp_info
from .servers import TCPServer

__all__ = [
    "STALL_MS", "RoundTrips", "round_trips", "time_requests", "data_segments", "write_write_read",
    "congestion_controls", "CongestionRun", "Sample", "CA_STATES", "INFINITE_SSTHRESH", "BottleneckUnavailable",
    "bottleneck_run",
    "load_recording", "save_recording",
]

STALL_MS = 20.0  # a round trip this long waited for a timer (delayed ACK: >= 40 ms on Linux)
MAX_ROUNDS = 500  # each stalled round trip costs 40 ms: 500 of them are 20 s
ANSWER = b"ok"  # what behaviours.answer_each() sends for each whole request

Request = Callable[..., Any]


@dataclass(frozen=True)
class RoundTrips:
    """Round trips on one connection: their times, and what the kernel counted meanwhile.

    ``data_segments`` is the client's own count of data segments sent (TCP_INFO, per socket);
    ``delayed_acks`` the namespace's ``TcpExt.DelayedACKs`` rise (other connections add to it).
    """

    times_ms: list[float]
    data_segments: int
    delayed_acks: int

    @property
    def n(self) -> int:
        """How many round trips."""
        return len(self.times_ms)

    @property
    def median_ms(self) -> float:
        """The median round trip, in milliseconds."""
        return statistics.median(self.times_ms)

    @property
    def stalls(self) -> int:
        """How many round trips took STALL_MS or more (they waited for a timer)."""
        return sum(t >= STALL_MS for t in self.times_ms)

    @property
    def segments_per_request(self) -> float:
        """Data segments the client sent per request (1 = the whole request in one segment)."""
        return self.data_segments / self.n


def data_segments(sock: socket.socket) -> int:
    """Data segments `sock` has sent so far (TCP_INFO ``data_segs_out``, Linux 4.6+; 0 before)."""
    return tcp_info(sock).data_segs_out or 0


def _rounds(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be a number of round trips (an int), got {type(n).__name__} {n!r}")
    if not 1 <= n <= MAX_ROUNDS:
        raise ValueError(f"n must be 1-{MAX_ROUNDS} round trips (a stalled one takes 40 ms), got {n!r}")
    return n


def time_requests(sock: socket.socket, request: Request, args: Sequence[Any], n: int) -> tuple[list[float], list[Any]]:
    """Call ``request(sock, *args)`` `n` times; (each call's time in ms, what each returned).

    TypeError if `request` cannot be called, ValueError for an `n` outside 1-500.
    """
    if not callable(request):
        raise TypeError(f"request must be a function called as request(sock, ...), got {request!r:.60}")
    _rounds(n)
    times_ms, answers = [], []
    for _ in range(n):
        started = time.perf_counter()
        answers.append(request(sock, *args))
        times_ms.append((time.perf_counter() - started) * 1e3)
    return times_ms, answers


def round_trips(
    request: Request,
    parts: Sequence[bytes],
    *,
    n: int,
    prepare: Callable[[socket.socket], Any] | None = None,
    quickack: str = "never",
) -> RoundTrips:
    """Time `n` requests on one fresh loopback connection.

    The server answers b"ok" once it has received ``sum(len(p) for p in parts)`` bytes (with
    TCP_QUICKACK as `quickack` says: "never", "once" after accept, or "every" recv()).
    ``prepare(sock)``, if given, runs once on the connected client; ``request(sock, parts)``
    sends one request and returns the answer it read, which must be b"ok".
    TypeError for an `n` that is no int or a `request` that is no function; ValueError for an
    `n` outside 1-500, empty `parts`, or an answer other than b"ok".
    """
    _rounds(n)
    if not callable(request) or (prepare is not None and not callable(prepare)):
        raise TypeError(f"request (and prepare, if given) must be functions, got {request!r:.60} and {prepare!r:.60}")
    if not parts or not all(isinstance(p, (bytes, bytearray)) and p for p in parts):
        raise ValueError(f"parts must be a non-empty list of non-empty bytes, got {parts!r:.80}")
    size = sum(len(p) for p in parts)
    with TCPServer(answer_each(size, reply=ANSWER, quickack=quickack)) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            if prepare is not None:
                prepare(sock)
            segments_before = data_segments(sock)
            with counters_diff() as counters:
                times_ms, answers = time_requests(sock, request, (list(parts),), n)
            segments = data_segments(sock) - segments_before
    wrong = [a for a in answers if a != ANSWER]
    if wrong:
        raise ValueError(f"request() must return the server's answer {ANSWER!r}, it returned {wrong[0]!r:.60}")
    return RoundTrips(times_ms, segments, counters["TcpExt.DelayedACKs"])


def write_write_read(nodelay: bool, rounds: int) -> dict:
    """The capture experiment (``capture.capture(write_write_read, ...)``): `rounds` requests, each
    written as two 20-byte writes; the server answers b"ok" once it has all 40 bytes.

    It runs in capture's child process, so it imports what it uses; the server is a thread
    (threads are fine once the child's namespace exists).
    """
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    watch(listener.getsockname()[1])

    def serve(conn: socket.socket) -> None:
        got = 0
        while data := conn.recv(65536):
            got += len(data)
            while got >= 40:
                got -= 40
                conn.sendall(b"ok")

    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    server = threading.Thread(target=serve, args=(conn,))
    server.start()
    if nodelay:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    round_ms = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.sendall(b"H" * 20)  # write 1
        client.sendall(b"B" * 20)  # write 2
        answer = b""
        while len(answer) < 2:  # read
            answer += client.recv(2 - len(answer))
        round_ms.append(round((time.perf_counter() - started) * 1e3, 2))
    client.close()
    server.join(5)
    conn.close()
    listener.close()
    return {"nodelay": nodelay, "round_ms": round_ms}


# --------------------------------------------------------------------------- windows


def congestion_controls() -> dict[str, Any]:
    """This machine's congestion control settings, read from /proc/sys/net/ipv4 (never written).

    {"default": "bbr", "allowed": [...], "available": [...]}: the algorithm new sockets get,
    those an unprivileged program may pick with TCP_CONGESTION, and those the kernel has loaded.
    """
    return {
        "default": sysctl("net.ipv4.tcp_congestion_control"),
        "allowed": sysctl("net.ipv4.tcp_allowed_congestion_control").split(),
        "available": sysctl("net.ipv4.tcp_available_congestion_control").split(),
    }


# ca_state in struct tcp_info (enum tcp_ca_state, include/net/tcp.h)
CA_STATES = {0: "Open", 1: "Disorder", 2: "CWR", 3: "Recovery", 4: "Loss"}
INFINITE_SSTHRESH = 0x7FFFFFFF  # TCP_INFINITE_SSTHRESH: no loss seen yet, so still in slow start

BOTTLENECK = {"rate_kbit": 10_000, "burst_bytes": 3028, "limit_bytes": 40_000, "mss": 1448}
RUN_S = 0.8  # long enough for slow start, a loss, and a dozen round trips of congestion avoidance
# How the sender repaired its losses, counted in the namespace (RFC 5681 fast retransmit, RFC 8985
# tail loss probes, RFC 6298 retransmission timeouts).
COUNTED = ["TcpExt.TCPFastRetrans", "TcpExt.TCPLossProbes", "TcpExt.TCPTimeouts"]


@dataclass(frozen=True)
class Sample:
    """One TCP_INFO reading of the sender: time (ms), ca_state, counts in segments, srtt (us)."""

    t_ms: float
    ca_state: int
    cwnd: int
    ssthresh: int
    unacked: int
    sacked: int
    lost: int
    retrans: int
    rtt_us: int
    total_retrans: int
    delivered: int  # segments the peer has acknowledged so far (TCP_INFO delivered, Linux 4.18+)

    @property
    def in_flight(self) -> int:
        """Segments the kernel counts as in the network: sent, not acknowledged, not known to be
        lost or already received out of order (SACKed), plus retransmissions in flight (RFC 6675's pipe)."""
        return self.unacked - self.sacked - self.lost + self.retrans


@dataclass
class CongestionRun:
    """A bulk send through the bottleneck: the sender's TCP_INFO samples, and where they came from.

    ``live`` is False for a recording (``source`` says where and when it was made).
    """

    algorithm: str
    settings: dict[str, Any]
    samples: list[Sample]
    sent_bytes: int
    qdisc: str  # what `tc -s qdisc show dev lo` said afterwards: packets sent and dropped
    counters: dict[str, int]  # the namespace's TcpExt counters (COUNTED) over the run: this connection's alone
    live: bool = True
    source: str = "measured live in a private network namespace"
    notes: list[str] = field(default_factory=list)

    @property
    def first_cut(self) -> int | None:
        """Index of the first sample with a finite ssthresh (the first loss), or None."""
        return next((i for i, s in enumerate(self.samples) if s.ssthresh != INFINITE_SSTHRESH), None)

    @property
    def peak_cwnd(self) -> int:
        """The largest cwnd of slow start (before the first loss), in segments."""
        cut = self.first_cut
        return max(s.cwnd for s in self.samples[: cut if cut else None])

    def growth(self, first: int, last: int) -> dict[str, float]:
        """cwnd's growth between samples `first` and `last`: per segment the peer acknowledged
        (``delivered``), and per round trip (the sum of each interval over the srtt of its time)."""
        a, b = self.samples[first], self.samples[last]
        acked = b.delivered - a.delivered
        span = self.samples[first:last + 1]
        rtts = sum((y.t_ms - x.t_ms) * 1e3 / max(x.rtt_us, 1) for x, y in zip(span, span[1:]))
        return {"from_ms": a.t_ms, "to_ms": b.t_ms, "cwnd_from": a.cwnd, "cwnd_to": b.cwnd, "acked": acked,
                "per_acked": (b.cwnd - a.cwnd) / acked if acked else 0.0, "rtts": rtts,
                "per_rtt": (b.cwnd - a.cwnd) / rtts if rtts else 0.0,
                "rtt_ms": statistics.median(s.rtt_us for s in span) / 1e3}

    def phases(self) -> dict[str, Any]:
        """Slow start (from the start to the largest cwnd before the first loss) and congestion
        avoidance (the longest stretch in the Open state after the first loss), each with its
        growth (see ``growth``); the first ssthresh, the segments acknowledged between slow
        start's last sample and the loss, and the segments retransmitted."""
        cut = self.first_cut
        if cut is None or cut == 0:
            raise ValueError("no loss in this run after the first sample: cwnd never left slow start")
        peak = max(range(cut), key=lambda i: self.samples[i].cwnd)
        stretches, begin = [], None
        for i in range(cut, len(self.samples) + 1):
            is_open = i < len(self.samples) and self.samples[i].ca_state == 0
            if is_open and begin is None:
                begin = i
            elif not is_open and begin is not None:
                stretches.append((begin, i - 1))
                begin = None
        if not stretches:
            raise ValueError("after the first loss the connection never returned to the Open state")
        first, last = max(stretches, key=lambda s: self.samples[s[1]].t_ms - self.samples[s[0]].t_ms)
        # The loss is seen at sample `cut`, but cwnd may have grown after the last slow-start
        # sample: by at most one segment per segment acknowledged in between (RFC 5681, 3.1).
        # A busy machine samples less often, so this gap is what bounds cwnd at the loss.
        return {"slow_start": self.growth(0, peak), "first_ssthresh": self.samples[cut].ssthresh,
                "acked_before_cut": self.samples[cut].delivered - self.samples[peak].delivered,
                "cut_at_ms": self.samples[cut].t_ms, "avoidance": self.growth(first, last),
                "retransmitted": self.samples[-1].total_retrans}

    def to_json(self, where: str) -> dict[str, Any]:
        """JSON-ready data for a recording, labelled with `where` (machine), the time and the kernel."""
        return {"recorded": recordings.label(where), "algorithm": self.algorithm,
                "settings": self.settings, "sent_bytes": self.sent_bytes, "qdisc": self.qdisc,
                "counters": self.counters,
                "samples": [[getattr(s, f) for f in Sample.__dataclass_fields__] for s in self.samples]}


def _bulk_through_bottleneck(algorithm: str, rate_kbit: int, burst_bytes: int, limit_bytes: int, mss: int,
                             seconds: float, counted: list[str]) -> dict:
    """Runs in the namespace's child (netns.run_in_netns): shape lo, send for `seconds`, sample TCP_INFO."""
    import select
    import shutil
    import socket
    import subprocess
    import threading
    import time

    from helpers.observe import kernel_counters, tcp_info  # the package is on the child's path (netns.PACKAGE_ROOT)

    tc = shutil.which("tc") or "/usr/sbin/tc"
    shape = [tc, "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", f"{rate_kbit}kbit",
             "burst", str(burst_bytes), "limit", str(limit_bytes)]
    done = subprocess.run(shape, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:  # e.g. a kernel built without the tbf qdisc
        return {"unavailable": f"`{' '.join(shape[1:])}` failed: {done.stderr.strip()[:300]}"}
    listener = socket.create_server(("127.0.0.1", 0))

    def drain() -> None:  # the receiver reads everything: its window never limits the sender
        conn, _ = listener.accept()
        with conn:
            while conn.recv(1 << 20):
                pass

    reader = threading.Thread(target=drain)
    reader.start()
    sender = socket.socket()
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, algorithm.encode())
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    sender.connect(listener.getsockname())
    sender.setblocking(False)
    chunk, sent, samples = bytes(65536), 0, []

    def sample(now: float) -> None:
        i = tcp_info(sender)
        samples.append([round(now * 1e3, 3), i.ca_state, i.snd_cwnd, i.snd_ssthresh, i.unacked, i.sacked, i.lost,
                        i.retrans, i.rtt_us, i.total_retrans, i.delivered or 0])

    before = kernel_counters()  # this namespace's counters: only this connection moves them
    sample(0.0)  # before the first send(): the initial window
    started = time.perf_counter()
    while (now := time.perf_counter() - started) < seconds:
        try:
            sent += sender.send(chunk)
        except BlockingIOError:
            select.select([], [sender], [], 0.001)  # the send buffer is full: wait a little
        sample(now)
    after = kernel_counters()
    sender.close()
    reader.join(10)
    listener.close()
    qdisc = subprocess.run([tc, "-s", "qdisc", "show", "dev", "lo"], capture_output=True, text=True, timeout=10)
    return {"samples": samples, "sent_bytes": sent, "qdisc": qdisc.stdout.strip(),
            "counters": {name: after[name] - before[name] for name in counted}}


class BottleneckUnavailable(RuntimeError):
    """No private bottleneck here: namespaces are forbidden, or tc or its tbf qdisc is missing."""


def bottleneck_run(algorithm: str = "reno", *, seconds: float = RUN_S) -> CongestionRun:
    """Send for `seconds` through a 10 Mbit/s bottleneck in a private namespace; the sender's samples.

    Raises BottleneckUnavailable (saying why) where namespaces are forbidden or ``tc`` or
    its tbf qdisc is missing; ValueError for an algorithm this kernel has not loaded or a
    duration outside (0, 5] s.
    """
    available = congestion_controls()["available"]
    if algorithm not in available:
        raise ValueError(f"algorithm must be one this kernel has loaded, {available}, got {algorithm!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 5:
        raise ValueError(f"seconds must be in (0, 5], got {seconds!r}")
    if not netns.support():
        raise BottleneckUnavailable(f"no private network namespace: {netns.support().reason}")
    if find_program("tc") is None:
        raise BottleneckUnavailable(f"the tc program (package iproute2) is {why_missing('tc')}, so no queue can be "
                                    "set up")
    try:
        out = netns.run_in_netns(_bulk_through_bottleneck, timeout_s=30, algorithm=algorithm, seconds=seconds,
                                 **BOTTLENECK, counted=COUNTED)
    except netns.NamespaceUnavailable as exc:  # allowed for the probe, refused now (a limit reached)
        raise BottleneckUnavailable(f"no private network namespace: {exc}") from exc
    if "unavailable" in out:
        raise BottleneckUnavailable(out["unavailable"])
    return CongestionRun(algorithm, dict(BOTTLENECK, seconds=seconds), [Sample(*row) for row in out["samples"]],
                         out["sent_bytes"], out["qdisc"], out["counters"])


def save_recording(run: CongestionRun, path: str | Path, where: str) -> None:
    """Store a live `run` as JSON on one line, labelled with `where` (machine), the time and the kernel.

    ValueError for anything but a live CongestionRun; TypeError for an empty `where`.
    """
    if not isinstance(run, CongestionRun) or not run.live:
        raise ValueError(f"save_recording() needs a live CongestionRun, got {run!r:.80}")
    recordings.write(path, run.to_json(where), indent=None)  # TypeError for an empty `where`; one line


def load_recording(path: str | Path) -> CongestionRun:
    """A run recorded earlier by save_recording(), marked ``live=False``; ValueError naming the file
    for anything else."""
    def build(label: str, data: dict[str, Any]) -> CongestionRun:
        samples = [Sample(*row) for row in data["samples"]]
        return CongestionRun(data["algorithm"], data["settings"], samples, data["sent_bytes"], data["qdisc"],
                             data["counters"], live=False, source=f"RECORDED earlier: {label}")

    return recordings.read(path, "nagle.save_recording()", build)  # also from an edition's folder
