"""Hostile bytes against every parser, and random bytes from real sockets against the servers.

Two halves. The sans-IO parsers (framing, reactor.http, packets, reliable_udp, chat, the lab
grader's readers) are fed arbitrary and near-valid bytes: each must return a result, ask for
more, or raise only its documented error class with a message; keep its buffer within its
documented limit; and give the same result however the bytes are split. Then the servers that
parse peer bytes (the reactor HttpServer with 0 and 2 sub-reactors, the asyncio server, a chat
room on the reactor, the reliable-UDP receiver) take ~20 hostile clients each over loopback, and
must still serve a polite client, keep their threads, keep no handler error, and give back
every fd once the hostile clients are gone.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import chat, framing, packets, reliable_udp
from helpers.chat import ChatRoom, Close, Send
from helpers.framing import HEADER, FramingError, LineDecoder, Message, MessageDecoder
from helpers.labs.grade import read_results
from helpers.labs.source import LabError, load_lab
from helpers.labs.source import Test as LabTest
from helpers.reactor.aio import AsyncioHttpServer
from helpers.reactor.connection import TcpConnection
from helpers.reactor.http import HttpError, RequestParser, Response, Router, ServerSession, demo_router, render_response
from helpers.reactor.httpserver import HttpServer
from helpers.reactor.server import TcpServer
from helpers.servers import UDPServer

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
few = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cuts_st = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid message with one byte flipped, a cut, an extension, a 0xFF/NUL run, or a field overwritten."""
    data = bytearray(valid)
    how = draw(st.sampled_from(["flip", "truncate", "extend", "ff", "nul", "overwrite"]))
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if how == "flip" and data:
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        del data[at:]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how in ("ff", "nul"):
        run = draw(st.integers(1, 16))
        data[at : at + run] = (b"\xff" if how == "ff" else b"\0") * run
    elif data:
        data[at : at + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


# -- helpers.framing --------------------------------------------------------------------------

LIMIT = 64  # small, so that random headers are often within it and often over it


def run_message_decoder(chunks: list[bytes], *, eof: bool) -> tuple[list[Message], tuple | None]:
    """Feed chunk by chunk, take messages out after each; the messages and (error class, value)."""
    decoder = MessageDecoder(max_message_size=LIMIT)
    got: list[Message] = []
    error: FramingError | None = None
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            got += decoder.next_messages()
            assert decoder.buffered <= HEADER.size + LIMIT, decoder.buffered  # one incomplete message at most
        if eof:
            decoder.feed_eof()
    except FramingError as exc:
        error = exc
        assert str(exc)
        while True:  # the messages complete before the offending header, then the same error again
            try:
                msg = decoder.maybe_next_message()
            except FramingError as again:
                assert again is exc
                break
            assert msg is not None, "a broken decoder must raise, not ask for more"
            got.append(msg)
        assert decoder.buffered == 0  # the offending bytes were dropped, not kept
    return got, None if error is None else (type(error), getattr(error, "value", None))


@fuzz
@given(st.binary(max_size=400), cuts_st, st.booleans())
def test_message_decoder_random_bytes_same_result_for_any_split(data: bytes, cuts: list[int], eof: bool) -> None:
    assert run_message_decoder(split_at(data, cuts), eof=eof) == run_message_decoder([data], eof=eof)


@fuzz
@given(st.data())
def test_message_decoder_near_valid_messages(data: st.DataObject) -> None:
    bodies = data.draw(st.lists(st.binary(max_size=LIMIT), min_size=1, max_size=4))
    valid = b"".join(framing.encode_message(b, i) for i, b in enumerate(bodies))
    wire = data.draw(mutated(valid))
    cuts = data.draw(cuts_st)
    whole = run_message_decoder([wire], eof=True)
    assert run_message_decoder(split_at(wire, cuts), eof=True) == whole
    if wire == valid:
        assert whole == ([Message(i, b) for i, b in enumerate(bodies)], None)


def test_message_decoder_giant_length_refused_before_buffering_and_earlier_messages_kept() -> None:
    decoder = MessageDecoder(max_message_size=LIMIT)
    with pytest.raises(framing.RemoteProtocolError, match=r"^peer announced a 4294967295-byte message"):
        decoder.feed(framing.encode_message(b"ok") + b"\xff" * 8 + b"x" * 10_000)
    assert decoder.buffered == HEADER.size + 2  # the good message only: the rest was dropped at once
    assert decoder.maybe_next_message() == Message(1, b"ok")
    with pytest.raises(framing.RemoteProtocolError):
        decoder.maybe_next_message()
    with pytest.raises(framing.RemoteProtocolError):
        decoder.feed(b"more")


def run_line_decoder(chunks: list[bytes], *, eof: bool, limit: int = 32) -> tuple[list[bytes], tuple | None]:
    decoder = LineDecoder(max_line_size=limit)
    got: list[bytes] = []
    error = None
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (line := decoder.maybe_next_line()) is not None:
                got.append(line)
            assert decoder.buffered <= limit + 1  # one unfinished line and maybe its CR
        if eof:
            decoder.feed_eof()
    except FramingError as exc:
        # .value of an over-long line is "at least this many bytes": what had arrived, split-dependent
        error = (type(exc), None if isinstance(exc, framing.IncompleteReadError) else exc.value > limit)
        assert str(exc)
        while True:
            try:
                line = decoder.maybe_next_line()
            except FramingError:
                break
            assert line is not None
            got.append(line)
        assert decoder.buffered == 0
    return got, error


@fuzz
@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\0", b"\xff", b"xyz" * 7]), max_size=60),
       cuts_st, st.booleans())
def test_line_decoder_hostile_lines_same_result_for_any_split(parts: list[bytes], cuts: list[int], eof: bool) -> None:
    data = b"".join(parts)
    whole = run_line_decoder([data], eof=eof)
    assert run_line_decoder(split_at(data, cuts), eof=eof) == whole
    assert all(len(line) <= 32 and b"\n" not in line for line in whole[0])


@fuzz
@given(st.binary(max_size=300), cuts_st)
def test_line_decoder_random_bytes(data: bytes, cuts: list[int]) -> None:
    assert run_line_decoder(split_at(data, cuts), eof=True) == run_line_decoder([data], eof=True)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: MessageDecoder().feed("text"), TypeError, r"^feed\(\) needs the bytes recv\(\) returned, got str"),
    (lambda: LineDecoder().feed(None), TypeError, r"^feed\(\) needs the bytes recv\(\) returned, got NoneType"),
    (lambda: MessageDecoder(-1), ValueError, r"^max_message_size must be an int in 0\.\.4294967295, got -1$"),
    (lambda: MessageDecoder(2**32), ValueError, r"^max_message_size must be an int in 0\.\.4294967295, got"),
    (lambda: LineDecoder(True), ValueError, r"^max_line_size must be an int in 0\.\.1073741824, got True$"),
    (lambda: framing.encode_message(None), framing.LocalProtocolError, r"^body must be bytes, got NoneType"),
    (lambda: framing.encode_message(b"", 2**32), framing.LocalProtocolError, r"^message type must be an int"),
    (lambda: framing.encode_message(b"", 1.5), framing.LocalProtocolError, r"^message type must be an int"),
    (lambda: framing.encode_message(b"", max_message_size=-1), ValueError, r"^max_message_size must be an int"),
    (lambda: framing.encode_line("x"), framing.LocalProtocolError, r"^line must be bytes, got str"),
    (lambda: framing.encode_line(b"a\nb"), framing.LocalProtocolError, r"^a line cannot contain LF"),
    (lambda: framing.encode_line(b"a", terminator=b"\r"), framing.LocalProtocolError, r"^terminator must be"),
    (lambda: framing.byteswap32(-1), ValueError, r"^value must be an int in 0\.\.4294967295, got -1$"),
])
def test_framing_bad_arguments_are_named(call: Callable[[], object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_encode_message_counts_bytes_not_items_of_a_memoryview() -> None:
    import array

    body = memoryview(array.array("I", [1, 2]))  # 2 items, 8 bytes
    wire = framing.encode_message(body)
    decoder = MessageDecoder()
    decoder.feed(wire)
    assert decoder.maybe_next_message() == Message(1, body.tobytes()) and decoder.buffered == 0


@pytest.mark.parametrize("deadline", [0, -1, math.nan, math.inf, 1e300, "1", True])
def test_read_message_refuses_a_deadline_it_cannot_keep(deadline: object) -> None:
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match=r"^deadline_s must be a number of seconds > 0, or None; got"):
            framing.read_message(a, deadline_s=deadline)  # type: ignore[arg-type]
        assert a.gettimeout() is None


@few
@given(st.binary(max_size=300), cuts_st)
def test_read_message_and_read_line_over_a_socket_never_hang_or_leak(data: bytes, cuts: list[int]) -> None:
    for reader in (framing.read_message, framing.read_line):
        a, b = socket.socketpair()
        with a, b:
            for chunk in split_at(data, cuts):
                b.sendall(chunk)
            b.close()
            try:
                while reader(a, deadline_s=2) is not None:
                    pass
            except FramingError as exc:
                assert str(exc)


# -- helpers.reactor.http ---------------------------------------------------------------------

HEAD, BODY = 200, 100


def run_parser(chunks: list[bytes]) -> tuple[list[tuple], int | None]:
    parser = RequestParser(max_head_bytes=HEAD, max_body_bytes=BODY)
    got: list[tuple] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (req := parser.maybe_request()) is not None:
                got.append((req.method, req.target, req.version, req.headers, req.body, req.keep_alive))
            assert parser.buffered <= max(HEAD + 3, BODY), parser.buffered  # one incomplete request at most
    except HttpError as exc:
        assert 400 <= exc.status <= 599 and exc.detail
        return got, exc.status
    return got, None


VALID_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /a?b=c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]
http_fragments = st.sampled_from([b"GET", b" ", b"/", b"HTTP/1.1", b"HTTP/9.9", b"\r\n", b"\n", b"\r", b":", b"\0",
                                  b"Content-Length: ", b"99999999999999999999", b"3", b"Transfer-Encoding: chunked",
                                  b"Connection: close", b"X", b"\xff\xfe", b"a" * 50])


@fuzz
@given(st.one_of(st.binary(max_size=500), st.lists(http_fragments, max_size=40).map(b"".join)), cuts_st)
def test_request_parser_random_bytes_same_result_for_any_split(data: bytes, cuts: list[int]) -> None:
    assert run_parser(split_at(data, cuts)) == run_parser([data])


@fuzz
@given(st.data())
def test_request_parser_near_valid_requests(data: st.DataObject) -> None:
    valid = b"".join(data.draw(st.lists(st.sampled_from(VALID_REQUESTS), min_size=1, max_size=3)))
    wire = data.draw(mutated(valid))
    assert run_parser(split_at(wire, data.draw(cuts_st))) == run_parser([wire])


def test_request_parser_head_of_exactly_the_limit_is_accepted_whatever_the_split() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * (HEAD - 28)
    assert len(head) == HEAD
    for cut in range(len(head), len(head) + 4):
        wire = head + b"\r\n\r\n"
        requests, error = run_parser([wire[:cut], wire[cut:]])
        assert error is None and len(requests) == 1
    assert run_parser([head + b"a\r\n\r"])[1] == 431  # one byte more can never end in time


def parse_responses(out: bytes) -> list[tuple[int, dict[bytes, bytes]]]:
    """Split a session's output into (status, headers) and check each carries its own length."""
    found = []
    while out:
        head, sep, rest = out.partition(b"\r\n\r\n")
        assert sep, out[:200]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(headers[b"Content-Length"])
        out = rest[length:]
        found.append((status, headers))
    return found


@fuzz
@given(st.one_of(st.binary(max_size=500), st.lists(http_fragments, max_size=40).map(b"".join),
                 st.lists(st.sampled_from(VALID_REQUESTS), max_size=3).map(b"".join)), cuts_st)
def test_server_session_never_raises_and_every_error_answer_closes(data: bytes, cuts: list[int]) -> None:
    session = ServerSession(demo_router(), max_head_bytes=HEAD, max_body_bytes=BODY)
    answers = []
    for chunk in split_at(data, cuts):
        out, close = session.receive(chunk)
        answers += parse_responses(out)
        if close:
            assert session.receive(b"more") == (b"", True)  # ignores the rest
            break
    for status, headers in answers:
        if status >= 400 and status not in (404, 405):
            assert headers.get(b"Connection") == b"close", (status, headers)
            assert answers[-1] == (status, headers)  # nothing after a refusal
    assert not session.errors


@pytest.mark.parametrize(("response", "error", "match"), [
    ("not a response", TypeError, r"^a route must return a Response, got str"),
    (Response(99), ValueError, r"^Response\.status must be an int in 100\.\.599, got 99$"),
    (Response("200"), ValueError, r"^Response\.status must be an int in 100\.\.599, got '200'$"),
    (Response(200, "text"), TypeError, r"^Response\.body must be bytes, got str"),
    (Response(200, b"", [("X", 5)]), TypeError, r"^each header must be a \(name, value\) pair of str, got \('X', 5\)$"),
    (Response(200, b"", [("X",)]), TypeError, r"^each header must be a \(name, value\) pair of str"),
    (Response(200, b"", {"X": "y"}), TypeError, r"^Response\.headers must be a list of \(name, value\) pairs"),
    (Response(200, b"", [("X: y", "v")]), ValueError, r"^header name 'X: y' is not a token"),
    (Response(200, b"", [("", "v")]), ValueError, r"^header name '' is not a token"),
    (Response(200, b"", [("X", "a\r\nSet-Cookie: z")]), ValueError, r"^header X value .* holds CR, LF or NUL"),
    (Response(200, b"", [("X", "a\0")]), ValueError, r"^header X value .* holds CR, LF or NUL"),
    (Response(200, b"", [("X", "\u20ac")]), ValueError, r"^header X value '\u20ac' .* outside latin-1"),
])
def test_render_response_refuses_what_the_wire_cannot_carry(response: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        render_response(response, keep_alive=True)  # type: ignore[arg-type]


def test_a_route_returning_garbage_is_a_500_not_an_escaped_exception() -> None:
    router = Router()
    router.add("GET", "/none", lambda req: None)  # type: ignore[arg-type,return-value]
    router.add("GET", "/inject", lambda req: Response(200, b"", [("X", "a\r\nb")]))
    for path in ("/none", "/inject"):
        session = ServerSession(router)
        out, close = session.receive(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 500 ") and not close and len(session.errors) == 1
    with pytest.raises(TypeError, match=r"^receive\(\) needs the bytes recv\(\) returned, got str"):
        ServerSession(router).receive("GET / HTTP/1.1\r\n\r\n")  # type: ignore[arg-type]


# -- helpers.packets --------------------------------------------------------------------------


def tcp_frame(options: bytes = b"", payload: bytes = b"hi", ipv6: bool = False) -> bytes:
    offset = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIHHHH", 1234, 80, 1, 2, (offset << 12) | 0x18, 65535, 0, 0) + options + payload
    if ipv6:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, b"\0" * 15 + b"\1", b"\0" * 15 + b"\1")
        return b"\0" * 12 + b"\x86\xdd" + ip + tcp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
    return b"\0" * 12 + b"\x08\x00" + ip + tcp


ICMP_FRAME = (b"\0" * 12 + b"\x08\x00"
              + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 1, 0, 64, 1, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
              + packets.build_icmp_echo(7, 1, b"12345678"))
VALID_FRAMES = [tcp_frame(), tcp_frame(b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02\x08\x0a" + b"\0" * 8),
                tcp_frame(ipv6=True), ICMP_FRAME]


@fuzz
@given(st.data())
def test_packet_parsers_raise_only_value_error_on_near_valid_frames(data: st.DataObject) -> None:
    frame = data.draw(mutated(data.draw(st.sampled_from(VALID_FRAMES))))
    for parse, start in [(packets.parse_frame, 0), (packets.parse_ethernet, 0), (packets.parse_ipv4, 14),
                         (packets.parse_ipv6, 14), (packets.parse_tcp, 34), (packets.parse_tcp, 54),
                         (packets.parse_icmp, 34)]:
        try:
            parse(frame[start:])
        except ValueError as exc:
            assert str(exc)


@fuzz
@given(st.binary(max_size=40), st.integers(0, 15), st.integers(0, 15))  # 40: a 4-bit data offset
# counts at most 15 words, 5 of them the fixed header
def test_tcp_options_and_offsets_of_any_length(options: bytes, data_offset: int, ihl: int) -> None:
    frame = bytearray(tcp_frame(options[: len(options) // 4 * 4]))
    frame[14] = 0x40 | ihl
    frame[34 + 12] = (data_offset << 4) | (frame[34 + 12] & 0x0F)
    try:
        f = packets.parse_frame(bytes(frame))
    except ValueError as exc:
        assert "IPv4" in str(exc) or "TCP" in str(exc)
    else:
        if ihl == 5:  # the TCP header is where we wrote its data offset
            assert f.tcp is not None and f.tcp.header_length == data_offset * 4 >= 20


@pytest.mark.parametrize("parse", [packets.parse_frame, packets.parse_ethernet, packets.parse_ipv4,
                                   packets.parse_ipv6, packets.parse_tcp, packets.parse_icmp,
                                   packets.internet_checksum])
@pytest.mark.parametrize("junk", ["x" * 64, None, 42])
def test_packet_parsers_name_a_non_bytes_argument(parse: Callable[[object], object], junk: object) -> None:
    with pytest.raises(TypeError, match=r"^data must be bytes \(a captured frame or packet\), got "):
        parse(junk)


def test_build_icmp_echo_names_a_text_payload() -> None:
    with pytest.raises(TypeError, match=r"^payload must be bytes \(a captured frame or packet\), got str"):
        packets.build_icmp_echo(1, 1, "x")  # type: ignore[arg-type]


# -- helpers.reliable_udp ---------------------------------------------------------------------


@fuzz
@given(st.one_of(st.binary(max_size=40), st.builds(lambda s, p: reliable_udp.encode_data(s, p),
                                                     st.integers(0, 2**32 - 1), st.binary(max_size=20))
                 .flatmap(mutated), st.builds(reliable_udp.encode_ack, st.integers(0, 2**32 - 1),
                                              st.integers(0, 2**32 - 1)).flatmap(mutated)))
def test_reliable_udp_decode_and_receiver_take_anything(datagram: bytes) -> None:
    try:
        packet = reliable_udp.decode(datagram)
    except reliable_udp.MalformedPacket as exc:
        assert str(exc)
    else:
        assert isinstance(packet, (reliable_udp.Data, reliable_udp.Ack))
    receiver = reliable_udp.Receiver(max_buffered=4)
    ack = receiver.datagram_received(datagram)
    assert ack is None or isinstance(reliable_udp.decode(ack), reliable_udp.Ack)
    assert len(receiver.buffer) <= 4


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: reliable_udp.decode("\x01abcd"), TypeError, r"^decode\(\) needs the bytes recvfrom\(\) returned, got str"),
    (lambda: reliable_udp.decode(None), TypeError, r"^decode\(\) needs the bytes recvfrom\(\) returned, got NoneType$"),
    (lambda: reliable_udp.encode_data(1, "x"), TypeError, r"^payload must be bytes, got str"),
    (lambda: reliable_udp.encode_data("1", b""), ValueError, r"^seq must be an int in 0-4294967295 \(a u32\)"),
    (lambda: reliable_udp.encode_ack(0, 2**32), ValueError, r"^next_expected must be an int in 0-4294967295"),
])
def test_reliable_udp_bad_arguments_are_named(call: Callable[[], object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


# -- helpers.chat -----------------------------------------------------------------------------


def chat_run(chunks: list[bytes], limit: int = 40) -> list[object]:
    room = ChatRoom(max_line_size=limit)
    room.join("a")
    room.join("b")
    actions = []
    for chunk in filter(None, chunks):  # b"" would mean end of stream
        if "a" not in room.members:
            break
        actions += room.receive("a", chunk)
    return actions


chat_fragments = st.sampled_from([b"hi", b"\n", b"\r\n", b"\0", b"\xff\xfe", b"/name ", b"/name", b"bob", b"\x1b[31m",
                                  b"\t", b"x" * 30, "\u00e9\u2603".encode()])


@fuzz
@given(st.one_of(st.binary(max_size=300), st.lists(chat_fragments, max_size=30).map(b"".join)), cuts_st)
def test_chat_room_same_actions_for_any_split_and_never_raises(data: bytes, cuts: list[int]) -> None:
    whole = chat_run([data])
    assert chat_run(split_at(data, cuts)) == whole
    for action in whole:
        if isinstance(action, Send):
            assert action.data.endswith(b"\n") and action.data.count(b"\n") == 1
            action.data.decode("utf-8")  # what the room sends is always valid UTF-8
    closes = [a for a in whole if isinstance(a, Close)]
    assert len(closes) <= 1


@fuzz
@given(st.binary(max_size=20))
def test_chat_names_with_control_characters_are_refused(junk: bytes) -> None:
    room = ChatRoom()
    room.join("a")
    name = b"n" + junk
    out = room.receive("a", b"/name " + name + b"\n")
    if out and out[0].data.startswith(b"* you are "):
        assert chat.NAME_PATTERN.match(room.members["a"]) and all(32 < ord(c) < 127 for c in room.members["a"])
    else:
        assert room.members["a"] == "guest1"


def test_chat_good_lines_before_an_over_long_one_are_delivered() -> None:
    actions = chat_run([b"hi\n" + b"x" * 100])
    assert Send("b", b"guest1: hi\n") in actions and Close("a", "sent a line that is too long") in actions


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: ChatRoom(-1), ValueError, r"^max_line_size must be an int in 1\.\.1048576 \(bytes a line\), got -1$"),
    (lambda: ChatRoom("x"), ValueError, r"^max_line_size must be an int in 1\.\.1048576 \(bytes a line\), got 'x'$"),
])
def test_chat_room_bad_arguments_are_named(call: Callable[[], object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_chat_receive_refuses_text_and_a_stranger() -> None:
    room = ChatRoom()
    room.join("a")
    with pytest.raises(TypeError, match=r"^receive\(\) needs the bytes recv\(\) returned, got str"):
        room.receive("a", "hi\n")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match=r"'zz' is not in the room"):
        room.receive("zz", b"hi\n")


def test_chat_many_connections_each_bounded() -> None:
    room = ChatRoom(max_line_size=100)
    for who in range(300):
        room.join(who)
    for who in range(300):
        room.receive(who, bytes([who % 256]) * 100)  # 100 bytes, no newline: still a possible line
    assert all(d.buffered <= 101 for d in room._decoders.values())
    out = room.receive(0, b"x" * 2)
    assert Close(0, "sent a line that is too long") in out and len(room.members) == 299


# -- helpers.labs: the grader reads the runner's report as untrusted text -------------------------

LAB_TESTS = [LabTest("t1", 2.0, False), LabTest("t2", 3.0, True)]
junk_lines = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[]", "5", '"x"', "null", "NaN", "{", '{"event": 5}', '{"event": "start", "pgid": "x"}',
                     '{"event": "start", "pgid": 1}', '{"event": "start", "pgid": -5}', '{"event": "test"}',
                     '{"event": "task"}', '{"event": "setup", "error": [1]}', "[" * 5000 + "]" * 5000]),
    st.builds(lambda name, points, error: json.dumps({"event": "test", "test": name, "points": points,
                                                      "error": error}),
              st.sampled_from(["t1", "t2", "t3", "", None, 7, ["t1"]]),
              st.one_of(st.floats(), st.integers(-10**30, 10**30), st.text(max_size=3), st.none(), st.booleans()),
              st.one_of(st.text(max_size=5), st.integers(), st.none())),
)


@fuzz
@given(st.lists(junk_lines, max_size=12))
def test_read_results_never_raises_nor_gives_more_than_max(lines: list[str]) -> None:
    results = read_results("\n".join(lines), LAB_TESTS)
    maxima = {t.name: t.points for t in LAB_TESTS}
    assert set(results.tests) <= set(maxima)
    for name, (points, error) in results.tests.items():
        assert isinstance(points, float) and math.isfinite(points) and 0 <= points <= maxima[name]
        assert isinstance(error, str) and (points == 0 or not error)
    assert all(isinstance(p, str) and p for p in results.problems)
    json.dumps(results.tasks)


@pytest.mark.parametrize(("line", "points", "problem"), [
    ('{"event": "test", "test": "t1", "points": NaN, "error": ""}', 0.0, r"reports points=nan, not a number in 0\.\.2"),
    ('{"event": "test", "test": "t1", "points": -1, "error": ""}', 0.0, r"reports points=-1, not a number in 0\.\.2"),
    ('{"event": "test", "test": "t1", "points": 1e308, "error": ""}', 0.0, r"reports points=1e\+308"),
    ('{"event": "test", "test": "t1", "points": "2", "error": ""}', 0.0, r"reports points='2'"),
    ('{"event": "test", "test": "t1", "points": 2, "error": ""}', 2.0, None),
    ('{"event": "test", "test": "t1", "points": 2, "error": "boom"}', 0.0, None),
])
def test_read_results_points_are_checked_against_the_lab(line: str, points: float, problem: str | None) -> None:
    results = read_results(line + "\n" + line.replace('"t1"', '"nope"'), LAB_TESTS)
    assert results.tests["t1"][0] == points
    assert any("a report for 'nope', which is not a test of this lab" in p for p in results.problems)
    if problem:
        assert any(__import__("re").search(problem, p) for p in results.problems), results.problems


@pytest.fixture(scope="module")
def echo_lab():
    return load_lab("01")


@pytest.mark.parametrize(("given_params", "match"), [
    ({"seed": math.nan}, r"parameter seed must be int"),
    ({"seed": 10**7}, r"parameter seed=10000000 is out of range 0\.\.999999"),
    ({"seed": True}, r"parameter seed must be int"),
    ([("seed", 1)], r"the parameters must be a mapping of name to value"),
    ("seed=1", r"the parameters must be a mapping of name to value"),
])
def test_validate_parameters_refuses_nonsense(echo_lab, given_params: object, match: str) -> None:
    with pytest.raises(LabError, match=match):
        echo_lab.validate_parameters(given_params)


@pytest.mark.parametrize("text", ["nan", "inf", "1e5", "", "\0", "1" * 5000, "0x10", "1.0"])
def test_parse_parameter_text_refuses_nonsense(echo_lab, text: str) -> None:
    with pytest.raises(LabError, match=r"^01-echo: parameter seed must be int, got "):
        echo_lab.parse_parameter_text("seed", text)


def test_parse_parameter_text_float_must_be_finite(echo_lab, monkeypatch) -> None:
    monkeypatch.setattr(type(echo_lab), "parameter_defaults", property(lambda self: {"rate": 0.5}))
    for text in ("nan", "inf", "-inf"):
        with pytest.raises(LabError, match=rf"^01-echo: parameter rate must be float, got '{text}'$"):
            echo_lab.parse_parameter_text("rate", text)
    assert echo_lab.parse_parameter_text("rate", " 0.25 ") == 0.25
    monkeypatch.setattr(type(echo_lab), "meta", property(lambda self: {"parameters": {"rate": {"min": 0, "max": 1}}}))
    for value in (math.nan, math.inf):
        with pytest.raises(LabError, match=r"^01-echo: parameter rate must be a finite number, got"):
            echo_lab.validate_parameters({"rate": value})
    assert echo_lab.validate_parameters({"rate": 1}) == {"rate": 1.0}
    with pytest.raises(LabError, match=r"^01-echo: -p wants name=value text, got 'rate'=None$"):
        echo_lab.parse_parameter_text("rate", None)


# -- random bytes from real sockets against the servers -----------------------------------------

HOSTILE_CLIENTS = 20


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for_fds(baseline: int, timeout_s: float = 5.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (now := fd_count()) > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    return now


def hostile_http_payloads(rng: random.Random) -> list[tuple[bytes, str]]:
    """(bytes, how to end) per client: random junk, giant lengths, half requests; close, RST or wait."""
    out = []
    for i in range(HOSTILE_CLIENTS):
        kind = i % 5
        if kind == 0:
            data = rng.randbytes(rng.randrange(1, 20_000))
        elif kind == 1:
            data = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n" + rng.randbytes(100)
        elif kind == 2:
            data = b"GET / HTTP/1.1\r\nHost: " + rng.randbytes(rng.randrange(1, 100))  # half a request
        elif kind == 3:
            data = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"\xff" * 20_000 + b"\r\n\r\n"
        else:
            data = b"\0" * rng.randrange(1, 5000) + b"\n\n"
        out.append((data, rng.choice(["close", "rst", "shut_wr"])))
    return out


def send_hostile(address: tuple[str, int], payloads: list[tuple[bytes, str]], rng: random.Random) -> None:
    socks = []
    try:
        for data, end in payloads:
            s = socket.create_connection(address, timeout=5)
            socks.append(s)
            try:
                pos = 0
                while pos < len(data):
                    step = rng.randrange(1, 4096)
                    s.sendall(data[pos : pos + step])
                    pos += step
            except OSError:  # the server refused and closed first: that is allowed
                pass
            if end == "rst":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif end == "shut_wr":
                try:
                    s.shutdown(socket.SHUT_WR)
                    s.recv(65536)  # the answer, if any
                except OSError:
                    pass
        # reads from a few: whatever the server answered must be a complete HTTP response or nothing
    finally:
        for s in socks:
            s.close()


def polite_get(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


@pytest.mark.parametrize("make", [
    lambda: HttpServer(threads=0, idle_timeout_s=2.0),
    lambda: HttpServer(threads=2, idle_timeout_s=2.0),
    lambda: AsyncioHttpServer(idle_timeout_s=2.0),
], ids=["reactor-threads0", "reactor-threads2", "asyncio"])
def test_http_servers_survive_random_bytes_and_give_back_every_fd(make: Callable[[], object]) -> None:
    rng = random.Random(20240611)
    baseline = fd_count()
    server = make()
    try:
        started = fd_count()
        assert polite_get(server.address).startswith(b"HTTP/1.1 200 OK\r\n")
        send_hostile(server.address, hostile_http_payloads(rng), rng)
        reply = polite_get(server.address)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"Hello, world!\n")
        threads = ([server._main_thread, *(t.thread for t in server.pool.threads)] if isinstance(server, HttpServer)
                   else [server._thread])
        assert all(t.is_alive() for t in threads)
        assert wait_for_fds(started) <= started, "the server kept fds of closed hostile connections"
    finally:
        server.stop()  # raises ServerError if any handler error escaped
    assert wait_for_fds(baseline) <= baseline


class ChatProtocol:
    """A ChatRoom on the reactor: what a lesson's chat server does, with a TcpConnection per member."""

    def __init__(self, room: ChatRoom):
        self.room = room
        self.conn: TcpConnection | None = None

    def _do(self, actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, Send):
                action.to.write(action.data)
            elif isinstance(action, Close):
                action.who.close()

    def connection_made(self, conn: TcpConnection) -> None:
        self.conn = conn
        self._do(self.room.join(conn))

    def data_received(self, data: memoryview) -> None:
        if self.conn in self.room.members:
            self._do(self.room.receive(self.conn, bytes(data)))

    def eof_received(self) -> bool:
        if self.conn in self.room.members:
            self._do(self.room.receive(self.conn, b""))
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.conn in self.room.members:
            self._do(self.room.leave(self.conn, "left"))
        self.conn = None


def test_chat_room_on_the_reactor_survives_random_bytes() -> None:
    rng = random.Random(7)
    room = ChatRoom(max_line_size=200)
    baseline = fd_count()
    server = TcpServer(lambda: ChatProtocol(room), threads=0)
    try:
        started = fd_count()
        polite = socket.create_connection(server.address, timeout=5)
        with polite:
            assert polite.recv(4096).startswith(b"* welcome, you are guest1")
            payloads = []
            for i in range(HOSTILE_CLIENTS):
                junk = [rng.randbytes(rng.randrange(1, 3000)), b"x" * 5000, b"\0\0\n\xff\xfe\n", b"/name \x1b[2J\n",
                        b"hello\r\n" * 50][i % 5]
                payloads.append((junk, rng.choice(["close", "rst", "shut_wr"])))
            send_hostile(server.address, payloads, rng)
            deadline = time.monotonic() + 5
            while len(room.members) > 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert list(room.members.values()) == ["guest1"]
            other = socket.create_connection(server.address, timeout=5)
            with other:
                other.recv(4096)
                other.sendall(b"still here\n")
                got = b""
                while b"still here" not in got:
                    got += polite.recv(65536)
                assert f"guest{HOSTILE_CLIENTS + 2}: still here\n".encode() in got
        assert server._main_thread.is_alive()
        assert wait_for_fds(started) <= started
    finally:
        server.stop()
    assert wait_for_fds(baseline) <= baseline


def test_reliable_udp_receiver_survives_random_datagrams() -> None:
    """The receiver locks onto its sender's address: random bytes and forged in-window DATA
    from another socket (anyone on the host can send to our port) change nothing."""
    rng = random.Random(99)
    receiver = reliable_udp.Receiver(max_buffered=8)
    lock = threading.Lock()

    def handle(data: bytes, addr: object) -> bytes | None:
        with lock:
            return receiver.handle(data, addr)

    baseline = fd_count()
    server = UDPServer(handle)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as polite:
            polite.bind(("127.0.0.1", 0))  # (an unbound socket's first sendto() binds the wildcard)
            polite_address = polite.getsockname()
            polite.sendto(b"\xff not a packet", server.address)  # garbage does not choose the peer
            report = reliable_udp.send_all(polite, server.address, [b"a", b"b", b"c"], window=2, deadline_s=10)
            assert report.messages == 3
            hostile = [rng.randbytes(rng.randrange(0, 2000)) for _ in range(200)] + [b""]
            hostile += [reliable_udp.encode_data(seq, b"evil") for seq in (3, 4, 2**32 - 1, 10**6, 9)]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
                junk.bind(("127.0.0.1", 0))
                for i, datagram in enumerate(hostile, 1):
                    junk.sendto(datagram, server.address)
                    if i % 20 == 0 or i == len(hostile):  # in bursts the receive buffer holds (UDP drops
                        deadline = time.monotonic() + 5  # what does not fit, lesson 04)
                        while receiver.foreign < i and time.monotonic() < deadline:
                            time.sleep(0.005)
        with lock:
            assert receiver.delivered == [b"a", b"b", b"c"] and not receiver.buffer
            assert receiver.foreign == 206 and receiver.peer == polite_address
    finally:
        server.stop()
    assert wait_for_fds(baseline) <= baseline

