"""Hostile arguments to every public helper of the experiment modules: one table, one contract.

Each row calls one public function or class with a wrong type or an out-of-range value and
says which exception must come back and which words its message must hold (the parameter's
name and the bad value, as a rule). Every row also checks that the refusal was fast and
left nothing behind: no new thread, file descriptor or child process (the autouse
``no_leaks`` fixture in conftest.py adds course servers and sockets). Rows marked "was:"
record what the helper did before it validated that argument.

Socket arguments are made per row, just before the call, from the SOCKETS factories
(a closed socket, a UDP socket, a listener, a connected pair...), and closed after it.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (
    addresses,
    aio,
    behaviours,
    c10k,
    capture,
    capture_root,
    closing,
    completion,
    diagrams,
    hostile,
    httpbench,
    loadgen,
    lossy,
    nagle,
    services,
    sockaddr,
)
from helpers.core import features, spawn

ROOT = Path(__file__).resolve().parent.parent
NAN, INF = math.nan, math.inf
FAST_S = 5.0  # a refusal must come back within this, even on a busy 2-core machine
URING = completion.io_uring_status().usable
KAIO = completion.kernel_aio_status().usable


# --------------------------------------------------------------------------- hostile sockets


class Sock:
    """A socket argument, made at call time (so every row gets a fresh one) and closed after."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind} socket>"

    def make(self, keep: list[socket.socket]) -> socket.socket:
        if self.kind == "connected":
            client, server = closing.connected_pair()
            keep += [client, server]
            return client
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if self.kind == "udp" else socket.SOCK_STREAM)
        keep.append(s)
        if self.kind == "udp":
            s.bind(("127.0.0.1", 0))
        elif self.kind == "listener":
            s.bind(("127.0.0.1", 0))
            s.listen()
        elif self.kind == "closed":
            s.close()
        return s


CLOSED, UDP, LISTENER, FRESH, CONNECTED = (Sock(k) for k in ("closed", "udp", "listener", "fresh", "connected"))


def _materialise(value: Any, keep: list[socket.socket]) -> Any:
    return value.make(keep) if isinstance(value, Sock) else value


# --------------------------------------------------------------------------- small drivers
# Methods need an object first; each driver builds it in a ``with`` block, so whatever the
# bad call does, the object is stopped and closed afterwards (and the leak checks see it).


def covers(*targets: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a driver with the public classes or functions its rows exercise."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.covers = targets  # type: ignore[attr-defined]
        return fn
    return mark


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.end_headers()


@covers(diagrams.SequenceDiagram)
def diagram_message(src: str, dst: str, **kw: Any) -> None:
    diagrams.SequenceDiagram("A", "B").message(src, dst, "x", **kw)


@covers(diagrams.SequenceDiagram)
def diagram_note(over: str) -> None:
    diagrams.SequenceDiagram("A", "B").note(over, "x")


@covers(capture.Packet)
def packet_has(flag: Any) -> bool:
    p = capture.Packet(0.0, 1, "->", ("127.0.0.1", 1), ("127.0.0.1", 2), "SYN", 0, None, 0, 0, 0, 0)
    return p.has(flag)


@covers(capture.load_recording, completion.load_recording)
def recording_text(load: Callable[[Path], Any], text: str) -> None:
    """`load` (a helper's load_recording) on a file holding `text`."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "recording.json"
        path.write_text(text)
        load(path)


@covers(closing.ChildProcess)
def child_wait(timeout_s: Any) -> None:
    with closing.ChildProcess("pass") as child:
        child.wait(timeout_s)


@covers(aio.AsyncioServer)
def asyncio_stop(timeout_s: Any) -> None:
    with aio.AsyncioServer("echo") as srv:
        srv.stop(timeout_s)


@covers(c10k.EpollReactor)
def c10k_stop(timeout_s: Any) -> None:
    with c10k.EpollReactor("echo") as srv:
        srv.stop(timeout_s)


@covers(c10k.ModelProcess)
def model_process(method: str, *args: Any) -> None:
    with c10k.ModelProcess("epoll") as srv:
        getattr(srv, method)(*args)


@covers(httpbench.HTTPServerThread)
def http_stop(timeout_s: Any) -> None:
    with httpbench.serve_http(Hello) as srv:
        srv.stop(timeout_s)


@covers(lossy.LossyRelay)
def lossy_stop(timeout_s: Any) -> None:
    with lossy.LossyRelay(("127.0.0.1", 9)) as relay:
        relay.stop(timeout_s)


@covers(loadgen.LoadGenerator)
def loadgen_run(address: Any = ("127.0.0.1", 9), *, workers: int = 1, **kw: Any) -> None:
    kw.setdefault("connections", 1)
    with loadgen.LoadGenerator(workers=workers) as lg:
        lg.run(address, **kw)


@covers(loadgen.LoadGenerator)
def loadgen_hold(addresses: Any = (("127.0.0.1", 9),), *, workers: int = 1, **kw: Any) -> None:
    kw.setdefault("connections", 1)
    with loadgen.LoadGenerator(workers=workers) as lg:
        lg.hold(addresses, **kw)


@covers(loadgen.LoadGenerator)
def loadgen_closed_run() -> None:
    lg = loadgen.LoadGenerator(workers=1)
    lg.close()
    lg.run(("127.0.0.1", 9), connections=1)


@covers(loadgen.LoadGenerator)
def loadgen_release(timeout_s: Any) -> None:
    with loadgen.LoadGenerator(workers=1) as lg:
        lg.release(timeout_s)


@covers(completion.Ring)
def ring_call(method: str, *args: Any, **kw: Any) -> Any:
    with completion.Ring(4) as ring:
        return getattr(ring, method)(*[a(ring) if callable(a) else a for a in args], **kw)


@covers(completion.Ring)
def ring_closed_reap() -> None:
    ring = completion.Ring(2)
    ring.close()
    ring.reap()


def nop(tag: int) -> Callable[[completion.Ring], tuple[Any, ...]]:
    return lambda ring: ring.nop(tag)


@covers(completion.PosixAioRead)
def aio_read_result(timeout_s: Any) -> None:
    a, b = socket.socketpair()
    try:
        with completion.PosixAioRead(b.fileno(), 8) as request:
            try:
                request.result(timeout_s)
            finally:
                a.shutdown(socket.SHUT_WR)  # EOF: the read in flight ends with b''
                request.result(5)
    finally:
        a.close()
        b.close()


@covers(completion.KernelAio)
def kaio_call(method: str, *args: Any, **kw: Any) -> Any:
    with completion.KernelAio(2) as ctx:
        return getattr(ctx, method)(*args, **kw)


@covers(completion.KernelAio)
def kaio_closed_getevents() -> None:
    ctx = completion.KernelAio(1)
    ctx.close()
    ctx.getevents(0, 0)


BUF = ctypes.create_string_buffer(8)
LOOP = ("127.0.0.1", 9)
NO_PID = 2**31 - 1  # above any pid_max: no such process
uring = pytest.mark.skipif(not URING, reason="io_uring is not available to this process")
kaio = pytest.mark.skipif(not KAIO, reason="kernel AIO is not available to this process")


def row(fn: Callable[..., Any], *args: Any, exc: type[BaseException] = ValueError, words: tuple[str, ...] = (),
        marks: Any = (), **kwargs: Any) -> Any:
    shown = ", ".join([repr(a)[:30] for a in args] + [f"{k}={v!r:.30}" for k, v in kwargs.items()])
    name = getattr(fn, "__qualname__", repr(fn))
    return pytest.param(fn, args, kwargs, exc, words, id=f"{fn.__module__.split('.')[-1]}.{name}({shown})",
                        marks=marks)


# --------------------------------------------------------------------------- the table

TABLE = [
    # addresses ------------------------------------------------------------------------
    row(addresses.parse_port_list, None, exc=TypeError, words=("parse_port_list", "NoneType")),  # was: AttributeError
    row(addresses.parse_port_list, b"8080", exc=TypeError, words=("bytes",)),  # was: TypeError from bytes.split
    row(addresses.parse_port_list, "70000", words=("'70000'", "65535")),
    row(addresses.parse_port_list, "9010-9000", words=("'9010-9000'", "low <= high")),
    row(addresses.parse_fib_trie, None, exc=TypeError, words=("parse_fib_trie", "None")),  # was: AttributeError
    row(addresses.parse_if_inet6, b"fe80", exc=TypeError, words=("parse_if_inet6", "bytes")),
    row(addresses.parse_fib_trie, "|-- 999.1.1.1\n   /32 host LOCAL\n", words=("'999.1.1.1'", "fib_trie")),
    row(addresses.special_ranges, True, exc=TypeError, words=("address", "True")),  # was: 0.0.0.1
    row(addresses.special_ranges, 2130706433, exc=TypeError, words=("address", "int")),  # was: 127.0.0.1
    row(addresses.special_ranges, b"\x7f\x00\x00\x01", exc=TypeError, words=("address", "bytes")),  # was: packed
    row(addresses.special_ranges, None, exc=TypeError, words=("address", "None")),
    row(addresses.special_ranges, "localhost", words=("not an IP address", "'localhost'")),
    row(addresses.addresses_in_prefix, "24", exc=TypeError, words=("prefix_len", "'24'")),  # was: "got /24"
    row(addresses.addresses_in_prefix, True, exc=TypeError, words=("prefix_len", "True")),
    row(addresses.addresses_in_prefix, 33, words=("0-32", "/33")),
    row(addresses.addresses_in_prefix, -1, 6, words=("0-128", "/-1")),
    row(addresses.addresses_in_prefix, 24, 4.0, words=("version", "4.0")),  # was: accepted as 4
    row(addresses.addresses_in_prefix, 24, True, words=("version", "True")),
    row(addresses.addresses_in_prefix, 24, "4", words=("version", "'4'")),
    row(addresses.scope, "localhost", words=("not an IP address", "'localhost'")),
    row(addresses.scope, 2130706433, exc=TypeError, words=("address", "int")),
    row(addresses.sample_block, "127.0.0.0/8", 1, words=("count", "2-4096", "1")),
    row(addresses.sample_block, "127.0.0.0/8", True, exc=TypeError, words=("count", "True")),
    row(addresses.sample_block, "127.0.0.0/33", 8, words=("not a network", "'127.0.0.0/33'")),
    row(addresses.run_or_replay, None, "r.json", "exchange", exc=TypeError, words=("fn", "None")),
    row(addresses.run_or_replay, int, "", "exchange", exc=TypeError, words=("recording", "''")),
    row(addresses.run_or_replay, int, "r.json", "", exc=TypeError, words=("part", "''")),
    row(addresses.save_recording, {}, "/nonexistent/r.json", "here", exc=TypeError, words=("runs", "{}")),
    row(addresses.save_recording, {"exchange": 5}, "/nonexistent/r.json", "here", exc=TypeError,
        words=("Ipv6Run", "int")),
    row(addresses.save_recording, {"exchange": addresses.Ipv6Run(1, False, "RECORDED earlier")},
        "/nonexistent/r.json", "here", words=("'exchange'", "itself a recording")),
    row(addresses.save_recording, {"exchange": addresses.Ipv6Run(1, True, "live")}, "/nonexistent/r.json", "",
        exc=TypeError, words=("where", "''")),
    row(addresses.sample_block, 2130706432, 8, exc=TypeError, words=("network", "2130706432")),
    row(addresses.interface_netmask, None, exc=TypeError, words=("interface name", "None")),
    row(addresses.interface_netmask, "", words=("interface name", "''", "IFNAMSIZ")),
    row(addresses.interface_netmask, "x" * 16, words=("interface name", "'xxxx", "IFNAMSIZ")),
    row(addresses.interface_netmask, "nosuchif0", exc=OSError, words=("No such device",)),
    row(sockaddr.raw_getsockname, None, exc=TypeError, words=("raw_getsockname()", "socket", "NoneType")),
    row(sockaddr.raw_getsockname, CLOSED, words=("raw_getsockname()", "closed")),
    row(sockaddr.raw_bind, FRESH, "127.0.0.1", exc=TypeError, words=("raw_bind()", "bytes", "str")),
    row(sockaddr.raw_bind, FRESH, bytes(129), words=("128 bytes", "129")),
    row(sockaddr.raw_bind, FRESH, bytes(8), exc=OSError, words=("Invalid argument",)),  # the kernel's EINVAL
    row(sockaddr.raw_bind, CLOSED, bytes(16), words=("raw_bind()", "closed")),
    row(addresses.proc_net_row, None, exc=TypeError, words=("proc_net_row", "NoneType")),  # was: AttributeError
    row(addresses.proc_net_row, CLOSED, exc=LookupError, words=("closed",)),  # was: OSError EBADF from fstat(-1)
    row(addresses.proc_net_row, UDP, exc=LookupError, words=("no row", "TCP socket")),
    row(addresses.loopback_host, "host", "0.0.0.0", words=("host", "'0.0.0.0'", "loopback")),
    row(addresses.loopback_host, "host", "8.8.8.8", words=("host", "'8.8.8.8'", "loopback")),
    row(addresses.loopback_host, "host", "localhost", words=("host", "IP address", "'localhost'")),
    row(addresses.loopback_host, "host", 2130706433, exc=TypeError, words=("host", "int")),
    row(addresses.loopback_address, "address", ("127.0.0.1", 70000), words=("address port", "70000", "1-65535")),
    row(addresses.loopback_address, "address", ("127.0.0.1", 0), words=("address port", "1-65535")),
    row(addresses.loopback_address, "address", ("127.0.0.1", True), exc=TypeError, words=("address port", "True")),
    row(addresses.loopback_address, "address", ("127.0.0.1", "80"), exc=TypeError, words=("address port", "'80'")),
    row(addresses.loopback_address, "address", "127.0.0.1:80", exc=TypeError, words=("(host, port)", "'127.0.0.1:80'")),
    row(addresses.loopback_address, "address", ("10.0.0.1", 80), words=("address host", "loopback", "'10.0.0.1'")),
    # behaviours: a UDP socket made echo() wait forever in recv() -------------------------
    row(behaviours.echo, None, exc=TypeError, words=("echo()", "NoneType")),  # was: AttributeError
    row(behaviours.echo, UDP, words=("echo()", "SOCK_DGRAM")),  # was: hang
    row(behaviours.discard, CLOSED, words=("discard()", "closed")),  # was: OSError EBADF
    row(behaviours.pong, LISTENER, words=("pong()", "listening", "accept()")),  # was: OSError ENOTCONN
    row(behaviours.check_connection, "sock", "echo", exc=TypeError, words=("echo()", "str")),
    # features -------------------------------------------------------------------------------
    row(features.require_linux, None, exc=TypeError, words=("require_linux", "None")),  # was: silently accepted
    row(features.require_linux, "", exc=TypeError, words=("require_linux", "''")),
    row(features.switched_off, "nets", words=("'nets'", "the probes are", "netns")),
    row(features.switched_off, None, exc=TypeError, words=("probe's name", "None")),
    row(features.pretend_missing, "nets", words=("['nets']", "no probe", "netns")),
    row(features.pretend_missing, 5, exc=TypeError, words=("probe names", "[5]")),
    row(features.find_program, "ss; rm -rf", words=("program name", "'ss; rm -rf'")),
    row(features.why_missing, None, exc=TypeError, words=("program name", "None")),
    row(features.cgroup_dirs, 5, exc=TypeError, words=("controller", "5")),
    # diagrams: bad steps used to fail only when the diagram was drawn ---------------------
    row(diagrams.SequenceDiagram, "my client", words=("identifiers", "'my client'")),
    row(diagrams.SequenceDiagram, 1, words=("identifiers", "got 1")),
    row(diagrams.SequenceDiagram, "A", "A", words=("distinct", "'A'")),
    row(diagrams.SequenceDiagram, "A", title=None, exc=TypeError, words=("title", "None")),
    row(diagrams.SequenceDiagram, "A", title=5, exc=TypeError, words=("title", "5")),  # was: TypeError at render
    row(diagram_message, "A", "A", words=("'A' to itself", "note()")),  # was: IndexError in text()
    row(diagram_message, "A", "C", words=("unknown participant 'C'",)),
    row(diagram_message, "A", "B", time_s=NAN, words=("time_s", "nan")),  # was: drawn as "t=nan ms"
    row(diagram_message, "A", "B", time_s=INF, words=("time_s", "inf")),
    row(diagram_message, "A", "B", time_s=-1, words=("time_s", "-1")),
    row(diagram_message, "A", "B", time_s="1", words=("time_s", "'1'")),  # was: ValueError at render
    row(diagram_message, "A", "B", reply="yes", exc=TypeError, words=("reply", "'yes'")),
    row(diagram_note, "C", words=("unknown participant 'C'",)),
    # capture (arguments are checked before availability, so these rows need no namespace) -
    row(capture.watch, 80, exc=RuntimeError, words=("only inside an experiment",)),
    row(capture.mark, "x", exc=RuntimeError, words=("only inside an experiment",)),
    row(capture.capture, None, exc=TypeError, words=("capture()", "NoneType")),
    row(capture.capture, lambda: None, exc=TypeError, words=("def",)),
    row(capture.capture, "def main_experiment(): pass", timeout_s=0, words=("timeout_s", "got 0")),
    row(capture.capture, "def main_experiment(): pass", timeout_s=NAN, words=("timeout_s", "nan")),
    row(capture.capture, "def main_experiment(): pass", timeout_s=True, exc=TypeError, words=("timeout_s", "True")),
    row(capture.capture, "def main_experiment(): pass", timeout_s=10**6, words=("timeout_s", "1000000")),
    row(capture.start, "def main_experiment(): pass", timeout_s="5", exc=TypeError, words=("timeout_s", "'5'")),
    row(capture.capture, "def main_experiment(): pass", x=object(), exc=TypeError, words=("JSON",)),
    row(capture.Capture().connection, 1, words=("no connection 1",)),
    row(capture.Capture().ladder, gap_note_ms=NAN, words=("gap_note_ms", "nan")),
    row(capture.Capture().ladder, gap_note_ms="5", words=("gap_note_ms", "'5'")),
    row(capture.Capture().ladder, None, exc=TypeError, words=("title", "None")),
    row(capture.save_recording, None, "/nonexistent/r.json", "here", exc=TypeError, words=("Capture", "NoneType")),
    row(capture.save_recording, capture.Capture(), None, "here", exc=TypeError, words=("path", "None")),
    row(capture.save_recording, capture.Capture(), "/nonexistent/r.json", "", exc=TypeError, words=("where", "''")),
    row(capture.load_recording, None, exc=TypeError, words=("path", "None")),
    row(recording_text, capture.load_recording, "{}", words=("not a recording", "KeyError")),  # was: KeyError 'packets'
    row(recording_text, capture.load_recording, "not json", words=("not a recording", "JSONDecodeError")),
    row(recording_text, capture.load_recording, '{"recorded": "x", "packets": [{"nope": 1}]}',
        words=("not a recording",)),
    row(packet_has, None, exc=TypeError, words=("flag", "None")),  # was: AttributeError
    # capture_root: all checked in __init__, before any packet socket --------------------------
    row(capture_root.tcp_port_filter, 0, words=("port", "1-65535", "got 0")),
    row(capture_root.tcp_port_filter, 70000, words=("port", "70000")),
    row(capture_root.tcp_port_filter, True, exc=TypeError, words=("port", "True")),
    row(capture_root.tcp_port_filter, "80", exc=TypeError, words=("port", "'80'")),
    row(capture_root.LoopbackCapture, 0, words=("port", "got 0")),
    row(capture_root.LoopbackCapture, 80, interface="", words=("interface", "''")),  # was: every interface
    row(capture_root.LoopbackCapture, 80, interface=None, words=("interface", "None")),
    row(capture_root.LoopbackCapture, 80, interface="x" * 16, words=("interface", "1-15")),
    row(capture_root.LoopbackCapture, 80, interface="lo/0", words=("interface", "'lo/0'")),
    row(capture_root.LoopbackCapture, 80, settle_s=NAN, words=("settle_s", "nan")),
    row(capture_root.LoopbackCapture, 80, settle_s=-1, words=("settle_s", "-1")),
    row(capture_root.LoopbackCapture, 80, settle_s=10**6, words=("settle_s", "1000000")),  # was: close() hangs
    row(capture_root.LoopbackCapture, 80, rcvbuf_bytes=-1, words=("rcvbuf_bytes", "-1")),  # was: kernel max
    row(capture_root.LoopbackCapture, 80, rcvbuf_bytes=10**20, words=("rcvbuf_bytes",)),  # was: OverflowError
    row(capture_root.LoopbackCapture, 80, rcvbuf_bytes="4M", words=("rcvbuf_bytes", "'4M'")),
    # closing ------------------------------------------------------------------------------------
    row(closing.connected_pair, bufsize=10, words=("bufsize", "got 10")),
    row(closing.connected_pair, bufsize=10**12, words=("bufsize", "1000000000000")),  # was: OverflowError
    row(closing.connected_pair, bufsize=True, words=("bufsize", "True")),
    row(closing.connected_pair, host="0.0.0.0", words=("host", "loopback", "'0.0.0.0'")),  # was: listened on all
    row(closing.connected_pair, host=None, exc=TypeError, words=("host", "None")),  # was: TypeError "not iterable"
    row(closing.connected_pair, host="localhost", words=("host", "IP address", "'localhost'")),
    row(closing.fill_send_queue, None, exc=TypeError, words=("fill_send_queue()", "NoneType")),
    row(closing.fill_send_queue, UDP, words=("fill_send_queue()", "SOCK_DGRAM")),  # was: OSError EMSGSIZE
    row(closing.fill_send_queue, CLOSED, words=("fill_send_queue()", "closed")),
    row(closing.fill_send_queue, LISTENER, words=("listening",)),  # was: OSError, and the listener left blocking
    row(closing.fill_send_queue, CONNECTED, limit="x", words=("limit", "'x'")),  # was: TypeError from '<'
    row(closing.fill_send_queue, CONNECTED, limit=1.5, words=("limit", "1.5")),  # was: TypeError in slicing
    row(closing.fill_send_queue, CONNECTED, limit=0, words=("limit", "got 0")),
    row(closing.drain, CONNECTED, timeout_s=0, words=("timeout_s", "got 0")),  # was: BlockingIOError
    row(closing.drain, CONNECTED, timeout_s=NAN, words=("timeout_s", "nan")),
    row(closing.drain, CONNECTED, timeout_s=-1, words=("timeout_s", "-1")),
    row(closing.drain, CONNECTED, timeout_s=10**6, words=("timeout_s", "1000000")),
    row(closing.drain, CONNECTED, timeout_s="1", exc=TypeError, words=("timeout_s", "'1'")),
    row(closing.drain, UDP, words=("drain()", "SOCK_DGRAM")),  # was: wait for timeout_s, then TimeoutError
    row(closing.queued, None, exc=TypeError, words=("queued()", "NoneType")),
    row(closing.queued, CLOSED, words=("queued()", "closed")),  # was: OSError EBADF from ioctl
    row(closing.queued, LISTENER, words=("queued()", "listening")),
    row(closing.wait_for_state, CONNECTED, "CLOSE_WAIT", timeout_s=NAN, words=("timeout_s", "nan")),  # was: hang
    row(closing.wait_for_state, CONNECTED, "CLOSE_WAIT", timeout_s=-1, words=("timeout_s", "-1")),
    row(closing.wait_for_state, CONNECTED, [], words=("states is empty",)),  # was: waited for nothing
    row(closing.wait_for_state, CONNECTED, None, exc=TypeError, words=("states", "None")),
    row(closing.wait_for_state, CONNECTED, "BOGUS", words=("unknown TCP state", "'BOGUS'")),
    row(closing.wait_for_state, UDP, "CLOSED", exc=TypeError, words=("TCP socket",)),
    row(closing.wait_for_inq, CONNECTED, "5", words=("nbytes", "'5'")),  # was: TypeError from '<'
    row(closing.wait_for_inq, CONNECTED, -1, words=("nbytes", "-1")),
    row(closing.wait_for_inq, CONNECTED, 1, timeout_s=NAN, words=("timeout_s", "nan")),  # was: hang
    row(closing.wait_for_inq, UDP, 1, words=("wait_for_inq()", "SOCK_DGRAM")),
    row(closing.wait_for_acked, CONNECTED, timeout_s=NAN, words=("timeout_s", "nan")),
    row(closing.wait_for_acked, UDP, words=("wait_for_acked()", "SOCK_DGRAM")),
    row(closing.wait_for_acked, None, exc=TypeError, words=("wait_for_acked()", "NoneType")),
    # hostile ---------------------------------------------------------------------------------
    row(hostile.cut, "text", exc=TypeError, words=("payload", "str")),
    row(hostile.cut, bytes(10), largest=0, words=("largest", "0")),
    row(hostile.cut, bytes(10), pause_s=NAN, words=("pause_s", "nan")),
    row(hostile.cut, bytes(10), sizes=[3, 0], words=("sizes", "0")),
    row(hostile.cut, bytes(10), sizes=5, exc=TypeError, words=("sizes", "5")),
    row(hostile.announce, -1, words=("claimed", "-1")),
    row(hostile.announce, 2**32, words=("claimed", "4294967296")),
    row(hostile.announce, 10, "body", exc=TypeError, words=("body", "str")),
    row(hostile.announce, 10, kind=True, exc=TypeError, words=("kind", "True")),
    row(hostile.endless_line, 0, words=("nbytes", "0")),
    row(hostile.endless_line, 10, fill=b"\n", words=("fill", "b'\\n'")),
    row(hostile.trickle, 10, 0, threading.Event(), words=("every_s", "0")),
    row(hostile.trickle, 10, 0.01, None, exc=TypeError, words=("stop", "NoneType")),
    row(hostile.peak_allocated, None, exc=TypeError, words=("peak_allocated()", "None")),
    row(hostile.peak_allocated, print, expect=ValueError, exc=TypeError, words=("expect", "ValueError")),
    row(closing.lookup, None, LOOP, exc=TypeError, words=("local", "None")),  # was: whole table, remote only
    row(closing.lookup, LOOP, ("8.8.8.8", 53), words=("remote host", "loopback", "'8.8.8.8'")),
    row(closing.lookup, ("127.0.0.1", 70000), LOOP, words=("local port", "70000")),
    row(closing.wait_for_row, LOOP, LOOP, "TIME_WAIT", timeout_s=NAN, words=("timeout_s", "nan")),  # was: hang
    row(closing.wait_for_row, LOOP, LOOP, [], words=("states is empty",)),
    row(closing.both_ends, FRESH, words=("both_ends()", "no peer")),  # was: OSError ENOTCONN
    row(closing.both_ends, CLOSED, words=("both_ends()", "closed")),
    row(closing.signal_name, "x", exc=TypeError, words=("returncode", "'x'")),  # was: TypeError from '<'
    row(closing.signal_name, True, exc=TypeError, words=("returncode", "True")),  # was: "exit True"
    row(closing.ChildProcess, None, words=("python -c", "None")),
    row(closing.ChildProcess, "   ", words=("python -c", "'   '")),
    row(child_wait, -1, words=("timeout_s", "-1")),  # was: the child was killed, then TimeoutError
    row(child_wait, NAN, words=("timeout_s", "nan")),
    # aio -------------------------------------------------------------------------------------------
    row(aio.AsyncioServer, "ftp", words=("service", "'ftp'")),
    row(aio.AsyncioServer, protocol="EchoProtocol", exc=TypeError, words=("protocol", "factory", "'EchoProtocol'")),
    row(aio.AsyncioServer, backlog=-1, words=("backlog", "-1")),
    row(aio.AsyncioServer, backlog=10**10, words=("backlog", "10000000000")),  # was: OverflowError from listen()
    row(aio.AsyncioServer, backlog=True, words=("backlog", "True")),
    row(aio.AsyncioServer, host="0.0.0.0", words=("host", "loopback")),  # was: listened on every interface
    row(aio.AsyncioServer, host="localhost", words=("host must be an IP address", "'localhost'")),
    row(aio.AsyncioServer, host=2130706433, exc=TypeError, words=("host", "int")),
    row(aio.AsyncioServer, port=70000, words=("port", "70000")),
    row(aio.AsyncioServer, port="80", exc=TypeError, words=("port", "'80'")),
    row(aio.AsyncioServer, start_timeout_s="5", exc=TypeError, words=("start_timeout_s", "'5'")),  # was: leaks
    row(aio.AsyncioServer, start_timeout_s=INF, words=("start_timeout_s", "inf")),  # was: OverflowError, leak
    row(aio.AsyncioServer, start_timeout_s=NAN, words=("start_timeout_s", "nan")),  # was: started, then "timeout"
    row(aio.AsyncioServer, start_timeout_s=0, words=("start_timeout_s", "got 0")),
    row(asyncio_stop, "x", exc=TypeError, words=("timeout_s", "'x'")),  # was: socket and registry entry leaked
    row(asyncio_stop, -1, words=("timeout_s", "-1")),
    row(aio.process_status, -1, words=("pid", "-1")),
    row(aio.process_status, "../etc", words=("pid", "'../etc'")),  # was: read any path ending in /status
    row(aio.process_status, True, words=("pid", "True")),
    row(aio.process_status, NO_PID, exc=ProcessLookupError, words=("no process", str(NO_PID))),
    row(aio.thread_syscalls, "123", exc=TypeError, words=("tids", "'123'")),  # was: threads 1, 2 and 3
    row(aio.thread_syscalls, [None], exc=TypeError, words=("tids", "None")),  # was: silently skipped
    row(aio.thread_syscalls, 5, exc=TypeError, words=("tids", "5")),
    row(aio.blocked_in, None, exc=TypeError, words=("blocked_in()", "None")),
    row(aio.blocked_in, [threading.get_native_id()], timeout_s=NAN, words=("timeout_s", "nan")),  # was: hang
    row(aio.blocked_in, [threading.get_native_id()], settle_s=-1, words=("settle_s", "-1")),
    row(aio.blocked_in, [threading.get_native_id()], settle_s=10**6, words=("settle_s", "1000000")),  # was: hang
    row(aio.blocked_in, [threading.get_native_id()], expect="epoll_wait", exc=TypeError,
        words=("expect", "'epoll_wait'")),  # was: TypeError from set <= str
    # services and c10k --------------------------------------------------------------------------------------------
    row(services.make_service, "ftp", words=("service", "'ftp'")),
    row(services.make_service, None, words=("service", "None")),
    row(services.serve_blocking, UDP, "echo", words=("serve_blocking()", "SOCK_DGRAM")),  # was: hang
    row(services.serve_blocking, None, "echo", exc=TypeError, words=("serve_blocking()", "NoneType")),
    row(services.serve_blocking, CONNECTED, "ftp", words=("service", "'ftp'")),
    row(c10k.ThreadPerConnection, "ftp", words=("service", "'ftp'")),
    row(c10k.ThreadPerConnection, host="0.0.0.0", words=("host", "loopback", "'0.0.0.0'")),  # was: every iface
    row(c10k.PollReactor, host=None, exc=TypeError, words=("host", "None")),
    row(c10k.EpollReactor, port=70000, words=("port", "70000")),  # was: OverflowError from bind()
    row(c10k.EpollReactor, port="80", exc=TypeError, words=("port", "'80'")),
    row(c10k.ThreadPool, workers=0, words=("workers", "1-256", "got 0")),
    row(c10k.child_states, 0, words=("pid", "0")),
    row(c10k.child_states, "1", exc=TypeError, words=("pid", "'1'")),
    row(c10k.ThreadPool, workers=True, exc=TypeError, words=("workers", "True")),
    row(c10k.ThreadPool, workers=10**9, words=("workers", "1000000000")),
    row(c10k.MainSubReactors, subs=0, words=("subs", "1-64", "got 0")),
    row(aio.AsyncioServer, host="8.8.8.8", words=("host", "loopback")),
    row(c10k_stop, "x", exc=TypeError, words=("timeout_s", "'x'")),  # was: listener leaked, server left registered
    row(c10k_stop, NAN, words=("timeout_s", "nan")),
    row(c10k.ModelProcess, "reuseport", words=("model", "ReusePortProcesses")),
    row(c10k.ModelProcess, "epoll", processes=0, words=("processes", "1-32", "got 0")),
    row(c10k.ModelProcess, "epoll", processes=True, exc=TypeError, words=("processes", "True")),
    row(c10k.ModelProcess, "epoll", start_timeout_s=NAN, words=("start_timeout_s", "nan")),  # was: spawned first
    row(c10k.ModelProcess, "epoll", start_timeout_s=-1, words=("start_timeout_s", "-1")),  # was: spawned, killed
    row(c10k.ModelProcess, "epoll", bogus=1, exc=TypeError, words=("'epoll'", "no options", "bogus=1")),
    row(c10k.ModelProcess, "pool", workers="x", exc=TypeError, words=("workers", "'x'")),  # was: child died
    row(c10k.ForkPerConnection, processes=33, words=("processes", "33")),
    row(c10k.ReusePortProcesses, processes=0, words=("processes", "got 0")),
    row(model_process, "stop", "x", exc=TypeError, words=("timeout_s", "'x'")),  # was: children left unreaped
    row(model_process, "wait_serving", 1, NAN, words=("timeout_s", "nan")),  # was: hang
    row(model_process, "wait_serving", "1", exc=TypeError, words=("n", "'1'")),
    row(c10k.start_model, "nope", words=("model", "'nope'")),
    row(c10k.start_model, "thread", workers=4, exc=TypeError, words=("'thread'", "no options", "workers=4")),
    row(c10k.start_model, "pool", workers=0, words=("workers", "got 0")),
    row(c10k.start_model, "epoll", "ftp", words=("service", "'ftp'")),
    row(c10k.start_model, "reuseport", subs=2, exc=TypeError, words=("'reuseport'", "subs=2")),
    row(c10k.start_models, ["epoll"], exc=TypeError, words=("specs", "['epoll']")),  # was: AttributeError
    row(c10k.start_models, {}, exc=TypeError, words=("specs", "{}")),  # was: {} silently
    row(c10k.start_models, {"epoll": None}, exc=TypeError, words=("'epoll'", "None")),
    row(c10k.start_models, {"nope": {}}, words=("model", "'nope'")),
    row(c10k.start_models, {"pool": {"workers": 0}}, words=("workers", "got 0")),  # was: checked in a thread
    row(c10k.raise_nofile_limit, "x", exc=TypeError, words=("want", "'x'")),  # was: TypeError from min()
    row(c10k.raise_nofile_limit, -1, words=("want", "-1")),  # was: silently nothing
    row(c10k.raise_nofile_limit, True, exc=TypeError, words=("want", "True")),
    row(c10k.plan_c10k, 0, words=("connections", "1-200000", "got 0")),
    row(c10k.plan_c10k, 10**9, words=("connections", "1000000000")),
    row(c10k.plan_c10k, "10", exc=TypeError, words=("connections", "'10'")),
    row(c10k.plan_c10k, 100, fd_hard_limit="x", exc=TypeError, words=("fd_hard_limit", "'x'")),  # was: from '-'
    row(c10k.plan_c10k, 100, fd_hard_limit=10, words=("fd_hard_limit", "got 10")),  # was: a plan of 0
    row(c10k.plan_c10k, 100, min_clients=0, words=("min_clients", "got 0")),
    row(c10k.plan_c10k, 100, min_clients=10**9, words=("min_clients", "1000000000")),
    row(c10k.process_tree, "x", exc=TypeError, words=("pid", "'x'")),  # was: ['x']
    row(c10k.process_tree, -1, words=("pid", "-1")),
    row(c10k.pss_kb, None, exc=TypeError, words=("pid", "None")),
    row(c10k.cpu_seconds, True, exc=TypeError, words=("pid", "True")),
    row(c10k.rss_kb, "x", exc=TypeError, words=("pid", "'x'")),
    row(c10k.ServiceProtocol, "ftp", words=("service", "'ftp'")),
    # loadgen -------------------------------------------------------------------------------------------
    row(loadgen.percentile, [1, 2], "50", exc=TypeError, words=("q", "'50'")),  # was: TypeError from '<='
    row(loadgen.percentile, [1, 2], True, exc=TypeError, words=("q", "True")),
    row(loadgen.percentile, [1, 2], NAN, words=("q", "nan")),
    row(loadgen.percentile, [1, 2], 101, words=("q", "101")),
    row(loadgen.percentile, None, 50, exc=TypeError, words=("values", "None")),  # was: nan
    row(loadgen.percentile, "abc", 50, exc=TypeError, words=("values", "str")),  # was: 'b'
    row(loadgen.percentile, [1, None], 50, exc=TypeError, words=("values", "None")),
    row(loadgen.percentile, [3.0, NAN, 1.0], 50, words=("NaN",)),  # was: an answer that depends on the order
    row(loadgen.LoadGenerator, 0, words=("workers", "1-32", "got 0")),
    row(loadgen.LoadGenerator, True, exc=TypeError, words=("workers", "True")),
    row(loadgen.LoadGenerator, "2", exc=TypeError, words=("workers", "'2'")),
    row(loadgen_run, connections=0, words=("connections", "got 0")),
    row(loadgen_run, duration_s=True, exc=TypeError, words=("duration_s", "True")),  # was: ran for 1 s
    row(loadgen_run, rate=True, words=("rate", "True")),  # was: 1 request/s
    row(loadgen_run, drain_s=NAN, words=("drain_s", "nan")),  # was: the worker failed mid-run
    row(loadgen_run, drain_s=10**6, words=("drain_s", "1000000")),  # was: parent waited ~11 days
    row(loadgen_run, drain_s="3", exc=TypeError, words=("drain_s", "'3'")),  # was: sockets left open
    row(loadgen_run, on_ready=5, exc=TypeError, words=("on_ready", "5")),  # was: workers left waiting for go
    row(loadgen_run, ("10.0.0.1", 80), words=("host", "loopback")),  # was: load sent outward
    row(loadgen_run, None, exc=TypeError, words=("None",)),  # was: TypeError from None[:2]
    row(loadgen_run, service="ftp", words=("service", "'ftp'")),
    row(loadgen_run, payload=0, words=("payload", "got 0")),
    row(loadgen_run, payload=True, exc=TypeError, words=("payload", "True")),
    row(loadgen_run, duration_s=NAN, words=("duration_s", "nan")),
    row(loadgen_run, reset="no", exc=TypeError, words=("reset", "'no'")),
    row(loadgen_run, ("127.0.0.1", 70000), words=("port", "70000")),
    row(loadgen_run, ("localhost", 80), words=("host", "'localhost'")),
    row(loadgen_run, ("127.0.0.1", True), exc=TypeError, words=("port", "True")),
    row(loadgen_run, connections=40_000, workers=2, words=("connections=40000", "use at most")),  # was: half-way
    row(loadgen_hold, ("127.0.0.1", 8080), exc=TypeError, words=("list of (host, port) pairs",)),
    row(loadgen_hold, [], words=("at least one server address",)),
    row(loadgen_hold, sources="127.0.0.2", exc=TypeError, words=("sources", "'127.0.0.2'")),  # was: one per char
    row(loadgen_hold, sources=["10.0.0.1"], words=("sources", "'10.0.0.1'")),
    row(loadgen_hold, progress=5, exc=TypeError, words=("progress", "5")),
    row(loadgen_hold, timeout_s=NAN, words=("timeout_s", "nan")),
    row(loadgen_hold, connections=1_000_000, words=("connections=1000000", "use at most")),  # was: half-way
    row(loadgen_closed_run, exc=RuntimeError, words=("closed",)),  # was: ZeroDivisionError
    row(loadgen_release, NAN, words=("timeout_s", "nan")),
    # lossy ------------------------------------------------------------------------------------------------
    row(lossy.validate_probability, "loss", 1.5, words=("loss", "1.5")),
    row(lossy.validate_probability, "loss", NAN, words=("loss", "nan")),
    row(lossy.validate_probability, "loss", True, words=("loss", "True")),
    row(lossy.validate_probability, "loss", "0.1", words=("loss", "'0.1'")),
    row(lossy.FateDrawer, seed="x", exc=TypeError, words=("seed", "'x'")),
    row(lossy.FateDrawer, seed=True, exc=TypeError, words=("seed", "True")),
    row(lossy.FateDrawer, loss=-0.1, words=("loss", "-0.1")),
    row(lossy.LossyRelay, None, exc=TypeError, words=("server_address", "None")),
    row(lossy.LossyRelay, ["127.0.0.1", 9], exc=TypeError, words=("server_address", "['127.0.0.1', 9]")),
    row(lossy.LossyRelay, ("127.0.0.1", True), exc=TypeError, words=("server_address port", "True")),  # was: 1
    row(lossy.LossyRelay, ("127.0.0.1", 70000), words=("server_address port", "70000")),
    row(lossy.LossyRelay, ("8.8.8.8", 53), words=("server_address host", "loopback")),  # was: relayed outward
    row(lossy.LossyRelay, LOOP, host="0.0.0.0", words=("host", "loopback")),  # was: listened on every interface
    row(lossy.LossyRelay, ("::1", 9), words=("same IP version",)),
    row(lossy.LossyRelay, (2130706433, 9), exc=TypeError, words=("server_address host", "int")),  # was: dead relay
    row(lossy.LossyRelay, LOOP, delay_s=NAN, words=("delay_s", "nan")),
    row(lossy.LossyRelay, LOOP, delay_s=10, words=("delay_s", "10")),
    row(lossy.LossyRelay, LOOP, hold_s=-1, words=("hold_s", "-1")),
    row(lossy.LossyRelay, LOOP, loss=2, words=("loss", "2")),
    row(lossy_stop, "x", exc=TypeError, words=("timeout_s", "'x'")),  # was: sockets and thread leaked
    # completion ----------------------------------------------------------------------------------------------
    row(completion.Ring, 0, words=("entries", "got 0"), marks=uring),
    row(completion.Ring, True, words=("entries", "True")),
    row(completion.Ring, 10**9, words=("entries", "1000000000")),
    row(completion.Ring.nop, -1, words=("user_data", "-1")),  # was: struct.error in submit()
    row(completion.Ring.nop, 2**64, words=("user_data", str(2**64))),
    row(completion.Ring.nop, "1", exc=TypeError, words=("user_data", "'1'")),
    row(completion.Ring.read, 0, b"abc", 0, 1, exc=TypeError, words=("buffer", "bytes")),  # was: "has no size"
    row(completion.Ring.read, 0, BUF, -1, 1, words=("offset", "-1")),  # was: struct.error
    row(completion.Ring.read, "0", BUF, 0, 1, exc=TypeError, words=("fd", "'0'")),
    row(completion.Ring.recv, None, BUF, 1, exc=TypeError, words=("fd", "None")),
    row(ring_call, "submit", nop(1), wait=2, words=("wait", "0-1", "got 2"), marks=uring),  # was: hang
    row(ring_call, "submit", nop(1), wait=-1, words=("wait", "-1"), marks=uring),  # was: hang
    row(ring_call, "submit", nop(1), nop(1), words=("user_data 1",), marks=uring),
    row(ring_call, "submit", ("x",), exc=TypeError, words=("nop(), read() or recv()",), marks=uring),
    row(ring_call, "wait", 1, words=("n", "got 1"), marks=uring),  # was: hang
    row(ring_closed_reap, words=("Ring is closed",), marks=uring),  # was: "mmap closed or invalid"
    row(completion.PosixAioRead, -1, 8, words=("fd", "-1")),
    row(completion.PosixAioRead, "3", 8, exc=TypeError, words=("fd", "'3'")),
    row(completion.PosixAioRead, 0, 8, offset=-1, words=("offset", "-1")),
    row(completion.PosixAioRead, 0, 0, words=("nbytes", "got 0")),
    row(aio_read_result, NAN, words=("timeout_s", "nan")),  # was: ValueError from int(nan)
    row(completion.KernelAio, 0, words=("entries", "got 0")),
    row(completion.KernelAio, True, exc=TypeError, words=("entries", "True")),
    row(completion.KernelAio.pread, 0, b"abc", 0, 1, exc=TypeError, words=("buffer", "bytes")),
    row(completion.KernelAio.pread, 0, BUF, -1, 1, words=("offset", "-1")),
    row(completion.KernelAio.poll, 0, 0, 1, words=("events", "got 0")),
    row(kaio_call, "submit", ("x",), exc=TypeError, words=("pread() or poll()",), marks=kaio),
    row(kaio_call, "submit", words=("submit 1-2 requests", "got 0"), marks=kaio),
    row(kaio_call, "getevents", 0, NAN, words=("timeout_s", "nan"), marks=kaio),
    row(kaio_call, "getevents", 5, words=("min_nr", "5"), marks=kaio),  # was: would wait for 5 of 2 slots
    row(kaio_closed_getevents, words=("KernelAio is closed",), marks=kaio),
    row(completion.save_recording, "/nonexistent/r.json", "", proactor={}, batching={}, exc=TypeError,
        words=("where", "''")),
    row(completion.save_recording, "/nonexistent/r.json", "here", proactor=None, batching={}, exc=TypeError,
        words=("proactor", "None")),
    row(completion.save_recording, "/nonexistent/r.json", "here", batching={"io_uring": (0, 1, 1.0)},
        proactor={"submitted": True, "before": [], "done": [], "bytes": b""}, exc=TypeError,
        words=("submitted", "True")),
    row(completion.save_recording, "/nonexistent/r.json", "here", proactor={"submitted": 1, "before": [], "done": [],
        "bytes": b""}, batching={"io_uring": (0, float("nan"))}, exc=TypeError, words=("batching", "nan")),
    row(completion.load_recording, "/nonexistent/r.json", exc=FileNotFoundError, words=("r.json",)),
    row(completion.load_recording, None, exc=TypeError, words=("path", "None")),
    row(recording_text, completion.load_recording, "{}",
        words=("not a recording", "completion.save_recording()", "KeyError")),
    row(recording_text, completion.load_recording, '{"recorded": 5}', words=("not a recording", "label")),
    # httpbench ---------------------------------------------------------------------------------------------------
    row(httpbench.serve_http, Hello, host="0.0.0.0", words=("IPv4 loopback", "'0.0.0.0'")),
    row(httpbench.serve_http, Hello, host=None, words=("IPv4 loopback", "None")),  # was: AttributeError
    row(httpbench.serve_http, Hello, host="127.foo", words=("IPv4 loopback", "'127.foo'")),  # was: gaierror
    row(httpbench.serve_http, Hello, host="::1", words=("IPv4 loopback", "'::1'")),
    row(httpbench.serve_http, 5, exc=TypeError, words=("BaseHTTPRequestHandler", "5")),
    row(httpbench.HTTPServerThread, Hello, host="0.0.0.0", words=("IPv4 loopback",)),  # was: listened on all
    row(http_stop, "x", exc=TypeError, words=("timeout_s", "'x'")),  # was: threads left unjoined
    row(httpbench.keepalive_load, LOOP, connections=0, words=("connections", "got 0")),
    row(httpbench.keepalive_load, LOOP, duration_s=True, exc=TypeError, words=("duration_s", "True")),  # was: 1 s
    row(httpbench.keepalive_load, LOOP, duration_s=NAN, words=("duration_s", "nan")),
    row(httpbench.keepalive_load, LOOP, path="no-slash", words=("path", "'no-slash'")),  # was: error per thread
    row(httpbench.keepalive_load, LOOP, path="/a b", words=("path", "'/a b'")),
    row(httpbench.keepalive_load, LOOP, path="/\r\nX: y", words=("path",)),
    row(httpbench.keepalive_load, LOOP, path=None, words=("path", "None")),
    row(httpbench.keepalive_load, None, exc=TypeError, words=("address", "None")),  # was: TypeError None[:2]
    row(httpbench.keepalive_load, ("127.0.0.1", 70000), words=("address port", "70000")),  # was: OverflowError
    row(httpbench.keepalive_load, ("8.8.8.8", 80), words=("address host", "loopback")),  # was: load sent outward
    # behaviours.answer_each and nagle (lesson 10) ----------------------------------------------------------
    row(behaviours.answer_each, 0, words=("size", "got 0")),
    row(behaviours.answer_each, "40", exc=TypeError, words=("size", "'40'")),
    row(behaviours.answer_each, 40, reply="ok", exc=TypeError, words=("reply", "'ok'")),
    row(behaviours.answer_each, 40, quickack="sometimes", words=("quickack", "'sometimes'")),
    row(nagle.round_trips, print, [b"x"], n=0, words=("n", "got 0")),
    row(nagle.round_trips, print, [b"x"], n=True, exc=TypeError, words=("n", "True")),
    row(nagle.round_trips, print, [], n=1, words=("parts", "[]")),
    row(nagle.round_trips, print, [b""], n=1, words=("parts", "b''")),
    row(nagle.round_trips, "send", [b"x"], n=1, exc=TypeError, words=("request", "'send'")),
    row(nagle.time_requests, CONNECTED, "x", (), 1, exc=TypeError, words=("request", "'x'")),
    row(nagle.time_requests, CONNECTED, print, (), 10**6, words=("n", "1000000")),
    row(nagle.data_segments, UDP, exc=TypeError, words=("tcp_info()", "SOCK_DGRAM")),
    row(nagle.data_segments, CLOSED, words=("tcp_info()", "closed")),
    row(nagle.bottleneck_run, "vegas!", words=("algorithm", "'vegas!'")),
    row(nagle.bottleneck_run, "reno", seconds=0, words=("seconds", "got 0")),
    row(nagle.bottleneck_run, "reno", seconds=NAN, words=("seconds", "nan")),
    row(nagle.load_recording, "/nonexistent/run.json", exc=FileNotFoundError, words=("run.json",)),
    row(nagle.save_recording, "run", "/nonexistent/run.json", "here", words=("CongestionRun", "'run'")),
]


# --------------------------------------------------------------------------- the checks


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _children() -> set[int]:
    out: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            out |= {int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split()}
        except OSError:
            pass
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("fn", "args", "kwargs", "exc", "words"), TABLE)
def test_hostile_argument_is_refused_fast_and_leaves_nothing(
    fn: Callable[..., Any], args: tuple, kwargs: dict, exc: type[BaseException], words: tuple[str, ...]
) -> None:
    keep: list[socket.socket] = []
    try:
        args = tuple(_materialise(a, keep) for a in args)
        kwargs = {k: _materialise(v, keep) for k, v in kwargs.items()}
        threads, fds, children = set(threading.enumerate()), _fds(), _children()
        started = time.monotonic()
        with pytest.raises(exc) as info:
            fn(*args, **kwargs)
        took = time.monotonic() - started
    finally:
        for s in keep:
            s.close()
    message = str(info.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{type(info.value).__name__}({message!r}) lacks {missing}"
    assert took < FAST_S, f"the refusal took {took:.1f} s"
    assert set(threading.enumerate()) - threads == set()
    assert _children() - children == set()
    # Pipes and sockets made inside fn must be closed again (a lazily opened library may keep one).
    assert len(_fds() - fds) == 0, f"new fds: {[os.readlink(f'/proc/self/fd/{fd}') for fd in _fds() - fds]}"


def test_the_table_covers_every_public_name() -> None:
    """Every function and class in each module's __all__ has a row (or is exempt, with its reason)."""
    covered = set()
    for fn, *_ in (p.values for p in TABLE):
        for target in getattr(fn, "covers", [fn]):
            covered.add((target.__module__, target.__qualname__.split(".")[0]))
    exempt = {
        # data holders and exception types: the helpers construct them, nothing to refuse
        "SpecialRange", "LinuxRequiredError", "C10KPlan", "RunningCapture",
        "CaptureUnavailable", "CapturedFrame", "Completion", "UringStatus", "KaioStatus", "LoadResult", "HoldResult",
        "Fate", "DirectionStats", "RelayStats", "SockaddrIn", "SockaddrIn6", "SockaddrUn",
        # no arguments at all
        "ephemeral_port_range", "reserved_local_ports", "local_addresses", "interface_addresses",
        "ipv6_loopback_problem", "kernel_version", "can_capture", "port_range_option", "user_timeout_option",
        "cpu_count", "cpu_quota", "memory_limit", "nofile_limits", "is_root", "Probe", "CpuQuota",
        "availability", "shaping_support", "io_uring_status", "kernel_aio_status",
        "read_syscalls", "native_threads", "OkRouter", "reap_children",
        # the fork model's server: runs only as core.spawn's child entry, given a listener by its parent
        "fork_server",
        "four_endings",
        "congestion_controls",
        # results the helpers build: RoundTrips, CongestionRun and its Sample rows, lessons 18's and 01's recordings
        "RoundTrips", "CongestionRun", "Sample", "BottleneckUnavailable", "UringRecording", "Ipv6Run",
        # runs only inside capture()'s child, which checks its arguments there (lesson 10 calls it so)
        "write_write_read",
        # one method, receive(), fed by the servers: tested with whatever a peer may send (test_services.py)
        "Echo",
    }
    modules = [addresses, aio, behaviours, c10k, capture, capture_root, closing, completion, diagrams, features,
               hostile, httpbench, loadgen, lossy, nagle, services, sockaddr]
    missing = [f"{m.__name__}.{name}" for m in modules for name in m.__all__
               if isinstance(getattr(m, name), type) or callable(getattr(m, name))
               if name not in exempt and (m.__name__, name) not in covered]
    assert not missing, f"no hostile-argument row for {missing}"


# --------------------------------------------------------------------------- limits of the machine


def test_more_connections_than_the_fd_limit_are_refused_up_front() -> None:
    """With a hard RLIMIT_NOFILE of 256 (set in a child, as any user may lower it), the load
    tools refuse 1000 connections before opening any, and say what the limit is."""
    code = textwrap.dedent("""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        from helpers import loadgen
        out = {}
        def attempt(name, fn):
            try:
                fn()
                out[name] = "no error"
            except ValueError as exc:
                out[name] = str(exc)
        with loadgen.LoadGenerator(workers=2) as lg:
            attempt("run", lambda: lg.run(("127.0.0.1", 9), connections=1000))
            attempt("hold", lambda: lg.hold([("127.0.0.1", 9)], connections=1000))
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("run", "hold"):
        assert "RLIMIT_NOFILE" in out[name] and "256" in out[name] and "connections" in out[name], (name, out)
        assert "use at most" in out[name], (name, out)


# --------------------------------------------------------------------------- property: any bad timeout


BAD_SECONDS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 < x <= 600),
    st.integers(max_value=0),
    st.integers(min_value=601),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)


@pytest.mark.timeout(60)
@settings(max_examples=300, deadline=None)
@given(BAD_SECONDS)
def test_no_timeout_argument_is_ever_taken_as_something_else(value: Any) -> None:
    """NaN, inf, 0, negatives, huge values, bools, None and text: each timeout_s refuses at once."""
    calls: list[Callable[[], Any]] = [
        lambda: closing.wait_for_row(LOOP, LOOP, "TIME_WAIT", timeout_s=value),
        lambda: c10k.ModelProcess("epoll", start_timeout_s=value),
        lambda: spawn.Child("helpers.servers:process_server_child", start_timeout_s=value),
        lambda: capture.start("def main_experiment(): pass", timeout_s=value),
        lambda: aio.blocked_in([1], timeout_s=value),
    ]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    for call in calls:  # helpers.core.checks.seconds(): TypeError for what is no number, ValueError for a bad one
        with pytest.raises(ValueError if number else TypeError, match="timeout_s"):
            call()
