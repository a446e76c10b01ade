"""helpers.unix_vs_tcp: lesson 05's race of Unix-domain against TCP loopback, on real sockets."""

from __future__ import annotations

import re

import pytest

from helpers import observe
from helpers import unix_vs_tcp as uvt
from helpers.core import hygiene
from helpers.placement import usable_cpus


@pytest.mark.parametrize("family", uvt.FAMILIES)
def test_throughput_moves_bytes_and_reports_both_rates(family: str) -> None:
    before = hygiene.open_sockets()
    wall, cpu = uvt.throughput(family, 64 * 1024, 0.05)
    assert wall > 0 and cpu > 0
    assert not hygiene.leftovers(ignore=before), "the server, its thread and both sockets are gone"


@pytest.mark.parametrize(("args", "error", "message"), [
    (("udp", 1024, 0.1), ValueError, "family must be 'unix' or 'tcp', got 'udp'"),
    (("unix", 0, 0.1), ValueError, "write size must be 1 to 16,777,216 bytes, got 0"),
    (("tcp", True, 0.1), TypeError, "write size must be an int number of bytes, got bool True"),
    (("tcp", 1024, 6), ValueError, "trial length must be 0.01-5 s, got 6"),
    (("unix", 1024, "1"), TypeError, "trial length must be a number of seconds, got str '1'"),
])
def test_throughput_refuses_what_it_cannot_measure(args: tuple, error: type, message: str) -> None:
    before = hygiene.open_sockets()
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        uvt.throughput(*args)
    assert not hygiene.leftovers(ignore=before), "refused before any server started"


@pytest.mark.parametrize("family", uvt.FAMILIES)
def test_small_writes_all_arrive_and_are_counted(family: str) -> None:
    out = uvt.small_writes(family, 2000, 64)
    assert out["bytes"] == 2000 * 64
    assert 1 <= out["recv_calls"] and out["writes_per_recv"] == 2000 / out["recv_calls"]
    if family == "tcp":
        assert out["segments"] is None or 1 <= out["segments"], out
        # None only where the kernel has no such counter; a counter's rise is never negative
        has_counter = "TcpExt.TCPAutoCorking" in observe.kernel_counters()
        assert (out["autocork"] is not None) == has_counter and (out["autocork"] or 0) >= 0, out
    else:
        assert "segments" not in out and "autocork" not in out


def test_small_writes_refuses_a_silly_count() -> None:
    with pytest.raises(ValueError, match=r"^writes must be 1 to 1,000,000, got 0$"):
        uvt.small_writes("unix", 0)
    with pytest.raises(TypeError, match=r"^writes must be an int, got float 10.0$"):
        uvt.small_writes("tcp", 10.0)


def test_round_trips_time_each_family_where_the_threads_were_pinned() -> None:
    cpu = usable_cpus()[0]
    times, ran_on = uvt.round_trips(cpu, cpu, batches=5, per_batch=4, size=16)
    assert {f: len(v) for f, v in times.items()} == {"unix": 20, "tcp": 20}
    assert all(t > 0 for v in times.values() for t in v)
    assert ran_on == {cpu}, "the client and both echo threads ran on the CPU they were pinned to"


def test_round_trips_refuses_too_many() -> None:
    with pytest.raises(ValueError, match=r"^need 1-100,000 round trips of 1-65536 bytes, got 1000x1000 of 64$"):
        uvt.round_trips(0, 0, batches=1000, per_batch=1000)


def test_connect_to_needs_one_of_the_course_servers() -> None:
    with pytest.raises(TypeError, match=r"^connect_to\(\) needs a UnixStreamServer or TCPServer, got str$"):
        uvt.connect_to("/tmp/server.sock")  # type: ignore[arg-type]
