"""Lesson 19's CPU-per-request comparison: one run per server against the middle of three.

Lesson 19 compares the reactor's CPU time per request with asyncio's (same HTTP session code)
and claims at most 1.5x. A busy moment elsewhere on the machine that falls on one server's
run can decide such a comparison, so the lesson measures the servers in turn, three rounds,
and compares each server's middle run. This script measures both verdicts in the same run,
with the lesson's own measurement (closed-loop load from helpers.loadgen, this process's CPU
time over the answers), while background processes load the CPUs on and off at random, and
prints the reactor/asyncio ratio each way: median and worst over the trials.

    .venv/bin/python bench/middle_of_three.py [--trials 50] [--hogs 3] [--seconds 0.2]

--hogs 0 measures a quiet machine. The hogs are killed when the script ends, however it ends.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import httpbench, reactor  # noqa: E402
from helpers.loadgen import LoadGenerator  # noqa: E402

# Busy for 0.2-1.5 s, idle for 0.2-1.5 s, until stdin closes (this script ending closes it).
HOG = """
import random, select, sys, time
while not select.select([sys.stdin], [], [], random.uniform(0.2, 1.5))[0]:
    end = time.monotonic() + random.uniform(0.2, 1.5)
    while time.monotonic() < end:
        pass
"""

SERVERS: dict[str, Callable[[], object]] = {
    "reactor": lambda: reactor.HttpServer(),
    "reactor main+2 sub": lambda: reactor.HttpServer(threads=2),
    "asyncio": lambda: reactor.AsyncioHttpServer(),
    "ThreadingHTTPServer": lambda: httpbench.serve_http(reactor.serve.HelloHandler),
}


def cpu_us_per_request(make_server: Callable[[], object], load: LoadGenerator, seconds: float) -> float:
    """One run as lesson 19 measures it: this process's CPU time over the requests answered."""
    with make_server() as srv:  # type: ignore[attr-defined]
        cpu0 = time.process_time()
        result = load.run(srv.address, connections=20, duration_s=seconds, service="http")
        cpu_s = time.process_time() - cpu0
    if not result.complete:
        raise RuntimeError(f"a run did not answer every request: {result}")
    return cpu_s / max(result.answered, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--hogs", type=int, default=3, help="background processes loading the CPUs on and off")
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one run, as in the lesson")
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-I", "-c", HOG], stdin=subprocess.PIPE) for _ in range(args.hogs)]
    single: list[float] = []
    middle: list[float] = []
    try:
        with LoadGenerator(workers=2) as load:
            for trial in range(args.trials):
                runs: dict[str, list[float]] = {name: [] for name in SERVERS}
                for _ in range(3):
                    for name, make in SERVERS.items():
                        runs[name].append(cpu_us_per_request(make, load, args.seconds))
                single.append(runs["reactor"][0] / runs["asyncio"][0])
                middle.append(statistics.median(runs["reactor"]) / statistics.median(runs["asyncio"]))
                print(f"trial {trial + 1:3}: one run {single[-1]:.2f}, middle of three {middle[-1]:.2f}", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
            hog.stdin.close()  # type: ignore[union-attr]
    print(f"\nreactor / asyncio CPU per request, {args.trials} trials, {args.hogs} on-and-off hogs:")
    for name, ratios in (("one run per server", single), ("middle of three", middle)):
        print(f"  {name:20} median {statistics.median(ratios):.2f}  worst {max(ratios):.2f}  "
              f"at or above 1.5: {sum(r >= 1.5 for r in ratios)}")


if __name__ == "__main__":
    main()
