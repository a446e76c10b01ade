"""helpers.completion: a ctypes io_uring and glibc's POSIX aio, on real files and sockets."""

from __future__ import annotations

import ctypes
import json
import os
import re
import socket
import tempfile
import threading
import time

import fallback_checks
import pytest

from helpers import aio, completion, iomodels
from helpers.core import features

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


# ---- kernel AIO

KAIO = completion.kernel_aio_status()
needs_kaio = pytest.mark.skipif(not KAIO.usable, reason=f"kernel AIO unavailable: {KAIO.explain()}")


def test_kaio_status_explains_itself() -> None:
    assert KAIO.explain().startswith("io_setup(2) ")
    refused = completion.KaioStatus(1)  # EPERM
    assert not refused.usable and "EPERM" in refused.explain() and "seccomp" in refused.explain()


@needs_kaio
def test_kaio_socket_read_blocks_io_submit_until_data_arrives() -> None:
    a, b = socket.socketpair()
    buf = ctypes.create_string_buffer(32)
    took: dict[str, int] = {}
    try:
        with completion.KernelAio(4) as kaio:
            t = threading.Thread(target=lambda: took.update(n=kaio.submit(kaio.pread(b.fileno(), buf, 0, 5))))
            t.start()
            waits = aio.blocked_in([t.native_id], expect={"io_submit"})
            assert t.is_alive(), "io_submit returned with no data on the socket"
            if aio.SYSCALL_NAMES:
                assert waits == {t.native_id: "io_submit"}
            a.send(b"kernel aio")
            t.join(5)
            assert took == {"n": 1}
            assert kaio.getevents(0, 0) == [completion.Completion(5, 10)]  # done by the time io_submit returned
            assert buf.raw[:10] == b"kernel aio"
    finally:
        a.close()
        b.close()


@needs_kaio
def test_kaio_poll_returns_at_once_and_completes_with_the_ready_mask() -> None:
    import select

    a, b = socket.socketpair()
    try:
        with completion.KernelAio(4) as kaio:
            assert kaio.submit(kaio.poll(b.fileno(), select.POLLIN, 7)) == 1
            assert kaio.getevents(0, 0) == []
            a.send(b"x")
            [done] = kaio.getevents(1, 2)
            assert done.user_data == 7 and done.res & select.POLLIN
            assert kaio.submit(kaio.poll(b.fileno(), select.POLLIN, 8)) == 1  # still readable: done at once
            assert [c.user_data for c in kaio.getevents(0, 0)] == [8]
            kaio.submit(kaio.poll(a.fileno(), select.POLLIN, 9))  # left queued: close() cancels it
    finally:
        a.close()
        b.close()


@needs_kaio
def test_kaio_buffered_file_read_is_done_inside_io_submit() -> None:
    with tempfile.TemporaryFile() as f, completion.KernelAio(2) as kaio:
        f.write(b"0123456789" * 100)
        f.flush()
        buf = ctypes.create_string_buffer(10)
        assert kaio.submit(kaio.pread(f.fileno(), buf, 20, 1)) == 1
        assert kaio.getevents(0, 0) == [completion.Completion(1, 10)]
        assert buf.raw == b"0123456789"


def test_kaio_refuses_what_it_cannot_submit() -> None:
    with pytest.raises(TypeError, match=r"^buffer must be a non-empty ctypes array"):
        completion.KernelAio.pread(0, b"bytes", 0, 1)
    with pytest.raises(ValueError, match=r"^events must be in 1-65535, got 0$"):
        completion.KernelAio.poll(0, 0, 1)
    if KAIO.usable:
        with completion.KernelAio(1) as kaio:
            with pytest.raises(TypeError, match=r"^submit\(\) takes requests made by pread\(\) or poll\(\)"):
                kaio.submit(("nope",))
        with pytest.raises(ValueError, match=r"^this KernelAio is closed$"):
            kaio.getevents(0, 0)


# ---- the recording lesson 18 shows where io_uring is refused ----

PROACTOR = {"submitted": 1, "before": [], "done": [completion.Completion(1, 15)], "bytes": b"hello, proactor"}
BATCHING = {"os.pread": (1024, 1024, 0.8), "io_uring, 32 per enter": (0, 32, 3.2)}


def _ring_reader(sock: socket.socket) -> tuple[bytes, str]:
    """Lesson 18's asynchronous reader: a receive handed to a ring, waited for."""
    buffer = ctypes.create_string_buffer(64)
    with completion.Ring(2) as ring:
        ring.submit(ring.recv(sock.fileno(), buffer, user_data=1))
        done = ring.wait(1)
    return buffer.raw[: done[0].res], "the kernel, before it posted the completion"


def _live_proactor() -> dict:
    a, b = socket.socketpair()
    buffer = ctypes.create_string_buffer(64)
    try:
        with completion.Ring(8) as ring:
            submitted = ring.submit(ring.recv(b.fileno(), buffer, user_data=1))
            before = ring.reap()
            a.send(b"hello, proactor")
            done = ring.wait(1)
    finally:
        a.close()
        b.close()
    return {"submitted": submitted, "before": before, "done": done, "bytes": buffer.raw[: done[0].res]}


def _live_batching() -> dict:
    with tempfile.TemporaryFile() as f:
        f.write(os.urandom(8 * 4096))
        f.flush()
        buffers = [ctypes.create_string_buffer(4096) for _ in range(8)]
        with completion.Ring(8) as ring:
            before, started = completion.read_syscalls(), time.perf_counter()
            ring.submit(*(ring.read(f.fileno(), buffers[j], j * 4096, user_data=j) for j in range(8)), wait=8)
            assert len(ring.reap()) == 8
            return {"io_uring, 8 per enter": (completion.read_syscalls() - before - 1, ring.enter_calls,
                                              (time.perf_counter() - started) / 8 * 1e6)}


@needs_uring
def test_a_recording_of_live_runs_reads_back_as_they_were(tmp_path) -> None:
    watched = iomodels.watch(_ring_reader, name="asynchronous")
    proactor, batching = _live_proactor(), _live_batching()
    assert watched.error is None and proactor["done"] == [completion.Completion(1, 15)], (watched, proactor)
    path = tmp_path / "18.json"
    completion.save_recording(path, "on a test machine", proactor=proactor, batching=batching, asynchronous=watched)
    label = json.loads(path.read_text())["recorded"]
    release = re.escape(os.uname().release)
    assert re.fullmatch(rf"recorded by helpers\.completion on a test machine, \d{{4}}-\d\d-\d\d \d\d:\d\d UTC, "
                        rf"Linux {release}", label), label
    back = completion.load_recording(path)
    assert back.source == f"RECORDED earlier: {label}" and fallback_checks.RECORDED.search(back.source)
    assert not back.live
    assert back.proactor == proactor and back.batching == batching and back.asynchronous == watched
    completion.save_recording(path, "on a test machine", proactor=proactor, batching=batching)
    assert completion.load_recording(path).asynchronous is None  # the reader's row is optional


def test_the_lessons_recording_holds_what_the_lesson_shows() -> None:
    recorded = completion.load_recording("recorded/18-async-io.json")  # found under notebooks/, as from a lesson
    assert not recorded.live and recorded.source.startswith("RECORDED earlier: recorded by helpers.completion ")
    assert recorded.proactor["done"] == [completion.Completion(1, 15)], recorded.proactor
    assert recorded.proactor["bytes"] == b"hello, proactor" and recorded.proactor["before"] == []
    assert list(recorded.batching) == ["os.pread", "io_uring, 1 per enter", "io_uring, 32 per enter"]
    assert recorded.batching["io_uring, 32 per enter"][:2] == (0, 32), recorded.batching
    w = recorded.asynchronous
    assert w is not None and w.data == b"hello" and max(w.waiting, key=w.waiting.get) == "io_uring_enter", w


@pytest.mark.parametrize(("change", "exc", "message"), [
    ({"where": ""}, TypeError, r"^where must say where it was recorded \(machine\) as a non-empty str, got ''$"),
    ({"proactor": None}, TypeError, r"^proactor must be a dict with the keys submitted, before, done, bytes, "
                                    r"got None$"),
    ({"proactor": {**PROACTOR, "bytes": "hello"}}, TypeError, r"^proactor's 'submitted' must be an int and its "
                                                              r"'bytes' bytes"),
    ({"proactor": {**PROACTOR, "done": [(1, 15)]}}, TypeError, r"^proactor\['done'\] must be a list of Completion, "
                                                               r"got \[\(1, 15\)\]$"),
    ({"batching": {"os.pread": (1024, 1024, 0.8)}}, ValueError, r"^batching has no io_uring row, only "
                                                                r"\['os\.pread'\]: record the ring's runs too$"),
    ({"batching": {"io_uring": [0, 32, 3.2]}}, TypeError, r"^batching must map a row's name to \(read syscalls, "
                                                          r"syscalls made, us per block\), got 'io_uring': \[0, 32"),
    ({"asynchronous": "x"}, TypeError, r"^asynchronous must be what iomodels\.watch\(\) returned for a read that "
                                       r"worked, got 'x'$"),
])
def test_save_refuses_what_is_no_run_and_writes_nothing(tmp_path, change: dict, exc: type, message: str) -> None:
    path = tmp_path / "18.json"
    args = {"where": "here", "proactor": PROACTOR, "batching": BATCHING, "asynchronous": None, **change}
    with pytest.raises(exc, match=message):
        completion.save_recording(path, args.pop("where"), **args)
    assert not path.exists()


def test_save_refuses_where_io_uring_is_refused(tmp_path) -> None:
    """A run shown where io_uring is refused is itself a recording: it is never recorded again."""
    path = tmp_path / "18.json"
    with features.pretend_missing("io_uring"):
        with pytest.raises(ValueError, match=r"^io_uring is not usable here, so these results are no live run: "
                                             r"io_uring is switched off by helpers\.core\.features\.pretend_"):
            completion.save_recording(path, "here", proactor=PROACTOR, batching=BATCHING)
    assert not path.exists()


@pytest.mark.parametrize(("text", "why"), [
    ("not json", "JSONDecodeError"),
    ('{"recorded": "x"}', "KeyError: 'proactor'"),
    ('{"recorded": "x", "proactor": {"submitted": 1, "before": [], "done": [[1]], "bytes_hex": ""}, "batching": {}}',
     "TypeError"),
    ('{"recorded": "x", "proactor": {"submitted": "1", "before": [], "done": [], "bytes_hex": ""}, "batching": {}}',
     "TypeError: proactor's 'submitted' must be an int"),
    ('{"recorded": "x", "proactor": {"submitted": 1, "before": [], "done": [], "bytes_hex": "zz"}, "batching": {}}',
     "ValueError: non-hexadecimal"),
    ('{"recorded": "x", "proactor": {"submitted": 1, "before": [], "done": [], "bytes_hex": ""}, '
     '"batching": {"os.pread": [1, 1, 1.0]}}', "ValueError: batching has no io_uring row"),
    ('{"recorded": "x", "proactor": {"submitted": 1, "before": [], "done": [], "bytes_hex": ""}, '
     '"batching": {"io_uring": [0, 1, 1.0]}, "asynchronous": {"name": "a"}}', "KeyError: 'waiting'"),
])
def test_a_malformed_recording_is_one_value_error_naming_the_file(tmp_path, text: str, why: str) -> None:
    path = tmp_path / "18.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not a recording made by "
                                         rf"completion\.save_recording\(\): {re.escape(why)}"):
        completion.load_recording(path)
