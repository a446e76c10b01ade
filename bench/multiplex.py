"""What one wait costs with select and poll, as ratios against epoll measured in the same
run: `waits` zero-timeout waits over N idle socketpair ends plus one ready fd, for N on a
log scale. select stops at fd number 1024 (FD_SETSIZE). No assertions: it prints.

    .venv/bin/python bench/multiplex.py [--largest 4000] [--waits 1000]
"""

from __future__ import annotations

import argparse

from helpers import multiplex
from helpers.multiplex import WaitCost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--largest", type=int, default=4000, help="most idle fds to watch (default 4000)")
    parser.add_argument("--waits", type=int, default=1000, help="timed waits per measurement (default 1000)")
    args = parser.parse_args()
    headroom = multiplex.fd_headroom()
    if not 1 <= args.largest <= headroom:
        parser.error(f"--largest must be 1..{headroom} (what the hard RLIMIT_NOFILE allows here)")
    if not 1 <= args.waits <= 100_000:
        parser.error("--waits must be 1..100000")

    counts = multiplex.log_counts(args.largest)
    table = multiplex.sweep(counts, waits=args.waits, budget_s=None)
    print(f"median time of one zero-timeout wait, {args.waits} waits, 1 ready fd + N idle fds")
    heads = [("N idle", 7), ("epoll (us)", 11), ("poll (us)", 11), ("select (us)", 11), ("poll/epoll", 11),
             ("select/epoll", 12)]
    print(" ".join(f"{name:>{width}}" for name, width in heads))
    for n in counts:
        epoll = table["epoll"][n]
        assert isinstance(epoll, WaitCost)  # epoll has no fd-number limit: never refused
        times, ratios = [f"{epoll.median_us:11.2f}"], []
        for mech, width in (("poll", 11), ("select", 12)):
            cost = table[mech].get(n)
            if isinstance(cost, WaitCost):
                times.append(f"{cost.median_us:11.2f}")
                ratios.append(f"{cost.median_us / epoll.median_us:{width - 1}.1f}x")
            else:  # select: refused (an fd >= 1024) or not tried past that
                times.append(f"{'fd >= 1024':>11}")
                ratios.append(f"{'-':>{width}}")
        print(f"{n:>7} " + " ".join(times + ratios))

if __name__ == "__main__":
    main()
