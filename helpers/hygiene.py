"""Prove a lesson left nothing behind and listened only on loopback.

The tests run every notebook, then call ``leftovers()`` in the same kernel: it lists the
course's server threads still alive, servers still registered, sockets still open, child
processes still running, and any listening socket on a non-loopback address. A learner can
call ``check_clean()`` too, at the end of a lesson.

``audit_binds()`` installs a ``sys.addaudithook`` hook that records every bind() to an
address outside loopback (the hook sees the CPython audit event "socket.bind").
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .observe import TcpState, open_fds, socket_table
from .servers import THREAD_PREFIX, live_servers

__all__ = ["Leftovers", "leftovers", "socket_fds", "check_clean", "audit_binds", "non_loopback_binds"]

_binds: list[str] = []
_audit_installed = False


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _on_audit(event: str, args: tuple) -> None:
    if event != "socket.bind":
        return
    sock, address = args
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) and address else str(address)
    if not _is_loopback(str(host)):
        _binds.append(f"{address!r}")


def audit_binds() -> None:
    """Start recording binds to non-loopback addresses (idempotent; hooks cannot be removed)."""
    global _audit_installed
    if not _audit_installed:
        sys.addaudithook(_on_audit)
        _audit_installed = True


def non_loopback_binds() -> list[str]:
    """The non-loopback addresses bound since audit_binds() was called."""
    return list(_binds)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


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


def leftovers(baseline_fds: set[int] | None = None) -> Leftovers:
    """List what this process still runs or holds: course threads, servers, sockets
    (beyond `baseline_fds`, the socket fds open before the lesson), child processes, and
    sockets of ours listening outside loopback."""
    ours = {e.socket_inode: e.fd for e in open_fds() if e.socket_inode is not None}
    baseline = baseline_fds or set()
    out = Leftovers()
    out.threads = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    out.servers = [repr(s) for s in live_servers()]
    inet = {e.inode: e for e in socket_table() if e.inode in ours}
    for inode, fd in ours.items():
        if fd in baseline:
            continue
        entry = inet.get(inode)
        what = f"{entry.state.name} {entry.local} -> {entry.remote}" if entry else "socket"
        out.sockets.append(f"fd {fd}: {what}")
    out.children = _children(os.getpid())
    out.public_listeners = [
        f"{e.local}" for e in inet.values() if e.state is TcpState.LISTEN and not _is_loopback(e.local[0])
    ]
    return out


def socket_fds() -> set[int]:
    """The fds of this process that are sockets now (a baseline for leftovers())."""
    return {e.fd for e in open_fds() if e.socket_inode is not None}


_IMPORT_BASELINE = socket_fds() if sys.platform.startswith("linux") else set()


def check_clean(baseline_fds: set[int] | None = None) -> None:
    """Raise AssertionError naming whatever the lesson left running or open.

    Sockets open before ``helpers`` was first imported (the Jupyter kernel's own) are
    not counted unless `baseline_fds` says otherwise.
    """
    left = leftovers(_IMPORT_BASELINE if baseline_fds is None else baseline_fds)
    if left:
        raise AssertionError(f"the lesson left things behind: {left}")
    print("Clean: no server threads, no open sockets, no child processes left behind.")
