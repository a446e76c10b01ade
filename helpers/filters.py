"""Make a connection's peer vanish without root: a socket filter that drops everything.

Theory of operation. A lesson about dead peers needs a peer that stops answering *at the
kernel level*: a frozen program (SIGSTOP) is not enough, because its kernel still
acknowledges every segment. A pulled cable, a crashed machine or a NAT box that forgot the
connection all look the same from our side: segments leave and nothing comes back.

Any process may attach a classic BPF program to its own socket (``SO_ATTACH_FILTER``,
``man 7 socket``; the same filters tcpdump compiles). For a TCP socket the kernel runs the
filter on every segment that arrives for it, after finding the socket and *before* TCP
looks at the segment (``tcp_filter()`` in ``tcp_v4_rcv()``). A one-instruction program,
``ret #0`` ("keep 0 bytes"), drops every segment: that end of the connection no longer
sees data, ACKs, keep-alive probes or resets, and so never answers. Its own counters
(``tcp_info.segs_in``) stand still, which is how a lesson proves the segments were dropped
there and not lost on the way. ``detach()`` (``SO_DETACH_FILTER``) makes it hear again.

Who may attach one differs. Most kernels let any process filter its own sockets. Some
refuse a TCP socket to a normal user with EPERM (seen on a 6.18 kernel; UDP and Unix
sockets were still allowed there), yet allow it inside a user + network namespace of the
user's own, where it holds the network capabilities (``helpers.netns``,
``helpers.capture``). ``support()`` tries once, on a throwaway TCP socket, and says which.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import socket
import struct

from .behaviours import check_connection
from .core.features import switched_off

__all__ = ["drop_all", "detach", "support", "SO_ATTACH_FILTER", "SO_DETACH_FILTER"]

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # <asm-generic/socket.h>; Python lacks the names
SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)
BPF_RET_K = 0x06  # <linux/filter.h>: BPF_RET | BPF_K, "return the constant k"
_INSTRUCTION = struct.Struct("HBBI")  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}
_PROGRAM = struct.Struct("HP")  # struct sock_fprog {unsigned short len; struct sock_filter *filter;}


def _attach_drop_all(sock: socket.socket) -> None:
    code = _INSTRUCTION.pack(BPF_RET_K, 0, 0, 0)  # one instruction: keep 0 bytes of the packet
    buf = ctypes.create_string_buffer(code, len(code))  # the kernel copies it during setsockopt()
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _PROGRAM.pack(1, ctypes.addressof(buf)))


_REFUSED = ("this kernel does not let this process attach a filter to a TCP socket (EPERM); a normal user may "
            "do it inside a user + network namespace of its own: helpers.netns.run_in_netns() or "
            "helpers.capture run a function there")


def drop_all(sock: socket.socket) -> None:
    """Attach a filter that drops every segment arriving for `sock` (``ret #0``).

    From then on the peer of `sock` sees a connection that has gone silent: nothing it
    sends is acknowledged or answered. TypeError/ValueError (from check_connection) for
    something that is not an open, connected stream socket; PermissionError, saying where
    it works, if this kernel refuses this process a filter on a TCP socket (``support()``).
    """
    check_connection(sock, "drop_all")
    try:
        _attach_drop_all(sock)
    except PermissionError:
        raise PermissionError(errno.EPERM, f"drop_all(): {_REFUSED}") from None


def support() -> tuple[bool, str]:
    """(True, '') if drop_all() works in this process, else (False, why); tried once.

    A test may switch this probe ("socket_filter") off: helpers.core.features.
    """
    why = switched_off("socket_filter")
    if why:
        return False, f"a socket filter on a TCP socket is {why}"
    return _tried()


@functools.lru_cache(maxsize=1)
def _tried() -> tuple[bool, str]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            _attach_drop_all(probe)
        except PermissionError:
            return False, _REFUSED
        except OSError as exc:
            return False, f"attaching a socket filter failed: {exc}"
    return True, ""


def detach(sock: socket.socket) -> None:
    """Remove the filter drop_all() attached: `sock` hears its peer again.

    ValueError if `sock` has no filter attached (the kernel answers ENOENT), and what
    check_connection raises for something that is not an open stream socket.
    """
    check_connection(sock, "detach")
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    except FileNotFoundError:
        raise ValueError("detach(): this socket has no filter attached; call drop_all(sock) first") from None
