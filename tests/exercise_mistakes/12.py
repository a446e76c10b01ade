"""Plausible wrong answers to lesson 12's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket
import struct


# %% Exercise 1: at most one message per call (one recv() often brings several)
def take_messages(buffer: bytearray) -> list[tuple[int, bytes]]:
    if len(buffer) >= 8:
        length, kind = struct.unpack_from("!II", buffer)
        if len(buffer) >= 8 + length:
            body = bytes(buffer[8:8 + length])
            del buffer[:8 + length]
            return [(kind, body)]
    return []


# %% Exercise 2: the file object's readline() reads ahead into its own buffer
def recv_line(sock: socket.socket, limit: int) -> bytes:
    with sock.makefile("rb") as f:
        line = f.readline(limit + 1)
    if not line:
        raise EOFError("peer closed")
    if not line.endswith(b"\n"):
        raise ValueError(f"no newline in {len(line)} bytes")
    return line.rstrip(b"\r\n")


# %% Exercise 3: trust the type as it reads in network order
def read_typed(sock: socket.socket) -> tuple[int, bytes]:
    length, kind = struct.unpack("!II", readn(sock, 8))  # noqa: F821 - readn() is the lesson's own
    return kind, readn(sock, length)  # noqa: F821
