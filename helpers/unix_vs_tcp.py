"""Unix-domain stream sockets against TCP on loopback: throughput, small writes, round trips.

Theory of operation. Lesson 05 races the two families with the same code on both ends, so
the socket family is the only difference. A server is a ``helpers.UnixStreamServer`` (a path
in a private temporary directory) or a ``helpers.TCPServer`` (127.0.0.1, port 0); the client
is a thread of the notebook's process.

* ``throughput(family, size, duration_s)``: the client calls ``sendall()`` with chunks of
  `size` bytes for `duration_s`, then shuts its sending side down; the server reads into one
  reusable buffer (``recv_into``) until end of file. Two rates come back: bytes per
  wall-clock second, and bytes per CPU second of the writer and reader threads
  (``time.thread_time()``, user + system time) plus the kernel's ksoftirqd threads of the
  CPUs those threads may use: on a busy CPU the kernel may run TCP's receive work there,
  where neither thread is charged for it. On a shared machine the wall-clock rate depends
  on how much CPU the scheduler gave the threads; the CPU rate is what moving the bytes cost.
* ``small_writes(family, writes, size)``: many small ``sendall()`` calls, and how they
  arrived: the reader's ``recv()`` calls and, for TCP, the data segments the sender put on
  the wire (``tcpi_data_segs_out`` from TCP_INFO) and the namespace's ``TcpExt.TCPAutoCorking``
  counter, which counts the times TCP held a small write back to merge it with the next
  (``net.ipv4.tcp_autocorking``, ``man 7 tcp``). A Unix stream socket queues every write as a
  buffer of its own (``unix_stream_sendmsg()`` in ``net/unix/af_unix.c``).
* ``round_trips(client_cpu, server_cpu)``: small echo round trips to a Unix and a TCP server,
  taking turns in batches, with every thread pinned to a chosen CPU
  (``helpers.placement.pinned``: the module explains why an unpinned latency mostly measures
  where the scheduler put the threads).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .behaviours import echo
from .core.proc import ksoftirqd_cpu_s
from .observe import counters_diff, tcp_info
from .placement import pinned, thread_cpu
from .servers import TCPServer, UnixStreamServer

__all__ = ["FAMILIES", "MAX_WRITE", "start_server", "connect_to", "throughput", "small_writes", "round_trip_us",
           "round_trips"]

FAMILIES = ("unix", "tcp")
MAX_WRITE = 16 * 2**20  # bytes per write; larger writes only tie up memory
MAX_TRIAL_S = 5.0  # a trial is a lesson step, not a benchmark run
READ_BUFFER = 2**20  # the reader's one buffer: large enough never to be what limits a read
MAX_WRITES = 1_000_000  # small_writes(): enough to see the pattern, bounded in time
MAX_ROUND_TRIPS = 100_000


def _family(family: object) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family must be 'unix' or 'tcp', got {family!r}")
    return str(family)


def start_server(family: str, handler: Callable[[socket.socket], Any]) -> UnixStreamServer | TCPServer:
    """A server of `family` ('unix' or 'tcp') running `handler(conn)` for each connection."""
    if _family(family) == "unix":
        return UnixStreamServer(handler)  # a path in a private temporary directory, removed on stop
    return TCPServer(handler)  # 127.0.0.1, port 0


def connect_to(server: UnixStreamServer | TCPServer) -> socket.socket:
    """A client socket connected to `server` (the caller closes it)."""
    if not isinstance(server, (UnixStreamServer, TCPServer)):
        raise TypeError(f"connect_to() needs a UnixStreamServer or TCPServer, got {type(server).__name__}")
    family = socket.AF_UNIX if isinstance(server, UnixStreamServer) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.connect(server.address)  # a path, or ("127.0.0.1", port)
    except BaseException:
        sock.close()
        raise
    return sock


def _drain(conn: socket.socket) -> dict[str, float]:
    """Server handler: read into one reusable buffer until EOF; what it read, when, at what CPU cost."""
    cpu_started = time.thread_time()
    buf = bytearray(READ_BUFFER)
    total = calls = 0
    while n := conn.recv_into(buf):
        total += n
        calls += 1
    return {"bytes": total, "recv_calls": calls, "eof_at": time.perf_counter(),
            "cpu_s": time.thread_time() - cpu_started}


def _size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"write size must be an int number of bytes, got {type(size).__name__} {size!r}")
    if not 1 <= size <= MAX_WRITE:
        raise ValueError(f"write size must be 1 to {MAX_WRITE:,} bytes, got {size!r}")
    return size


def throughput(family: str, size: int, duration_s: float) -> tuple[float, float]:
    """Push `size`-byte writes through `family` for `duration_s` seconds (module comment).

    Returns (bytes per wall-clock second, bytes per CPU second of writer + reader +
    ksoftirqd). ValueError for an unknown family, a size outside 1 byte to 16 MiB, or a
    duration outside 0.01-5 s; TypeError for a size or duration that is not a number.
    """
    _family(family)
    chunk = b"x" * _size(size)
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)):
        raise TypeError(f"trial length must be a number of seconds, got {type(duration_s).__name__} {duration_s!r}")
    if not 0.01 <= duration_s <= MAX_TRIAL_S:
        raise ValueError(f"trial length must be 0.01-{MAX_TRIAL_S:g} s, got {duration_s!r}")
    with start_server(family, _drain) as server, connect_to(server) as sock:
        cpus = os.sched_getaffinity(0)  # where the writer, and the reader it started, may run
        started, cpu_started, softirq_started = time.perf_counter(), time.thread_time(), ksoftirqd_cpu_s(cpus)
        while time.perf_counter() - started < duration_s:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)  # EOF tells the server we are done
        writer_cpu = time.thread_time() - cpu_started
        read = server.result()
        softirq_cpu = ksoftirqd_cpu_s(cpus) - softirq_started
    return read["bytes"] / (read["eof_at"] - started), read["bytes"] / (writer_cpu + read["cpu_s"] + softirq_cpu)


def small_writes(family: str, writes: int = 20_000, size: int = 64) -> dict[str, Any]:
    """`writes` sendall() calls of `size` bytes through `family`, and how they arrived.

    Returns a dict: 'writes', 'bytes', 'recv_calls' (the reader's recv() calls until EOF),
    'writes_per_recv', and for TCP 'segments' (data segments sent, from TCP_INFO; None where
    the kernel does not report it), 'writes_per_segment' and 'autocork' (the rise of
    TcpExt.TCPAutoCorking, shared by the namespace). ValueError for a family, count or size
    out of range, TypeError for a count or size that is not an int.
    """
    _family(family)
    chunk = b"x" * _size(size)
    if isinstance(writes, bool) or not isinstance(writes, int):
        raise TypeError(f"writes must be an int, got {type(writes).__name__} {writes!r}")
    if not 1 <= writes <= MAX_WRITES:
        raise ValueError(f"writes must be 1 to {MAX_WRITES:,}, got {writes!r}")
    out: dict[str, Any] = {"family": family, "writes": writes, "size": size}
    with start_server(family, _drain) as server, connect_to(server) as sock, counters_diff() as moved:
        for _ in range(writes):
            sock.sendall(chunk)
        segments = tcp_info(sock).data_segs_out if family == "tcp" else None
        sock.shutdown(socket.SHUT_WR)
        read = server.result()
    out.update(bytes=read["bytes"], recv_calls=read["recv_calls"], writes_per_recv=writes / read["recv_calls"])
    if family == "tcp":
        out.update(segments=segments, writes_per_segment=writes / segments if segments else None,
                   autocork=moved["TcpExt.TCPAutoCorking"] if "TcpExt.TCPAutoCorking" in moved.after else None)
    return out


def _pinned_echo(cpu: int) -> Callable[[socket.socket], tuple[int, int]]:
    """An echo handler that runs on CPU `cpu`; it returns (bytes echoed, the CPU it ran on)."""
    def handler(conn: socket.socket) -> tuple[int, int]:
        with pinned(cpu):
            return echo(conn), thread_cpu()
    return handler


def round_trip_us(sock: socket.socket, message: bytes) -> float:
    """Send `message` on `sock` and wait until all of it has come back; microseconds."""
    started = time.perf_counter_ns()
    sock.sendall(message)
    got = 0
    while got < len(message):
        chunk = sock.recv(len(message) - got)
        if not chunk:
            raise ConnectionError(f"echo server closed after {got} of {len(message)} bytes")
        got += len(chunk)
    return (time.perf_counter_ns() - started) / 1000


def round_trips(client_cpu: int, server_cpu: int, *, batches: int = 100, per_batch: int = 20,
                size: int = 64) -> tuple[dict[str, list[float]], set[int]]:
    """Round trips of `size` bytes to a Unix and a TCP echo server, taking turns in batches.

    The client runs pinned to `client_cpu`, both echo threads to `server_cpu`. Returns the
    round-trip times in microseconds per family, and the set of CPUs the client and the two
    echo threads ran on. ValueError for more than 100,000 round trips or a size outside
    1-65536 bytes (and from pinned() for a CPU this process may not use).
    """
    if not 1 <= batches * per_batch <= MAX_ROUND_TRIPS or not 1 <= size <= 65536:
        raise ValueError(f"need 1-{MAX_ROUND_TRIPS:,} round trips of 1-65536 bytes, "
                         f"got {batches}x{per_batch} of {size}")
    message = b"r" * size
    times_us: dict[str, list[float]] = {"unix": [], "tcp": []}
    with start_server("unix", _pinned_echo(server_cpu)) as unix_server, \
            start_server("tcp", _pinned_echo(server_cpu)) as tcp_server:
        with connect_to(unix_server) as unix_sock, connect_to(tcp_server) as tcp_sock, pinned(client_cpu):
            socks = {"unix": unix_sock, "tcp": tcp_sock}
            for sock in socks.values():  # warm-up: a new connection's first round trips are slower
                for _ in range(20):
                    round_trip_us(sock, message)
            for _ in range(batches):
                for family, sock in socks.items():
                    times_us[family] += [round_trip_us(sock, message) for _ in range(per_batch)]
            ran_on = {thread_cpu()}
        ran_on |= {unix_server.result()[1], tcp_server.result()[1]}
    return times_us, ran_on

