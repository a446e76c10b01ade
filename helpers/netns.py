"""Run a function in a private network namespace, where a learner may pull the plug.

Theory of operation. Some lessons need a peer that is truly gone: no process, no kernel
answering for it. On one machine the only way to get that without root is a network
namespace of our own (man 7 network_namespaces): a private loopback that we may take down
mid-connection, after which nothing answers our segments. An unprivileged process may
create one inside a new *user* namespace (man 7 user_namespaces), where it holds
CAP_NET_ADMIN over that namespace only, when the system allows it.

Three facts shape this module:

* unshare(CLONE_NEWUSER) fails with EINVAL in a multi-threaded process, and a Jupyter
  kernel has threads. So the work runs in a fresh, single-threaded Python child that
  unshares first and then runs the learner's function. The child loads only this file
  (not the ``helpers`` package), so nothing starts a thread before unshare().
* A new network namespace has one interface, ``lo``, and it is DOWN. The child brings it
  up with the SIOCSIFFLAGS ioctl (man 7 netdevice), so no tool such as ``ip`` is needed.
  ``set_link("lo", up=False)`` takes it down again: then every segment sent on it is
  dropped, as if the peer's machine had vanished.
* Distributions may forbid unprivileged user namespaces: Debian's
  ``kernel.unprivileged_userns_clone = 0``, ``user.max_user_namespaces = 0``, Ubuntu's
  AppArmor restriction, or a container's seccomp filter. ``support()`` reads the sysctls
  and makes one real trial, once, and says which of these stopped it.

The API is small on purpose: ``support()``, ``run_in_netns()``, ``set_link()``, and the
errors ``NamespaceUnavailable`` and ``NamespaceError``.

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
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NamespaceSupport", "NamespaceUnavailable", "NamespaceError", "support", "run_in_netns", "set_link"]

CLONE_NEWUSER = 0x10000000  # <linux/sched.h>
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>: get / set an interface's flags
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1  # <linux/if.h>
_IFREQ = struct.Struct("16sh22x")  # struct ifreq: a 16-byte name, then a 24-byte union (flags first)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_PROC_SYS = Path("/proc/sys")
_TRIAL_TIMEOUT_S = 10.0  # the trial is one Python start-up (~50 ms); 10 s tolerates a very busy machine
_EXIT_UNSHARE_FAILED = 3  # the child's exit code when unshare() itself was refused


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


def _child_main() -> None:
    """Entry point of the child: read the request on stdin, answer one JSON line on stdout.

    The function's own prints go to stderr, so they cannot corrupt the answer.
    """
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    try:
        _unshare_user_and_net()
    except OSError as exc:
        answer.write(json.dumps({"unshare_errno": exc.errno, "message": str(exc)}) + "\n")
        answer.flush()
        sys.exit(_EXIT_UNSHARE_FAILED)
    try:
        if request["loopback_up"]:
            set_link("lo", up=True)
        # set_link is handed over so the function need not import the helpers package
        # (plotting and all, a few hundred ms) just to cut a link.
        namespace: dict[str, Any] = {"__name__": "__netns__", "set_link": set_link}
        exec(compile(request["source"], request["filename"], "exec"), namespace)
        fn = namespace.get(request["entry"])
        if not callable(fn):
            raise NameError(f"the source defines no function named {request['entry']!r}")
        result = fn(**request["kwargs"])
        try:
            text = json.dumps({"result": result})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the function must return JSON data (dict, list, str, numbers); {exc}") from None
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback

        text = json.dumps({"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__,
                           "traceback": traceback.format_exc()})
    answer.write(text + "\n")
    answer.flush()


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


def _explain_unshare_errno(err: int, checks: dict[str, Any]) -> str:
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


def _child_command() -> list[str]:
    """python -c '<load this file by path, then _child_main()>': no package import, no threads."""
    boot = (
        "import importlib.util as u, sys\n"
        f"spec = u.spec_from_file_location('_course_netns', {str(Path(__file__).resolve())!r})\n"
        "m = u.module_from_spec(spec); sys.modules['_course_netns'] = m; spec.loader.exec_module(m)\n"
        "m._child_main()\n"
    )
    return [sys.executable, "-c", boot]


def _run_child(request: dict[str, Any], timeout_s: float) -> tuple[int, dict[str, Any] | None, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            _child_command(), input=json.dumps(request), capture_output=True, text=True,
            timeout=timeout_s, env=env, check=False,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed and reaped the child
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise TimeoutError(
            f"the function did not finish within {timeout_s} s in the namespace, so its process was killed; "
            f"raise timeout_s or make it shorter. Its stderr: {stderr[-1000:]!r}"
        ) from None
    lines = proc.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines else None
    return proc.returncode, answer, proc.stderr


@functools.lru_cache(maxsize=1)
def support() -> NamespaceSupport:
    """Probe once whether run_in_netns() works here: the sysctls, then a real trial.

    Never raises; a NamespaceSupport with available=False says why in ``.reason``.
    """
    if not sys.platform.startswith("linux"):
        return NamespaceSupport(False, f"network namespaces are a Linux feature; this is {sys.platform}")
    reason, checks = _sysctl_verdict()
    if reason is not None:
        return NamespaceSupport(False, reason, checks)
    try:
        code, answer, stderr = _run_child(_request(_TRIAL_SOURCE, "trial", {}, True), _TRIAL_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        checks["trial"] = f"{type(exc).__name__}: {exc}"
        return NamespaceSupport(False, f"the trial namespace could not be run: {exc}", checks)
    if answer is not None and "unshare_errno" in answer:
        checks["trial"] = answer["message"]
        return NamespaceSupport(False, _explain_unshare_errno(answer["unshare_errno"], checks), checks)
    if code != 0 or answer is None or "result" not in answer:
        detail = answer.get("error") if answer else stderr.strip()[-500:]
        checks["trial"] = detail
        return NamespaceSupport(False, f"the trial namespace failed: {detail}", checks)
    checks["trial"] = answer["result"]
    return NamespaceSupport(True, "unprivileged user + network namespaces work here", checks)


_TRIAL_SOURCE = """\
def trial():
    import os, socket
    with socket.create_server(("127.0.0.1", 0)) as srv:
        socket.create_connection(srv.getsockname(), timeout=2).close()
    return {"uid_inside": os.getuid(), "interfaces": [n for _, n in socket.if_nameindex()]}
"""


def _request(source: str, entry: str, kwargs: dict[str, Any], loopback_up: bool, filename: str = "<netns>") -> dict:
    return {"source": source, "entry": entry, "kwargs": kwargs, "loopback_up": loopback_up, "filename": filename}


def _source_of(fn: Callable[..., Any] | str) -> tuple[str, str, str]:
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
    source, entry, filename = _source_of(fn)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"run_in_netns() arguments must be JSON data; {exc}") from None
    status = support()
    if not status.available:
        raise NamespaceUnavailable(status.reason)
    code, answer, stderr = _run_child(_request(source, entry, kwargs, loopback_up, filename), timeout_s)
    if answer is None:
        raise NamespaceError(f"the namespace child exited with code {code} and no answer; stderr: {stderr[-1000:]}")
    if "unshare_errno" in answer:  # worked for the trial, refused now (e.g. a namespace limit reached)
        raise NamespaceUnavailable(_explain_unshare_errno(answer["unshare_errno"], status.checks))
    if "error" in answer:
        raise NamespaceError(f"{entry}() raised in the namespace: {answer['error']}",
                             remote_type=answer["type"], traceback=answer["traceback"])
    return answer["result"]
