"""How much memory does each of the course's child processes take, against a bare Python server?

Every child the helpers start (core.spawn: ``python -I``, a helpers function as entry) imports
only what it needs. This script starts, in one run, a bare asyncio server in ``python -I -c``
(the baseline: an interpreter, asyncio, one listening socket) and each kind of course child
once it is ready, reads each one's VmRSS (/proc/PID/status, man 5 proc), and prints them with
their ratio to the baseline.

    .venv/bin/python bench/child_rss.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import c10k  # noqa: E402
from helpers.loadgen import LoadGenerator  # noqa: E402
from helpers.reactor.processes import start_server_process  # noqa: E402
from helpers.servers import ProcessServer  # noqa: E402

BARE = """
import asyncio, sys
async def main():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> None:
    bare = subprocess.Popen([sys.executable, "-I", "-c", BARE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert bare.stdout is not None
        bare.stdout.readline()  # listening
        rows = {"bare asyncio server (python -I -c)": rss_mib(bare.pid)}
    finally:
        assert bare.stdin is not None
        bare.stdin.close()
        bare.wait()
    with ProcessServer("echo") as server:
        rows["servers.ProcessServer('echo')"] = rss_mib(server.pid)
    for kind in ("reactor", "asyncio", "threading"):
        process = start_server_process(kind)
        try:
            rows[f"reactor server process, kind {kind!r}"] = rss_mib(process.pid)
        finally:
            process.stop()
    for model in ("epoll", "thread", "fork"):
        with c10k.start_model(model, "echo", in_child=True) as server:
            rows[f"c10k model {model!r} in a child"] = rss_mib(server.pids[0])
    with LoadGenerator(workers=1) as load:
        rows["loadgen worker"] = rss_mib(load.pids[0])
    base = next(iter(rows.values()))
    print(f"{'child process':44} {'VmRSS':>9} {'ratio':>6}")
    for name, mib in rows.items():
        print(f"{name:44} {mib:6.1f} MiB {mib / base:5.2f}x")
    print("ratio: against the bare asyncio server measured in this run")


if __name__ == "__main__":
    main()
