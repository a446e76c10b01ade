"""Hostile arguments to the observation, server and tool helpers, and fuzzed text parsers.

One table is the review: each row calls a public helper with a wrong type or an
out-of-range value and names the exception and the words its message must contain (the
parameter, the bad value, what is allowed). Every call must fail at once and leave nothing
behind: no fd, thread, server, child process or matplotlib figure. Arguments that must be
real sockets (a closed one, a UDP or Unix one) are made fresh per row and closed after.

Then the parsers of kernel text get hypothesis input, random and near-valid (a real line
of the live /proc file or of ``ss`` with a column cut, added or replaced): they return
sane values or raise ValueError naming the line, never IndexError, KeyError or struct.error.

Nothing here is mocked; set_link() is only called where it must refuse (outside a
namespace of our own), so the host's ``lo`` is never touched.
"""

from __future__ import annotations

import math
import os
import select
import socket
import threading
import time
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import multiplex, netns, observe, plots, sampling, servers, timewait, tools, udp_ports, unix
from helpers.core import checks, hygiene, registry

NAN, INF = math.nan, math.inf
A, B = ("127.0.0.1", 1), ("127.0.0.1", 2)  # a 4-tuple no socket uses
PID_MAX = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids are below it, so no such process


class Make:
    """A table argument built fresh for each run (a socket is closed after the call)."""

    def __init__(self, label: str, factory: Callable[[], Any]):
        self.label, self.factory = label, factory

    def __repr__(self) -> str:
        return self.label


def _closed() -> socket.socket:
    s = socket.socket()
    s.close()
    return s


def _closed_epoll() -> select.epoll:
    ep = select.epoll()
    ep.close()
    return ep


def _samples() -> list[sampling.Sample]:
    with servers.TCPServer(None) as srv, socket.create_connection(srv.address) as c:
        return sampling.sample_tcp_info(c, 0.01, every_s=0.005)


CLOSED = Make("<closed TCP socket>", _closed)
UDP = Make("<UDP socket>", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
UNIX = Make("<Unix socket>", lambda: socket.socket(socket.AF_UNIX))
SAMPLES = Make("<real samples>", _samples)


def enter(cm: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Enter a context-manager helper (its checks run on entry), then leave it."""
    with cm(*args, **kwargs):
        pass


def on_server(method: str, *args: Any) -> Any:
    """Call a method of a running TCPServer; the server is stopped whatever happens."""
    srv = servers.TCPServer()
    try:
        return getattr(srv, method)(*args)
    finally:
        srv.stop()


def _figure(*args: Any, **kwargs: Any) -> None:
    fig, _ = plots.figure(*args, **kwargs)
    plt.close(fig)


def f_ok() -> int:  # a function run_in_netns could send (every row fails before it would)
    return 1


# (callable, args, kwargs, expected exception, words the message must contain)
ROWS: list[tuple[Callable[..., Any], tuple, dict, type[BaseException], list[str]]] = [
    # -- servers: constructors
    (servers.TCPServer, (), {"port": "80"}, TypeError, ["port", "'80'", "int"]),
    (servers.TCPServer, (), {"port": True}, TypeError, ["port", "True", "int"]),
    (servers.TCPServer, (), {"port": 70000}, ValueError, ["port", "70000", "0-65535"]),
    (servers.TCPServer, (), {"port": -1}, ValueError, ["port", "-1", "0-65535"]),
    (servers.TCPServer, (), {"host": 2130706433}, TypeError, ["host", "2130706433", "'127.0.0.1'"]),
    (servers.TCPServer, (), {"host": None}, TypeError, ["host", "None", "'127.0.0.1'"]),
    (servers.TCPServer, (), {"host": "localhost"}, ValueError, ["host", "'localhost'", "'127.0.0.1'"]),
    (servers.TCPServer, (), {"host": "0.0.0.0"}, ValueError, ["host", "'0.0.0.0'", "loopback"]),
    (servers.TCPServer, (), {"host": "192.0.2.1"}, ValueError, ["host", "'192.0.2.1'", "loopback"]),
    (servers.TCPServer, (), {"backlog": -1}, ValueError, ["backlog", "-1", ">= 0"]),
    (servers.TCPServer, (), {"backlog": 2**40}, ValueError, ["backlog", str(2**40), "65535"]),
    (servers.TCPServer, (), {"backlog": 1.5}, ValueError, ["backlog", "1.5", "int"]),
    (servers.TCPServer, (), {"backlog": True}, ValueError, ["backlog", "True", "int"]),
    (servers.TCPServer, (42,), {}, TypeError, ["handler", "42", "function"]),
    (servers.TCPServer, ("echo",), {}, TypeError, ["handler", "'echo'", "function"]),
    (servers.UDPServer, (42,), {}, TypeError, ["handler", "42", "function"]),
    (servers.UDPServer, (), {"host": 5}, TypeError, ["host", "5", "'127.0.0.1'"]),
    (servers.UDPServer, (), {"host": "::"}, ValueError, ["host", "'::'", "loopback"]),
    (servers.UDPServer, (), {"port": 65536}, ValueError, ["port", "65536", "0-65535"]),
    (servers.UnixStreamServer, (42,), {}, TypeError, ["handler", "42", "function"]),
    (servers.UnixStreamServer, (), {"path": 123}, TypeError, ["path", "123", "str or bytes"]),
    (servers.UnixStreamServer, (), {"path": ""}, ValueError, ["path", "empty", "None"]),
    (servers.UnixStreamServer, (), {"backlog": -5}, ValueError, ["backlog", "-5", ">= 0"]),
    (servers.UnixStreamServer, (), {"backlog": "8"}, ValueError, ["backlog", "'8'", "int"]),
    (servers.ProcessServer, ("ech",), {}, ValueError, ["behaviour", "'ech'", "echo"]),
    (servers.ProcessServer, (["echo"],), {}, ValueError, ["behaviour", "['echo']", "echo"]),
    (servers.ProcessServer, (), {"start_timeout_s": -1}, ValueError, ["start_timeout_s", "-1", "(0, 600]"]),
    (servers.ProcessServer, (), {"start_timeout_s": NAN}, ValueError, ["start_timeout_s", "nan", "(0, 600]"]),
    (servers.ProcessServer, (), {"start_timeout_s": "10"}, TypeError, ["start_timeout_s", "'10'", "seconds"]),
    (checks.family_for, (None,), {}, TypeError, ["host", "None", "'127.0.0.1'"]),
    (checks.family_for, ("example.com",), {}, ValueError, ["host", "'example.com'", "IP address"]),
    (servers.listening_socket, (), {"port": 1.0}, TypeError, ["port", "1.0", "int"]),
    (servers.listening_socket, ("192.0.2.1",), {}, ValueError, ["host", "'192.0.2.1'", "not an address of this"]),
    (registry.register, (None,), {}, TypeError, ["register()", "stop", "None"]),
    # -- servers: methods of a running server (the server is stopped after each row)
    (on_server, ("result", -1), {}, ValueError, ["timeout_s", "-1", "[0, 1e+09]"]),
    (on_server, ("result", NAN), {}, ValueError, ["timeout_s", "nan"]),  # before: hung in queue.get(nan)
    (on_server, ("result", INF), {}, ValueError, ["timeout_s", "inf", "[0, 1e+09]"]),
    (on_server, ("result", "1"), {}, TypeError, ["timeout_s", "'1'", "seconds"]),
    (on_server, ("stop", "x"), {}, TypeError, ["timeout_s", "'x'", "seconds"]),
    (on_server, ("stop", -1), {}, ValueError, ["timeout_s", "-1", "[0, 1e+09]"]),
    # -- observe
    (observe.tcp_info, ("x",), {}, TypeError, ["tcp_info()", "TCP socket", "str"]),
    (observe.tcp_info, (UDP,), {}, TypeError, ["tcp_info()", "TCP socket", "SOCK_DGRAM"]),
    (observe.tcp_info, (UNIX,), {}, TypeError, ["tcp_info()", "TCP socket", "AF_UNIX"]),
    (observe.tcp_info, (CLOSED,), {}, ValueError, ["tcp_info()", "open socket", "closed"]),
    (observe.TcpInfo.from_bytes, ("x" * 200,), {}, TypeError, ["from_bytes()", "getsockopt", "str"]),
    (observe.TcpInfo.from_bytes, (bytes(104),), {}, ValueError, ["state", "0", "1-12"]),
    (observe.TcpInfo.from_bytes, (b"",), {}, ValueError, ["0 bytes", "at least 104"]),
    (observe.TcpState.parse, (None,), {}, ValueError, ["None", "valid states", "LISTEN"]),
    (observe.decode_proc_address, (None,), {}, TypeError, ["decode_proc_address()", "'0100007F:1F90'", "None"]),
    (observe.decode_proc_address, ("0100007F1F90",), {}, ValueError, ["'0100007F1F90'", "hex digits"]),
    (observe.decode_proc_address, ("0100007F:FFFFF",), {}, ValueError, ["'0100007F:FFFFF'", "4 hex digits"]),
    (observe.decode_proc_address, ("0100:1F90",), {}, ValueError, ["'0100:1F90'", "8 or 32 hex digits"]),
    (observe.decode_proc_address, ("ZZ00007F:1F90",), {}, ValueError, ["'ZZ00007F:1F90'", "hex digits"]),
    (observe.parse_proc_tcp, (b"sl\n",), {}, TypeError, ["parse_proc_tcp()", "str", "bytes"]),
    (observe.socket_table, (), {"port": True}, TypeError, ["port", "True", "0-65535"]),
    (observe.socket_table, (), {"port": 70000}, ValueError, ["port", "70000", "0-65535"]),
    (observe.socket_table, (), {"local": "127.0.0.1:80"}, TypeError, ["local", "'127.0.0.1:80'", "(host, port)"]),
    (observe.socket_table, (), {"local": ("127.0.0.1", True)}, TypeError, ["local", "True", "(host, port)"]),
    (observe.socket_table, (), {"local": ("localhost", 80)}, ValueError, ["local", "'localhost'", "IP address"]),
    (observe.socket_table, (), {"remote": (None, 80)}, TypeError, ["remote", "None", "(host, port)"]),
    (observe.socket_table, (), {"remote": ("127.0.0.1", 70000)}, ValueError, ["remote", "70000", "0-65535"]),
    (observe.socket_table, (), {"states": "LISTEN"}, TypeError, ["states", "'LISTEN'", "['LISTEN']"]),
    (observe.socket_table, (), {"states": 5}, TypeError, ["states", "5", "list"]),
    (observe.socket_table, (), {"states": ["BOGUS"]}, ValueError, ["'BOGUS'", "valid states"]),
    (observe.entries_for, ("x",), {}, TypeError, ["entries_for()", "TCP socket", "str"]),
    (observe.entries_for, (UDP,), {}, TypeError, ["entries_for()", "TCP socket", "SOCK_DGRAM"]),
    (observe.entries_for, (UNIX,), {}, TypeError, ["entries_for()", "TCP socket", "AF_UNIX"]),
    (observe.entries_for, (CLOSED,), {}, ValueError, ["entries_for()", "closed"]),
    (observe.socket_drops, ("x",), {}, TypeError, ["socket_drops()", "TCP socket", "str"]),
    (observe.socket_drops, (UDP,), {}, TypeError, ["socket_drops()", "TCP socket", "SOCK_DGRAM"]),
    (observe.socket_drops, (CLOSED,), {}, ValueError, ["socket_drops()", "closed"]),
    (observe.open_fds, (-1,), {}, ValueError, ["pid", "-1", "'self'"]),
    (observe.open_fds, (True,), {}, ValueError, ["pid", "True", "'self'"]),
    (observe.open_fds, ("1/../self",), {}, ValueError, ["pid", "'1/../self'", "positive int"]),
    (observe.open_fds, (PID_MAX,), {}, ProcessLookupError, ["no process", str(PID_MAX)]),
    (observe.epoll_interest, ("3",), {}, TypeError, ["epoll_interest()", "select.epoll", "str"]),
    (observe.epoll_interest, (-1,), {}, TypeError, ["epoll_interest()", "int >= 0", "-1"]),
    (observe.epoll_interest, (UDP,), {}, TypeError, ["epoll_interest()", "select.epoll", "socket"]),
    (observe.epoll_interest, (Make("a closed epoll", _closed_epoll),), {}, ValueError, ["open epoll", "closed"]),
    (observe.epoll_interest, (0,), {"pid": -1}, ValueError, ["pid", "-1"]),

    (observe.Counters({"Tcp.OutRsts": 1}).__getitem__, (5,), {}, KeyError, ["no kernel counter", "5"]),
    # -- tools
    (tools.lsof, ("me",), {}, ValueError, ["pid", "'me'", "'self'"]),
    (tools.lsof, (), {"fds": 5}, ValueError, ["fds", "5", "fd numbers"]),
    (tools.lsof, (), {"fds": ["3"]}, ValueError, ["fds", "['3']", "ints"]),
    (tools.parse_ss, (None,), {}, TypeError, ["parse_ss()", "str", "NoneType"]),
    (tools.parse_ss, ("ESTAB x 0 127.0.0.1:1 127.0.0.1:2",), {}, ValueError, ["`ss -tan` row", "ESTAB x"]),
    (tools.parse_ss, ("ESTAB \u0663 0 127.0.0.1:1 127.0.0.1:2",), {}, ValueError, ["`ss -tan` row", "\u0663"]),
    (tools.parse_ss, ("ESTAB 0 0 127.0.0.1:99999 127.0.0.1:2",), {}, ValueError, ["99999", "65535"]),
    (tools.run_ss, (5,), {}, TypeError, ["ss arguments", "str", "5"]),
    (tools.run_ss, (), {"timeout_s": -1}, ValueError, ["timeout_s", "-1", "(0, 60]"]),
    (tools.run_ss, (), {"timeout_s": NAN}, ValueError, ["timeout_s", "nan", "(0, 60]"]),
    (tools.parse_proc_net_dev, (None,), {}, TypeError, ["parse_proc_net_dev()", "str", "NoneType"]),
    (tools.parse_proc_net_dev, ("h\nh\nlo: " + "1 " * 15 + "x",), {}, ValueError, ["/proc/net/dev row", "x"]),
    (tools.parse_proc_net_dev, ("h\nh\n : " + "1 " * 16,), {}, ValueError, ["/proc/net/dev row", "' : 1"]),
    (tools.ping, (2130706433,), {}, ValueError, ["host", "2130706433", "IPv4 address"]),
    (tools.ping, (), {"interval_s": "1"}, ValueError, ["interval_s", "'1'", "<= 10"]),
    (tools.ping, (), {"timeout_s": NAN}, ValueError, ["timeout_s", "nan", "<= 30"]),
    (tools.ping, (), {"payload_size": 1.5}, ValueError, ["payload_size", "1.5", "0-1400"]),
    (tools.ping, (), {"count": 1.0}, ValueError, ["count", "1.0", "1-1000"]),
    (tools.find_tool, ("ss; rm -rf",), {}, ValueError, ["program name", "'ss; rm -rf'"]),
    (tools.run_tool, ("ss", 5), {}, TypeError, ["arguments", "str", "5"]),
    (tools.run_tool, ("ss",), {"timeout_s": NAN}, ValueError, ["timeout_s", "nan", "(0, 60]"]),
    (tools.run_tool, (None,), {}, ValueError, ["program name", "None"]),
    (tools.run_tool_during, ("ss",), {"action": None, "ready": "x"}, TypeError, ["action", "function", "None"]),
    (tools.run_tool_during, ("ss",), {"action": print, "ready": ""}, TypeError, ["ready", "non-empty", "''"]),
    (tools.run_tool_during, ("ss",), {"action": print, "ready": "x", "quiet_s": -1}, ValueError,
     ["quiet_s", "-1", "(0, 10]"]),
    (tools.NstatIncrements, (5,), {}, TypeError, ["nstat arguments", "str", "5"]),
    # -- unix
    (unix.parse_proc_net_unix, (5,), {}, TypeError, ["parse_proc_net_unix()", "bytes or str", "int"]),
    (unix.parse_proc_net_unix, (b"hello",), {}, ValueError, ["/proc/net/unix entry", "hello"]),
    (unix.unix_table, (5,), {}, TypeError, ["path", "5", "os.PathLike"]),
    (unix.entry_for, (UDP,), {}, TypeError, ["entry_for()", "AF_UNIX", "AF_INET"]),
    (unix.entry_for, (UNIX, 5), {}, TypeError, ["entries", "5", "UnixEntry"]),
    (unix.entry_for, (UNIX, ["x"]), {}, TypeError, ["entries", "'x'", "UnixEntry"]),
    # -- timewait
    (timewait.state_of, ("x", B), {}, TypeError, ["local", "'x'", "(host, port)"]),
    (timewait.wait_for_state, (A, B, "TIME_WAIT"), {"timeout_s": True}, TypeError, ["timeout_s", "True", "(0, 60]"]),
    (timewait.wait_for_state, (A, B, "TIME_WAIT"), {"timeout_s": NAN}, ValueError, ["timeout_s", "nan", "(0, 60]"]),
    (timewait.wait_for_state, (A, B, "BOGUS"), {}, ValueError, ["'BOGUS'", "valid states"]),
    (timewait.wait_gone, (A, B), {"timeout_s": NAN}, ValueError, ["timeout_s", "nan", "(0, 120]"]),
    (timewait.wait_gone, (A, B), {"timeout_s": "1"}, TypeError, ["timeout_s", "'1'", "(0, 120]"]),
    (timewait.wait_gone, (A, B), {"timeout_s": -1}, ValueError, ["timeout_s", "-1", "(0, 120]"]),
    (timewait.wait_for_count, ("TIME_WAIT", 1), {"timeout_s": NAN}, ValueError, ["timeout_s", "nan", "(0, 120]"]),
    (timewait.wait_for_count, ("TIME_WAIT", True), {}, ValueError, ["count", "True", "positive"]),
    (timewait.wait_for_count, ("TIME_WAIT", 1), {"remote": "x"}, TypeError, ["remote", "'x'", "(host, port)"]),
    (timewait.pack_port_range, (1.5, 2), {}, TypeError, ["lo", "1.5", "0-65535"]),
    (timewait.pack_port_range, (True, 5), {}, TypeError, ["lo", "True", "0-65535"]),
    (timewait.unpack_port_range, ("abcd",), {}, TypeError, ["unpack_port_range()", "4 bytes", "'abcd'"]),
    (timewait.unpack_port_range, (None,), {}, TypeError, ["unpack_port_range()", "4 bytes", "None"]),
    (timewait.unpack_port_range, (b"abc",), {}, ValueError, ["4-byte", "3 bytes"]),
    (timewait.read_sysctl, (5,), {}, ValueError, ["sysctl name", "5", "'tcp_tw_reuse'"]),
    (timewait.read_sysctl, ("tcp\0x",), {}, ValueError, ["sysctl name", "'tcp\\x00x'"]),
    (timewait.free_port_window, (0,), {}, ValueError, ["size", "0", "1-1000"]),
    (timewait.free_port_window, (True,), {}, ValueError, ["size", "True", "1-1000"]),
    (timewait.free_port_window, (3,), {"within": "ab"}, TypeError, ["within", "'ab'", "(lo, hi)"]),
    (timewait.free_port_window, (3,), {"within": (1.5, 10.0)}, TypeError, ["within", "1.5", "0-65535"]),
    (timewait.free_port_window, (3,), {"within": (40000, 70000)}, ValueError, ["within", "70000", "0-65535"]),
    (timewait.free_port_window, (3,), {"toward": ("localhost", 80)}, ValueError, ["toward", "'localhost'", "IP"]),
    (timewait.window_starts, ({1}, 1, 10, 0), {}, ValueError, ["size", "0", "ports"]),
    (timewait.window_starts, ({"a"}, 1, 10, 1), {}, TypeError, ["used", "'a'", "ints"]),
    (timewait.window_starts, (set(), 1.5, 10, 1), {}, TypeError, ["lo", "1.5", "0-65535"]),
    (timewait.ports_held, (10, NAN), {}, ValueError, ["t_s", "nan", "[0, 1e+09]"]),
    (timewait.ports_held, (10, "5"), {}, TypeError, ["t_s", "'5'", "seconds"]),
    (timewait.ports_held, (10, 5), {"time_wait_s": -60}, ValueError, ["time_wait_s", "-60", "(0, 1e+09]"]),
    (timewait.ports_held, (True, 5), {}, ValueError, ["rate", "True", "finite number"]),
    (timewait.ports_held, (10, 10**400), {}, ValueError, ["t_s", "1000000", "[0, 1e+09]"]),
    (timewait.exhaustion_time_s, (10, 100), {"time_wait_s": 0}, ValueError, ["time_wait_s", "0", "(0, 1e+09]"]),
    (timewait.exhaustion_time_s, (10, 1.5), {}, ValueError, ["ports", "1.5", "positive"]),
    (timewait.close_diagram, ("both",), {"after_first": {}, "after_second": {}, "timer_s": None},
     ValueError, ["first", "'both'", "'client' or 'server'"]),
    (timewait.close_diagram, ("client",), {"after_first": None, "after_second": {}, "timer_s": None},
     TypeError, ["after_first", "None", "dict"]),
    (timewait.close_diagram, ("client",), {"after_first": {}, "after_second": {}, "timer_s": "1"},
     TypeError, ["timer_s", "'1'", "seconds"]),
    (timewait.matrix_html, (None,), {}, TypeError, ["results", "None", "dict"]),
    (timewait.close_in_order, ("both",), {}, ValueError, ["first", "'both'", "'client' or 'server'"]),
    (timewait.close_in_order, ("client",), {"client_port": 70000}, ValueError, ["client_port", "70000", "0-65535"]),
    (timewait.close_in_order, ("client",), {"client_port": "80"}, TypeError, ["client_port", "'80'", "0-65535"]),
    (timewait.run_in_port_window, (f_ok,), {"size": 0}, ValueError, ["size", "0", "1-1000"]),
    (timewait.run_in_port_window, (f_ok,), {"size": 3, "way": "magic"}, ValueError, ["way", "'magic'", "namespace"]),
    (timewait.run_in_port_window, (5,), {"size": 3, "way": "namespace"}, TypeError, ["experiment", "function", "5"]),
    (timewait.save_window_runs, ({"a": 5}, "/nonexistent/x.json", "here"), {}, TypeError, ["WindowRuns", "int"]),
    (timewait.save_window_runs, ({}, "/nonexistent/x.json", ""), {}, TypeError, ["where", "''", "non-empty"]),
    # -- udp_ports
    (udp_ports.udp_table, (True,), {}, TypeError, ["port", "True", "0-65535"]),
    (udp_ports.udp_table, ("53",), {}, TypeError, ["port", "'53'", "0-65535"]),
    (enter, (udp_ports.unreachable_port, 5), {}, TypeError, ["host", "5", "'127.0.0.1'"]),
    (enter, (udp_ports.unreachable_port, "192.0.2.1"), {}, ValueError, ["host", "'192.0.2.1'", "loopback"]),
    (enter, (udp_ports.unreachable_port, "localhost"), {}, ValueError, ["host", "'localhost'", "IP address"]),
    # -- sampling
    (sampling.sample_tcp_info, (UDP, 0.1), {}, TypeError, ["tcp_info()", "TCP socket", "SOCK_DGRAM"]),
    (sampling.sample_tcp_info, (CLOSED, 0.1), {}, ValueError, ["tcp_info()", "closed"]),
    (sampling.sample_tcp_info, (CLOSED, NAN), {}, ValueError, ["duration_s", "nan", "(0, 3600]"]),
    (sampling.sample_tcp_info, (CLOSED, True), {}, ValueError, ["duration_s", "True", "(0, 3600]"]),
    (sampling.sample_tcp_info, (CLOSED, 1), {"every_s": INF}, ValueError, ["every_s", "inf", "(0, 60]"]),
    (sampling.sample_tcp_info, (CLOSED, 1), {"progress": 5}, ValueError, ["progress", "5", "str"]),
    (sampling.rise_times, (["x"], "segs_out"), {}, TypeError, ["samples", "'x'", "Sample"]),
    (sampling.rise_times, ("abc", "segs_out"), {}, TypeError, ["samples", "'abc'", "Sample"]),
    (sampling.rise_times, (SAMPLES, "state"), {}, ValueError, ["field", "'state'", "segs_out"]),
    (sampling.rise_times, (SAMPLES, "as_dict"), {}, ValueError, ["field", "'as_dict'", "segs_out"]),
    (sampling.rise_times, (SAMPLES, 5), {}, ValueError, ["field", "5", "segs_out"]),
    # -- plots (checked before a figure exists: the leak check counts open figures)
    (_figure, ("", "t (s)", "n (count)"), {}, ValueError, ["title", "''", "non-empty str"]),
    (_figure, (5, "t (s)", "n (count)"), {}, ValueError, ["title", "5", "non-empty str"]),
    (_figure, ("t", "time", "n (count)"), {}, ValueError, ["x label", "'time'", "unit in parentheses"]),
    (_figure, ("t", "t (s)", None), {}, ValueError, ["y label", "None", "unit in parentheses"]),
    (_figure, ("t", "t (s)", "n (count)"), {"ncols": 0}, ValueError, ["ncols", "0", "1-10"]),
    (_figure, ("t", "t (s)", "n (count)"), {"ncols": "2"}, ValueError, ["ncols", "'2'", "1-10"]),
    # -- multiplex
    (enter, (multiplex.more_fds, "5"), {}, ValueError, ["needed", "'5'", "int >= 0"]),
    (enter, (multiplex.more_fds, True), {}, ValueError, ["needed", "True", "int >= 0"]),
    (enter, (multiplex.idle_sockets, 2.5), {}, ValueError, ["idle fds", "2.5", "int >= 0"]),
    (multiplex.wait_cost, ("epoll", True), {}, ValueError, ["idle_fds", "True", "int >= 0"]),
    (multiplex.wait_cost, ("epoll", 1, True), {}, ValueError, ["waits", "True", "1..100000"]),
    (multiplex.wait_cost, ("epoll", 1, 10), {"budget_s": -1}, ValueError, ["budget_s", "-1", "[0, 3600]"]),
    (multiplex.wait_cost, ("epoll", 1, 10), {"budget_s": "x"}, TypeError, ["budget_s", "'x'", "seconds"]),
    (multiplex.wait_cost, (["epoll"], 1), {}, ValueError, ["mechanism", "['epoll']", "'select', 'poll'"]),
    (multiplex.sweep, (5,), {}, ValueError, ["counts", "5", "lists"]),
    (multiplex.sweep, ([1], "epoll"), {}, ValueError, ["mechanisms", "'epoll'", "lists"]),
    (multiplex.sweep, ([1], ["epoll", "kqueue"]), {}, ValueError, ["mechanism", "'kqueue'", "'epoll'"]),
    (multiplex.sweep, ([1, -1],), {}, ValueError, ["idle_fds", "-1", "int >= 0"]),
    (multiplex.sweep, ([1],), {"progress": 5}, ValueError, ["progress", "5", "function"]),
    (multiplex.log_counts, (True,), {}, ValueError, ["largest count", "True", "int >= 1"]),
    (multiplex.log_counts, (2.5,), {}, ValueError, ["largest count", "2.5", "int >= 1"]),
    (multiplex.event_names, ("x",), {}, ValueError, ["events", "'x'", "epoll mask"]),
    (multiplex.event_names, (-1,), {}, ValueError, ["events", "-1", "int >= 0"]),
    (multiplex.event_names, ([(3, "x")],), {}, ValueError, ["events", "(3, 'x')", "(fd, mask) pairs"]),
    (multiplex.wakeups, ("yes",), {}, ValueError, ["exclusive", "'yes'", "True or False"]),
    (multiplex.wakeups, (True, 1), {}, ValueError, ["waiters", "1", "2..16"]),
    (multiplex.wakeups, (True, 4, "1"), {}, ValueError, ["timeout_s", "'1'", "0.1..5"]),
    (multiplex.wakeups, (True, 4, NAN), {}, ValueError, ["timeout_s", "nan", "0.1..5"]),
    # -- hygiene
    (hygiene.leftovers, (5,), {}, TypeError, ["ignore", "5", "list of sockets"]),
    (hygiene.leftovers, (["x"],), {}, TypeError, ["ignore", "['x']", "list of sockets"]),
    # -- netns: every row fails before a child or the host's interfaces are touched
    (netns.set_link, (5, True), {}, ValueError, ["interface name", "5", "1-15 bytes"]),
    (netns.set_link, ("x" * 16, True), {}, ValueError, ["interface name", "'xxxx", "1-15 bytes"]),
    (netns.set_link, ("lo", "no"), {}, TypeError, ["up", "'no'", "True or False"]),
    (netns.set_link, ("lo", False), {}, PermissionError, ["set_link('lo')", "run_in_netns", "refuses"]),
    (netns.run_in_netns, (5,), {}, TypeError, ["run_in_netns()", "defined with def", "5"]),
    (netns.run_in_netns, (lambda: 1,), {}, TypeError, ["run_in_netns()", "defined with def", "lambda"]),
    (netns.run_in_netns, (f_ok,), {"timeout_s": NAN}, ValueError, ["timeout_s", "nan", "(0, 600]"]),
    (netns.run_in_netns, (f_ok,), {"loopback_up": "yes"}, TypeError, ["loopback_up", "'yes'", "True or False"]),
    (netns.run_in_netns, (f_ok,), {"x": object()}, TypeError, ["arguments", "JSON data", "object"]),
    (netns.run_or_replay, (f_ok, None), {}, TypeError, ["recording", "file name", "None"]),
    (netns.save_run, ("x", "/nonexistent/x.json", "here"), {}, TypeError, ["save_run()", "NamespaceRun", "str"]),
    (netns.save_run, (netns.NamespaceRun(1, True, "live"), "/nonexistent/x.json", " "), {}, TypeError,
     ["where", "' '", "non-empty"]),
]


def _state() -> tuple[set[str], set[int], list[Any], list[int], list[int]]:
    """What a call could leave behind: fds, threads, servers, child processes, figures."""
    fds = set(os.listdir("/proc/self/fd"))
    kids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:  # the thread ended since the listing
            continue
    return fds, {t.ident for t in threading.enumerate()}, registry.live_servers(), kids, plt.get_fignums()


def _build(value: Any, made: list[Any]) -> Any:
    if isinstance(value, Make):
        made.append(value.factory())
        return made[-1]
    return value


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "error", "words"),
    [pytest.param(*row, id=f"{getattr(row[0], '__qualname__', row[0])}-{i}") for i, row in enumerate(ROWS)],
)
def test_hostile_argument_is_refused_at_once(
    fn: Callable[..., Any], args: tuple, kwargs: dict, error: type[BaseException], words: list[str]
) -> None:
    made: list[Any] = []
    before = _state()
    started = time.monotonic()
    try:
        with pytest.raises(error) as info:
            fn(*(_build(a, made) for a in args), **{k: _build(v, made) for k, v in kwargs.items()})
    finally:
        for thing in made:
            if isinstance(thing, socket.socket):
                thing.close()
    elapsed = time.monotonic() - started
    message = str(info.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"message lacks {missing}: {message!r}"
    assert elapsed < 5, f"took {elapsed:.1f} s to refuse"
    fds, threads, live, kids, figs = _state()
    assert fds <= before[0], f"fds left open: {fds - before[0]}"
    assert not threads - before[1], f"threads left: {threads - before[1]}"
    assert (live, kids, figs) == before[2:], "a server, child process or figure was left behind"


# --------------------------------------------------------------------------- servers: life cycle


def _wait_until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.mark.timeout(20)
def test_handler_that_raises_is_reported_once_and_stop_twice_is_quiet() -> None:
    def broken(conn: socket.socket) -> None:
        raise KeyError("no such key")

    srv = servers.TCPServer(broken)
    socket.create_connection(srv.address).close()
    _wait_until(lambda: bool(srv.errors))
    with pytest.raises(servers.ServerError, match=r"^tcp:\d+: a handler raised KeyError: 'no such key'\.$") as info:
        srv.stop()
    assert isinstance(info.value.__cause__, KeyError)
    srv.stop()  # the error was reported once; stopping again is a no-op
    assert not srv.running and srv not in registry.live_servers()


@pytest.mark.timeout(20)
def test_handler_that_hangs_cannot_hold_stop_past_its_timeout() -> None:
    release = threading.Event()

    def hangs(conn: socket.socket) -> None:
        release.wait()  # blocks on something other than its socket: stop() cannot unblock it

    srv = servers.TCPServer(hangs)
    try:
        with socket.create_connection(srv.address):
            _wait_until(lambda: srv.accepted == 1)
            started = time.monotonic()
            with pytest.warns(ResourceWarning, match=r"handler threads still running after 0\.3 s: \['course-server-"):
                srv.stop(timeout_s=0.3)
            assert 0.25 < time.monotonic() - started < 2.0
        assert srv.sock.fileno() == -1 and srv not in registry.live_servers()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(srv.address, timeout=2).close()
    finally:
        release.set()
        _wait_until(lambda: not any(t.name.startswith(f"{registry.THREAD_PREFIX}-{srv.name}") for t in
                                    threading.enumerate()))


@pytest.mark.timeout(20)
def test_stop_with_a_bad_timeout_leaves_the_server_working() -> None:
    with servers.TCPServer(lambda c: c.recv(10)) as srv:
        with pytest.raises(TypeError, match=r"^timeout_s must be a number of seconds in \[0, 1e\+09\], got str 'x'$"):
            srv.stop("x")
        assert srv.running and srv in registry.live_servers()
        with socket.create_connection(srv.address) as c:
            c.sendall(b"hi")
            assert srv.result(timeout_s=2) == b"hi"


@pytest.mark.timeout(20)
def test_use_after_stop() -> None:
    srv = servers.TCPServer(lambda c: c.recv(10))
    with socket.create_connection(srv.address) as c:
        c.sendall(b"kept")
        assert srv.result() == b"kept"
    srv.stop()
    srv.stop()
    assert srv.address[1] > 0 and not srv.running
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no handler finished within 0\.05 s"):
        srv.result(timeout_s=0.05)
    assert time.monotonic() - started < 1.0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(srv.address, timeout=2).close()


@pytest.mark.timeout(20)
def test_udp_handler_returning_str_is_reported_by_stop() -> None:
    srv = servers.UDPServer(lambda data, addr: data.decode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.sendto(b"x", srv.address)
        _wait_until(lambda: bool(srv.errors))
    with pytest.raises(servers.ServerError, match=r"a handler raised TypeError: .*bytes-like"):
        srv.stop()


@pytest.mark.timeout(30)
def test_process_server_arguments_and_use_after_stop() -> None:
    srv = servers.ProcessServer("echo")
    try:
        with pytest.raises(ValueError, match=r"^limit must be an int >= 0 \(characters\), got -1$"):
            srv.stderr_tail(-1)
        assert srv.stderr_tail(0) == ""  # before: [-0:] returned the whole text
        with pytest.raises(ValueError, match=r"^timeout_s must be a number of seconds in \(0, 60\], got nan$"):
            srv.pause(NAN)
        assert srv.running  # nothing was sent: the child was not stopped by a refused pause()
    finally:
        srv.stop()
    srv.stop()
    assert srv.stderr_tail() == ""
    with pytest.raises(RuntimeError, match=r"^cannot pause process:echo:\d+: its child exited with code"):
        srv.pause()
    with pytest.raises(RuntimeError, match=r"^cannot resume process:echo:\d+: its child exited"):
        srv.resume()


@pytest.mark.timeout(20)
def test_wait_gone_nan_on_a_live_connection_is_refused_not_a_hang() -> None:
    # Before the fix: deadline = now + nan, `now >= nan` is never true, so with a row
    # present the loop polled forever.
    with servers.TCPServer(None) as srv, socket.create_connection(srv.address) as c:
        with pytest.raises(ValueError, match=r"^timeout_s must be a number of seconds in \(0, 120\], got nan$"):
            timewait.wait_gone(c.getsockname(), srv.address, timeout_s=NAN)


# --------------------------------------------------------------------------- fuzzed parsers

NASTY = ["", "zz", "-1", "+1", "1_0", " 1", "0x1F", "F" * 40, "9" * 40, "\u0663", "\uff10", ":", "::", "0100007F",
         "0100007F:1F90:00", "\x00", "nan", "1e3", "@", "0A:x", "x:0A", "00000000:00000000"]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def _live_texts() -> dict[str, Any]:
    """Real /proc text with TCP and UDP sockets, and a Unix socket whose name has a space and a newline."""
    with servers.TCPServer(None) as srv, socket.create_connection(srv.address), servers.UDPServer(), \
            servers.UnixStreamServer(None, path=f"\0course fuzz\n{os.getpid()}"):
        ss = tools.run_ss() or ""
        return {
            "tcp": Path("/proc/net/tcp").read_text(),
            "udp": Path("/proc/net/udp").read_text(),
            "dev": Path("/proc/net/dev").read_text(),
            "unix": Path("/proc/net/unix").read_bytes(),
            "ss": ss,
        }


def _mutated(text: str, header_lines: int) -> st.SearchStrategy[str]:
    """A real line of `text` with one column cut, duplicated, or replaced by nasty or random text."""
    lines = text.splitlines()
    head, rows = lines[:header_lines], [r for r in lines[header_lines:] if r.split()]

    @st.composite
    def build(draw: st.DrawFn) -> str:
        cols = draw(st.sampled_from(rows)).split()
        i = draw(st.integers(0, len(cols) - 1))
        op = draw(st.sampled_from(["cut", "extra", "replace", "truncate"]))
        junk = draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=12)))
        if op == "cut":
            del cols[i]
        elif op == "extra":
            cols.insert(i, junk)
        elif op == "replace":
            cols[i] = junk
        else:
            cols = cols[:i]
        return "\n".join([*head, " ".join(cols)]) + "\n"

    return build()


def _check_socket_entry(e: observe.SocketEntry) -> None:
    assert isinstance(e.state, observe.TcpState)
    for host, port in (e.local, e.remote):
        assert 0 <= port <= 65535 and isinstance(host, str)
    assert min(e.send_q, e.recv_q, e.retransmits, e.uid, e.inode) >= 0 and e.timer_s >= 0


@FUZZ
@given(st.text(max_size=60))
def test_fuzz_decode_proc_address(text: str) -> None:
    try:
        host, port = observe.decode_proc_address(text)
    except ValueError as exc:
        assert "not a /proc/net address column" in str(exc) and repr(text) in str(exc)
    else:
        assert 0 <= port <= 65535 and observe.decode_proc_address(text) == (host, port)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.data()))
def test_fuzz_parse_proc_tcp(data: Any) -> None:
    text = data if isinstance(data, str) else data.draw(_mutated(_live_texts()["tcp"], 1))
    try:
        entries = list(observe.parse_proc_tcp(text))
    except ValueError as exc:
        assert str(exc).startswith("not a /proc/net socket row (")
    else:
        for e in entries:
            _check_socket_entry(e)


@FUZZ
@given(st.data())
def test_fuzz_udp_rows(data: st.DataObject) -> None:  # udp_ports._parse feeds udp_table()
    text = data.draw(_mutated(_live_texts()["udp"], 1))
    try:
        entries = list(udp_ports._parse(text))
    except ValueError as exc:
        assert "not a /proc/net" in str(exc) and "row" in str(exc)
    else:
        for e in entries:
            assert e.state in ("connected", "unconnected") or e.state.startswith("state ")
            assert min(e.local[1], e.remote[1], e.drops, e.inode) >= 0


@FUZZ
@given(st.one_of(st.text(max_size=200), st.data()))
def test_fuzz_parse_ss(data: Any) -> None:
    ss = _live_texts()["ss"] or "State Recv-Q Send-Q Local Address:Port Peer Address:Port\n" \
        "LISTEN 0 128 127.0.0.1:5000 0.0.0.0:*\n"
    text = data if isinstance(data, str) else data.draw(_mutated(ss, 1))
    try:
        rows = tools.parse_ss(text)
    except ValueError as exc:
        assert str(exc).startswith(("not an `ss -tan` row: ", "not an ss address: "))
    else:
        for r in rows:
            assert r.recv_q >= 0 and r.send_q >= 0 and 0 <= r.local[1] <= 65535 and 0 <= r.remote[1] <= 65535


@FUZZ
@given(st.one_of(st.text(max_size=200), st.data()))
def test_fuzz_parse_proc_net_dev(data: Any) -> None:
    text = data if isinstance(data, str) else data.draw(_mutated(_live_texts()["dev"], 2))
    try:
        table = tools.parse_proc_net_dev(text)
    except ValueError as exc:
        assert str(exc).startswith("not a /proc/net/dev row: ")
    else:
        for name, c in table.items():
            assert name and min(c._values()) >= 0


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), st.data()))
def test_fuzz_parse_proc_net_unix(data: Any) -> None:
    if not isinstance(data, (bytes, str)):
        data = data.draw(_mutated(_live_texts()["unix"].decode(errors="surrogateescape"), 1)).encode(
            errors="surrogateescape")
    try:
        entries = unix.parse_proc_net_unix(data)
    except ValueError as exc:
        assert str(exc).startswith("not a /proc/net/unix entry: ")
    else:
        for e in entries:
            assert e.inode >= 0 and e.refcount >= 0 and (e.path is None or isinstance(e.path, str))


def test_parse_proc_net_unix_rejoins_the_live_path_with_a_newline() -> None:
    name = f"@course fuzz\n{os.getpid()}"
    assert name in [e.path for e in unix.parse_proc_net_unix(_live_texts()["unix"])]


@FUZZ
@given(st.binary(max_size=8))
def test_fuzz_unpack_port_range(raw: bytes) -> None:
    try:
        lo, hi = timewait.unpack_port_range(raw)
    except ValueError as exc:
        assert len(raw) != 4 and f"got {len(raw)} bytes" in str(exc)
    else:
        assert len(raw) == 4 and 0 <= lo <= 65535 and 0 <= hi <= 65535
        if lo <= hi:
            assert timewait.pack_port_range(lo, hi) == raw


@FUZZ
@given(st.one_of(st.binary(max_size=120), st.binary(min_size=104, max_size=300)))
def test_fuzz_tcp_info_from_bytes(raw: bytes) -> None:
    try:
        info = observe.TcpInfo.from_bytes(raw)
    except ValueError as exc:
        assert "TCP_INFO" in str(exc)
    else:
        assert len(raw) >= 104 and isinstance(info.state, observe.TcpState)


def test_live_tables_still_parse_whole() -> None:
    texts = _live_texts()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(observe.parse_proc_tcp(texts["tcp"]))
        assert tools.parse_proc_net_dev(texts["dev"])
        assert unix.parse_proc_net_unix(texts["unix"])
        if texts["ss"]:
            assert tools.parse_ss(texts["ss"])
