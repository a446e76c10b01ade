"""Child processes, one convention: a helpers function in ``python -I``, a handshake, stdin for life.

Theory of operation. Servers a lesson pauses or kills, servers measured without the
notebook's own memory, load generators that must not share the notebook's interpreter: all
run as child processes, and all start, talk and stop the same way.

* **Start.** ``Child("helpers.c10k:model_child", config)`` runs
  ``python -I -c BOOT <package root> helpers.c10k:model_child <config as JSON>``. ``-I``
  (isolated mode) leaves out PYTHONPATH, the user's site-packages and the current folder, so
  what a learner's folder holds cannot shadow a module; BOOT puts the package root of *this*
  process first on ``sys.path``, so the child runs the same helpers as its parent (a copy of
  the course, an editable install, a worktree). The entry is imported by its module name, a
  plain import: ``python -m helpers.servers`` would run servers.py a second time as
  ``__main__``, beside the ``helpers.servers`` other modules import (runpy warns "found in
  sys.modules"), with two copies of every class. Children are started with ``subprocess``,
  never by ``fork()`` of the multi-threaded Jupyter kernel, each in a session of its own
  (``start_new_session``): its own process group, which ``stop()`` can signal as a whole.
  A child that a lesson pauses (SIGSTOP) stays in its parent's group instead
  (``own_group=False``): a stopped process cannot see end of file, so if the notebook's
  kernel is restarted meanwhile, only the SIGKILL Jupyter sends the kernel's group ends it.
* **Handshake.** The child says one JSON line on its stdout when it is ready, ``{"event":
  "ready", "pid": ..., ...}`` (a server adds its address). The parent waits for that line
  with a deadline; a child that exits first, says something else or stays silent is killed,
  and ``ChildError`` shows the end of its stderr.
* **Messages.** After that, JSON lines both ways: commands on the child's stdin, events on
  its stdout. The child writes them to a private copy of fd 1, and points fd 1 itself at
  its stderr, so a stray ``print()`` cannot break the protocol. The parent reads stdout with
  ``os.read`` and its own line buffer: a buffered reader could swallow a second line that
  ``select()`` would then never report.
* **Lifetime.** A child lives while its stdin is open: end of file means "stop". The parent
  closes it in ``stop()``, and the kernel closes it when the parent dies, however it dies,
  so a child cannot outlive the notebook for long.
* **Stop.** SIGCONT first (a paused child cannot see end of file), then stdin closed and a
  wait; SIGTERM to the process group if the child is still there; SIGKILL if it still is.
  Then, while the child is a zombie (exited, not yet reaped, so its process-group id cannot
  be reused by anyone), SIGKILL to its group once more sweeps up whatever it forked; then it
  is reaped. ``stop()`` is idempotent and returns the exit code.
* **stderr** goes to an unnamed temporary file, never a pipe: a chatty child would block on
  a full pipe nobody reads. ``stderr_tail()`` shows its end.

The child side is ``child_main()`` (what BOOT calls), ``ready()`` and ``say()`` to answer,
``commands()`` (blocking) or ``CommandReader`` (for a select loop) to listen, and
``on_eof()`` for a child whose main thread waits elsewhere.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import select
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import checks

__all__ = [
    "ChildError", "Child", "PACKAGE_ROOT", "child_main", "ready", "say", "commands", "CommandReader", "on_eof",
]

#: The folder that holds the ``helpers`` package this process runs.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
#: What ``python -I -c`` runs: put the parent's package root first, then hand over to child_main().
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from helpers.core.spawn import child_main; child_main()"
_ENTRY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
MAX_WAIT_S = 600.0  # the longest a start, read or stop may be asked to wait
TERM_GRACE_S = 1.0  # after SIGTERM, how long a child may take before SIGKILL


class ChildError(RuntimeError):
    """A child process failed: it exited, or did not answer. ``stderr`` is the end of what it
    wrote there, ``returncode`` its exit code (None while it runs; negative: killed by that signal)."""

    def __init__(self, message: str, *, stderr: str = "", returncode: int | None = None):
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


# ============================================================================ the parent's side


class Child:
    """A child process running `entry` ('helpers.module:function') with `config` (JSON data).

    The child leads a process group of its own unless `own_group` is False (see the module's
    docstring). Returns once the child said it is ready (unless `wait` is False: then call
    ``wait_ready()``); ``hello`` is that message. ``send()`` a command, ``read()`` the next event, ``ask()`` both,
    ``stop()`` (or leave the ``with`` block) to end it. Raises TypeError/ValueError for a bad
    entry or config before anything starts, ChildError if the child exits or answers something
    else than ready, TimeoutError (after stopping it) if it says nothing within `start_timeout_s`.
    """

    def __init__(self, entry: str, config: dict[str, Any] | None = None, *, name: str | None = None,
                 start_timeout_s: float = 10.0, wait: bool = True, own_group: bool = True):
        if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
            raise ValueError(f"entry must name a function as 'package.module:function', got {entry!r}")
        try:
            config_json = json.dumps({} if config is None else config)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"config must be JSON data (dicts, lists, str, numbers): {exc}") from None
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict of JSON data, got {type(config).__name__} {config!r:.60}")
        self.start_timeout_s = checks.seconds("start_timeout_s", start_timeout_s, high=MAX_WAIT_S)
        if not isinstance(own_group, bool):
            raise TypeError(f"own_group must be True or False, got {own_group!r}")
        self.own_group = own_group
        self.entry = entry
        self.hello: dict[str, Any] = {}
        self.name = name or entry
        self.returncode: int | None = None
        self._buffer = b""
        self._stopped = False
        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", BOOT, PACKAGE_ROOT, entry, config_json],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=own_group,
            )
        except BaseException:
            self._stderr.close()
            raise
        assert self.process.stdout is not None
        self._fd = self.process.stdout.fileno()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the handshake (``wait=False`` starts several children side by side, then waits
        for each); return it, also kept as ``hello``. On failure the child is stopped and ChildError
        or TimeoutError raised."""
        if self.hello:
            return self.hello
        try:
            hello = self.read(self.start_timeout_s, waiting_for="its handshake (the 'ready' line)")
            if hello.get("event") != "ready":
                raise ChildError(f"{self.name}: the child's first line was {hello!r}, not 'ready'",
                                 stderr=self.stderr_tail(), returncode=self.process.poll())
        except BaseException:
            self.stop(0)
            raise
        self.hello = hello
        return hello

    # -- talking ----------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The child's process id (also its process-group id)."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """True until the child has exited (a paused child is running)."""
        return self.process.poll() is None

    def fileno(self) -> int:
        """The child's stdout (readable when it said something), for a selector over many children."""
        return self._fd

    def send(self, message: dict[str, Any]) -> None:
        """Write one command line to the child's stdin; ChildError if the child has gone."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):  # ValueError: stdin already closed by stop()
            raise self._gone(f"could not send {message!r:.80}") from None

    def take(self) -> list[dict[str, Any]]:
        """The complete messages the child has written: those read() left buffered, else what
        one read of its stdout brings (call when fileno() is readable; maybe none).
        ChildError if it closed its stdout (it exited)."""
        if b"\n" not in self._buffer:
            data = os.read(self._fd, 1 << 20)
            if not data:
                raise self._gone("exited")
            self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [self._parse(line) for line in lines if line.strip()]

    def read(self, timeout_s: float = 10.0, *, waiting_for: str = "an answer") -> dict[str, Any]:
        """The child's next message; TimeoutError (the child left running) if none comes in time."""
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S, zero_ok=True)
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                if line.strip():
                    return self._parse(line)
            with selectors.DefaultSelector() as sel:
                sel.register(self._fd, selectors.EVENT_READ)
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{self.name}: waited {timeout_s} s for {waiting_for} from child {self.pid}; "
                                       f"its stderr: {self.stderr_tail(800) or '(empty)'}")
            data = os.read(self._fd, 1 << 20)
            if not data:
                raise self._gone(f"exited before {waiting_for}")
            self._buffer += data

    def ask(self, message: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        """send(message), then read() the answer."""
        self.send(message)
        return self.read(timeout_s, waiting_for=f"an answer to {message!r:.60}")

    def _parse(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise ChildError(f"{self.name}: child {self.pid} wrote {line[:200]!r}, not a JSON message",
                             stderr=self.stderr_tail(), returncode=self.process.poll())
        return message

    def _gone(self, what: str) -> ChildError:
        try:
            code = self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        tail = self.stderr_tail()
        return ChildError(f"{self.name}: child {self.pid} {what} (exit code {code}); its stderr: {tail or '(empty)'}",
                          stderr=tail, returncode=code)

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last `limit` characters the child wrote to stderr ('' once stopped)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0 (characters), got {limit!r}")
        if self._stderr.closed or limit == 0:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    # -- signals and the end ------------------------------------------------------------------
    def send_eof(self) -> None:
        """Close the child's stdin, its signal to stop, without waiting (``stop()`` waits): to
        let several children wind down side by side."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:  # a broken pipe while flushing: the child is gone already
            pass

    def signal(self, sig: int) -> None:
        """Send `sig` to the child alone (SIGSTOP pauses it, SIGCONT resumes it)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL the child's whole process group at once, reap the child, return its exit code."""
        self._signal_group(signal.SIGKILL)
        return self.process.wait()

    def stop(self, timeout_s: float = 3.0) -> int:
        """End the child: stdin closed, then SIGTERM, then SIGKILL to its group; reap it.

        Waits up to `timeout_s` for the child to leave on its own, then 1 s after SIGTERM.
        Returns the exit code (negative: killed by that signal). Idempotent.
        """
        checks.seconds("timeout_s", timeout_s, high=MAX_WAIT_S, zero_ok=True)
        if self._stopped:
            return self.returncode if self.returncode is not None else self.process.wait()
        self._stopped = True
        self._signal_group(signal.SIGCONT)
        self.send_eof()
        if not self._wait_exit(timeout_s):
            self._signal_group(signal.SIGTERM)
            if not self._wait_exit(TERM_GRACE_S):
                self._signal_group(signal.SIGKILL)
                self._wait_exit(None)
        self._signal_group(signal.SIGKILL)  # the leader is a zombie: its group id is still its own
        self.returncode = self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()
        return self.returncode

    def _signal_group(self, sig: int) -> None:
        """`sig` to the child's process group (to the child alone if it shares ours)."""
        if self.process.returncode is not None:
            return  # reaped already: its pid, and so its group id, may belong to another process now
        try:
            if self.own_group:
                os.killpg(self.process.pid, sig)  # start_new_session: the group id is the child's pid
            else:
                os.kill(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_exit(self, timeout_s: float | None) -> bool:
        """Wait until the child has exited, without reaping it (so its group id stays taken)."""
        if self.process.returncode is not None:
            return True
        try:
            pidfd = os.pidfd_open(self.process.pid)
        except (AttributeError, OSError):  # Linux < 5.3: ask waitid() every few ms instead
            return self._poll_exit(timeout_s)
        try:
            poller = select.poll()  # not select(): the notebook may hold more than 1024 descriptors
            poller.register(pidfd, select.POLLIN)
            return bool(poller.poll(None if timeout_s is None else timeout_s * 1000))  # readable once it exited
        finally:
            os.close(pidfd)

    def _poll_exit(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        if not getattr(self, "_stopped", True):
            warnings.warn(f"child process {self.name} (pid {self.pid}) was never stopped", ResourceWarning,
                          stacklevel=1)

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.pid} {'running' if self.running else 'exited'}>"


# ============================================================================= the child's side

_out_fd = 1  # where say() writes: a private copy of the original stdout, once child_main() ran


def child_main() -> None:
    """The child's start (BOOT calls it): protect the message channel, import the entry, run it.

    argv: package root, 'module:function', config JSON. SIGINT is ignored (an interrupt is
    meant for the notebook). SIGTERM keeps its default action, ending the process at once
    whichever thread the kernel hands it to: a Python handler runs in the main thread only,
    which may sleep on in a read while a server thread took the signal. A child cleans up on
    the end-of-file path; SIGTERM is the parent's second resort.
    """
    global _out_fd
    _, _root, entry, config = sys.argv
    _out_fd = os.dup(1)
    os.dup2(2, 1)  # print() now lands in stderr, not in the protocol
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    module, function = entry.split(":")
    getattr(importlib.import_module(module), function)(json.loads(config))


def say(message: dict[str, Any]) -> None:
    """Write one JSON line to the parent (from the child's main thread)."""
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(_out_fd, data):]


def ready(**fields: Any) -> None:
    """The handshake: tell the parent this child is ready, with its pid and `fields` (an address...)."""
    say({"event": "ready", "pid": os.getpid(), **fields})


def commands() -> Iterator[dict[str, Any]]:
    """The parent's commands, one at a time, blocking; the iteration ends at end of file."""
    reader = CommandReader()
    while (batch := reader.read()) is not None:
        yield from batch


class CommandReader:
    """The parent's commands for a select loop: register ``fileno()`` (0) and call ``read()``
    when it is readable; it returns the complete commands (maybe none), or None at end of file."""

    def __init__(self) -> None:
        self._buffer = b""

    def fileno(self) -> int:
        """stdin's descriptor."""
        return 0

    def read(self) -> list[dict[str, Any]] | None:
        """What arrived: complete commands, [] for a partial line, None once stdin is closed."""
        data = os.read(0, 65536)
        if not data:
            return None
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def on_eof(callback: Callable[[], None]) -> threading.Thread:
    """Call `callback()` once stdin closes, from a thread of its own (for a child whose main
    thread waits in something else, such as asyncio's loop); commands are ignored."""
    def wait() -> None:
        while os.read(0, 65536):
            pass
        callback()

    thread = threading.Thread(target=wait, name="course-child-stdin", daemon=True)
    thread.start()
    return thread
