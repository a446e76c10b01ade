"""Does helpers.TCPServer distort what lessons measure? Round-trip time of a 64-byte echo
through helpers.TCPServer against the stdlib's socketserver.ThreadingTCPServer, both on
127.0.0.1 and measured in this same run; prints the medians and their ratio.

    .venv/bin/python bench/server_overhead.py [--rounds 5000]
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import statistics
import threading
import time

from helpers import TCPServer
from helpers.behaviours import echo


class _StdlibEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        echo(self.request)


def round_trips(address: tuple[str, int], rounds: int, size: int = 64) -> list[float]:
    """Round-trip times in microseconds of `rounds` echoes of `size` bytes on one connection."""
    payload = b"x" * size
    times = []
    with socket.create_connection(address) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            started = time.perf_counter()
            c.sendall(payload)
            got = 0
            while got < size:
                got += len(c.recv(size - got))
            times.append((time.perf_counter() - started) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _StdlibEcho) as stdlib:
        thread = threading.Thread(target=stdlib.serve_forever, daemon=True)
        thread.start()
        try:
            base = statistics.median(round_trips(stdlib.server_address, args.rounds))
        finally:
            stdlib.shutdown()
            thread.join()
    with TCPServer(echo) as ours:
        mine = statistics.median(round_trips(ours.address, args.rounds))
    print(f"median echo round trip, {args.rounds} rounds of 64 B on 127.0.0.1")
    print(f"  socketserver.ThreadingTCPServer (baseline): {base:8.1f} us")
    print(f"  helpers.TCPServer:                          {mine:8.1f} us")
    print(f"  ratio helpers / baseline:                   {mine / base:8.2f}x")


if __name__ == "__main__":
    main()
