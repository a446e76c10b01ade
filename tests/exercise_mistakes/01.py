"""Plausible wrong answers to lesson 01's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket
import struct


# %% Exercise 1: everything in network byte order, sa_family too (the kernel reads it in host order)
def pack_sockaddr_in(host: str, port: int) -> bytes:
    return struct.pack("!HH4s8x", socket.AF_INET, port, socket.inet_aton(host))


# %% Exercise 2: bind() without listen() (the kernel takes no connections for the socket)
def open_listener(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


# %% Exercise 3: the netmask read in the machine's own byte order (on little-endian x86 the
# one-bits land at the wrong end, so a real netmask looks non-contiguous)
def netmask_to_prefix(mask: str) -> int:
    value = struct.unpack("I", socket.inet_aton(mask))[0]
    n = bin(value).count("1")
    if value != (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF:
        raise ValueError(f"{mask} is not a netmask")
    return n


def prefix_to_netmask(n: int) -> str:
    return socket.inet_ntoa(struct.pack("I", (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF))
