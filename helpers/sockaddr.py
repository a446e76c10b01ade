"""Socket addresses as the kernel sees them: the bytes of struct sockaddr_in, _in6 and _un.

Theory of operation. In C, ``bind()``, ``connect()``, ``accept()`` and ``getsockname()``
take a ``struct sockaddr *`` and a length (``man 2 bind``, ``man 3type sockaddr``). There is
one struct per address family, and every one starts with the same 16-bit ``sa_family``
field, stored in the machine's own byte order; the kernel reads that first and then knows
how to read the rest. The length is needed because the structs differ in size (16 bytes
for IPv4, 28 for IPv6, up to 110 for a Unix-domain name) and because a Unix name is as long
as the length says: an abstract name may contain NUL bytes, so only the length ends it.

Python's ``socket`` module builds and parses these structs for you. This module lets a
lesson look underneath: ``SockaddrIn``, ``SockaddrIn6`` and ``SockaddrUn`` are the C
layouts (<netinet/in.h>, <sys/un.h>) as ctypes structures, so ``ctypes.sizeof`` measures
them; ``raw_getsockname()`` returns the exact bytes the kernel writes for a socket's name,
and ``raw_bind()`` hands the kernel bytes you packed yourself, so the kernel, not Python,
judges them. Both call the C library directly and report errors as OSError with errno.
"""

from __future__ import annotations

import ctypes
import os
import socket

from .core.features import require_linux

__all__ = ["SockaddrIn", "SockaddrIn6", "SockaddrUn", "SOCKADDR_STORAGE_SIZE", "raw_getsockname", "raw_bind"]

SOCKADDR_STORAGE_SIZE = 128  # sizeof(struct sockaddr_storage): room for any family's address


class SockaddrIn(ctypes.Structure):
    """struct sockaddr_in (<netinet/in.h>): an IPv4 address and port, 16 bytes.

    ``sin_port`` and ``sin_addr`` are in network byte order (big-endian); ``sin_family`` is
    in host order; ``sin_zero`` pads the struct to the size of the generic struct sockaddr.
    """

    _fields_ = [
        ("sin_family", ctypes.c_uint16),  # AF_INET (2)
        ("sin_port", ctypes.c_uint8 * 2),  # network byte order
        ("sin_addr", ctypes.c_uint8 * 4),  # network byte order
        ("sin_zero", ctypes.c_uint8 * 8),  # must be zero
    ]


class SockaddrIn6(ctypes.Structure):
    """struct sockaddr_in6 (<netinet/in.h>): an IPv6 address, port, flow label and scope id, 28 bytes."""

    _fields_ = [
        ("sin6_family", ctypes.c_uint16),  # AF_INET6 (10 on Linux)
        ("sin6_port", ctypes.c_uint8 * 2),  # network byte order
        ("sin6_flowinfo", ctypes.c_uint32),  # network byte order
        ("sin6_addr", ctypes.c_uint8 * 16),
        ("sin6_scope_id", ctypes.c_uint32),  # the interface index, for link-local addresses
    ]


class SockaddrUn(ctypes.Structure):
    """struct sockaddr_un (<sys/un.h>): a Unix-domain name, 110 bytes on Linux.

    ``sun_path`` holds a file path (NUL-terminated if there is room) or, on Linux, an
    abstract name: a NUL byte, then any bytes, as many as the address length says.
    """

    _fields_ = [
        ("sun_family", ctypes.c_uint16),  # AF_UNIX (1)
        ("sun_path", ctypes.c_char * 108),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.getsockname.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
_libc.bind.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def _fd(who: str, sock: object) -> int:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"{who} needs a socket, got {type(sock).__name__} {sock!r}")
    if sock.fileno() == -1:
        raise ValueError(f"{who} needs an open socket, got a closed one")
    return sock.fileno()


def raw_getsockname(sock: socket.socket) -> bytes:
    """The bytes the kernel writes for `sock`'s own address (getsockname(2)), exactly as long
    as the length it returns: 16 for IPv4, 28 for IPv6, 2 + the name's length for Unix.

    TypeError for something that is not a socket, ValueError for a closed one, OSError if
    the kernel refuses.
    """
    require_linux("raw socket addresses")
    fd = _fd("raw_getsockname()", sock)
    buf = ctypes.create_string_buffer(SOCKADDR_STORAGE_SIZE)
    length = ctypes.c_uint32(SOCKADDR_STORAGE_SIZE)
    if _libc.getsockname(fd, buf, ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[:min(length.value, SOCKADDR_STORAGE_SIZE)]


def raw_bind(sock: socket.socket, address: bytes) -> None:
    """bind(2) `sock` to the address bytes given, with their length as the address length.

    The kernel reads the family from the first two bytes (host byte order) and checks the
    rest; what it refuses comes back as OSError with its errno (EINVAL for a length it does
    not accept, EAFNOSUPPORT for another family, EADDRNOTAVAIL, EADDRINUSE, ...).
    TypeError for something that is not bytes or not a socket, ValueError for a closed
    socket or more than 128 bytes.
    """
    require_linux("raw socket addresses")
    fd = _fd("raw_bind()", sock)
    if not isinstance(address, (bytes, bytearray)):
        raise TypeError(f"raw_bind() needs the address as bytes, got {type(address).__name__} {address!r:.60}")
    if len(address) > SOCKADDR_STORAGE_SIZE:
        raise ValueError(f"an address is at most {SOCKADDR_STORAGE_SIZE} bytes (struct sockaddr_storage), "
                         f"got {len(address)}")
    if _libc.bind(fd, bytes(address), len(address)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
