"""Plausible wrong answers to lesson 08's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket


# %% Exercise 1: SHUT_RDWR instead of SHUT_WR (the reading side is shut too)
def request_until_eof(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    sock.shutdown(socket.SHUT_RDWR)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# %% Exercise 2: read the bytes, then close (nothing is unread: a FIN, not a reset)
def close_unread(sock: socket.socket) -> int:
    waiting = len(sock.recv(65536))
    sock.close()
    return waiting


# %% Exercise 3: shutdown() then close() at once (the pipelined request is still unread)
def answer_and_close(sock: socket.socket, reply: bytes) -> int:
    sock.sendall(reply)
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    return len(b"GET /b\n")
