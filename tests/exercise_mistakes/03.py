"""Plausible wrong answers to lesson 03's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket


# %% Exercise 1: one send() and hope it took everything (it takes what fits)
def writen(sock: socket.socket, data: bytes) -> list[int]:
    return [sock.send(data)]


# %% Exercise 2: one recv_into() and hope it filled the buffer (it returns what has arrived)
def readn_into(sock: socket.socket, buf: memoryview) -> int:
    sock.recv_into(buf)
    return 1


# %% Exercise 3: MSG_DONTWAIT without MSG_PEEK (the bytes it counts are gone)
def waiting(sock: socket.socket) -> int:
    try:
        return len(sock.recv(65536, socket.MSG_DONTWAIT))
    except BlockingIOError:
        return 0
