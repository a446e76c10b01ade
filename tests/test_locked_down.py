"""The course in a locked-down container: every notebook run as a normal user with new
namespaces refused, one CPU of quota and 2 GiB where cgroups allow, ss, lsof and tcpdump
missing, and 1024 descriptors.

When the suite runs as root (as CI does), ``test_every_lesson_runs_locked_down`` copies the
checkout, makes a cgroup, and runs ``./course test tests/locked_down_run.py`` through the
launcher (tests/lockdown.py) as a normal user. That run checks the container is what it
should be, that ``./course doctor`` and the start-here notebook say so, and runs every
lesson once (exercise checks included; tests/locked_down_run.py). The lessons' closing cells
assert their timing claims there too, on one CPU's worth of time. Times and peak memory per
lesson go to tests/artifacts/locked-down-times.json.

The other tests here check the launcher's pieces on this machine, as any user: the seccomp
filter refuses namespaces and nothing else a lesson needs, the descriptor limit holds, and
(as root) the cgroup's quota is what the doctor reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lockdown
import pytest
from normal_user import USER, user_copy

from helpers.core import features

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = ["ss", "lsof", "tcpdump"]  # what images without iproute2, lsof and tcpdump lack
NOFILE = 1024  # a normal user's default soft limit
CPUS = 1.0
MEMORY = 2 << 30
TIMES = ROOT / "tests" / "artifacts" / "locked-down-times.json"


def _launch(*command: str, **options: str) -> subprocess.CompletedProcess[str]:
    """Run `command` through the launcher with `options` (--nofile and so on), here."""
    args = [f"--{k}={v}" for k, v in options.items()]
    return subprocess.run([sys.executable, str(ROOT / "tests" / "lockdown.py"), *args, "--", *command],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


PROBE = """
import ctypes, json, os, resource, subprocess, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, flags in (("user+net", 0x50000000), ("mount", 0x20000), ("files", 0x400)):
    ret = libc.unshare(flags)
    out[name] = os.strerror(ctypes.get_errno()) if ret else "ok"
t = threading.Thread(target=lambda: out.setdefault("thread", "ran")); t.start(); t.join()
out["child"] = subprocess.run([sys.executable, "-c", "print('ran')"], capture_output=True, text=True).stdout.strip()
pid = os.fork()
if pid == 0:
    os._exit(3)
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
from helpers import netns
out["netns"] = netns.support().reason
print(json.dumps(out))
"""


def test_the_launcher_refuses_namespaces_and_nothing_else() -> None:
    """unshare() with namespace flags fails with EPERM (as a container's seccomp profile
    does) and the probe says so; threads, fork, subprocesses and unshare() without
    namespace flags still work; the soft descriptor limit is the one asked for."""
    done = _launch(sys.executable, "-c", PROBE, nofile="512")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"user+net": "Operation not permitted", "mount": "Operation not permitted", "files": "ok",
                    "thread": "ran", "child": "ran", "fork": 3, "nofile": 512, "netns": seen["netns"]}, seen
    assert seen["netns"].startswith("unshare(CLONE_NEWUSER) was refused (EPERM)"), seen["netns"]


def test_the_filter_is_laid_out_for_each_machine() -> None:
    """Every jump of the program lands on an instruction inside it (the kernel would refuse
    the filter otherwise), for each architecture the launcher knows."""
    for machine in lockdown.ARCHES:
        program = lockdown.seccomp_program(machine)
        count = len(program) // 8
        for i in range(count):
            code, jt, jf, _k = struct.unpack_from("=HBBI", program, i * 8)
            if code in (lockdown.BPF_JEQ_K, lockdown.BPF_JSET_K):
                assert i + 1 + max(jt, jf) < count, (machine, i)
    with pytest.raises(ValueError, match=r"^no syscall numbers for 'pdp11'; known: \['aarch64', 'x86_64'\]$"):
        lockdown.seccomp_program("pdp11")


@contextlib.contextmanager
def limited_cgroup(cpus: float, memory_bytes: int) -> Iterator[tuple[list[Path], dict]]:
    """A cgroup (root only) with a CPU quota of `cpus` and a memory limit: yields its
    cgroup.procs files and what was set ({"cpus": ..., "memory": ..., "notes": [...]}).
    cgroup v2 (cpu.max, memory.max) where our hierarchy has the controllers, else v1
    (cpu.cfs_quota_us, memory.limit_in_bytes); a limit that cannot be set is a note, not an
    error. Afterwards it kills what is left inside (listed in "left") and removes the folders."""
    name = f"course-locked-down-{os.getpid()}"
    made: list[Path] = []
    what: dict = {"cpus": None, "memory": None, "notes": [], "left": []}
    v2 = features.cgroup_dirs("")
    try:
        if v2 and "cpu" in (v2[0] / "cgroup.controllers").read_text().split():
            parent = v2[0].parent if (v2[0] / "cpu.max").exists() else v2[0]  # no processes in an inner node
            child = parent / name
            child.mkdir()
            made.append(child)
            (child / "cpu.max").write_text(f"{int(100_000 * cpus)} 100000")
            what["cpus"] = cpus
            if (child / "memory.max").exists():
                (child / "memory.max").write_text(str(memory_bytes))
                what["memory"] = memory_bytes
        else:
            what["notes"].append("cgroup v2 has no cpu controller for us here; using v1")
            for controller in ("cpu", "memory"):
                dirs = features.cgroup_dirs(controller)
                if not dirs:
                    what["notes"].append(f"no cgroup v1 {controller} controller: no {controller} limit")
                    continue
                child = dirs[0] / name
                child.mkdir()
                made.append(child)
                if controller == "cpu":
                    (child / "cpu.cfs_period_us").write_text("100000")
                    (child / "cpu.cfs_quota_us").write_text(str(int(100_000 * cpus)))
                    what["cpus"] = cpus
                else:
                    (child / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    what["memory"] = memory_bytes
    except OSError as exc:
        what["notes"].append(f"a cgroup limit could not be set ({exc}); the run goes on without it")
    try:
        yield [d / "cgroup.procs" for d in made], what
    finally:
        for d in reversed(made):
            for peak in ("memory.peak", "memory.max_usage_in_bytes"):  # v2, v1: the whole run's peak
                if (d / peak).exists():
                    what["peak_memory_mb"] = round(int((d / peak).read_text()) / 2**20)
            left = [int(p) for p in (d / "cgroup.procs").read_text().split()]
            what["left"] += left
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while (d / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                d.rmdir()


@pytest.mark.slow
@pytest.mark.locked_down
@pytest.mark.timeout(2700)
def test_every_lesson_runs_locked_down() -> None:
    if os.geteuid() != 0:
        pytest.skip("the locked-down run makes a cgroup, hides programs and becomes a normal user: it needs root")
    with user_copy() as (repo, env), \
            limited_cgroup(CPUS, MEMORY) as (procs, limits):
        expect = {"cpus": limits["cpus"], "memory": limits["memory"], "hidden": HIDDEN, "nofile": NOFILE}
        env["COURSE_LOCKED_DOWN"] = json.dumps(expect)
        command = [sys.executable, str(ROOT / "tests" / "lockdown.py"), "--user", USER, "--hide", ",".join(HIDDEN),
                   "--nofile", str(NOFILE), *(f"--cgroup={p}" for p in procs), "--",
                   "./course", "test", "tests/locked_down_run.py", "-p", "no:cacheprovider", "-rs"]
        started = time.monotonic()
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=2600)
        seconds = time.monotonic() - started
        times = repo / "tests" / "artifacts" / "locked-down-times.json"
        lessons = json.loads(times.read_text()) if times.exists() else {}
    tail = "\n".join(result.stdout.splitlines()[-40:] + ["--- stderr:"] + result.stderr.splitlines()[-15:])
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    TIMES.write_text(json.dumps({"seconds": round(seconds), "limits": limits, "lessons": lessons}, indent=1,
                                sort_keys=True))
    print(f"locked down ({limits}): {seconds:.0f} s\n{tail}")
    assert result.returncode == 0, f"as user {USER}, locked down, ./course test failed:\n{tail}"
    assert not limits["left"], f"processes were still running in the cgroup after the run: {limits['left']}"
    if "peak_memory_mb" in limits:  # every process of the run at once: an upper bound for each lesson
        assert limits["peak_memory_mb"] < 1024, f"the locked-down run peaked at {limits['peak_memory_mb']} MB"
