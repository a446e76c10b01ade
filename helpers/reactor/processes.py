"""The same server in several processes, sharing one port with SO_REUSEPORT.

Theory of operation. Threads in CPython share one GIL, so a second reactor thread adds
no CPU for Python code. Processes do. With ``SO_REUSEPORT`` (``man 7 socket``, Linux 3.9+)
several sockets owned by the same user may bind the same address and port, each with its
own accept queue; the kernel spreads incoming connections over the listening sockets by
a hash of the 4-tuple. So each worker process runs an ordinary single-reactor server on
its own listening socket, with no sharing and no locks between them.

The port: this process binds a ``SO_REUSEPORT`` socket to 127.0.0.1 port 0 and keeps it
bound, without listen(), for the group's life: the kernel chose the port, nobody else
can take it (a socket without SO_REUSEPORT, or of another user, gets EADDRINUSE), and a
socket that does not listen receives no connections. Each worker then binds that port
with SO_REUSEPORT and listens.

Workers are started with ``subprocess`` (``python -m helpers.reactor.serve``), never by
forking the Jupyter kernel, and stop when we close their stdin; ``stop()`` waits for them,
kills any that do not exit, and reaps every one, so no zombie or orphan is left.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

from .. import servers as _servers
from .httpserver import check_idle_timeout
from .threads import check_threads

__all__ = ["ReusePortGroup", "start_server_process", "ServerProcess"]


class ServerProcess:
    """One ``python -m helpers.reactor.serve`` child; ``port`` is where it listens."""

    def __init__(self, *args: str, start_timeout_s: float = 10.0, wait: bool = True):
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.reactor.serve", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        self.port = self.wait_ready(start_timeout_s) if wait else 0

    def wait_ready(self, timeout_s: float = 10.0) -> int:
        """Wait for the child's ``PORT <n>`` line and return the port (RuntimeError if it fails)."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            err = self._stop_and_read_stderr().strip().splitlines()
            said = err[-1] if err else "(nothing on stderr)"
            raise RuntimeError(f"server process {' '.join(self.args)} did not start within {timeout_s} s "
                               f"(exit code {self.proc.returncode}); it said: {said}")
        self.port = int(line.split()[1])
        return self.port

    def _stop_and_read_stderr(self) -> str:
        """Stop the child (killed if it does not exit) and return what it wrote to stderr."""
        try:
            _, err = self.proc.communicate(timeout=3)  # closes stdin: a healthy child stops
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def stop(self, timeout_s: float = 3.0) -> int:
        """Close its stdin (it stops), wait, kill if needed, reap; return its exit code."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        return self.proc.returncode


def start_server_process(kind: str = "reactor", *extra: str) -> ServerProcess:
    """Start ``python -m helpers.reactor.serve --kind <kind> <extra...>`` and wait for its port."""
    from .serve import KINDS  # here: serve starts the stdlib http.server only when asked

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return ServerProcess("--kind", kind, *extra)


class ReusePortGroup:
    """`workers` reactor processes on one port (SO_REUSEPORT); a context manager.

    `threads` sub-reactors per worker (usually 0). ``address`` is the shared address,
    ``pids`` the workers' process ids.
    """

    kind = "reuseport"

    def __init__(self, workers: int = 2, *, threads: int = 0, host: str = "127.0.0.1",
                 idle_timeout_s: float = 10.0):
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 32:
            raise ValueError(f"workers must be an int in 1-32, got {workers!r}")
        check_threads(threads)
        check_idle_timeout(idle_timeout_s)
        self._holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.workers: list[ServerProcess] = []
        self._stopped = False
        try:
            self._holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._holder.bind((host, 0))  # holds the port; never listens, so gets no connections
            self.address: tuple[str, int] = self._holder.getsockname()[:2]
            self.name = f"{self.kind}:{self.address[1]}"
            for _ in range(workers):  # start them all, then wait: they start in parallel
                self.workers.append(ServerProcess(
                    "--kind", "reactor", "--host", host, "--port", str(self.address[1]), "--reuse-port",
                    "--threads", str(threads), "--idle-timeout", str(idle_timeout_s), wait=False))
            for w in self.workers:
                w.wait_ready()
        except BaseException:
            self.stop()
            raise
        _servers.register(self)
        self._started = time.monotonic()

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [w.pid for w in self.workers]

    @property
    def running(self) -> bool:
        """True until stop() is called."""
        return not self._stopped

    def stop(self, timeout_s: float = 3.0, *, raise_errors: bool = True) -> None:
        """Stop and reap every worker, release the port. Idempotent. Raises RuntimeError if a
        worker exited with an error (unless raise_errors is False)."""
        if self._stopped:
            return
        self._stopped = True
        codes = [w.stop(timeout_s) for w in self.workers]
        self._holder.close()
        _servers.unregister(self)
        if raise_errors and any(codes):
            raise RuntimeError(f"{getattr(self, 'name', 'reuseport')}: worker exit codes {codes}")

    def __enter__(self) -> ReusePortGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(raise_errors=exc[0] is None)

    def __repr__(self) -> str:
        return f"<ReusePortGroup {getattr(self, 'name', '?')} workers={len(self.workers)}>"
