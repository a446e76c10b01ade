"""helpers.placement: pinning a thread to a CPU, and finding the CPU idle the most."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from helpers import placement
from helpers.core import proc


def test_usable_cpus_is_the_affinity_mask() -> None:
    assert placement.usable_cpus() == sorted(os.sched_getaffinity(0))


def test_pinned_moves_this_thread_only_and_restores_its_mask() -> None:
    before = os.sched_getaffinity(0)
    cpu = placement.usable_cpus()[-1]
    seen = {}

    def other() -> None:
        seen["mask"] = os.sched_getaffinity(0)

    with placement.pinned(cpu) as got:
        assert got == cpu and os.sched_getaffinity(0) == {cpu}
        assert placement.thread_cpu() == cpu  # the kernel moved us before sched_setaffinity returned
        assert placement.usable_cpus() == sorted(before)  # still the whole set, not the pinned CPU
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert os.sched_getaffinity(0) == before and seen["mask"] == before


def test_pinned_restores_the_mask_after_an_error() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError), placement.pinned(placement.usable_cpus()[0]):
        raise RuntimeError("inside")
    assert os.sched_getaffinity(0) == before


def test_a_thread_started_while_pinned_can_pin_elsewhere() -> None:
    cpus = placement.usable_cpus()
    if len(cpus) < 2:
        pytest.skip(f"this process may use one CPU only ({cpus})")
    ran_on = []

    def worker() -> None:  # inherits the pinned mask {cpus[0]}; usable_cpus() must not shrink to it
        with placement.pinned(cpus[1]):
            ran_on.append(placement.thread_cpu())

    with placement.pinned(cpus[0]):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert ran_on == [cpus[1]]


@pytest.mark.parametrize("cpu", [-1, 10**6, True, "0", None, 0.0])
def test_pinned_refuses_a_cpu_we_may_not_use(cpu: object) -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match=r"cpu must be one of the CPUs this process may use, \[.*\], got"):
        with placement.pinned(cpu):  # type: ignore[arg-type]
            pass
    assert os.sched_getaffinity(0) == before


@pytest.mark.parametrize("sample_s", [0, 0.001, 5, float("nan")])
def test_idlest_cpus_refuses_a_sample_time_out_of_range(sample_s: float) -> None:
    with pytest.raises(ValueError, match=r"sample_s must be a number of seconds in .*, got"):
        placement.idlest_cpus(sample_s)


@pytest.mark.parametrize("sample_s", [True, "0.05", None])
def test_idlest_cpus_refuses_a_sample_time_that_is_not_a_number(sample_s: object) -> None:
    with pytest.raises(TypeError, match=r"sample_s must be a number of seconds in .*, got"):
        placement.idlest_cpus(sample_s)  # type: ignore[arg-type]


def test_idlest_cpus_puts_a_busy_cpu_last() -> None:
    cpus = placement.usable_cpus()
    if len(cpus) < 2:
        pytest.skip(f"this process may use one CPU only ({cpus})")
    busy = cpus[-1]  # the highest number: a tie would put it last anyway, so only idle counts can move it
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {busy})
        deadline = time.monotonic() + 5  # until the kernel shows it running there and burning CPU
        while time.monotonic() < deadline:
            fields = proc.proc_stat(f"/proc/{hog.pid}/stat")
            if int(fields[36]) == busy and int(fields[11]) > 0:  # processor, utime (man 5 proc)
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"the busy loop did not start running on CPU {busy}")
        order = placement.idlest_cpus(0.1)
    finally:
        hog.kill()
        hog.wait()
    assert sorted(order) == cpus and order[0] != busy, (order, busy)


def test_by_idle_time_orders_by_growth_not_by_total() -> None:
    before = {0: 1000, 1: 10, 2: 500, 3: 7}
    after = {0: 1000, 1: 15, 2: 520, 3: 12}  # CPU 0 idled the most ever, but not at all just now
    assert placement.by_idle_time([0, 1, 2, 3], before, after) == [2, 1, 3, 0]
    assert placement.by_idle_time([3, 0], before, after) == [3, 0]  # only the CPUs asked about
    assert placement.by_idle_time([0, 1], {}, {}) == [0, 1]  # no counts: the kernel's order


def test_thread_cpu_is_a_usable_cpu() -> None:
    assert placement.thread_cpu() in placement.usable_cpus()
