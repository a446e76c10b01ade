"""Ready-made connection handlers for the servers in ``servers``.

Each stream handler takes one connected socket, runs until the peer closes (or the server
stops and shuts the socket down), and returns what it observed, which the server puts on
its ``results`` queue. A learner can read each in a few lines: they are the server halves
the lessons do not want to spell out again.
"""

from __future__ import annotations

import socket

__all__ = ["echo", "discard", "pong", "STREAM_BEHAVIOURS"]

CHUNK = 64 * 1024  # bytes per recv(): large enough not to be the bottleneck on loopback


def echo(conn: socket.socket) -> int:
    """Send back everything received until EOF; return the number of bytes echoed."""
    total = 0
    while data := conn.recv(CHUNK):
        conn.sendall(data)
        total += len(data)
    return total


def discard(conn: socket.socket) -> int:
    """Read and drop everything until EOF (like RFC 863's discard); return the byte count."""
    total = 0
    while data := conn.recv(CHUNK):
        total += len(data)
    return total


def pong(conn: socket.socket) -> int:
    """Answer each line b'PING...' with b'PONG...' (a heartbeat responder); return how many."""
    answered = 0
    with conn.makefile("rb") as lines:
        for line in lines:
            if line.startswith(b"PING"):
                conn.sendall(b"PONG" + line[4:])
                answered += 1
    return answered


#: Handlers a child-process server can run by name (see servers.ProcessServer).
STREAM_BEHAVIOURS = {"echo": echo, "discard": discard, "pong": pong, "hold": None}
