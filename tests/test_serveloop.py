"""helpers.serveloop: LoopServer with what a lab's tests need (line clients, small buffers, a late start)."""

from __future__ import annotations

import select
import socket
import time

import pytest

import helpers as h
from helpers.core.registry import live_servers
from helpers.serveloop import LineClient, ServeLoop


def upper_lines(listener: socket.socket, stop: socket.socket) -> None:
    """A small one-thread loop: each connection gets back what it sends, upper-cased."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(stop, select.POLLIN)
    conns: dict[int, socket.socket] = {}
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == stop.fileno():
                    return
                if fd == listener.fileno():
                    conn, _ = listener.accept()
                    conns[conn.fileno()] = conn
                    poller.register(conn, select.POLLIN)
                    continue
                data = conns[fd].recv(4096)
                if data:
                    conns[fd].sendall(data.upper())
                else:
                    poller.unregister(fd)
                    conns.pop(fd).close()
    finally:
        for conn in conns.values():
            conn.close()


def test_a_loop_serves_and_stops() -> None:
    with ServeLoop(upper_lines) as loop:
        assert loop.running and loop in live_servers()
        assert loop.listener is loop.sock and loop.stop_socket.fileno() >= 0
        a, b = loop.connect(), loop.connect()
        a.say("hel")
        a.say("lo\nwor")  # a line in two pieces, and the start of the next
        b.say("second client\n")
        assert a.line() == "HELLO"
        assert b.line() == "SECOND CLIENT"
        a.say("ld\n")
        assert a.line() == "WORLD"
        loop.stop()
        assert not loop.loop_thread.is_alive() and loop not in live_servers()
        with pytest.raises(EOFError, match=r"^the server closed the connection; unread: b''$"):
            a.line()  # the loop closed its connections as it returned
    assert a.sock.fileno() == -1, "the with block closes the clients"


def test_the_loops_own_error_reaches_a_waiting_client_and_stop() -> None:
    def broken(listener: socket.socket, stop: socket.socket) -> None:
        listener.setblocking(True)  # LoopServer hands over a non-blocking listener
        listener.accept()[0].close()
        raise ValueError("the loop's own mistake")

    loop = ServeLoop(broken)
    client = loop.connect()
    with pytest.raises(ValueError, match=r"^the loop's own mistake$"):
        client.line()
    with pytest.raises(h.ServerError, match=r"^loop:\d+: a handler raised ValueError: the loop's own mistake\.$"):
        loop.stop()
    client.close()


def test_a_failed_block_reports_the_loops_own_error() -> None:
    def refuses(listener: socket.socket, stop: socket.socket) -> None:
        raise NotImplementedError("write the loop")

    with pytest.raises(NotImplementedError, match=r"^write the loop$") as caught:
        with ServeLoop(refuses) as loop, socket.create_connection(loop.address, timeout=0.5) as client:
            deadline = time.monotonic() + 5
            while not loop.errors and time.monotonic() < deadline:
                time.sleep(0.01)
            client.sendall(b"anyone?")
            client.recv(10)  # a timeout: nobody accepts
    assert isinstance(caught.value.__context__, TimeoutError), "what the block saw stays as the context"
    assert not live_servers()


def test_a_loop_blocked_on_a_client_that_never_reads_is_reported_and_woken() -> None:
    sndbufs = []

    def blocking_writer(listener: socket.socket, stop: socket.socket) -> None:
        listener.setblocking(True)  # LoopServer hands over a non-blocking listener
        conn, _ = listener.accept()
        with conn:
            sndbufs.append(conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
            try:
                conn.sendall(b"x" * (8 << 20))  # the client never reads: this blocks until it goes
            except OSError:
                pass

    loop = ServeLoop(blocking_writer, sndbuf=16_384)
    client = loop.connect(rcvbuf=4096)
    with pytest.raises(h.ServerError, match=r"^loop:\d+: a handler raised TimeoutError: serve\(\) did not return "
                                            r"within 0\.5 s of the stop signal\.$"):
        loop.stop(timeout_s=0.5)
    assert not loop.loop_thread.is_alive(), "closing the client woke the blocked sendall()"
    client.close()
    assert sndbufs == [32_768], "the accepted socket inherits the listener's SO_SNDBUF (doubled by the kernel)"


def test_line_waits_with_a_deadline() -> None:
    with ServeLoop(upper_lines) as loop:
        client = loop.connect(timeout_s=0.2)
        client.say("no newline yet")
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"^no whole line within 0\.2 s; unread: b'NO NEWLINE YET'$"):
            client.line()
        assert 0.15 < time.monotonic() - started < 2
        client.say("\n")
        assert client.line(timeout_s=1) == "NO NEWLINE YET"


def test_a_client_may_shrink_its_receive_buffer() -> None:
    with ServeLoop(upper_lines) as loop:
        small, default = loop.connect(rcvbuf=4096), loop.connect()
        got = small.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert got < default.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert got == 8192, "the kernel doubles the value asked for (man 7 socket)"


def test_a_late_start_keeps_the_clients_that_waited() -> None:
    with ServeLoop(upper_lines, start=False) as loop:
        early = LineClient(loop.address)  # waits in the accept queue: the loop does not run yet
        with early:
            early.say("first\n")
            with pytest.raises(TimeoutError):
                early.line(timeout_s=0.2)
            loop.go()
            assert early.line() == "FIRST"


def test_a_loop_that_never_started_still_stops() -> None:
    with ServeLoop(upper_lines, start=False):
        pass
    assert not live_servers()


@pytest.mark.parametrize("kwargs, kind, message", [
    ({"serve": None}, TypeError, r"^serve must be a function serve\(listener, stop\), got None$"),
    ({"sndbuf": 100}, ValueError, r"^sndbuf must be a number of bytes in 1024\.\.16777216 \(the kernel doubles it\), "
                                  r"or None; got 100$"),
    ({"backlog": -1}, ValueError, r"^backlog must be an int >= 0"),
])
def test_bad_arguments_are_refused(kwargs: dict, kind: type, message: str) -> None:
    args = {"serve": upper_lines, **kwargs}
    with pytest.raises(kind, match=message):
        ServeLoop(args.pop("serve"), **args)
    assert not live_servers()


def test_a_client_wants_sane_arguments() -> None:
    with pytest.raises(ValueError, match=r"^rcvbuf must be a number of bytes in 1024\.\.16777216"):
        LineClient(("127.0.0.1", 9), rcvbuf=True)
