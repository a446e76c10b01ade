"""Run a function in a private network namespace, where a learner may pull the plug.

Theory of operation. Some lessons need a peer that is truly gone: no process, no kernel
answering for it. On one machine the only way to get that without root is a network
namespace of our own (man 7 network_namespaces): a private loopback that we may take down
mid-connection, after which nothing answers our segments. An unprivileged process may
create one inside a new *user* namespace (man 7 user_namespaces), where it holds
CAP_NET_ADMIN over that namespace only, when the system allows it.

Three facts shape this module:

* unshare(CLONE_NEWUSER) fails with EINVAL in a multi-threaded process, and a Jupyter
  kernel has threads. So the work runs in a fresh, single-threaded Python child (started
  the course's one way, ``helpers.core.spawn``, with ``namespace_child`` as its entry) that
  unshares first and then runs the learner's function. The child imports this module and
  core.spawn, standard library underneath, so nothing starts a thread before unshare().
* A new network namespace has one interface, ``lo``, and it is DOWN. The child brings it
  up with the SIOCSIFFLAGS ioctl (man 7 netdevice), so no tool such as ``ip`` is needed.
  ``set_link("lo", up=False)`` takes it down again: then every segment sent on it is
  dropped, as if the peer's machine had vanished.
* Distributions may forbid unprivileged user namespaces: Debian's
  ``kernel.unprivileged_userns_clone = 0``, ``user.max_user_namespaces = 0``, Ubuntu's
  AppArmor restriction, or a container's seccomp filter. ``support()`` reads the sysctls
  and makes one real trial, once, and says which of these stopped it.

The API is small on purpose: ``support()``, ``run_in_netns()``, ``set_link()``, and the
errors ``NamespaceUnavailable`` and ``NamespaceError``. Where namespaces are forbidden, a
lesson shows a run recorded earlier instead: ``run_or_replay()`` runs live when it can and
otherwise loads the recording ``save_run()`` wrote, labelled as such (``NamespaceRun.live``).

Example (the function runs in the child, so it imports what it uses; ``set_link`` is
provided there)::

    def lo_is_up() -> bool:
        import socket
        with socket.create_server(("127.0.0.1", 0)) as srv:
            socket.create_connection(srv.getsockname()).close()
        return True

    run_in_netns(lo_is_up)   # True, unless the system forbids namespaces
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import struct
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import recordings, spawn

__all__ = ["NamespaceSupport", "NamespaceUnavailable", "NamespaceError", "NamespaceRun", "support", "run_in_netns",
           "set_link", "run_or_replay", "save_run"]

CLONE_NEWUSER = 0x10000000  # <linux/sched.h>
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>: get / set an interface's flags
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1  # <linux/if.h>
_IFREQ = struct.Struct("16sh22x")  # struct ifreq: a 16-byte name, then a 24-byte union (flags first)

_PROC_SYS = Path("/proc/sys")
CHILD_ENTRY = "helpers.netns:namespace_child"
_TRIAL_TIMEOUT_S = 10.0  # the trial is one Python start-up (~50 ms); 10 s tolerates a very busy machine


class NamespaceUnavailable(RuntimeError):
    """This system does not let an unprivileged user create a user + network namespace.

    The message says which setting forbids it; ``.reason`` holds the same text.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NamespaceError(RuntimeError):
    """The function raised inside the namespace (or returned something JSON cannot carry).

    ``.remote_type`` is the exception's class name in the child, ``.traceback`` its traceback.
    """

    def __init__(self, message: str, *, remote_type: str = "", traceback: str = ""):
        super().__init__(message)
        self.remote_type = remote_type
        self.traceback = traceback


@dataclass(frozen=True)
class NamespaceSupport:
    """Whether run_in_netns() works here, and why not when it does not.

    ``checks`` records what was looked at: each sysctl read (None if absent) and the trial.
    """

    available: bool
    reason: str
    checks: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.available


# --------------------------------------------------------------------------- inside the namespace


def set_link(name: str, up: bool) -> None:
    """Bring network interface `name` up or down (like ``ip link set NAME up|down``).

    Call it inside run_in_netns(): it needs CAP_NET_ADMIN over the current network
    namespace, which the namespace's creator holds. Raises ValueError for an unknown
    interface and PermissionError (with the fix) outside a namespace of our own.
    """
    if not isinstance(name, str) or not 0 < len(name.encode()) < 16 or "\0" in name:
        raise ValueError(f"an interface name is 1-15 bytes, such as 'lo'; got {name!r}")
    if not isinstance(up, bool):
        raise TypeError(f"up must be True or False, got {up!r}")
    if not _inside_our_namespace():
        # Run as root on the host, this ioctl would succeed and cut the machine's own
        # loopback under every other program: refuse before touching anything.
        raise PermissionError(
            f"set_link({name!r}) only works inside a function run by run_in_netns(), in a network "
            "namespace of its own; it refuses to change the host's interfaces"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ.pack(name.encode(), 0))
            flags = _IFREQ.unpack(raw)[1]
            flags = (flags | IFF_UP) if up else (flags & ~IFF_UP)
            fcntl.ioctl(s, SIOCSIFFLAGS, _IFREQ.pack(name.encode(), flags))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                names = [n for _, n in socket.if_nameindex()]
                raise ValueError(f"no interface {name!r} in this network namespace; it has {names}") from exc
            if exc.errno == errno.EPERM:
                raise PermissionError(
                    f"set_link({name!r}) needs CAP_NET_ADMIN in this network namespace; "
                    "call it inside a function run by run_in_netns(), not on the host"
                ) from exc
            raise


_MARK = "COURSE_NETNS_INODE"  # set by the child after unshare(): the inode of its own network namespace


def _net_namespace_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def _inside_our_namespace() -> bool:
    """True only in a network namespace that run_in_netns() created (compared by inode)."""
    try:
        return os.environ.get(_MARK) == str(_net_namespace_inode())
    except OSError:
        return False


def _unshare_user_and_net() -> None:
    """Enter a new user + network namespace; map our uid and gid to root inside it."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | CLONE_NEWNET
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
    else:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    # Optional nicety (what `unshare -r` does): look like root inside. Capabilities in the
    # new namespace do not depend on it, so a refusal is not an error.
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                       ("/proc/self/gid_map", f"0 {gid} 1")):
        try:
            Path(path).write_text(text)
        except OSError:
            pass
    os.environ[_MARK] = str(_net_namespace_inode())


def namespace_child(request: dict[str, Any]) -> None:
    """The child's entry (run by core.spawn): unshare, bring ``lo`` up, run the function, say
    its result (or the error) in one message, and exit. `request` is a child_request().

    The function's own prints go to stderr (core.spawn keeps them out of the answer).
    """
    spawn.ready()
    try:
        _unshare_user_and_net()
    except OSError as exc:
        spawn.say({"unshare_errno": exc.errno, "message": str(exc)})
        return
    try:
        if request["loopback_up"]:
            set_link("lo", up=True)
        # set_link is handed over so the function need not import anything just to cut a link.
        namespace: dict[str, Any] = {"__name__": "__netns__", "set_link": set_link}
        exec(compile(request["source"], request["filename"], "exec"), namespace)
        fn = namespace.get(request["entry"])
        if not callable(fn):
            raise NameError(f"the source defines no function named {request['entry']!r}")
        result = fn(**request["kwargs"])
        try:
            json.dumps(result)
            answer = {"result": result}
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the function must return JSON data (dict, list, str, numbers); {exc}") from None
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        answer = error_answer(exc)
    spawn.say(answer)


def error_answer(exc: BaseException) -> dict[str, str]:
    """What a child says when the experiment raised: the error, its type and traceback."""
    import traceback

    return {"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__, "traceback": traceback.format_exc()}


# --------------------------------------------------------------------------- from the host


def _read_sysctl(root: Path, name: str) -> str | None:
    try:
        return (root / name).read_text().strip()
    except OSError:
        return None


def _sysctl_verdict(root: Path = _PROC_SYS) -> tuple[str | None, dict[str, Any]]:
    """Read the settings that can forbid unprivileged user namespaces.

    Returns (reason or None, what was read); `root` stands for /proc/sys (tests pass a fake).
    """
    checks: dict[str, Any] = {
        "kernel.unprivileged_userns_clone": _read_sysctl(root, "kernel/unprivileged_userns_clone"),
        "user.max_user_namespaces": _read_sysctl(root, "user/max_user_namespaces"),
        "user.max_net_namespaces": _read_sysctl(root, "user/max_net_namespaces"),
        "kernel.apparmor_restrict_unprivileged_userns":
            _read_sysctl(root, "kernel/apparmor_restrict_unprivileged_userns"),
    }
    if checks["kernel.unprivileged_userns_clone"] == "0" and os.geteuid() != 0:
        return ("the sysctl kernel.unprivileged_userns_clone is 0 (a Debian/Ubuntu setting), so only root may "
                "create user namespaces; an administrator can allow them with "
                "`sysctl kernel.unprivileged_userns_clone=1`", checks)
    for key in ("user.max_user_namespaces", "user.max_net_namespaces"):
        if checks[key] == "0":
            return (f"the sysctl {key} is 0, so no new namespaces of that kind may be created; "
                    f"an administrator can raise it with `sysctl {key}=1000`", checks)
    return (None, checks)


def explain_unshare_errno(err: int, checks: dict[str, Any]) -> str:
    """Turn unshare()'s errno into a sentence that names the likely cause."""
    name = errno.errorcode.get(err, str(err))
    if err == errno.EPERM:
        if checks.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
            return ("unshare(CLONE_NEWUSER) was refused (EPERM): AppArmor restricts unprivileged user namespaces "
                    "(kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10+)")
        return ("unshare(CLONE_NEWUSER) was refused (EPERM): this system or container forbids unprivileged user "
                "namespaces (often a seccomp filter, e.g. Docker's default profile)")
    if err == errno.ENOSPC:
        return "unshare() failed with ENOSPC: the limit on user or network namespaces is reached"
    if err == errno.EINVAL:
        return "unshare() failed with EINVAL: this kernel lacks user or network namespace support"
    return f"unshare(CLONE_NEWUSER | CLONE_NEWNET) failed with {name}: {os.strerror(err)}"


def run_child(entry: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Start a child (core.spawn) on `entry` with `request`, and return the one answer it says.

    TimeoutError after `timeout_s` (the child and its process group are killed), NamespaceError
    if it exits without an answer (with the end of its stderr).
    """
    deadline = time.monotonic() + timeout_s
    with spawn.Child(entry, request, name="experiment child", start_timeout_s=timeout_s) as child:
        try:
            return child.read(max(0.0, deadline - time.monotonic()), waiting_for="the function's result")
        except TimeoutError:
            child.kill()
            raise TimeoutError(
                f"the function did not finish within {timeout_s} s in the child, so its process was killed; "
                f"raise timeout_s or make it shorter. Its stderr: {child.stderr_tail(1000)!r}"
            ) from None
        except spawn.ChildError as exc:
            raise NamespaceError(f"the child exited with code {exc.returncode} and no answer; stderr: "
                                 f"{exc.stderr[-1000:]}") from None


def support() -> NamespaceSupport:
    """Probe once whether run_in_netns() works here: the sysctls, then a real trial.

    Never raises; a NamespaceSupport with available=False says why in ``.reason``. A test
    may switch this probe ("netns") off: helpers.core.features.
    """
    from .core.features import switched_off  # here, not at the top: the child loads this file alone

    why = switched_off("netns")
    if why:
        return NamespaceSupport(False, f"user + network namespaces are {why}", {"switched off": why})
    return _tried()


@functools.lru_cache(maxsize=1)
def _tried() -> NamespaceSupport:
    """The sysctls and the real trial, once per process."""
    if not sys.platform.startswith("linux"):
        return NamespaceSupport(False, f"network namespaces are a Linux feature; this is {sys.platform}")
    reason, checks = _sysctl_verdict()
    if reason is not None:
        return NamespaceSupport(False, reason, checks)
    try:
        answer = run_child(CHILD_ENTRY, child_request(_TRIAL_SOURCE, "trial", {}, True), _TRIAL_TIMEOUT_S)
    except (OSError, TimeoutError, NamespaceError) as exc:
        checks["trial"] = f"{type(exc).__name__}: {exc}"
        return NamespaceSupport(False, f"the trial namespace could not be run: {exc}", checks)
    if "unshare_errno" in answer:
        checks["trial"] = answer["message"]
        return NamespaceSupport(False, explain_unshare_errno(answer["unshare_errno"], checks), checks)
    if "result" not in answer:
        checks["trial"] = answer.get("error")
        return NamespaceSupport(False, f"the trial namespace failed: {answer.get('error')}", checks)
    checks["trial"] = answer["result"]
    return NamespaceSupport(True, "unprivileged user + network namespaces work here", checks)


_TRIAL_SOURCE = """\
def trial():
    import os, socket
    with socket.create_server(("127.0.0.1", 0)) as srv:
        socket.create_connection(srv.getsockname(), timeout=2).close()
    return {"uid_inside": os.getuid(), "interfaces": [n for _, n in socket.if_nameindex()]}
"""


def child_request(
    source: str, entry: str, kwargs: dict[str, Any], loopback_up: bool, filename: str = "<netns>"
) -> dict:
    """What namespace_child() is given: run `entry`(**kwargs) from `source` in the namespace."""
    return {"source": source, "entry": entry, "kwargs": kwargs, "loopback_up": loopback_up, "filename": filename}


def source_of(fn: Callable[..., Any] | str) -> tuple[str, str, str]:
    """(source, entry-point name, filename) for a function or a source text defining main()."""
    if isinstance(fn, str):
        return (textwrap.dedent(fn), "main", "<netns source>")
    if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
        raise TypeError(f"run_in_netns() needs a function defined with def, or source text defining main(); got {fn!r}")
    try:
        lines, first_line = inspect.getsourcelines(fn)
    except (OSError, TypeError) as exc:
        raise TypeError(f"cannot read the source of {fn.__name__}(); define it in a file or a notebook cell") from exc
    # Blank lines in front keep the line numbers of the child's tracebacks true to the file.
    source = "\n" * max(0, first_line - 1) + textwrap.dedent("".join(lines))
    return (source, fn.__name__, inspect.getsourcefile(fn) or "<netns>")


def run_in_netns(fn: Callable[..., Any] | str, /, *, timeout_s: float = 10.0, loopback_up: bool = True,
                 **kwargs: Any) -> Any:
    """Run ``fn(**kwargs)`` in a fresh child inside a new user + network namespace; return its result.

    `fn` is a function defined with ``def`` (its source is sent to the child, so it must
    import what it uses and cannot see the caller's variables) or source text defining
    ``main()``. `kwargs` and the return value must be JSON data (dict, list, str, numbers,
    bool, None); tuples come back as lists. Inside, ``lo`` is up unless `loopback_up` is
    False, and ``set_link("lo", up=False)`` cuts it: ``set_link`` is among the function's
    globals there, no import needed. The child's prints go to its stderr.

    Raises NamespaceUnavailable (with the reason) where the system forbids unprivileged
    namespaces, NamespaceError if the function raised, TimeoutError after `timeout_s`
    seconds (the child is killed, so nothing is left running; processes the function
    itself started are its own to stop).
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 600:
        raise ValueError(f"timeout_s must be a number of seconds in (0, 600], got {timeout_s!r}")
    if not isinstance(loopback_up, bool):
        raise TypeError(f"loopback_up must be True or False, got {loopback_up!r}")
    source, entry, filename = source_of(fn)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"run_in_netns() arguments must be JSON data; {exc}") from None
    status = support()
    if not status.available:
        raise NamespaceUnavailable(status.reason)
    answer = run_child(CHILD_ENTRY, child_request(source, entry, kwargs, loopback_up, filename), timeout_s)
    if "unshare_errno" in answer:  # worked for the trial, refused now (e.g. a namespace limit reached)
        raise NamespaceUnavailable(explain_unshare_errno(answer["unshare_errno"], status.checks))
    if "error" in answer:
        raise NamespaceError(f"{entry}() raised in the namespace: {answer['error']}",
                             remote_type=answer["type"], traceback=answer["traceback"])
    return answer["result"]


# --------------------------------------------------------------------------- live, or a recording


@dataclass(frozen=True)
class NamespaceRun:
    """What a function returned in a private namespace: live now, or recorded earlier.

    ``source`` says where: "live, in a private network namespace" or the recording's label
    (machine, kernel, time). Never assert on a run whose ``live`` is False.
    """

    result: Any
    live: bool
    source: str


def run_or_replay(fn: Callable[..., Any] | str, recording: str | Path, /, *, timeout_s: float = 10.0,
                  **kwargs: Any) -> NamespaceRun:
    """``run_in_netns(fn, **kwargs)`` where namespaces work; otherwise the run recorded in
    `recording` (written by ``save_run()``), labelled as such.

    Raises what run_in_netns() raises when the function itself fails; FileNotFoundError
    (saying why no live run was possible) when namespaces are forbidden and there is no
    recording; ValueError for a file that is not a recording.
    """
    if not isinstance(recording, (str, Path)) or not str(recording):
        raise TypeError(f"recording must be a file name (str or pathlib.Path), got {recording!r}")
    status = support()
    if status.available:
        return NamespaceRun(run_in_netns(fn, timeout_s=timeout_s, **kwargs), True,
                            "live, in a private network namespace")

    def replayed(label: str, data: dict[str, Any]) -> NamespaceRun:
        return NamespaceRun(data["result"], False, f"RECORDED earlier ({label}), because no namespace is allowed "
                            f"here: {status.reason}")

    try:
        return recordings.read(recording, "save_run()", replayed)  # also from an edition's folder (notebooks/zh-CN/)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no live run here ({status.reason}) and no recording: {exc}") from None


def save_run(run: NamespaceRun, path: str | Path, where: str) -> None:
    """Store a live run as JSON, labelled with `where` (the machine), the kernel and the time.

    TypeError for a `run` that is not a NamespaceRun or an empty `where`; ValueError for a
    run that is itself a recording.
    """
    if not isinstance(run, NamespaceRun):
        raise TypeError(f"save_run() needs the NamespaceRun that run_or_replay() returned, got {type(run).__name__}")
    label = recordings.label(where, by="helpers.netns")  # TypeError for an empty `where`
    if not run.live:
        raise ValueError("this run is itself a recording; record a live one")
    recordings.write(path, {"recorded": label, "result": run.result})
