"""See every packet of a small experiment, without root: capture inside a private namespace.

Theory of operation. tcpdump needs CAP_NET_RAW to open a packet socket (man 7 packet).
A normal user holds that capability too, but only over a network namespace it owns: a
child that unshares a user + network namespace (``helpers.netns``) gets a private ``lo``
on which it may open ``socket(AF_PACKET, SOCK_RAW)``. Everything on that ``lo`` belongs
to the experiment, so nothing needs filtering. So ``capture(fn)``:

1. sends the source of ``fn`` (a function defined with ``def``, or source text defining
   ``main_experiment()``) to a fresh single-threaded child, which unshares, brings ``lo`` up, opens a
   packet socket on it with kernel timestamps (SO_TIMESTAMPNS, man 7 socket), runs ``fn``,
   and reads what the socket queued. On ``lo`` every frame passes the tap twice, leaving
   (PACKET_OUTGOING) and arriving (PACKET_HOST); the leaving copy is skipped.
2. parses the frames in the parent (``helpers.packets``) into ``Packet`` rows: time,
   direction, flags, sequence and acknowledgment numbers relative to each side's ISN,
   window, payload length, MSS and window-scale options.

Without namespaces but as root, the same child runs on the host and captures the real
``lo``; other programs' traffic is kept out by a BPF port filter (``capture_root``),
installed when the experiment calls ``watch(port)`` with its listener's port. Elsewhere
``capture()`` raises ``CaptureUnavailable`` with both reasons, and a lesson shows a capture
recorded earlier (``save_recording``/``load_recording``), labelled as such.

Inside the experiment these names are provided (no import needed):

* ``watch(port)``: the port the experiment listens on; required before connecting, so the
  same code works on the host as root (a no-op inside a namespace).
* ``mark(text, who="Client")``: a note on the ladder at this moment (e.g. "close()").
* ``set_link("lo", up=False)``: inside a namespace only (it refuses on the host).
* ``shape_lo(rate_kbit, burst_bytes, limit_bytes)``: a ``tbf`` qdisc on the private ``lo``
  (needs the ``tc`` program; ``shaping_support()`` says whether it is there). There is no
  ``netem`` on many kernels, so delay and random loss are not offered. ``burst_bytes`` must
  hold a whole loopback frame (>= 65550): tbf never sends a packet bigger than its bucket.

Two kernel details the child handles: a frame on ``lo`` may be 64 KiB (the MTU, with
segmentation offload), so each read asks for 256 KiB or it would be cut short; and when
``lo`` goes down the packet socket reports ENETDOWN once, then resumes when it is up again.
While ``lo`` is down nothing is transmitted, so nothing is captured. ``start()`` runs the
experiment in the background; ``capture()`` waits for it.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import netns
from .capture_root import CaptureUnavailable, can_capture
from .core import checks, recordings, spawn
from .core.features import find_program, switched_off, why_missing
from .diagrams import SequenceDiagram
from .packets import TcpFlags, parse_frame, relative_numbers

__all__ = ["CaptureUnavailable", "Packet", "Capture", "RunningCapture", "capture", "start", "availability",
           "shaping_support", "save_recording", "load_recording", "watch", "mark"]


def watch(port: int) -> None:
    """Inside an experiment run by capture(): the port it listens on (call before connecting).

    This module-level version exists so a notebook can import the name (linters, readers);
    capture() replaces it with the real one in the child. Called directly, it explains that.
    """
    raise RuntimeError("watch() works only inside an experiment function run by helpers.capture.capture()")


def mark(text: str, who: str = "Client") -> None:
    """Inside an experiment run by capture(): a note ("close()") on the ladder at this moment."""
    raise RuntimeError("mark() works only inside an experiment function run by helpers.capture.capture()")


# --------------------------------------------------------------------------- code run in the child

# Stdlib only: in a namespace it runs before anything could start a thread.
_CHILD_CODE = r'''

def __capture_main(experiment_kwargs, entry, use_namespace, package_root):
    import json as _j, os as _o, select as _sel, socket as _s, struct as _st, time as _t, ctypes as _c
    import shutil as _sh, subprocess as _sp
    SOL_PACKET, PACKET_STATISTICS, ETH_P_ALL, SO_TIMESTAMPNS = 263, 6, 3, 35
    pkt = _s.socket(_s.AF_PACKET, _s.SOCK_RAW, 0)  # protocol 0: receives nothing until bound
    pkt.setsockopt(_s.SOL_SOCKET, _s.SO_RCVBUF, 4 << 20)
    pkt.setsockopt(_s.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    state = {"bound": False, "ports": [], "marks": []}
    t0 = _t.time()

    def _bind(program):
        if program:
            buf = _c.create_string_buffer(program, len(program))
            pkt.setsockopt(_s.SOL_SOCKET, 26, _st.pack("HP", len(program) // 8, _c.addressof(buf)))
        pkt.bind(("lo", ETH_P_ALL))
        state["bound"] = True

    def watch(port):
        """Tell the capture which port the experiment listens on (call it before connecting)."""
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"watch() needs the listening port, an int in 1-65535, got {port!r}")
        if not use_namespace and state["ports"] and port not in state["ports"]:
            raise ValueError("watch() takes one port per experiment: use one listener")
        state["ports"].append(port)
        if not state["bound"]:
            if use_namespace:
                _bind(b"")
            else:  # on the host (root, no threads to fear): capture_root's BPF port filter
                import sys as _sys
                _sys.path.insert(0, package_root)
                from helpers.capture_root import tcp_port_filter
                _bind(tcp_port_filter(port))

    def mark(text, who="Client"):
        """Put a note on the packet ladder at this moment."""
        state["marks"].append([_t.time() - t0, str(text), str(who)])

    def shape_lo(rate_kbit, burst_bytes, limit_bytes):
        """A tbf qdisc on this namespace's lo: packets beyond the bucket queue, then drop."""
        if not use_namespace:
            raise PermissionError("shape_lo() only works inside a private namespace, never on the host")
        if int(burst_bytes) < 65550:
            raise ValueError("burst_bytes must hold one whole loopback frame (MTU 65536 + headers, so >= 65550): "
                             "tbf never sends a packet larger than its bucket")
        tc = _sh.which("tc") or ("/usr/sbin/tc" if _o.path.exists("/usr/sbin/tc") else None)
        if tc is None:
            raise FileNotFoundError("shape_lo() needs the tc program (package iproute2), not installed here")
        cmd = [tc, "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", f"{int(rate_kbit)}kbit",
               "burst", str(int(burst_bytes)), "limit", str(int(limit_bytes))]
        done = _sp.run(cmd, capture_output=True, text=True, timeout=5)
        if done.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")

    def _kernel_stamp(anc):
        for level, kind, raw in anc:
            if level == _s.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = _st.unpack("qq", raw[:16])
                return sec + nsec / 1e9
        return None

    def _await_timestamps(sock, limit_s=3.0):
        """Wait until the kernel stamps frames as they pass. The first socket on a host that
        asks for timestamps only schedules turning them on (net_enable_timestamp() defers it
        to a kernel worker); until that runs, a frame is stamped when it is read, and on a busy
        machine the handshake of an experiment came out stamped seconds late. So: send a marked
        datagram to ourselves on lo until its frame carries a time from before it was read."""
        tag = _o.urandom(16)
        with _s.socket(_s.AF_INET, _s.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            deadline = _t.time() + limit_s
            while _t.time() < deadline:
                u.sendto(tag, u.getsockname())  # to ourselves: no ICMP, nothing else on the wire
                sent = _t.time()  # loopback delivers inside sendto(): a real stamp is <= sent
                _t.sleep(0.01)
                u.recv(64)
                while True:
                    try:
                        data, anc, _flags, _addr = sock.recvmsg(262144, 64, _s.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    stamp = _kernel_stamp(anc)
                    if tag in data and stamp is not None and stamp <= sent + 0.001:
                        while True:  # drop what is left of the warm-up
                            try:
                                sock.recvmsg(262144, 64, _s.MSG_DONTWAIT)
                            except BlockingIOError:
                                return True
        return False

    state["stamped"] = True
    g = globals()
    g["watch"], g["mark"], g["shape_lo"] = watch, mark, shape_lo
    if use_namespace:
        _bind(b"")  # the private lo carries only the experiment's traffic
        state["stamped"] = _await_timestamps(pkt)
    else:
        probe = _s.socket(_s.AF_PACKET, _s.SOCK_RAW, 0)  # root on the host: a second socket, no filter
        try:
            probe.setsockopt(_s.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            probe.bind(("lo", ETH_P_ALL))
            state["stamped"] = _await_timestamps(probe)
        finally:
            probe.close()
        def set_link(name, up):
            raise PermissionError("set_link() only works inside a private namespace; it never touches the host's lo")
        g["set_link"] = set_link
    frames = []

    def _drain():
        while True:
            try:
                data, anc, _flags, addr = pkt.recvmsg(262144, 64, _s.MSG_DONTWAIT)  # > lo MTU + headers
            except BlockingIOError:
                return
            except OSError as exc:  # lo went down (set_link): reported once, capture resumes when it is up
                if exc.errno == 100:  # ENETDOWN
                    continue
                raise
            if addr[2] == 4:  # PACKET_OUTGOING: the duplicate copy of a loopback frame
                continue
            stamp = _kernel_stamp(anc)
            frames.append([(_t.time() if stamp is None else stamp) - t0, data.hex()])

    try:
        result = g[entry](**experiment_kwargs)
    finally:
        if state["bound"]:
            deadline = _t.time() + 1.0
            while _t.time() < deadline:  # read until lo has been quiet for 50 ms
                _drain()
                if not _sel.select([pkt], [], [], 0.05)[0]:
                    break
        drops = _st.unpack("=II", pkt.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1] if state["bound"] else 0
        pkt.close()
    if not use_namespace and not state["bound"]:
        raise RuntimeError("the experiment never called watch(port): on the host the capture needs the port")
    return {"result": result, "frames": frames, "marks": state["marks"], "drops": drops,
            "stamped": state["stamped"]}


def main(experiment_kwargs, entry, use_namespace, package_root):
    return __capture_main(experiment_kwargs, entry, use_namespace, package_root)
'''

def host_child(request: dict[str, Any]) -> None:
    """The child's entry on the host (root, no namespace; run by core.spawn): run the experiment
    source's main(**kwargs) and say its result, or the error, in one message."""
    spawn.ready()
    namespace: dict[str, Any] = {"__name__": "__capture__"}
    try:
        exec(compile(request["source"], request["filename"], "exec"), namespace)
        answer = {"result": namespace["main"](**request["kwargs"])}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        answer = netns.error_answer(exc)
    spawn.say(answer)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Packet:
    """One TCP segment as it crossed ``lo``; seq/ack are relative to each side's ISN.

    `direction` is "->" (client to server) or "<-"; the client is the side that sent the
    connection's first SYN (or, without a SYN, the side with the higher port).
    """

    time_s: float  # seconds since the capture started (kernel timestamp)
    conn: int  # 1, 2, ...: which connection, in order of first appearance
    direction: str
    src: tuple[str, int]
    dst: tuple[str, int]
    flags: str  # "SYN", "SYN,ACK", "PSH,ACK", ...
    seq: int
    ack: int | None
    length: int
    window: int  # bytes, scaled by the window-scale option once both SYNs offered it
    raw_seq: int
    raw_ack: int
    mss: int | None = None
    window_scale: int | None = None

    def has(self, flag: str) -> bool:
        """True if `flag` ("SYN", "ACK", "FIN", "RST", "PSH") is set."""
        if not isinstance(flag, str):
            raise TypeError(f"flag must be a str such as 'SYN' or 'ACK', got {type(flag).__name__} {flag!r}")
        return flag.upper() in self.flags.split(",")

    def label(self) -> str:
        """'SYN,ACK seq=0 ack=1 len=0 win=65483 mss=65495 ws=7'."""
        ack = f" ack={self.ack}" if self.ack is not None else ""
        opts = (f" mss={self.mss}" if self.mss is not None else "") + (
            f" ws={self.window_scale}" if self.window_scale is not None else "")
        return f"{self.flags} seq={self.seq}{ack} len={self.length} win={self.window}{opts}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for recordings)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_COLUMNS = ("#", "conn", "time (ms)", "gap (ms)", "dir", "flags", "seq", "ack", "len", "win", "options")


class Capture(list[Packet]):
    """The packets of one experiment, in order; prints as a table (text and HTML).

    ``.result`` is what the experiment returned, ``.marks`` its mark() notes, ``.mode``
    "namespace", "root" or "recorded", ``.source`` where and when it was captured.
    """

    def __init__(self, packets: list[Packet] = (), *, result: Any = None, marks: list | None = None,  # type: ignore[assignment]
                 mode: str = "namespace", source: str = "", drops: int = 0, timed: bool = True):
        super().__init__(packets)
        #: False if the kernel had not turned packet timestamps on within 3 s: then the order
        #: and the contents are right, but each time is when the frame was read, not when it passed
        self.timed = timed
        self.result = result
        self.marks: list[tuple[float, str, str]] = [tuple(m) for m in (marks or [])]  # type: ignore[misc]
        self.mode = mode
        self.source = source
        self.drops = drops

    @property
    def live(self) -> bool:
        """False for a recording loaded from disk: never assert about those."""
        return self.mode != "recorded"

    def connection(self, n: int) -> Capture:
        """Only the packets of connection `n` (1-based, in order of appearance)."""
        known = sorted({p.conn for p in self})
        if n not in known:
            raise ValueError(f"no connection {n} in this capture; it has {known}")
        return Capture([p for p in self if p.conn == n], result=self.result, mode=self.mode, source=self.source,
                       marks=[m for m in self.marks], drops=self.drops, timed=self.timed)

    def flags(self) -> list[str]:
        """The flags of each packet, e.g. ['SYN', 'SYN,ACK', 'ACK']."""
        return [p.flags for p in self]

    def _rows(self) -> list[tuple[str, ...]]:
        rows, prev = [], None
        for i, p in enumerate(self, 1):
            gap = "" if prev is None else f"{(p.time_s - prev) * 1e3:.2f}"
            prev = p.time_s
            opts = ", ".join(x for x in (f"mss {p.mss}" if p.mss is not None else "",
                                         f"wscale {p.window_scale}" if p.window_scale is not None else "") if x)
            rows.append((str(i), str(p.conn), f"{p.time_s * 1e3:.2f}", gap, p.direction, p.flags, str(p.seq),
                         "" if p.ack is None else str(p.ack), str(p.length), str(p.window), opts))
        return rows

    def _caption(self) -> str:
        where = {"namespace": "captured live in a private network namespace",
                 "root": "captured live on the host's lo (root)"}.get(self.mode, f"RECORDED earlier: {self.source}")
        drops = f"; the kernel dropped {self.drops} frames" if self.drops else ""
        untimed = "" if self.timed else "; the kernel did not stamp them in time, so times are when read"
        return f"{len(self)} packets, {where}{drops}{untimed}"

    def __repr__(self) -> str:
        rows = [_COLUMNS] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        lines = [self._caption()] + ["  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self._rows())
        return (f"<table><caption>{html.escape(self._caption())}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def ladder(self, title: str = "", *, gap_note_ms: float = 5.0) -> SequenceDiagram:
        """A Client/Server sequence diagram: one arrow per packet with relative seq/ack and
        its time, a note where more than `gap_note_ms` passed, and the experiment's marks.

        `gap_note_ms` is a number of milliseconds >= 0 (ValueError otherwise); `title` a str."""
        number = not isinstance(gap_note_ms, bool) and isinstance(gap_note_ms, (int, float))
        if not (number and math.isfinite(gap_note_ms) and gap_note_ms >= 0):
            raise ValueError(f"gap_note_ms must be a finite number of milliseconds >= 0, got {gap_note_ms!r}")
        if not isinstance(title, str):
            raise TypeError(f"title must be a str ('' for none), got {type(title).__name__} {title!r}")
        if self.mode == "recorded":
            title = f"{title} (RECORDED: {self.source})" if title else f"RECORDED: {self.source}"
        many = len({p.conn for p in self}) > 1
        d = SequenceDiagram("Client", "Server", title=title)
        marks = sorted(self.marks)
        prev = None
        for p in self:
            while marks and marks[0][0] <= p.time_s:
                t, text, who = marks.pop(0)
                d.note(who if who in ("Client", "Server") else "Client", f"{text} (t={t * 1e3:.2f} ms)")
            if prev is not None and (p.time_s - prev) * 1e3 >= gap_note_ms:
                d.note("Client", f"... {(p.time_s - prev) * 1e3:.1f} ms pass ...")
            prev = p.time_s
            src, dst = ("Client", "Server") if p.direction == "->" else ("Server", "Client")
            text = (f"#{p.conn} " if many else "") + p.label()
            d.message(src, dst, text, time_s=p.time_s, reply=p.direction == "<-")
        for t, text, who in marks:
            d.note(who if who in ("Client", "Server") else "Client", f"{text} (t={t * 1e3:.2f} ms)")
        return d

    def to_json(self, where: str) -> dict[str, Any]:
        """A JSON-ready recording of this capture, labelled with `where`, the time and the kernel."""
        return {"recorded": f"{recordings.label(where)}, mode {self.mode}",
                "result": self.result, "marks": self.marks, "packets": [p.as_dict() for p in self]}


def _to_packets(frames: list[list[Any]]) -> list[Packet]:
    """Parse [time, hex] frames into Packets with per-connection directions."""
    times, parsed = [], []
    for t, hexdata in frames:
        try:
            frame = parse_frame(bytes.fromhex(hexdata))
        except ValueError:
            continue  # not a frame we understand (the capture keeps everything on lo)
        if frame.tcp is None:
            continue
        times.append(t)
        parsed.append(frame)
    # Relative numbers per connection: a listener's (ip, port) is the same in every one.
    groups: dict[frozenset, list[int]] = {}
    for i, frame in enumerate(parsed):
        groups.setdefault(frozenset(frame.endpoints or ()), []).append(i)
    rels: list[Any] = [None] * len(parsed)
    for members in groups.values():
        for i, rel in zip(members, relative_numbers(parsed[i] for i in members)):
            rels[i] = rel
    conn_ids: dict[frozenset, int] = {}
    client_of: dict[frozenset, tuple] = {}
    out = []
    for t, rel in zip(times, rels):
        key = frozenset((rel.src, rel.dst))
        if key not in conn_ids:
            conn_ids[key] = len(conn_ids) + 1
            syn_only = rel.flags & TcpFlags.SYN and not rel.flags & TcpFlags.ACK
            client_of[key] = rel.src if syn_only else max((rel.src, rel.dst), key=lambda e: e[1])
        seg = rel.segment
        out.append(Packet(
            time_s=round(t, 6), conn=conn_ids[key], direction="->" if rel.src == client_of[key] else "<-",
            src=(str(rel.src[0]), rel.src[1]), dst=(str(rel.dst[0]), rel.dst[1]), flags=rel.flags.short(),
            seq=rel.seq, ack=rel.ack, length=rel.length, window=rel.window_bytes, raw_seq=seg.seq, raw_ack=seg.ack,
            mss=seg.mss, window_scale=seg.window_scale))
    return out


# --------------------------------------------------------------------------- availability and running


def availability() -> tuple[str | None, str]:
    """("namespace" | "root" | None, why): how capture() would run here, or why it cannot.

    A test may switch this probe ("capture") off, or "netns" alone: helpers.core.features.
    """
    why = switched_off("capture")
    if why:
        return None, f"packet capture is {why}"
    ns = netns.support()
    if ns.available:
        return "namespace", "a private user + network namespace, where this user may capture on its own lo"
    ok, why_not = can_capture()
    if ok:
        return "root", f"no namespaces here ({ns.reason}), but this process may capture on the host's lo"
    return None, (f"packet capture is unavailable here: user namespaces are not allowed ({ns.reason}), "
                  f"and without them {why_not}")


def shaping_support() -> tuple[bool, str]:
    """(True, '') if shape_lo() can work (the tc program exists), else (False, why)."""
    if find_program("tc") is not None:
        return True, ""
    return False, f"the tc program (package iproute2) is {why_missing('tc')}, so no qdisc can be set on lo"


def _experiment_source(fn: Callable[..., Any] | str) -> tuple[str, str, str]:
    if not isinstance(fn, str) and not callable(fn):
        raise TypeError(f"capture() needs a function defined with def, or source text defining "
                        f"main_experiment(); got {type(fn).__name__} {fn!r}")
    if isinstance(fn, str):
        return textwrap.dedent(fn), "main_experiment", "<capture source>"
    source, entry, filename = netns.source_of(fn)
    if entry in ("main", "watch", "mark", "set_link", "shape_lo"):
        raise ValueError(f"name the experiment function something other than {entry!r}")
    return source, entry, filename


def capture(fn: Callable[..., Any] | str, /, *, timeout_s: float = 10.0, **kwargs: Any) -> Capture:
    """Run experiment `fn(**kwargs)` in a child process and capture its TCP packets on ``lo``.

    `fn` is a function defined with ``def`` (its source is sent to the child: it imports
    what it uses and returns JSON data) or source text defining ``main_experiment()``. It
    must call ``watch(port)`` with its listener's port before connecting. Returns a Capture
    (a list of Packet) whose ``.result`` is what `fn` returned. Raises CaptureUnavailable
    (saying why) where neither a namespace nor root is available, netns.NamespaceError if
    `fn` raised, TimeoutError after `timeout_s` (the child is killed).
    """
    return start(fn, timeout_s=timeout_s, **kwargs).wait()


class RunningCapture:
    """A capture whose child is still running (from ``start()``); ``wait()`` returns the Capture."""

    def __init__(self, child: spawn.Child, mode: str, timeout_s: float):
        self._child = child
        self.mode = mode
        self._deadline = time.monotonic() + timeout_s
        self._timeout_s = timeout_s
        self._done: Capture | None = None

    def done(self) -> bool:
        """True once the experiment's child has exited."""
        return self._done is not None or not self._child.running

    def wait(self) -> Capture:
        """Wait for the child (until the timeout given to start()), reap it, return the Capture."""
        if self._done is not None:
            return self._done
        child = self._child
        timeout_s = self._deadline - time.monotonic()
        if not child.running:
            # It finished; a lesson may call wait() long after the deadline (it ran other cells
            # meanwhile). Reading what the child wrote is then no race against the clock: on a
            # busy machine the last few milliseconds left were not enough to read its answer.
            timeout_s = max(timeout_s, 30.0)
        try:
            child.wait_ready()
            answer = child.read(max(0.01, timeout_s), waiting_for="the experiment's result")
        except TimeoutError:
            child.kill()
            raise TimeoutError(f"the experiment did not finish within {self._timeout_s} s, so its process was "
                               "killed; make it shorter or raise timeout_s") from None
        except spawn.ChildError as exc:
            raise netns.NamespaceError(f"the capture child exited with code {exc.returncode} and no answer; "
                                       f"stderr: {exc.stderr[-1000:]}") from None
        finally:
            child.stop()
        if "unshare_errno" in answer:
            raise CaptureUnavailable(netns.explain_unshare_errno(answer["unshare_errno"], netns.support().checks))
        if "error" in answer:
            raise netns.NamespaceError(f"the experiment raised in the capture child: {answer['error']}",
                                       remote_type=answer["type"], traceback=answer["traceback"])
        got = answer["result"]
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self._done = Capture(_to_packets(got["frames"]), result=got["result"], marks=got["marks"], mode=self.mode,
                             drops=got["drops"], source=f"{self.mode}, {when}", timed=got["stamped"])
        return self._done


def start(fn: Callable[..., Any] | str, /, *, timeout_s: float = 10.0, **kwargs: Any) -> RunningCapture:
    """Like capture(), but return at once: the experiment runs in its child while the caller
    goes on; ``.wait()`` returns the Capture (and reaps the child). What the experiment prints
    goes to the child's stderr, shown if it fails."""
    checks.seconds("timeout_s", timeout_s, high=120)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"capture() arguments must be JSON data; {exc}") from None
    source, entry, filename = _experiment_source(fn)
    mode, why = availability()
    if mode is None:
        raise CaptureUnavailable(why)
    if isinstance(fn, str):
        source += "\n\nmain_experiment = main_experiment\n"
    full = source + "\n" + _CHILD_CODE
    args = {"experiment_kwargs": kwargs, "entry": entry, "use_namespace": mode == "namespace",
            "package_root": spawn.PACKAGE_ROOT}
    if mode == "namespace":  # helpers.netns's child: unshare, lo up, then run main(**args)
        child = spawn.Child(netns.CHILD_ENTRY, netns.child_request(full, "main", args, True, filename),
                            name="capture child", start_timeout_s=timeout_s, wait=False)
    else:
        child = spawn.Child("helpers.capture:host_child", {"source": full, "filename": filename, "kwargs": args},
                            name="capture child", start_timeout_s=timeout_s, wait=False)
    return RunningCapture(child, mode, timeout_s)


# --------------------------------------------------------------------------- recordings


def save_recording(cap: Capture, path: str | Path, where: str) -> None:
    """Store `cap` as a small JSON file, labelled with `where` (machine, kernel) and the time.

    Raises TypeError for a `cap` that is not a Capture, a `path` that is not a str or Path,
    or an empty `where`; ValueError for a capture that is itself a recording.
    """
    if not isinstance(cap, Capture):
        raise TypeError(f"save_recording() needs the Capture that capture() returned, got {type(cap).__name__}")
    if not isinstance(path, (str, Path)) or not str(path):
        raise TypeError(f"path must be a file name (str or pathlib.Path), got {path!r}")
    recordings.check_where(where)
    if not cap.live:
        raise ValueError("this capture is itself a recording; record a live one")
    recordings.write(path, cap.to_json(where))


def load_recording(path: str | Path) -> Capture:
    """A capture recorded earlier, marked ``mode="recorded"`` (``.live`` is False).

    Raises FileNotFoundError for a missing file, ValueError naming the file for one that is
    not a recording written by save_recording().
    """
    def build(label: str, data: dict[str, Any]) -> Capture:
        packets = [Packet(**{**p, "src": tuple(p["src"]), "dst": tuple(p["dst"])}) for p in data["packets"]]
        return Capture(packets, result=data.get("result"), marks=data.get("marks"), mode="recorded", source=label)

    return recordings.read(path, "save_recording()", build)  # also from an edition's folder (notebooks/zh-CN/)
