"""Plausible wrong answers to lesson 16's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import select
import socket


# %% Exercise 1: one recv() per report, the level-triggered habit (the rest is never reported again)
def drain(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


# %% Exercise 2: EPOLLOUT registered with the first write and never taken off (the loop spins)
def send_or_queue(ep: select.epoll, sock: socket.socket, out: bytearray, data: bytes) -> int:
    out += data
    ep.modify(sock, select.EPOLLIN | select.EPOLLOUT)
    return 0


def on_writable(ep: select.epoll, sock: socket.socket, out: bytearray) -> int:
    try:
        sent = sock.send(out)
    except BlockingIOError:
        return 0
    del out[:sent]
    return sent


# %% Exercise 3: EPOLLIN taken for "closed" (it also means "data to read")
def closed_by_peer(sock: socket.socket) -> bool:
    with select.epoll() as ep:
        ep.register(sock, select.EPOLLIN)
        return bool(ep.poll(0))
