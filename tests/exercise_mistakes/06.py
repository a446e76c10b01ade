"""Plausible wrong answers to lesson 06's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import os
import socket

import helpers as h


# %% Exercise 1: any row with the port as its local port, the last one found: the server's
# accepted connection comes after the LISTEN row in /proc/net/tcp, and shares its local port
def who_listens(port: int) -> tuple[int, int]:
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port:
                inode = cols[9]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid), int(fd)
        except OSError:
            continue
    return (0, 0)


# %% Exercise 2: Tcp.CurrEstab, the connections open now, is not a count of connect() calls
def count_active_opens(address: tuple[str, int], n: int) -> tuple[int, int]:
    def established() -> int:
        with open("/proc/net/snmp") as f:
            tcp = [line.split() for line in f if line.startswith("Tcp:")]
        return int(dict(zip(tcp[0], tcp[1]))["CurrEstab"])

    before = established()
    for _ in range(n):
        socket.create_connection(address).close()
    return before, established()


# %% Exercise 3: the address read as network byte order, but /proc prints it in host order
def parse_tcp_row(line: str) -> tuple[str, int, int, tuple[str, int], tuple[str, int]]:
    def address(text: str) -> tuple[str, int]:
        ip, port = text.split(":")
        return socket.inet_ntoa(bytes.fromhex(ip)), int(port, 16)

    cols = line.split()
    send_q, recv_q = (int(x, 16) for x in cols[4].split(":"))
    return h.TcpState(int(cols[3], 16)).name, recv_q, send_q, address(cols[1]), address(cols[2])
