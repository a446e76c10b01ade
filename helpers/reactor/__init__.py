"""The capstone: a reactor framework and an HTTP/1.1 server on it, one small module per concept.

Layers, bottom up (each module opens with its job):

* ``channel``: an fd, the events wanted, the callbacks;
* ``dispatcher``: epoll or poll behind one interface;
* ``loop``: the event loop (pending tasks, poll, dispatch, timers) with a wake-up socketpair;
* ``buffer``: a bounded input buffer filled with recv_into();
* ``acceptor``: accept() up to backlog per event, pause on EMFILE;
* ``connection``: a TCP connection with the output-buffer write path, half-close, close;
* ``threads``: event-loop threads (main reactor + sub-reactors);
* ``server``: the TCP server that puts them together;
* ``http``: HTTP/1.1 without I/O (parser, responses, router, per-connection session);
* ``httpserver``: the HTTP session on the reactor, with an idle timeout;
* ``aio``: the same HTTP session on asyncio, to compare loops with the same parser;
* ``processes`` and ``serve``: the server in several processes sharing a port (SO_REUSEPORT).

Protocol code (``http``) does no I/O; nothing below ``server`` knows about HTTP.

The names below are imported lazily (PEP 562), as ``helpers`` does: ``import
helpers.reactor.http`` loads the parser alone, and a server process loads asyncio only if it
runs the asyncio server.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    "Acceptor": ".acceptor", "AsyncioHttpServer": ".aio", "Buffer": ".buffer", "BufferFull": ".buffer",
    "READ": ".channel", "WRITE": ".channel", "Channel": ".channel", "BaseProtocol": ".connection",
    "TcpConnection": ".connection",
    "BACKENDS": ".dispatcher", "DEFAULT_BACKEND": ".dispatcher", "EpollDispatcher": ".dispatcher",
    "PollDispatcher": ".dispatcher", "HttpError": ".http", "Request": ".http", "RequestParser": ".http",
    "Response": ".http", "Router": ".http", "ServerSession": ".http", "demo_router": ".http",
    "HttpServer": ".httpserver", "EventLoop": ".loop", "ReusePortGroup": ".processes",
    "start_server_process": ".processes", "TcpServer": ".server", "EventLoopThread": ".threads",
    "EventLoopThreadPool": ".threads",
}

__all__ = [
    "Acceptor", "AsyncioHttpServer", "Buffer", "BufferFull", "READ", "WRITE", "Channel", "BaseProtocol",
    "TcpConnection",
    "BACKENDS", "DEFAULT_BACKEND", "EpollDispatcher", "PollDispatcher", "HttpError", "Request",
    "RequestParser", "Response", "Router", "ServerSession", "demo_router", "HttpServer", "EventLoop",
    "ReusePortGroup", "start_server_process", "TcpServer", "EventLoopThread", "EventLoopThreadPool",
]


# the modules themselves, so ``helpers.reactor.dispatcher.Dispatcher`` works without an import
_SUBMODULES = frozenset({
    "acceptor", "aio", "buffer", "channel", "connection", "dispatcher", "http", "httpserver", "loop",
    "processes", "serve", "server", "threads",
})


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` (or the module `name`) on first use, then keep it as
    a plain attribute."""
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
        globals()[name] = value
        return value
    if name not in _EXPORTS:
        raise AttributeError(f"module 'helpers.reactor' has no attribute {name!r}; see helpers.reactor.__all__")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
