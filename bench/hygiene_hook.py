"""What does the leak-tracking audit hook (helpers.core.hygiene.track()) cost a server?

An accept loop on 127.0.0.1: a client thread connects and closes as fast as it can, the
server accepts and closes each connection (one socket created per accept, the event the
hook watches most). The same loop runs in child processes with and without the hook (an
audit hook cannot be removed, so each side gets its own process), alternating, in this
same run; prints the median connections per second of each side and their ratio, per
second of wall-clock time and per second of this process's CPU time (both threads). The CPU
figure barely moves when other programs load the machine; the wall-clock one does.

    .venv/bin/python bench/hygiene_hook.py [--connections 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, socket, sys, threading, time
sys.path.insert(0, {root!r})
if {hooked!r}:
    from helpers.core import hygiene
    hygiene.track()
n = {connections!r}
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1024)
address = listener.getsockname()

def client():
    for _ in range(n):
        socket.create_connection(address).close()

t = threading.Thread(target=client)
started, cpu_started = time.perf_counter(), time.process_time()
t.start()
for _ in range(n):
    conn, _ = listener.accept()
    conn.close()
t.join()
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
listener.close()
print(json.dumps({{"per_s": n / elapsed, "per_cpu_s": n / cpu}}))
"""


def one_run(hooked: bool, connections: int) -> dict[str, float]:
    """Accepted connections per second (wall clock and CPU) in a fresh child process."""
    code = CHILD.format(root=str(ROOT), hooked=hooked, connections=connections)
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    without, with_hook = [], []
    for _ in range(args.rounds):  # alternate, so a change in machine load hits both sides alike
        without.append(one_run(False, args.connections))
        with_hook.append(one_run(True, args.connections))
    print(f"accept loop on 127.0.0.1, {args.connections} connections x {args.rounds} rounds per side (medians)")
    print(f"{'':31}{'per wall-clock s':>18}{'per CPU s':>12}")
    medians = {}
    for label, runs in (("without the hook (baseline)", without), ("with hygiene.track()", with_hook)):
        medians[label] = [statistics.median(r[k] for r in runs) for k in ("per_s", "per_cpu_s")]
        wall, cpu = medians[label]
        print(f"  {label:29}{wall:18,.0f}{cpu:12,.0f}")
    (base_wall, base_cpu), (hook_wall, hook_cpu) = medians.values()
    print(f"  {'ratio with / without':29}{hook_wall / base_wall:18.3f}{hook_cpu / base_cpu:12.3f}")


if __name__ == "__main__":
    main()
