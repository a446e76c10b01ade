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

Workers are child processes started the course's one way (``helpers.core.spawn``:
``python -I``, ``serve.serve_child`` as the entry, never a fork of the Jupyter kernel), all
at once and then each waited for; they stop when we close their stdin, and ``stop()`` kills
any that do not and reaps every one, so no zombie or orphan is left.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from ..core import checks, registry, spawn
from ..servers import port_holder
from .serve import check_config

__all__ = ["ReusePortGroup", "start_server_process", "ServerProcess"]


class ServerProcess:
    """One HTTP server child (``serve.serve_child``); ``port`` is where it listens.

    `config` comes from ``serve.check_config()``. With ``wait=False`` the child starts and
    ``wait_ready()`` waits for it (to start several side by side).
    """

    def __init__(self, config: dict[str, Any], *, start_timeout_s: float = 10.0, wait: bool = True):
        self.config = config
        self.child = spawn.Child("helpers.reactor.serve:serve_child", config, name=f"http-{config['kind']}",
                                 start_timeout_s=start_timeout_s, wait=False)
        self.port = 0
        if wait:
            self.wait_ready()

    def wait_ready(self) -> int:
        """Wait for the child's handshake and return its port (ChildError, TimeoutError if it fails)."""
        self.port = int(self.child.wait_ready()["address"][1])
        return self.port

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.child.pid

    def stop(self, timeout_s: float = 3.0) -> int:
        """Close its stdin (it stops), wait, kill if needed, reap; return its exit code."""
        return self.child.stop(timeout_s)


def start_server_process(kind: str = "reactor", **settings: Any) -> ServerProcess:
    """Start one HTTP server of `kind` in a child process and wait until it listens.

    `settings` are those of ``serve.check_config()`` (threads=, backend=, idle_timeout_s=,
    ...), checked here, before any process starts.
    """
    return ServerProcess(check_config(kind, **settings))


class ReusePortGroup:
    """`workers` reactor processes on one port (SO_REUSEPORT); a context manager.

    `threads` sub-reactors per worker (usually 0). ``address`` is the shared address,
    ``pids`` the workers' process ids.
    """

    kind = "reuseport"

    def __init__(self, workers: int = 2, *, threads: int = 0, host: str = "127.0.0.1",
                 idle_timeout_s: float = 10.0):
        checks.count("workers", workers, 1, 32)
        config = check_config("reactor", host=host, threads=threads, idle_timeout_s=idle_timeout_s,
                              reuse_port=True)
        self.workers: list[ServerProcess] = []
        self._stopped = False
        self._holder: socket.socket | None = None
        self.name = self.kind
        try:
            self._holder = port_holder(host)  # holds the port; never listens, so gets no connections
            self.address: tuple[str, int] = self._holder.getsockname()[:2]
            self.name = f"{self.kind}:{self.address[1]}"
            config["port"] = self.address[1]
            for _ in range(workers):  # start them all, then wait: they start in parallel
                self.workers.append(ServerProcess(config, wait=False))
            for w in self.workers:
                w.wait_ready()
        except BaseException:
            self.stop(raise_errors=False)
            raise
        registry.register(self)
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
        if self._holder is not None:
            self._holder.close()
        registry.unregister(self)
        if raise_errors and any(codes):
            raise RuntimeError(f"{self.name}: worker exit codes {codes}")

    def __enter__(self) -> ReusePortGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(raise_errors=exc[0] is None)

    def __repr__(self) -> str:
        return f"<ReusePortGroup {self.name} workers={len(self.workers)}>"
