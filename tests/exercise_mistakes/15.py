"""Plausible wrong answers to lesson 15's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import select
import socket


# %% Exercise 1: accepts until EAGAIN but trusts every connection accept() hands out (one was reset)
def accept_ready(listener: socket.socket) -> list[socket.socket]:
    conns = []
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return conns
        conn.setblocking(False)
        conns.append(conn)


# %% Exercise 2: takes POLLOUT for success, without reading SO_ERROR (a refused connect is writable too)
def connect_nonblocking(address: tuple[str, int], timeout_s: float) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex(address)
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    if not poller.poll(timeout_s * 1000):
        sock.close()
        raise TimeoutError(f"no answer within {timeout_s} s")
    return sock


# %% Exercise 3: registers POLLOUT once and never takes it back (poll() then returns at once, for ever)
def exchange(sock: socket.socket, poller, message: bytes) -> bytes:
    out, echo = memoryview(message), bytearray()
    poller.modify(sock, select.POLLIN | select.POLLOUT)
    while len(echo) < len(message):
        for _, events in poller.poll():
            if events & select.POLLOUT and out:
                out = out[sock.send(out):]
            if events & select.POLLIN:
                echo += sock.recv(65536)
    return bytes(echo)
