"""Plausible wrong answers to lesson 14's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import select
import socket


# %% Exercise 1: treats readable as "bytes for me": a client's end of file stays in the list, readable for ever
def echo_until_quiet(listener: socket.socket, quiet_s: float) -> int:
    conns, served = [], 0
    while True:
        readable, _, _ = select.select([listener, *conns], [], [], quiet_s)
        if not readable:
            for conn in conns:
                conn.close()
            return served
        for sock in readable:
            if sock is listener:
                conns.append(listener.accept()[0])
                served += 1
            elif data := sock.recv(65536):
                sock.sendall(data)


# %% Exercise 2: a socket is always writable (it is not, once the peer stops reading)
def ready(sock: socket.socket) -> tuple[bool, bool]:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable), True


# %% Exercise 3: the first end of file ends the relay (the other direction was still open)
def relay(a: socket.socket, b: socket.socket) -> tuple[int, int]:
    counts, other = {a: 0, b: 0}, {a: b, b: a}
    while True:
        for src in select.select([a, b], [], [])[0]:
            data = src.recv(65536)
            if not data:
                other[src].shutdown(socket.SHUT_WR)
                return counts[a], counts[b]
            other[src].sendall(data)
            counts[src] += len(data)
