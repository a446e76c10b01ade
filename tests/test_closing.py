"""helpers.closing against real loopback sockets and real child processes."""

from __future__ import annotations

import signal
import socket
import struct

import pytest

from helpers import closing
from helpers.observe import TcpState, entries_for, tcp_info


def test_connected_pair_is_established_and_talks() -> None:
    client, server = closing.connected_pair()
    with client, server:
        assert tcp_info(client).state is TcpState.ESTABLISHED
        assert client.getpeername() == server.getsockname()
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"


def test_connected_pair_rejects_tiny_buffers() -> None:
    with pytest.raises(ValueError, match=r"^bufsize must be an int of at least 1024 bytes"):
        closing.connected_pair(bufsize=10)


def test_fill_send_queue_leaves_data_unsent_and_peer_full() -> None:
    client, server = closing.connected_pair(bufsize=16 * 1024)
    with client, server:
        taken = closing.fill_send_queue(client)
        inq, _ = closing.queued(server)
        _, outq = closing.queued(client)
        assert taken > 0
        assert inq > 0 and outq > 0
        # each byte is at the peer or still in our queue; bytes the peer holds but has not
        # acknowledged yet (delayed ACK) count on both sides
        assert inq + outq >= taken and inq <= taken
        assert tcp_info(client).notsent_bytes > 0  # the window is full: some were never sent
        assert client.getblocking()


def test_fill_send_queue_respects_limit() -> None:
    client, server = closing.connected_pair()
    with client, server:
        assert closing.fill_send_queue(client, limit=1000) == 1000
        with pytest.raises(ValueError, match=r"^limit must be a positive"):
            closing.fill_send_queue(client, limit=0)


def test_shutdown_behind_full_window_holds_fin_wait1_then_drain_releases_it() -> None:
    client, server = closing.connected_pair(bufsize=16 * 1024)
    with client, server:
        taken = closing.fill_send_queue(client)
        client.shutdown(socket.SHUT_WR)
        assert tcp_info(client).state is TcpState.FIN_WAIT1
        assert closing.drain(server) == taken
        state, _ = closing.wait_for_state(client, "FIN_WAIT2")
        assert state is TcpState.FIN_WAIT2


def test_drain_times_out_without_eof() -> None:
    client, server = closing.connected_pair()
    with client, server:
        client.sendall(b"abc")
        with pytest.raises(TimeoutError, match=r"^no EOF within 0.05 s after 3 bytes"):
            closing.drain(server, timeout_s=0.05)


def test_wait_for_state_times_out_naming_the_state() -> None:
    client, server = closing.connected_pair()
    with client, server:
        with pytest.raises(TimeoutError, match=r"^socket stayed in ESTABLISHED for 0.02 s, waiting for CLOSE_WAIT$"):
            closing.wait_for_state(client, TcpState.CLOSE_WAIT, timeout_s=0.02)


def test_wait_for_inq_counts_unread_bytes() -> None:
    client, server = closing.connected_pair()
    with client, server:
        server.sendall(b"x" * 5000)
        assert closing.wait_for_inq(client, 5000) == 5000
        with pytest.raises(TimeoutError, match=r"^only 5000 of 5001 bytes arrived within 0.02 s$"):
            closing.wait_for_inq(client, 5001, timeout_s=0.02)
        with pytest.raises(ValueError, match=r"^nbytes must be >= 0"):
            closing.wait_for_inq(client, -1)


def test_wait_for_acked_waits_for_the_peers_kernel_not_its_program() -> None:
    client, server = closing.connected_pair()
    with client, server:
        client.sendall(b"x" * 5000)
        assert 0 <= closing.wait_for_acked(client) < 2
        assert closing.queued(server)[0] == 5000, "acknowledged, and still unread by the peer's program"
        with pytest.raises(ValueError, match=r"^timeout_s must be a number of seconds in \(0, 600\], got 0$"):
            closing.wait_for_acked(client, timeout_s=0)
    sender, receiver = closing.connected_pair(bufsize=4096)
    with sender, receiver:
        closing.fill_send_queue(sender)  # the receiver's window is full: the rest cannot be acknowledged
        with pytest.raises(TimeoutError, match=r"^\d+ bytes still unacknowledged after 0.05 s$"):
            closing.wait_for_acked(sender, timeout_s=0.05)


def test_wait_for_row_finds_time_wait_after_close() -> None:
    client, server = closing.connected_pair()
    local, remote = client.getsockname(), client.getpeername()
    client.close()
    server.close()
    row = closing.wait_for_row(local, remote, "TIME_WAIT")
    assert row.state is TcpState.TIME_WAIT
    with pytest.raises(TimeoutError, match="the table shows: TIME_WAIT"):
        closing.wait_for_row(local, remote, "LAST_ACK", timeout_s=0.02)


def test_signal_name() -> None:
    assert closing.signal_name(-signal.SIGPIPE) == "killed by SIGPIPE"
    assert closing.signal_name(0) == "exit 0"
    assert closing.signal_name(None) == "still running"


def test_child_process_result_and_reaping() -> None:
    with closing.ChildProcess("import sys; print(sys.argv[1]); sys.exit(3)", "hi") as child:
        result = child.wait()
    assert (result.returncode, result.stdout, result.how) == (3, "hi\n", "exit 3")


def test_child_process_killed_on_timeout() -> None:
    with closing.ChildProcess("import time; time.sleep(30)") as child:
        with pytest.raises(TimeoutError, match=r"still ran after 0.2 s; it was killed$"):
            child.wait(timeout_s=0.2)
    assert child.process.returncode == -signal.SIGKILL


def test_child_process_reaped_when_block_fails() -> None:
    with pytest.raises(RuntimeError):
        with closing.ChildProcess("import time; time.sleep(30)") as child:
            raise RuntimeError("boom")
    assert child.process.returncode == -signal.SIGKILL


def test_child_process_rejects_empty_code() -> None:
    with pytest.raises(ValueError, match=r"^ChildProcess needs Python source"):
        closing.ChildProcess("  ")


def test_lookup_and_both_ends_match_the_proc_table() -> None:
    client, server = closing.connected_pair()
    with client, server:
        ends = closing.both_ends(client)
        assert ends.states() == ["ESTABLISHED", "ESTABLISHED"]
        key = [(e.local, e.remote, e.inode) for e in ends]
        assert key == [(e.local, e.remote, e.inode) for e in entries_for(client)]
        client.sendall(b"x" * 100)
        closing.wait_for_inq(server, 100)
        assert closing.lookup(server.getsockname(), server.getpeername())[0].recv_q == 100


def test_lookup_of_a_vanished_tuple_is_empty_not_the_listener() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert closing.lookup(listener.getsockname(), ("127.0.0.1", 9)) == []
    client, server = closing.connected_pair()
    local, remote = client.getsockname(), client.getpeername()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST: the 4-tuple is gone at once
    server.close()
    assert closing.lookup(local, remote) == []


def test_lookup_ipv6() -> None:
    client, server = closing.connected_pair(host="::1")
    with client, server:
        assert closing.both_ends(client).states() == ["ESTABLISHED", "ESTABLISHED"]


