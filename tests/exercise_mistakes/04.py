"""Plausible wrong answers to lesson 04's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket


# %% Exercise 1: a small receive buffer, as for a line of text (a longer datagram is cut, the rest lost)
def udp_echo(sock: socket.socket, count: int) -> list:
    served = []
    for _ in range(count):
        data, address = sock.recvfrom(1024)
        sock.sendto(data, address)
        served.append(address)
    return served


# %% Exercise 2: a timeout, but no second try (the first request was lost)
def ask(sock: socket.socket, server: tuple, request: bytes, timeout_s: float, tries: int) -> bytes:
    sock.settimeout(timeout_s)
    sock.sendto(request, server)
    reply, _ = sock.recvfrom(65535)
    return reply


# %% Exercise 3: any ACK is taken as this message's (a late ACK for the previous one moves it on)
def send_reliably(sock: socket.socket, dest: tuple, messages: list, rto_s: float) -> int:
    sent = 0
    sock.settimeout(rto_s)
    for seq, payload in enumerate(messages):
        while True:
            sock.sendto(h.reliable_udp.encode_data(seq, payload), dest)  # noqa: F821 - h is the lesson's
            sent += 1
            try:
                sock.recv(64)
                break
            except TimeoutError:
                pass
    return sent
