"""Plausible wrong answers to lesson 07's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket

import helpers as h


# %% Exercise 1: SO_REUSEADDR set after bind(), when the kernel has already refused the port
def listen_on(port: int, reuse: bool) -> socket.socket:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


# %% Exercise 2: assume one end always waits (a RST leaves no TIME_WAIT at all)
def waiting_ends(a: tuple[str, int], b: tuple[str, int]) -> list[tuple[str, int]]:
    return [a] if h.socket_table(local=a, remote=b) else [b]


# %% Exercise 3: no SO_REUSEADDR, so bind() refuses a port a TIME_WAIT still holds
def connect_from(port: int, server: tuple[str, int]) -> socket.socket:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        sock.connect(server)
    except OSError:
        sock.close()
        raise
    return sock
