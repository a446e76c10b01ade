"""helpers.core.features: the probes lessons decide on, and the switch that turns them off.

Each switchable probe is asked through its owner (the function the lessons call), with the
switch set in this process (pretend_missing) and in a child's environment
(COURSE_PRETEND_MISSING, as a notebook's kernel sees it). The machine facts (CPUs, quota,
memory, descriptors) are checked against a child whose limits we set ourselves.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import addresses, capture, completion, doctor, filters, netns, timewait, tools
from helpers.core import features

ROOT = Path(__file__).resolve().parent.parent


def test_an_unknown_probe_is_named_with_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"^no probe is called 'nets'; the probes are: capture, icmp, "):
        features.switched_off("nets")
    with pytest.raises(ValueError, match=r"^pretend_missing\(\) names \['nets'\], which no probe answers"):
        with features.pretend_missing("nets"):
            pass
    monkeypatch.setenv(features.PRETEND_ENV, "netns, sss")
    with pytest.raises(ValueError, match=r"^COURSE_PRETEND_MISSING='netns, sss' names \['sss'\], which no probe"):
        features.switched_off("netns")


def test_pretend_missing_switches_off_for_the_block_only() -> None:
    assert features.switched_off("ss") == ""
    with features.pretend_missing("ss", "lsof"):
        assert "pretend_missing()" in features.switched_off("ss")
        assert features.find_program("ss") is None and tools.find_tool("lsof") is None
        with features.pretend_missing("ss"):
            assert features.switched_off("ss")
        assert features.switched_off("ss")  # the outer block still holds it
    assert features.switched_off("ss") == "" and features.switched_off("lsof") == ""


def test_the_environment_switches_probes_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(features.PRETEND_ENV, "netns,capture")
    status = netns.support()
    assert not status.available
    assert status.reason == ("user + network namespaces are switched off by COURSE_PRETEND_MISSING=netns,capture "
                             "(a test pretends this machine lacks it)")
    mode, why = capture.availability()
    assert mode is None and why.startswith("packet capture is switched off by COURSE_PRETEND_MISSING")
    monkeypatch.delenv(features.PRETEND_ENV)
    assert netns.support() is netns.support()  # the real answer is still tried once per process


# What each switch does to the function a lesson calls: (available?, what it says).
OWNERS = {
    "netns": lambda: (netns.support().available, netns.support().reason),
    "capture": lambda: (capture.availability()[0] is not None, capture.availability()[1]),
    "socket_filter": filters.support,
    "icmp": lambda: _icmp(),
    "io_uring": lambda: (completion.io_uring_status().usable, completion.io_uring_status().explain()),
    "ipv6": lambda: (addresses.ipv6_loopback_problem() is None, addresses.ipv6_loopback_problem() or ""),
    "ip_local_port_range": lambda: (timewait.has_port_range_option(), timewait.port_window_way()[1]),
    "tcp_user_timeout": lambda: (features.user_timeout_option().available, features.user_timeout_option().detail),
    **{name: (lambda name=name: (tools.find_tool(name) is not None, "")) for name in features.PROGRAMS},
}


def _icmp() -> tuple[bool, str]:
    try:
        sock, _kind = tools.open_icmp_socket()
    except tools.PingUnavailable as exc:
        return False, str(exc)
    sock.close()
    return True, ""


def test_every_switch_has_an_owner_here() -> None:
    assert set(OWNERS) == set(features.SWITCHES)


@pytest.mark.parametrize("name", sorted(features.SWITCHES))
def test_each_switch_turns_its_probe_off_where_the_lessons_ask(name: str) -> None:
    with features.pretend_missing(name):
        available, said = OWNERS[name]()
        row = next(r for r in doctor.findings() if r.key == name)
    assert not available, f"{name}: still available with the switch on"
    if name not in features.PROGRAMS:
        assert "switched off by helpers.core.features.pretend_missing()" in said, said
    assert row.ok is False and "switched off" in row.found, row  # the doctor agrees


def test_a_kernels_child_sees_the_switch_through_its_environment() -> None:
    """A notebook's kernel is a child process: COURSE_PRETEND_MISSING reaches it, and the
    doctor there reports the probes off."""
    env = {**os.environ, features.PRETEND_ENV: "netns,capture,icmp,ss,io_uring"}
    code = ("import json; from helpers import doctor\n"
            "print(json.dumps({r.key: [r.ok, r.found] for r in doctor.findings()}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    for name in ("netns", "capture", "icmp", "ss", "io_uring"):
        assert rows[name][0] is False and "COURSE_PRETEND_MISSING=netns,capture,icmp,ss,io_uring" in rows[name][1]
    assert rows["lsof"][0] == (features.find_program("lsof") is not None)  # not switched: the real answer


def test_port_range_option_follows_the_kernel() -> None:
    probe = features.port_range_option()
    assert probe.available == (features.kernel_version() >= features.PORT_RANGE_KERNEL), probe
    assert "IP_LOCAL_PORT_RANGE" in probe.detail
    with features.pretend_missing("ip_local_port_range"):
        way, why = timewait.port_window_way()
    assert way in ("namespace", None) and why.startswith("IP_LOCAL_PORT_RANGE is switched off"), why


def test_find_program_finds_what_is_installed_and_refuses_odd_names() -> None:
    assert features.find_program("sh") is not None
    assert features.find_program("no-such-program-here") is None
    with pytest.raises(ValueError, match=r"^a program name such as 'ss' or 'lsof', got 'ss; rm'$"):
        features.find_program("ss; rm")


def _in_child(code: str, preexec=None) -> dict:
    done = subprocess.run([sys.executable, "-c", "import json\nfrom helpers.core import features\n" + code],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, preexec_fn=preexec)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_nofile_limits_are_the_process_limits() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    got = _in_child("print(json.dumps(features.nofile_limits()))",
                    preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard)))
    assert got == [512, -1 if hard == resource.RLIM_INFINITY else hard]


def test_cpu_count_is_the_affinity_mask() -> None:
    first = sorted(os.sched_getaffinity(0))[0]
    got = _in_child("print(json.dumps(features.cpu_count()))", preexec=lambda: os.sched_setaffinity(0, {first}))
    assert got == 1


def test_cpu_quota_and_memory_limit_read_this_process_cgroups() -> None:
    """What the probes read is what /proc/self/cgroup points at (the locked-down test sets a
    quota of its own and checks the probe reports it: tests/test_locked_down.py)."""
    quota = features.cpu_quota()
    assert (quota.cpus is None) == quota.source.startswith("no CPU quota"), quota
    if quota.cpus is not None:
        assert 0 < quota.cpus and ("cpu.max" in quota.source or "cpu.cfs_quota_us" in quota.source)
    limit, source = features.memory_limit()
    assert (limit is None) == source.startswith("no memory limit"), (limit, source)


def test_user_timeout_option_is_set_and_read_back() -> None:
    probe = features.user_timeout_option()
    assert probe.available and probe.detail == "set to 5000 ms, read back 5000 ms", probe
    with socket.socket() as s:  # the option the lessons set, on a socket of our own
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1234)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1234
