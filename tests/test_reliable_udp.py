"""helpers.reliable_udp: the wire format, the sans-IO halves over a simulated network, and
the whole protocol over a real lossy relay on loopback."""

from __future__ import annotations

import heapq
import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import helpers as h
from helpers import lossy
from helpers import reliable_udp as ru

# ----------------------------------------------------------------- wire format


@given(seq=st.integers(0, ru.MAX_SEQ), payload=st.binary(max_size=2000))
def test_data_round_trip(seq: int, payload: bytes) -> None:
    assert ru.decode(ru.encode_data(seq, payload)) == ru.Data(seq, payload)


@given(seq=st.integers(0, ru.MAX_SEQ), nxt=st.integers(0, ru.MAX_SEQ))
def test_ack_round_trip(seq: int, nxt: int) -> None:
    assert ru.decode(ru.encode_ack(seq, nxt)) == ru.Ack(seq, nxt)


@given(st.binary(max_size=40))
def test_decode_never_fails_with_anything_but_malformed(data: bytes) -> None:
    try:
        ru.decode(data)
    except ru.MalformedPacket:
        pass


@pytest.mark.parametrize(
    ("datagram", "message"),
    [
        (b"", r"^datagram of 0 bytes is shorter than the 5-byte header$"),
        (b"\x01\x00", r"^datagram of 2 bytes is shorter than the 5-byte header$"),
        (b"\x07\x00\x00\x00\x00", r"^unknown packet type 7 \(expected 1 = DATA or 2 = ACK\)$"),
        (b"\x02\x00\x00\x00\x00", r"^an ACK is 9 bytes, got 5$"),
    ],
)
def test_malformed_packets_are_named(datagram: bytes, message: str) -> None:
    with pytest.raises(ru.MalformedPacket, match=message):
        ru.decode(datagram)


def test_limits() -> None:
    assert ru.MAX_PAYLOAD == 65507 - 5
    with pytest.raises(ValueError, match=r"does not fit one UDP datagram \(max 65502\)$"):
        ru.encode_data(0, b"x" * 65503)
    with pytest.raises(ValueError, match=r"^message 1 has 70000 bytes; one datagram carries at most 65502$"):
        ru.Sender([b"ok", b"x" * 70000])
    with pytest.raises(ValueError, match=r"^window must be an int in 1-1024 \(1 = stop-and-wait\), got 0$"):
        ru.Sender([b"x"], window=0)
    with pytest.raises(ValueError, match=r"^rto_s must be a number of seconds in \(0, 10\], got -1$"):
        ru.Sender([b"x"], rto_s=-1)
    with pytest.raises(TypeError, match=r"^message 0 must be bytes, got str$"):
        ru.Sender(["text"])  # type: ignore[list-item]


# ----------------------------------------------------------------- sans-IO over a simulated network


def simulate(messages, *, window, loss, dup, reorder, seed, rto_s=0.03, max_time_s=600.0):
    """Run Sender and Receiver over a simulated network with a virtual clock.

    Each datagram is dropped, duplicated or delayed by a random amount (so datagrams
    overtake each other) as the seeded random source decides. Returns (sender, receiver, t).
    """
    rng = random.Random(seed)
    sender, receiver = ru.Sender(messages, window=window, rto_s=rto_s), ru.Receiver()
    in_flight: list[tuple[float, int, str, bytes]] = []  # (arrival time, tie, to whom, datagram)
    tie = 0
    now = 0.0

    def transmit(to: str, datagram: bytes) -> None:
        nonlocal tie
        if rng.random() < loss:
            return
        copies = 2 if rng.random() < dup else 1
        for _ in range(copies):
            delay = 0.001 + (rng.random() * 0.02 if rng.random() < reorder else 0.0)
            tie += 1
            heapq.heappush(in_flight, (now + delay, tie, to, datagram))

    while not sender.done and now < max_time_s:
        for d in sender.poll(now):
            transmit("receiver", d)
        wake = max(now, sender.next_deadline() or now)
        if in_flight and in_flight[0][0] <= wake:
            now, _, to, datagram = heapq.heappop(in_flight)
            if to == "receiver":
                ack = receiver.datagram_received(datagram)
                if ack is not None:
                    transmit("sender", ack)
            else:
                sender.datagram_received(datagram, now)
        else:
            now = max(now, wake)
    return sender, receiver, now


@given(
    messages=st.lists(st.binary(max_size=20), max_size=60),
    window=st.integers(1, 16),
    loss=st.floats(0, 0.5),
    dup=st.floats(0, 0.3),
    reorder=st.floats(0, 0.5),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=150, deadline=None)
def test_simulated_delivery_is_complete_ordered_and_exactly_once(messages, window, loss, dup, reorder, seed) -> None:
    sender, receiver, t = simulate(messages, window=window, loss=loss, dup=dup, reorder=reorder, seed=seed)
    assert sender.done, f"not done after {t:.1f} virtual seconds"
    assert receiver.delivered == messages
    assert not receiver.buffer


def test_stop_and_wait_never_has_two_in_flight() -> None:
    sender = ru.Sender([b"a", b"b", b"c"], window=1)
    assert [ru.decode(d).seq for d in sender.poll(0.0)] == [0]
    assert sender.poll(0.01) == []  # waits for the ACK
    assert [ru.decode(d).seq for d in sender.poll(0.05)] == [0]  # timer ran out: again
    assert sender.retransmissions == 1
    sender.datagram_received(ru.encode_ack(0, 1), 0.06)
    assert [ru.decode(d).seq for d in sender.poll(0.06)] == [1]


def test_cumulative_ack_covers_lost_acks() -> None:
    sender = ru.Sender([b"a", b"b", b"c"], window=3)
    sender.poll(0.0)
    sender.datagram_received(ru.encode_ack(2, 3), 0.001)  # the ACKs for 0 and 1 were lost
    assert sender.done and sender.retransmissions == 0


def test_sender_ignores_nonsense() -> None:
    sender = ru.Sender([b"a"], window=1)
    sender.poll(0.0)
    for junk in [b"", ru.encode_data(0, b"x"), ru.encode_ack(5, 0), ru.encode_ack(0, 9)]:
        sender.datagram_received(junk, 0.001)
    assert sender.ignored == 4 and not sender.done


def test_receiver_delivers_in_order_once_and_counts_duplicates() -> None:
    rx = ru.Receiver()
    acks = [rx.datagram_received(ru.encode_data(seq, bytes([seq]))) for seq in [2, 0, 2, 1, 0, 3]]
    assert rx.delivered == [b"\x00", b"\x01", b"\x02", b"\x03"]
    assert rx.duplicates == 2 and rx.out_of_order == 1
    assert [ru.decode(a) for a in acks] == [
        ru.Ack(2, 0), ru.Ack(0, 1), ru.Ack(2, 1), ru.Ack(1, 3), ru.Ack(0, 3), ru.Ack(3, 4)]


def test_receiver_bounds_its_buffer() -> None:
    rx = ru.Receiver(max_buffered=4)
    assert rx.datagram_received(ru.encode_data(4, b"too far ahead")) is None
    assert rx.datagram_received(b"\xff garbage") is None
    assert rx.ignored == 2 and not rx.buffer


# ----------------------------------------------------------------- real sockets


def transfer(messages, *, loss, dup, reorder, window, seed, deadline_s):
    receiver = ru.Receiver()
    with h.UDPServer(receiver.handle) as server, \
            lossy.LossyRelay(server.address, loss=loss, duplicate=dup, reorder=reorder, delay_s=0.001,
                             seed=seed) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        report = ru.send_all(sock, relay.address, messages, window=window, rto_s=0.02, deadline_s=deadline_s)
    return report, receiver, relay


@pytest.mark.slow
@pytest.mark.parametrize("window", [1, 8])
def test_real_transfer_at_30_percent_loss_with_duplication_and_reordering(window: int) -> None:
    messages = [f"message {i} ".encode() * 20 for i in range(100 if window == 1 else 300)]
    report, receiver, relay = transfer(messages, loss=0.3, dup=0.1, reorder=0.1, window=window, seed=5,
                                       deadline_s=20)
    assert receiver.delivered == messages  # everything, in order, exactly once
    assert relay.stats.to_server.dropped > 0 and relay.stats.to_client.dropped > 0
    assert relay.stats.to_server.duplicated > 0
    if window > 1:  # stop-and-wait has one datagram in flight: nothing can overtake it
        assert relay.stats.to_server.reordered > 0 and receiver.out_of_order > 0
    assert report.retransmissions >= relay.stats.to_server.dropped > 0
    assert receiver.duplicates > 0


def test_real_transfer_without_loss_needs_no_retransmission() -> None:
    messages = [bytes([i]) * 100 for i in range(50)]
    report, receiver, _ = transfer(messages, loss=0, dup=0, reorder=0, window=8, seed=0, deadline_s=10)
    assert receiver.delivered == messages
    assert report.transmissions == 50 + report.retransmissions
    assert report.payload_bytes == 5000 and report.goodput_kB_s > 0


def test_transfer_yields_once_per_message_acknowledged_then_leaves_its_report() -> None:
    messages = [bytes([i]) * 10 for i in range(20)]
    receiver = ru.Receiver()
    with h.UDPServer(receiver.handle) as server, \
            lossy.LossyRelay(server.address, loss=0.2, seed=3) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        run = ru.Transfer(sock, relay.address, messages, window=4, rto_s=0.02)
        assert run.report is None and len(run) == 20
        assert list(run) == list(range(1, 21))  # 1, 2, ... as the messages are acknowledged in order
    assert receiver.delivered == messages
    assert run.report is not None and run.report.messages == 20
    assert run.report.retransmissions >= relay.stats.to_server.dropped > 0


def test_deadline_is_a_clear_error() -> None:
    with h.UDPServer() as silent, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3.0)
        with pytest.raises(ru.DeliveryTimeout, match=r"^only 0 of 2 messages acknowledged after 0.2 s "):
            ru.send_all(sock, silent.address, [b"a", b"b"], deadline_s=0.2)
        assert sock.gettimeout() == 3.0  # restored


def test_send_all_refuses_a_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, \
            pytest.raises(TypeError, match=r"^send_all\(\) needs a UDP \(SOCK_DGRAM\) socket"):
        ru.send_all(sock, ("127.0.0.1", 9), [b"x"])
