"""helpers.udp_ports: the /proc/net/udp table and a race-free unreachable port, on real sockets."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from helpers import udp_ports


def mine(sock: socket.socket) -> list[udp_ports.UdpEntry]:
    """The table rows of `sock` (other programs may use the same port number on other addresses)."""
    inode = os.fstat(sock.fileno()).st_ino
    return [r for r in udp_ports.udp_table(sock.getsockname()[1]) if r.inode == inode]


def test_table_shows_a_bound_and_a_connected_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        b.connect(a.getsockname())
        (row_a,) = mine(a)
        (row_b,) = mine(b)
        inode_a = os.fstat(a.fileno()).st_ino
        local_a = a.getsockname()
    assert row_a.inode == inode_a and row_a.local == local_a
    assert row_a.state == "unconnected" and row_a.remote == ("0.0.0.0", 0)
    assert row_b.state == "connected" and row_b.remote == row_a.local
    assert row_a.uid == os.getuid()


def test_table_reports_queued_bytes() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"x" * 100, rx.getsockname())
        tx.sendto(b"x" * 100, rx.getsockname())
        (row,) = mine(rx)
        inode = os.fstat(rx.fileno()).st_ino
    assert row.inode == inode and row.recv_q > 0  # rx_queue counts buffer memory, not payload bytes


@pytest.mark.parametrize("port", [-1, 65536, "53", True])
def test_port_is_validated(port) -> None:
    with pytest.raises(ValueError, match=r"^port must be an int in 0-65535, got "):
        udp_ports.udp_table(port)


def test_unreachable_port_refuses_a_connected_sender_and_holds_the_port() -> None:
    with udp_ports.unreachable_port() as nobody:
        assert [r.state for r in nobody.rows] == ["connected"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.connect(nobody.address)
            client.send(b"hello?")
            with pytest.raises(ConnectionRefusedError):
                client.recv(100)
        with pytest.raises(BlockingIOError):
            nobody.blocker.recv(100)  # the blocker did not receive it either
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as thief, pytest.raises(OSError) as taken:
            thief.bind(nobody.address)
        assert taken.value.errno == errno.EADDRINUSE
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as thief, pytest.raises(OSError):
            thief.bind(("0.0.0.0", nobody.address[1]))
    assert nobody.blocker.fileno() == -1


def test_unreachable_port_on_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        cm = udp_ports.unreachable_port("::1")
        nobody = cm.__enter__()
    except OSError as exc:
        pytest.skip(f"::1 is not available here: {exc}")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.connect(nobody.address)
            client.send(b"hello?")
            with pytest.raises(ConnectionRefusedError):
                client.recv(100)
    finally:
        cm.__exit__(None, None, None)


def test_unreachable_port_needs_an_ip_address() -> None:
    with pytest.raises(ValueError, match=r"^host must be an IP address"), udp_ports.unreachable_port("localhost"):
        pass
