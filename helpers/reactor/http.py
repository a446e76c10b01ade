"""HTTP/1.1 for a server, without I/O: bytes in, requests out; a response in, bytes out.

Theory of operation. This module never touches a socket (it is "sans-IO", as h11 is), so
the same code serves the reactor (``helpers.reactor.httpserver``), the asyncio server
(``helpers.reactor.aio``) and a test that feeds one byte at a time. Three layers:

* ``RequestParser`` turns a byte stream into ``Request`` objects (RFC 9112): a request line
  ``METHOD SP target SP HTTP/1.x CRLF``, header lines ``name: value CRLF``, an empty line,
  then a body of exactly ``Content-Length`` bytes. ``maybe_request()`` returns None while
  it needs more bytes, so pipelined requests (several in one recv()) come out one by one
  and a request split over many recv() calls comes out once it is whole.
* ``render_response()`` writes the answer, always with ``Content-Length``: the client
  never has to wait for a close to know where a body ends (the original course's C server
  answered 404 with ``Connection: close`` and no length).
* ``ServerSession`` is one connection's conversation: ``receive(data)`` parses every
  complete request, asks the ``Router`` for each answer and returns the bytes to send and
  whether to close afterwards. Keep-alive is the default in HTTP/1.1 unless the client
  says ``Connection: close``; HTTP/1.0 closes unless the client says ``keep-alive``.

Limits make it safe against a hostile peer, each answered with its own status:

* a request head (request line + headers) longer than ``max_head_bytes`` -> 431, as soon
  as so many bytes arrived without the empty line that it can no longer end in time
  (``max_head_bytes`` + the 3 bytes of an unfinished CRLF CRLF), not when it finally comes;
* a ``Content-Length`` above ``max_body_bytes`` -> 413, before any body byte is stored;
* anything malformed (a bad request line, a header without a colon, a bad or duplicate
  Content-Length, bare-LF line ends, an HTTP/1.1 request without exactly one ``Host``
  header, RFC 9112 section 3.2) -> 400; ``Transfer-Encoding`` (chunked bodies) -> 501
  (RFC 9112 section 6.1: a server that does not understand a transfer coding answers 501);
  an HTTP version other than 1.0 or 1.1 -> 505.

The head ends at its first empty line, wherever the bytes were split, so the same bytes
give the same requests and the same refusal however they arrive. After an error the
session answers once with ``Connection: close`` and ignores the rest: after a framing
error nobody knows where the next request would begin. An idle timeout
(slowloris defence) needs a clock, so it lives in the I/O layers, not here.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

__all__ = [
    "DEFAULT_MAX_HEAD_BYTES",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_KEPT_ERRORS",
    "HttpError",
    "Request",
    "Response",
    "RequestParser",
    "render_response",
    "Router",
    "ServerSession",
    "BodyLengthRule",
    "demo_router",
]

#: Longest request head accepted: 8 KiB. Precedents: nginx's large_client_header_buffers
#: is 8 KiB per line, Apache's LimitRequestFieldSize 8190 bytes, h11's whole head 16 KiB.
DEFAULT_MAX_HEAD_BYTES = 8 * 1024
#: Largest request body accepted: 1 MiB (nginx's client_max_body_size default is 1 MiB).
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: Route exceptions kept (the latest): enough to debug a route, and bounded, so a route that
#: always fails cannot grow the server's memory under a flood of keep-alive requests.
MAX_KEPT_ERRORS = 100

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    505: "HTTP Version Not Supported",
}

# RFC 9112 section 3: request-line = method SP request-target SP HTTP-version
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) HTTP/(\d)\.(\d)")
# RFC 9110 section 5: field-name is a token; the value has no CR, LF or NUL (OWS trimmed).

_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00\r\n]*?)[ \t]*")
# The same rules for the headers a route puts in its Response (text, sent as latin-1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[^\x00\r\n\u0100-\U0010ffff]*")
# The first empty line: LF then LF, or LF CR LF (the CRLF CRLF that ends a head holds it).
_EMPTY_LINE = re.compile(rb"\n\r?\n")


class HttpError(Exception):
    """The peer sent something we refuse; ``status`` is the answer to give (400, 413, ...)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status} {REASONS.get(status, '')}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class Request:
    """One parsed request. Header names are lower-cased bytes; ``version`` is '1.0' or '1.1'."""

    method: str
    target: str
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    keep_alive: bool = True

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (case-insensitive), decoded as latin-1."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return default


@dataclass(slots=True)
class Response:
    """What a route returns: a status, a body and extra headers (Content-Length is added)."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class RequestParser:
    """Feed bytes with ``feed()``; take complete requests with ``maybe_request()``.

    ``maybe_request()`` returns a Request, or None when it needs more bytes; it raises
    HttpError when the bytes cannot be a valid request or break a limit. Bytes after a
    complete request stay buffered for the next call (pipelining). ``buffered`` is how many
    bytes wait; they are at most one incomplete request of ``max_head_bytes`` +
    ``max_body_bytes``, plus complete ones not yet taken.
    """

    def __init__(self, *, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, body_length: BodyLengthRule | None = None):
        for name, value in (("max_head_bytes", max_head_bytes), ("max_body_bytes", max_body_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if body_length is not None and not callable(body_length):
            raise TypeError(f"body_length must be None or a function (Content-Length values) -> int, "
                            f"got {type(body_length).__name__} {body_length!r:.60}")
        #: None: the rule below (RFC 9110 section 8.6); else body_length(values) -> int, raising HttpError
        self.body_length = body_length
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._scanned = 0  # bytes already searched for the end of the head (slowloris: no rescans)
        self._head: Request | None = None  # a parsed head waiting for its body
        self._body_len = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a request."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes that arrived from the peer (TypeError for anything but bytes)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed() needs the bytes recv() returned, got {type(data).__name__}: {data!r:.60}")
        self._buf += data

    def maybe_request(self) -> Request | None:
        """The next complete request, or None if more bytes are needed."""
        buf = self._buf
        if self._head is None:
            empty = _EMPTY_LINE.search(buf, self._scanned)
            if empty is None:
                # The head could still end with a CRLF CRLF starting in the last 3 bytes.
                if len(buf) - 3 > self.max_head_bytes:
                    raise HttpError(431, f"request head over {self.max_head_bytes} bytes without its end")
                self._scanned = max(0, len(buf) - 2)
                return None
            lf = empty.start()
            end = lf - 1 if lf > 0 and buf[lf - 1] == 0x0D else lf  # where the head's last line ends
            if end > self.max_head_bytes:
                raise HttpError(431, f"request head of {end} bytes, limit {self.max_head_bytes}")
            if empty.end() - lf != 3 or end == lf:
                raise HttpError(400, "line ends must be CRLF (bare LF found)")
            head = bytes(buf[:end])
            del buf[: end + 4]
            self._scanned = 0
            self._head, self._body_len = self._parse_head(head)
        if len(buf) < self._body_len:
            return None
        request, self._head = self._head, None
        if self._body_len:
            request.body = bytes(buf[: self._body_len])
            del buf[: self._body_len]
            self._body_len = 0
        return request

    def _parse_head(self, head: bytes) -> tuple[Request, int]:
        lines = head.split(b"\r\n")  # a bare LF left inside a line fails both regexes: 400
        m = _REQUEST_LINE.fullmatch(lines[0])
        if m is None:
            raise HttpError(400, f"malformed request line {lines[0][:60]!r}")
        method, target, major, minor = m.groups()
        if (major, minor) not in ((b"1", b"1"), (b"1", b"0")):
            raise HttpError(505, f"HTTP/{major.decode()}.{minor.decode()} is not spoken here")
        version = "1.1" if minor == b"1" else "1.0"
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        connection = b""
        hosts = 0
        lengths: list[str] = []  # every Content-Length value, for a body_length rule
        for line in lines[1:]:
            h = _HEADER.fullmatch(line)
            if h is None:
                raise HttpError(400, f"malformed header line {line[:60]!r}")
            name, value = h.group(1).lower(), h.group(2)
            headers.append((name, value))
            if name == b"content-length" and self.body_length is not None:
                lengths.append(value.decode("latin-1"))
            elif name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    raise HttpError(400, f"Content-Length must be a decimal number, got {value[:30]!r}")
                if length is not None and int(value) != length:
                    raise HttpError(400, "two different Content-Length headers")
                length = int(value)
            elif name == b"transfer-encoding":
                raise HttpError(501, "Transfer-Encoding (e.g. chunked) is not supported; send Content-Length")
            elif name == b"connection":
                connection += b"," + value.lower()
            elif name == b"host":
                hosts += 1
        if version == "1.1" and hosts != 1:
            # RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request that lacks
            # Host or has more than one (an HTTP/1.0 client may leave it out).
            raise HttpError(400, f"an HTTP/1.1 request needs exactly one Host header, got {hosts}")
        if self.body_length is not None:
            length = self._ask_body_length(lengths)
        length = length or 0
        if length > self.max_body_bytes:
            raise HttpError(413, f"body of {length} bytes, limit {self.max_body_bytes}")
        if connection:
            tokens = {t.strip() for t in connection.split(b",")}
            # RFC 9112 section 9.3: "close" first, whatever the version; then 1.1 persists, 1.0 if "keep-alive"
            keep_alive = b"close" not in tokens and (version == "1.1" or b"keep-alive" in tokens)
        else:
            keep_alive = version == "1.1"
        request = Request(method.decode("ascii"), target.decode("latin-1"), version, headers,
                          keep_alive=keep_alive)
        return request, length


    def _ask_body_length(self, values: list[str]) -> int:
        """The body_length rule's answer: its HttpError goes to the peer; any other failure, or an
        answer that is not an int >= 0, is our bug, raised as TypeError/ValueError."""
        try:
            length = self.body_length(values)  # type: ignore[misc]
        except HttpError:
            raise
        except Exception as exc:
            raise ValueError(f"the body_length rule raised {type(exc).__name__}: {exc} on {values!r:.80}; "
                             "refuse a bad value with HttpError(400, reason)") from exc
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise TypeError(f"the body_length rule must return an int >= 0, got {length!r:.60} for {values!r:.80}")
        return length


#: A Content-Length rule: every value of the header in one request (as sent, OWS trimmed; an
#: empty list without one) -> the body's length; raise HttpError(400, ...) to refuse them.
BodyLengthRule = Callable[[list[str]], int]

_date_cache = [0, ""]


def _http_date() -> str:
    """The Date header value (RFC 9110 section 6.6.1), recomputed at most once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True)
    return _date_cache[1]


#: Header pairs already checked, with their line: a route sends the same few pairs on every
#: answer, and a dict lookup costs less than two regex matches (bounded: routes that make up
#: new values each time are checked each time).
_checked_lines: dict[tuple[str, str], str] = {}


def _header_line(pair: object) -> str:
    """``"name: value\r\n"`` for a (name, value) pair of str, after the checks in render_response."""
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
        raise TypeError(f"each header must be a (name, value) pair of str, got {pair!r:.80}")
    name, value = pair
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"header name {name!r:.80} is not a token (letters, digits, !#$%&'*+-.^_`|~; "
                         "no space, colon, CR or LF)")
    if _FIELD_VALUE.fullmatch(value) is None:
        raise ValueError(f"header {name} value {value!r:.80} holds CR, LF or NUL (header injection) or a "
                         "character outside latin-1; percent-encode it")
    line = f"{name}: {value}\r\n"
    if type(pair) is tuple and len(_checked_lines) < 1024:
        _checked_lines[pair] = line
    return line


def render_response(response: Response, *, keep_alive: bool, head_only: bool = False,
                    version: str = "1.1") -> bytes:
    """The bytes of `response`: status line, headers with Content-Length and Date, body.

    ``keep_alive=False`` adds ``Connection: close``; for HTTP/1.0 a kept connection says
    ``Connection: keep-alive``. ``head_only`` (a HEAD request) sends the length, not the body.

    Raises TypeError or ValueError (naming the field, showing the value) for a response
    the wire cannot carry: `response` not a Response, a status outside 100..599, a body
    that is not bytes, headers that are not (name, value) pairs of str, a name that is not
    an RFC 9110 token, a value holding CR, LF or NUL (header injection) or a character
    outside latin-1. Nothing is half-written: the checks come first.
    """
    if not isinstance(response, Response):
        raise TypeError(f"a route must return a Response, got {type(response).__name__}: {response!r:.80}")
    status, body = response.status, response.body
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"Response.status must be an int in 100..599, got {status!r}")
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"Response.body must be bytes, got {type(body).__name__}; encode text first, e.g. s.encode()")
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
             f"Content-Length: {len(body)}\r\nDate: {_http_date()}\r\n"]
    headers = response.headers
    if not isinstance(headers, (list, tuple)):
        raise TypeError(f"Response.headers must be a list of (name, value) pairs, got {type(headers).__name__}")
    for pair in headers:
        line = None
        if type(pair) is tuple:  # a route's usual, constant headers: looked up, not checked again
            try:
                line = _checked_lines.get(pair)
            except TypeError:  # something unhashable inside: _header_line says what is wrong
                pass
        if line is None:
            line = _header_line(pair)
        lines.append(line)
    if not keep_alive:
        lines.append("Connection: close\r\n")
    elif version == "1.0":
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + bytes(body)


Handler = Callable[[Request], Response]


class Router:
    """Exact-path routing: ``router.add('GET', '/', handler)``; unknown paths answer 404,
    known paths with another method 405 (with an Allow header), each with a length."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Route `method` (e.g. 'GET') on `path` (e.g. '/hello', no query string) to `handler`,
        a function taking a Request and returning a Response. Mistakes are refused here, when
        the route is added, not when the first request meets them."""
        if not isinstance(method, str) or not isinstance(path, str):
            raise TypeError(f"method and path must be str, got method={method!r}, path={path!r}")
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"method must be an HTTP token such as 'GET' or 'POST', got {method!r}")
        if not path.startswith("/"):
            raise ValueError(f"a path starts with '/', got {path!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable (request -> Response), got {type(handler).__name__} "
                            f"{handler!r:.60}")
        self.routes.setdefault(path, {})[method.upper()] = handler

    def route(self, request: Request) -> Response:
        """The handler's response for `request`, or a 404/405 response."""
        path = request.target.split("?", 1)[0]
        methods = self.routes.get(path)
        if methods is None:
            return Response(404, b"not found\n", [("Content-Type", "text/plain")])
        handler = methods.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            return Response(405, b"method not allowed\n", [("Allow", ", ".join(sorted(methods)))])
        return handler(request)


HELLO = b"Hello, world!\n"


def demo_router() -> Router:
    """The routes the lesson and the benchmark use: GET / (hello), POST /echo (the body back)."""
    router = Router()
    router.add("GET", "/", lambda req: Response(200, HELLO, [("Content-Type", "text/plain")]))
    router.add("POST", "/echo", lambda req: Response(200, req.body, [("Content-Type", "application/octet-stream")]))
    return router


class ServerSession:
    """One connection's HTTP conversation, without I/O.

    ``receive(data)`` returns ``(out, close)``: the bytes to send (answers to every complete
    request in `data`, in order) and whether to close the connection once they are sent.
    ``receive(b"")`` means the peer closed its side. ``requests`` counts answered requests.
    `body_length` replaces the parser's Content-Length rule (``RequestParser``).
    A route that raises, or returns something ``render_response`` refuses, is answered
    with 500 (the exception is kept in ``errors``); whatever the peer sends, this method
    never raises (only TypeError if `data` is not bytes: a bug in the I/O layer).
    """

    def __init__(self, router: Router, *, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, errors: deque[BaseException] | None = None,
                 body_length: BodyLengthRule | None = None):
        if not callable(getattr(router, "route", None)):
            raise TypeError(f"router must be a Router (an object with route(request)), got "
                            f"{type(router).__name__} {router!r:.60}")
        self.router = router
        self.parser = RequestParser(max_head_bytes=max_head_bytes, max_body_bytes=max_body_bytes,
                                    body_length=body_length)
        self.requests = 0
        self.closing = False
        #: the latest route exceptions; a server passes one deque shared by all its sessions
        self.errors: deque[BaseException] = errors if errors is not None else deque(maxlen=MAX_KEPT_ERRORS)

    def receive(self, data: bytes | bytearray | memoryview) -> tuple[bytes, bool]:
        """Feed bytes from the peer; return (bytes to send, close after sending)."""
        if self.closing:
            return b"", True
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"receive() needs the bytes recv() returned, got {type(data).__name__}: {data!r:.60}")
        if not data:  # EOF: answer nothing more; a half-sent request is dropped
            self.closing = True
            return b"", True
        parser = self.parser
        parser.feed(data)
        out: list[bytes] = []
        while True:
            try:
                request = parser.maybe_request()
            except HttpError as exc:
                body = f"{exc.detail}\n".encode("latin-1", "replace")
                out.append(render_response(Response(exc.status, body, [("Content-Type", "text/plain")]),
                                           keep_alive=False))
                self.closing = True
                break
            if request is None:
                break
            head_only = request.method == "HEAD"
            try:
                answer = render_response(self.router.route(request), keep_alive=request.keep_alive,
                                         head_only=head_only, version=request.version)
            except Exception as exc:  # noqa: BLE001 - a bug in a route must not kill the server
                self.errors.append(exc)
                answer = render_response(Response(500, b"internal server error\n"), keep_alive=request.keep_alive,
                                         head_only=head_only, version=request.version)
            self.requests += 1
            out.append(answer)
            if not request.keep_alive:
                self.closing = True
                break
            if not parser.buffered:  # the usual case: one request per read, nothing left
                break
        return b"".join(out) if len(out) != 1 else out[0], self.closing
