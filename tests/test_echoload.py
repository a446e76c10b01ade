"""helpers.echoload: the closed-loop echo client in a child process."""

from __future__ import annotations

import socket

import pytest

from helpers import aio, behaviours, echoload, servers


def test_closed_loop_against_a_threaded_echo_server() -> None:
    with servers.TCPServer(behaviours.echo) as srv:
        seen = []
        result = echoload.closed_loop(srv.address, 5, duration_s=0.2, on_connected=lambda: seen.append(1) or "x")
    assert result.connected == 5 and not result.errors
    assert result.round_trips > 0 and result.per_second > 0
    assert result.sample == "x" and seen == [1]
    assert result.mean_latency_ms > 0


def test_one_load_client_serves_several_runs() -> None:
    with echoload.LoadClient() as client, aio.AsyncioServer("echo") as srv:
        first = client.run(srv.address, 3, duration_s=0.1)
        second = client.run(srv.address, 50, duration_s=0.1, payload=1000)
    assert (first.connected, second.connected) == (3, 50)
    assert first.round_trips > 0 and second.round_trips > 0 and not first.errors + second.errors
    assert client.child.poll() is not None  # exited with the block


def test_nobody_listening_is_reported_not_raised() -> None:
    with socket.socket() as s:  # a port that is bound but not listening refuses connections
        s.bind(("127.0.0.1", 0))
        result = echoload.closed_loop(s.getsockname(), 2, duration_s=0.1)
    assert result.connected == 0 and result.round_trips == 0
    assert any("ConnectionRefusedError" in e for e in result.errors), result.errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connections": 0}, r"^connections must be an int in 1-5000, got 0$"),
        ({"connections": True}, r"^connections must be an int"),
        ({"connections": 1, "duration_s": 0}, r"^duration_s must be a number of seconds in \(0, 10\], got 0$"),
        ({"connections": 1, "payload": 70000}, r"^payload must be an int in 1-65536 bytes, got 70000$"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        echoload.closed_loop(("127.0.0.1", 9), **kwargs)
