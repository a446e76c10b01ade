"""Plausible wrong answers to lesson 05's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import os
import socket


# %% Exercise 1: a fixed abstract name (fine once; the second program, or call, finds it taken)
def listen_private() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0lesson05-echo")
    sock.listen()
    return sock


# %% Exercise 2: trust whoever connects first (same user, so the uid alone cannot tell them apart)
def accept_only(listener: socket.socket, pid: int) -> bytes:
    conn, _ = listener.accept()
    with conn:
        return conn.recv(1024)


# %% Exercise 3: send the file's name instead of the open file (a name can vanish; a descriptor cannot)
def pass_file(sock: socket.socket, path: str) -> int:
    sock.sendall(os.fsencode(path))
    return len(path)
