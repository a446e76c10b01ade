"""The learner's process when a lab is graded: run the learner's cells, then answer calls.

Theory of operation. The grader's trusted process (``runner``) starts this one with one end
of a Unix socketpair as file descriptor 3 (``wire.Channel``), stdout and stderr on a pipe
it reads, and nothing else: no results file, no path to the lab sources, no test code.
Here:

1. The first frame is the plan: the lab's setup, parameters, task and ``learner-side``
   cells, in notebook order, with the learner's own source in the task cells. Each runs
   with ``exec`` in one namespace, under a SIGALRM timer; a frame before and after each
   cell (``cell``/``done``) lets the runner see where a cell hangs or kills the process,
   so it can start again without that cell.
2. Then ``ready``, and calls: ``{"op": "call", "id", "name" | "handle", "attr", "args"}``
   runs a function of the namespace (or a method of an object handed out earlier) in a
   thread of its own, so a test may run the learner's server and client at once. The
   answer is ``{"id", "value"}`` or ``{"id", "error"}``. Sockets in the arguments arrive
   as file descriptors and are closed here when the call returns; an object that cannot
   be copied back is kept in a table and sent as a handle.

Nothing here is trusted by the grader, and nothing needs to be: the runner decides every
verdict from what its own sockets and the kernel show it. Whatever this process prints,
writes, patches or kills changes only this process (and, in the sandbox, the namespaces
it lives in).
"""

from __future__ import annotations

import _socket
import _thread
import builtins
import io
import itertools
import linecache
import os
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from . import kit
from .wire import Channel, Codec, WireError, describe_exception

__all__ = ["main", "CHANNEL_FD"]

#: The descriptor the runner passes the channel on.
CHANNEL_FD = 3
#: Characters of output kept per cell while the cells load (the rest goes to the pipe too).
CELL_OUTPUT_LIMIT = 20_000


class CellTimeout(BaseException):
    """A cell ran past its time limit while loading."""


class _Handles:
    """Objects handed to the grader by number."""

    def __init__(self) -> None:
        self._objects: dict[int, Any] = {}
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def export(self, value: Any) -> dict[str, Any]:
        with self._lock:
            number = next(self._next)
            self._objects[number] = value
        methods = sorted(n for n in dir(type(value)) if not n.startswith("_") and callable(getattr(type(value), n,
                                                                                                    None)))
        return {"$": "handle", "h": number, "type": type(value).__name__[:80], "methods": methods[:200],
                "call": callable(value), "context": hasattr(value, "__enter__") and hasattr(value, "__exit__")}

    def resolve(self, ref: dict[str, Any]) -> Any:
        if ref.get("$") != "ref" or ref.get("h") not in self._objects:
            raise WireError(f"no object {ref.get('h')!r:.20} here")
        return self._objects[ref["h"]]


def _compile(source: str, label: str, counter: itertools.count) -> Any:
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)  # %magic lines become calls (and then fail)
    except ImportError:
        pass
    filename = f"<{label} #{next(counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def _run_cell(source: str, ns: dict[str, Any], label: str, timeout_s: float, counter: itertools.count) -> str:
    """Run one cell; return "" or the error as one line. Output goes to sys.stdout."""

    def expired(signum: int, frame: Any) -> None:
        raise CellTimeout(f"did not finish within {timeout_s:g} s")

    try:
        code = _compile(source, label, counter)
        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            exec(code, ns)  # noqa: S102 (running the learner's cell is the point)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    except BaseException as exc:  # noqa: BLE001 (SystemExit and KeyboardInterrupt included: reported)
        traceback.print_exception(exc, limit=-6)
        return f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:500]
    return ""


class _Capture(io.TextIOBase):
    """While a cell loads: keep its output (bounded), for the feedback notebook."""

    def __init__(self, inner: Any, kept: list[str]):
        self._inner, self._kept = inner, kept

    def write(self, text: str) -> int:
        if sum(map(len, self._kept)) < CELL_OUTPUT_LIMIT:
            self._kept.append(text[:CELL_OUTPUT_LIMIT])
        return len(text)

    def flush(self) -> None:
        pass


def _load(chan: Channel, plan: dict[str, Any], ns: dict[str, Any]) -> None:
    counter = itertools.count(1)
    timeout_s = float(plan["cell_timeout_s"])
    for cell in plan["cells"]:
        chan.send({"event": "cell", "index": cell["index"]})
        kept: list[str] = []
        real_out, real_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = _Capture(real_out, kept)  # type: ignore[assignment]
        try:
            label = f"task {cell['task']}" if cell["role"] == "task" else f"cell {cell['index']}"
            error = _run_cell(cell["source"], ns, label, timeout_s, counter)
            if cell["role"] == "parameters":
                for name, value in plan["parameters"].items():
                    ns[name] = value  # what papermill's injected cell would set
        finally:
            sys.stdout, sys.stderr = real_out, real_err
        chan.send({"event": "done", "index": cell["index"], "error": error, "output": "".join(kept)})


def _call(chan: Channel, codec: Codec, handles: _Handles, ns: dict[str, Any], msg: dict[str, Any],
          blobs: list[bytes], fds: list[int]) -> None:
    """One call, in its own thread: decode, run, answer; close the sockets it was given."""
    sockets: list[socket.socket] = []
    reply: dict[str, Any]
    out_fds: list[int] = []
    try:
        (args, kwargs), sockets = codec.decode(msg.get("args"), blobs, fds)
        if "handle" in msg:
            target = handles.resolve({"$": "ref", "h": msg["handle"]})
        else:
            name = msg.get("name")
            if not isinstance(name, str) or name not in ns:
                raise NameError(f"name {name!r} is not defined in your notebook (did the cell that defines it run?)")
            target = ns[name]
        attr = msg.get("attr")
        if isinstance(attr, str):
            target = getattr(target, attr)
        value = target(*args, **kwargs) if msg.get("op") == "call" else target
        encoded, out_blobs, out_fds = codec.encode(value)
        reply = {"id": msg.get("id"), "value": encoded}
        if isinstance(value, socket.socket):
            value.close()  # handed over: the test owns it now
    except BaseException as exc:  # noqa: BLE001 (the test sees it, as the exception it is)
        out_blobs, out_fds = [], []
        reply = {"id": msg.get("id"), "error": describe_exception(exc, traceback.format_exc(limit=-6))}
    finally:
        for s in sockets:
            s.close()
    try:
        chan.send(reply, out_blobs, out_fds)
    finally:
        for fd in out_fds:
            _close(fd)


_close = os.close  # taken at import, before the learner's code could replace it


def main() -> int:
    # A _socket.socket and _thread: the learner's cells may monkeypatch socket.socket or
    # threading.Thread; this process's own channel and call threads must not change.
    chan = Channel(_socket.socket(fileno=CHANNEL_FD))
    kit._install(_LearnerSide())
    handles = _Handles()
    codec = Codec(handles.export, handles.resolve)
    plan, _, _ = chan.recv()
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    _load(chan, plan, ns)
    chan.send({"event": "ready"})
    while True:
        try:
            msg, blobs, fds = chan.recv()
        except (EOFError, OSError):
            return 0
        if not isinstance(msg, dict) or msg.get("op") not in ("call", "get"):
            for fd in fds:
                _close(fd)
            continue
        _thread.start_new_thread(_call, (chan, codec, handles, ns, msg, blobs, fds))


class _LearnerSide:
    """kit's session in the learner's process: tests do not run here."""

    def run_test(self, fn: Any, **_: Any) -> None:
        raise RuntimeError("tests run in the grader's process, not beside the learner's code")

    def rng(self) -> Any:
        import random

        return random.Random()

    def learner_threads(self) -> int:
        return threading.active_count()

    def learner_pids(self) -> list[int]:
        return [os.getpid()]


if __name__ == "__main__":
    sys.exit(main())
