"""Is helpers.loadgen the bottleneck? Its requests per second against wrk's, on the same server.

Both load the same HTTP server (helpers.c10k's single epoll reactor, in a child process)
with the same number of keep-alive connections for the same time, one after the other,
in this one run; the script prints both rates and their ratio. wrk is written in C; if
our Python workers reach a good fraction of its rate, the server, not the client, sets
the pace of the lesson's measurements.

    python bench/loadgen.py [--connections 64] [--seconds 2] [--model epoll]

wrk comes from Debian's package (`apt-get install wrk`); this script installs nothing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

from helpers import c10k
from helpers.loadgen import LoadGenerator


def wrk_rate(address: tuple[str, int], connections: int, seconds: int, threads: int) -> float:
    """Requests per second wrk measured (its 'Requests/sec:' line)."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"http://{address[0]}:{address[1]}/"],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"no 'Requests/sec:' in wrk's output:\n{out}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="load worker processes (and wrk threads)")
    parser.add_argument("--model", default="epoll", choices=[m for m in c10k.MODELS if m not in ("fork",)])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), then run this again.")
        return 2
    if args.connections < args.workers:
        parser.error("--connections must be at least --workers (wrk needs one connection per thread)")
    with c10k.start_model(args.model, "http", in_child=True) as server:
        theirs = wrk_rate(server.address, args.connections, args.seconds, args.workers)
        with LoadGenerator(workers=args.workers) as load:
            result = load.run(server.address, connections=args.connections, duration_s=args.seconds, service="http")
    if not result.complete:
        print(f"our load generator lost requests: {result}", file=sys.stderr)
        return 1
    ours = result.per_second
    print(f"server: {c10k.MODELS[args.model]} (HTTP), {args.connections} connections, {args.seconds} s each")
    print(f"wrk ({args.workers} threads):                {theirs:10,.0f} requests/s")
    print(f"helpers.loadgen ({args.workers} processes):  {ours:10,.0f} requests/s, p50 {result.p50_ms:.2f} ms, "
          f"p99 {result.p99_ms:.2f} ms")
    print(f"ratio loadgen / wrk: {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
