"""A real JupyterHub with a class of real Linux users, driven the way learners drive it.

Used by tests/test_hub.py (the class test) and bench/class_capacity.py (how many learners
one machine holds). Needs root: it creates the learners' accounts and the hub starts each
learner's server as that user (JupyterHub's LocalProcessSpawner, as The Littlest
JupyterHub does).

Theory of operation.

* Learners are real local accounts (``useradd``), each with a copy of the lessons in
  ``~/course`` (what an nbgitpuller link gives each learner on a hub). They log in with a
  shared password (JupyterHub's ``shared-password`` authenticator, configured only here).
  Their single-user servers run ``jupyterhub-singleuser`` from this checkout's venv, so
  their kernels import this checkout's ``helpers``.
* Ports. configurable-http-proxy 4 (the one Debian's Node 18 runs) listens on TCP only,
  and the hub must tell it where the hub and every single-user server listen, so these
  get fixed port numbers. We take them *below* the kernel's ephemeral range
  (``ip_local_port_range``): ``bind()`` to port 0 and ``connect()`` never pick a port
  there, so no learner's lesson can take one; only another program's explicit bind can,
  and then the hub fails to start and we try another block. (JupyterHub's own default,
  ``random_port()``, binds port 0 on every address, closes and reuses the number: on a
  loopback forty lessons share, a race.)
* Kernels use the IPC transport (Unix sockets in each learner's own runtime directory),
  set by the course's Jupyter config for hubs (hub/jupyter/jupyter_server_config.json):
  jupyter_client's TCP transport picks a kernel's five ports by binding port 0 and
  closing, and leaves them reachable by every user of the machine.
* Driving: the login form (with its ``_xsrf`` cookie), a token the learner asks for over
  the hub's REST API, the server started through the API and awaited on its progress
  stream; then per lesson the server's sessions API (a fresh kernel in the notebook's
  folder, as JupyterLab opens it) and the kernel's websocket, one ``execute_request``
  per cell. The cells are tests/notebook_runner.py's (``prepare``): the lesson with the
  runner's cells injected (the leak check, the loopback-bind check, and on request the
  sliders at their extremes and the exercise checks), plus one that reports the kernel's
  CPU time and peak memory; the runner reads the outcome as it does for its own runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import requests
import websocket
from normal_user import LEARNERS_VENV, VENV
from notebook_runner import NotebookRun, describe_error, prepare

ROOT = Path(__file__).resolve().parent.parent
# ./course (as root) installs configurable-http-proxy (npm) inside the venv, beside the
# learners' own environment (normal_user.LEARNERS_VENV).
CHP = VENV / "hub-node" / "node_modules" / ".bin" / "configurable-http-proxy"
PASSWORD = secrets.token_urlsafe(16)
MARK = "course hub test learner"  # the accounts' GECOS comment
CELL_TIMEOUT_S = 300

# Reported by the kernel after the lesson: its pid, how it talks to its server, CPU seconds (its own and its reaped
# children's: forked servers, load generators) and peak resident memory.
USAGE = """\
import json as _json, os as _os, resource as _resource
from ipykernel.connect import get_connection_info as _connection
_self, _kids = _resource.getrusage(_resource.RUSAGE_SELF), _resource.getrusage(_resource.RUSAGE_CHILDREN)
print("COURSE-USAGE " + _json.dumps({
    "pid": _os.getpid(),
    **{k: v for k, v in _json.loads(_connection()).items() if k in ("transport", "ip")},
    "cpu_s": _self.ru_utime + _self.ru_stime,
    "children_cpu_s": _kids.ru_utime + _kids.ru_stime,
    "peak_rss_kib": int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))),
    "children_peak_rss_kib": _kids.ru_maxrss,
}))
"""


class HubError(RuntimeError):
    """The hub or a learner's server did not do what a learner needs."""


class PortsTaken(HubError):
    """Another program holds one of the hub's fixed ports: try another block."""


@dataclass
class Learner:
    """A local account the test created, and the port its single-user server gets."""

    name: str
    uid: int
    home: Path
    port: int = 0


@dataclass
class LessonRun:
    """One lesson, run by one learner in its own kernel through its own server."""

    learner: str
    lesson: str
    started: float
    seconds: float
    error: str | None = None
    leftovers: dict = field(default_factory=dict)
    non_loopback_binds: list = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    extremes: list | None = None  # the slider runs at their extremes, if asked for (not in ``seconds``)
    problems: list = field(default_factory=list)  # what the exercise and closing checks found wrong
    edition: str = "en"  # or the edition's language ("zh-CN") when the learner ran notebooks/zh-CN/...
    practice_steps: list = field(default_factory=list)  # (kind, exercise) of each exercise step that ran


# --- accounts -------------------------------------------------------------------------


def create_learners(count: int, prefix: str = "") -> list[Learner]:
    """Create `count` local users with a copy of the lessons in ~/course; a name prefix
    unique to this run, so two runs on one machine never share an account."""
    prefix = prefix or f"nphub{os.getpid() % 100000}x"
    learners = []
    try:
        for i in range(count):
            name = f"{prefix}{i}"
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", MARK, name],
                           check=True, capture_output=True, text=True)
            entry = pwd.getpwnam(name)
            learners.append(Learner(name, entry.pw_uid, Path(entry.pw_dir)))
            _give_lessons(learners[-1], entry.pw_gid)
    except BaseException:
        remove_learners(learners)
        raise
    return learners


def _give_lessons(learner: Learner, gid: int) -> None:
    """~/course/notebooks: the lessons and what they read (recordings, the glossary)."""
    course = learner.home / "course"
    shutil.copytree(ROOT / "notebooks", course / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for path in [course, *course.rglob("*")]:
        os.lchown(path, learner.uid, gid)


def user_processes(uid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process running as `uid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(entry.name), cmd))
    return found


def remove_learners(learners: list[Learner]) -> None:
    """Kill whatever still runs as each learner, then delete the account and its home."""
    for learner in learners:
        for _ in range(3):
            procs = user_processes(learner.uid)
            if not procs:
                break
            for pid, _cmd in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone([p for p, _ in procs], 5)
        subprocess.run(["userdel", "--remove", learner.name], capture_output=True, text=True)


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    """Wait until none of `pids` exists (a killed process is reaped by its parent or init)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        threading.Event().wait(0.05)


# --- what a learner left behind, seen from outside -------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def abstract_names(pids: list[int]) -> list[str]:
    """Abstract Unix socket names (``@name``) held by the processes `pids`."""
    held = set().union(*(_socket_inodes(p) for p in pids)) if pids else set()
    names = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and int(parts[6]) in held and parts[7].startswith("@"):
            names.append(parts[7])
    return names


def inet_sockets(uid: int) -> list[str]:
    """TCP and UDP sockets owned by `uid` (from /proc/net/{tcp,udp}{,6}); TIME_WAIT
    belongs to the kernel (uid 0), so only sockets a process still holds show up."""
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) > 7 and int(parts[7]) == uid:
                found.append(f"{table} {parts[1]} -> {parts[2]} state {parts[3]}")
    return found


def files_owned(uid: int, roots: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")) -> list[str]:
    """Files and folders owned by `uid` under the shared temporary folders."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_uid == uid:
                        found.append(path)
    return found


# --- the hub ----------------------------------------------------------------------------


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def _port_free(port: int) -> bool:
    """True if 127.0.0.1:`port` can be bound now (a fixed number, below the ephemeral
    range: see the module note)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_block(count: int, rng: random.Random) -> int:
    """The first port of `count` consecutive free ports below the ephemeral range."""
    high = _ephemeral_low() - count
    for _ in range(200):
        base = rng.randrange(10000, high)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise HubError(f"no block of {count} free ports found between 10000 and {high}")


CONFIG = """\
# Written by tests/hub_class.py for one test run; not a deployment config (see hub/).
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {workdir!r} + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + {workdir!r} + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = {workdir!r} + "/cookie_secret"
c.JupyterHub.pid_file = {workdir!r} + "/hub.pid"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allowed_users = set({names!r})
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.notebook_dir = "~/course"
c.Spawner.default_url = "/lab"
c.Spawner.env_keep = ["LANG"]
# The course's Jupyter config for a shared machine (hub/jupyter/): kernels over IPC.
c.Spawner.environment = {{"PATH": {path!r}, "JUPYTER_CONFIG_PATH": {jupyter_config!r}}}
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
PORTS = {ports!r}

def _fixed_port(spawner):
    spawner.port = PORTS[spawner.user.name]

c.Spawner.pre_spawn_hook = _fixed_port
"""


class Hub:
    """A running JupyterHub (with its proxy) on 127.0.0.1 for `learners`; stop() stops it,
    the learners' servers with it."""

    def __init__(self, learners: list[Learner], *, attempts: int = 3) -> None:
        missing = [p for p in (CHP, LEARNERS_VENV / "bin" / "jupyterhub-singleuser") if not p.exists()]
        if missing:
            raise HubError(f"the hub test needs {', '.join(map(str, missing))}: './course test' installs them when "
                           "run as root")
        self.learners = learners
        self.workdir = Path(tempfile.mkdtemp(prefix="course-hub-"))
        self.process: subprocess.Popen | None = None
        self.log = self.workdir / "hub.log"
        rng = random.Random()
        for attempt in range(attempts):
            base = _pick_block(3 + len(learners), rng)
            try:
                self._start(base)
                return
            except PortsTaken:
                self.stop()
                if attempt == attempts - 1:
                    raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def _start(self, base: int) -> None:
        self.proxy_port = base
        for i, learner in enumerate(self.learners):
            learner.port = base + 3 + i
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(CONFIG.format(
            proxy=base, api=base + 1, hub=base + 2, chp=str(CHP), workdir=str(self.workdir), password=PASSWORD,
            names=sorted(lr.name for lr in self.learners),
            singleuser=str(LEARNERS_VENV / "bin" / "jupyterhub-singleuser"),
            path=f"{LEARNERS_VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            ports={lr.name: lr.port for lr in self.learners},
            jupyter_config=str(ROOT / "hub" / "jupyter"),
        ))
        env = {"PATH": f"{VENV / 'bin'}:{CHP.parent}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOME": str(self.workdir)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(VENV / "bin" / "jupyterhub"), "-f", str(config)], cwd=self.workdir, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._wait_up(120)

    def _wait_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                if "Address already in use" in tail or "EADDRINUSE" in tail:
                    raise PortsTaken(tail)
                raise HubError(f"jupyterhub exited with {self.process.returncode}:\n{tail}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return
            threading.Event().wait(0.2)
        raise HubError(f"the hub did not answer at {self.url}/hub/api/ in {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the hub (it stops the learners' servers and its proxy), then make sure."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the proxy, if it outlived the hub
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- a learner at the keyboard ---------------------------------------------------------


class LearnerClient:
    """One learner: logs in through the hub, starts its server, runs lessons in kernels."""

    def __init__(self, hub: Hub, learner: Learner) -> None:
        self.hub, self.learner = hub, learner
        self.api = requests.Session()
        self.token = ""

    def close(self) -> None:
        self.api.close()

    def login(self) -> None:
        """The login form, as a browser fills it; then a token for the REST API."""
        with requests.Session() as browser:
            browser.get(f"{self.hub.url}/hub/login", timeout=30).raise_for_status()
            xsrf = browser.cookies.get("_xsrf", path="/hub/")
            reply = browser.post(f"{self.hub.url}/hub/login", allow_redirects=False, timeout=60,
                                 data={"username": self.learner.name, "password": PASSWORD, "_xsrf": xsrf})
            if reply.status_code != 302:
                raise HubError(f"login as {self.learner.name} failed: {reply.status_code} {reply.text[:300]}")
            # Logging in starts a new session, and JupyterHub ties the XSRF token to it: the
            # home page sets the new one, as a browser would pick it up.
            browser.get(f"{self.hub.url}/hub/home", timeout=60).raise_for_status()
            xsrf = browser.cookies.get("_xsrf", path="/hub/")
            reply = browser.post(f"{self.hub.url}/hub/api/users/{self.learner.name}/tokens", timeout=30,
                                 json={"note": "class test", "expires_in": 3600}, headers={"X-XSRFToken": xsrf})
            if reply.status_code != 201:
                raise HubError(f"{self.learner.name} got no token: {reply.status_code} {reply.text[:300]}")
            self.token = reply.json()["token"]
        self.api.headers["Authorization"] = f"token {self.token}"

    def start_server(self, timeout_s: float = 300) -> None:
        """POST the server, then follow the hub's progress stream until it is ready."""
        base = f"{self.hub.url}/hub/api/users/{self.learner.name}/server"
        reply = self.api.post(base, timeout=60)
        if reply.status_code not in (201, 202):
            raise HubError(f"starting {self.learner.name}'s server: {reply.status_code} {reply.text[:300]}")
        with self.api.get(f"{base}/progress", stream=True, timeout=timeout_s) as events:
            for line in events.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise HubError(f"{self.learner.name}'s server failed: {event.get('message')}\n"
                                   f"{self.hub.log_tail()}")
                if event.get("ready"):
                    return
        raise HubError(f"{self.learner.name}'s progress stream ended before the server was ready")

    @property
    def server(self) -> str:
        return f"{self.hub.url}/user/{self.learner.name}"

    def run_lesson(self, path: str, *, checks: bool = False, practice: bool = False) -> LessonRun:
        """Run notebook `path` (relative to ~/course) top to bottom in a fresh kernel, with
        tests/notebook_runner.py's cells injected (the leak check, the loopback-bind check)
        and the usage report; never raises for the lesson's own failure (it is in
        ``error``). With `checks`, also what test_notebooks.py runs after a lesson: every
        slider at its extremes, and for a lesson with exercises each check against its
        stub, its solution and a plausible mistake, then the closing cells with the
        controls moved (their time is not in ``seconds``). With `practice`, only the
        exercise checks and the closing cells, not the sliders' extremes."""
        run = LessonRun(self.learner.name, Path(path).stem, time.time(), 0.0)
        if Path(path).parent.name != "notebooks":
            run.edition = Path(path).parent.name  # notebooks/zh-CN/NN-*.ipynb, run from that folder
        reply = self.api.get(f"{self.server}/api/contents/{path}", params={"content": 1}, timeout=60)
        reply.raise_for_status()
        served = [c["source"] for c in reply.json()["content"]["cells"]]
        prep = prepare(ROOT / path, extremes=checks, practice=None if checks or practice else False)
        if served != [c.source for c in prep.original.cells]:
            raise HubError(f"{self.learner.name}'s server serves a {path} other than this checkout's")
        prep.nb.cells.insert(len(prep.nb.cells) - 1, nbformat.v4.new_code_cell(USAGE))  # the leak check stays last
        started = time.monotonic()
        reply = self.api.post(f"{self.server}/api/sessions", timeout=120, json={
            "path": path, "type": "notebook", "name": Path(path).name, "kernel": {"name": "python3"}})
        reply.raise_for_status()
        session = reply.json()
        try:
            self._execute_all(session["kernel"]["id"], prep.nb, run)
            if run.error is None:
                outcome: NotebookRun = prep.outcome()
                run.seconds = outcome.seconds
                run.usage = _report(_stdout(prep.nb.cells[-2]), "COURSE-USAGE")
                run.leftovers = {k: v for k, v in outcome.leftovers.items() if v}
                run.non_loopback_binds = outcome.non_loopback_binds
                run.extremes = outcome.extremes
                run.problems = outcome.problems()
                run.practice_steps = [(s["kind"], s["exercise"]) for s in (outcome.practice or {}).get("steps", [])]
        except (HubError, OSError, websocket.WebSocketException) as exc:
            run.error = run.error or f"{type(exc).__name__}: {exc}"
        finally:
            self.api.delete(f"{self.server}/api/sessions/{session['id']}", timeout=120)
            if not run.seconds:
                run.seconds = time.monotonic() - started
        return run

    def _execute_all(self, kernel_id: str, nb: nbformat.NotebookNode, run: LessonRun) -> None:
        """Each code cell of `nb` as one execute_request over the kernel's websocket, its
        outputs stored in the cell as nbclient stores them. A cell tagged
        ``raises-exception`` may fail; any other failing cell stops the run (run.error)."""
        url = self.server.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
        session = uuid.uuid4().hex
        ws = websocket.create_connection(f"{url}?session_id={session}", timeout=CELL_TIMEOUT_S,
                                         header=[f"Authorization: token {self.token}"])
        try:
            kernel = _KernelChannel(ws, session, self.learner.name)
            kernel.request("kernel_info_request", {})
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                cell.outputs = kernel.execute(cell.source)
                errors = [o for o in cell.outputs if o.output_type == "error"]
                if errors and "raises-exception" not in cell.metadata.get("tags", []):
                    e = errors[0]
                    run.error = f"cell {index} (counting injected cells): " + describe_error(
                        "\n".join(e.traceback), e.ename, e.evalue)
                    return
        finally:
            ws.close()


class _KernelChannel:
    """The Jupyter messaging protocol over jupyter_server's JSON websocket: each message
    carries its channel; a request is done when its reply came on shell and iopub said idle."""

    def __init__(self, ws: websocket.WebSocket, session: str, username: str) -> None:
        self.ws, self.session, self.username = ws, session, username

    def _send(self, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": self.username,
                       "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": [],
        }))
        return msg_id

    def request(self, msg_type: str, content: dict, timeout_s: float = CELL_TIMEOUT_S) -> tuple[dict, list[dict]]:
        """Send a shell request; return its reply's content and the iopub messages it caused."""
        msg_id = self._send(msg_type, content)
        deadline = time.monotonic() + timeout_s
        reply, idle, iopub = None, False, []
        while reply is None or not idle:
            if time.monotonic() > deadline:
                raise HubError(f"no answer to {msg_type} within {timeout_s} s")
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell":
                reply = msg["content"]
            elif msg["channel"] == "iopub":
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
                else:
                    iopub.append(msg)
        return reply, iopub

    def execute(self, source: str) -> list[nbformat.NotebookNode]:
        """Run one cell; its stream and error outputs, as nbformat outputs."""
        reply, iopub = self.request("execute_request", {
            "code": source, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})
        outputs = [nbformat.v4.new_output("stream", name=m["content"]["name"], text=m["content"]["text"])
                   for m in iopub if m["msg_type"] == "stream"]
        if reply.get("status") == "error":
            outputs.append(nbformat.v4.new_output("error", ename=reply.get("ename", ""),
                                                  evalue=reply.get("evalue", ""), traceback=reply.get("traceback", [])))
        return outputs


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _report(text: str, tag: str) -> dict:
    for line in text.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line.split(" ", 1)[1])
    raise HubError(f"the injected {tag} cell printed nothing: {text[-500:]!r}")


# --- a class ----------------------------------------------------------------------------


@dataclass
class ClassResult:
    runs: list[LessonRun]
    seconds: float
    errors: list[str]


def lessons(edition: str | None = None) -> list[str]:
    """Every lesson, as a path relative to ~/course; with `edition` ('zh-CN'), that edition's
    notebook (notebooks/zh-CN/...) for each lesson it has, the English one for the others."""
    found = []
    for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        translated = edition is not None and (ROOT / "notebooks" / edition / p.name).exists()
        found.append(f"notebooks/{edition}/{p.name}" if translated else f"notebooks/{p.name}")
    return found


def run_class(hub: Hub, plans: dict[str, list[str]], *, together: list[tuple[set[str], set[str]]] = (),
              checks: frozenset[str] = frozenset(), practice: frozenset[str] = frozenset()) -> ClassResult:
    """Every learner logs in, starts its server and runs its plan (lesson paths, in order),
    all learners at once. Each (learners, lessons) in `together`: those learners start each
    of those lessons at the same moment. Learners named in `checks` also run, after each
    lesson, what test_notebooks.py runs (sliders at their extremes, exercise checks); those in
    `practice`, only the exercise checks and closing cells."""
    by_name = {lr.name: lr for lr in hub.learners}
    barriers: dict[tuple[str, str], threading.Barrier] = {}
    for names, shared in together:
        for lesson in shared:
            barrier = threading.Barrier(len(names))
            for name in names:
                barriers[(name, lesson)] = barrier
    runs: list[LessonRun] = []
    errors: list[str] = []
    lock = threading.Lock()

    def learner_day(name: str) -> None:
        client = LearnerClient(hub, by_name[name])
        try:
            client.login()
            client.start_server()
            for path in plans[name]:
                barrier = barriers.get((name, Path(path).stem))
                if barrier is not None:
                    with contextlib.suppress(threading.BrokenBarrierError):
                        barrier.wait(timeout=CELL_TIMEOUT_S * 4)
                run = client.run_lesson(path, checks=name in checks, practice=name in practice)
                with lock:
                    runs.append(run)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            with lock:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            for barrier in barriers.values():
                barrier.abort()
        finally:
            client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=learner_day, args=(name,), name=f"learner-{name}") for name in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ClassResult(runs, time.monotonic() - started, errors)


@contextlib.contextmanager
def classroom(count: int) -> Iterator[Hub]:
    """`count` new learners and a hub for them; afterwards the hub is stopped and the
    accounts removed, whatever happened."""
    learners = create_learners(count)
    try:
        with Hub(learners) as hub:
            yield hub
    finally:
        remove_learners(learners)
