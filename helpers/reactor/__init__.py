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
"""

from __future__ import annotations

from .acceptor import Acceptor
from .aio import AsyncioHttpServer
from .buffer import Buffer, BufferFull
from .channel import READ, WRITE, Channel
from .connection import TcpConnection
from .dispatcher import BACKENDS, DEFAULT_BACKEND, EpollDispatcher, PollDispatcher
from .http import HttpError, Request, RequestParser, Response, Router, ServerSession, demo_router
from .httpserver import HttpServer
from .loop import EventLoop
from .processes import ReusePortGroup, start_server_process
from .server import TcpServer
from .threads import EventLoopThread, EventLoopThreadPool

__all__ = [
    "Acceptor", "AsyncioHttpServer", "Buffer", "BufferFull", "READ", "WRITE", "Channel", "TcpConnection",
    "BACKENDS", "DEFAULT_BACKEND", "EpollDispatcher", "PollDispatcher", "HttpError", "Request",
    "RequestParser", "Response", "Router", "ServerSession", "demo_router", "HttpServer", "EventLoop",
    "ReusePortGroup", "start_server_process", "TcpServer", "EventLoopThread", "EventLoopThreadPool",
]
