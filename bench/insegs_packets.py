"""Tcp.InSegs counts packets, TCP_INFO's segs_in counts segments: how far apart over loopback?

Lesson 06 compares the namespace counters of /proc/net/snmp with what our two sockets count
in TCP_INFO. A loopback packet carries up to 64 KiB whole (GSO); when the sender's segment
size is smaller (Linux holds it to half the largest window the receiver offered), one packet
holds several segments, and Tcp.InSegs, which counts each arriving packet once, falls below
the sockets' segs_in. This script sends 1 MiB to receivers with smaller and smaller receive
buffers and prints, per transfer, the sender's segment size, Tcp.InSegs and segs_in with
their ratio (the default buffer is the baseline), and the lesson's lower bound on packets:
one per segment without data plus one per 64 KiB of data received.

    .venv/bin/python bench/insegs_packets.py [--size-kib 1024]

Tcp.InSegs belongs to the whole network namespace: other traffic meanwhile adds to it.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import counters_diff, tcp_info  # noqa: E402


def transfer(size: int, rcvbuf: int | None) -> tuple[int, int, int, int]:
    """(sender's snd_mss, Tcp.InSegs increase, segs_in of both sockets, packets-in lower bound)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if rcvbuf is not None:  # before connect(): the accepted socket and its first window inherit it
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        infos = {}

        def receive() -> None:
            conn, _ = listener.accept()
            with conn:
                while conn.recv(65536):
                    pass
                conn.shutdown(socket.SHUT_WR)
                infos["server"] = tcp_info(conn)

        with counters_diff() as diff:
            thread = threading.Thread(target=receive)
            thread.start()
            with socket.create_connection(listener.getsockname()) as client:
                client.sendall(bytes(size))
                client.shutdown(socket.SHUT_WR)
                client.recv(1)  # the server's FIN: everything has arrived
                thread.join()
                infos["client"] = tcp_info(client)
    ends = list(infos.values())
    packets = sum(i.segs_in - i.data_segs_in + -(-i.bytes_received // 65536) for i in ends)
    return infos["client"].snd_mss, diff["Tcp.InSegs"], sum(i.segs_in for i in ends), packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kib", type=int, default=1024)
    args = parser.parse_args()
    print(f"{args.size_kib} KiB over loopback, per receive buffer:")
    print(f"{'SO_RCVBUF':>10} {'snd_mss':>8} {'InSegs':>7} {'segs_in':>8} {'segs/packet':>12} {'packets >=':>11}")
    for rcvbuf in (None, 65536, 16384, 4096):
        mss, insegs, segs_in, packets = transfer(args.size_kib * 1024, rcvbuf)
        label = "default" if rcvbuf is None else str(rcvbuf)
        print(f"{label:>10} {mss:8} {insegs:7} {segs_in:8} {segs_in / max(insegs, 1):12.2f} {packets:11}")


if __name__ == "__main__":
    main()
