"""Capture TCP packets on the loopback device with an AF_PACKET socket (root only).

Theory of operation. tcpdump reads packets through a packet socket (man 7 packet):
``socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL))`` receives a copy of every frame that
crosses the interface it is bound to, link-layer header included. Opening one needs
CAP_NET_RAW in the network namespace's owning user namespace, so as a normal user it
fails with PermissionError; ``CaptureUnavailable`` carries that explanation. (An
unprivileged user may still capture inside a user + network namespace of its own, where it
holds CAP_NET_RAW over a private loopback; that is a separate helper, not this module.)

Four details make the capture trustworthy on a busy machine:

* The socket is created with protocol 0, which receives nothing, and starts receiving only
  when bound to ``lo`` with ETH_P_ALL, after a filter is attached: no frame from another
  interface or from before the filter slips in.
* The filter is classic BPF (man 7 socket, SO_ATTACH_FILTER; the program tcpdump prints
  for ``tcpdump -d 'tcp port N'``). The kernel drops everyone else's loopback traffic
  before it is queued, so other programs' transfers cannot fill our receive buffer.
* On loopback each frame passes the tap twice: once leaving (sll_pkttype PACKET_OUTGOING)
  and once arriving (PACKET_HOST). We keep the arriving copy only.
* PACKET_STATISTICS reports frames the kernel dropped for lack of buffer space; a capture
  that lost frames says so in ``.drops`` rather than pretending to be complete.

Parsing is not done here: ``helpers.packets`` turns the bytes into headers.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from types import TracebackType

from .core import checks
from .core.features import require_linux
from .packets import Frame, parse_frame

__all__ = ["CaptureUnavailable", "CapturedFrame", "LoopbackCapture", "tcp_port_filter", "can_capture"]

ETH_P_ALL = 0x0003  # <linux/if_ether.h>: every protocol
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
SOL_PACKET = 263  # <linux/socket.h>
PACKET_STATISTICS = 6  # <linux/if_packet.h>
PACKET_HOST = 0
PACKET_OUTGOING = 4

# Classic BPF opcodes (<linux/filter.h>), named as tcpdump -d prints them.
_LDH_ABS, _LDB_ABS, _LDH_IND, _LDXB_MSH = 0x28, 0x30, 0x48, 0xB1
_JEQ_K, _JSET_K, _RET_K = 0x15, 0x45, 0x06
_SNAPLEN = 0x40000  # bytes of each accepted frame kept (tcpdump's default, 262144)


class CaptureUnavailable(PermissionError):
    """This process may not open a packet socket (it lacks CAP_NET_RAW)."""


def can_capture() -> tuple[bool, str]:
    """(True, '') if a packet socket opens here, else (False, the reason in plain words)."""
    require_linux("packet capture (AF_PACKET)")
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError as exc:
        return False, _why_not(exc)
    return True, ""


def _why_not(exc: OSError) -> str:
    return (
        f"socket(AF_PACKET, SOCK_RAW) failed with {type(exc).__name__} (errno {exc.errno}, "
        f"{os.strerror(exc.errno or 1)}) for uid {os.getuid()}: capturing packets needs "
        "CAP_NET_RAW, which root has and a normal user has not (man 7 packet). tcpdump is "
        "run with sudo, or installed with that capability, for this reason. Without root, a "
        "process can capture only inside a user + network namespace of its own, where it "
        "holds CAP_NET_RAW over a private loopback."
    )


def tcp_port_filter(port: int) -> bytes:
    """A classic BPF program accepting IPv4 or IPv6 TCP frames to or from `port`.

    The same program ``tcpdump -dd 'tcp port N'`` compiles, for Ethernet-framed links
    such as ``lo``: check the EtherType, the protocol, (IPv4) that this is the first
    fragment, then the source and destination ports.
    """
    checks.port("port", port, low=1)
    # (code, jump-if-true, jump-if-false, k); jumps count instructions after the next one.
    program = [
        (_LDH_ABS, 0, 0, 12),  # 0: EtherType
        (_JEQ_K, 0, 6, 0x86DD),  # 1: IPv6? else 8
        (_LDB_ABS, 0, 0, 20),  # 2: IPv6 next header
        (_JEQ_K, 0, 15, 6),  # 3: TCP? else drop
        (_LDH_ABS, 0, 0, 54),  # 4: source port
        (_JEQ_K, 12, 0, port),  # 5: -> accept
        (_LDH_ABS, 0, 0, 56),  # 6: destination port
        (_JEQ_K, 10, 11, port),  # 7: -> accept / drop
        (_JEQ_K, 0, 10, 0x0800),  # 8: IPv4? else drop
        (_LDB_ABS, 0, 0, 23),  # 9: IPv4 protocol
        (_JEQ_K, 0, 8, 6),  # 10: TCP? else drop
        (_LDH_ABS, 0, 0, 20),  # 11: flags + fragment offset
        (_JSET_K, 6, 0, 0x1FFF),  # 12: a later fragment has no ports: drop
        (_LDXB_MSH, 0, 0, 14),  # 13: X = IPv4 header length
        (_LDH_IND, 0, 0, 14),  # 14: source port
        (_JEQ_K, 2, 0, port),  # 15: -> accept
        (_LDH_IND, 0, 0, 16),  # 16: destination port
        (_JEQ_K, 0, 1, port),  # 17: accept / drop
        (_RET_K, 0, 0, _SNAPLEN),  # 18: accept
        (_RET_K, 0, 0, 0),  # 19: drop
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native layout)
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


@dataclass(frozen=True)
class CapturedFrame:
    """One frame as it arrived on the interface: seconds since the capture started, bytes."""

    time_s: float
    data: bytes

    def parse(self) -> Frame:
        """The frame's headers (helpers.packets.parse_frame)."""
        return parse_frame(self.data)


class LoopbackCapture:
    """Capture the TCP frames to or from one port on ``lo`` while a ``with`` block runs.

    >>> with LoopbackCapture(port) as cap:     # doctest: +SKIP
    ...     run_a_short_connection()
    >>> [f.parse().tcp.flags for f in cap.frames]   # doctest: +SKIP

    Raises CaptureUnavailable (a PermissionError) without CAP_NET_RAW, ValueError at once
    for a bad `port`, `interface`, `settle_s` (0 to 1 s) or `rcvbuf_bytes`. On leaving the
    block it keeps reading until the interface has been quiet for `settle_s` seconds (so
    the last ACK is in), then closes the socket. ``.frames`` holds the arriving copies,
    ``.outgoing_skipped`` counts the duplicate departing copies, ``.drops`` the frames the
    kernel had to drop.
    """

    def __init__(self, port: int, *, interface: str = "lo", settle_s: float = 0.05, rcvbuf_bytes: int = 4 << 20):
        require_linux("packet capture (AF_PACKET)")
        # An empty name would bind to ifindex 0: every interface, not one.
        if not isinstance(interface, str) or not 0 < len(interface) <= 15 or any(
                c.isspace() or c == "/" or not c.isprintable() for c in interface):
            raise ValueError(f"interface must be a network interface name such as 'lo' (1-15 characters, no "
                             f"spaces or '/'), got {interface!r}")
        checks.seconds("settle_s", settle_s, high=1)
        if isinstance(rcvbuf_bytes, bool) or not isinstance(rcvbuf_bytes, int) or not 4096 <= rcvbuf_bytes <= 1 << 30:
            raise ValueError(f"rcvbuf_bytes must be an int in 4096-{1 << 30} (the kernel caps it at "
                             f"net.core.rmem_max), got {rcvbuf_bytes!r}")
        self.port = port
        self.interface = interface
        self.settle_s = settle_s
        self.frames: list[CapturedFrame] = []
        self.outgoing_skipped = 0
        self.drops = 0
        self._program = tcp_port_filter(port)
        self._rcvbuf = rcvbuf_bytes
        self._sock: socket.socket | None = None
        self._t0 = 0.0

    def __enter__(self) -> LoopbackCapture:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        except PermissionError as exc:
            raise CaptureUnavailable(_why_not(exc)) from exc
        try:
            _attach_filter(sock, self._program)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((self.interface, ETH_P_ALL))  # from here on, frames on this interface arrive
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno == 19:  # ENODEV
                raise ValueError(f"no network interface named {self.interface!r}") from exc
            raise
        self._sock = sock
        self._t0 = time.monotonic()
        return self

    def _drain(self) -> int:
        assert self._sock is not None
        got = 0
        while True:
            try:
                data, addr = self._sock.recvfrom(_SNAPLEN)
            except BlockingIOError:
                return got
            got += 1
            if addr[2] == PACKET_OUTGOING:
                self.outgoing_skipped += 1
                continue
            self.frames.append(CapturedFrame(time.monotonic() - self._t0, data))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Read what is left until `settle_s` of quiet, read the drop count, close. Idempotent."""
        sock = self._sock
        if sock is None:
            return
        try:
            deadline = time.monotonic() + 2.0  # a flood of matching frames cannot keep us here
            while time.monotonic() < deadline:
                self._drain()
                ready, _, _ = select.select([sock], [], [], self.settle_s)
                if not ready:
                    break
            stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            _received, self.drops = struct.unpack("=II", stats)
        finally:
            self._sock = None
            sock.close()
