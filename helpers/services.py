"""The two services lessons 17 and 18 measure servers with: echo, and one HTTP route.

Theory of operation. To compare *server models*, every model must serve the very same
protocol, so the protocols are written once, without I/O (bytes in, bytes out), and each
model only decides who waits for the kernel. A service is a per-connection object with one
method, ``receive(data) -> (answer, close)``: the bytes to send back and whether to close
the connection once they are sent; ``receive(b"")`` means the peer closed its side.

* ``echo``: every byte received is the answer (the same object: a caller that keeps it
  copies it, as ``TcpConnection.write`` does with what the kernel did not take).
* ``http``: the capstone's HTTP/1.1 session (``helpers.reactor.http.ServerSession``, lesson
  19) with one answer: every ``GET`` (any path) gets ``200`` with the 3-byte body ``ok\\n``;
  another method gets 405. Keep-alive,
  pipelining and the limits are the capstone's: a request head over 8 KiB is answered 431,
  a malformed one 400, each with ``Connection: close``, and the connection closes. The
  peer's faults end that connection only; the server goes on.

``serve_blocking(conn, service)`` is the whole per-connection work of the blocking models
(fork, thread, pool): recv, the service's answer, sendall, until the peer closes.
"""

from __future__ import annotations

import socket

from .behaviours import check_connection
from .reactor.http import Request, Response, ServerSession

__all__ = ["SERVICES", "OK_BODY", "RECV_SIZE", "Echo", "OkRouter", "make_service", "serve_blocking"]

SERVICES = ("echo", "http")
OK_BODY = b"ok\n"  # the whole body of every HTTP answer
RECV_SIZE = 65536  # bytes asked of recv() at once: a loopback segment can be that large


class Echo:
    """Echo: every byte received is the answer; the connection closes when the peer's does."""

    __slots__ = ()

    def receive(self, data: bytes | bytearray | memoryview) -> tuple[bytes | bytearray | memoryview, bool]:
        """Bytes received -> (the same bytes to send back, close only at the peer's EOF)."""
        return data, not data


class OkRouter:
    """The http service's router: every GET (and HEAD), whatever its path, gets 200 ``ok\\n``."""

    def route(self, request: Request) -> Response:
        """200 ``ok\\n`` for GET and HEAD (ServerSession leaves HEAD's body out), 405 otherwise."""
        if request.method in ("GET", "HEAD"):
            return Response(200, OK_BODY, [("Content-Type", "text/plain")])
        return Response(405, b"method not allowed\n", [("Allow", "GET, HEAD")])


_ROUTER = OkRouter()  # it keeps no state: one router serves every connection


def make_service(name: str) -> Echo | ServerSession:
    """A fresh per-connection service object for `name` ('echo' or 'http')."""
    if name == "echo":
        return Echo()
    if name == "http":
        return ServerSession(_ROUTER)
    raise ValueError(f"service must be one of {SERVICES}, got {name!r}")


def serve_blocking(conn: socket.socket, service: str) -> int:
    """Serve one connection with blocking calls until the peer closes it (or the service
    closes it, after an answer such as 400); return how many reads were answered.

    This is the whole of the fork, thread and pool models' per-connection work: recv,
    compute the answer, sendall, repeat; b"" from recv() means the peer closed.
    """
    protocol = make_service(service)
    check_connection(conn, "serve_blocking")
    answered = 0
    while data := conn.recv(RECV_SIZE):
        answer, close = protocol.receive(data)
        if answer:
            conn.sendall(answer)
            answered += 1
        if close:
            break
    return answered
