"""A private machine for each graded submission: user, PID, mount and network namespaces.

Theory of operation. Grading runs two processes per submission: the trusted runner (the
tests) and the learner's process (the learner's code). Each is started through the
*launcher* in this file, a small single-threaded Python program (``python -S``, standard
library only, loaded by path) because ``unshare(CLONE_NEWUSER)`` fails with EINVAL in a
process that has threads (man 2 unshare). The launcher:

1. ``unshare()``s a new user namespace (man 7 user_namespaces) with a PID namespace, a
   mount namespace and, for the runner, a network namespace; it maps our uid to one uid
   inside (never root: 1000 when the grader is root), so the program it finally runs
   holds no capability at all (execve() of a non-root uid clears them);
2. forks the namespace's *init* (PID 1). When init exits, the kernel kills every process
   left in the namespace (man 7 pid_namespaces), so nothing a submission starts (a server
   left listening, ``setsid()`` + an empty environment + ``sleep 600``) survives it. Init
   dies with the launcher (PR_SET_PDEATHSIG), and the grader kills the launcher;
3. builds a new root from a tmpfs: read-only binds of the system directories, the Python
   installation, the virtualenv and the ``helpers`` package, the per-submission scratch
   folder read-write, a fresh ``/proc``, ``/tmp`` and ``/dev/shm``, a few ``/dev`` nodes;
   then ``pivot_root()`` and detaches the old root. The lab sources (solutions, hidden
   tests), the submissions folder and the gradebook are simply not there;
4. brings ``lo`` up in the runner's new network namespace (the learner's process joins
   that same namespace, so tests and learner code share a loopback nobody else sees, and
   no other network); sets rlimits (CPU seconds, address space, file size, open files,
   processes); sets PR_SET_NO_NEW_PRIVS; forks and execs the program, and reaps.

The runner's namespaces are created by the grader (mode ``box``); the learner's process is
created by the runner inside them (mode ``cell``): a user namespace owned by the runner's,
so the learner has no capability over the runner's network (cannot take ``lo`` down) and
cannot see the runner's processes or files. Mode ``plain`` only sets rlimits (the fallback
where the kernel refuses namespaces; ``support()`` says why).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
import select
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["support", "launcher_command", "Support", "visible_paths", "inside_uid"]

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = struct.Struct("16sh22x")
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
#: statvfs flags -> mount flags, kept when remounting read-only (a user namespace may not
#: clear a flag the mount already had).
_LOCKED = [(os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
           (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)]
_DEV_NODES = ["null", "zero", "full", "random", "urandom"]
_STAGE = "/tmp"  # the new root's tmpfs is mounted here first (in our private mount namespace only)
EXIT_REFUSED = 97  # the launcher's exit code when the kernel refused a namespace step


class _Refused(Exception):
    """A namespace step the kernel refused (the message names it)."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise _Refused(f"{what}: {errno.errorcode.get(err, err)} ({os.strerror(err)})")


def _enc(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)),
           f"mount {source or ''} on {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _set_rlimits(limits: dict[str, int]) -> None:
    """Lower each limit to `value` (never above the hard limit we were given). CPU keeps 5 s
    between the soft limit (SIGXCPU) and the hard one (SIGKILL)."""
    import resource

    for name, value in limits.items():
        kind = getattr(resource, f"RLIMIT_{name}")
        _, hard = resource.getrlimit(kind)
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        new_hard = soft + 5 if name == "CPU" else soft
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
        resource.setrlimit(kind, (soft, new_hard))


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = _IFREQ.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))


def _build_root(libc: Any, spec: dict[str, Any]) -> None:
    """Mount the new root at _STAGE, then pivot into it (we are PID 1 of a new namespace)."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    sources = [(os.open(path, os.O_PATH | os.O_CLOEXEC), path, mode) for path, mode in spec["binds"]]
    _mount(libc, "tmpfs", _STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    size = f"size={int(spec.get('tmp_mb', 256))}m"
    for path in ("/tmp", "/dev/shm"):  # first: a bind below /tmp (the scratch folder) goes on top
        os.makedirs(_STAGE + path, exist_ok=True)
        _mount(libc, "tmpfs", _STAGE + path, "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
    for fd, path, mode in sources:
        target = _STAGE + path
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        _mount(libc, f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        if mode == "ro":
            vfs = os.statvfs(target)
            locked = sum(ms for st, ms in _LOCKED if vfs.f_flag & st)
            _mount(libc, None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | locked)
        os.close(fd)
    for path, points_to in spec.get("symlinks", []):
        os.makedirs(os.path.dirname(_STAGE + path), exist_ok=True)
        os.symlink(points_to, _STAGE + path)
    os.makedirs(_STAGE + "/dev", exist_ok=True)
    for node in _DEV_NODES:
        if os.path.exists(f"/dev/{node}"):
            open(f"{_STAGE}/dev/{node}", "a").close()
            _mount(libc, f"/dev/{node}", f"{_STAGE}/dev/{node}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{_STAGE}/dev/{name}")
    os.makedirs(_STAGE + "/proc", exist_ok=True)
    _mount(libc, "proc", _STAGE + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(_STAGE + "/.old", exist_ok=True)
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise _Refused(f"pivot_root: no syscall number known for {platform.machine()}")
    _check(libc.syscall(number, _STAGE.encode(), (_STAGE + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount the old root")
    os.rmdir("/.old")
    _mount(libc, None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _reap_until(child: int) -> int:
    """As init: reap everything until `child` exits; return an exit status for it."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1
        if pid == child:
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _start_plain(argv: list[str], env: dict[str, str], cwd: str) -> None:
    """Fork the program and wait for it. The program does not die with us: if it kills its
    parent (``os.kill(os.getppid(), ...)``) it goes on, re-parented to the runner (a child
    subreaper), which knows its pid and kills it when the time comes."""
    worker = os.fork()
    if worker == 0:
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    os._exit(_reap_until(worker))


def _launcher_main(text: str) -> None:
    """The launcher program: set up what `text` (JSON) asks for, exec the program, reap."""
    spec = json.loads(text)
    argv, env, cwd = spec["argv"], spec["env"], spec.get("cwd") or "/"
    for target, source in spec.get("fd_map", {}).items():
        os.dup2(int(source), int(target), inheritable=True)
        if int(source) != int(target):
            os.close(int(source))
    for fd in spec.get("keep_fds", []):
        os.set_inheritable(fd, True)
    libc = _libc()
    if spec["mode"] == "plain":  # no namespaces: rlimits, and stay the parent (see _start_plain)
        _set_rlimits(spec.get("rlimits", {}))
        _start_plain(argv, env, cwd)
    outside_uid, outside_gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | (CLONE_NEWNET if spec.get("net") else 0)
    try:
        _check(libc.unshare(flags), "unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS"
                                    + (" | CLONE_NEWNET)" if spec.get("net") else ")"))
        _write("/proc/self/setgroups", "deny")
        inside = int(spec["uid_inside"])
        _write("/proc/self/uid_map", f"{inside} {outside_uid} 1")
        _write("/proc/self/gid_map", f"{inside} {outside_gid} 1")
    except (_Refused, OSError) as exc:
        sys.stderr.write(f"sandbox refused: {exc}\n")
        os._exit(EXIT_REFUSED)
    alive_r, alive_w = os.pipe()  # init sees EOF on alive_r when the launcher is gone
    init = os.fork()
    if init:
        os.close(alive_r)
        code = _reap_until(init)
        os._exit(code)
    os.close(alive_w)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if select.select([alive_r], [], [], 0)[0]:  # the launcher died before PDEATHSIG was armed
        os._exit(1)
    try:
        _build_root(libc, spec)
        if spec.get("net"):
            _loopback_up()
        _set_rlimits(spec.get("rlimits", {}))
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    except (_Refused, OSError) as exc:
        sys.stderr.write(f"sandbox refused: {exc}\n")
        os._exit(EXIT_REFUSED)
    worker = os.fork()
    if worker == 0:
        os.close(alive_r)
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    os._exit(_reap_until(worker))


# --------------------------------------------------------------------------- from the grader


def inside_uid() -> int:
    """The uid processes get inside the sandbox: ours, or 1000 if we are root."""
    uid = os.geteuid()
    return uid if uid != 0 else 1000


def launcher_command(spec: dict[str, Any]) -> list[str]:
    """``python -S -c '<load this file by path, run the launcher>' SPEC``."""
    boot = (
        "import importlib.util as u, sys\n"
        f"s = u.spec_from_file_location('_labs_sandbox', {str(Path(__file__).resolve())!r})\n"
        "m = u.module_from_spec(s); s.loader.exec_module(m)\n"
        "m._launcher_main(sys.argv[1])\n"
    )
    return [sys.executable, "-S", "-c", boot, json.dumps(spec)]


def visible_paths() -> list[str]:
    """What a sandboxed process needs to see to run Python and ``import helpers`` (read-only)."""
    package = Path(__file__).resolve().parent.parent  # helpers/
    wanted = ["/usr", "/etc", os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(package)]
    exe = os.path.realpath(sys.executable)
    wanted.append(os.path.dirname(exe))
    out: list[str] = []
    for path in sorted(set(wanted), key=len):
        if os.path.isdir(path) and not os.path.islink(path) and not any(path == p or path.startswith(p + "/")
                                                                         for p in out):
            out.append(path)
    return out


def root_symlinks() -> list[list[str]]:
    """The merged-/usr symlinks (/bin -> usr/bin, ...) as they are on this machine."""
    return [[p, os.readlink(p)] for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
            if os.path.islink(p)]


class Support:
    """Whether the sandbox works here, and why not."""

    def __init__(self, available: bool, reason: str):
        self.available, self.reason = available, reason

    def __bool__(self) -> bool:
        return self.available

    def __repr__(self) -> str:
        return f"Support({self.available}, {self.reason!r})"


_support: Support | None = None


def support() -> Support:
    """Probe once: start a box with a cell inside (both modes the grader uses), run Python in it."""
    global _support
    if _support is not None:
        return _support
    if not sys.platform.startswith("linux"):
        _support = Support(False, f"namespaces are a Linux feature; this is {sys.platform}")
        return _support
    paths = visible_paths()
    python = [sys.executable, "-S", "-c", "import os, socket; socket.create_server(('127.0.0.1', 0)).close(); "
                                          "print('ok', os.getpid())"]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    cell = {"mode": "cell", "uid_inside": inside_uid(), "binds": [[p, "ro"] for p in paths],
            "symlinks": root_symlinks(), "argv": python, "env": env, "rlimits": {"NOFILE": 1024}}
    box = {"mode": "box", "net": True, "uid_inside": inside_uid(), "binds": [[p, "ro"] for p in paths],
           "symlinks": root_symlinks(), "argv": launcher_command(cell), "env": env}
    try:
        done = subprocess.run(launcher_command(box), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _support = Support(False, f"the sandbox trial could not run: {exc}")
        return _support
    if done.returncode == 0 and done.stdout.split()[:2] == ["ok", "2"]:
        _support = Support(True, "user, PID, mount and network namespaces work here")
    else:
        detail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        _support = Support(False, f"the kernel refused the sandbox ({detail})")
    return _support
