"""How often one look at a socket table gets our own socket wrong (missing, or listed twice)
while another process opens and closes sockets, for the course's table helpers against a
plain read of the /proc/net file measured in the same run. No assertions: it prints.

A /proc/net table is written a page per read() call, and each page finds its place again by
position, so sockets coming and going between pages shift the rows: one read can skip a
socket or list it twice. ``unix.unix_table`` keeps each socket once; ``udp_ports.udp_table``
and ``observe.socket_table`` (given a port) ask over netlink, as ``ss`` does.

    .venv/bin/python bench/table_churn.py [--trials 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from helpers import observe, udp_ports, unix


def churn(stop: multiprocessing.synchronize.Event) -> None:
    """Open and close TCP connections, UDP sockets and socketpairs until `stop`, beside 300
    idle UDP sockets (a table several pages long), as other programs on a shared node do."""
    idle = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]
    with socket.create_server(("127.0.0.1", 0), backlog=128) as server:
        for s in idle:
            s.bind(("127.0.0.1", 0))
        while not stop.is_set():
            clients = [socket.create_connection(server.getsockname()) for _ in range(20)]
            accepted = [server.accept()[0] for _ in clients]
            datagram = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
            for s in datagram:
                s.bind(("127.0.0.1", 0))
            pairs = [s for _ in range(20) for s in socket.socketpair()]
            for s in clients + accepted:  # RST, not FIN: no TIME_WAIT piles up
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            for s in clients + accepted + datagram + pairs:
                s.close()
    for s in idle:
        s.close()


def tcp_trial() -> tuple[int, int]:
    """Rows for our half-open connection (TCP_DEFER_ACCEPT holds it in SYN_RECV): raw read, helper."""
    with socket.socket() as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        with socket.create_connection(listener.getsockname()) as client:
            time.sleep(0.002)
            ours = (listener.getsockname(), client.getsockname())
            raw = observe.parse_proc_tcp(Path("/proc/net/tcp").read_text())
            helper = observe.socket_table(port=ours[0][1])
            return tuple(sum((e.local, e.remote) == ours for e in rows) for rows in (raw, helper))


def udp_trial() -> tuple[int, int]:
    """Rows for our UDP socket: raw read of /proc/net/udp, udp_table()."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        inode = os.fstat(sock.fileno()).st_ino
        raw = udp_ports._parse(Path("/proc/net/udp").read_text())
        helper = udp_ports.udp_table(sock.getsockname()[1])
        return tuple(sum(e.inode == inode for e in rows) for rows in (raw, helper))


def unix_trial() -> tuple[int, int]:
    """Rows for our Unix listener: raw read of /proc/net/unix, unix_table()."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(f"\0course-table-churn-{os.getpid()}")
        sock.listen()
        inode = os.fstat(sock.fileno()).st_ino
        raw = unix.parse_proc_net_unix(Path("/proc/net/unix").read_bytes())
        helper = unix.unix_table()
        return tuple(sum(e.inode == inode for e in rows) for rows in (raw, helper))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="looks per table (default 1000)")
    args = parser.parse_args()
    if not 1 <= args.trials <= 100_000:
        parser.error("--trials must be 1..100000")
    trials: dict[str, Callable[[], tuple[int, int]]] = {
        "tcp (SYN_RECV)": tcp_trial, "udp": udp_trial, "unix": unix_trial}
    stop = multiprocessing.Event()
    other = multiprocessing.Process(target=churn, args=(stop,), daemon=True)
    other.start()
    try:
        time.sleep(0.5)  # let the churn get going
        print(f"{args.trials} looks per table, while another process opens and closes sockets")
        print(f"{'table':<16}{'/proc read wrong':>18}{'helper wrong':>14}{'helper/read':>13}")
        for name, trial in trials.items():
            wrong = [0, 0]
            for _ in range(args.trials):
                for i, rows in enumerate(trial()):
                    wrong[i] += rows != 1
            ratio = f"{wrong[1] / wrong[0]:.2f}" if wrong[0] else "-"
            print(f"{name:<16}{wrong[0]:>18}{wrong[1]:>14}{ratio:>13}")
    finally:
        stop.set()
        other.join(10)
        if other.is_alive():
            other.kill()
            other.join()


if __name__ == "__main__":
    main()
