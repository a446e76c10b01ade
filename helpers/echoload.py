"""A closed-loop echo load client in a child process: N connections, one message in flight each.

Theory of operation. To compare servers we need a client that is not the bottleneck and
does not share the notebook's interpreter (and its GIL) with the server under test. So
``LoadClient`` starts this file as a child process (``python -I``: the standard library
only, nothing from the notebook's path) and talks to it in JSON lines, one run at a time:

1. The parent sends a run's settings. The child opens every connection (its fd limit
   raised to the hard limit first) and reports ``{"connected": n, ...}``. The parent then
   calls ``on_connected()``, for instance to wait until the server has accepted them all
   and to read its memory.
2. The parent writes ``go``. Each connection sends a ``payload``-byte message, waits for
   all of it to come back, sends the next one, for ``duration_s`` seconds ("closed loop":
   a new request only after the answer, like a user who waits for the page).
3. The child waits for the answers still in flight, closes every connection, and reports
   the round trips done. It then waits for the next run; it exits when its stdin closes
   (``close()``), and is killed if it does not. ``closed_loop()`` is one run with a child
   of its own.

The child itself is an asyncio program (``asyncio.run()`` is fine in a plain process): one
thread drives all N connections. The numbers are round trips per second over loopback;
the client's own Python overhead caps them, which is fine for comparing two servers.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadResult", "LoadClient", "closed_loop", "MAX_CONNECTIONS"]

MAX_CONNECTIONS = 5000  # a lesson needs ~1000; each costs the child one fd and the server one too
FD_MARGIN = 64  # descriptors the load process needs besides its connections (stdio, epoll, self-pipe)
MAX_TIMEOUT_S = 600.0


def _check_timeout(timeout_s: object) -> float:
    from .checks import seconds  # parent side only, as above

    return seconds("timeout_s", timeout_s, high=MAX_TIMEOUT_S)


def _check_run(address: object, connections: object, duration_s: object, payload: object,
               on_connected: object) -> tuple[str, int]:
    """Every argument of a run, checked before any process starts or any byte is sent."""
    from .addresses import loopback_address  # parent side only: the load process never checks
    from .checks import seconds

    if isinstance(connections, bool) or not isinstance(connections, int) or not 1 <= connections <= MAX_CONNECTIONS:
        raise ValueError(f"connections must be an int in 1-{MAX_CONNECTIONS}, got {connections!r}")
    seconds("duration_s", duration_s, high=10)
    if isinstance(payload, bool) or not isinstance(payload, int) or not 1 <= payload <= 65536:
        raise ValueError(f"payload must be an int in 1-65536 bytes, got {payload!r}")
    if on_connected is not None and not callable(on_connected):
        raise TypeError(f"on_connected must be a function to call (or None), got {on_connected!r}")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and connections + FD_MARGIN > hard:
        raise ValueError(f"connections={connections} need {connections + FD_MARGIN} file descriptors in the load "
                         f"process, but the hard limit (RLIMIT_NOFILE, `ulimit -Hn`) is {hard}: use at most "
                         f"{max(0, hard - FD_MARGIN)} connections, or ask for a higher `nofile` limit")
    return loopback_address("address", address)


@dataclass
class LoadResult:
    """What one closed-loop run measured."""

    connections: int
    connected: int
    round_trips: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    sample: Any = None  # what on_connected() returned

    @property
    def per_second(self) -> float:
        """Round trips per second (each: payload out, the same bytes back)."""
        return self.round_trips / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_latency_ms(self) -> float:
        """Mean time per round trip (Little's law: connections / throughput), in ms."""
        return 1000 * self.connected / self.per_second if self.per_second else float("nan")


class LoadClient:
    """The load process, started once and reused for many runs (Python starts in ~0.1-0.5 s).

    ``run(address, connections, ...)`` does one closed-loop run against an echo server and
    returns a LoadResult. ``close()`` (or leaving the ``with`` block) ends the child: it
    exits when its stdin closes, and is killed if it does not within a second.
    """

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = _check_timeout(timeout_s)
        self._stderr = tempfile.TemporaryFile()
        self.child = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )

    def _send(self, message: str) -> None:
        assert self.child.stdin is not None
        try:
            self.child.stdin.write(message.encode() + b"\n")
            self.child.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"load client died: {self._stderr_tail()}") from None

    def _read(self, deadline: float, what: str) -> dict[str, Any]:
        assert self.child.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.child.stdout, selectors.EVENT_READ)
            if not sel.select(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"load client: no '{what}' report in time; {self._stderr_tail()}")
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited (code {self.child.wait()}) before '{what}': {self._stderr_tail()}")
        return json.loads(line)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-800:] or "(no stderr)"

    def run(self, address: tuple[str, int], connections: int, *, duration_s: float = 0.3, payload: int = 64,
            on_connected: Callable[[], Any] | None = None) -> LoadResult:
        """Drive an echo server at `address` with `connections` closed-loop connections.

        `payload` is the message size in bytes (1-65536), `duration_s` the measuring time
        (0 < duration_s <= 10). ``on_connected()`` runs in this process once every
        connection is open and before the load starts; its return value lands in
        ``.sample``. `address` is a (host, port) pair on loopback, and `connections` must fit
        the fd hard limit (RLIMIT_NOFILE). Raises TypeError/ValueError for bad arguments
        (the client stays usable), TimeoutError if the child stalls, RuntimeError if it died.
        After one of those the client is closed.
        """
        host, port = _check_run(address, connections, duration_s, payload, on_connected)
        if self.child.poll() is not None:
            raise RuntimeError(f"load client is closed (exit code {self.child.returncode})")
        config = {"address": [host, port], "connections": connections, "duration_s": duration_s,
                  "payload": payload}
        try:
            deadline = time.monotonic() + self.timeout_s
            self._send(json.dumps(config))
            ready = self._read(deadline, "connected")
            sample = on_connected() if on_connected is not None and ready["connected"] else None
            self._send("go")
            done = self._read(deadline + duration_s, "done")
        except BaseException:
            self.close()
            raise
        return LoadResult(connections=connections, connected=ready["connected"], round_trips=done["round_trips"],
                          seconds=done["seconds"], errors=ready["errors"] + done["errors"], sample=sample)

    def close(self) -> None:
        """End the child process (stdin closed, then SIGKILL after 1 s). Idempotent."""
        if self.child.stdin is not None and not self.child.stdin.closed:
            try:
                self.child.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.child.wait(1.0)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
        if self.child.stdout is not None:
            self.child.stdout.close()
        self._stderr.close()

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def closed_loop(address: tuple[str, int], connections: int, *, duration_s: float = 0.3, payload: int = 64,
                on_connected: Callable[[], Any] | None = None, timeout_s: float = 30.0) -> LoadResult:
    """One run of ``LoadClient.run()`` with a load process of its own (see there); the
    arguments are checked before that process starts."""
    _check_run(address, connections, duration_s, payload, on_connected)
    with LoadClient(timeout_s) as client:
        return client.run(address, connections, duration_s=duration_s, payload=payload, on_connected=on_connected)


# ---- the child: everything below runs in the load process (standard library only) ----

def _child_main() -> None:
    import asyncio
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1024 soft is too few for 1000 sockets

    class Client(asyncio.Protocol):
        running = False
        message = b""

        def __init__(self) -> None:
            self.transport: Any = None
            self.pending = 0  # bytes still to come back for the message in flight
            self.done = 0

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def send(self) -> None:
            self.pending = len(Client.message)
            self.transport.write(Client.message)

        def data_received(self, data: bytes) -> None:
            self.pending -= len(data)
            if self.pending <= 0:
                self.done += 1
                if Client.running:
                    self.send()

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def one_run(config: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        host, port = config["address"]
        Client.message = b"x" * config["payload"]
        results = await asyncio.gather(
            *(loop.create_connection(Client, host, port) for _ in range(config["connections"])),
            return_exceptions=True,
        )
        clients = [r[1] for r in results if not isinstance(r, BaseException)]
        errors = sorted({f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)})
        say({"connected": len(clients), "errors": errors[:5]})
        if sys.stdin.readline().strip() != "go":  # blocking is fine: nothing to do until then
            return
        Client.running = True
        started = time.perf_counter()
        for c in clients:
            c.send()
        await asyncio.sleep(config["duration_s"])
        Client.running = False
        seconds = time.perf_counter() - started
        round_trips = sum(c.done for c in clients)
        # Let the answers in flight arrive before closing: closing a socket with unread
        # data makes the kernel send RST (man 7 tcp), which the server would see as an error.
        drain_until = time.monotonic() + 2.0
        while any(c.pending > 0 and not c.transport.is_closing() for c in clients) and time.monotonic() < drain_until:
            await asyncio.sleep(0.002)
        lost = sum(1 for c in clients if c.transport.is_closing())
        for c in clients:
            c.transport.close()
        await asyncio.sleep(0)  # close() takes effect on the next loop iteration
        await asyncio.sleep(0)
        say({"round_trips": round_trips, "seconds": seconds,
             "errors": [f"{lost} connections closed by the server"] if lost else []})

    async def main() -> None:
        while line := sys.stdin.readline():  # one JSON config per run; EOF ends the process
            await one_run(json.loads(line))

    asyncio.run(main())


if __name__ == "__main__":
    _child_main()
