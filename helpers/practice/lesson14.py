"""Checks for the exercises of lesson 14 (select).

1. ``echo_until_quiet(listener, quiet_s)``: an echo server on one select() loop that returns
   when select() has found nothing to do for `quiet_s` seconds. Clients, run by the check
   in a thread beside the learner's loop, connect together; the second one speaks first
   while the third stays silent (a loop that waits on each client in turn stalls there); a
   fourth connects, speaks and closes (its end of file stays readable for ever, so a loop
   that keeps watching it never goes quiet). Then everyone is silent: the loop must wake on
   its timeout, close the connections (the clients read end of file) and return 4.
2. ``ready(sock)``: the readiness rules as a predicate, (readable, writable) right now. The
   check stages each situation on real sockets (an idle listener, a listener with a
   connection in its accept queue, a fresh connection, data received, end of file, a send
   buffer the peer does not drain), waits until the kernel's own poll() shows it, and
   compares; it also checks that looking took nothing (the data and the queued connection
   are still there).
3. ``relay(a, b)``: copy bytes both ways with one select() loop and pass an end of file on
   with shutdown(SHUT_WR), as the original course's select client does with the keyboard
   and the socket. The far end of `a` sends and half-closes; the far end of `b` answers
   only after it has seen that end of file, after a pause, so a relay that stops at the
   first end of file loses the answer, and one that keeps watching the finished side spins
   on the CPU meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..closing import connected_pair, fill_send_queue, queued, wait_for_inq, wait_for_state
from ..core.registry import THREAD_PREFIX
from ..observe import TcpState, tcp_info
from .core import Trial, exercise

SPIN_CPU_S = 0.03  # a loop busy on the CPU this long (and...)
SPIN_SHARE = 0.05  # ...this share of its time) was not sleeping in select(): a loop that sleeps uses ~0


class _Problem(Exception):
    """What the check's own side of the conversation saw go wrong, in the learner's words."""


class _Script:
    """The check's side of a conversation, run in a thread beside the learner's code.

    ``fn(script, *args)`` runs at once; ``result()`` waits for what it returned (a _Problem
    it raised is returned as is). ``stop()`` shuts its sockets down (that wakes a blocked
    recv()) and joins the thread: call it in a ``finally``.
    """

    def __init__(self, label: str, fn: Callable[..., Any], *args: Any):
        self.sockets: list[socket.socket] = []
        self.value: Any = None
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True,
                                        name=f"{THREAD_PREFIX}-check-{label}")
        self._thread.start()

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.value = fn(self, *args)
        except BaseException as exc:  # noqa: BLE001 - handed to the check by result()
            self.error = exc

    def pause(self, seconds: float) -> bool:
        """Sleep `seconds` (the experiment's slow peer) unless stop() comes first; True if it did."""
        return self._stopping.wait(seconds)

    def use(self, sock: socket.socket, timeout_s: float) -> socket.socket:
        """Take `sock` into the script (shut down by stop()), with a timeout on every call."""
        if self._stopping.is_set():
            raise _Problem("the check stopped")
        sock.settimeout(timeout_s)
        self.sockets.append(sock)
        return sock

    def result(self, timeout_s: float) -> Any:
        """What the script returned, or the _Problem it raised; RuntimeError if it is still running."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"the check's {self._thread.name} did not finish within {timeout_s} s")
        if isinstance(self.error, _Problem):
            return self.error
        if self.error is not None:
            raise self.error
        return self.value

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stopping.set()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed, or never connected
                pass
        self._thread.join(timeout_s)


def _read_to_eof(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until end of file: (bytes, "eof"), or what ended the reading instead."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return bytes(data), "timeout"
    except OSError as exc:
        return bytes(data), type(exc).__name__
    return bytes(data), "eof"


def _spun(cpu_s: float, wall_s: float) -> bool:
    return cpu_s > SPIN_CPU_S and cpu_s > SPIN_SHARE * wall_s


# -- 1. echo_until_quiet -------------------------------------------------------------------

QUIET_S = 0.5  # what the check passes as quiet_s
ECHO_WAIT_S = 1.0  # how long a client waits for its echo (loopback takes well under a millisecond)
LATE_S = 2.0  # after quiet_s, how much later the loop may return on a busy machine

QUIET_HINT = (
    "Keep a list of connections. Loop: readable, _, _ = select.select([listener, *conns], [], [], "
    "quiet_s). An empty list means the timeout passed with nothing to do: close every connection "
    "and return how many you accepted. The listener readable: accept() and add the connection. A "
    "connection readable: recv(); echo what came with sendall(); on b'' (end of file) remove it "
    "from the list and close it."
)


def _clients(script: _Script, t: Trial, address: Any) -> dict[str, Any]:
    """Four clients: the second speaks first, the third never, the fourth closes; then silence."""
    def connect() -> socket.socket:
        return script.use(t.connect(address), ECHO_WAIT_S)

    def echo(who: str, sock: socket.socket, line: bytes) -> float:
        started = time.monotonic()
        sock.sendall(line)
        got = b""
        try:
            while len(got) < len(line) and (chunk := sock.recv(len(line) - len(got))):
                got += chunk
        except TimeoutError:
            raise _Problem(f"{who} sent {line!r} and waited {ECHO_WAIT_S:g} s: "
                           f"{'no echo came back' if not got else f'only {got!r} came back'}.") from None
        if got != line:
            raise _Problem(f"{who} sent {line!r} and got {got!r} back before the connection closed.")
        return time.monotonic() - started

    first, second, silent = connect(), connect(), connect()
    waits = [echo("The second client", second, b"second: hello"),  # before the first says anything
             echo("The first client", first, b"first: hello")]
    fourth = connect()
    waits.append(echo("A fourth client", fourth, b"fourth: hi and bye"))
    fourth.close()  # end of file for the server: it must stop watching this one
    waits.append(echo("The first client, after the fourth left,", first, b"first: still there?"))
    last_echo = time.monotonic()
    eof = {}
    for who, sock in (("the first client", first), ("the second client", second), ("the silent client", silent)):
        sock.settimeout(QUIET_S + LATE_S + 1.0)
        data, how = _read_to_eof(sock)
        eof[who] = how if not data else f"{len(data)} unexpected bytes"
    return {"last_echo": last_echo, "slowest_echo_s": max(waits), "eof": eof}


@exercise("14", 1, "a select() loop that wakes on its timeout", hint=QUIET_HINT)
def check_echo_until_quiet(t: Trial, echo_until_quiet: object) -> str:
    listener = t.own(socket.create_server(("127.0.0.1", 0)))
    clients = _Script("14-1-clients", _clients, t, listener.getsockname())
    try:
        out = t.call(echo_until_quiet, listener, QUIET_S, name="echo_until_quiet(listener, 0.5)",
                     timeout_s=QUIET_S + 3.0, hang_hint=(
                         "The clients went silent, but the loop never returned. Two usual causes: select() "
                         "without the timeout (pass quiet_s as its fourth argument), or a client that closed "
                         "still in the list: its end of file stays readable for ever, so select() never "
                         "times out. On b'' remove the connection from the list and close it."))
        returned = time.monotonic()
        seen = clients.result(timeout_s=LATE_S + 2.0)
    finally:
        clients.stop()
    if isinstance(seen, _Problem):
        t.fail(f"{seen} The loop has to serve whichever client is ready, in any order.", QUIET_HINT)
    quiet = returned - seen["last_echo"]
    t.require(quiet >= 0.8 * QUIET_S, f"echo_until_quiet() returned {quiet:.2f} s after the last echo, before "
              f"{QUIET_S:g} s of silence: it did not wait for select()'s timeout.",
              "Return only when select() comes back with empty lists: that is the timeout passing.")
    left_open = [who for who, how in seen["eof"].items() if how != "eof"]
    t.require(not left_open, f"After echo_until_quiet() returned, {', '.join(left_open)} read no end of file "
              f"({', '.join(seen['eof'][w] for w in left_open)}).",
              "Close every connection you accepted before returning (a try/finally does it on any exit).")
    served = out.value
    t.require(served == 4, f"Four clients connected, but echo_until_quiet() returned {served!r:.40}.",
              "Count each accept() and return the count.")
    t.require(not _spun(out.cpu_s, out.wall_s), f"Every client was served, but your loop kept the CPU busy for "
              f"{out.cpu_s:.2f} s of its {out.wall_s:.2f} s: it asked select() again and again instead of "
              "sleeping in it.", "Pass quiet_s as select()'s timeout, not 0: select() then sleeps until "
              "something is ready or the time is up.")
    return (f"One thread served 4 clients in the order they spoke: the second client's echo came while the first "
            f"and third were silent (slowest echo {seen['slowest_echo_s'] * 1e3:.1f} ms), the fourth client's end "
            f"of file was handled, and select() woke on its timeout {quiet:.2f} s after the last echo. Your loop "
            f"used {out.cpu_s * 1e3:.0f} ms of CPU in {out.wall_s:.2f} s, and every client then read end of file.")


# -- 2. ready ------------------------------------------------------------------------------

READY_HINT = (
    "One call that only looks: r, w, _ = select.select([sock], [sock], [], 0), then return "
    "(bool(r), bool(w)). A timeout of 0 means 'answer now'; do not recv(), accept() or send(): "
    "asking must not take anything."
)
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR  # what select() counts as readable (fs/select.c)
_WRITABLE = select.POLLOUT | select.POLLERR


def _kernel_says(sock: socket.socket) -> tuple[bool, bool]:
    """(readable, writable) as the kernel answers poll() now, mapped as select() maps it."""
    p = select.poll()
    p.register(sock, select.POLLIN | select.POLLOUT)
    events = sum(ev for _, ev in p.poll(0))
    return bool(events & _READABLE), bool(events & _WRITABLE)


def _settled(sock: socket.socket, expected: tuple[bool, bool], what: str) -> None:
    """Wait until the kernel shows `expected` for `sock` (loopback settles within microseconds)."""
    deadline = time.monotonic() + 2.0
    while _kernel_says(sock) != expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the check could not stage {what}: the kernel says {_kernel_says(sock)}")
        time.sleep(0.001)


def _word(flags: tuple[bool, bool]) -> str:
    return " and ".join(w for w, f in zip(("readable", "writable"), flags) if f) or "neither readable nor writable"


@exercise("14", 2, "ready(): the readiness rules", hint=READY_HINT)
def check_ready(t: Trial, ready: object) -> str:
    rows: list[str] = []

    def ask(what: str, sock: socket.socket, expected: tuple[bool, bool], rule: str) -> None:
        _settled(sock, expected, what)
        out = t.call(ready, sock, name=f"ready() on {what}", timeout_s=1.0, hang_hint=(
            f"On {what}, which is {_word(expected)}, ready() was still waiting after 1 s: select() without a "
            "timeout waits until something is ready. Pass 0 as the timeout: just look."))
        got = out.value
        t.require(isinstance(got, tuple) and len(got) == 2 and all(isinstance(x, bool) for x in got),
                  f"ready() returned {got!r:.60}; return two bools, (readable, writable).", READY_HINT)
        t.require(got == expected, f"On {what}, ready() returned {got}, but the kernel says {_word(expected)} "
                  f"{expected}: {rule}", READY_HINT)
        rows.append(f"{what}: {_word(got)}")

    listener = t.own(socket.create_server(("127.0.0.1", 0)))
    ask("a listener nobody connects to", listener, (False, False),
        "a listener is readable only when a connection waits in its accept queue, and never writable.")
    waiting = t.connect(listener.getsockname())
    deadline = time.monotonic() + 2.0
    while tcp_info(listener).unacked < 1 and time.monotonic() < deadline:  # a LISTEN socket's accept queue
        time.sleep(0.001)
    ask("a listener with a connection in its accept queue", listener, (True, False),
        "accept() would return at once: that is readable.")
    t.require(tcp_info(listener).unacked == 1, "After ready(), the accept queue was empty: ready() accepted the "
              "connection. Asking must not take it.", READY_HINT)
    waiting.close()

    client, server = (t.own(s) for s in connected_pair(bufsize=64 * 1024))
    ask("a fresh connection", client, (False, True), "nothing to read yet, and the send buffer has room.")
    server.sendall(b"x" * 1000)
    wait_for_inq(client, 1000)
    ask("a connection with 1,000 bytes received", client, (True, True), "recv() would return the bytes at once.")
    t.require(queued(client)[0] == 1000, f"After ready(), {queued(client)[0]:,} of the 1,000 bytes were left to "
              "read: ready() took them. Asking must not read.", READY_HINT)
    client.recv(1000)
    server.shutdown(socket.SHUT_WR)
    wait_for_state(client, TcpState.CLOSE_WAIT)
    ask("a connection whose peer closed (end of file)", client, (True, True),
        "recv() would return b'' at once, so end of file counts as readable.")

    writer, _reader = (t.own(s) for s in connected_pair(bufsize=64 * 1024))
    for _ in range(20):  # fill until the kernel itself stops calling it writable
        filled = fill_send_queue(writer)
        if not _kernel_says(writer)[1]:
            break
    ask(f"a connection whose peer reads nothing ({filled:,} more bytes refused)", writer, (False, False),
        "the send buffer is full, so send() would wait: not writable.")
    return "ready() matched the kernel in all six situations: " + "; ".join(rows) + ". And it took nothing."


# -- 3. relay ------------------------------------------------------------------------------

A_BYTES = 256 * 1024  # what a's far end sends
B_BYTES = 128 * 1024  # what b's far end answers, only after it has seen a's end of file
REPLY_PAUSE_S = 0.5  # b's far end waits this long before answering: a slow peer
READ_WAIT_S = REPLY_PAUSE_S + 1.5  # how long the far ends wait for bytes that should come

RELAY_HINT = (
    "Keep a list of the sides still sending, [a, b], and loop while it is not empty: "
    "select.select(sides, [], []); for each readable side, recv(); bytes go to the other side "
    "with sendall(); b'' means that side is done: call other.shutdown(socket.SHUT_WR) to pass the "
    "end of file on, and remove the side from the list (the other direction goes on). Return "
    "(bytes read from a, bytes read from b); do not close the sockets."
)


def _far_a(script: _Script, x: socket.socket, data: bytes) -> tuple[bytes, str]:
    """a's far end: send, half-close, then read what comes back until end of file."""
    x = script.use(x, READ_WAIT_S)
    x.sendall(data)
    x.shutdown(socket.SHUT_WR)
    return _read_to_eof(x)


def _far_b(script: _Script, y: socket.socket, reply: bytes) -> tuple[bytes, str, str]:
    """b's far end: read until end of file, pause, then answer and half-close."""
    y = script.use(y, READ_WAIT_S)
    got, how = _read_to_eof(y)
    if how != "eof" or script.pause(REPLY_PAUSE_S):  # the experiment: a peer that answers late
        return got, how, "not sent"
    try:
        y.sendall(reply)
        y.shutdown(socket.SHUT_WR)
    except OSError as exc:
        return got, how, f"{type(exc).__name__} ({exc.strerror})"
    return got, how, "sent"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@exercise("14", 3, "a two-way relay that passes end of file on", hint=RELAY_HINT)
def check_relay(t: Trial, relay: object) -> str:
    x, a = (t.own(s) for s in connected_pair())
    b, y = (t.own(s) for s in connected_pair())
    data_a, data_b = os.urandom(A_BYTES), os.urandom(B_BYTES)
    far_a = _Script("14-3-a", _far_a, x, data_a)
    far_b = _Script("14-3-b", _far_b, y, data_b)
    try:
        out = t.call(relay, a, b, name="relay(a, b)", timeout_s=REPLY_PAUSE_S + 3.0, hang_hint=(
            "Both far ends had sent everything and half-closed, but relay() never returned. Remove a side "
            "from the list when its recv() returns b'', and return when the list is empty."))
        got_b, how_b, reply = far_b.result(READ_WAIT_S + 2.0)
        got_a, how_a = far_a.result(READ_WAIT_S + 2.0)
    finally:
        far_a.stop()
        far_b.stop()
    t.require(_digest(got_b) == _digest(data_a), f"a's far end sent {A_BYTES:,} bytes; b's far end received "
              f"{len(got_b):,}{' (not the same bytes)' if len(got_b) == A_BYTES else ''}.", RELAY_HINT)
    t.require(how_b == "eof", f"b's far end received all {A_BYTES:,} bytes but no end of file (its recv() ended "
              f"with: {how_b}).", "When recv(a) returns b'', call b.shutdown(socket.SHUT_WR): b's peer then "
              "reads b'' too.")
    t.require(reply == "sent", f"b's far end saw end of file and answered, but its send failed: {reply}. relay() "
              "closed b, which ends both directions.", "Pass the end of file on with shutdown(socket.SHUT_WR), "
              "not close(): the other direction must stay open.")
    t.require(_digest(got_a) == _digest(data_b) and how_a == "eof", f"After a's end of file, b's far end "
              f"answered with {B_BYTES:,} bytes and half-closed; a's far end received {len(got_a):,} bytes "
              f"({how_a}).", "An end of file ends one direction only: stop watching that side, keep copying "
              "the other way until it ends too.")
    t.require(out.value == (A_BYTES, B_BYTES), f"The bytes went through, but relay() returned {out.value!r:.60}, "
              f"not ({A_BYTES}, {B_BYTES}).", "Count what recv() returned from each side.")
    t.require(a.fileno() != -1 and b.fileno() != -1, "relay() closed a or b.",
              "Leave closing to the caller: the sockets are not relay()'s.")
    t.require(not _spun(out.cpu_s, out.wall_s), f"Everything arrived, but relay() kept the CPU busy for "
              f"{out.cpu_s:.2f} s of its {out.wall_s:.2f} s while b's far end took its time to answer: a side "
              "at end of file stays readable, so select() returns at once for ever.",
              "Rebuild the list you give select() so it holds only the sides still sending.")
    return (f"relay() copied {A_BYTES:,} bytes a -> b and passed a's end of file on; b's far end answered "
            f"{REPLY_PAUSE_S:g} s later with {B_BYTES:,} bytes, which reached a's far end, followed by end of file. "
            f"While it waited, your loop slept: {out.cpu_s * 1e3:.0f} ms of CPU in {out.wall_s:.2f} s.")
