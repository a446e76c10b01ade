"""A private JupyterLab server for the browser test, started and stopped without leaks.

Theory of operation: `LabServer` runs `python -m jupyterlab` from this very interpreter
(so the `python3` kernel it starts is this venv's python too) with every Jupyter directory
(config, data, runtime, settings, workspaces) in a fresh temporary folder, so nothing the
user has in ~/.jupyter leaks in and nothing leaks out. It listens on 127.0.0.1 with
`--ServerApp.port=0`; the port the server ended up with is read from the `jpserver-PID.json`
file it writes into its private runtime directory. Facts found in jupyter_server 2.21:
- port 0 is resolved inside the server by binding port 0, closing that socket and listening
  again on the number (`ServerApp._find_http_port`). If another process takes the number in
  that instant, the server exits with "could not be started because no available port could
  be found"; `start()` then starts a fresh server, and gives up after a few tries.
- `port_retries` must be 0: with port 0 its "next ports" are 1, 2, 3, 4, which root can bind.
- the info file is written before the socket listens, so `start()` waits for /api/status.
- `python -m jupyter lab` would exec the first `jupyter-lab` on PATH (this venv's scripts
  folder is put at the end of PATH), possibly another installation's; `-m jupyterlab` cannot.
- the token goes in the JUPYTER_TOKEN environment variable, not on the command line, where
  every user of a shared machine could read it with `ps` and run code through the server.
`stop()` sends SIGTERM (the server shuts its kernels down), escalates to SIGKILL, then
kills any descendant that survived and returns what it had to kill, so a test can fail on it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# JupyterLab settings for the test user: no "fetch news?" toast over the notebook and no
# request to the internet for updates (schema: @jupyterlab/apputils-extension:notification);
# and every cell attached to the page (windowingMode "none"): the test counts and checks the
# cells in the DOM, and a lesson taller than the tallest page chromium can show (16,000 px,
# test_browser.MAX_SCREENSHOT_PX) otherwise leaves some out (lesson 01: 39 of 40 code cells).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
    },
}

# Variables that would point the server at the user's own kernels, config or token.
_FOREIGN_ENV = ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_TOKEN_FILE")

# A server abandoned by a killed pytest stops itself: kernels idle this long are culled and
# the server exits after this long without activity. Far above any test's run time.
ORPHAN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Proc:
    """A process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    start_ticks: int

    def alive(self) -> bool:
        """True while this very process (not a successor with the same pid) exists."""
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.start_ticks and stat[2] != "Z"

    def argv(self) -> list[str]:
        """The command line, or [] once the process is gone."""
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time in clock ticks, state) from /proc/PID/stat, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(root_pid: int) -> list[Proc]:
    """Every live descendant of `root_pid` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[Proc]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(Proc(int(entry.name), stat[1]))
    found: list[Proc] = []
    todo = [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


# The interface in Simplified Chinese (the language pack jupyterlab-language-pack-zh-cn, as a
# learner chooses it with Settings -> Language), for the zh-CN edition's browser test.
ZH_CN_SETTINGS = {"@jupyterlab/translation-extension/plugin.jupyterlab-settings": {"locale": "zh_CN"}}


def write_lab_settings(settings_dir: Path, extra: dict[str, dict[str, Any]] | None = None) -> None:
    """Write LAB_SETTINGS (and `extra` settings files) as JupyterLab user settings under `settings_dir`."""
    for name, values in {**LAB_SETTINGS, **(extra or {})}.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2) + "\n")


class LabServer:
    """JupyterLab serving `root_dir` on 127.0.0.1, with all its state under `work_dir`.

    Use as a context manager, or call start() and stop() (stop is idempotent). `settings`:
    more user settings files for write_lab_settings() (ZH_CN_SETTINGS: a Chinese interface).
    """

    def __init__(self, root_dir: Path, work_dir: Path, settings: dict[str, dict[str, Any]] | None = None) -> None:
        self.root_dir = root_dir
        self.work_dir = work_dir
        self.settings = settings or {}
        self.token = secrets.token_hex(24)
        self.port = 0
        self.log_path = work_dir / "jupyterlab.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._seen: set[Proc] = set()

    def __enter__(self) -> LabServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        dirs = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
            "IPYTHONDIR": "ipython",
        }
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        for var, sub in dirs.items():
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.work_dir / sub)
        env["JUPYTER_TOKEN"] = self.token
        return env

    def _argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            # window.jupyterapp lets the test read cell models (execution counts, output types).
            "--LabApp.expose_app_in_browser=True",
            f"--ServerApp.shutdown_no_activity_timeout={ORPHAN_TIMEOUT_S}",
            f"--MappingKernelManager.cull_idle_timeout={ORPHAN_TIMEOUT_S}",
            "--MappingKernelManager.cull_interval=60",
        ]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        return argv

    def start(self, timeout_s: float = 60, attempts: int = 3) -> None:
        """Start the server and wait until its REST API answers.

        Raises RuntimeError with the server's log when it exits or does not answer in time;
        a server that failed to start is stopped before the error propagates.
        """
        write_lab_settings(self.work_dir / "settings", self.settings)
        try:
            for attempt in range(1, attempts + 1):
                try:
                    self._start_once(timeout_s)
                    return
                except _LostPortRace:
                    self.stop()
                    if attempt == attempts:
                        raise RuntimeError(f"JupyterLab lost its port {attempts} times:\n{self.log_tail()}") from None
        except BaseException:
            self.stop()
            raise

    def _start_once(self, timeout_s: float) -> None:
        runtime = self.work_dir / "runtime"
        for stale in runtime.glob("jpserver-*.json"):
            stale.unlink()
        with open(self.log_path, "wb") as log:  # one log per attempt: its tail tells why this one ended
            self._proc = subprocess.Popen(
                self._argv(),
                cwd=self.root_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one in stop()
            )
        info_file = runtime / f"jpserver-{self._proc.pid}.json"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "could not be started because" in self.log_tail():
                    raise _LostPortRace
                raise RuntimeError(f"JupyterLab exited with {self._proc.returncode}:\n{self.log_tail()}")
            if self.port == 0 and info_file.exists():
                try:
                    self.port = json.loads(info_file.read_text())["port"]
                except (ValueError, KeyError):
                    pass  # caught mid-write; read it again next round
            if self.port and self._answers():
                return
            time.sleep(0.1)  # a separate process: no event to wait on, so poll with a deadline
        raise RuntimeError(f"JupyterLab did not answer within {timeout_s} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            self.api("GET", "/api/status")
        except OSError:
            return False
        return True

    def url(self, path: str) -> str:
        """The browser URL of `path` (e.g. 'lab/tree/x.ipynb?reset'), with the token."""
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API; returns the decoded JSON body (None when empty)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[Proc]:
        """The kernel processes this server runs (found as its descendants in /proc)."""
        if self._proc is None:
            return []
        found = [p for p in descendants(self._proc.pid) if "ipykernel_launcher" in " ".join(p.argv())]
        self._seen.update(found)
        return found

    def shutdown_sessions(self, timeout_s: float = 20) -> list[Proc]:
        """Shut down every session (and so its kernel); returns kernels still alive after `timeout_s`."""
        kernels = self.kernels()
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        deadline = time.monotonic() + timeout_s
        while any(k.alive() for k in kernels) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [k for k in kernels if k.alive()]

    def stop(self, timeout_s: float = 20) -> list[str]:
        """Stop the server and everything it started; idempotent.

        Returns a description of each process that outlived a clean shutdown and had to be
        killed (an empty list is the expected result).
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return []
        tree = set(descendants(proc.pid)) | self._seen
        self._seen = set()
        killed: list[str] = []
        try:
            if proc.poll() is None:
                proc.terminate()  # jupyter_server shuts its kernels down on SIGTERM
                proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass  # killed below
        finally:
            # Also reached when a test timeout interrupts the wait: nothing may outlive stop().
            if proc.poll() is None:
                killed.append(f"server {proc.pid}: {' '.join(proc.args)}")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for leftover in tree:
                if leftover.alive():
                    killed.append(f"{leftover.pid}: {' '.join(leftover.argv())}")
                    os.kill(leftover.pid, signal.SIGKILL)
            self.port = 0
        return killed

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class _LostPortRace(Exception):
    """The server's port-0 port was taken by another process between its bind and listen."""
