"""helpers.capture: packets captured in a private namespace (or on lo as root), the table,
the ladder, recordings, and the decoding of frames into relative numbers.

Live tests skip (saying why) where neither a user namespace nor root is available.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import capture, netns
from helpers.capture import Capture, Packet, _to_packets

ROOT = Path(__file__).resolve().parent.parent
MODE, WHY = capture.availability()
needs_capture = pytest.mark.skipif(MODE is None, reason=f"no packet capture here: {WHY}")


# --------------------------------------------------------------------------- decoding known bytes


def _frame(src_port: int, dst_port: int, seq: int, ack: int, flags: int, payload: bytes = b"",
           options: bytes = b"") -> str:
    """An Ethernet + IPv4 + TCP frame as loopback carries it, in hex (the child's format)."""
    tcp_len = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", src_port, dst_port, seq, ack, (tcp_len // 4) << 4, flags, 65483, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len + len(payload), 1, 0x4000, 64, 6, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return (bytes(12) + b"\x08\x00" + ip + tcp + options + payload).hex()


SYN_OPTS = struct.pack("!BBH", 2, 4, 65495) + b"\x01" + struct.pack("!BBB", 3, 3, 7)  # MSS, NOP, wscale 7


def test_relative_numbers_per_connection_and_direction() -> None:
    c1, c2, srv = 40000, 40002, 5000
    frames = [
        [0.001, _frame(c1, srv, 1000, 0, 0x02, options=SYN_OPTS)],  # SYN
        [0.002, _frame(srv, c1, 7000, 1001, 0x12, options=SYN_OPTS)],  # SYN,ACK
        [0.003, _frame(c1, srv, 1001, 7001, 0x10)],  # ACK
        [0.004, _frame(c1, srv, 1001, 7001, 0x18, b"hello")],  # data
        [0.005, _frame(c1, srv, 1006, 7001, 0x11)],  # FIN
        # a second connection to the same server port: its own ISNs, numbered from 0 again
        [0.010, _frame(c2, srv, 50, 0, 0x02, options=SYN_OPTS)],
        [0.011, _frame(srv, c2, 90000, 51, 0x12, options=SYN_OPTS)],
    ]
    pkts = _to_packets(frames)
    assert [p.conn for p in pkts] == [1, 1, 1, 1, 1, 2, 2]
    assert [p.direction for p in pkts] == ["->", "<-", "->", "->", "->", "->", "<-"]
    assert [(p.flags, p.seq, p.ack, p.length) for p in pkts[:5]] == [
        ("SYN", 0, None, 0), ("SYN,ACK", 0, 1, 0), ("ACK", 1, 1, 0), ("PSH,ACK", 1, 1, 5), ("FIN,ACK", 6, 1, 0)]
    assert (pkts[0].mss, pkts[0].window_scale) == (65495, 7)
    assert pkts[2].window == 65483 << 7  # scaled once both SYNs offered scaling
    assert (pkts[5].seq, pkts[6].seq, pkts[6].ack) == (0, 0, 1)
    assert pkts[6].raw_seq == 90000


def test_non_tcp_and_garbage_frames_are_skipped() -> None:
    arp = (bytes(12) + b"\x08\x06" + bytes(28)).hex()
    assert _to_packets([[0.0, arp], [0.1, "00" * 5], [0.2, _frame(1, 2, 0, 0, 0x02)]])[0].flags == "SYN"
    assert len(_to_packets([[0.0, arp], [0.1, "00" * 5]])) == 0


def test_table_text_and_html() -> None:
    cap = Capture(_to_packets([[0.001, _frame(40000, 5000, 1, 0, 0x02, options=SYN_OPTS)],
                               [0.0425, _frame(5000, 40000, 9, 2, 0x14)]]))
    text = repr(cap)
    assert "SYN" in text and "RST,ACK" in text and "41.50" in text  # the gap column, in ms
    assert "mss 65495, wscale 7" in text
    assert cap._repr_html_().startswith("<table>") and "<td>RST,ACK</td>" in cap._repr_html_()
    ladder = cap.ladder("t")
    assert "41.5 ms pass" in ladder.text() and "Client->>Server: SYN seq=0" in ladder.mermaid()


def test_recordings_load_as_recorded(tmp_path: Path) -> None:
    cap = Capture(_to_packets([[0.001, _frame(40000, 5000, 1, 0, 0x02)]]), result={"x": 1}, mode="namespace")
    path = tmp_path / "r.json"
    capture.save_recording(cap, path, "test machine")
    back = capture.load_recording(path)
    assert not back.live and back.result == {"x": 1} and back[0] == cap[0]
    assert "RECORDED" in back.ladder("t").title and "test machine" in repr(back)
    with pytest.raises(ValueError, match="itself a recording"):
        capture.save_recording(back, path, "again")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks" / "recorded").glob("*.json")), ids=lambda p: p.stem)
def test_committed_recordings_are_labelled(path: Path) -> None:
    """Every recording says which helper made it, and when; the captures load here (the runs
    recorded by helpers.netns, helpers.timewait, helpers.nagle, helpers.addresses,
    helpers.tools.ping() and helpers.completion load in test_netns, test_timewait, test_nagle,
    test_addresses, test_tools and test_completion)."""
    data = json.loads(path.read_text())
    label = data["recorded"]
    makers = ("capture", "netns", "timewait", "nagle", "addresses", "tools.ping()", "completion")
    assert label.startswith(tuple(f"recorded by helpers.{m}" for m in makers)) and "UTC" in label, label
    if label.startswith("recorded by helpers.capture"):
        rec = capture.load_recording(path)
        assert not rec.live and len(rec) >= 2 and all(isinstance(p, Packet) for p in rec)


def test_stubs_explain_themselves() -> None:
    with pytest.raises(RuntimeError, match="only inside an experiment"):
        capture.watch(80)
    with pytest.raises(RuntimeError, match="only inside an experiment"):
        capture.mark("x")


def test_bad_arguments() -> None:
    def f() -> None:
        pass

    with pytest.raises(ValueError, match="timeout_s"):
        capture.capture(f, timeout_s=0)
    with pytest.raises(TypeError, match="JSON"):
        capture.capture(f, x=object())
    with pytest.raises(TypeError, match="def"):
        capture.capture(lambda: None)  # type: ignore[arg-type]


def test_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture, "availability", lambda: (None, "no namespaces (test) and no CAP_NET_RAW (test)"))

    def f() -> None:
        pass

    with pytest.raises(capture.CaptureUnavailable, match="no CAP_NET_RAW"):
        capture.capture(f)


# --------------------------------------------------------------------------- live


def handshake_data_close(payload_len: int) -> dict:
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    watch(srv.getsockname()[1])  # noqa: F821 - provided by capture() in the child
    client = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    client.sendall(b"x" * payload_len)
    got = 0
    while got < payload_len:
        got += len(conn.recv(65536))
    conn.sendall(b"ok")
    client.recv(2)
    mark("client close()")  # noqa: F821
    client.close()
    conn.recv(1)
    conn.close()
    srv.close()
    return {"got": got}


@needs_capture
@pytest.mark.parametrize("payload_len", [1, 1000])
def test_live_handshake_data_and_close_add_up(payload_len: int) -> None:
    cap = capture.capture(handshake_data_close, payload_len=payload_len)
    assert cap.live and cap.mode == MODE and cap.result["got"] == payload_len and cap.drops == 0 and cap.timed
    assert {p.conn for p in cap} == {1}
    flags = cap.flags()
    assert flags[:3] == ["SYN", "SYN,ACK", "ACK"], cap
    assert flags.count("SYN") == 1 and flags.count("SYN,ACK") == 1 and flags.count("FIN,ACK") == 2, cap
    assert not any(p.has("RST") for p in cap), cap
    # SYN consumes one; data advances by its length; FIN consumes one
    syn, synack, ack = cap[:3]
    assert (syn.seq, synack.seq, synack.ack, ack.seq, ack.ack) == (0, 0, 1, 1, 1)
    sent = [p for p in cap if p.direction == "->" and p.length]
    assert sum(p.length for p in sent) == payload_len and sent[0].seq == 1
    client_fin = next(p for p in cap if p.direction == "->" and p.has("FIN"))
    server_fin = next(p for p in cap if p.direction == "<-" and p.has("FIN"))
    assert client_fin.seq == 1 + payload_len and server_fin.seq == 1 + 2  # after b"ok"
    assert server_fin.ack == 1 + payload_len + 1 and cap[-1].ack == 1 + 2 + 1 and cap[-1].direction == "->"
    times = [p.time_s for p in cap]
    assert times == sorted(times) and 0 <= times[0] < 5
    assert syn.mss is not None and synack.mss is not None
    assert [m[1] for m in cap.marks] == ["client close()"]


def refused() -> str:
    import errno
    import socket

    spot = socket.socket()
    spot.bind(("127.0.0.1", 0))
    watch(spot.getsockname()[1])  # noqa: F821
    s = socket.socket()
    err = s.connect_ex(spot.getsockname())
    s.close()
    spot.close()
    return errno.errorcode[err]


@needs_capture
def test_live_rst_to_closed_port() -> None:
    cap = capture.capture(refused)
    assert cap.result == "ECONNREFUSED"
    assert cap.flags() == ["SYN", "RST,ACK"] and cap[1].ack == 1 and cap[1].direction == "<-"


def raises_inside() -> None:
    raise KeyError("boom")


@needs_capture
def test_errors_inside_are_reported() -> None:
    with pytest.raises(netns.NamespaceError, match="boom"):
        capture.capture(raises_inside)


def cut_lo_then_restore() -> dict:
    import errno
    import socket

    srv = socket.create_server(("127.0.0.1", 0))
    watch(srv.getsockname()[1])  # noqa: F821
    set_link("lo", up=False)  # noqa: F821 - provided inside the namespace only
    knock = socket.socket()
    knock.settimeout(0.3)
    err = knock.connect_ex(srv.getsockname())
    knock.close()
    set_link("lo", up=True)  # noqa: F821
    client = socket.create_connection(srv.getsockname(), timeout=2)
    conn, _ = srv.accept()
    client.close()
    conn.close()
    srv.close()
    return {"while_down": errno.errorcode.get(err, str(err))}


@pytest.mark.skipif(not netns.support().available, reason=f"no namespaces: {netns.support().reason}")
def test_link_down_inside_the_namespace_only() -> None:
    host_lo = Path("/sys/class/net/lo/flags").read_text().strip()
    cap = capture.capture(cut_lo_then_restore)
    assert cap.result["while_down"] in ("EAGAIN", "ENETUNREACH", "ENETDOWN"), cap.result  # never connected
    assert {p.conn for p in cap} == {1} and cap.flags()[:3] == ["SYN", "SYN,ACK", "ACK"], cap  # nothing while down
    assert Path("/sys/class/net/lo/flags").read_text().strip() == host_lo  # the host's lo untouched


def shaped_transfer(nbytes: int) -> dict:
    import socket
    import time

    shape_lo(rate_kbit=8000, burst_bytes=70000, limit_bytes=200000)  # noqa: F821 - 1 MB/s
    srv = socket.create_server(("127.0.0.1", 0))
    watch(srv.getsockname()[1])  # noqa: F821
    client = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    started = time.monotonic()
    client.sendall(b"x" * nbytes)
    client.close()
    got = 0
    while chunk := conn.recv(65536):
        got += len(chunk)
    took = time.monotonic() - started
    conn.close()
    srv.close()
    return {"got": got, "took_s": took}


@pytest.mark.skipif(not netns.support().available, reason=f"no namespaces: {netns.support().reason}")
def test_tbf_shaping_slows_the_private_lo() -> None:
    ok, why = capture.shaping_support()
    if not ok:
        pytest.skip(why)
    cap = capture.capture(shaped_transfer, nbytes=300_000)
    # 300 kB at 1 MB/s, less the 70 kB bucket: at least ~0.23 s; unshaped loopback takes ~1 ms
    assert cap.result["got"] == 300_000 and cap.result["took_s"] >= 0.15, cap.result
    assert sum(p.length for p in cap if p.direction == "->" and not p.has("SYN")) >= 300_000


def slow_experiment() -> int:
    import time

    time.sleep(0.3)
    return 7


@needs_capture
def test_start_runs_in_the_background() -> None:
    started = time.monotonic()
    job = capture.start(slow_experiment)
    assert time.monotonic() - started < 0.25 and not job.done()
    cap = job.wait()
    assert cap.result == 7 and len(cap) == 0 and job.done() and job.wait() is cap


@needs_capture
def test_a_finished_experiment_is_collected_after_its_deadline() -> None:
    """A lesson starts a capture, runs other cells for longer than the capture's timeout,
    then waits: the child finished in time, so its capture comes back, however busy the
    notebook's process is while wait() reads the child's output (here another thread holds
    the interpreter 100 ms at a time, as a busy kernel's does on a loaded machine)."""
    job = capture.start(slow_experiment, timeout_s=2)
    deadline = time.monotonic() + 2
    while not job.done():
        threading.Event().wait(0.05)
    threading.Event().wait(max(0.0, deadline - time.monotonic()) + 0.1)  # the deadline has passed
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            pass

    switch = sys.getswitchinterval()
    hog = threading.Thread(target=busy)
    sys.setswitchinterval(0.1)
    hog.start()
    try:
        cap = job.wait()
    finally:
        stop.set()
        hog.join()
        sys.setswitchinterval(switch)
    assert cap.result == 7


@needs_capture
def test_timeout_kills_the_child() -> None:
    with pytest.raises(TimeoutError, match="killed"):
        capture.capture(slow_experiment, timeout_s=0.1)
