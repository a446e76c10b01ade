"""helpers.cwait: select(2) and poll(2) through libc, on real sockets, with their C structures."""

from __future__ import annotations

import select
import socket
import time

import pytest

from helpers import cwait
from helpers.cwait import FD_SETSIZE, FdSet


@pytest.fixture
def pairs():
    made = [socket.socketpair() for _ in range(3)]
    yield made
    for a, b in made:
        a.close()
        b.close()


def test_fd_set_bits_are_the_descriptors_added(pairs) -> None:
    fds = [a.fileno() for a, _ in pairs]
    s = FdSet.of([pairs[0][0], *fds[1:]])  # sockets or numbers
    assert s.members() == sorted(fds)
    assert all(fd in s for fd in fds) and (max(fds) + 1) not in s
    copy = s.copy()
    copy.add(1000)
    assert 1000 in copy and 1000 not in s, "a copy is separate memory"
    assert repr(s) == f"FdSet({sorted(fds)})"


def test_select_overwrites_the_set_with_the_ready_descriptors(pairs) -> None:
    fds = [a.fileno() for a, _ in pairs]
    full = FdSet.of(fds)
    pairs[1][1].send(b"x")
    readmask = full.copy()
    assert cwait.select(max(fds) + 1, readmask, timeout_s=1.0) == 1
    assert readmask.members() == [fds[1]] and full.members() == fds
    pairs[1][0].recv(1)
    pairs[0][1].send(b"y")
    started = time.monotonic()
    assert cwait.select(max(fds) + 1, readmask, timeout_s=0.2) == 0, "the leftover set no longer holds fds[0]"
    assert time.monotonic() - started >= 0.15 and readmask.members() == []
    readmask = full.copy()
    assert cwait.select(max(fds) + 1, readmask, timeout_s=1.0) == 1 and readmask.members() == [fds[0]]


def test_select_writable_set(pairs) -> None:
    fds = [a.fileno() for a, _ in pairs]
    write = FdSet.of(fds)
    assert cwait.select(max(fds) + 1, None, write, timeout_s=0) == 3 and write.members() == fds


def test_poll_writes_revents_only_and_skips_a_negative_fd(pairs) -> None:
    pairs[0][1].send(b"x")
    fds = cwait.pollfds([(pairs[0][0], select.POLLIN), (-1, select.POLLIN),
                         (pairs[1][0], select.POLLIN | select.POLLOUT), (pairs[2][0].fileno(), select.POLLIN)])
    assert cwait.poll(fds, timeout_s=0.5) == 2
    assert [(p.fd, p.events, p.revents) for p in fds] == [
        (pairs[0][0].fileno(), select.POLLIN, select.POLLIN),
        (-1, select.POLLIN, 0),
        (pairs[1][0].fileno(), select.POLLIN | select.POLLOUT, select.POLLOUT),
        (pairs[2][0].fileno(), select.POLLIN, 0),
    ]


def test_a_closed_descriptor_is_the_kernels_ebadf() -> None:
    s = socket.socket()
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError, match=r"^\[Errno 9\] select\(\): Bad file descriptor \(EBADF\)$"):
        cwait.select(fd + 1, FdSet.of([fd]), timeout_s=0)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: FdSet().add(FD_SETSIZE), ValueError, r"^fd 1024 has no bit in an fd_set: it holds FD_SETSIZE = 1024 "
                                                  r"bits, for descriptors 0 to 1023; watch it with poll\(\) instead$"),
    (lambda: FdSet().add(-1), ValueError,
     r"^descriptor numbers are >= 0, got -1 \(a closed socket's fileno\(\) is -1\)$"),
    (lambda: FdSet().add("3"), TypeError,
     r"^a descriptor is an int or an object with fileno\(\) \(a socket\), got '3'$"),
    (lambda: cwait.select(3, FdSet(), timeout_s=61), ValueError,
     r"^timeout_s must be between 0 and 60 s \(0: just look\), got 61$"),
    (lambda: cwait.select(3, FdSet(), timeout_s=None), TypeError, r"^timeout_s must be a number of seconds, got None$"),
    (lambda: cwait.select(2000, FdSet(), timeout_s=0), ValueError, r"^nfds is the highest descriptor in the sets \+ 1"),
    (lambda: cwait.select(3, [1], timeout_s=0), TypeError, r"^read must be an FdSet \(or None\), got list \[1\]$"),
    (lambda: cwait.pollfds([(3, -1)]), ValueError, r"^events must be an int mask of POLL\* bits"),
    (lambda: cwait.pollfds([3]), TypeError, r"^each entry is a \(fd, events\) pair"),
    (lambda: cwait.poll([1], timeout_s=0), TypeError,
     r"^fds must be an array made by pollfds\(\[\.\.\.\]\), got list$"),
])
def test_bad_arguments_are_named(call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()
