"""The environment doctor: what this machine allows, and what each lesson will show here.

Theory of operation. A learner may open the course on Binder, a laptop, a university hub or
a container, and each allows different things. The probes live where the lessons ask them
(``helpers.core.features`` and the modules it names: ``netns.support()``,
``capture.availability()``, ``filters.support()``, ``tools.open_icmp_socket()``,
``completion.io_uring_status()``, ``addresses.ipv6_loopback_problem()``). This module asks
the same functions and lays the answers out, so the table cannot disagree with a lesson:

* ``findings()``: one row per capability: what was found here, why it matters, which
  lessons it affects;
* ``GATES``: every live experiment that needs a capability, with what the lesson shows
  instead (a recording made earlier by the same helper, labelled with where and when, or
  another way it says it took); ``lesson_plan()`` decides each one for this machine;
* ``progress()``: exercises passed per lesson (the learner's progress file) and the labs.

``report()`` bundles the first two for the start-here notebook (HTML) and for
``python -m helpers.doctor``, which ``./course doctor`` runs (text). Nothing here changes the
machine: every probe is a read or a trial on a throwaway socket or child.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .core import features
from .core.features import PROGRAMS

__all__ = ["Finding", "Gate", "GATES", "ABOUT", "findings", "availability", "lesson_plan", "LessonPlan", "Report",
           "report", "progress", "Progress", "main"]

ROOT = Path(__file__).resolve().parent.parent  # the course folder (the package is installed editable)


# --------------------------------------------------------------------------- what each capability is for

#: key -> (what, why it matters, lessons it affects). Keys of switchable probes are the
#: names in features.SWITCHES; the others are facts of the machine.
ABOUT: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "kernel": ("Linux kernel", "every lesson shows what this kernel does; some features below came with a version",
               ()),
    "tcp_info": ("TCP_INFO fields", "a socket's own account of its connection (segments, windows, cwnd): the "
                 "lessons' main evidence", ("02", "03", "06", "07", "08", "09", "10", "13")),
    "ip_local_port_range": ("IP_LOCAL_PORT_RANGE (Linux 6.3)", "runs a client out of ports in a window of our own "
                            "without touching the machine's settings", ("07",)),
    "tcp_user_timeout": ("TCP_USER_TIMEOUT", "bounds how long sent data may wait for an ACK", ("09", "13")),
    "io_uring": ("io_uring", "the kernel's completion-based I/O, built from ctypes", ("18",)),
    "netns": ("user + network namespaces", "a private loopback we may capture on, cut, shape or count alone",
              ("07", "09", "10", "11", "13")),
    "capture": ("packet capture", "shows each segment on the wire (in a private namespace, or as root)",
                ("02", "06", "07", "08", "09", "10")),
    "socket_filter": ("socket filter on TCP", "makes a peer vanish without root (a filter that drops all it "
                      "receives)", ("09",)),
    "icmp": ("ICMP sockets (ping)", "ping without a setuid program: net.ipv4.ping_group_range, or CAP_NET_RAW",
             ("06",)),
    "ss": ("ss", "the real tool beside the socket table rebuilt from /proc", ("06",)),
    "lsof": ("lsof", "the real tool beside the fd table rebuilt from /proc", ("06",)),
    "netstat": ("netstat", "the older tool beside ss, for the same sockets", ("06",)),
    "nstat": ("nstat", "the real tool beside the counters read from /proc/net/snmp", ("06",)),
    "tcpdump": ("tcpdump", "the real tool beside the capture rebuilt from a packet socket", ("06",)),
    "tc": ("tc", "sets up a bottleneck queue (tbf) on a private loopback", ("10",)),
    "ip": ("ip", "the real tool beside the interfaces read with ioctls", ("06",)),
    "ipv6": ("IPv6 on loopback", "::1 beside 127.0.0.1", ("01",)),
    "cpus": ("CPUs", "pinning a writer and a reader apart, and the server models' scaling", ("05", "17", "19")),
    "cpu_quota": ("CPU quota (cgroup)", "a quota below the CPU count slows every timing the lessons show",
                  ("05", "10", "16", "17", "19")),
    "memory": ("memory limit", "10,000 live connections, and threads by the thousand", ("17", "18")),
    "nofile": ("RLIMIT_NOFILE (soft/hard)", "how many descriptors a process may open; the select() wall at 1024",
               ("14", "16", "17", "18")),
    "root": ("root", "root skips file permission checks and may open packet and raw sockets", ("05", "06")),
}


@dataclass(frozen=True)
class Finding:
    """One row of the doctor's table. ``ok``: True (available), False (missing), None (a fact)."""

    key: str
    what: str
    ok: bool | None
    found: str
    why: str
    lessons: tuple[str, ...]

    @property
    def mark(self) -> str:
        """'yes', 'NO' or 'info'."""
        return {True: "yes", False: "NO", None: "info"}[self.ok]


def _tcp_info() -> tuple[bool | None, str]:
    from .observe import tcp_info

    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as c:
        raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
        info = tcp_info(c)
    reported = info.as_dict()
    missing = [name for name in type(info).__dataclass_fields__ if getattr(info, name) is None]
    if not missing:
        return True, f"{len(raw)} bytes: every field the course reads, up to total_rto_time_ms"
    return "segs_in" in reported, (f"{len(raw)} bytes; an older kernel: {', '.join(missing[:4])}"
                                   f"{' ...' if len(missing) > 4 else ''} show as None")


def _icmp() -> tuple[bool, str]:
    from . import tools

    try:
        sock, kind = tools.open_icmp_socket()
    except tools.PingUnavailable as exc:
        return False, str(exc)
    sock.close()
    rule = tools.ping_permission().explain()
    how = "a datagram ICMP socket opens" if kind == "datagram" else "a raw ICMP socket opens (CAP_NET_RAW)"
    return True, f"{how}; {rule}"


def _capture() -> tuple[bool, str]:
    from . import capture

    mode, why = capture.availability()
    return mode is not None, (f"{mode}: {why}" if mode else why)


def _netns() -> tuple[bool, str]:
    from . import netns

    status = netns.support()
    return status.available, status.reason


def _socket_filter() -> tuple[bool, str]:
    from . import filters

    ok, why = filters.support()
    return ok, why or "this process may attach a filter to its own TCP sockets"


def _io_uring() -> tuple[bool, str]:
    from . import completion

    status = completion.io_uring_status()
    return status.usable, status.explain()


def _ipv6() -> tuple[bool, str]:
    from .addresses import ipv6_loopback_problem

    problem = ipv6_loopback_problem()
    return problem is None, problem or "a socket binds ::1"


def _probe(probe: features.Probe) -> tuple[bool, str]:
    return probe.available, probe.detail


def _program(name: str) -> tuple[bool, str]:
    path = features.find_program(name)
    why = features.why_missing(name)
    return path is not None, path or (why if why == "not installed" else f"{name} is {why}")


def _memory() -> tuple[None, str]:
    limit, source = features.memory_limit()
    try:
        total_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                             if line.startswith("MemTotal:")))
        total = f"{total_kib / 1024 ** 2:.1f} GiB in the machine"
    except (OSError, StopIteration, ValueError):
        total = "the machine's total unknown"
    if limit is None:
        return None, f"no cgroup limit; {total}"
    return None, f"{limit / 1024 ** 3:.2f} GiB ({source}); {total}"


def _nofile() -> tuple[bool, str]:
    soft, hard = features.nofile_limits()
    text = lambda n: "unlimited" if n < 0 else f"{n:,}"  # noqa: E731 - one line's formatting
    ok = hard < 0 or hard >= 1024 + 8
    note = "" if ok else "; below 1032, so descriptor 1024 (the select() wall) cannot be reached"
    return ok, f"soft {text(soft)}, hard {text(hard)} (a process may raise its soft limit up to the hard one){note}"


def _root() -> tuple[None, str]:
    if features.is_root():
        return None, "yes: effective uid 0 (the lessons are written for a normal user, and say where root differs)"
    return None, f"no: uid {os.geteuid()}, as a learner runs the course"


def _cpus() -> tuple[None, str]:
    return None, f"{features.cpu_count()} this process may run on ({os.cpu_count()} in the machine)"


def _cpu_quota() -> tuple[None, str]:
    quota = features.cpu_quota()
    if quota.cpus is None:
        return None, quota.source
    return None, f"{quota.cpus:g} CPUs' worth of time ({quota.source})"


def _kernel() -> tuple[None, str]:
    major, minor = features.kernel_version()
    return None, f"{major}.{minor} ({os.uname().release})"


_PROBES: dict[str, Callable[[], tuple[bool | None, str]]] = {
    "kernel": _kernel,
    "tcp_info": _tcp_info,
    "ip_local_port_range": lambda: _probe(features.port_range_option()),
    "tcp_user_timeout": lambda: _probe(features.user_timeout_option()),
    "io_uring": _io_uring,
    "netns": _netns,
    "capture": _capture,
    "socket_filter": _socket_filter,
    "icmp": _icmp,
    **{name: (lambda name=name: _program(name)) for name in PROGRAMS},
    "ipv6": _ipv6,
    "cpus": _cpus,
    "cpu_quota": _cpu_quota,
    "memory": _memory,
    "nofile": _nofile,
    "root": _root,
}


def findings() -> list[Finding]:
    """Every capability, probed now, in the order of ABOUT. A probe that fails unexpectedly
    becomes a row saying so (the doctor itself never raises)."""
    features.require_linux("the environment doctor (it reads /proc and tries Linux socket options)")
    rows = []
    for key, (what, why, lessons) in ABOUT.items():
        try:
            ok, found = _PROBES[key]()
        except Exception as exc:  # noqa: BLE001 - a broken probe is a row, not a traceback
            ok, found = False, f"the probe itself failed: {type(exc).__name__}: {exc}"
        rows.append(Finding(key, what, ok, found, why, lessons))
    return rows


def availability(rows: Iterable[Finding] | None = None) -> dict[str, bool]:
    """{probe: available} for the probes the GATES ask (from `rows`, or probed now)."""
    rows = findings() if rows is None else rows
    return {r.key: bool(r.ok) for r in rows if r.key in features.SWITCHES}


# --------------------------------------------------------------------------- what each lesson shows


@dataclass(frozen=True)
class Gate:
    """A live experiment of `lesson` that needs capabilities: live if every probe of one of
    the `needs` alternatives is available; otherwise the lesson shows `fallback`. `kind`
    is "recording" (a run recorded earlier by the same helper, labelled with where, when and
    the kernel) or "other" (another real way, which the lesson names)."""

    lesson: str
    experiment: str
    needs: tuple[tuple[str, ...], ...]
    fallback: str
    kind: str = "recording"

    def way(self, available: dict[str, bool]) -> tuple[str, ...] | None:
        """The first of `needs` whose probes all say yes in `available` (how the experiment
        runs live), or None (it falls back)."""
        return next((alt for alt in self.needs if all(available.get(p, False) for p in alt)), None)

    def live(self, available: dict[str, bool]) -> bool:
        """True if this experiment runs live with these probes' answers."""
        return self.way(available) is not None


GATES: tuple[Gate, ...] = (
    Gate("01", "the IPv6 rows (::1)", (("ipv6",),), "IPv6 rows recorded earlier, beside the live IPv4 and Unix ones"),
    Gate("02", "the handshake on the wire", (("capture",),), "a capture recorded earlier"),
    Gate("06", "ss beside the rebuilt socket table", (("ss",),), "the table from /proc alone", "other"),
    Gate("06", "lsof and netstat beside the rebuilt tables", (("lsof",), ("netstat",)),
         "the tables from /proc alone", "other"),
    Gate("06", "nstat beside the counters", (("nstat",),), "the counters from /proc/net/snmp alone", "other"),
    Gate("06", "ping over an ICMP socket", (("icmp",),), "the refusal, explained by the rules, and a ping "
         "recorded earlier"),
    Gate("06", "an echo on the wire", (("capture",),), "a capture recorded earlier"),
    Gate("06", "the real tcpdump", (("tcpdump",),), "the capture rebuilt from a packet socket", "other"),
    Gate("07", "who sends the first FIN, on the wire", (("capture",),), "a capture recorded earlier"),
    Gate("07", "ephemeral ports running out in a window", (("ip_local_port_range",), ("netns",)),
         "runs recorded earlier"),
    Gate("07", "the TIME_WAIT cap", (("netns",),), "a run recorded earlier"),
    Gate("08", "four endings on the wire", (("capture",),), "a capture recorded earlier"),
    Gate("09", "keep-alive probes to a vanished peer, on the wire", (("capture",),), "a capture recorded earlier"),
    Gate("09", "exercise 1's check: your settings against a peer that vanishes", (("socket_filter",), ("netns",)),
         "the check reads your settings only, and says so", "other"),
    Gate("10", "write-write-read on the wire", (("capture",),), "captures recorded earlier"),
    Gate("10", "slow start and a loss behind a bottleneck", (("netns", "tc"),), "a run recorded earlier"),
    Gate("11", "connect() and a refused send() counted alone", (("netns",),),
         "the counts in this machine's namespace, shared with other programs", "other"),
    Gate("13", "a vanished peer", (("netns",),), "runs recorded earlier"),
    Gate("18", "a real io_uring ring", (("io_uring",),), "the ring's runs recorded earlier (the asynchronous "
         "reader, the proactor, batched reads), beside the reason it is refused"),
)


@dataclass(frozen=True)
class LessonPlan:
    """One lesson here: its title and, for each gated experiment, (gate, live here?)."""

    lesson: str
    title: str
    experiments: list[tuple[Gate, bool]] = field(default_factory=list)

    @property
    def all_live(self) -> bool:
        """True if every experiment of the lesson runs live here."""
        return all(live for _, live in self.experiments)


def lesson_titles() -> dict[str, str]:
    """{"01": "Sockets and addresses", ...} from the notebooks' first lines ({} without them)."""
    titles = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        if path.name.startswith("00-"):  # the start-here notebook, which shows this table
            continue
        try:
            first = json.loads(path.read_text())["cells"][0]["source"]
        except (OSError, ValueError, KeyError, IndexError):
            continue
        line = ("".join(first) if isinstance(first, list) else first).splitlines()[0]
        titles[path.name[:2]] = re.sub(r"^#\s*\d\d\s*·\s*", "", line).strip()
    return titles


def lesson_plan(available: dict[str, bool] | None = None) -> list[LessonPlan]:
    """Every lesson, with each of its gated experiments decided for `available` (probed now
    if None)."""
    available = availability() if available is None else available
    titles = lesson_titles()
    lessons = sorted(set(titles) | {g.lesson for g in GATES})
    return [LessonPlan(n, titles.get(n, ""), [(g, g.live(available)) for g in GATES if g.lesson == n])
            for n in lessons]


# --------------------------------------------------------------------------- the report


def _lessons(numbers: Iterable[str]) -> str:
    """'all lessons', 'lesson 07' or 'lessons 02, 06'."""
    numbers = list(numbers)
    if not numbers:
        return "all lessons"
    return ("lesson " if len(numbers) == 1 else "lessons ") + ", ".join(numbers)


@dataclass
class Report:
    """The doctor's findings and the lesson plan, shown as HTML in a notebook and as text in
    a terminal (``print(report)``)."""

    rows: list[Finding]
    plan: list[LessonPlan]

    def __str__(self) -> str:
        indent = " " * 8
        out = ["What this machine allows", ""]
        for r in self.rows:
            out += textwrap.wrap(f"{r.mark:>4}  {r.what}: {r.found}", width=100, initial_indent="  ",
                                 subsequent_indent=indent)
            out += textwrap.wrap(f"why: {r.why} ({_lessons(r.lessons)})", width=100, initial_indent=indent,
                                 subsequent_indent=indent)
        out += ["", "What each lesson shows here", ""]
        for p in self.plan:
            if p.all_live:
                n = len(p.experiments)
                extra = f" (of which {n} need{'s' if n == 1 else ''} a capability)" if n else ""
                out.append(f"  {p.lesson} {p.title}: everything live{extra}")
                continue
            out.append(f"  {p.lesson} {p.title}:")
            for gate, live in p.experiments:
                shown = "live" if live else ("RECORDED: " if gate.kind == "recording" else "instead: ") + gate.fallback
                out.extend(textwrap.wrap(f"{gate.experiment}: {shown}", width=100, initial_indent="      ",
                                         subsequent_indent="        "))
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        colour = {True: "#1a7f37", False: "#cf222e", None: "#57606a"}
        rows = "".join(
            f"<tr><td style='color:{colour[r.ok]};font-weight:bold'>{esc(r.mark)}</td><td>{esc(r.what)}</td>"
            f"<td style='text-align:left'>{esc(r.found)}</td><td style='text-align:left'>{esc(r.why)}</td>"
            f"<td>{esc(_lessons(r.lessons))}</td></tr>" for r in self.rows)
        first = ("<table><caption>What this machine allows</caption><thead><tr><th></th><th>capability</th>"
                 "<th>here</th><th>why it matters</th><th>lessons</th></tr></thead><tbody>" + rows + "</tbody></table>")
        plan_rows = []
        for p in self.plan:
            if not p.experiments:
                plan_rows.append(f"<tr><td>{p.lesson}</td><td>{esc(p.title)}</td><td>everything live</td></tr>")
                continue
            items = "".join(
                f"<li>{esc(g.experiment)}: " + ("<b>live</b>" if live else
                                                f"<b>{'RECORDED' if g.kind == 'recording' else 'instead'}</b>: "
                                                f"{esc(g.fallback)}") + "</li>"
                for g, live in p.experiments)
            plan_rows.append(f"<tr><td>{p.lesson}</td><td>{esc(p.title)}</td>"
                             f"<td style='text-align:left'><ul style='margin:0'>{items}</ul></td></tr>")
        second = ("<table><caption>What each lesson shows here</caption><thead><tr><th>lesson</th><th>title</th>"
                  "<th>experiments that need a capability</th></tr></thead><tbody>" + "".join(plan_rows)
                  + "</tbody></table>")
        return first + "<br>" + second


def report() -> Report:
    """Probe everything now; the findings and what each lesson will show here."""
    rows = findings()
    return Report(rows, lesson_plan(availability(rows)))


# --------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """Exercises passed per lesson (from the progress file) and the labs in labs/."""

    lessons: list[tuple[str, str, int, int]]  # (lesson, title, passed, exercises)
    labs: list[tuple[str, str]]  # (file, title)
    where: str

    def __str__(self) -> str:
        done = sum(p for _, _, p, _ in self.lessons)
        total = sum(n for _, _, _, n in self.lessons)
        lines = [f"Exercises passed: {done} of {total} (kept in {self.where})"]
        lines += [f"  {n} {title}: {p} of {m}" for n, title, p, m in self.lessons]
        lines += ["Labs:"] + [f"  {name}: {title}" for name, title in self.labs]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(f"<tr><td>{n}</td><td>{esc(t)}</td><td>{p} of {m}</td></tr>" for n, t, p, m in self.lessons)
        done = sum(p for _, _, p, _ in self.lessons)
        total = sum(n for _, _, _, n in self.lessons)
        labs = "".join(f"<li><code>{esc(name)}</code>: {esc(title)}</li>" for name, title in self.labs)
        return (f"<table><caption>Exercises passed: {done} of {total}</caption><thead><tr><th>lesson</th>"
                f"<th>title</th><th>passed</th></tr></thead><tbody>{rows}</tbody></table>"
                f"<small>kept in {esc(self.where)}</small><p>Labs in <code>labs/</code>:</p><ul>{labs}</ul>")


def progress() -> Progress:
    """Exercises passed at least once, per lesson with exercises, and the labs available."""
    from . import practice

    passed = practice.passed_exercises()
    rows = []
    for n, title in lesson_titles().items():
        count = len(practice.exercises(n))
        if count:
            rows.append((n, title, len(passed.get(n, [])), count))
    labs = []
    for path in sorted((ROOT / "labs").glob("[0-9][0-9]-*.ipynb")):
        try:
            first = json.loads(path.read_text())["cells"][0]["source"]
            line = ("".join(first) if isinstance(first, list) else first).splitlines()[0]
        except (OSError, ValueError, KeyError, IndexError):
            continue
        labs.append((path.name, re.sub(r"^#\s*Lab\s*\d+\s*·\s*", "", line).strip()))
    try:
        where = str(practice.progress_file())
    except ValueError as exc:
        where = f"nowhere ({exc})"
    return Progress(rows, labs, where)


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.doctor``: print the table; exit 0 (the doctor reports, it does not judge)."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        print("usage: python -m helpers.doctor   (./course doctor): what this machine allows, lesson by lesson",
              file=sys.stderr)
        return 2
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
