"""Run one HTTP server in the foreground of its own process: ``python -m helpers.reactor.serve``.

Theory of operation. Benchmarks and the SO_REUSEPORT group start servers as child
processes with ``subprocess`` (never ``fork()`` from a multi-threaded Jupyter kernel). A
child prints one line, ``PORT <n>``, once it listens, then serves until its standard input
reaches EOF: the parent closes the pipe to stop it, and if the parent dies the pipe closes
too, so a server process can never outlive the one that started it. The reactor watches
stdin as one more channel; the other servers watch it from a small thread.

Kinds: ``reactor`` (``--threads N`` sub-reactors, ``--reuse-port`` to join a group),
``asyncio`` (the same session on asyncio), ``threading`` (the stdlib's ThreadingHTTPServer
with a handler giving the same answer, as shipped: two writes per answer, so Nagle's
algorithm meets the client's delayed ACK, lesson 10) and ``threading-nodelay`` (the same
with the handler's ``disable_nagle_algorithm = True``). Every kind also answers
``GET /pid`` with its process id, so a client can see which process served it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .channel import Channel
from .http import HELLO, Response, Router, demo_router

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


def _router() -> Router:
    router = demo_router()
    router.add("GET", "/pid", lambda req: Response(200, str(os.getpid()).encode()))
    return router


def _watch_stdin(stop: object) -> threading.Thread:
    def wait() -> None:
        while os.read(0, 4096):
            pass
        stop()  # type: ignore[operator]

    t = threading.Thread(target=wait, name="course-server-stdin", daemon=True)
    t.start()
    return t


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, start the server, print PORT, serve until stdin closes."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=KINDS, default="reactor")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="reactor: sub-reactor threads")
    p.add_argument("--backend", default="epoll", choices=("epoll", "poll"))
    p.add_argument("--reuse-port", action="store_true", help="reactor: set SO_REUSEPORT (join a group)")
    p.add_argument("--idle-timeout", type=float, default=10.0, help="seconds to deliver a complete request")
    args = p.parse_args(argv)
    if args.kind == "reactor":
        from .httpserver import HttpServer

        server = HttpServer(_router(), host=args.host, port=args.port, threads=args.threads, backend=args.backend,
                            reuse_port=args.reuse_port, idle_timeout_s=args.idle_timeout, start=False)
        loop = server.main_loop

        def on_stdin() -> None:
            if not os.read(0, 4096):
                loop.remove_channel(stdin)
                server.stop(raise_errors=False)

        stdin = Channel(0, on_read=on_stdin)
        loop.add_channel(stdin)
        print(f"PORT {server.address[1]}", flush=True)
        server.serve_forever()
    elif args.kind == "asyncio":
        from .aio import AsyncioHttpServer

        aserver = AsyncioHttpServer(_router(), host=args.host, port=args.port, idle_timeout_s=args.idle_timeout,
                                    start=False)
        _watch_stdin(lambda: aserver.loop.call_soon_threadsafe(aserver.loop.stop))
        print(f"PORT {aserver.address[1]}", flush=True)
        aserver.serve_forever()
    else:
        handler = HelloHandler if args.kind == "threading" else HelloHandlerNoDelay
        tserver = ThreadingHTTPServer((args.host, args.port), handler)
        tserver.daemon_threads = True
        _watch_stdin(tserver.shutdown)
        print(f"PORT {tserver.server_address[1]}", flush=True)
        tserver.serve_forever()
        tserver.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
