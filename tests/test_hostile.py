"""helpers.hostile: the misbehaving peers, over real loopback sockets, and peak_allocated().

Hostile arguments to these helpers are in test_hostile_arguments_experiments.py.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc

import pytest

from helpers import closing, framing, hostile
from helpers.servers import TCPServer


def _read_all(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Everything until EOF, and the size of each recv()."""
    sock.settimeout(5)
    got, sizes = bytearray(), []
    while data := sock.recv(65536):
        got += data
        sizes.append(len(data))
    return bytes(got), sizes


def test_cut_sends_every_byte_in_pieces_the_seed_decides_then_a_fin() -> None:
    payload = bytes(range(256)) * 4
    plans = []
    for _ in range(2):
        with TCPServer(hostile.cut(payload, largest=13, seed=7)) as server, \
                socket.create_connection(server.address) as sock:
            got, _ = _read_all(sock)
            sock.close()
            plans.append(server.result())
    assert got == payload
    assert plans[0] == plans[1], "the same seed cuts the same way"
    assert sum(plans[0]) == len(payload) and max(plans[0]) <= 13 and min(plans[0]) >= 1


def test_cut_with_given_sizes_sends_those_pieces_and_the_rest_last() -> None:
    with TCPServer(hostile.cut(b"PING 1\r\nPING 2\n", sizes=[2, 5, 1], pause_s=0.02)) as server, \
            socket.create_connection(server.address) as sock:
        got, _ = _read_all(sock)
        sock.close()
        assert server.result() == [2, 5, 1, 7]
    assert got == b"PING 1\r\nPING 2\n"


@pytest.mark.parametrize("claimed", [0, 64 << 20, framing.MAX_U32])
def test_announce_sends_a_lying_header_and_a_short_body(claimed: int) -> None:
    with TCPServer(hostile.announce(claimed, b"tiny body", kind=3)) as server, \
            socket.create_connection(server.address) as sock:
        got, _ = _read_all(sock)
        sock.close()
        assert server.result() == 8 + 9
    assert got == framing.HEADER.pack(claimed, 3) + b"tiny body"


def test_endless_line_sends_no_newline_then_a_fin() -> None:
    with TCPServer(hostile.endless_line(300_000)) as server, socket.create_connection(server.address) as sock:
        got, _ = _read_all(sock)
        sock.close()
    assert got == b"A" * 300_000


def test_trickle_sends_a_byte_at_a_time_until_told_to_stop() -> None:
    stop = threading.Event()
    with TCPServer(hostile.trickle(1000, 0.005, stop)) as server, socket.create_connection(server.address) as sock:
        sock.settimeout(5)
        header = framing.readn(sock, 8)
        assert framing.HEADER.unpack(header) == (1000, 1)
        assert sock.recv(100)  # bytes come, a few at a time
        stop.set()
        sent = server.result()
        sock.close()
    assert 0 < sent < 1000


def test_trickle_stops_when_the_reader_closes() -> None:
    stop = threading.Event()
    with TCPServer(hostile.trickle(1000, 0.001, stop)) as server:
        with socket.create_connection(server.address) as sock:
            framing.readn(sock, 8)
        sent = server.result()  # the handler ends on its own: a send() after our close fails
    assert 0 <= sent < 1000 and not stop.is_set()


def test_peak_allocated_sees_what_the_function_allocated_and_frees_its_frames() -> None:
    def allocate_then_fail(n: int) -> None:
        buffer = bytearray(n)  # noqa: F841 - the frame holds it until the traceback is gone
        raise EOFError("gave up")

    peak, result = hostile.peak_allocated(allocate_then_fail, 8 << 20, expect=(EOFError,))
    assert peak >= 8 << 20
    assert isinstance(result, EOFError) and result.__traceback__ is None
    peak, result = hostile.peak_allocated(len, b"abc")
    assert result == 3 and peak < 64 * 1024
    assert not tracemalloc.is_tracing(), "tracing is stopped again"
    with pytest.raises(ZeroDivisionError):
        hostile.peak_allocated(lambda: 1 / 0)
    assert not tracemalloc.is_tracing()


def test_peak_allocated_leaves_tracing_on_if_it_was_on() -> None:
    tracemalloc.start()
    try:
        big = bytearray(4 << 20)
        del big
        peak, _ = hostile.peak_allocated(len, b"")
        assert peak < 1 << 20, "the peak before the call does not count"
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


def test_the_defended_reader_refuses_each_hostile_peer() -> None:
    """The peers do what lesson 13 says: framing's bounded readers refuse them, fast."""
    with TCPServer(hostile.announce(64 << 20)) as server, socket.create_connection(server.address) as sock:
        peak, err = hostile.peak_allocated(framing.read_message, sock, expect=(framing.FramingError,))
        assert isinstance(err, framing.RemoteProtocolError) and err.value == 64 << 20 and peak < 1 << 20
    with TCPServer(hostile.endless_line(1 << 20)) as server, socket.create_connection(server.address) as sock:
        with pytest.raises(framing.RemoteProtocolError, match=r"over the limit of 8192 bytes"):
            framing.read_line(sock, max_line_size=8192)
        assert closing.drain(sock) > 0
    stop = threading.Event()
    with TCPServer(hostile.trickle(1000, 0.005, stop)) as server, socket.create_connection(server.address) as sock:
        started = time.monotonic()
        with pytest.raises(framing.MessageTimeout):
            framing.read_message(sock, deadline_s=0.2)
        stop.set()
        assert time.monotonic() - started < 2
