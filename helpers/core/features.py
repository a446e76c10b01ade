"""What this machine can do, decided in one place.

Theory of operation. Learners run the course on Binder, laptops, university hubs and
containers, and each allows different things. Rather than letting a lesson fail deep inside
a cell, every capability a lesson decides on is a probe, and the lesson asks the probe:

* here, with the standard library only: the kernel's version and its socket options
  (``port_range_option()``: IP_LOCAL_PORT_RANGE, Linux 6.3; ``user_timeout_option()``:
  TCP_USER_TIMEOUT), the programs a lesson runs beside its own code (``find_program()``:
  ss, lsof, netstat, nstat, tcpdump, tc, ip), the CPUs and the CPU quota of our cgroup (v2
  ``cpu.max`` or v1 ``cpu.cfs_quota_us``), the memory limit, RLIMIT_NOFILE and root;
* in the module that owns the experiment, because the probe *is* a trial of it:
  ``helpers.netns.support()`` (user + network namespaces), ``helpers.capture.availability()``
  (packet capture), ``helpers.filters.support()`` (a socket filter on TCP),
  ``helpers.tools.open_icmp_socket()`` (ICMP sockets, net.ipv4.ping_group_range),
  ``helpers.completion.io_uring_status()`` and ``helpers.addresses.ipv6_loopback_problem()``.

``helpers.doctor`` puts all of them in one table (the start-here notebook, ``./course
doctor``), so the table and the lessons cannot disagree: they ask the same functions.

Every probe that decides between a live experiment and a recording can be switched off, so
tests can run each fallback on a machine that has everything: set
``COURSE_PRETEND_MISSING=netns,capture,icmp,ss,io_uring`` (names in ``SWITCHES``) before a
notebook's kernel starts, or use ``with pretend_missing("netns"):`` in one process. A
switched-off probe answers "missing", with a reason that says it was switched off.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BINDER_URL",
    "IS_LINUX",
    "HAS_TCP_INFO",
    "LinuxRequiredError",
    "kernel_version",
    "require_linux",
    "SWITCHES",
    "PRETEND_ENV",
    "switched_off",
    "pretend_missing",
    "Probe",
    "port_range_option",
    "user_timeout_option",
    "PROGRAMS",
    "find_program",
    "why_missing",
    "CpuQuota",
    "cgroup_dirs",
    "cpu_count",
    "cpu_quota",
    "memory_limit",
    "nofile_limits",
    "is_root",
]

#: Where a learner without Linux can run the course.
BINDER_URL = "https://mybinder.org/v2/gh/netprog-in-practice/course/HEAD?urlpath=lab/tree/notebooks"

IS_LINUX = sys.platform.startswith("linux")
HAS_TCP_INFO = IS_LINUX and hasattr(socket, "TCP_INFO")


class LinuxRequiredError(RuntimeError):
    """A lesson needs a Linux-only facility (TCP_INFO, /proc/net, ...) that this system lacks."""


def require_linux(what: str) -> None:
    """Raise LinuxRequiredError naming `what` unless we run on Linux.

    `what` says what the lesson needs Linux for, e.g. "TCP_INFO (lesson 02)"; it must be a
    non-empty str (TypeError otherwise, on every system, so a bad call shows up on Linux too).
    """
    if not isinstance(what, str) or not what.strip():
        raise TypeError(f"require_linux() needs a non-empty str saying what needs Linux, got {what!r}")
    if not IS_LINUX:
        raise LinuxRequiredError(
            f"{what} needs Linux, and this is {platform.system() or sys.platform}. "
            f"Run the course on a Linux machine, or open it on Binder: {BINDER_URL}"
        )


def kernel_version() -> tuple[int, int]:
    """The running kernel's (major, minor) version, e.g. (6, 8); (0, 0) off Linux."""
    if not IS_LINUX:
        return (0, 0)
    release = os.uname().release  # e.g. "6.8.0-45-generic"
    parts = release.split(".")
    try:
        return (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0))
    except (IndexError, ValueError):
        return (0, 0)


# --------------------------------------------------------------------------- switching probes off

#: The programs lessons run beside their own code, each a probe of its own.
PROGRAMS = ("ss", "lsof", "netstat", "nstat", "tcpdump", "tc", "ip")

#: Every probe a test may switch off, and where it is answered.
SWITCHES: dict[str, str] = {
    "netns": "helpers.netns.support(): user + network namespaces",
    "capture": "helpers.capture.availability(): packet capture",
    "socket_filter": "helpers.filters.support(): a socket filter on a TCP socket",
    "icmp": "helpers.tools.open_icmp_socket(): ICMP sockets for ping",
    "io_uring": "helpers.completion.io_uring_status(): io_uring",
    "ipv6": "helpers.addresses.ipv6_loopback_problem(): IPv6 on loopback",
    "ip_local_port_range": "port_range_option(): the IP_LOCAL_PORT_RANGE socket option (Linux 6.3)",
    "tcp_user_timeout": "user_timeout_option(): the TCP_USER_TIMEOUT socket option",
    **{name: f"find_program({name!r}): the {name} program" for name in PROGRAMS},
}

PRETEND_ENV = "COURSE_PRETEND_MISSING"
_pretended: list[str] = []  # names switched off by pretend_missing() in this process


def _known(names: list[str], where: str) -> list[str]:
    odd = [n for n in names if not isinstance(n, str)]
    if odd:
        raise TypeError(f"{where} takes probe names (str) such as 'netns', got {odd!r}")
    unknown = [n for n in names if n not in SWITCHES]
    if unknown:
        raise ValueError(f"{where} names {unknown}, which no probe answers; the probes are: "
                         f"{', '.join(sorted(SWITCHES))}")
    return names


def switched_off(name: str) -> str:
    """"" if probe `name` answers for real; else the reason it was switched off (a sentence).

    A probe calls this first. ValueError for a `name` not in SWITCHES, and for a
    COURSE_PRETEND_MISSING that names one.
    """
    if not isinstance(name, str):
        raise TypeError(f"a probe's name is a str such as 'netns', got {type(name).__name__} {name!r}")
    if name not in SWITCHES:
        raise ValueError(f"no probe is called {name!r}; the probes are: {', '.join(sorted(SWITCHES))}")
    from_env = [n.strip() for n in os.environ.get(PRETEND_ENV, "").split(",") if n.strip()]
    _known(from_env, f"{PRETEND_ENV}={os.environ.get(PRETEND_ENV)!r}")
    if name in from_env:
        return f"switched off by {PRETEND_ENV}={os.environ[PRETEND_ENV]} (a test pretends this machine lacks it)"
    if name in _pretended:
        return "switched off by helpers.core.features.pretend_missing() (a test pretends this machine lacks it)"
    return ""


def pretend_missing(*names: str) -> contextlib.AbstractContextManager[None]:
    """Within the ``with`` block, the probes `names` answer "missing" in this process (tests).

    Child processes and notebook kernels do not see it: set COURSE_PRETEND_MISSING for
    those. Probes that cache their trial (namespaces, the socket filter) still answer at
    once, since the switch is asked before the cache. TypeError for a name that is not a
    str, ValueError for an unknown one (at the call, before the block).
    """
    return _pretending(_known(list(names), "pretend_missing()"))


@contextlib.contextmanager
def _pretending(names: list[str]) -> Iterator[None]:
    _pretended.extend(names)
    try:
        yield
    finally:
        for name in names:
            _pretended.remove(name)


# --------------------------------------------------------------------------- kernel features


@dataclass(frozen=True)
class Probe:
    """A probe's answer: ``available``, and ``detail``: what was found, or why it is missing."""

    available: bool
    detail: str

    def __bool__(self) -> bool:
        return self.available


#: IP_LOCAL_PORT_RANGE, from <linux/in.h>; Python's socket module lacks the name before 3.13.
IP_LOCAL_PORT_RANGE: int = getattr(socket, "IP_LOCAL_PORT_RANGE", 51)
#: The first kernel with it ("inet: Add IP_LOCAL_PORT_RANGE socket option", Linux 6.3).
PORT_RANGE_KERNEL = (6, 3)


def port_range_option() -> Probe:
    """Whether a socket may narrow its own ephemeral ports (IP_LOCAL_PORT_RANGE, man 7 ip).

    Lesson 07 runs its port windows with it; without it, in a private namespace; else from a
    recording. Tried with a real setsockopt(), since a kernel may be patched either way.
    """
    why = switched_off("ip_local_port_range")
    if why:
        return Probe(False, f"IP_LOCAL_PORT_RANGE is {why}")
    major, minor = kernel_version()
    if (major, minor) < PORT_RANGE_KERNEL:
        return Probe(False, f"Linux {major}.{minor} lacks IP_LOCAL_PORT_RANGE (it came in Linux 6.3)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, (40000 | 40009 << 16).to_bytes(4, "little"))
        except OSError as exc:
            return Probe(False, f"setsockopt(IP_LOCAL_PORT_RANGE) failed on Linux {major}.{minor}: {exc}")
    return Probe(True, f"Linux {major}.{minor} has IP_LOCAL_PORT_RANGE (6.3+)")


def user_timeout_option() -> Probe:
    """Whether TCP_USER_TIMEOUT can be set (man 7 tcp; Linux 2.6.37): lessons 09 and 13 bound
    how long unacknowledged data may wait with it. Tried with a real setsockopt()."""
    why = switched_off("tcp_user_timeout")
    if why:
        return Probe(False, f"TCP_USER_TIMEOUT is {why}")
    option = getattr(socket, "TCP_USER_TIMEOUT", 18)  # <linux/tcp.h>
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.IPPROTO_TCP, option, 5000)
            got = probe.getsockopt(socket.IPPROTO_TCP, option)
        except OSError as exc:
            return Probe(False, f"setsockopt(TCP_USER_TIMEOUT) failed: {exc}")
    return Probe(got == 5000, f"set to 5000 ms, read back {got} ms")


# --------------------------------------------------------------------------- programs

_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")  # a normal user's PATH may lack the sbin folders
_PROGRAM_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


def find_program(name: str) -> str | None:
    """The path of program `name` (on PATH, or in /usr/sbin or /sbin), or None if it is not
    installed or its probe is switched off (a name in PROGRAMS). ValueError for a name that
    cannot be a program's."""
    if not isinstance(name, str) or not _PROGRAM_NAME.match(name):
        raise ValueError(f"a program name such as 'ss' or 'lsof', got {name!r}")
    if name in PROGRAMS and switched_off(name):
        return None
    return shutil.which(name) or next((f"{d}/{name}" for d in _SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def why_missing(name: str) -> str:
    """Why find_program(`name`) finds nothing: "not installed", or the switch's reason.
    TypeError for a `name` that is not a str."""
    if not isinstance(name, str):
        raise TypeError(f"a program name is a str such as 'ss', got {type(name).__name__} {name!r}")
    return (switched_off(name) if name in PROGRAMS else "") or "not installed"


# --------------------------------------------------------------------------- CPUs, memory, descriptors


@dataclass(frozen=True)
class CpuQuota:
    """Our cgroup's CPU quota: ``cpus`` (e.g. 1.0; None = no quota) and where it was read."""

    cpus: float | None
    source: str


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask), which a container may narrow."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _mounts(fstype: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, root inside the hierarchy, super options) of each mount of `fstype`."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] == fstype:
            out.append((fields[4].replace("\\040", " "), fields[3], set(tail[2].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """{controller: path} from /proc/self/cgroup; the v2 hierarchy is under ""."""
    out = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                out[controller.removeprefix("name=")] = parts[2]
    return out


def cgroup_dirs(controller: str) -> list[Path]:
    """Our cgroup's folder for `controller` ("cpu", "memory"; "" for cgroup v2) and its
    ancestors up to the mount, innermost first; [] where it is not mounted or we cannot tell.
    TypeError for a `controller` that is not a str."""
    if not isinstance(controller, str):
        raise TypeError(f"controller must be a str such as 'cpu' ('' for cgroup v2), got {controller!r}")
    own = _own_cgroups().get(controller)
    if own is None:
        return []
    mounts = _mounts("cgroup2") if controller == "" else [m for m in _mounts("cgroup") if controller in m[2]]
    for point, root, _opts in mounts:
        rel = own[len(root):] if own.startswith(root) else own  # a container sees its own part only
        base = Path(point)
        here = base / rel.lstrip("/")
        dirs = [here, *[p for p in here.parents if p == base or base in p.parents]]
        if here.is_dir():
            return dirs
    return []


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_quota() -> CpuQuota:
    """The CPU quota on our cgroup and its ancestors (the tightest), in CPUs.

    cgroup v2: ``cpu.max`` holds "QUOTA PERIOD" or "max PERIOD"; v1: ``cpu.cfs_quota_us``
    (-1: none) over ``cpu.cfs_period_us``. A quota of 1.0 lets our processes use one CPU's
    worth of time in each period, however many CPUs they may run on.
    """
    found: list[tuple[float, str]] = []
    for d in cgroup_dirs(""):
        text = _read(d / "cpu.max")
        if text and not text.startswith("max"):
            quota, period = (int(x) for x in text.split()[:2])
            found.append((quota / period, f"cgroup v2 {d}/cpu.max = {text}"))
    for d in cgroup_dirs("cpu"):
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            found.append((int(quota) / int(period), f"cgroup v1 {d}/cpu.cfs_quota_us = {quota} of {period}"))
    if not found:
        return CpuQuota(None, "no CPU quota on this process's cgroups")
    cpus, source = min(found)
    return CpuQuota(round(cpus, 2), source)


_UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded 2**63-1


def memory_limit() -> tuple[int | None, str]:
    """(bytes, where it was read) of the tightest memory limit on our cgroups; (None, why) if none."""
    found: list[tuple[int, str]] = []
    for d in cgroup_dirs(""):
        text = _read(d / "memory.max")
        if text and text != "max":
            found.append((int(text), f"cgroup v2 {d}/memory.max"))
    for d in cgroup_dirs("memory"):
        text = _read(d / "memory.limit_in_bytes")
        if text and int(text) < _UNLIMITED:
            found.append((int(text), f"cgroup v1 {d}/memory.limit_in_bytes"))
    if not found:
        return None, "no memory limit on this process's cgroups"
    return min(found)


def nofile_limits() -> tuple[int, int]:
    """RLIMIT_NOFILE (soft, hard): how many descriptors this process may open, and how far it
    may raise that itself (man 2 setrlimit); -1 stands for unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    return (-1 if soft == unlimited else soft, -1 if hard == unlimited else hard)


def is_root() -> bool:
    """True if we run with effective uid 0 (root skips file permission checks; lesson 05)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0
