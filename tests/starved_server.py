"""The child process of tests/test_accept_policy.py: one of the course's servers, run in a process
of its own, whose file-descriptor limit the test lowers from outside (prlimit).

Started with core.spawn (entry ``tests.starved_server:main``): it starts the server `kind`
names, says ready with its address, and answers ``stats`` with the server's own counters
(accept pauses, errors kept, connections accepted) until its stdin closes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from helpers import aio, behaviours, c10k, servers
from helpers.core import spawn
from helpers.httpbench import serve_http
from helpers.reactor.aio import AsyncioHttpServer
from helpers.reactor.httpserver import HttpServer
from helpers.reactor.serve import HelloHandler

#: kind -> (what it speaks, how to start it). Every server model of the course that accepts.
KINDS: dict[str, tuple[str, Callable[[], Any]]] = {
    "servers.TCPServer": ("echo", lambda: servers.TCPServer(behaviours.echo)),
    "c10k thread": ("echo", lambda: c10k.ThreadPerConnection("echo")),
    "c10k pool": ("echo", lambda: c10k.ThreadPool("echo", workers=4)),
    "c10k poll": ("echo", lambda: c10k.PollReactor("echo")),
    "c10k epoll": ("echo", lambda: c10k.EpollReactor("echo")),
    "c10k main-sub": ("echo", lambda: c10k.MainSubReactors("echo", subs=2)),
    "c10k asyncio (aio.AsyncioServer)": ("echo", lambda: aio.AsyncioServer("echo")),
    "aio.AsyncioServer http": ("http", lambda: aio.AsyncioServer("http")),
    "reactor.HttpServer": ("http", lambda: HttpServer()),
    "reactor.HttpServer main+2 sub": ("http", lambda: HttpServer(threads=2)),
    "reactor.AsyncioHttpServer": ("http", lambda: AsyncioHttpServer()),
    "httpbench.serve_http": ("http", lambda: serve_http(HelloHandler)),
}


def main(config: dict[str, Any]) -> None:
    """Serve; answer each {'cmd': 'stats'} with the server's counters; stop at end of file."""
    server = KINDS[config["kind"]][1]()
    try:
        spawn.ready(address=list(server.address))
        for command in spawn.commands():
            if command.get("cmd") == "stats":
                spawn.say({"paused": server.paused, "error_count": len(server.errors)})
    finally:
        server.stop(raise_errors=False)


def relay_main(config: dict[str, Any]) -> None:
    """A UDP echo server behind a LossyRelay that loses nothing; ``make`` tries a second relay
    (or a UDP server) and reports how it failed (the test counts the descriptors from outside)."""
    from helpers.lossy import LossyRelay

    kept: list[BaseException] = []
    with servers.UDPServer(lambda data, addr: data) as echo, LossyRelay(echo.address) as relay:
        spawn.ready(address=list(relay.address))
        for command in spawn.commands():
            if command.get("cmd") == "stats":
                spawn.say({"error_count": len(relay.errors) + len(echo.errors),
                           "relayed": relay.stats.to_server.sent})
            elif command.get("cmd") == "make":  # a second relay, or a UDP server, from what is left
                try:
                    if command["what"] == "relay":
                        LossyRelay(echo.address).stop()
                    elif command["what"] == "udp":
                        servers.UDPServer(lambda data, addr: data).stop()
                    else:  # its socket file's folder goes in a folder of the test's: it must be gone again
                        tempfile.tempdir = command["tmp"]
                        servers.UnixStreamServer(lambda conn: None).stop()
                    failure = None
                except OSError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                    kept.append(exc)  # as a notebook keeps the last traceback, and the frames in it
                spawn.say({"failure": failure})
