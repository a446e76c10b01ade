"""helpers.sampling: TCP_INFO over time on real loopback sockets, and counter rises."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import TcpInfo, TCPServer
from helpers.sampling import Sample, rise_times, sample_tcp_info


def test_samples_cover_the_duration_and_see_data_sent() -> None:
    with TCPServer(lambda conn: conn.recv(100)) as server, socket.create_connection(server.address) as sock:
        sock.sendall(b"hello")
        samples = sample_tcp_info(sock, 0.2, every_s=0.01)
    # Wall-clock spacing is not asserted: on a loaded machine a sleep can overshoot.
    assert samples[0].t_s < samples[-1].t_s and samples[-1].t_s >= 0.2
    assert len(samples) >= 3
    assert all(a.t_s <= b.t_s for a, b in zip(samples, samples[1:]))
    assert samples[-1].info.bytes_acked >= 5


def test_keepalive_probe_shows_as_a_rise_in_segs_out() -> None:
    with TCPServer() as server, socket.create_connection(server.address) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        samples = sample_tcp_info(sock, 1.4)
    sent = rise_times(samples, "segs_out")
    assert len(sent) == 1 and 0.7 <= sent[0] <= 1.3  # one probe after 1 s of silence
    assert len(rise_times(samples, "segs_in")) == 1  # answered by the peer's kernel
    assert rise_times(samples, "data_segs_out") == []


def test_sampling_stops_at_the_first_sample_that_stop_when_accepts() -> None:
    seen: list[TcpInfo] = []

    def fourth(info: TcpInfo) -> bool:
        seen.append(info)
        return len(seen) == 4

    with TCPServer() as server, socket.create_connection(server.address) as sock:
        samples = sample_tcp_info(sock, 60.0, every_s=0.01, stop_when=fourth)
    assert [s.info for s in samples] == seen and len(samples) == 4  # each sample asked once, the 4th stops


def test_bad_arguments_are_refused() -> None:
    with TCPServer() as server, socket.create_connection(server.address) as sock:
        for bad in (0, -1, 4000, "1", True):
            with pytest.raises(ValueError, match=r"^duration_s must be a number of seconds"):
                sample_tcp_info(sock, bad)
        with pytest.raises(ValueError, match=r"^every_s must be"):
            sample_tcp_info(sock, 0.1, every_s=0)
        with pytest.raises(TypeError, match=r"^stop_when must be a function of a TcpInfo \(or None\), got 3$"):
            sample_tcp_info(sock, 0.1, stop_when=3)  # type: ignore[arg-type]
        samples = sample_tcp_info(sock, 0.05)
    with pytest.raises(ValueError, match=r"^TcpInfo has no field 'segs_oops'"):
        rise_times(samples, "segs_oops")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(TypeError, match=r"TCP socket"):
        sample_tcp_info(udp, 0.1)


def test_rise_times_of_nothing_is_empty() -> None:
    assert rise_times([], "segs_out") == []


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=30))
def test_rise_times_counts_every_increase(steps: list[int]) -> None:
    base = TcpInfo.from_bytes(b"\x01" + bytes(231))  # an ESTABLISHED socket's all-zero counters
    values = [sum(steps[: i + 1]) for i in range(len(steps))]
    samples = [Sample(float(i), dataclasses.replace(base, segs_out=v)) for i, v in enumerate(values)]
    times = rise_times(samples, "segs_out")
    assert len(times) == values[-1] - values[0]
    assert times == sorted(times)
    for i in range(1, len(steps)):
        assert times.count(float(i)) == steps[i]
