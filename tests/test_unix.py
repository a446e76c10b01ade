"""helpers.unix: the /proc/net/unix parser, against text and against real sockets."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.unix import UnixEntry, UnixState, entry_for, parse_proc_net_unix, unix_table

HEADER = b"Num       RefCount Protocol Flags    Type St Inode Path\n"


def kernel_line(ref: int, flags: int, kind: int, state: int, inode: int, name: bytes | None) -> bytes:
    """One line as net/unix/af_unix.c prints it (unix_seq_show), for a sockaddr_un name."""
    line = b"0000000000000000: %08X %08X %08X %04X %02X %5d" % (ref, 0, flags, kind, state, inode)
    if name is not None:
        shown = b"@" + name[1:] if name[:1] == b"\0" else name
        line += b" " + shown.replace(b"\0", b"@")
    return line + b"\n"


def test_parses_a_listening_path_socket() -> None:
    text = HEADER + kernel_line(2, 0x10000, 1, 1, 34567, b"/tmp/x/server.sock")
    (entry,) = parse_proc_net_unix(text)
    assert entry == UnixEntry(2, 0x10000, socket.SOCK_STREAM, UnixState.UNCONNECTED, 34567, "/tmp/x/server.sock")
    assert entry.listening and not entry.abstract


def test_parses_unnamed_abstract_and_spaces() -> None:
    text = (
        HEADER
        + kernel_line(3, 0, 1, 3, 7, None)
        + kernel_line(2, 0, 2, 1, 1234567, b"\0name\0with nul")
        + kernel_line(2, 0, 5, 1, 9, b"/tmp/a path with  spaces ")
    )
    unnamed, abstract, spaced = parse_proc_net_unix(text)
    assert unnamed.path is None and unnamed.state is UnixState.CONNECTED and not unnamed.abstract
    assert abstract.path == "@name@with nul" and abstract.abstract and abstract.type is socket.SOCK_DGRAM
    assert spaced.path == "/tmp/a path with  spaces " and spaced.type is socket.SOCK_SEQPACKET


def test_header_is_optional_and_str_is_accepted() -> None:
    line = kernel_line(2, 0, 1, 3, 42, b"/run/s")
    assert parse_proc_net_unix(line) == parse_proc_net_unix(HEADER + line)
    assert parse_proc_net_unix((HEADER + line).decode()) == parse_proc_net_unix(line)
    assert parse_proc_net_unix(HEADER) == []


def test_a_path_with_a_newline_is_rejoined() -> None:
    text = HEADER + kernel_line(2, 0, 2, 1, 5, b"/tmp/odd\nname\n") + kernel_line(2, 0, 1, 3, 6, None)
    odd, other = parse_proc_net_unix(text)
    assert odd.path == "/tmp/odd\nname\n" and other.inode == 6


def test_unknown_type_and_state_stay_numbers() -> None:
    (entry,) = parse_proc_net_unix(kernel_line(1, 0, 0x77, 9, 1, None))
    assert entry.type == 0x77 and entry.state == 9 and not isinstance(entry.state, UnixState)
    assert "type 119" in str(entry) and "state 9" in str(entry)


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^not a /proc/net/unix entry: b'hello'$"):
        parse_proc_net_unix(HEADER + b"hello\n")
    with pytest.raises(ValueError, match=r"^not a /proc/net/unix entry"):
        parse_proc_net_unix(kernel_line(1, 0, 1, 3, 1, None) + b"continuation of an unnamed socket\n")
    with pytest.raises(TypeError, match=r"needs bytes or str, got int"):
        parse_proc_net_unix(42)  # type: ignore[arg-type]


names = st.one_of(
    st.none(),
    st.binary(min_size=1, max_size=107).filter(lambda b: b[0] != 0 and b"\0" not in b and b"\n" not in b),
    st.binary(max_size=107).map(lambda b: b"\0" + b.replace(b"\n", b"")),
)
rows = st.tuples(
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, 0x10000]),
    st.sampled_from([1, 2, 5]),
    st.integers(0, 4),
    st.integers(0, 2**40),
    names,
)


@given(st.lists(rows, max_size=20))
def test_round_trip_of_kernel_output(table: list[tuple]) -> None:
    parsed = parse_proc_net_unix(HEADER + b"".join(kernel_line(*row) for row in table))
    assert len(parsed) == len(table)
    for entry, (ref, flags, kind, state, inode, name) in zip(parsed, table):
        assert (entry.refcount, entry.flags, entry.inode) == (ref, flags, inode)
        assert entry.type == kind and entry.state is UnixState(state)
        assert entry.listening == bool(flags)
        if name is None:
            assert entry.path is None
        elif name[:1] == b"\0":
            assert entry.abstract and os.fsencode(entry.path) == b"@" + name[1:].replace(b"\0", b"@")
        else:
            assert os.fsencode(entry.path) == name


# ---------------------------------------------------------------- against real sockets


def test_real_path_socket_is_listed_while_listening() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            server.listen()
            entry = entry_for(server)
            assert entry.path == path and entry.listening and entry.type is socket.SOCK_STREAM
            inode = entry.inode
        assert inode not in {e.inode for e in unix_table()}


def test_real_abstract_socket_and_socketpair() -> None:
    name = f"\0course-test-unix-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
        dgram.bind(name)
        entry = entry_for(dgram)
        assert entry.abstract and entry.path == "@" + name[1:] and entry.type is socket.SOCK_DGRAM
    a, b = socket.socketpair()
    with a, b:
        ea, eb = entry_for(a), entry_for(b)
        assert ea.path is None and eb.path is None
        assert ea.state is UnixState.CONNECTED and eb.state is UnixState.CONNECTED
        assert ea.inode != eb.inode


def test_entry_for_refuses_other_sockets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        with pytest.raises(TypeError, match=r"^entry_for\(\) needs an AF_UNIX socket, got AF_INET$"):
            entry_for(tcp)
    closed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    closed.close()
    with pytest.raises(LookupError, match="closed"):
        entry_for(closed)
    a, b = socket.socketpair()
    with a, b, pytest.raises(LookupError, match=r"^no /proc/net/unix entry for socket inode \d+$"):
        entry_for(a, entries=[])


def test_unix_table_lists_a_socket_once_when_the_kernel_listed_it_twice(tmp_path) -> None:
    """A read of /proc/net/unix can list a socket twice while others come and go (2 reads in
    1,000 under heavy churn); replayed from a saved file, since it is not repeatable."""
    header = b"Num       RefCount Protocol Flags    Type St Inode Path\n"
    row = b"0000000000000000: 00000002 00000000 00010000 0001 01 71149023 @course-demo\n"
    saved = tmp_path / "unix"
    saved.write_bytes(header + row + row)
    (entry,) = unix_table(saved)
    assert entry.inode == 71149023 and entry.path == "@course-demo" and entry.listening
