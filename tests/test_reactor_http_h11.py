"""helpers.reactor.http against h11: the same bytes, parsed by both, must give the same answer.

h11 is the reference sans-IO HTTP/1.1 implementation (and our parser's model). Hypothesis
builds requests (methods, targets, headers with odd but legal values, Content-Length bodies,
Connection headers, HTTP/1.0 and 1.1), pipelines several, and cuts the bytes at random
points; both parsers must then agree on every request (method, target, version, headers,
body, keep-alive) and, for requests that break RFC 9112 in a way both must refuse, on the
refusal and its status (h11's ``error_status_hint``).

Where the two differ on purpose, each case below says so with the RFC section that allows
both answers: our parser refuses what a teaching server need not handle (obs-fold, bare LF,
chunked bodies, a Content-Length list), and h11 leaves some choices to its user (HTTP/1.0
keep-alive, versions it does not speak). Both refuse an HTTP/1.1 request without exactly one
Host header, a MUST of RFC 9112 section 3.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.reactor.http import HttpError, RequestParser

fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# RFC 3986 characters of a path and query (ASCII only: see test_a_target_outside_ascii).
PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/%"
# A field value: visible ASCII, obs-text (0x80-0xff) and inner spaces and tabs (RFC 9110
# section 5.5). Both parsers also keep most other control characters (0x01, 0x7f), which
# section 5.5 allows; VT and FF they treat differently (test_vertical_tab_and_form_feed).
VALUE_BYTES = [b for b in range(0x01, 0x100) if b not in (0x0A, 0x0B, 0x0C, 0x0D)]
SPECIAL = {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"}


@dataclass
class Parsed:
    """What one parser made of a byte stream: the requests it completed, in order, and the
    status it refused the stream with (None if it did not)."""

    requests: list[tuple] = field(default_factory=list)
    refused: int | None = None


def ours(chunks: list[bytes]) -> Parsed:
    """Feed `chunks` to our RequestParser, one recv() each, until a request that closes."""
    out, parser = Parsed(), RequestParser()
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            try:
                req = parser.maybe_request()
            except HttpError as exc:
                out.refused = exc.status
                return out
            if req is None:
                break
            headers = [(k, v) for k, v in req.headers]
            out.requests.append((req.method.encode(), req.target.encode("latin-1"), req.version.encode(),
                                 headers, req.body, req.keep_alive))
            if not req.keep_alive:
                return out
    return out


def theirs(chunks: list[bytes]) -> Parsed:
    """Feed `chunks` to an h11 server connection, answering each request (an empty 200) so
    the next one can come, until a request after which h11 must close."""
    out, conn = Parsed(), h11.Connection(h11.SERVER)
    current: list | None = None
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                out.refused = exc.error_status_hint
                return out
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                current = [event.method, event.target, event.http_version, list(event.headers), b""]
            elif isinstance(event, h11.Data):
                current[4] += event.data
            elif isinstance(event, h11.EndOfMessage):
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                keep_alive = conn.our_state is h11.DONE
                out.requests.append((*current, keep_alive))
                if not keep_alive:
                    return out
                conn.start_next_cycle()
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (as many recv() calls would return it)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if b > a]


# -- the generator -----------------------------------------------------------------------------
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
ows = st.sampled_from(["", " ", "  ", "\t", " \t"])


@st.composite
def values(draw: st.DrawFn) -> bytes:
    """A field value with optional whitespace around it (both parsers strip it)."""
    inner = draw(st.lists(st.sampled_from(VALUE_BYTES), max_size=30).map(bytes))
    inner = inner.strip(b" \t")
    return draw(ows).encode() + inner + draw(ows).encode()


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["origin", "origin", "absolute", "asterisk"]))
    path = "/" + draw(st.text(PATH_CHARS, max_size=30))
    if draw(st.booleans()):
        path += "?" + draw(st.text(PATH_CHARS + "?", max_size=20))
    if kind == "absolute":
        return f"http://{draw(st.sampled_from(['x', 'example.org', '127.0.0.1:8080']))}{path}".encode()
    return b"*" if kind == "asterisk" else path.encode()


@st.composite
def requests(draw: st.DrawFn, *, last: bool) -> bytes:
    """One well-formed request. Only the `last` one may close the connection (HTTP/1.0, or
    Connection: close), so that both parsers read every request before it."""
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"])) if last else "1.1"
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]), tokens))
    headers: list[tuple[bytes, bytes]] = [(b"Host", draw(st.sampled_from([b"x", b"example.org", b"127.0.0.1:80"])))]
    for _ in range(draw(st.integers(0, 5))):
        name = draw(tokens.filter(lambda t: t.lower().encode() not in SPECIAL)).encode()
        headers.append((name, draw(values())))
    body = draw(st.binary(max_size=200)) if draw(st.booleans()) else b""
    if body or draw(st.booleans()):
        zeros = b"0" * draw(st.integers(0, 2))  # leading zeros are still a decimal number
        headers.append((draw(st.sampled_from([b"Content-Length", b"content-length"])), zeros + str(len(body)).encode()))
    if last and version == "1.1" and draw(st.booleans()):
        headers.append((b"Connection", draw(st.sampled_from([b"close", b"foo, close", b"Close"]))))
    elif version == "1.1" and draw(st.booleans()):
        headers.append((b"Connection", b"keep-alive"))
    draw(st.randoms()).shuffle(headers)
    head = f"{method} ".encode() + draw(targets()) + f" HTTP/{version}\r\n".encode()
    head += b"".join(name + b":" + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


@st.composite
def pipelines(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 4))
    return b"".join(draw(requests(last=i == n - 1)) for i in range(n))


def _agree(data: bytes, cuts: list[int]) -> Parsed:
    chunks = split(data, cuts)
    a, b = ours(chunks), theirs(chunks)
    assert a == b, f"{data!r} in {len(chunks)} pieces:\n ours  {a}\n h11   {b}"
    return a


@fuzz
@given(pipelines(), st.lists(st.integers(0, 5000), max_size=12))
def test_well_formed_pipelines_give_the_same_requests_however_cut(data: bytes, cuts: list[int]) -> None:
    got = _agree(data, cuts)
    assert got.refused is None and got.requests, got


@fuzz
@given(pipelines(), st.integers(0, 5000), st.lists(st.integers(0, 5000), max_size=6))
def test_a_cut_off_stream_gives_the_same_complete_requests(data: bytes, end: int, cuts: list[int]) -> None:
    """The connection ends anywhere: both return the requests that were whole, nothing more."""
    _agree(data[: end % (len(data) + 1)], cuts)


def test_one_byte_at_a_time() -> None:
    data = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Odd: \x01\x7f\xe9 tab\there\r\nConnection: close\r\n\r\n")
    got = _agree(data, list(range(len(data))))
    assert [r[:2] for r in got.requests] == [(b"POST", b"/echo"), (b"GET", b"/a?b=c")]


# -- what both must refuse ---------------------------------------------------------------------
GOOD = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
#: (why, broken request): each breaks RFC 9112/9110 in a way a server must refuse.
BROKEN = [
    ("a header line without a colon", GOOD.replace(b"Host: x", b"Host x")),
    ("whitespace between name and colon (RFC 9112 5.1)", GOOD.replace(b"Host: x", b"Host : x")),
    ("an empty field name", GOOD.replace(b"Host: x", b"Host: x\r\n: v")),
    ("a CR inside a value (RFC 9110 5.5)", GOOD.replace(b"Host: x", b"Host: x\r\nX: a\rb")),
    ("a NUL inside a value (RFC 9110 5.5)", GOOD.replace(b"Host: x", b"Host: x\r\nX: a\x00b")),
    ("two spaces in the request line", GOOD.replace(b"POST /p", b"POST  /p")),
    ("a space after the version", GOOD.replace(b"HTTP/1.1\r\n", b"HTTP/1.1 \r\n")),
    ("a lower-case protocol name (RFC 9112 2.3)", GOOD.replace(b"HTTP/1.1", b"http/1.1")),
    ("a method that is not a token", GOOD.replace(b"POST", b"PO(T")),
    ("no version", GOOD.replace(b" HTTP/1.1", b"")),
    ("a Content-Length that is not a number (RFC 9112 6.3)", GOOD.replace(b"Length: 2", b"Length: two")),
    ("a signed Content-Length", GOOD.replace(b"Length: 2", b"Length: +2")),
    ("an empty Content-Length", GOOD.replace(b"Length: 2", b"Length: ")),
    ("two different Content-Lengths (RFC 9112 6.3)", GOOD.replace(b"Length: 2", b"Length: 2\r\nContent-Length: 3")),
    ("a transfer coding nobody here knows (RFC 9112 6.1: 501)", GOOD.replace(b"Content-Length: 2",
                                                                              b"Transfer-Encoding: gzip")),
    ("whitespace before the first header (RFC 9112 2.2)", GOOD.replace(b"\r\nHost", b"\r\n Host")),
    ("an empty line before the request line (both refuse; RFC 9112 2.2 lets a server skip it)",
     b"\r\n" + GOOD),
]


@pytest.mark.parametrize(("why", "data"), BROKEN, ids=[w for w, _ in BROKEN])
def test_both_refuse_with_the_same_status(why: str, data: bytes) -> None:
    for cuts in ([], list(range(len(data)))):  # whole, and one byte at a time
        got = _agree(data, cuts)
        assert got.refused in (400, 501) and not got.requests, (why, got)


@fuzz
@given(pipelines(), st.sampled_from(BROKEN), st.lists(st.integers(0, 5000), max_size=8))
def test_a_broken_request_after_good_ones(good: bytes, broken: tuple[str, bytes], cuts: list[int]) -> None:
    """The good requests come out of both, then both refuse the broken one (if the good ones
    left the connection open)."""
    _agree(good.replace(b"Connection: close\r\n", b"").replace(b"HTTP/1.0", b"HTTP/1.1") + broken[1], cuts)


# -- where the two differ on purpose -------------------------------------------------------------
def _one(data: bytes) -> tuple[Parsed, Parsed]:
    return ours([data]), theirs([data])


def test_obs_fold_refused_here_unfolded_by_h11() -> None:
    """RFC 9112 section 5.2: a server MUST either reject obs-fold with 400 or replace it with
    spaces. We reject (one less way for two parsers to see different headers); h11 unfolds."""
    a, b = _one(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n")
    assert a.refused == 400
    assert b.refused is None and (b"x", b"a b") in b.requests[0][3]


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\nHost: x\n\n", b"GET / HTTP/1.1\r\nHost: x\n\r\n",
                                  b"GET / HTTP/1.1\nHost: x\r\n\r\n"], ids=["all", "last header", "request line"])
def test_bare_lf_refused_here_accepted_by_h11(data: bytes) -> None:
    """RFC 9112 section 2.2: a recipient MAY take a bare LF as a line end. We do not (CRLF
    only, the same rule our responses follow); h11 does."""
    a, b = _one(data)
    assert a.refused == 400 and b.refused is None and b.requests[0][:2] == (b"GET", b"/")


@pytest.mark.parametrize("codings", [b"chunked", b"gzip, chunked"])
def test_transfer_encoding_refused_here(codings: bytes) -> None:
    """RFC 9112 section 7 wants every HTTP/1.1 recipient to parse chunked; this teaching
    server does not, and answers 501 as section 6.1 says for a coding a server does not
    understand (the module's docstring says so). h11 decodes chunked bodies, and refuses
    other codings with 501 too."""
    body = b"2\r\nab\r\n0\r\n\r\n"
    a, b = _one(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + codings + b"\r\n\r\n" + body)
    assert a.refused == 501
    if codings == b"chunked":
        assert b.refused is None and b.requests[0][4] == b"ab"
    else:
        assert b.refused == 501


def test_transfer_encoding_with_content_length_refused_here() -> None:
    """RFC 9112 section 6.3: with both, Transfer-Encoding wins, and a server MAY refuse the
    message as a smuggling attempt. We refuse (501, as above); h11 reads it as chunked."""
    a, b = _one(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nab\r\n0\r\n\r\n")
    assert a.refused == 501 and b.refused is None and b.requests[0][4] == b"ab"


def test_a_content_length_list_refused_here() -> None:
    """RFC 9110 section 8.6: a Content-Length list of one repeated value ("2, 2") MAY be
    rejected or taken as that value. We reject it; h11 takes 2. (Two separate Content-Length
    lines with the same value both accept.)"""
    a, b = _one(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nab")
    assert a.refused == 400 and b.refused is None and b.requests[0][4] == b"ab"
    a, b = _one(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab")
    assert a.refused is None and b.refused is None and a.requests[0][4] == b.requests[0][4] == b"ab"


def test_a_content_length_of_more_than_18_digits_refused_here() -> None:
    """RFC 9110 section 8.6: a recipient must not let a huge number overflow. We refuse more
    than 18 digits (400; any length above max_body_bytes gets 413 first); h11 takes the number
    and waits for the body."""
    a, b = _one(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 19 + b"\r\n\r\nab")
    assert a.refused == 400 and b.refused is None and b.requests == []


def test_http10_keep_alive_kept_here_closed_by_h11() -> None:
    """RFC 9112 appendix C.2.2: an HTTP/1.0 client asks for a persistent connection with
    "Connection: keep-alive", and a server MAY keep it. We do (lesson 19 shows it); h11
    always closes an HTTP/1.0 connection."""
    data = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    a, b = _one(data * 2)
    assert [r[5] for r in a.requests] == [True, True]
    assert [r[5] for r in b.requests] == [False]


@pytest.mark.parametrize("version", [b"1.2", b"2.0"])
def test_other_versions_refused_here_passed_on_by_h11(version: bytes) -> None:
    """We answer 505 to any version but 1.0 and 1.1 (RFC 9110 section 15.6.6); h11 passes the
    version on and leaves the choice to its user. For HTTP/1.2, RFC 9110 section 2.5 says a
    server SHOULD answer as if it were 1.1: a choice we made against a SHOULD, as no 1.2 exists."""
    a, b = _one(b"GET / HTTP/" + version + b"\r\nHost: x\r\n\r\n")
    assert a.refused == 505 and b.refused is None and b.requests[0][2] == version


def test_a_target_outside_ascii_accepted_here_refused_by_h11() -> None:
    """RFC 9112 section 3.2: the request target is a URI (ASCII). We accept other bytes
    (decoded as latin-1: the route simply does not match); h11 refuses the request line."""
    a, b = _one(b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert a.refused is None and a.requests[0][1] == b"/caf\xe9" and b.refused == 400


@pytest.mark.parametrize("char", [b"\x0b", b"\x0c"], ids=["VT", "FF"])
def test_vertical_tab_and_form_feed_in_a_value_kept_here_refused_by_h11(char: bytes) -> None:
    """RFC 9110 section 5.5: control characters other than CR, LF and NUL in a field value
    are invalid, but a recipient MAY keep them. We keep every one; h11 keeps most (0x01,
    0x7f) but refuses the whitespace ones, VT and FF."""
    a, b = _one(b"GET / HTTP/1.1\r\nHost: x\r\nX: a" + char + b"b\r\n\r\n")
    assert a.refused is None and (b"x", b"a" + char + b"b") in a.requests[0][3] and b.refused == 400


@pytest.mark.parametrize("headers", [b"", b"Host: x\r\nHost: y\r\n"], ids=["missing", "twice"])
def test_an_http11_request_without_exactly_one_host_is_refused(headers: bytes) -> None:
    """RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host
    header, or with more than one. Both parsers do."""
    a, b = _one(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
    assert b.refused == 400
    assert a.refused == 400
