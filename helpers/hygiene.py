"""Prove a lesson left nothing behind and listened only on loopback.

Theory of operation. Importing this module installs one ``sys.addaudithook`` hook that
sees two CPython audit events:

* ``socket.__new__``, raised for every Python socket object (socket(), accept(),
  socketpair(), fromfd()): the hook keeps a weak reference, so ``leftovers()`` can list the
  sockets still open. Sockets the Jupyter kernel opens for itself are left out: libzmq's
  are made in C and raise no event, and the few ipykernel makes in Python (an asyncio
  self-pipe per subshell) are recognised by who called socket().
* ``socket.bind``: the hook records every bind() of an IP socket to an address outside
  loopback, so the tests can fail a lesson that binds where it should not.

The tests run every notebook, then call ``leftovers()`` in the same kernel: it lists the
course's server threads still alive, servers still registered, sockets still open, child
processes still running, and any of our sockets listening on a non-loopback address. A
learner can call ``check_clean()`` too, at the end of a lesson. Audit hooks cannot be
removed; this one does no I/O and costs a set insertion per socket.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .observe import socket_table
from .servers import THREAD_PREFIX, live_servers

__all__ = ["Leftovers", "leftovers", "open_sockets", "check_clean", "non_loopback_binds"]

_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
_binds: list[str] = []


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# Sockets the Jupyter kernel makes for itself are not the lesson's: ipykernel 7 starts a
# "subshell" thread with its own asyncio loop (whose self-pipe is a socketpair) the first
# time JupyterLab sends widget messages. We tell them apart by the first caller outside the
# standard library: kernel machinery lives in these packages.
_KERNEL_PACKAGES = {"ipykernel", "tornado", "zmq", "jupyter_client", "debugpy", "comm"}
_STDLIB = os.path.dirname(os.__file__)


def _made_by_kernel_machinery() -> bool:
    frame = sys._getframe(2)  # skip this function and the audit hook
    while frame is not None:
        path = frame.f_code.co_filename
        if not (path.startswith(_STDLIB) and "site-packages" not in path) and not path.startswith("<frozen"):
            return bool(_KERNEL_PACKAGES.intersection(Path(path).parts))
        frame = frame.f_back
    return False


def _on_audit(event: str, args: tuple) -> None:
    if event == "socket.__new__":
        if _made_by_kernel_machinery():
            return
        try:
            _sockets.add(args[0])
        except TypeError:  # a socket type that cannot be weakly referenced: not ours
            pass
    elif event == "socket.bind":
        sock, address = args
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) and address else str(address)
            if not _is_loopback(str(host)):
                _binds.append(f"{address!r}")


sys.addaudithook(_on_audit)


def non_loopback_binds() -> list[str]:
    """The non-loopback addresses bound since helpers was imported."""
    return list(_binds)


def open_sockets() -> list[socket.socket]:
    """Python sockets created since helpers was imported and not closed yet."""
    return [s for s in list(_sockets) if s.fileno() != -1]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _describe(sock: socket.socket) -> str:
    kind = getattr(sock.type, "name", sock.type)
    try:
        local = sock.getsockname()
    except OSError:
        local = "?"
    try:
        remote = sock.getpeername()
    except OSError:
        remote = None
    fam = getattr(sock.family, "name", sock.family)
    return f"fd {sock.fileno()}: {fam}/{kind} {local!r}" + (f" -> {remote!r}" if remote else "")


@dataclass
class Leftovers:
    """What is still alive; empty lists everywhere mean the lesson cleaned up."""

    threads: list[str] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    public_listeners: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.threads, self.servers, self.sockets, self.children, self.public_listeners))


def leftovers(ignore: Iterable[socket.socket] = ()) -> Leftovers:
    """List what this process still runs or holds: course threads, servers, open sockets
    created since helpers was imported (except those in `ignore`), child processes, and
    sockets of ours listening outside loopback. TypeError if `ignore` is not a list of sockets."""
    ignored = list(ignore) if isinstance(ignore, Iterable) else None
    if ignored is None or not all(isinstance(s, socket.socket) for s in ignored):
        raise TypeError(f"ignore must be a list of sockets (such as open_sockets() returns), got {ignore!r}")
    out = Leftovers()
    out.threads = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    out.servers = [repr(s) for s in live_servers()]
    skip = {id(s) for s in ignored}
    socks = [s for s in open_sockets() if id(s) not in skip]
    out.sockets = [_describe(s) for s in socks]
    out.children = _children(os.getpid()) if sys.platform.startswith("linux") else []
    inet = (socket.AF_INET, socket.AF_INET6)
    listening = {s.getsockname()[:2] for s in socks if s.family in inet}
    if listening:
        out.public_listeners = [
            f"{e.local}" for e in socket_table(states=["LISTEN"])
            if e.local in listening and not _is_loopback(e.local[0])
        ]
    return out


def check_clean() -> None:
    """Raise AssertionError naming whatever the lesson left running or open."""
    left = leftovers()
    if left:
        raise AssertionError(f"the lesson left things behind: {left}")
    print("Clean: no server threads, no open sockets, no child processes left behind.")
