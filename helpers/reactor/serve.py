"""One HTTP server in a child process of its own: the reactor, asyncio or ThreadingHTTPServer.

Theory of operation. Benchmarks and the SO_REUSEPORT group run each server in a child
process, started the course's one way (``helpers.core.spawn``: ``python -I``, never a
``fork()`` of the multi-threaded Jupyter kernel). ``serve_child(config)`` is the child's
entry: it builds the server, says it is ready with its address, and serves until its stdin
reaches end of file: the parent closes the pipe to stop it, and if the parent dies the pipe
closes too, so a server process can never outlive the one that started it. The reactor
watches stdin as one more channel; the other servers watch it from a small thread.

Kinds: ``reactor`` (``threads`` sub-reactors, ``reuse_port`` to join a group), ``asyncio``
(the same session on asyncio), ``threading`` (the stdlib's ThreadingHTTPServer with a handler
giving the same answer, as shipped: two writes per answer, so Nagle's algorithm meets the
client's delayed ACK, lesson 10) and ``threading-nodelay`` (the same with the handler's
``disable_nagle_algorithm = True``). Every kind also answers ``GET /pid`` with its process
id, so a client can see which process served it. ``check_config()`` refuses a bad setting
in the parent, before any process starts.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..addresses import loopback_host
from ..core import checks, spawn
from .dispatcher import BACKENDS
from .http import HELLO, Response, Router, demo_router
from .httpserver import DEFAULT_IDLE_TIMEOUT_S, check_idle_timeout
from .threads import check_threads

__all__ = ["KINDS", "HelloHandler", "HelloHandlerNoDelay", "check_config", "serve_child"]

KINDS = ("reactor", "asyncio", "threading", "threading-nodelay")


class HelloHandler(BaseHTTPRequestHandler):
    """GET / answers what the reactor's demo router answers, over keep-alive HTTP/1.1."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        body = str(os.getpid()).encode() if self.path == "/pid" else HELLO
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return None  # one line per request to stderr would cost more than the request


class HelloHandlerNoDelay(HelloHandler):
    """The same, with TCP_NODELAY on each connection (socketserver's own switch)."""

    disable_nagle_algorithm = True


def check_config(kind: str = "reactor", *, host: str = "127.0.0.1", port: int = 0, threads: int = 0,
                 backend: str = "epoll", reuse_port: bool = False,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> dict[str, Any]:
    """A server process's settings, checked, as the JSON config serve_child() takes.

    ValueError/TypeError naming the setting: `kind` one of KINDS, `host` a loopback address,
    `port` 0-65535 (0: the kernel picks), `threads` sub-reactors 0-64, `backend` 'epoll' or
    'poll', `idle_timeout_s` in (0, 3600].
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    loopback_host("host", host)
    checks.port("port", port, note=" (0 lets the kernel choose)")
    check_threads(threads)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    if not isinstance(reuse_port, bool):
        raise TypeError(f"reuse_port must be True or False, got {reuse_port!r}")
    check_idle_timeout(idle_timeout_s)
    return {"kind": kind, "host": host, "port": port, "threads": threads, "backend": backend,
            "reuse_port": reuse_port, "idle_timeout_s": idle_timeout_s}


def _router() -> Router:
    router = demo_router()
    router.add("GET", "/pid", lambda req: Response(200, str(os.getpid()).encode()))
    return router


def serve_child(config: dict[str, Any]) -> None:
    """The server process (run by core.spawn): start the server `config` describes (see
    check_config), say ready with its address, serve until stdin closes."""
    kind = config["kind"]
    if kind == "reactor":
        from .channel import Channel
        from .httpserver import HttpServer

        server = HttpServer(_router(), host=config["host"], port=config["port"], threads=config["threads"],
                            backend=config["backend"], reuse_port=config["reuse_port"],
                            idle_timeout_s=config["idle_timeout_s"], start=False)
        loop = server.main_loop
        commands = spawn.CommandReader()

        def on_stdin() -> None:
            if commands.read() is None:  # end of file: the parent wants us gone
                loop.remove_channel(stdin)
                server.stop(raise_errors=False)

        stdin = Channel(commands.fileno(), on_read=on_stdin)
        loop.add_channel(stdin)
        spawn.ready(address=list(server.address))
        server.serve_forever()
    elif kind == "asyncio":
        from .aio import AsyncioHttpServer

        aserver = AsyncioHttpServer(_router(), host=config["host"], port=config["port"],
                                    idle_timeout_s=config["idle_timeout_s"], start=False)
        spawn.on_eof(lambda: aserver.loop.call_soon_threadsafe(aserver.loop.stop))
        spawn.ready(address=list(aserver.address))
        aserver.serve_forever()
    else:
        from ..httpbench import serve_http

        handler = HelloHandler if kind == "threading" else HelloHandlerNoDelay
        with serve_http(handler, host=config["host"], port=config["port"]) as tserver:
            spawn.ready(address=list(tserver.address))
            for _ in spawn.commands():  # no commands: end of file means stop
                pass
