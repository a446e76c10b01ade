"""Plausible wrong answers to lesson 11's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket


# %% Exercise 1: sendto()/recvfrom() on the unconnected socket (never told of the ICMP error)
def udp_probe(sock: socket.socket, address: tuple[str, int], timeout_s: float) -> str:
    sock.settimeout(timeout_s)
    try:
        sock.sendto(b"ping", address)
        sock.recvfrom(2048)
        return "open"
    except ConnectionRefusedError:
        return "closed"
    except TimeoutError:
        return "silent"


# %% Exercise 2: catch the refusal and move on (the refused call sent nothing: that datagram is lost)
def send_all(sock: socket.socket, datagrams: list[bytes]) -> int:
    refused = 0
    for datagram in datagrams:
        try:
            sock.send(datagram)
        except ConnectionRefusedError:
            refused += 1
    return refused


# %% Exercise 3: connect() to the server's address first (its answer comes from another port)
def fetch(sock: socket.socket, server: tuple[str, int]) -> bytes:
    sock.connect(server)
    sock.send(b"GET")
    part1 = sock.recv(2048)
    sock.send(b"ACK")
    return part1 + sock.recv(2048)
