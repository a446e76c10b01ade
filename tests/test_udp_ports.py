"""helpers.udp_ports: the /proc/net/udp table and a race-free unreachable port, on real sockets."""

from __future__ import annotations

import errno
import os
import select
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


@pytest.mark.parametrize(("port", "error"), [(-1, ValueError), (65536, ValueError), ("53", TypeError),
                                           (True, TypeError)])
def test_port_is_validated(port, error) -> None:
    with pytest.raises(error, match=r"^port must be an int in 0-65535, got "):
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


def no_udp_diag(port: object) -> None:
    """A kernel built without UDP sock_diag (mocked: this one has it)."""
    raise OSError(errno.EPROTONOSUPPORT, "no udp_diag")


def test_netlink_and_proc_agree_on_a_quiet_socket(monkeypatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the minimum: a few datagrams fit
        for _ in range(200):
            tx.sendto(b"x" * 1000, rx.getsockname())
        via_netlink = mine(rx)
        monkeypatch.setattr(udp_ports, "_from_netlink", no_udp_diag)
        via_proc = mine(rx)
    assert via_netlink == via_proc and len(via_netlink) == 1, (via_netlink, via_proc)
    assert via_netlink[0].drops > 0 and via_netlink[0].recv_q > 0, via_netlink


def test_table_lists_a_socket_once_when_the_kernel_listed_it_twice(tmp_path, monkeypatch) -> None:
    """One read of /proc/net/udp can list a socket twice while other sockets come and go (7%
    of reads under heavy churn); replayed from a file, since it is not repeatable."""
    row = "15238: 0100007F:B60E 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 65276554 2 " \
        "00000000276b03a9 0\n"
    header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref " \
        "pointer drops\n"
    (tmp_path / "udp").write_text(header + row + row.replace("15238:", "15239:"))
    monkeypatch.setattr(udp_ports, "PROC_NET", tmp_path)
    monkeypatch.setattr(udp_ports, "_from_netlink", no_udp_diag)
    (entry,) = udp_ports.udp_table(0xB60E)
    assert entry.inode == 65276554 and entry.local == ("127.0.0.1", 0xB60E)


def test_table_lists_every_socket_of_a_crowded_namespace() -> None:
    """Hundreds of sockets take several netlink messages; every one of ours is listed once."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(400)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        inodes = [r.inode for r in udp_ports.udp_table()]
        ours = {os.fstat(s.fileno()).st_ino for s in socks}
        assert ours <= set(inodes) and len(inodes) == len(set(inodes)), len(ours - set(inodes))
    finally:
        for s in socks:
            s.close()


def test_an_admitted_sender_gets_through_and_a_refused_send_sent_nothing() -> None:
    """Lesson 11's receiver-side evidence: the port opens to our socket once the first
    datagram's ICMP error is stored; the next send() is refused and sends nothing."""
    with udp_ports.unreachable_port() as nobody, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        sock.connect(nobody.address)
        sock.send(b"1")
        assert select.select([sock], [], [], 2.0)[0], "the ICMP error makes the socket readable"
        nobody.admit(sock.getsockname())
        with pytest.raises(ConnectionRefusedError):
            sock.send(b"2")
        sock.send(b"3")
        other.sendto(b"not admitted", nobody.address)
        assert nobody.received() == [b"3"]


def test_admit_needs_an_ip_and_port() -> None:
    with udp_ports.unreachable_port() as nobody:
        with pytest.raises(TypeError, match=r"^sender must be a \(host, port\) tuple"):
            nobody.admit("127.0.0.1:80")
        with pytest.raises(ValueError, match=r"^quiet_s must be a number of seconds in \(0, 10\], got 0$"):
            nobody.received(quiet_s=0)
