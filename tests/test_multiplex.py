"""helpers.multiplex: wait costs over real socketpairs, the select wall, fd limits restored."""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import threading

import pytest

from helpers import multiplex
from helpers.multiplex import FD_SETSIZE, SelectLimitError, WaitCost, idle_sockets, log_counts, more_fds, wait_cost


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("mechanism", multiplex.MECHANISMS)
def test_wait_cost_measures_each_mechanism_and_closes_everything(mechanism: str) -> None:
    before_fds, before_limit = _fd_count(), resource.getrlimit(resource.RLIMIT_NOFILE)
    cost = wait_cost(mechanism, 50, waits=50)
    assert isinstance(cost, WaitCost)
    assert (cost.mechanism, cost.idle_fds, cost.waits) == (mechanism, 50, 50)
    assert 0 < cost.median_us <= cost.p90_us
    assert cost.highest_fd >= 50
    assert _fd_count() == before_fds
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before_limit


def test_zero_idle_fds_still_watches_the_ready_one() -> None:
    assert wait_cost("epoll", 0, waits=5).waits == 5


def test_budget_stops_early_but_times_at_least_five_waits() -> None:
    cost = wait_cost("poll", 10, waits=100_000, budget_s=0.0)
    assert 5 <= cost.waits < 100_000


def test_select_refuses_fds_numbered_1024_or_more_and_cleans_up() -> None:
    before_fds, before_limit = _fd_count(), resource.getrlimit(resource.RLIMIT_NOFILE)
    with pytest.raises(SelectLimitError, match=r"^select\(\) cannot watch fd \d+: .*FD_SETSIZE = 1024") as info:
        wait_cost("select", FD_SETSIZE + 10, waits=5)
    assert isinstance(info.value, ValueError)
    assert "out of range" in str(info.value.__cause__)
    assert _fd_count() == before_fds
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before_limit


def test_poll_and_epoll_go_past_1024_fds() -> None:
    for mechanism in ("poll", "epoll"):
        assert wait_cost(mechanism, 1500, waits=5).highest_fd >= FD_SETSIZE


def test_epoll_beats_poll_with_many_idle_fds() -> None:
    # measured here: poll ~70 us, epoll ~0.7 us at 1000 idle fds; assert a 5x margin only
    poll, epoll = wait_cost("poll", 1000, waits=200), wait_cost("epoll", 1000, waits=200)
    assert poll.median_us > 5 * epoll.median_us, (poll, epoll)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("kqueue", 1), r"^mechanism must be one of \('select', 'poll', 'epoll'\), got 'kqueue'$"),
        (("epoll", -1), r"^idle_fds must be an int >= 0, got -1$"),
        (("epoll", 1, 0), r"^waits must be an int in 1\.\.100000, got 0$"),
        (("epoll", 1, 10**6), r"^waits must be an int in 1\.\.100000, got 1000000$"),
    ],
)
def test_wait_cost_rejects_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wait_cost(*args)


def test_more_fds_than_the_hard_limit_is_a_clear_error() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard fd limit here")
    with pytest.raises(ValueError, match=r"hard RLIMIT_NOFILE is \d+ .* ask for at most \d+"):
        with more_fds(hard):
            pass
    with pytest.raises(ValueError, match=r"hard RLIMIT_NOFILE"):
        wait_cost("epoll", hard)


def test_more_fds_raises_the_soft_limit_and_restores_it() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = min(soft + 10, multiplex.fd_headroom())
    with more_fds(needed) as inside:
        assert inside >= min(hard, _fd_count() + needed)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_idle_sockets_yields_n_idle_sockets_and_closes_them(n: int) -> None:
    before = _fd_count()
    with idle_sockets(n) as socks:
        assert len(socks) == n
        assert all(isinstance(s, socket.socket) for s in socks)
        for s in socks:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)                 # idle: nothing to read
    assert all(s.fileno() == -1 for s in socks)
    assert _fd_count() == before


def test_log_counts() -> None:
    assert log_counts(1) == [1]
    assert log_counts(4000) == [1, 3, 10, 30, 100, 300, 1000, 4000]
    assert log_counts(10_000) == [1, 3, 10, 30, 100, 300, 1000, 3000, 10_000]
    with pytest.raises(ValueError, match=r"^the largest count must be an int >= 1, got 0$"):
        log_counts(0)


def test_sweep_records_the_select_wall_and_stops_select_there() -> None:
    table = multiplex.sweep([10, 1100, 1200], waits=5)
    assert isinstance(table["select"][10], WaitCost)
    assert isinstance(table["select"][1100], SelectLimitError)
    assert 1200 not in table["select"]
    assert all(isinstance(table[m][n], WaitCost) for m in ("poll", "epoll") for n in (10, 1100, 1200))


def test_event_names() -> None:
    import select

    assert multiplex.event_names(0) == "-"
    assert multiplex.event_names([]) == "-"
    assert multiplex.event_names(select.EPOLLIN | select.EPOLLRDHUP) == "EPOLLIN|EPOLLRDHUP"
    assert multiplex.event_names([(3, select.EPOLLIN), (4, select.EPOLLHUP)]) == "EPOLLIN|EPOLLHUP"
    assert multiplex.event_names(1 << 28) == hex(1 << 28)


def test_one_connection_wakes_every_waiter_without_epollexclusive_and_fewer_with_it() -> None:
    herd = multiplex.wakeups(False, waiters=3)
    assert herd.all_waiting and herd.woke == 3, herd
    one = multiplex.wakeups(True, waiters=3)
    assert one.all_waiting and 1 <= one.woke < 3, one


def test_wakeups_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^waiters must be an int in 2\.\.16, got 1$"):
        multiplex.wakeups(True, waiters=1)
    with pytest.raises(ValueError, match=r"^timeout_s must be in 0\.1\.\.5 s, got 60$"):
        multiplex.wakeups(True, timeout_s=60)


def test_select_capacity_is_exactly_the_last_count_select_accepts() -> None:
    holes = [socket.socket() for _ in range(6)]     # punch holes in the fd table below 1024
    extra = [socket.socket() for _ in range(3)]
    for s in holes[::2]:
        s.close()
    try:
        _check_select_capacity()
    finally:
        for s in holes + extra:
            s.close()
    _check_select_capacity()


def _check_select_capacity() -> None:
    cap = multiplex.select_capacity()
    assert 0 < cap < FD_SETSIZE
    assert wait_cost("select", cap, waits=3).highest_fd < FD_SETSIZE
    with pytest.raises(SelectLimitError):
        wait_cost("select", cap + 1, waits=3)


def test_crowd_below_puts_the_next_socket_above_the_wall_and_restores_everything() -> None:
    before_fds, before_limit = _fd_count(), resource.getrlimit(resource.RLIMIT_NOFILE)
    with multiplex.crowd_below(FD_SETSIZE) as crowd:
        assert crowd.top.fileno() == FD_SETSIZE - 1 and crowd.soft_before == before_limit[0]
        with socket.socket() as above:
            assert above.fileno() >= FD_SETSIZE, "every number below the wall was taken"
            with pytest.raises(ValueError, match="filedescriptor out of range in select"):
                select.select([above], [], [], 0)
    assert _fd_count() == before_fds
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before_limit


def test_a_connection_in_the_crowd_lands_above_the_wall_even_after_another_thread_frees_a_number() -> None:
    before_fds = _fd_count()
    early = socket.socket()                     # held by "another thread" below the wall while the crowd fills
    try:
        with multiplex.crowd_below(FD_SETSIZE) as crowd:
            freed = early.fileno()
            closer = threading.Thread(target=early.close)
            closer.start()
            closer.join()
            assert crowd.refills == 0
            listener, client, conn = crowd.connection()
            with listener, client, conn:
                fds = [listener.fileno(), client.fileno(), conn.fileno()]
                assert min(fds) >= FD_SETSIZE, fds
                assert crowd.refills == 1 and freed in [p.fileno() for p in crowd.placeholders], crowd.refills
                client.sendall(b"x")
                assert conn.recv(1) == b"x"
            again = crowd.connection()           # nothing freed this time: no refill
            for sock in again:
                sock.close()
            assert crowd.refills == 1
            with pytest.raises(ValueError, match=r"^tries must be an int in 1-100, got 0$"):
                crowd.connection(tries=0)
            crowd.placeholders[0].close()        # a gap again, and only one try allowed: the error names the fds
            with pytest.raises(RuntimeError, match=r"^1 connections in a row got an fd below 1024 \(the last: \["):
                crowd.connection(tries=1)
            third = crowd.connection()
            third_fds = [sock.fileno() for sock in third]
            for sock in third:
                sock.close()
            assert crowd.refills == 2 and min(third_fds) >= FD_SETSIZE, (crowd.refills, third_fds)
    finally:
        early.close()
    assert _fd_count() == before_fds


def test_crowd_below_records_the_emfile_of_a_low_soft_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FD_SETSIZE + 100:
        pytest.skip(f"the hard limit ({hard}) leaves no room above descriptor {FD_SETSIZE}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (600, hard))
    try:
        with multiplex.crowd_below(FD_SETSIZE) as crowd:
            assert crowd.emfile is not None and crowd.emfile.errno == errno.EMFILE
            assert crowd.highest_at_emfile == 599 and crowd.top.fileno() == FD_SETSIZE - 1
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (600, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_crowd_below_refuses_a_wall_the_hard_limit_forbids() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wall = (hard if hard != resource.RLIM_INFINITY else 1 << 20) - 10
    with pytest.raises(ValueError, match=r"^the hard RLIMIT_NOFILE is \d+: this process cannot open fd \d+ and more"):
        with multiplex.crowd_below(wall):
            pass
    with pytest.raises(ValueError, match=r"^wall must be an fd number \(an int\) between 8 and 1048576, got 3$"):
        with multiplex.crowd_below(3):
            pass
