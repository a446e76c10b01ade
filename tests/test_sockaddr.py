"""helpers.sockaddr: the C layouts of the address structs, and the bytes the kernel reads and writes."""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from pathlib import Path

import pytest

from helpers import sockaddr


def test_the_structs_have_their_c_sizes() -> None:
    sizes = [ctypes.sizeof(s) for s in (sockaddr.SockaddrIn, sockaddr.SockaddrIn6, sockaddr.SockaddrUn)]
    assert sizes == [16, 28, 110]
    assert sockaddr.SockaddrUn.sun_path.size == 108


def test_raw_getsockname_of_ipv4_is_the_16_bytes_python_decodes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        raw = sockaddr.raw_getsockname(s)
        port = s.getsockname()[1]
    assert raw == struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + bytes([127, 0, 0, 1]) + bytes(8)
    layout = sockaddr.SockaddrIn.from_buffer_copy(raw)
    assert layout.sin_family == socket.AF_INET and bytes(layout.sin_port) == struct.pack("!H", port)


def test_raw_getsockname_of_a_unix_name_is_as_long_as_the_name(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        raw = sockaddr.raw_getsockname(s)
    assert raw == struct.pack("=H", socket.AF_UNIX) + path.encode() + b"\0"
    with socket.socket(socket.AF_UNIX) as unnamed:
        assert sockaddr.raw_getsockname(unnamed) == struct.pack("=H", socket.AF_UNIX)


def test_raw_bind_hands_the_kernel_exactly_the_bytes_given() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton("127.3.2.1") + bytes(8)
        with socket.socket() as s:
            sockaddr.raw_bind(s, raw)
            assert s.getsockname() == ("127.3.2.1", port)
            assert sockaddr.raw_getsockname(s) == raw


@pytest.mark.parametrize(("raw", "code"), [
    (struct.pack("=H", socket.AF_INET) + bytes(6), errno.EINVAL),  # shorter than a sockaddr_in
    (struct.pack("!H", socket.AF_INET) + bytes(14), errno.EAFNOSUPPORT),  # the family in network order
    (struct.pack("=H", socket.AF_INET) + bytes(2) + socket.inet_aton("192.0.2.99") + bytes(8), errno.EADDRNOTAVAIL),
])
def test_raw_bind_reports_what_the_kernel_refused(raw: bytes, code: int) -> None:
    if code == errno.EAFNOSUPPORT and sys.byteorder == "big":
        pytest.skip("on a big-endian machine network and host byte order agree")
    with socket.socket() as s, pytest.raises(OSError) as info:
        sockaddr.raw_bind(s, raw)
    assert info.value.errno == code


def test_the_kernel_takes_a_108_byte_unix_path_and_refuses_109(tmp_path: Path) -> None:
    for n, expected in ((108, None), (109, errno.EINVAL)):
        path = (str(tmp_path) + "/" + "p" * 200)[:n]
        with socket.socket(socket.AF_UNIX) as s:
            try:
                sockaddr.raw_bind(s, struct.pack("=H", socket.AF_UNIX) + path.encode())
                got = None
            except OSError as exc:
                got = exc.errno
        Path(path).unlink(missing_ok=True)
        assert got == expected, (n, got)


def test_raw_calls_refuse_what_they_cannot_use() -> None:
    with pytest.raises(TypeError, match=r"^raw_getsockname\(\) needs a socket, got int 3$"):
        sockaddr.raw_getsockname(3)  # type: ignore[arg-type]
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match=r"^raw_bind\(\) needs an open socket, got a closed one$"):
        sockaddr.raw_bind(closed, bytes(16))
    with socket.socket() as s:
        with pytest.raises(TypeError, match=r"^raw_bind\(\) needs the address as bytes, got str"):
            sockaddr.raw_bind(s, "127.0.0.1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^an address is at most 128 bytes \(struct sockaddr_storage\), got 129$"):
            sockaddr.raw_bind(s, bytes(129))
