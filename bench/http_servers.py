"""HTTP servers under wrk: the capstone reactor against asyncio and ThreadingHTTPServer.

Each server runs in its own process(es) (helpers.core.spawn); wrk (a C load
generator) drives it with keep-alive GET / requests; we print requests per second,
p50/p99 latency as wrk measured them, and the server's CPU time per request (user +
system, from /proc/PID/stat, summed over every process of the server), then the same as
ratios against the asyncio Protocol server running the same HTTP session, all measured
in this one run. On a 2-core machine wrk itself needs most of a core, so CPU per request
is the fairer comparison; req/s is capped by the client. No assertions: it prints.

    python bench/http_servers.py [--duration 5] [--connections 100] [--threads 1]

Needs wrk: ``apt-get install wrk`` (Debian/Ubuntu). (Not named http.py: a script's folder
comes first on sys.path, and a bench/http.py would hide the stdlib's http package.)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.reactor.processes import ReusePortGroup, ServerProcess, start_server_process  # noqa: E402

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    errors: str


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of every thread of these processes (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS_PER_S


def run_wrk(port: int, duration_s: float, connections: int, threads: int) -> tuple[float, float, float, str]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration_s + 30, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    errors = "; ".join(line.strip() for line in out.splitlines() if "Socket errors" in line or "Non-2xx" in line)
    return rps, pct("50"), pct("99"), errors or "none"


def measure(name: str, port: int, pids: list[int], args: argparse.Namespace) -> Row:
    before = cpu_seconds(pids)
    rps, p50, p99, errors = run_wrk(port, args.duration, args.connections, args.threads)
    cpu = cpu_seconds(pids) - before
    requests = rps * args.duration
    print(f"  {name}: {rps:,.0f} req/s, server CPU {cpu:.2f} s", file=sys.stderr)
    return Row(name, rps, p50, p99, cpu / requests * 1e6 if requests else float("nan"), errors)


def median_row(rows: list[Row]) -> Row:
    """req/s and latencies of the round with the median req/s; CPU per request: the median
    over all rounds (it is the steadier figure on a busy machine)."""
    ranked = sorted(rows, key=lambda r: r.rps)
    mid = ranked[len(ranked) // 2]
    cpu = sorted(r.cpu_us_per_req for r in rows)[len(rows) // 2]
    return Row(mid.name, mid.rps, mid.p50_ms, mid.p99_ms, cpu, mid.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=100, help="wrk -c (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; servers take turns in each (default 3)")
    parser.add_argument("--sub-reactors", type=int, default=2, help="sub-reactor threads for the main+sub mode")
    parser.add_argument("--workers", type=int, default=2, help="processes for the SO_REUSEPORT mode")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/http_servers.py needs wrk: apt-get install wrk")
    if not 1 <= args.duration <= 60 or not 1 <= args.connections <= 10_000 or not 1 <= args.rounds <= 20:
        parser.error("--duration must be 1-60 s, --connections 1-10000, --rounds 1-20")

    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, GET / (14-byte body), "
          f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    kinds: dict[str, dict[str, object]] = {
        "reactor, 1 loop": {"kind": "reactor"},
        f"reactor, main + {args.sub_reactors} sub": {"kind": "reactor", "threads": args.sub_reactors},
        "asyncio Protocol, same session": {"kind": "asyncio"},
        "ThreadingHTTPServer (as shipped)": {"kind": "threading"},
        "ThreadingHTTPServer + TCP_NODELAY": {"kind": "threading-nodelay"},
    }
    results: dict[str, list[Row]] = {name: [] for name in [*kinds, f"reactor, {args.workers} procs SO_REUSEPORT"]}
    procs: dict[str, ServerProcess] = {}
    try:
        for name, settings in kinds.items():
            procs[name] = start_server_process(**settings)  # type: ignore[arg-type]
        with ReusePortGroup(args.workers) as group:
            targets = [(name, p.port, [p.pid]) for name, p in procs.items()]
            targets.append((f"reactor, {args.workers} procs SO_REUSEPORT", group.address[1], group.pids))
            for _name, port, _ in targets:  # warm up: connections, caches, the listen queues
                run_wrk(port, 1, args.connections, args.threads)
            for i in range(args.rounds):  # servers take turns, so a noisy minute hits them all
                print(f"round {i + 1} of {args.rounds}", file=sys.stderr)
                for name, port, pids in targets:
                    results[name].append(measure(name, port, pids, args))
    finally:
        codes = {name: p.stop() for name, p in procs.items()}
    bad = {k: v for k, v in codes.items() if v}
    if bad:
        print(f"server exit codes: {bad}", file=sys.stderr)

    rows = [median_row(r) for r in results.values()]
    base = next(r for r in rows if r.name.startswith("asyncio"))
    print(f"\n{'server':36} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>8} {'CPU us/req':>10} "
          f"{'req/s ratio':>11} {'CPU ratio':>9}  errors")
    for r in rows:
        print(f"{r.name:36} {r.rps:9,.0f} {r.p50_ms:7.2f} {r.p99_ms:8.2f} {r.cpu_us_per_req:10.1f} "
              f"{r.rps / base.rps:10.2f}x {r.cpu_us_per_req / base.cpu_us_per_req:8.2f}x  {r.errors}")
    print(f"req/s, p50, p99: the median round of {args.rounds} per server; CPU/req: the median over rounds;\n"
          f"ratios against the asyncio Protocol server (same HTTP "
          f"session code), measured in this run; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
