"""helpers.core.accept: the drain and the pause, on real listeners (EMFILE is simulated here by a
listener whose accept() fails; tests/test_accept_policy.py starves real servers of descriptors)."""

from __future__ import annotations

import errno
import selectors
import socket

import pytest

from helpers.core import accept


class Starving:
    """A real listener whose first `failures` accept() calls fail with EMFILE, as when the
    process is out of descriptors (the connection stays queued, the listener readable)."""

    def __init__(self, listener: socket.socket, failures: int):
        self.listener = listener
        self.failures = failures

    def fileno(self) -> int:
        return self.listener.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.listener.accept()


@pytest.fixture
def listener():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def test_accept_ready_drains_the_queue_up_to_the_limit(listener: socket.socket) -> None:
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        got, out = accept.accept_ready(listener, limit=2)
        assert len(got) == 2 and not out
        more, out = accept.accept_ready(listener)
        assert len(more) == 1 and not out
        assert accept.accept_ready(listener) == ([], False)  # the queue is empty: EAGAIN
    finally:
        for sock, _ in got + more:
            sock.close()
        for c in clients:
            c.close()


def test_accept_ready_stops_at_emfile_with_what_it_has(listener: socket.socket) -> None:
    with socket.create_connection(listener.getsockname()):
        got, out = accept.accept_ready(Starving(listener, 1))  # type: ignore[arg-type]
        assert (got, out) == ([], True)
        got, out = accept.accept_ready(Starving(listener, 0))  # type: ignore[arg-type]
        assert len(got) == 1 and not out
        got[0][0].close()


def test_selector_acceptor_pauses_then_watches_again(listener: socket.socket) -> None:
    starving = Starving(listener, 1)
    with selectors.DefaultSelector() as sel, socket.create_connection(listener.getsockname()):
        acc = accept.SelectorAcceptor(sel, starving, retry_delay_s=0.05)  # type: ignore[arg-type]
        assert acc.timeout() is None and sel.select(5)  # readable: a connection is queued
        assert acc.accept() == [] and acc.paused == 1
        assert starving.fileno() not in sel.get_map()  # not watched while paused
        assert 0 < acc.timeout() <= 0.05  # type: ignore[operator]
        assert acc.accept() == []  # still paused: no accept() is even tried
        assert sel.select(acc.timeout()) == []  # nothing else to wait for: the pause ends by itself
        conns = acc.accept()  # the pause is over: watched again, and the queued client is taken
        assert len(conns) == 1 and acc.accepted == 1 and acc.timeout() is None
        assert starving.fileno() in sel.get_map()
        conns[0].close()


def test_asyncio_paused_recognises_asyncio_s_accept_report() -> None:
    emfile = OSError(errno.EMFILE, "Too many open files")
    assert accept.asyncio_paused({"message": "socket.accept() out of system resource", "exception": emfile})
    assert not accept.asyncio_paused({"message": "Exception in callback", "exception": emfile})
    assert not accept.asyncio_paused({"message": "socket.accept() out of system resource",
                                      "exception": OSError(errno.EBADF, "bad")})
    assert accept.starved(emfile) and not accept.starved(ValueError())
