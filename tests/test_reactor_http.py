"""helpers.reactor.http: the sans-IO HTTP/1.1 parser, responses and session, fed three ways."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.reactor.http import (
    HttpError,
    RequestParser,
    Response,
    Router,
    ServerSession,
    demo_router,
    render_response,
)

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing:  spaced value \r\n\r\n"
POST = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


def parse_all(data: bytes, **limits: object) -> list:
    p = RequestParser(**limits)
    p.feed(data)
    out = []
    while (req := p.maybe_request()) is not None:
        out.append(req)
    return out


def test_whole_request():
    [req] = parse_all(GET)
    assert (req.method, req.target, req.version, req.keep_alive) == ("GET", "/a?b=1", "1.1", True)
    assert req.header("x-thing") == "spaced value"
    assert req.header("HOST") == "x" and req.header("missing") is None


def test_one_byte_at_a_time_needs_more_until_complete():
    p = RequestParser()
    for i, byte in enumerate(POST):
        p.feed(bytes([byte]))
        req = p.maybe_request()
        if i < len(POST) - 1:
            assert req is None, f"a request came out after {i + 1} of {len(POST)} bytes"
    assert req is not None and req.body == b"hello"


def test_trailing_bytes_stay_buffered_for_pipelining():
    p = RequestParser()
    p.feed(POST + GET + b"GET / HT")
    assert p.maybe_request().body == b"hello"
    assert p.maybe_request().target == "/a?b=1"
    assert p.maybe_request() is None and p.buffered == len(b"GET / HT")


def test_http10_closes_unless_keep_alive_and_connection_close_in_11():
    assert parse_all(b"GET / HTTP/1.0\r\n\r\n")[0].keep_alive is False
    assert parse_all(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")[0].keep_alive is True
    assert parse_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0].keep_alive is False
    assert parse_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n")[0].keep_alive is False
    # RFC 9112 section 9.3: "close" is looked at first, whatever the version
    assert parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")[0].keep_alive is False


def test_a_body_length_rule_replaces_the_content_length_rule():
    seen = []

    def rule(values: list[str]) -> int:
        seen.append(values)
        if values == ["nine"]:
            raise HttpError(400, "not a number")
        return 3 if values else 0

    [req] = parse_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\ncontent-length: 7 , 7\r\n\r\nabc",
                      body_length=rule)
    assert req.body == b"abc" and seen == [["7", "7 , 7"]]
    assert parse_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", body_length=rule)[0].body == b"" and seen[-1] == []
    with pytest.raises(HttpError, match=r"^400 Bad Request: not a number$"):
        parse_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n", body_length=rule)
    with pytest.raises(HttpError, match=r"^413 "):  # the body limit still holds
        parse_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", body_length=rule, max_body_bytes=2)


def test_a_broken_body_length_rule_is_our_error_not_the_peers():
    def raises(values: list[str]) -> int:
        return int(values[0])

    with pytest.raises(ValueError, match=r"^the body_length rule raised ValueError: invalid literal .*HttpError\(400, "
                       r"reason\)$"):
        parse_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", body_length=raises)
    with pytest.raises(TypeError, match=r"^the body_length rule must return an int >= 0, got -1 for \['1'\]$"):
        parse_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n", body_length=lambda v: -1)
    with pytest.raises(TypeError, match=r"^body_length must be None or a function"):
        RequestParser(body_length=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # RFC 9112 section 3.2: HTTP/1.1 needs exactly one Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
])
def test_refusals_have_their_status(data: bytes, status: int):
    with pytest.raises(HttpError) as info:
        parse_all(data)
    assert info.value.status == status


def test_an_http10_request_may_leave_host_out():
    """RFC 9112 section 3.2 asks Host of HTTP/1.1 only: an HTTP/1.0 client may not know it."""
    [req] = parse_all(b"GET / HTTP/1.0\r\n\r\n")
    assert req.version == "1.0" and req.header("host") is None


def test_head_limit_refuses_before_the_end_arrives():
    p = RequestParser(max_head_bytes=100)
    p.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 200)  # no blank line yet
    with pytest.raises(HttpError, match=r"^431 Request Header Fields Too Large: request head over 100 bytes"):
        p.maybe_request()


def test_body_limit_refuses_before_the_body_arrives():
    p = RequestParser(max_body_bytes=10)
    p.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(HttpError, match=r"^413 "):
        p.maybe_request()


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match=r"^max_head_bytes must be an int >= 0, got -1$"):
        RequestParser(max_head_bytes=-1)


def test_every_response_has_content_length():
    raw = render_response(Response(404, b"nope"), keep_alive=False)
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"\r\nContent-Length: 4" in head
    assert b"\r\nConnection: close" in head and body == b"nope"
    assert render_response(Response(200, b"abc"), keep_alive=True, head_only=True).endswith(b"\r\n\r\n")
    with pytest.raises(ValueError, match="header injection"):
        render_response(Response(200, b"", [("X", "a\r\nSet-Cookie: x")]), keep_alive=True)


def test_router_404_405_and_500():
    router = demo_router()
    router.add("GET", "/boom", lambda req: 1 / 0)
    s = ServerSession(router)
    out, close = s.receive(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\nDELETE / HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    statuses = re.findall(rb"HTTP/1.1 (\d+)", out)
    assert statuses == [b"404", b"405", b"500"] and not close
    assert b"Allow: GET" in out and isinstance(s.errors[0], ZeroDivisionError)
    with pytest.raises(ValueError, match="starts with '/'"):
        Router().add("GET", "x", lambda r: Response())


def test_session_answers_pipelined_requests_in_order_and_closes_on_error():
    s = ServerSession(demo_router())
    out, close = s.receive(POST + GET + b"BAD LINE\r\n\r\n" + GET)
    assert re.findall(rb"HTTP/1.1 (\d+)", out) == [b"200", b"404", b"400"] and close
    assert s.receive(GET) == (b"", True)  # nothing more after the error


def test_session_eof():
    s = ServerSession(demo_router())
    assert s.receive(b"GET / HT") == (b"", False)
    assert s.receive(b"") == (b"", True)


# -- properties ----------------------------------------------------------------------------
REQUESTS = [GET, POST, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"]


@given(st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=4), st.data())
@settings(max_examples=200, deadline=None)
def test_any_split_parses_the_same(requests: list[bytes], data: st.DataObject):
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    whole = parse_all(stream)
    p, got = RequestParser(), []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        p.feed(stream[a:b])
        while (req := p.maybe_request()) is not None:
            got.append(req)
    assert got == whole and len(got) == len(requests)


@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=10))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_raise_out_of_the_session(data: bytes, sizes: list[int]):
    s = ServerSession(demo_router(), max_head_bytes=128, max_body_bytes=64)
    out, pos = b"", 0
    for size in [*sizes, len(data)]:
        chunk, pos = data[pos: pos + size], pos + size
        if chunk:
            more, close = s.receive(chunk)
            out += more
            if close:
                break
    for status in re.findall(rb"HTTP/1.1 (\d{3}) ", out):
        assert status in (b"200", b"404", b"405", b"400", b"413", b"431", b"501", b"505")
    heads = [h for h in out.split(b"\r\n\r\n") if h.startswith(b"HTTP/1.1 ")]
    assert all(b"\r\nContent-Length: " in h for h in heads)  # every answer says its length
    if s.closing and heads:  # the session closes after its last answer, which says so
        assert b"\r\nConnection: close" in heads[-1]


@given(st.integers(0, 200), st.integers(0, 200))
@settings(max_examples=100, deadline=None)
def test_limits_hold_for_any_size(head_pad: int, body: int):
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nX: " + b"a" * head_pad + f"\r\nContent-Length: {body}\r\n\r\n".encode()
    data = head + b"b" * body
    head_len = data.index(b"\r\n\r\n")
    try:
        reqs = parse_all(data, max_head_bytes=120, max_body_bytes=100)
    except HttpError as exc:
        assert (exc.status == 431 and head_len > 120) or (exc.status == 413 and body > 100 and head_len <= 120)
    else:
        assert head_len <= 120 and body <= 100 and reqs[0].body == b"b" * body
