"""Tests of helpers.framing: the sans-IO decoders fed every way, then over real sockets."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import framing
from helpers.framing import (
    HEADER,
    IncompleteReadError,
    LineDecoder,
    LocalProtocolError,
    Message,
    MessageDecoder,
    MessageTimeout,
    RemoteProtocolError,
)
from helpers.servers import TCPServer

# Pure decoder work takes milliseconds, but a busy 2-core machine can stall any test for
# longer than hypothesis's default 200 ms deadline: judge correctness, not speed.
relaxed = settings(deadline=None)

messages_st = st.lists(
    st.builds(Message, st.integers(0, framing.MAX_U32), st.binary(max_size=300)), max_size=12
)
lines_st = st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=12)


def encode_all(messages: list[Message]) -> bytes:
    return b"".join(framing.encode_message(m.body, m.type) for m in messages)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# -- length-prefixed messages, sans-IO ----------------------------------------------------


def test_encode_message_wire_format() -> None:
    assert framing.encode_message(b"hello", 7) == b"\x00\x00\x00\x05\x00\x00\x00\x07hello"


@relaxed
@given(messages_st, st.lists(st.integers(min_value=0), max_size=20))
def test_message_decoder_any_split_gives_same_messages(messages: list[Message], cuts: list[int]) -> None:
    stream = encode_all(messages)
    decoder = MessageDecoder()
    got: list[Message] = []
    for chunk in split_at(stream, cuts):
        decoder.feed(chunk)
        got += decoder.next_messages()
    decoder.feed_eof()
    assert got == messages
    assert decoder.buffered == 0


@relaxed
@given(messages_st)
def test_message_decoder_whole(messages: list[Message]) -> None:
    decoder = MessageDecoder()
    decoder.feed(encode_all(messages))
    assert decoder.next_messages() == messages
    assert decoder.maybe_next_message() is None


@relaxed
@given(messages_st.filter(bool))
def test_message_decoder_one_byte_at_a_time_says_need_more_until_complete(messages: list[Message]) -> None:
    decoder = MessageDecoder()
    for msg in messages:
        wire = framing.encode_message(msg.body, msg.type)
        for i, byte in enumerate(wire):
            # before the header is complete, only the header's remaining bytes are known to be needed
            assert decoder.bytes_needed == (HEADER.size - i if i < HEADER.size else len(wire) - i)
            decoder.feed(bytes([byte]))
            got = decoder.maybe_next_message()
            if i < len(wire) - 1:
                assert got is None
            else:
                assert got == msg
        assert decoder.buffered == 0


@relaxed
@given(messages_st, st.builds(Message, st.integers(0, framing.MAX_U32), st.binary(min_size=1, max_size=50)),
       st.integers(min_value=1))
def test_message_decoder_trailing_bytes_stay_buffered(messages: list[Message], extra: Message, cut: int) -> None:
    tail_wire = framing.encode_message(extra.body, extra.type)
    tail = tail_wire[: cut % len(tail_wire)] or tail_wire[:1]
    decoder = MessageDecoder()
    decoder.feed(encode_all(messages) + tail)
    assert decoder.next_messages() == messages
    assert decoder.buffered == len(tail)
    assert decoder.maybe_next_message() is None
    decoder.feed(tail_wire[len(tail):])  # the rest arrives: the buffered bytes were kept
    assert decoder.next_messages() == [extra]


@relaxed
@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=1, max_value=framing.MAX_U32),
       st.lists(st.integers(min_value=0), max_size=8))
def test_message_decoder_refuses_hostile_length_as_soon_as_header_is_in(
    limit: int, claimed: int, cuts: list[int]
) -> None:
    claimed = max(claimed, limit + 1)
    wire = HEADER.pack(claimed, 1) + b"x" * 20
    decoder = MessageDecoder(max_message_size=limit)
    fed = 0
    with pytest.raises(RemoteProtocolError) as info:
        for chunk in split_at(wire, cuts):
            decoder.feed(chunk)
            fed += len(chunk)
    assert fed < HEADER.size  # refused inside the feed() that completed the header
    assert decoder.buffered <= len(wire)  # nothing allocated for the claimed body
    assert info.value.value == claimed and info.value.limit == limit
    with pytest.raises(RemoteProtocolError):  # and the decoder stays broken
        decoder.maybe_next_message()


def test_message_decoder_error_message_names_value_and_limit() -> None:
    decoder = MessageDecoder(max_message_size=1 << 20)
    with pytest.raises(RemoteProtocolError, match=r"^peer announced a 4294967295-byte message \(type 1\), over the "
                       r"limit of 1048576 bytes; refused before reading its body$"):
        decoder.feed(HEADER.pack(0xFFFFFFFF, 1))


def test_message_decoder_refuses_a_length_sent_without_htonl() -> None:
    # A sender that forgets htonl() on the length sends 5 as 0x05000000 = 83886080 on little-endian.
    decoder = MessageDecoder()
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(struct.pack("<II", 5, 1) + b"hello")
    assert info.value.value == 83886080 and framing.byteswap32(info.value.value) == 5


def test_message_decoder_accepts_exactly_the_limit() -> None:
    decoder = MessageDecoder(max_message_size=10)
    decoder.feed(framing.encode_message(b"0123456789"))
    assert decoder.maybe_next_message() == Message(1, b"0123456789")


def test_message_decoder_later_hostile_header_is_caught_too() -> None:
    decoder = MessageDecoder(max_message_size=100)
    with pytest.raises(RemoteProtocolError):
        decoder.feed(framing.encode_message(b"ok") + HEADER.pack(101, 1))


@relaxed
@given(messages_st.filter(bool), st.integers(min_value=0))
def test_message_decoder_truncated_stream_is_a_clear_error(messages: list[Message], cut: int) -> None:
    stream = encode_all(messages)
    ends, offset = set(), 0
    for m in messages:
        offset += HEADER.size + len(m.body)
        ends.add(offset)
    inside = [p for p in range(1, len(stream)) if p not in ends]  # cuts in the middle of a message
    stop = inside[cut % len(inside)]
    decoder = MessageDecoder()
    decoder.feed(stream[:stop])
    decoder.next_messages()
    with pytest.raises(IncompleteReadError, match=r"^peer closed the connection in the middle of a message"):
        decoder.feed_eof()


def test_c_client_type_without_htonl_decodes_as_byteswapped() -> None:
    # The original course's client: length with htonl(), type = 1 stored in host order (x86: little-endian).
    wire = struct.pack("!I", 6) + struct.pack("<I", 1) + b"hello\n"
    decoder = MessageDecoder()
    decoder.feed(wire)
    msg = decoder.maybe_next_message()
    assert msg == Message(16777216, b"hello\n")
    assert framing.byteswap32(msg.type) == 1


def test_encode_message_errors_are_local_and_clear() -> None:
    with pytest.raises(LocalProtocolError, match=r"^body must be bytes, got str; encode text first"):
        framing.encode_message("text")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match=r"^message type must be an int in 0\.\.4294967295 \(a u32\), got -1$"):
        framing.encode_message(b"", -1)
    with pytest.raises(LocalProtocolError, match=r"^body of 11 bytes is over the limit of 10 bytes"):
        framing.encode_message(b"x" * 11, max_message_size=10)


def test_feed_after_eof_is_a_local_error() -> None:
    decoder = MessageDecoder()
    decoder.feed_eof()
    with pytest.raises(LocalProtocolError, match=r"^feed\(\) after feed_eof\(\)"):
        decoder.feed(b"x")


# -- lines, sans-IO -----------------------------------------------------------------------


@relaxed
@given(lines_st, st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=12, max_size=12),
       st.lists(st.integers(min_value=0), max_size=20))
def test_line_decoder_crlf_and_lf_any_split(lines: list[bytes], terms: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(framing.encode_line(line, terminator=t) for line, t in zip(lines, terms))
    decoder = LineDecoder(max_line_size=60)
    got: list[bytes] = []
    for chunk in split_at(stream, cuts):
        decoder.feed(chunk)
        while (line := decoder.maybe_next_line()) is not None:
            got.append(line)
    decoder.feed_eof()
    assert got == lines


def test_line_decoder_one_byte_at_a_time_and_trailing_bytes() -> None:
    decoder = LineDecoder()
    for byte in b"PING 1\r":
        decoder.feed(bytes([byte]))
        assert decoder.maybe_next_line() is None
    decoder.feed(b"\nPING 2\nPI")
    assert decoder.maybe_next_line() == b"PING 1"
    assert decoder.maybe_next_line() == b"PING 2"
    assert decoder.maybe_next_line() is None
    assert decoder.buffered == 2
    with pytest.raises(IncompleteReadError, match=r"^peer closed the connection in the middle of a line: 2 bytes"):
        decoder.feed_eof()


def test_line_decoder_keeps_a_lone_cr_inside_a_line() -> None:
    decoder = LineDecoder()
    decoder.feed(b"a\rb\r\n")
    assert decoder.maybe_next_line() == b"a\rb"


@relaxed
@given(st.integers(min_value=0, max_value=300), st.lists(st.integers(min_value=0), max_size=10))
def test_line_decoder_bounds_a_line_without_newline(limit: int, cuts: list[int]) -> None:
    decoder = LineDecoder(max_line_size=limit)
    flood = b"A" * (limit + 50)
    with pytest.raises(RemoteProtocolError) as info:
        for chunk in split_at(flood, cuts):
            decoder.feed(chunk)
    assert info.value.limit == limit and info.value.value > limit
    assert decoder.buffered <= len(flood)


def test_line_decoder_limit_is_on_content_not_terminator() -> None:
    decoder = LineDecoder(max_line_size=4)
    decoder.feed(b"abcd\r")  # 4 bytes of content and a CR still waiting for its LF
    decoder.feed(b"\n")
    assert decoder.maybe_next_line() == b"abcd"
    with pytest.raises(RemoteProtocolError, match=r"^peer sent a line of at least 5 bytes without ending it"):
        decoder.feed(b"abcde\n")


def test_encode_line_refuses_embedded_newline() -> None:
    with pytest.raises(LocalProtocolError, match=r"^a line cannot contain LF"):
        framing.encode_line(b"a\nb")


# -- over real loopback sockets -------------------------------------------------------------


def read_all_messages(conn: socket.socket) -> list[Message]:
    out = []
    while (msg := framing.read_message(conn, deadline_s=5)) is not None:
        out.append(msg)
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages_st, st.lists(st.integers(min_value=0), max_size=10))
def test_read_message_over_loopback_any_split(messages: list[Message], cuts: list[int]) -> None:
    stream = encode_all(messages)
    with TCPServer(read_all_messages) as server, socket.create_connection(server.address) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in split_at(stream, cuts):
            client.sendall(chunk)
            time.sleep(0.001)  # let the reader see this chunk on its own: partial reads happen
        client.shutdown(socket.SHUT_WR)
        assert server.result() == messages


def test_read_message_hostile_length_over_socket_is_refused_quickly() -> None:
    def hostile(conn: socket.socket) -> None:
        conn.sendall(HEADER.pack(0xFFFFFFFF, 1) + b"tiny")
        try:
            conn.recv(1)  # hold the connection until the client closes
        except ConnectionResetError:
            pass  # the client closed with b"tiny" unread, so its kernel sent RST: expected

    with TCPServer(hostile) as server, socket.create_connection(server.address) as client:
        started = time.monotonic()
        with pytest.raises(RemoteProtocolError) as info:
            framing.read_message(client, max_message_size=1024, deadline_s=5)
        assert time.monotonic() - started < 2.0
        assert info.value.value == 0xFFFFFFFF


def test_read_message_deadline_stops_a_slow_sender_and_restores_timeout() -> None:
    stop = threading.Event()

    def slow(conn: socket.socket) -> int:
        conn.sendall(HEADER.pack(1000, 1))
        sent = 0
        while not stop.wait(0.005):
            try:
                conn.sendall(b"x")
            except OSError:
                break
            sent += 1
        return sent

    with TCPServer(slow) as server, socket.create_connection(server.address) as client:
        client.settimeout(3.0)  # a per-recv timeout alone would never fire: bytes keep coming
        started = time.monotonic()
        with pytest.raises(MessageTimeout) as info:
            framing.read_message(client, deadline_s=0.3)
        elapsed = time.monotonic() - started
        stop.set()
        assert 0.25 < elapsed < 2.5
        assert info.value.expected == HEADER.size + 1000 and info.value.received < HEADER.size + 1000
        assert client.gettimeout() == 3.0


def test_read_message_peer_closes_mid_message() -> None:
    with TCPServer(lambda conn: conn.sendall(HEADER.pack(10, 1) + b"abc")) as server:
        with socket.create_connection(server.address) as client:
            with pytest.raises(IncompleteReadError, match=r"^peer closed the connection in the middle of a message: "
                               r"got 11 of 18 bytes$") as info:
                framing.read_message(client, deadline_s=5)
            assert info.value.partial.endswith(b"abc")


def test_readn_exact_and_eof() -> None:
    with TCPServer(lambda conn: conn.sendall(b"0123456789")) as server:
        with socket.create_connection(server.address) as client:
            assert framing.readn(client, 4, deadline_s=5) == b"0123"
            with pytest.raises(IncompleteReadError, match=r"^peer closed the connection after 6 of 10 bytes$"):
                framing.readn(client, 10, deadline_s=5)


def test_read_line_never_reads_past_the_line() -> None:
    payload = b"HELLO\r\nWORLD\n" + framing.encode_message(b"after the lines")
    with TCPServer(lambda conn: conn.sendall(payload)) as server:
        with socket.create_connection(server.address) as client:
            assert framing.read_line(client, deadline_s=5) == b"HELLO"
            assert framing.read_line(client, deadline_s=5) == b"WORLD"
            assert framing.read_message(client, deadline_s=5) == Message(1, b"after the lines")
            assert framing.read_line(client, deadline_s=5) is None  # clean EOF


def test_read_line_flood_is_refused_with_bounded_reads() -> None:
    def flood(conn: socket.socket) -> None:
        try:
            conn.sendall(b"A" * (1 << 20))
        except OSError:
            pass  # the reader gave up and closed: expected

    with TCPServer(flood) as server, socket.create_connection(server.address) as client:
        with pytest.raises(RemoteProtocolError) as info:
            framing.read_line(client, max_line_size=1000, deadline_s=5)
        assert 1000 < info.value.value <= 1002


class _LineEcho(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:  # the stdlib's own line reading
            self.wfile.write(b"echo " + line)


def test_interop_with_stdlib_socketserver_lines() -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _LineEcho) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            with socket.create_connection(server.server_address) as client:
                client.sendall(framing.encode_line(b"one") + framing.encode_line(b"two", terminator=b"\n"))
                assert framing.read_line(client, deadline_s=5) == b"echo one"
                assert framing.read_line(client, deadline_s=5) == b"echo two"
        finally:
            server.shutdown()
            thread.join()


def test_interop_with_plain_struct_peer() -> None:
    def struct_peer(conn: socket.socket) -> tuple[int, bytes]:
        with conn.makefile("rb") as f:  # a reader written with the stdlib only
            length, kind = struct.unpack("!II", f.read(8))
            body = f.read(length)
        conn.sendall(struct.pack("!II", len(body), kind + 1) + body[::-1])
        return kind, body

    with TCPServer(struct_peer) as server, socket.create_connection(server.address) as client:
        framing.send_message(client, b"abc", 41)
        assert framing.read_message(client, deadline_s=5) == Message(42, b"cba")
        assert server.result() == (41, b"abc")


def test_deadline_argument_is_checked() -> None:
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match=r"^deadline_s must be a number of seconds > 0, or None; got 0$"):
            framing.read_message(a, deadline_s=0)
