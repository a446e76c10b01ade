"""TCP_INFO: one socket's own account of its connection (struct tcp_info, <linux/tcp.h>).

Theory of operation. ``getsockopt(IPPROTO_TCP, TCP_INFO)`` describes one socket: its state,
timers in microseconds, windows, and how many segments it sent and received (``man 7 tcp``).
It is the trustworthy evidence in a lesson, because no other process touches it (unlike the
namespace-wide counters). The kernel copies as many bytes as both it and the caller know;
fields a kernel does not fill stay None here.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, fields

from ..core import checks
from ..core.features import require_linux
from .tables import TcpState

__all__ = ["TcpInfo", "tcp_info"]

# struct tcp_info, in order, from <linux/tcp.h>. The kernel returns as many bytes as it
# knows; fields beyond what it returned stay None (older kernels stop earlier).
_TCP_INFO_LAYOUT: list[tuple[str, str]] = [
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"),
    ("backoff", "B"), ("options", "B"), ("_wscale", "B"), ("_flags", "B"),
    ("rto_us", "I"), ("ato_us", "I"), ("snd_mss", "I"), ("rcv_mss", "I"),
    ("unacked", "I"), ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent_ms", "I"), ("last_ack_sent_ms", "I"),
    ("last_data_recv_ms", "I"), ("last_ack_recv_ms", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt_us", "I"), ("rttvar_us", "I"),
    ("snd_ssthresh", "I"), ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt_us", "I"), ("rcv_space", "I"), ("total_retrans", "I"),
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"),
    ("bytes_received", "Q"), ("segs_out", "I"), ("segs_in", "I"),
    ("notsent_bytes", "I"), ("min_rtt_us", "I"), ("data_segs_in", "I"),
    ("data_segs_out", "I"), ("delivery_rate", "Q"), ("busy_time_us", "Q"),
    ("rwnd_limited_us", "Q"), ("sndbuf_limited_us", "Q"), ("delivered", "I"),
    ("delivered_ce", "I"), ("bytes_sent", "Q"), ("bytes_retrans", "Q"),
    ("dsack_dups", "I"), ("reord_seen", "I"), ("rcv_ooopack", "I"), ("snd_wnd", "I"),
    ("rcv_wnd", "I"), ("rehash", "I"), ("total_rto", "H"), ("total_rto_recoveries", "H"),
    ("total_rto_time_ms", "I"),
]
_TCP_INFO_MAX = 512  # bytes asked for; the kernel returns min(this, sizeof its struct)


@dataclass(frozen=True)
class TcpInfo:
    """One socket's struct tcp_info. Units are in the names (``_us``, ``_ms``); None = not
    reported by this kernel.

    For a LISTEN socket the kernel reuses two fields: ``unacked`` is the current accept
    queue length and ``sacked`` the queue's limit (the backlog passed to listen()).
    """

    state: TcpState
    ca_state: int
    retransmits: int
    probes: int
    backoff: int
    options: int
    snd_wscale: int
    rcv_wscale: int
    rto_us: int
    ato_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    sacked: int
    lost: int
    retrans: int
    fackets: int
    last_data_sent_ms: int
    last_ack_sent_ms: int
    last_data_recv_ms: int
    last_ack_recv_ms: int
    pmtu: int
    rcv_ssthresh: int
    rtt_us: int
    rttvar_us: int
    snd_ssthresh: int
    snd_cwnd: int
    advmss: int
    reordering: int
    rcv_rtt_us: int
    rcv_space: int
    total_retrans: int
    pacing_rate: int | None = None
    max_pacing_rate: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None
    segs_out: int | None = None
    segs_in: int | None = None
    notsent_bytes: int | None = None
    min_rtt_us: int | None = None
    data_segs_in: int | None = None
    data_segs_out: int | None = None
    delivery_rate: int | None = None
    busy_time_us: int | None = None
    rwnd_limited_us: int | None = None
    sndbuf_limited_us: int | None = None
    delivered: int | None = None
    delivered_ce: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    dsack_dups: int | None = None
    reord_seen: int | None = None
    rcv_ooopack: int | None = None
    snd_wnd: int | None = None
    rcv_wnd: int | None = None
    rehash: int | None = None
    total_rto: int | None = None
    total_rto_recoveries: int | None = None
    total_rto_time_ms: int | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> TcpInfo:
        """Decode the bytes getsockopt(TCP_INFO) returned (any kernel's length).

        TypeError for anything but bytes-like data; ValueError if it is shorter than 104
        bytes or its first byte is no TCP state.
        """
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise TypeError(f"TcpInfo.from_bytes() needs the bytes of getsockopt(TCP_INFO), got {type(raw).__name__}")
        if len(raw) < 104:  # up to total_retrans: every kernel since 2.6 returns this much
            raise ValueError(f"TCP_INFO returned {len(raw)} bytes, expected at least 104")
        values: dict[str, int] = {}
        offset = 0
        for name, code in _TCP_INFO_LAYOUT:
            size = struct.calcsize(code)
            if offset + size > len(raw):
                break
            (values[name],) = struct.unpack_from("=" + code, raw, offset)
            offset += size
        wscale = values.pop("_wscale")
        values.pop("_flags")
        values["snd_wscale"] = wscale & 0x0F
        values["rcv_wscale"] = wscale >> 4
        if values["state"] not in {s.value for s in TcpState}:
            raise ValueError(f"TCP_INFO state byte is {values['state']}, not a TCP state (1-12): not struct tcp_info")
        values["state"] = TcpState(values["state"])
        return cls(**values)

    def as_dict(self) -> dict[str, object]:
        """The fields the kernel reported, with the state as its name."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.name if isinstance(value, TcpState) else value
        return out


def tcp_info(sock: socket.socket) -> TcpInfo:
    """Read struct tcp_info for a TCP socket (connected, listening or closing).

    Raises TypeError for anything that is not a TCP socket, and ValueError for a closed one.
    """
    require_linux("TCP_INFO")
    checks.tcp_socket("tcp_info()", sock)
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_MAX)
    return TcpInfo.from_bytes(raw)

