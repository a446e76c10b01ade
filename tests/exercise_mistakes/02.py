"""Plausible wrong answers to lesson 02's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket


# %% Exercise 1: connect_ex() and a made-up word instead of the errno's name
def knock(address: tuple[str, int]) -> str:
    with socket.socket() as sock:
        return "connected" if sock.connect_ex(address) == 0 else "refused"


# %% Exercise 2: a plain blocking connect() (it waits through SYN retransmissions)
def connect_within(sock: socket.socket, address: tuple[str, int], timeout_s: float) -> str:
    sock.connect(address)
    return "connected"


# %% Exercise 3: listen(room), as if the backlog were the queue's exact size
def make_listener(room: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(room)
    return sock
