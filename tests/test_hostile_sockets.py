"""Random bytes from real sockets against the lesson servers not covered by test_hostile_bytes.py.

The C10K models of lesson 17 (every in-process model, and the process models in children),
the asyncio servers of lesson 18, and the thread-per-connection handlers (behaviours and the
http service on ``servers.TCPServer``): each takes
hostile clients over loopback (seeded random bytes in random chunks, a huge request head,
half a request then FIN, a reset), then a polite client must be served, ``stop()`` must
report no server error (a peer's garbage is the peer's fault: that connection is closed,
the server goes on), and the fds must return to where they were. One documented exception:
``servers.TCPServer`` reports every handler exception at ``stop()``, a peer's reset included
(lessons that reset on purpose catch it in their handler), so there only resets may show.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from helpers import aio, behaviours, c10k, services
from helpers.servers import ServerError, TCPServer

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_fds(baseline: int, timeout_s: float = 5.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (n := _fds()) > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    return n


def _hostile_clients(address: tuple[str, int], seed: int, service: str, n: int = 16) -> None:
    """n clients, each misbehaving in its own way, all at once, then gone."""
    rng = random.Random(seed)
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(address, timeout=5)
            socks.append(s)
            kind = i % 4
            if kind == 0:  # random bytes in random chunks
                for _ in range(rng.randrange(1, 6)):
                    s.sendall(rng.randbytes(rng.randrange(1, 3000)))
            elif kind == 1:  # a head that never ends (http) or a flood of NUL and LF (echo)
                s.sendall(b"GET /" + b"A" * 70_000 if service == "http" else b"\0\n" * 20_000)
            elif kind == 2:  # half a request, then FIN
                s.sendall(HTTP_REQUEST[: rng.randrange(1, len(HTTP_REQUEST))])
                s.shutdown(socket.SHUT_WR)
            else:  # a few bytes, then a reset (SO_LINGER {1, 0})
                s.sendall(rng.randbytes(rng.randrange(1, 200)))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.1)  # let the server read some of it
    finally:
        for s in socks:
            s.close()


def _polite(address: tuple[str, int], service: str) -> None:
    with socket.create_connection(address, timeout=5) as s:
        if service in ("discard", "pong"):
            s.sendall(b"PING 1\n" if service == "pong" else b"x" * 1000)
            if service == "pong":
                assert s.recv(100) == b"PONG 1\n"
            return
        if service == "echo":
            s.sendall(b"still there?")
            got = b""
            while len(got) < 12:
                chunk = s.recv(100)
                assert chunk, "the server closed the polite client's connection"
                got += chunk
            assert got == b"still there?"
        else:
            s.sendall(HTTP_REQUEST)
            got = s.recv(1000)
            assert got.startswith(b"HTTP/1.1 200 OK"), got


def _c10k(model: str, service: str) -> Callable[[], Any]:
    return lambda: c10k.start_model(model, service)


SERVERS: list[tuple[str, str, Callable[[], Any]]] = [
    *[(f"c10k {m} {s}", s, _c10k(m, s)) for m in c10k.MODELS for s in c10k.SERVICES],
    *[(f"aio AsyncioServer {s}", s, lambda s=s: aio.AsyncioServer(s)) for s in ("echo", "http")],
    ("services serve_blocking http on TCPServer", "http",
     lambda: TCPServer(lambda conn: services.serve_blocking(conn, "http"))),
    ("behaviours echo on TCPServer", "echo", lambda: TCPServer(behaviours.echo)),
    ("behaviours discard on TCPServer", "discard", lambda: TCPServer(behaviours.discard)),
    ("behaviours pong on TCPServer", "pong", lambda: TCPServer(behaviours.pong)),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("label", "service", "start"), SERVERS, ids=[s[0] for s in SERVERS])
def test_server_survives_hostile_clients(label: str, service: str, start: Callable[[], Any]) -> None:
    baseline = _fds()
    server = start()
    try:
        address = tuple(server.address)
        for seed in range(3):
            _hostile_clients(address, seed, service)
            _polite(address, service)
    finally:
        try:
            server.stop()  # raises if a server thread or process failed
        except ServerError as exc:  # TCPServer: handler exceptions, the peers' resets included
            causes = [type(e) for e in exc.errors]
            assert isinstance(server, TCPServer) and set(causes) <= {ConnectionResetError, BrokenPipeError}, exc
    assert _wait_fds(baseline) <= baseline, f"{label}: fds {baseline} -> {_fds()}"
