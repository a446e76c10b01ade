"""helpers.chat: the sans-IO chat room, fed whole, byte by byte, and over real sockets."""

from __future__ import annotations

import select
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.chat import ChatRoom, Close, Send


def sends(actions, to):
    return b"".join(a.data for a in actions if isinstance(a, Send) and a.to == to)


def test_join_greets_newcomer_and_tells_the_others() -> None:
    room = ChatRoom()
    first = room.join("a")
    assert first == [Send("a", b"* welcome, you are guest1; 0 other(s) here; /name NEW to rename\n")]
    second = room.join("b")
    assert sends(second, "b").startswith(b"* welcome, you are guest2; 1 other(s) here")
    assert sends(second, "a") == b"* guest2 joined\n"
    assert room.members == {"a": "guest1", "b": "guest2"}


def test_join_twice_is_an_error() -> None:
    room = ChatRoom()
    room.join("a")
    with pytest.raises(ValueError, match=r"^'a' already joined; each connection joins once$"):
        room.join("a")


def test_unknown_member_is_named() -> None:
    with pytest.raises(KeyError, match="'x' is not in the room"):
        ChatRoom().receive("x", b"hi\n")


def test_message_goes_to_everyone_else_not_the_sender() -> None:
    room = ChatRoom()
    for who in "abc":
        room.join(who)
    out = room.receive("a", b"hello\r\n")
    assert sends(out, "a") == b""
    assert sends(out, "b") == sends(out, "c") == b"guest1: hello\n"


def test_partial_line_waits_for_the_rest() -> None:
    room = ChatRoom()
    room.join("a")
    room.join("b")
    assert room.receive("a", b"hel") == []
    assert sends(room.receive("a", b"lo\nwor"), "b") == b"guest1: hello\n"
    assert sends(room.receive("a", b"ld\n"), "b") == b"guest1: world\n"


def test_rename_rules() -> None:
    room = ChatRoom()
    room.join("a")
    room.join("b")
    out = room.receive("a", b"/name alice\n")
    assert sends(out, "a") == b"* you are alice\n" and sends(out, "b") == b"* guest1 is now alice\n"
    assert sends(room.receive("b", b"/name alice\n"), "b") == b"* alice is taken\n"
    assert b"is not a name" in sends(room.receive("b", b"/name two words\n"), "b")
    assert room.members == {"a": "alice", "b": "guest2"}
    out = room.receive("b", b"/namebob\n")  # a command is its own word: this is a message
    assert sends(out, "a") == b"guest2: /namebob\n" and room.members["b"] == "guest2"


def test_eof_removes_member_and_tells_the_others() -> None:
    room = ChatRoom()
    room.join("a")
    room.join("b")
    out = room.receive("a", b"")
    assert out == [Close("a", "left"), Send("b", b"* guest1 left\n")]
    assert room.members == {"b": "guest2"}


def test_too_long_line_closes_the_sender() -> None:
    room = ChatRoom(max_line_size=10)
    room.join("a")
    room.join("b")
    assert room.receive("a", b"x" * 11) == []  # 10 bytes and maybe a CR: could still be a line
    out = room.receive("a", b"x")  # 12 bytes, no newline: refused as soon as the bytes show it
    assert isinstance(out[0], Send) and out[0].to == "a" and out[0].data.endswith(b"; closing\n")
    assert Close("a", "sent a line that is too long") in out
    assert sends(out, "b") == b"* guest1 sent a line that is too long\n"
    assert "a" not in room.members


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    room = ChatRoom()
    room.join("a")
    room.join("b")
    assert sends(room.receive("a", b"\xff\n"), "b") == "guest1: \ufffd\n".encode()


@given(
    lines=st.lists(st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=30),
                   min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_any_split_gives_the_same_broadcast(lines: list[str], cuts: list[int]) -> None:
    wire = b"".join(line.encode() + b"\n" for line in lines if not line.startswith("/name"))
    whole, split = ChatRoom(), ChatRoom()
    for room in (whole, split):
        room.join("a")
        room.join("b")
    expected = sends(whole.receive("a", wire), "b")
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    got = b"".join(sends(split.receive("a", wire[x:y]), "b") for x, y in zip(points, points[1:]) if y > x)
    assert got == expected
    assert expected.count(b"\n") == sum(1 for line in lines if not line.startswith("/name"))


def test_over_real_sockets_with_a_select_loop() -> None:
    """Three socketpairs stand for three accepted connections; one select pass per step."""
    room = ChatRoom()
    pairs = [socket.socketpair() for _ in range(3)]
    server_side = {s: c for s, c in pairs}
    try:
        for s, _ in pairs:
            for action in room.join(s):
                action.to.sendall(action.data)
        pairs[0][1].sendall(b"hi all\n")
        pairs[2][1].close()  # the third client leaves: its server side sees EOF
        closed = set()

        def carry_out(actions):
            for action in actions:
                if isinstance(action, Close):
                    closed.add(action.who)
                    del server_side[action.who]
                elif action.to not in closed:
                    try:
                        action.to.sendall(action.data)
                    except OSError:  # that member is gone (EPIPE) and its EOF is still unread
                        carry_out(room.leave(action.to, "left"))

        for _ in range(2):
            readable, _, _ = select.select(list(server_side), [], [], 1.0)
            for s in readable:
                if s in server_side:
                    carry_out(room.receive(s, s.recv(4096)))
        assert closed == {pairs[2][0]}
        pairs[1][1].settimeout(2)
        got = b""
        while got.count(b"\n") < 4:  # welcome, guest3 joined, the message, guest3 left
            got += pairs[1][1].recv(4096)
        assert b"guest1: hi all\n" in got and got.endswith(b"* guest3 left\n")
    finally:
        for s, c in pairs:
            s.close()
            c.close()
