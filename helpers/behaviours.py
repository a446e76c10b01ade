"""Ready-made connection handlers for the servers in ``servers``.

Each stream handler takes one connected socket, runs until the peer closes (or the server
stops and shuts the socket down), and returns what it observed, which the server puts on
its ``results`` queue. A learner can read each in a few lines: they are the server halves
the lessons do not want to spell out again. ``check_connection()`` refuses, before any
I/O, what a handler cannot serve (a closed, datagram or listening socket).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

__all__ = ["echo", "discard", "pong", "answer_each", "QUICKACK_MODES", "STREAM_BEHAVIOURS", "check_connection"]

CHUNK = 64 * 1024  # bytes per recv(): large enough not to be the bottleneck on loopback
MAX_PING_LINE = 64 * 1024  # bytes pong() reads looking for a newline before it gives up on the peer


def check_connection(conn: object, who: str) -> None:
    """Refuse, before any I/O, what a handler named `who` cannot serve.

    TypeError for something that is not a socket; ValueError for a closed socket, a
    datagram socket (recv() on an unconnected UDP socket would wait forever) or a
    listening socket (it has no peer; accept() one of its connections instead).
    """
    if not isinstance(conn, socket.socket):
        raise TypeError(f"{who}() needs a connected stream socket, got {type(conn).__name__} {conn!r}")
    if conn.fileno() == -1:
        raise ValueError(f"{who}() needs an open socket; this one is closed")
    if conn.type != socket.SOCK_STREAM:
        kind = getattr(conn.type, "name", conn.type)
        raise ValueError(f"{who}() needs a connected stream (TCP) socket, got a {kind} socket")
    if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError(f"{who}() needs a connected socket, got a listening one: pass what accept() returns")


def echo(conn: socket.socket) -> int:
    """Send back everything received until EOF; return the number of bytes echoed."""
    check_connection(conn, "echo")
    total = 0
    while data := conn.recv(CHUNK):
        conn.sendall(data)
        total += len(data)
    return total


def discard(conn: socket.socket) -> int:
    """Read and drop everything until EOF (like RFC 863's discard); return the byte count."""
    check_connection(conn, "discard")
    total = 0
    while data := conn.recv(CHUNK):
        total += len(data)
    return total


def pong(conn: socket.socket) -> int:
    """Answer each line b'PING...' with b'PONG...' (a heartbeat responder); return how many.

    A line longer than MAX_PING_LINE bytes ends the conversation: without the bound a peer
    that never sends a newline would make readline() buffer its bytes without end (lesson 13).
    """
    check_connection(conn, "pong")
    answered = 0
    with conn.makefile("rb") as lines:
        while line := lines.readline(MAX_PING_LINE + 1):
            if len(line) > MAX_PING_LINE:
                break  # the caller's close() (or the server's) ends the connection
            if line.startswith(b"PING"):
                conn.sendall(b"PONG" + line[4:])
                answered += 1
    return answered


QUICKACK_MODES = ("never", "once", "every")


def answer_each(size: int, *, reply: bytes = b"ok", quickack: str = "never") -> Callable[[socket.socket], int]:
    """A handler that reads requests of `size` bytes and sends `reply` after each whole one.

    It answers only once the last byte of a request is in, as a server parsing whole
    requests does; with the client writing a request in pieces that is the write-write-read
    pattern of lesson 10. `quickack` sets TCP_QUICKACK (man 7 tcp): "never"; "once", right
    after accept(); or "every", after every recv() (the option is not permanent, so it must
    be set again). The handler returns how many requests it answered. TypeError for a size
    that is no int or a reply that is no bytes; ValueError for a size outside 1-16 MiB, an
    empty reply or another quickack mode.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be a request size in bytes (an int), got {type(size).__name__} {size!r}")
    if not 1 <= size <= 16 << 20:
        raise ValueError(f"size must be a request size in bytes, 1-16 MiB, got {size!r}")
    if not isinstance(reply, bytes):
        raise TypeError(f"reply must be bytes, got {type(reply).__name__} {reply!r}")
    if not reply:
        raise ValueError(f"reply must be non-empty bytes, got {reply!r}")
    if quickack not in QUICKACK_MODES:
        raise ValueError(f"quickack must be one of {QUICKACK_MODES}, got {quickack!r}")

    def handler(conn: socket.socket) -> int:
        check_connection(conn, "answer_each")
        if quickack == "once":
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        answered = got = 0
        try:
            while data := conn.recv(CHUNK):
                if quickack == "every":
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # ACK what we have, now
                got += len(data)
                while got >= size:  # every whole request gets its answer (pipelined ones too)
                    got -= size
                    conn.sendall(reply)
                    answered += 1
        except (ConnectionResetError, BrokenPipeError):  # the client closed with answers unread: a reset
            pass  # (lesson 08) ends the conversation as EOF does
        return answered

    return handler


#: Handlers a child-process server can run by name (see servers.ProcessServer).
STREAM_BEHAVIOURS = {"echo": echo, "discard": discard, "pong": pong, "hold": None}
