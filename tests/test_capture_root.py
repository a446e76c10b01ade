"""helpers.capture_root: the BPF port filter, a real capture on lo as root, and the clear
refusal as a normal user."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from helpers import capture_root, observe, packets, servers

F = packets.TcpFlags
CAN_CAPTURE, WHY_NOT = capture_root.can_capture()


def test_filter_program_shape() -> None:
    program = capture_root.tcp_port_filter(5000)
    assert len(program) == 20 * 8  # 20 struct sock_filter instructions of 8 bytes
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    assert insns[-2] == (0x06, 0, 0, 0x40000) and insns[-1] == (0x06, 0, 0, 0)  # accept / drop
    for i, (code, jt, jf, _k) in enumerate(insns):
        if code in (0x15, 0x45):  # conditional jumps must land inside the program
            assert i + 1 + max(jt, jf) < len(insns)
    assert sum(k == 5000 for _c, _t, _f, k in insns) == 4  # src and dst port, IPv4 and IPv6


@pytest.mark.parametrize(("port", "error"), [(0, ValueError), (65536, ValueError), (-1, ValueError),
                                           (True, TypeError), ("80", TypeError)])
def test_filter_rejects_bad_ports(port: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^port must be an int in 1-65535, got "):
        capture_root.tcp_port_filter(port)  # type: ignore[arg-type]


def _echo_once(conn: socket.socket) -> bytes:
    data = conn.recv(100)
    conn.sendall(data)
    conn.recv(1)
    return data


@pytest.mark.skipif(not CAN_CAPTURE, reason="packet sockets need CAP_NET_RAW (root)")
def test_capture_a_short_connection_and_only_it() -> None:
    with servers.TCPServer(_echo_once) as srv, servers.TCPServer(_echo_once) as other:
        with capture_root.LoopbackCapture(srv.address[1]) as cap:
            for target in (other.address, srv.address):  # traffic on another port must be filtered out
                with socket.create_connection(target) as c:
                    c.sendall(b"ping!")
                    assert c.recv(100) == b"ping!"
                    me = c.getsockname()
            srv.result()
            other.result()
            deadline = time.monotonic() + 5
            while not observe.socket_table(local=me, states=["TIME_WAIT"]) and time.monotonic() < deadline:
                time.sleep(0.002)
    frames = [f.parse() for f in cap.frames]
    assert all(f.tcp is not None and srv.address[1] in (f.tcp.src_port, f.tcp.dst_port) for f in frames)
    ours = frozenset({me, srv.address})  # our 4-tuple: an old socket elsewhere may share the port
    segs = packets.relative_numbers(
        f for f in frames if f.endpoints and frozenset((str(ip), pt) for ip, pt in f.endpoints) == ours)
    assert [s.flags for s in segs[:3]] == [F.SYN, F.SYN | F.ACK, F.ACK]
    assert segs[0].segment.mss is not None and segs[0].segment.window_scale is not None
    assert sorted(s.length for s in segs if s.length) == [5, 5]
    assert {s.src for s in segs if s.flags & F.FIN} == {segs[0].src, segs[0].dst}
    assert cap.outgoing_skipped == len(cap.frames) and cap.drops == 0
    assert all(b.time_s >= a.time_s for a, b in zip(cap.frames, cap.frames[1:]))


@pytest.mark.skipif(not CAN_CAPTURE, reason="packet sockets need CAP_NET_RAW (root)")
def test_unknown_interface_is_named() -> None:
    with pytest.raises(ValueError, match=r"^no network interface named 'nope0'$"):
        with capture_root.LoopbackCapture(5000, interface="nope0"):
            pass


@pytest.mark.skipif(CAN_CAPTURE, reason="this process may capture (it has CAP_NET_RAW)")
def test_without_cap_net_raw_the_refusal_explains() -> None:
    assert "CAP_NET_RAW" in WHY_NOT and "namespace" in WHY_NOT
    with pytest.raises(capture_root.CaptureUnavailable, match=r"needs CAP_NET_RAW"):
        with capture_root.LoopbackCapture(5000):
            pass
    with pytest.raises(PermissionError):  # CaptureUnavailable is a PermissionError
        capture_root.LoopbackCapture(5000).__enter__()
