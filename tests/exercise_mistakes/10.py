"""Plausible wrong answers to lesson 10's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket
import struct

import helpers as h


# %% Exercise 1: TCP_QUICKACK on the client (the option belongs to the side that delays its ACK)
def ask_nodelay(sock: socket.socket, body: bytes) -> bytes:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    sock.sendall(struct.pack("!I", len(body)))
    sock.sendall(body)
    return h.framing.readn(sock, 2)


# %% Exercise 2: sendall() twice is still two writes (Nagle holds the second)
def ask_whole(sock: socket.socket, body: bytes) -> bytes:
    sock.sendall(struct.pack("!I", len(body)))
    sock.sendall(body)
    return h.framing.readn(sock, 2)


# %% Exercise 3: cwnd x MSS alone (forgets the peer's window)
def in_flight_limit(sock: socket.socket) -> int:
    info = h.tcp_info(sock)
    return info.snd_cwnd * info.snd_mss
