"""helpers.lossy: seeded fates, validated parameters, and a real relay on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import helpers as h
from helpers import lossy
from helpers.core.registry import THREAD_PREFIX


def wait_for(condition, timeout_s: float = 5.0) -> None:
    """Poll `condition` (cheap, in-process) until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.002)


def send_numbered(sock: socket.socket, dest, relay: lossy.LossyRelay, n: int, batch: int = 20) -> None:
    """Send n datagrams b'0', b'1', ... in batches, waiting for the relay to take each batch,
    so that no datagram is lost in a full socket buffer before the relay decides its fate."""
    for start in range(0, n, batch):
        end = min(n, start + batch)
        for i in range(start, end):
            sock.sendto(str(i).encode(), dest)
        wait_for(lambda end=end: relay.stats.to_server.received == end)


def received_numbers(server: h.UDPServer, expected: int) -> list[int]:
    got = []
    deadline = time.monotonic() + 5
    while len(got) < expected and time.monotonic() < deadline:
        try:
            _, data = server.results.get(timeout=0.5)
        except Exception:  # noqa: BLE001 - queue.Empty: keep waiting until the deadline
            continue
        got.append(int(data))
    return got


# ----------------------------------------------------------------- FateDrawer (no I/O)


@given(seed=st.integers(0, 2**32), loss=st.floats(0, 1), dup=st.floats(0, 1), reorder=st.floats(0, 1))
@settings(max_examples=50, deadline=None)
def test_same_seed_gives_same_fates(seed: int, loss: float, dup: float, reorder: float) -> None:
    a = lossy.FateDrawer(loss=loss, duplicate=dup, reorder=reorder, seed=seed)
    b = lossy.FateDrawer(loss=loss, duplicate=dup, reorder=reorder, seed=seed)
    assert [a.next() for _ in range(50)] == [b.next() for _ in range(50)]


def test_different_seeds_give_different_drops() -> None:
    a = lossy.FateDrawer(loss=0.3, seed=1)
    b = lossy.FateDrawer(loss=0.3, seed=2)
    assert [a.next().drop for _ in range(200)] != [b.next().drop for _ in range(200)]


def test_loss_rate_is_close_to_the_probability() -> None:
    drawer = lossy.FateDrawer(loss=0.3, seed=7)
    drops = sum(drawer.next().drop for _ in range(10_000))
    assert 2700 < drops < 3300


def test_extreme_probabilities() -> None:
    never = lossy.FateDrawer(seed=3)
    always = lossy.FateDrawer(loss=1.0, duplicate=1.0, reorder=1.0, seed=3)
    assert not any(f.drop or f.duplicate or f.reorder for f in (never.next() for _ in range(100)))
    # a dropped datagram is neither duplicated nor reordered
    assert all(f == lossy.Fate(True, False, False) for f in (always.next() for _ in range(100)))


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.2", True, None, float("nan")])
def test_probabilities_are_validated(bad) -> None:
    with pytest.raises(ValueError, match=r"^loss must be a probability between 0 and 1 \(0\.2 means 20%\), got "):
        lossy.FateDrawer(loss=bad)


def test_seed_is_validated() -> None:
    with pytest.raises(TypeError, match=r"^seed must be an int"):
        lossy.FateDrawer(seed="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"loss": 2}, ValueError, r"^loss must be a probability"),
        ({"duplicate": -1}, ValueError, r"^duplicate must be a probability"),
        ({"reorder": "often"}, ValueError, r"^reorder must be a probability"),
        ({"delay_s": 5}, ValueError, r"^delay_s must be a number of seconds in \[0, 1\], got 5$"),
        ({"delay_s": -0.1}, ValueError, r"^delay_s must be a number of seconds"),
        ({"hold_s": "1"}, TypeError, r"^hold_s must be a number of seconds"),
        ({"seed": 1.5}, TypeError, r"^seed must be an int"),
        ({"host": "localhost"}, ValueError, r"^host must be an IP address"),
        ({"host": "::1"}, ValueError, r"must be the same IP version$"),
    ],
)
def test_relay_parameters_are_validated(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        lossy.LossyRelay(("127.0.0.1", 9), **kwargs)
    assert not h.live_servers(), "a refused relay must not stay registered"


@pytest.mark.parametrize("address", [("127.0.0.1", 0), ("127.0.0.1", 70000), "127.0.0.1:9", ("127.0.0.1", "9")])
def test_server_address_is_validated(address) -> None:
    with pytest.raises((TypeError, ValueError), match=r"^server_address"):
        lossy.LossyRelay(address)  # type: ignore[arg-type]


# ----------------------------------------------------------------- the relay on real sockets


def test_relay_forwards_both_ways_and_stops_cleanly() -> None:
    with h.UDPServer(lambda data, addr: data.upper()) as server:
        relay = lossy.LossyRelay(server.address)
        assert relay in h.live_servers()
        threads = [t.name for t in threading.enumerate() if t.name.startswith(f"{THREAD_PREFIX}-lossy:")]
        assert threads, "the relay thread must carry the course-server prefix"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"hello", relay.address)
            data, addr = client.recvfrom(100)
        relay.stop()
        relay.stop()  # idempotent
        assert not relay.running and relay not in h.live_servers()
    assert (data, addr) == (b"HELLO", relay.address)
    assert relay.stats.to_server.sent == 1 and relay.stats.to_client.sent == 1


def test_same_seed_same_drops_over_real_sockets() -> None:
    n, seed = 100, 42
    predicted = lossy.FateDrawer(loss=0.3, seed=seed)
    predicted_drops = [i for i in range(n) if predicted.next().drop]
    runs = []
    for _ in range(2):
        with h.UDPServer() as server, lossy.LossyRelay(server.address, loss=0.3, seed=seed) as relay, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            send_numbered(client, relay.address, relay, n)
            got = received_numbers(server, n - len(predicted_drops))
        runs.append((relay.stats.to_server.dropped_indexes, got))
    for dropped, got in runs:
        assert dropped == predicted_drops
        assert sorted(got) == [i for i in range(n) if i not in predicted_drops]
    assert 15 <= len(predicted_drops) <= 45


def test_duplication_sends_twice() -> None:
    with h.UDPServer() as server, lossy.LossyRelay(server.address, duplicate=1.0) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        send_numbered(client, relay.address, relay, 10)
        got = received_numbers(server, 20)
    assert sorted(got) == sorted(list(range(10)) * 2)
    assert relay.stats.to_server.duplicated == 10 and relay.stats.to_server.sent == 20


def test_reorder_lets_the_next_datagram_overtake() -> None:
    with h.UDPServer() as server, lossy.LossyRelay(server.address, reorder=1.0, hold_s=1.0) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        send_numbered(client, relay.address, relay, 10, batch=10)
        got = received_numbers(server, 10)
    # every held datagram is overtaken by the next one, which is not held itself
    assert got == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
    assert relay.stats.to_server.reordered == 5


def test_held_datagram_is_released_after_hold_s() -> None:
    with h.UDPServer() as server, lossy.LossyRelay(server.address, reorder=1.0, hold_s=0.02) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"0", relay.address)
        got = received_numbers(server, 1)
    assert got == [0] and relay.stats.to_server.reordered == 0


def test_delay_adds_to_the_round_trip() -> None:
    with h.UDPServer(lambda data, addr: data) as server, \
            lossy.LossyRelay(server.address, delay_s=0.05) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        started = time.monotonic()
        client.sendto(b"ping", relay.address)
        assert client.recv(10) == b"ping"
        rtt = time.monotonic() - started
    assert rtt >= 0.1  # 50 ms each way


def test_stop_all_stops_a_forgotten_relay() -> None:
    with h.UDPServer() as server:
        relay = lossy.LossyRelay(server.address)
        assert h.stop_all() >= 1
    assert not relay.running
