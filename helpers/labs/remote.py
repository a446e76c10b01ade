"""The learner's process as the tests see it: start it, load it, call into it, restart it.

Theory of operation. The runner (trusted) owns one ``Learner``: the learner's process
(``learner.py``), started through the sandbox launcher or, in the fallback, directly.
The runner binds each name a task defines (``readn``, ``Decoder``, ``serve_chat``) to a
``RemoteFunction`` in the tests' namespace. Calling one sends a frame over the channel and
waits for the answer, so a test reads like a plain call. Arguments are copied (data,
paths, the course's dataclasses) or passed as file descriptors (sockets); an object that
cannot be copied back arrives as a ``RemoteObject`` whose methods are calls too. An
exception raised by the learner's code is raised here as the same class when the tests
know it (a builtin, or a class the lab's setup cells define, such as ``ProtocolError``),
else as ``LearnerError``; BaseExceptions such as SystemExit never cross.

Loading is watched cell by cell: the learner's process announces each cell and its end,
and when one does not end in time or ends the process, the process is killed and started
again with that cell replaced by stubs that raise the reason. So one hanging or crashing
task costs only its own tests. A test that times out, or during which the process died,
also gets a fresh process for the next test.

Nothing the learner's process sends decides a verdict: answers are values handed to the
test's own asserts, and the test decides.
"""

from __future__ import annotations

import builtins
import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..c10k import process_tree  # pid and its descendants, from the kernel's /proc (not the process's word)
from . import sandbox
from .wire import Channel, Codec, WireError

__all__ = ["Learner", "LearnerGone", "LearnerError", "RemoteFunction", "RemoteObject", "LearnerSetup", "process_tree"]

#: Grace given to the learner's own cell timer before the runner kills the process.
KILL_GRACE_S = 3.0
#: Restarts of the learner's process allowed per submission (a process that dies in every test).
MAX_STARTS = 25


class LearnerGone(Exception):
    """The learner's process ended (or was stopped) while a call was waiting for it."""


class LearnerError(Exception):
    """The learner's code raised an exception of a class the tests do not know."""


@dataclass
class LearnerSetup:
    """How to start the learner's process."""

    cells: list[dict[str, Any]]  # setup, parameters, task and learner-side cells, in order
    parameters: dict[str, Any]
    scratch: str
    cell_timeout_s: float
    use_sandbox: bool
    rlimits: dict[str, int] = field(default_factory=dict)
    mark: str = ""  # an environment entry NAME=value for the fallback's cleanup


def _stub(cell: dict[str, Any], reason: str) -> str:
    """Source defining each of the cell's names as a function that raises `reason`."""
    lines = []
    for name in cell.get("names", []):
        lines += [f"def {name}(*args, **kwargs):", f"    raise RuntimeError({reason!r})", ""]
    return "\n".join(lines) or f"raise RuntimeError({reason!r})"


def _note(exc: BaseException, text: str) -> None:
    """exc.add_note(text), also on Python 3.10 (where notes are only an attribute)."""
    notes = getattr(exc, "__notes__", None)
    exc.__notes__ = [*(notes or []), text]  # type: ignore[attr-defined]


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RemoteFunction:
    """A name the learner's code defines, as the tests see it: calling it runs it there."""

    def __init__(self, learner: Learner, name: str):
        self._learner, self._name = learner, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._learner.request({"op": "call", "name": self._name}, args, kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._learner.request({"op": "get", "name": self._name, "attr": attr}, (), {})

    def __repr__(self) -> str:
        return f"<the learner's {self._name}>"


class RemoteObject:
    """An object living in the learner's process (one that cannot be copied), by handle."""

    def __init__(self, learner: Learner, info: dict[str, Any], generation: int):
        self._learner, self._info, self._generation = learner, info, generation

    def _target(self, attr: str | None = None) -> dict[str, Any]:
        if self._generation != self._learner.generation:
            raise LearnerGone(f"this {self._info.get('type')} object belonged to the learner's process before it "
                              "was restarted")
        target: dict[str, Any] = {"handle": self._info["h"]}
        if attr is not None:
            target["attr"] = attr
        return target

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        if attr in self._info.get("methods", []):
            return _BoundRemote(self, attr)
        return self._learner.request({"op": "get", **self._target(attr)}, (), {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._info.get("call"):
            raise TypeError(f"the learner's {self._info.get('type')} object is not callable")
        return self._learner.request({"op": "call", **self._target()}, args, kwargs)

    def __enter__(self) -> Any:
        if not self._info.get("context"):
            raise TypeError(f"the learner's {self._info.get('type')} object is not a context manager")
        return _BoundRemote(self, "__enter__")()

    def __exit__(self, *exc: Any) -> Any:
        return _BoundRemote(self, "__exit__")(None, None, None)

    def __repr__(self) -> str:
        return f"<the learner's {self._info.get('type')} object>"


class _BoundRemote:
    def __init__(self, obj: RemoteObject, attr: str):
        self._obj, self._attr = obj, attr

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._obj._learner.request({"op": "call", **self._obj._target(self._attr)}, args, kwargs)


class Learner:
    """The learner's process, seen from the runner."""

    def __init__(self, setup: LearnerSetup, known: dict[str, Any], sink: Any):
        self.setup = setup
        self.known = known  # the tests' namespace: exception classes are looked up here
        self.sink = sink  # called with the learner process's output text, as it comes
        self.generation = 0
        self.starts = 0
        self.skipped: dict[int, str] = {}  # cell index -> why it was replaced by stubs
        self.cell_results: dict[int, dict[str, Any]] = {}  # index -> {"error", "output"} of the last load
        self.proc: subprocess.Popen[bytes] | None = None  # the launcher
        self.worker_pid = 0  # the learner's process itself (it may outlive its launcher)
        self.chan: Channel | None = None
        self._pending: dict[int, list[Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.inflight = 0
        self.codec = Codec(self._export, self._resolve)
        self.gone_reason = ""
        self._closed = threading.Event()  # set when this generation's channel has closed

    # -- values --------------------------------------------------------------------------

    def _export(self, value: Any) -> Any:
        if isinstance(value, RemoteObject):
            return {"$": "ref", "h": value._target()["handle"]}
        raise TypeError(f"cannot pass {type(value).__name__} {value!r:.60} to the learner's code: only data (bytes, "
                        "str, numbers, lists, dicts, ...), paths, sockets and the learner's own objects")

    def _resolve(self, ref: dict[str, Any]) -> Any:
        if ref.get("$") != "handle" or not isinstance(ref.get("h"), int):
            raise WireError(f"the learner's process sent a reference of the wrong kind: {ref!r:.80}")
        methods = ref.get("methods", [])
        info = {"h": ref["h"], "type": str(ref.get("type", "?"))[:80], "call": ref.get("call") is True,
                "context": ref.get("context") is True,
                "methods": [m for m in methods if isinstance(m, str)] if isinstance(methods, list) else []}
        return RemoteObject(self, info, self.generation)

    def exception(self, desc: Any) -> BaseException:
        """The exception a test sees for the learner's exception described by `desc`."""
        if not isinstance(desc, dict):
            return LearnerError(f"the learner's code failed (its report was unreadable: {desc!r:.80})")
        names = [n for n in desc.get("types", []) if isinstance(n, str)] if isinstance(desc.get("types"), list) else []
        message = str(desc.get("message", ""))[:2000]
        remote_tb = str(desc.get("traceback", ""))[-6000:]
        for name in names:
            cls = self.known.get(name) if name in self.known else getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                try:
                    errno_ = desc.get("errno")
                    exc = cls(errno_, str(desc.get("strerror", ""))) if issubclass(cls, OSError) and isinstance(
                        errno_, int) and not isinstance(errno_, bool) else cls(message)
                except Exception:  # noqa: BLE001 (a class whose constructor wants other arguments)
                    continue
                _note(exc, f"raised in the learner's code ({names[0] if names else '?'}):\n{remote_tb}")
                return exc
        exc = LearnerError(f"{names[0] if names else 'an exception'}: {message}")
        _note(exc, f"raised in the learner's code:\n{remote_tb}")
        return exc

    # -- the process ---------------------------------------------------------------------

    def _command(self, child_fd: int) -> tuple[list[str], dict[str, str]]:
        package_root = str(Path(__file__).resolve().parents[2])
        tmp = "/tmp" if self.setup.use_sandbox else self.setup.scratch
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": self.setup.scratch, "LANG": "C.UTF-8",
               "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{tmp}/.matplotlib", "MALLOC_ARENA_MAX": "2",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": package_root, "PYTHONUNBUFFERED": "1"}
        if self.setup.mark:
            name, _, value = self.setup.mark.partition("=")
            env[name] = value
        argv = [sys.executable, "-m", "helpers.labs.learner"]
        spec: dict[str, Any] = {"argv": argv, "env": env, "cwd": self.setup.scratch, "keep_fds": [3],
                                "fd_map": {"3": child_fd}, "rlimits": self.setup.rlimits}
        if self.setup.use_sandbox:
            spec.update(mode="cell", uid_inside=os.geteuid(), symlinks=sandbox.root_symlinks(),
                        binds=[[p, "ro"] for p in sandbox.visible_paths()] + [[self.setup.scratch, "rw"]])
        else:
            spec.update(mode="plain")
        return sandbox.launcher_command(spec), env

    def start(self) -> None:
        """Start the learner's process and load its cells, restarting past cells that hang or
        end the process. LearnerGone if it cannot be started at all."""
        while True:
            self.starts += 1
            if self.starts > MAX_STARTS:
                raise LearnerGone(f"the learner's process was started {MAX_STARTS} times; giving up")
            failed = self._start_once()
            if failed is None:
                return
            index, reason = failed
            self.stop()
            if index is None or index in self.skipped:
                raise LearnerGone(reason)
            self.skipped[index] = reason

    def _start_once(self) -> tuple[int | None, str] | None:
        """One start; None when loaded, else (cell index or None, why it failed)."""
        self.generation += 1
        self._events = queue.Queue()
        self._closed = threading.Event()
        self.worker_pid = 0
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        command, env = self._command(child.fileno())
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                         pass_fds=(child.fileno(),), env=env, start_new_session=True,
                                         close_fds=True)
        finally:
            child.close()
            os.close(out_w)
        self.chan = Channel(parent)
        threading.Thread(target=self._read_output, args=(out_r,), daemon=True, name="lab-learner-output").start()
        threading.Thread(target=self._read_frames, args=(self.chan, self.generation, self._events, self._closed),
                         daemon=True, name="lab-learner-frames").start()
        cells = []
        for cell in self.setup.cells:
            if cell["index"] in self.skipped:
                cell = {**cell, "source": _stub(cell, self.skipped[cell["index"]])}
            cells.append({k: cell[k] for k in ("index", "role", "source", "task") if k in cell})
        try:
            self.chan.send({"cells": cells, "parameters": self.setup.parameters,
                            "cell_timeout_s": self.setup.cell_timeout_s})
        except OSError:
            return None, "the learner's process did not start: " + self._exit_note()
        current: int | None = None
        deadline = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = self._events.get(timeout=timeout if timeout is not None else 60.0)
            except queue.Empty:
                if current is None:
                    return None, "the learner's process did not start within 60 s: " + self._exit_note()
                what = self._label(current)
                return current, f"{what} did not finish within {self.setup.cell_timeout_s:g} s when it was defined"
            if event is None:  # the channel closed: the process ended
                if current is None:
                    return None, "the learner's process ended before it loaded: " + self._exit_note()
                return current, f"{self._label(current)} ended the learner's process ({self._exit_note()})"
            kind = event.get("event")
            index = event.get("index")
            if not self.worker_pid and self.proc is not None:
                below = process_tree(self.proc.pid)[2 if self.setup.use_sandbox else 1:]
                self.worker_pid = below[0] if below else 0
            if kind == "cell" and isinstance(index, int):
                current, deadline = index, time.monotonic() + self.setup.cell_timeout_s + KILL_GRACE_S
            elif kind == "done" and isinstance(index, int):
                error, output = event.get("error", ""), event.get("output", "")
                self.cell_results[index] = {"error": str(error)[:500] if error else "",
                                            "output": str(output)[:20_000]}
                current, deadline = None, None
            elif kind == "ready":
                return None

    def _label(self, index: int) -> str:
        for cell in self.setup.cells:
            if cell["index"] == index:
                return f"task {cell['task']}" if cell.get("role") == "task" else f"cell {index}"
        return f"cell {index}"

    def _exit_note(self) -> str:
        proc = self.proc
        if proc is None:
            return "not started"
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "still running"
        if code == sandbox.EXIT_REFUSED:
            return "the sandbox was refused"
        if code < 0:
            return f"killed by signal {-code}"
        return f"exit code {code}" if code < 128 else f"killed by signal {code - 128}"

    def _read_output(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                self.sink(chunk.decode("utf-8", errors="replace"))

    def alive(self) -> bool:
        """Whether the learner's process still holds its end of the channel."""
        return self.chan is not None and not self._closed.is_set()

    def _read_frames(self, chan: Channel, generation: int, events: queue.Queue[dict[str, Any] | None],
                     closed: threading.Event) -> None:
        """Read one generation's frames: answers to their calls, events to its own queue."""
        reason = "the learner's process ended"
        while True:
            try:
                msg, blobs, fds = chan.recv()
            except (EOFError, OSError, WireError) as exc:
                if isinstance(exc, WireError):
                    reason = f"the learner's process sent an unreadable frame ({exc}); it was stopped"
                break
            if not isinstance(msg, dict):
                for fd in fds:
                    os.close(fd)
                continue
            if "id" in msg:
                with self._lock:
                    slot = self._pending.get(msg["id"]) if isinstance(msg["id"], int) else None
                if slot is None:
                    for fd in fds:
                        os.close(fd)
                    continue
                slot[1] = (msg, blobs, fds)
                slot[0].set()
            else:
                for fd in fds:
                    os.close(fd)
                events.put(msg)
        events.put(None)
        closed.set()
        if generation == self.generation:
            self.gone_reason = reason
        with self._lock:
            for slot in self._pending.values():
                if slot[1] is None:
                    slot[1] = LearnerGone(f"{reason} during this call ({self._exit_note()})")
                    slot[0].set()

    def request(self, target: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Send one call or attribute read, wait for the answer, return it (or raise)."""
        chan, generation = self.chan, self.generation
        if chan is None or not self.alive():
            raise LearnerGone(f"the learner's process is not running ({self.gone_reason or self._exit_note()})")
        encoded, blobs, fds = self.codec.encode([list(args), dict(kwargs)])
        call_id = next(self._ids)
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            self._pending[call_id] = slot
            self.inflight += 1
        try:
            try:
                chan.send({**target, "id": call_id, "args": encoded}, blobs, fds)
            except OSError as exc:
                raise LearnerGone(f"the learner's process is not running ({exc})") from None
            finally:
                for fd in fds:
                    os.close(fd)
            while not slot[0].wait(1.0):
                if generation != self.generation:
                    raise LearnerGone("the learner's process was restarted during this call")
            answer = slot[1]
        finally:
            with self._lock:
                self._pending.pop(call_id, None)
                self.inflight -= 1
            for value in list(args) + list(kwargs.values()):
                if isinstance(value, socket.socket) and value.fileno() >= 0:
                    value.settimeout(value.gettimeout())  # the learner may have changed O_NONBLOCK
        if isinstance(answer, BaseException):
            raise answer
        msg, blobs, fds = answer
        if "error" in msg:
            for fd in fds:
                os.close(fd)
            raise self.exception(msg["error"])
        value, _ = self.codec.decode(msg.get("value"), blobs, fds)
        return value

    def pids(self) -> list[int]:
        """The learner's process and every process below it, from the kernel's /proc (in the
        sandbox: everything in its PID namespace but the namespace's init, orphans included)."""
        proc = self.proc
        if proc is None:
            return []
        found = process_tree(proc.pid)[2 if self.setup.use_sandbox else 1:]
        if self.worker_pid and self.worker_pid not in found:  # the fallback: it outlived its launcher
            found += process_tree(self.worker_pid)
        return found

    def threads(self) -> int:
        """Threads of the learner's processes, minus the one per call in flight and the main
        thread: the least of a few looks 10 ms apart, so a call thread that is just ending
        is not counted."""
        proc = self.proc
        if proc is None:
            return 0
        looks = []
        for _ in range(5):
            tree = process_tree(self.worker_pid) if self.worker_pid else []
            looks.append(sum(_threads(pid) for pid in tree) - 1 - self.inflight)
            time.sleep(0.01)
        return max(0, min(looks))

    def stop(self) -> None:
        """Kill the learner's process and everything it started; wait for it."""
        proc, self.proc = self.proc, None
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        if proc is None:
            return
        victims = process_tree(proc.pid) + (process_tree(self.worker_pid) if self.worker_pid else [])
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
