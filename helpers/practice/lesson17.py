"""Checks for the exercises of lesson 17 (C10K server models).

1. ``ConnectionQueue(capacity)``: the queue between a thread pool's acceptor and its workers,
   on one ``threading.Condition``: ``put()`` waits while `capacity` connections wait,
   ``get()`` waits while none does. The check runs a real pool on it (one acceptor thread,
   WORKERS worker threads serving echo with blocking calls) and opens a burst of BURST
   connections at once, more than the workers and the queue hold. It counts what ``put()``
   and ``get()`` returned (the queue's occupancy, whatever the class keeps inside), reads the
   listener's accept queue from the kernel (TCP_INFO on a LISTEN socket: ``unacked``) while
   the queue is full, then has every client wait for its echo and close: none may be lost.
2. ``reap_children()``: the fork model's SIGCHLD work: collect every exited child with
   ``waitpid(-1, WNOHANG)`` in a loop, return their pids. The learner's function runs where
   forking is safe: its source goes to a single-threaded child process
   (``core.spawn``, ``reaper_child``), which serves echo with ``c10k.fork_server`` and the
   learner's reaper. The check pauses the server (SIGSTOP) while several of its children
   exit, so their SIGCHLDs merge into one (standard signals do not queue, man 7 signal),
   resumes it, and counts zombies (state Z in /proc/PID/stat) among its children, while
   other children still serve: a reaper that waits without WNOHANG stops the server.
3. ``reuseport_listeners(n)``: n listening sockets on one port with SO_REUSEPORT. The check
   connects CLIENTS clients and reads each listener's accept queue (TCP_INFO): the kernel
   spreads connections over every listener (man 7 socket).
"""

from __future__ import annotations

import inspect
import os
import select
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

from ..c10k import child_states, fork_server
from ..core import spawn
from ..core.registry import THREAD_PREFIX
from ..observe import tcp_info
from ..servers import listening_socket
from ..services import serve_blocking
from .core import Trial, exercise

# -- 1. a thread pool's connection queue -----------------------------------------------------

WORKERS = 2  # threads in the check's pool
CAPACITY = 3  # the learner's queue's capacity
BURST = 10  # connections opened at once: more than WORKERS + CAPACITY
SETTLE_S = 3.0  # the longest the check waits for the pool to reach a state
ANSWER_S = 3.0  # the longest every client together may wait for its echo

QUEUE_HINT = (
    "put(): with self.cond: while len(self.items) >= self.capacity: self.cond.wait(); then append and "
    "self.cond.notify_all(). get(): with self.cond: while not self.items: self.cond.wait(); then popleft(), "
    "self.cond.notify_all() (a put() may be waiting for room) and return the connection."
)


class _Pool:
    """The check's pool on the learner's queue: counts what put() and get() returned."""

    def __init__(self, q: Any, listener: socket.socket):
        self.q, self.listener = q, listener
        self.lock = threading.Lock()
        self.puts = self.gets = self.serving = self.peak_queued = self.peak_serving = self.accepted = 0
        self.errors: list[str] = []
        self.stopping = False
        self.threads = [self._start(self._accept, "acceptor")]
        self.threads += [self._start(self._work, f"worker{i}") for i in range(WORKERS)]

    def _start(self, target: Callable[[], None], role: str) -> threading.Thread:
        thread = threading.Thread(target=self._guard, args=(target,), name=f"{THREAD_PREFIX}-17-1-{role}",
                                  daemon=True)
        thread.start()
        return thread

    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception as exc:  # noqa: BLE001 - the learner's code failed in our thread: report it
            if self.stopping and isinstance(exc, OSError):
                return  # the listener shut down by stop()
            self.errors.append(f"{type(exc).__name__}: {exc}".rstrip(": "))

    def _accept(self) -> None:
        for _ in range(BURST):
            conn, _ = self.listener.accept()
            with self.lock:
                self.accepted += 1
            self.q.put(conn)
            with self.lock:
                self.puts += 1
                self.peak_queued = max(self.peak_queued, self.puts - self.gets)

    def _work(self) -> None:
        while True:
            conn = self.q.get()
            if conn is None:
                return
            if not isinstance(conn, socket.socket):
                raise TypeError(f"get() returned {type(conn).__name__} {conn!r:.40}, not a connection")
            with self.lock:
                self.gets += 1
                self.serving += 1
                self.peak_serving = max(self.peak_serving, self.serving)
            try:
                conn.settimeout(SETTLE_S + ANSWER_S)
                serve_blocking(conn, "echo")
            except OSError:
                pass
            finally:
                conn.close()
                with self.lock:
                    self.serving -= 1

    def wait(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() >= deadline or self.errors:
                return condition()
            time.sleep(0.005)
        return True

    def stop(self) -> list[str]:
        """Shut the listener down (wakes an acceptor in accept()), then one None per worker through
        put(). Threads still waiting after that are freed through the stub's attributes, if the
        class kept them: the queue emptied, one None per worker. Returns the names still alive."""
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        feeders = [self._start(lambda: self.q.put(None), "stop") for _ in range(WORKERS)]
        every = self.threads + feeders
        _join(every, 1.0)
        cond, items = getattr(self.q, "cond", None), getattr(self.q, "items", None)
        for _ in range(3):
            if not any(t.is_alive() for t in every) or not isinstance(cond, threading.Condition):
                break
            if not (hasattr(items, "popleft") and hasattr(items, "append")):
                break
            with cond:
                while items:
                    left = items.popleft()  # type: ignore[union-attr]
                    if isinstance(left, socket.socket):
                        left.close()
                for _ in range(WORKERS):
                    items.append(None)  # type: ignore[union-attr]
                cond.notify_all()
            _join(every, 0.5)
        return [t.name for t in every if t.is_alive()]


def _join(threads: list[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _queue(t: Trial, cls: object) -> Any:
    """An instance of the learner's class; NOT DONE YET if put() then get() hands back None."""
    t.require(isinstance(cls, type), f"ConnectionQueue is {type(cls).__name__} {cls!r:.60}, not a class.",
              "Keep the class statement and fill in put() and get().")
    q = t.call(cls, CAPACITY, name="ConnectionQueue(3)", timeout_s=1.0).value
    a, b = socket.socketpair()
    t.own(a), t.own(b)

    def round_trip() -> object:
        q.put(a)
        return q.get()

    back = t.call(round_trip, name="put(conn) then get()", timeout_s=1.0,
                  hang_hint="get() waited although put() had just stored a connection: store it under the "
                            "condition and notify.").value
    t.require(back is a, f"put(conn) then get() returned {back!r:.60}, not the connection put.", QUEUE_HINT)
    return q


@exercise("17", 1, "a thread pool's connection queue on a Condition", hint=QUEUE_HINT)
def check_queue(t: Trial, cls: object) -> str:
    q = _queue(t, cls)
    listener = t.own(listening_socket("127.0.0.1", 0, backlog=64))
    listener.setblocking(True)
    pool = _Pool(q, listener)
    stopped = False
    try:
        clients = [t.connect(listener.getsockname()) for _ in range(BURST)]
        for i, c in enumerate(clients):
            c.sendall(f"client {i}\n".encode())
        # Settled: the workers serve, the queue is full, the acceptor waits in put() with one more
        # (or, for a queue that never waits, everything was put).
        full = pool.wait(lambda: pool.serving == WORKERS and pool.puts - pool.gets >= CAPACITY
                         and (pool.accepted > pool.puts or pool.puts == BURST), SETTLE_S)
        kernel_queue = tcp_info(listener).unacked  # connections the kernel holds, not accepted yet
        with pool.lock:
            queued, accepted, served = pool.puts - pool.gets, pool.accepted, pool.gets
        answered, lost = _collect(clients, pool)
        stuck, stopped = pool.stop(), True
    finally:
        if not stopped:
            pool.stop()
    if pool.errors:
        t.fail(f"Your queue raised in the pool's threads: {pool.errors[0]}.", QUEUE_HINT)
    t.require(pool.peak_queued <= CAPACITY,
              f"With {WORKERS} workers busy, your queue held up to {pool.peak_queued} connections at once; its "
              f"capacity is {CAPACITY}.",
              "put() must wait (self.cond.wait() in a while loop) while len(self.items) >= self.capacity: a "
              "bounded queue leaves the rest in the kernel's accept queue, where they cost no thread and no memory "
              "of ours.")
    t.require(not lost, f"{len(lost)} of {BURST} clients never got their echo within {ANSWER_S:g} s "
              f"({pool.gets} connections reached a worker, {pool.puts} were put): a waiting thread was "
              "not woken.",
              "Call self.cond.notify_all() after each change: put() wakes a waiting get(), and get() wakes a "
              "put() waiting for room.")
    t.require(full, f"The pool never reached {WORKERS} connections served and {CAPACITY} queued "
              f"(served {pool.serving}, queued {queued}).", QUEUE_HINT)
    t.require(not stuck, f"Threads still waited in your queue at the end: {stuck}.", QUEUE_HINT)
    return (f"A burst of {BURST} connections on {WORKERS} workers: {WORKERS} served, {queued} waited in your "
            f"queue (capacity {CAPACITY}, never more), {accepted - served - queued} in the acceptor's hand "
            f"and {kernel_queue} in the kernel's accept queue (TCP_INFO on the listener); all {answered} "
            "got their echo in the end, none lost.")


def _collect(clients: list[socket.socket], pool: _Pool) -> tuple[int, list[int]]:
    """Each client reads its echo as soon as it comes, then closes (freeing its worker)."""
    waiting = dict(enumerate(clients))
    got = {i: b"" for i in waiting}
    deadline = time.monotonic() + ANSWER_S
    while waiting and time.monotonic() < deadline and not pool.errors:
        ready, _, _ = select.select(list(waiting.values()), [], [], 0.1)
        for sock in ready:
            i = next(k for k, s in waiting.items() if s is sock)
            got[i] += sock.recv(100)
            if got[i].endswith(b"\n") or not got[i]:
                del waiting[i]
                sock.close()
    answered = sum(got[i] == f"client {i}\n".encode() for i in got)
    return answered, sorted(i for i in got if got[i] != f"client {i}\n".encode())


# -- 2. reaping the fork model's children -----------------------------------------------------

LONG, SHORT = 3, 8  # clients that stay connected, clients that leave while the server is paused
EXIT_S = 3.0  # the longest the check waits for children to exit, be reaped or answer

REAP_HINT = (
    "Loop: try: pid, status = os.waitpid(-1, os.WNOHANG) except ChildProcessError: break (no children "
    "at all); if pid == 0: break (children remain, none has exited); else keep pid. Return the list."
)


def reaper_child(config: dict[str, Any]) -> None:
    """The check's server process: the learner's reap_children() (from its source) run by
    ``c10k.fork_server`` as the SIGCHLD handler. Says ready with the first call's result."""
    namespace: dict[str, Any] = {"os": os, "signal": signal, "socket": socket, "__name__": "learner"}
    try:
        exec(compile(config["source"], "<your reap_children>", "exec"), namespace)  # noqa: S102 - the learner's own cell
        reap = namespace[config["name"]]
        first = reap()
    except Exception as exc:  # noqa: BLE001 - told to the check
        spawn.ready(error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        return
    with listening_socket("127.0.0.1", 0) as listener:
        spawn.ready(address=list(listener.getsockname()[:2]), first=repr(first)[:80], none=first is None)
        fork_server(listener, "echo", reap=lambda: list(reap() or []))


def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _echo(t: Trial, address: tuple[str, int], line: bytes, timeout_s: float = EXIT_S) -> socket.socket | None:
    """A client that sent `line` and got it back within `timeout_s` (a forked child serves it), or None."""
    sock = t.connect(address, timeout_s=timeout_s)
    sock.settimeout(timeout_s)
    try:
        sock.sendall(line)
        got = b""
        while not got.endswith(b"\n") and (chunk := sock.recv(100)):
            got += chunk
    except OSError:
        return None
    return sock if got == line else None


def _source(t: Trial, fn: object) -> str:
    t.require(callable(fn), f"reap_children is {type(fn).__name__} {fn!r:.60}, not a function.",
              "Keep the def statement and fill in its body.")
    try:
        return textwrap.dedent(inspect.getsource(fn))  # type: ignore[arg-type]
    except (OSError, TypeError):
        t.fail("The check could not read the source of reap_children(): it runs it in a server process of "
               "its own, from its source.", "Define it with a def statement in a notebook cell and run that cell.")


@exercise("17", 2, "reap the fork model's children on SIGCHLD", hint=REAP_HINT)
def check_reaper(t: Trial, reap_children: object) -> str:
    source = _source(t, reap_children)
    server = spawn.Child("helpers.practice.lesson17:reaper_child", {"source": source, "name": reap_children.__name__},
                         name="fork server (exercise 2)")
    try:
        hello = server.hello
        if "error" in hello:
            t.fail(f"Called once with no child process yet, reap_children() raised {hello['error']}.",
                   "With no children at all, waitpid() raises ChildProcessError: catch it and return what "
                   "you collected (an empty list).")
        if hello["none"]:
            t.not_done("reap_children() returned None: replace the `...` with your code.")
        address = tuple(hello["address"])
        long = [_echo(t, address, f"long {i}\n".encode()) for i in range(LONG)]
        short = [_echo(t, address, f"short {i}\n".encode()) for i in range(SHORT)]
        t.require(all(long + short), "The fork server did not echo every client.", REAP_HINT)
        t.require(_until(lambda: len(child_states(server.pid)) == LONG + SHORT, EXIT_S),
                  f"The server had {len(child_states(server.pid))} children, not one per client.", REAP_HINT)
        server.signal(signal.SIGSTOP)  # paused: the SIGCHLDs of the children that exit now merge into one
        try:
            for sock in short:
                sock.close()  # type: ignore[union-attr]
            exited = _until(lambda: child_states(server.pid).count("Z") == SHORT, EXIT_S)
        finally:
            server.signal(signal.SIGCONT)
        if not exited:
            raise RuntimeError(f"{SHORT} children did not all exit while the server was paused")
        reaped = _until(lambda: "Z" not in child_states(server.pid), 1.0)
        zombies = child_states(server.pid).count("Z")
        probe = _echo(t, address, b"still there?\n", 1.0)
        t.require(probe is not None,
                  f"{SHORT} children exited while {LONG} others still served; after the SIGCHLD the server "
                  "stopped answering new clients: reap_children() waited for a child still serving.",
                  "Pass os.WNOHANG: waitpid() then returns pid 0 instead of waiting when children remain "
                  "and none has exited.")
        t.require(reaped, f"{SHORT} children exited while the server was paused, so one SIGCHLD told it of all "
                  f"of them (signals do not queue); {zombies} stayed zombies (state Z in /proc).",
                  "Call waitpid(-1, os.WNOHANG) in a loop until it returns pid 0: one signal may stand for "
                  "many children.")
        for sock in long:
            sock.close()  # type: ignore[union-attr]
        probe.close()  # type: ignore[union-attr]
        done = _until(lambda: not child_states(server.pid), EXIT_S)
        left = child_states(server.pid)
    finally:
        server.stop(1.0)  # end of file; a server stuck in a waiting reaper gets SIGTERM after 1 s
    t.require(done, f"After every client left, the server still had children in states {left}.", REAP_HINT)
    return (f"{SHORT} children exited while the server was paused: one SIGCHLD for all of them, and "
            f"reap_children() collected all {SHORT} while {LONG} others still served; no zombie was left in "
            f"/proc, the server kept answering, and once every client left it had no child at all.")


# -- 3. SO_REUSEPORT listeners -----------------------------------------------------------------

LISTENERS = 3
CLIENTS = 48  # the chance that one of 3 listeners gets none of 48 is 3 * (2/3)**48, about 1e-8

REUSEPORT_HINT = (
    "For each of n sockets: socket.socket(), setsockopt(SOL_SOCKET, SO_REUSEPORT, 1) before bind(); the first "
    "binds ('127.0.0.1', 0), the others bind the port the first got (getsockname()[1]); then listen()."
)


@exercise("17", 3, "listeners sharing one port with SO_REUSEPORT", hint=REUSEPORT_HINT)
def check_reuseport(t: Trial, reuseport_listeners: object) -> str:
    out = t.call(reuseport_listeners, LISTENERS, name=f"reuseport_listeners({LISTENERS})", timeout_s=2.0,
                 error_hints={OSError: "EADDRINUSE: every socket needs SO_REUSEPORT set before its bind(), "
                                       "the first one too (SO_REUSEADDR is not enough for two listeners)."}).value
    t.require(isinstance(out, (list, tuple)) and all(isinstance(s, socket.socket) for s in out),
              f"reuseport_listeners() returned {out!r:.80}, not a list of sockets.", REUSEPORT_HINT)
    socks = [t.own(s) for s in out]
    t.require(len(socks) == LISTENERS, f"Asked for {LISTENERS} listeners, got {len(socks)}.", REUSEPORT_HINT)
    t.require(all(s.type == socket.SOCK_STREAM for s in socks),
              "Not every socket is a TCP (SOCK_STREAM) socket.", REUSEPORT_HINT)
    names = {s.getsockname()[:2] for s in socks}
    t.require(len(names) == 1 and next(iter(names))[0] == "127.0.0.1",
              f"The listeners are bound to {sorted(names)}, not one 127.0.0.1 port.", REUSEPORT_HINT)
    t.require(all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in socks),
              "Not every socket is listening.", "Call listen() on each one.")
    t.require(all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks),
              "Not every socket has SO_REUSEPORT set.", REUSEPORT_HINT)
    address = next(iter(names))
    for _ in range(CLIENTS):
        t.connect(address, timeout_s=2.0)
    queues = [tcp_info(s).unacked for s in socks]  # each listener's own accept queue
    t.require(sum(queues) == CLIENTS, f"{CLIENTS} clients connected, but the accept queues hold {queues}.",
              "Call listen() with a backlog of at least 64 on each.")
    t.require(all(queues), f"The kernel's accept queues hold {queues}: one listener got nothing.", REUSEPORT_HINT)
    return (f"{CLIENTS} clients connected to port {address[1]}, and the kernel spread them over your "
            f"{LISTENERS} listeners' accept queues: {', '.join(map(str, queues))} (TCP_INFO on each listener).")
