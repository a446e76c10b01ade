"""The trusted side of grading one submission: run the lab's tests against the learner's process.

Theory of operation. The grader starts this process (in the sandbox: in a user + PID +
mount + network namespace of its own, see ``sandbox``) with the job on stdin: the lab's
cells in order (the learner's task sources already put in), the parameters, a secret, and
the limits. It never reads the submission or the lab files itself. Then:

1. It makes itself undumpable (PR_SET_DUMPABLE 0: no process of the same user may ptrace
   it or read its memory or file descriptors) and a child subreaper (whatever the learner's
   process orphans becomes its child, so it can be found and killed).
2. It starts the learner's process (``remote.Learner``) and, meanwhile, runs the lab's
   setup cells itself. At each task (or ``learner-side``) cell it binds the names the cell
   defines to proxies that call into the learner's process.
3. Each test cell defines a ``@kit.test`` function; ``kit`` hands it to this process's
   session, which runs it under a timer with ``kit.rng()`` seeded from the secret,
   retries a ``timing=True`` test once, adds up ``kit.case`` results, restarts the
   learner's process after a test that timed out or killed it, and writes one JSON line
   per test to its stdout, which only the grader reads. The learner's process has no
   handle on that pipe, on this process's memory, or on the grader.
4. At the end it stops the learner's process and kills every process left in its tree.

Output the tests print, and output of the learner's process, is kept per test (bounded)
for the feedback notebook.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import linecache
import os
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any, TextIO

from . import kit
from .remote import Learner, LearnerGone, LearnerSetup, RemoteFunction, process_tree

__all__ = ["main"]

PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


class _Output:
    """The output of whatever runs now (this process's prints and the learner's), bounded."""

    def __init__(self, limit: int):
        self.limit, self.used, self.parts = limit, 0, []
        self._lock = threading.Lock()
        self.dropped = False

    def write(self, text: str) -> None:
        with self._lock:
            room = self.limit - self.used
            if room > 0:
                self.parts.append(text[:room])
            elif not self.dropped:
                self.dropped = True
                self.parts.append("\n[grader: output limit reached; further output dropped]\n")
            self.used += len(text)

    def take(self) -> str:
        with self._lock:
            text, self.parts = "".join(self.parts), []
        return text


class _Stream(io.TextIOBase):
    def __init__(self, output: _Output):
        self._output = output

    def write(self, text: str) -> int:
        self._output.write(text)
        return len(text)

    def flush(self) -> None:
        pass


class Session:
    """kit's session in the trusted process: runs each test, reports it."""

    def __init__(self, job: dict[str, Any], results: TextIO, output: _Output):
        self.job, self.results, self.output = job, results, output
        self.learner: Learner | None = None
        self.current: dict[str, Any] | None = None  # the test cell running now
        self.attempt = 0
        self._draws = 0
        self.restart_needed = False
        self.ready = threading.Event()
        self.start_error = ""

    def emit(self, **event: Any) -> None:
        self.results.write(json.dumps(event) + "\n")
        self.results.flush()

    def rng(self) -> random.Random:
        test = self.current["test"]["name"] if self.current else "-"
        self._draws += 1
        key = f"{self.job['secret']}:{test}:{self.attempt}:{self._draws}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    def learner_threads(self) -> int:
        return self.learner.threads() if self.learner is not None else 0

    def learner_pids(self) -> list[int]:
        return self.learner.pids() if self.learner is not None else []

    def learner_source(self, name: str) -> str:
        """The submitted source of the task cell that defines `name` (from the job, not from
        the learner's process)."""
        for cell in self.job["cells"]:
            if cell["role"] == "task" and name in cell.get("names", []):
                return str(cell["source"])
        raise LookupError(f"no task of this lab defines {name}")

    def ensure_learner(self) -> None:
        """Wait until the learner's process has loaded; start it again if the last test left
        it dead or stuck. Never under a test's timer: loading has its own deadlines."""
        self.ready.wait()
        if self.start_error:
            raise LearnerGone(self.start_error)
        assert self.learner is not None
        if self.restart_needed or not self.learner.alive():
            self.restart_needed = False
            self.learner.stop()
            self.learner.start()

    def run_test(self, fn: Any, *, points: float, timeout_s: float | None, timing: bool) -> None:
        meta = self.current["test"] if self.current else None
        if meta is None or fn.__name__ != meta["name"]:
            raise RuntimeError(f"test {fn.__name__} ran outside its cell")
        limit = meta["timeout_s"] or self.job["test_timeout_s"]
        tries = 2 if meta["timing"] else 1
        first_error, outcome, retried = "", None, False
        for attempt in range(tries):
            retried = attempt > 0
            self.attempt, self._draws = attempt, 0
            try:
                self.ensure_learner()
            except LearnerGone as exc:
                outcome = kit.Outcome(0.0, f"LearnerGone: {exc}")
                break
            outcome = kit.run(fn, limit)
            if outcome.error.startswith("TestTimeout") or self.learner is None or not self.learner.alive():
                self.restart_needed = True
            if outcome.fraction == 1:
                break
            if attempt == 0:
                first_error = outcome.error or "some cases failed"
        assert outcome is not None
        earned = round(meta["points"] * outcome.fraction, 3)
        # An error means 0 points; a partial score's detail travels in its cases.
        self.emit(event="test", test=meta["name"], points=earned, max=meta["points"],
                  error=outcome.error if outcome.fraction == 0 else "", retried=retried,
                  first_error=first_error if retried else "",
                  cases=[[n, ok, why] for n, ok, why in outcome.cases][:200], seconds=round(outcome.seconds, 3),
                  output=self.output.take())


def _compile(source: str, label: str) -> Any:
    filename = f"<{label}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def _run_setup(source: str, ns: dict[str, Any], label: str, timeout_s: float | None) -> str:
    """Run one of the lab's cells (no timer when `timeout_s` is None); "" or its error."""
    try:
        code = _compile(source, label)
        with kit._time_limit(timeout_s) if timeout_s else contextlib.nullcontext():
            exec(code, ns)  # noqa: S102 (the lab's own cells)
    except (Exception, kit.TestTimeout) as exc:  # noqa: BLE001 (reported; the tests that need it fail)
        traceback.print_exception(exc, limit=-4)
        return f"{type(exc).__name__}: {exc}"[:500]
    return ""


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except OSError:
        pass


def _kill_tree() -> None:
    """Kill every process below this one (servers the tests or the learner left, orphans)."""
    me = os.getpid()
    for _ in range(3):
        victims = [pid for pid in process_tree(me) if pid != me]
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in victims:
            try:
                os.waitpid(pid, 0)
            except (ChildProcessError, OSError):
                pass


def run(job: dict[str, Any], results: TextIO) -> None:
    """Grade one submission as `job` says; write JSON lines to `results`."""
    output = _Output(int(job["output_limit"]))
    session = Session(job, results, output)
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = _Stream(output)  # type: ignore[assignment]
    ns: dict[str, Any] = {"__name__": "__main__"}
    learner_cells = [c for c in job["cells"] if c["role"] in ("parameters", "setup", "task", "learner-side")]
    setup = LearnerSetup(learner_cells, job["parameters"], job["scratch"], float(job["cell_timeout_s"]),
                         bool(job["sandbox"]), job.get("rlimits", {}), job.get("mark", ""))
    learner = Learner(setup, ns, output.write)
    session.learner = learner
    kit._install(session)
    session.emit(event="start", sandbox=job["sandbox"])

    def start_learner() -> None:
        try:
            learner.start()
        except LearnerGone as exc:
            session.start_error = str(exc)
        except Exception as exc:  # noqa: BLE001 (reported as the reason every test failed)
            session.start_error = f"the learner's process could not start: {type(exc).__name__}: {exc}"
        finally:
            session.ready.set()

    threading.Thread(target=start_learner, daemon=True, name="lab-learner-start").start()
    selected = job.get("tests")
    try:
        for cell in job["cells"]:
            role, index = cell["role"], cell["index"]
            if role in ("task", "learner-side"):
                for name in cell.get("names", []):
                    ns[name] = RemoteFunction(learner, name)
                continue
            if role == "test":
                if selected is not None and cell["test"]["name"] not in selected:
                    continue
                session.current = cell
                # A test cell only defines its function; kit.run times each attempt of it.
                error = _run_setup(cell["source"], ns, f"test {cell['test']['name']}", None)
                session.current = None
                if error:  # the cell itself failed before its test could report
                    session.emit(event="test", test=cell["test"]["name"], points=0.0, max=cell["test"]["points"],
                                 error=f"the test cell failed: {error}", retried=False, first_error="", cases=[],
                                 seconds=0.0, output=output.take())
                continue
            error = _run_setup(cell["source"], ns, f"cell {index}", float(job["test_timeout_s"]))
            if role == "parameters":
                ns.update(job["parameters"])
            session.emit(event="cell", index=index, error=error, output=output.take())
        session.ready.wait()
        for index, result in sorted(learner.cell_results.items()):
            session.emit(event="learner-cell", index=index, error=result["error"], output=result["output"],
                         skipped=learner.skipped.get(index, ""))
        if session.start_error:
            session.emit(event="note", text=session.start_error)
    finally:
        learner.stop()
        kit._install(None)
        sys.stdout, sys.stderr = real_out, real_err
        session.emit(event="end", learner_starts=learner.starts)


def main() -> int:
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray writes to fd 1 go to the log, never into the results
    job = json.loads(sys.stdin.read())
    started = time.monotonic()
    try:
        run(job, results)
    finally:
        _kill_tree()
        print(f"runner finished in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
