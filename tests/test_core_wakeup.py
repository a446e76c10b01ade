"""helpers.core.wakeup: another thread ends a blocking select() at once; the descriptors are made
all or nothing (a child process with too few descriptors free must get EMFILE and keep none)."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers.core.wakeup import WakeableSelector

ROOT = Path(__file__).resolve().parent.parent


def test_wake_from_another_thread_ends_a_select_without_timeout() -> None:
    wakeup = WakeableSelector()
    try:
        timer = threading.Timer(0.2, wakeup.wake)
        start = time.monotonic()
        timer.start()
        events = wakeup.selector.select()  # no timeout: only the wake-up can end it
        waited = time.monotonic() - start
        timer.join()
        assert wakeup.woken(events), events
        assert 0.15 <= waited < 5, waited
    finally:
        wakeup.close()


def test_other_sockets_ready_are_not_a_wake_up() -> None:
    wakeup = WakeableSelector()
    a, b = socket.socketpair()
    try:
        wakeup.selector.register(a, selectors.EVENT_READ, "mine")
        b.send(b"data")
        events = wakeup.selector.select(timeout=5)
        assert [key.data for key, _ in events] == ["mine"]
        assert not wakeup.woken(events)
        wakeup.wake()
        events = wakeup.selector.select(timeout=5)
        assert wakeup.woken(events) and len(events) == 2, events
    finally:
        wakeup.close()
        a.close()
        b.close()


def test_close_twice_and_wake_after_close_are_harmless() -> None:
    before = len(os.listdir("/proc/self/fd"))
    wakeup = WakeableSelector()
    assert len(os.listdir("/proc/self/fd")) == before + 3  # two sockets and the epoll descriptor
    wakeup.close()
    wakeup.close()
    wakeup.wake()
    assert len(os.listdir("/proc/self/fd")) == before
    assert wakeup.reader.fileno() == -1


# Run in a child: lowering RLIMIT_NOFILE in the test process would starve pytest's own threads.
STARVED = """
import errno, os, resource, sys
from helpers.core.wakeup import WakeableSelector
free = int(sys.argv[1])
highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
while (fd := os.open(os.devnull, os.O_RDONLY)) <= highest:
    pass  # fill every gap below the highest descriptor: then exactly `free` fit under the limit
os.close(fd)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
limit = highest + 1 + free
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def open_fds():  # fstat() needs no descriptor of its own, unlike listing /proc/self/fd
    fds = []
    for fd in range(limit):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    return fds


before = open_fds()
try:
    made = WakeableSelector()
except OSError as exc:  # counted while the traceback (and the frame that made them) is alive
    result = "EMFILE" if exc.errno == errno.EMFILE else repr(exc)
    after = open_fds()
else:
    result = "made"
    made.close()
    after = open_fds()
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
print(result, after == before)
"""


def starved(free: int) -> str:
    run = subprocess.run([sys.executable, "-c", STARVED, str(free)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_too_few_descriptors_free_gives_emfile_and_keeps_none() -> None:
    assert starved(1) == "EMFILE True"  # the socketpair needs two
    assert starved(2) == "EMFILE True"  # the pair is made, the epoll descriptor is not: both closed again
    assert starved(3) == "made True"  # exactly enough: the limit above is the one meant
