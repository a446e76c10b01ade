"""helpers.nagle and behaviours.answer_each: round trips timed on real loopback connections,
and the congestion window behind a real bottleneck (live where namespaces and tc allow it,
and always on the recorded run the lesson falls back to)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from helpers import behaviours, framing, nagle, netns
from helpers.servers import TCPServer

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "notebooks" / "recorded" / "10-nagle-and-delayed-ack-reno.json"
PARTS = [b"H" * 20, b"B" * 20]


def two_writes(sock: socket.socket, parts: list[bytes]) -> bytes:
    for part in parts:
        sock.sendall(part)
    return framing.readn(sock, 2)


def one_sendmsg(sock: socket.socket, parts: list[bytes]) -> bytes:
    sock.sendmsg(parts)
    return framing.readn(sock, 2)


def test_answer_each_answers_every_whole_request_even_pipelined() -> None:
    with TCPServer(behaviours.answer_each(4, reply=b"yes")) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(b"abcdefghij")  # two whole requests and half of a third
            assert framing.readn(sock, 6) == b"yesyes"
            sock.sendall(b"kl")  # completes the third
            assert framing.readn(sock, 3) == b"yes"
        assert server.result(timeout_s=5) == 3


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((0,), {}, r"^size must be a request size in bytes, 1-16 MiB, got 0$"),
    ((True,), {}, r"^size must be a request size in bytes \(an int\), got bool True$"),
    ((4,), {"reply": b""}, r"^reply must be non-empty bytes, got b''$"),
    ((4,), {"quickack": "always"}, r"^quickack must be one of \('never', 'once', 'every'\), got 'always'$"),
])
def test_answer_each_refuses_bad_settings(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        behaviours.answer_each(*args, **kwargs)


def test_two_small_writes_stall_and_one_sendmsg_does_not() -> None:
    """The lesson's 10x effect: >= 40 ms per round trip (delayed ACK) against microseconds;
    the client's own TCP_INFO counts two data segments per request against one."""
    stalled = nagle.round_trips(two_writes, PARTS, n=6)
    fast = nagle.round_trips(one_sendmsg, PARTS, n=6)
    assert stalled.median_ms >= nagle.STALL_MS and stalled.stalls >= 3, stalled
    assert fast.median_ms < 5 and fast.stalls <= 1, fast
    assert stalled.segments_per_request == 2.0 and fast.segments_per_request == 1.0, (stalled, fast)
    assert stalled.delayed_acks >= 3, stalled  # namespace-wide: at least ours


def test_quickack_after_every_read_removes_the_stall_and_once_does_not() -> None:
    every = nagle.round_trips(two_writes, PARTS, n=6, quickack="every")
    once = nagle.round_trips(two_writes, PARTS, n=6, quickack="once")
    assert every.median_ms < 5, every
    assert once.stalls >= 3, once


def test_nodelay_set_by_prepare_sends_each_write_at_once() -> None:
    def nodelay(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    run = nagle.round_trips(two_writes, PARTS, n=6, prepare=nodelay)
    assert run.median_ms < 5 and run.segments_per_request == 2.0, run


def test_round_trips_insists_on_the_servers_answer() -> None:
    def forgets_to_read(sock: socket.socket, parts: list[bytes]) -> bytes:
        sock.sendmsg(parts)
        return b"sent"

    with pytest.raises(ValueError, match=r"^request\(\) must return the server's answer b'ok', it returned b'sent'$"):
        nagle.round_trips(forgets_to_read, PARTS, n=1)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"n": 0}, ValueError, r"^n must be 1-500 round trips \(a stalled one takes 40 ms\), got 0$"),
    ({"n": "3"}, TypeError, r"^n must be a number of round trips \(an int\), got str '3'$"),
    ({"n": 2, "parts": []}, ValueError, r"^parts must be a non-empty list of non-empty bytes, got \[\]$"),
    ({"n": 2, "prepare": 5}, TypeError, r"^request \(and prepare, if given\) must be functions"),
])
def test_round_trips_refuses_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    args = {"parts": PARTS, **kwargs}
    with pytest.raises(error, match=message):
        nagle.round_trips(two_writes, args.pop("parts"), **args)


def test_time_requests_refuses_what_it_cannot_call() -> None:
    with socket.socket() as sock, pytest.raises(TypeError, match=r"^request must be a function called as "
                                                r"request\(sock, \.\.\.\), got 'x'$"):
        nagle.time_requests(sock, "x", (), 1)


def test_congestion_controls_are_read_from_proc() -> None:
    cc = nagle.congestion_controls()
    assert cc["default"] in cc["available"] and "reno" in cc["available"], cc
    with socket.socket() as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\0")[0].decode() == cc["default"]


def _check_phases(run: nagle.CongestionRun) -> None:
    """What lesson 10 asserts on a run: slow start, a cut to about half, congestion avoidance."""
    phases = run.phases()
    ss, ca = phases["slow_start"], phases["avoidance"]
    assert ss["cwnd_from"] == 10 and ss["cwnd_to"] >= 30, ss  # RFC 6928's initial window, then growth
    assert ss["per_acked"] >= 0.5 and ca["per_acked"] <= 0.2 and ss["per_acked"] >= 5 * ca["per_acked"], phases
    top = ss["cwnd_to"] + phases["acked_before_cut"]  # the most cwnd can have reached at the loss
    assert 0.3 * ss["cwnd_to"] <= phases["first_ssthresh"] <= 0.7 * top, phases  # about half (reno)
    over = [s.in_flight - s.cwnd for s in run.samples if s.in_flight > s.cwnd]
    assert set(over) <= {1} and len(over) <= 0.02 * len(run.samples), over  # tcp_cwnd_test(), bar a busy moment
    assert run.counters["TcpExt.TCPFastRetrans"] >= 1, run.counters  # exact: only this connection in the namespace
    assert sum(s.in_flight == s.cwnd for s in run.samples) >= 10  # cwnd-limited behind the bottleneck
    assert phases["retransmitted"] >= 1, phases


def test_the_recorded_run_shows_slow_start_and_congestion_avoidance() -> None:
    run = nagle.load_recording(RECORDING)
    assert not run.live and run.source.startswith("RECORDED earlier: ") and run.algorithm == "reno"
    _check_phases(run)


def test_a_file_that_is_no_recording_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "capture.json"
    bad.write_text(json.dumps({"recorded": "elsewhere", "packets": []}))
    with pytest.raises(ValueError, match=r"capture\.json is not a recording made by nagle\.save_recording\(\): "
                       r"KeyError: 'samples'$"):
        nagle.load_recording(bad)


def test_phases_of_a_run_without_loss_say_so() -> None:
    run = nagle.load_recording(RECORDING)
    cut = run.first_cut
    lossless = nagle.CongestionRun("reno", {}, run.samples[:cut], 0, "", {})
    with pytest.raises(ValueError, match=r"^no loss in this run after the first sample: cwnd never left slow start$"):
        lossless.phases()


def test_bottleneck_run_refuses_an_algorithm_the_kernel_lacks() -> None:
    with pytest.raises(ValueError, match=r"^algorithm must be one this kernel has loaded, \[.*\], got 'vegas!'$"):
        nagle.bottleneck_run("vegas!")
    with pytest.raises(ValueError, match=r"^seconds must be in \(0, 5\], got 9$"):
        nagle.bottleneck_run("reno", seconds=9)


@pytest.mark.slow
def test_bottleneck_run_live_and_its_recording_round_trip(tmp_path: Path) -> None:
    """In a private namespace with a tbf qdisc: the same phases as the recording, saved and loaded back."""
    if not netns.support():
        pytest.skip(f"no private namespaces here: {netns.support().reason}")
    if not (shutil.which("tc") or Path("/usr/sbin/tc").exists()):
        pytest.skip("no tc program (iproute2) here")
    run = nagle.bottleneck_run("reno")
    assert run.live and "dropped" in run.qdisc, run.qdisc
    _check_phases(run)
    path = tmp_path / "run.json"
    nagle.save_recording(run, path, "a test")
    back = nagle.load_recording(path)
    assert back.samples == run.samples and not back.live and "a test, " in back.source
    with pytest.raises(ValueError, match=r"^save_recording\(\) needs a live CongestionRun"):
        nagle.save_recording(back, path, "again")


@pytest.mark.slow
def test_a_queue_tc_refuses_makes_the_bottleneck_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """tc failing inside the namespace (here: a burst of 0; elsewhere: a kernel without tbf) is
    BottleneckUnavailable with tc's words, so the lesson shows its recording instead of failing."""
    if not netns.support() or not (shutil.which("tc") or Path("/usr/sbin/tc").exists()):
        pytest.skip("needs a private namespace and tc")
    monkeypatch.setattr(nagle, "BOTTLENECK", dict(nagle.BOTTLENECK, burst_bytes=0))
    with pytest.raises(nagle.BottleneckUnavailable, match=r"^`qdisc replace dev lo root tbf rate 10000kbit burst 0 "
                       r"limit 40000` failed: tbf: the \"burst\" parameter is mandatory"):
        nagle.bottleneck_run("reno")
