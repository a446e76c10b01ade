"""helpers.completion: a ctypes io_uring and glibc's POSIX aio, on real files and sockets."""

from __future__ import annotations

import ctypes
import os
import socket
import tempfile
import threading
import time

import pytest

from helpers import aio, completion

URING = completion.io_uring_status()
needs_uring = pytest.mark.skipif(not URING.usable, reason=f"io_uring unavailable: {URING.explain()}")


def test_status_explains_itself() -> None:
    assert URING.explain().startswith("io_uring_setup(2) ")
    assert URING.disabled_sysctl in (None, 0, 1, 2)
    refused = completion.UringStatus(2, 1)  # EPERM
    assert not refused.usable and "EPERM" in refused.explain() and "switched off" in refused.explain()


@needs_uring
def test_recv_completes_only_after_data_arrives() -> None:
    a, b = socket.socketpair()
    buf = ctypes.create_string_buffer(32)
    try:
        with completion.Ring(4) as ring:
            assert ring.submit(ring.recv(b.fileno(), buf, user_data=9)) == 1
            assert ring.reap() == []
            a.send(b"data")
            assert ring.wait(1) == [completion.Completion(9, 4)]
            assert buf.raw[:4] == b"data"
    finally:
        a.close()
        b.close()


@needs_uring
def test_nop_and_batched_file_reads() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(bytes(range(256)) * 64)
        f.flush()
        bufs = [ctypes.create_string_buffer(256) for _ in range(8)]
        with completion.Ring(8) as ring:
            ring.submit(ring.nop(1), wait=1)
            assert ring.reap() == [completion.Completion(1, 0)]
            ring.submit(*(ring.read(f.fileno(), bufs[i], i * 256, user_data=100 + i) for i in range(8)), wait=8)
            done = ring.reap()
            assert sorted(c.user_data for c in done) == list(range(100, 108))
            assert all(c.res == 256 and c.error is None for c in done)
            assert all(b.raw == bytes(range(256)) for b in bufs)
            assert ring.enter_calls == 2


@needs_uring
def test_errors_come_back_as_negative_results() -> None:
    buf = ctypes.create_string_buffer(8)
    with completion.Ring(2) as ring:
        ring.submit(ring.read(-1, buf, 0, user_data=5), wait=1)
        (c,) = ring.reap()
        assert c.user_data == 5 and c.error == "EBADF"


@needs_uring
def test_ring_refuses_misuse() -> None:
    with pytest.raises(ValueError, match=r"^entries must be an int in 1-4096"):
        completion.Ring(0)
    ring = completion.Ring(2)
    with pytest.raises(ValueError, match=r"exceed the ring's 2$"):
        ring.submit(ring.nop(1), ring.nop(2), ring.nop(3))
    ring.close()
    ring.close()
    with pytest.raises(ValueError, match=r"^this Ring is closed$"):
        ring.submit(ring.nop(1))


def test_read_syscalls_counts_this_threads_reads() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"abc")
        before = completion.read_syscalls()
        for _ in range(3):
            os.read(r, 1)
        assert completion.read_syscalls() - before == 3 + 1  # + the first measurement's own read
    finally:
        os.close(r)
        os.close(w)


def test_posix_aio_reads_a_file() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(b"0123456789")
        f.flush()
        with completion.PosixAioRead(f.fileno(), 4, offset=3) as req:
            assert req.result() == b"3456"


def test_posix_aio_on_a_socket_is_a_thread_blocked_in_read() -> None:
    a, b = socket.socketpair()
    try:
        with completion.PosixAioRead(b.fileno(), 16) as req:
            with pytest.raises(TimeoutError, match=r"^aio_read still in flight after 0.05 s"):
                req.result(0.05)
            assert not req.done()
            others = [t for t in completion.native_threads() if t != threading.get_native_id()]
            assert "read" in aio.thread_syscalls(others).values()  # glibc's helper, new or reused
            a.send(b"late")
            assert req.result() == b"late"
    finally:
        a.close()
        b.close()


def test_leaving_the_block_with_a_read_in_flight_is_an_error() -> None:
    a, b = socket.socketpair()
    try:
        with pytest.raises(RuntimeError, match=r"^aio_read still in flight when its block ended"):
            with completion.PosixAioRead(b.fileno(), 16):
                pass
        b.shutdown(socket.SHUT_RD)  # let glibc's helper thread finish its read (returns 0)
        deadline = time.monotonic() + 2
        while completion._unfinished and not completion._unfinished[-1].done() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert completion._unfinished[-1].done()
    finally:
        a.close()
        b.close()


def test_posix_aio_refuses_a_bad_size() -> None:
    with pytest.raises(ValueError, match=r"^nbytes must be an int in 1-1048576, got 0$"):
        completion.PosixAioRead(0, 0)
