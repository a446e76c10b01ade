"""helpers.iomodels: watching a reading thread from /proc while it waits, on real socket pairs."""

from __future__ import annotations

import platform
import select
import socket
import threading

import pytest

from helpers import iomodels
from helpers.core import registry


def _blocking(sock: socket.socket) -> tuple[bytes, str]:
    return sock.recv(64), "recv()"


def _spinning(sock: socket.socket) -> tuple[bytes, str]:
    sock.setblocking(False)
    while True:
        try:
            return sock.recv(64), "recv() after EAGAINs"
        except BlockingIOError:
            pass


def _epoll(sock: socket.socket) -> tuple[bytes, str]:
    with select.epoll() as ep:
        ep.register(sock, select.EPOLLIN)
        ep.poll()
        return sock.recv(64), "recv() after epoll_wait()"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall names are known for x86_64")
def test_a_blocked_reader_waits_in_recvfrom_and_uses_no_cpu() -> None:
    w = iomodels.watch(_blocking, name="blocking", payload=b"data")
    assert (w.data, w.how, w.error) == (b"data", "recv()", None)
    assert w.samples >= 5 and max(w.waiting, key=w.waiting.get) == "recvfrom", w.waiting
    assert w.cpu_ms < 50, w.cpu_ms


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall names are known for x86_64")
def test_an_epoll_reader_waits_in_epoll_wait() -> None:
    w = iomodels.watch(_epoll)
    assert w.data == b"hello" and max(w.waiting, key=w.waiting.get) == "epoll_wait", w.waiting


def test_a_spinning_reader_is_seen_running_and_burns_cpu() -> None:
    w = iomodels.watch(_spinning, wait_s=0.2)
    # Never asleep in a socket call: on a CPU, or waiting for the interpreter lock (futex) that
    # the sampling thread holds now and then; which of the two dominates depends on how the
    # lock is handed over, so only their sum is asserted (a blocking reader shows recvfrom).
    busy = w.waiting.get("running", 0) + w.waiting.get("futex", 0)
    assert w.data == b"hello" and w.waiting.get("running", 0) > 0 and busy >= 0.9, w.waiting
    assert w.cpu_ms > 20, w.cpu_ms  # busy for a good part of 0.2 s, even sharing the interpreter lock


def test_a_reader_that_never_returns_is_woken_and_reported() -> None:
    def stubborn(sock: socket.socket) -> tuple[bytes, str]:
        while sock.recv(64):  # returns b"" only once watch() shuts the pair down
            pass
        return b"", "gave up at EOF"

    w = iomodels.watch(stubborn, wait_s=0.05)
    assert (w.data, w.how, w.error) == (b"", "gave up at EOF", None)
    assert not [t for t in threading.enumerate() if t.name.startswith(f"{registry.THREAD_PREFIX}-iomodel")]


def test_watch_refuses_what_it_cannot_run() -> None:
    with pytest.raises(TypeError, match=r"^read must be a function read\(sock\) -> \(bytes, str\), got int 3$"):
        iomodels.watch(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^wait_s must be a number of seconds in \(0, 5\], got 9$"):
        iomodels.watch(_blocking, wait_s=9)
    with pytest.raises(TypeError, match=r"^payload must be non-empty bytes"):
        iomodels.watch(_blocking, payload=b"")
