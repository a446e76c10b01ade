"""The live-server registry: every course server that runs, so nothing is forgotten.

Theory of operation. Every helper that starts something in the background (a thread server,
a child process, a relay, an event loop) registers it when it starts and unregisters it when
it stops, and names every thread it starts with ``THREAD_PREFIX``. Then ``stop_all()``
stops whatever a notebook cell left running, and the leak checks (``core.hygiene``) can list
what is still alive. A server is anything with a ``stop(raise_errors=...)`` method.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["THREAD_PREFIX", "register", "unregister", "live_servers", "stop_all"]

THREAD_PREFIX = "course-server"  # every thread a course server starts is named with this

_live: set[Any] = set()
_live_lock = threading.Lock()


def register(server: Any) -> None:
    """Add a running server (anything with ``stop(raise_errors=...)``) to the registry, so
    ``stop_all()`` and the leak checks see it. Servers call this when they start and
    ``unregister`` when they stop. TypeError for an object without a stop() method
    (stop_all() could not stop it)."""
    if not callable(getattr(server, "stop", None)):
        raise TypeError(f"register() needs a server with a stop(raise_errors=...) method, got {server!r}")
    with _live_lock:
        _live.add(server)


def unregister(server: Any) -> None:
    """Remove a stopped server from the registry (no error if it is not there)."""
    with _live_lock:
        _live.discard(server)


def live_servers() -> list[Any]:
    """Servers started and not yet stopped (threads and child processes)."""
    with _live_lock:
        return sorted(_live, key=id)


def stop_all() -> int:
    """Stop every server still running; return how many there were. Errors are not raised."""
    servers = live_servers()
    for server in servers:
        server.stop(raise_errors=False)
    return len(servers)
