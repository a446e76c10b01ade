"""Plausible wrong answers to lesson 13's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket
import struct


# %% Exercise 1: `except OSError` catches the timeout too (TimeoutError is an OSError)
def read_reply(sock: socket.socket, timeout_s: float) -> bytes | str:
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(4096)
    except OSError:
        return "closed"
    return data if data else "closed"


# %% Exercise 2: recv(length) asks for the whole announced body, and checks the size too late
def read_bounded(sock: socket.socket, max_size: int) -> tuple[int, bytes]:
    length, kind = struct.unpack("!II", h.framing.readn(sock, 8))  # noqa: F821 - the lesson's `h`
    body = sock.recv(length, socket.MSG_WAITALL)
    if length > max_size:
        raise ValueError(f"peer announced {length} bytes, over the limit of {max_size}")
    return kind, body


# %% Exercise 3: one recv() of 64 KiB, whatever room is left in the buffer
def read_some(sock: socket.socket, buffer: bytearray, limit: int) -> int:
    data = sock.recv(65536)
    buffer += data
    return len(data)
