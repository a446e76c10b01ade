"""Prove a lesson left nothing behind and listened only on loopback.

Theory of operation. ``track()`` (called by ``helpers.start_lesson()`` in a lesson's first
cell, and by the test runner) installs one ``sys.addaudithook`` hook, once; importing this
module installs nothing. The hook sees two CPython audit events:

* ``socket.__new__``, raised for every Python socket object (socket(), accept(),
  socketpair(), fromfd()): the hook keeps a weak reference, so ``leftovers()`` can list the
  sockets still open. Sockets the notebook's kernel opens for itself are left out: libzmq's
  are made in C and raise no event, and the few ipykernel makes in Python (an asyncio
  self-pipe per subshell) are recognised by who called socket(): the first caller outside
  the standard library lives in one of the kernel's packages.
* ``socket.bind``: the hook records every bind() of an IP socket to an address outside
  loopback, so the tests can fail a lesson that binds where it should not.

The tests run every notebook, then call ``leftovers()`` in the same kernel: it lists the
course's server threads still alive, servers still registered, sockets still open, child
processes still running, and any of our sockets listening on a non-loopback address. A
learner can call ``check_clean()`` too, at the end of a lesson.

Cost. Audit hooks cannot be removed, and CPython calls this one for every audited event in
the process (file opens, imports, each socket call), so it must stay cheap. Per event it
compares the event name and returns. Per socket created it walks up from the caller past
standard-library frames; the verdict for each source file is computed once and cached, so
the walk is a few dict lookups, and the socket is kept by a weak reference. Measured: about
2 us of CPU per socket, most of it sys._getframe() (itself an audited call): a socketpair()
and its two close() take 12 us without tracking and 16 us with (the hook this replaced, which
parsed the caller's path on every socket, took 25 us). ``bench/hygiene_hook.py`` (an accept
loop on loopback, client and server in one process, the cheapest connection there is) keeps
about 0.9 of its connections per CPU second with the hook (the old hook: 0.76).
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

from .proc import child_pids
from .registry import THREAD_PREFIX, live_servers

__all__ = ["Leftovers", "track", "tracking", "leftovers", "open_sockets", "check_clean", "non_loopback_binds"]

# Sockets seen, by id: plain weak references (no callback, unlike a WeakSet, whose add() and
# removal on close cost more than the rest of the hook together). Dead ones are dropped every
# _PURGE_EVERY additions, so the dict stays small in a loop that makes sockets by the million.
_sockets: dict[int, weakref.ref[socket.socket]] = {}
_PURGE_EVERY = 4096
_added = 0
_binds: list[str] = []
_installed = False
_install_lock = threading.Lock()


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# Sockets the notebook's kernel makes for itself are not the lesson's: ipykernel 7 starts a
# "subshell" thread with its own asyncio loop (whose self-pipe is a socketpair) the first
# time JupyterLab sends widget messages. We tell them apart by the first caller outside the
# standard library: kernel machinery lives in these packages.
_KERNEL_PACKAGES = {"ipykernel", "tornado", "zmq", "jupyter_client", "debugpy", "comm"}
_STDLIB = os.path.dirname(os.__file__)
_verdicts: dict[str, bool | None] = {}  # source file -> None (stdlib: look further out), kernel's?


def _verdict(path: str) -> bool | None:
    """None for a standard-library file, else whether `path` belongs to the kernel's packages."""
    if path.startswith("<frozen") or (path.startswith(_STDLIB) and "site-packages" not in path):
        return None
    return bool(_KERNEL_PACKAGES.intersection(Path(path).parts))


def _on_audit(event: str, args: tuple) -> None:
    if event == "socket.__new__":
        frame = sys._getframe(1)  # who called socket(): the hook runs inside that call
        while frame is not None:
            path = frame.f_code.co_filename
            try:
                verdict = _verdicts[path]
            except KeyError:
                verdict = _verdicts[path] = _verdict(path)
            if verdict is not None:
                if verdict:
                    return  # made by the notebook's kernel machinery
                break
            frame = frame.f_back
        try:
            _sockets[id(args[0])] = weakref.ref(args[0])
        except TypeError:  # a socket type that cannot be weakly referenced: not ours
            return
        global _added
        _added += 1
        if _added >= _PURGE_EVERY:
            _added = 0
            for key, ref in list(_sockets.items()):
                if ref() is None:
                    _sockets.pop(key, None)
    elif event == "socket.bind":
        sock, address = args
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) and address else str(address)
            if not _is_loopback(str(host)):
                _binds.append(f"{address!r}")


def track() -> None:
    """Start tracking sockets and binds in this process (once; calling it again does nothing).

    Sockets created before the first call are not seen, so call it first: a lesson's first
    cell does, through ``helpers.start_lesson()``.
    """
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_on_audit)
            _installed = True


def tracking() -> bool:
    """True once ``track()`` has installed the hook in this process."""
    return _installed


def _require_tracking(who: str) -> None:
    if not _installed:
        raise RuntimeError(
            f"{who} cannot see sockets: tracking is off. Call helpers.start_lesson(...) in the first cell "
            "(or helpers.core.hygiene.track() before the sockets you want to check are made)"
        )


def non_loopback_binds() -> list[str]:
    """The non-loopback addresses bound since tracking started."""
    _require_tracking("non_loopback_binds()")
    return list(_binds)


def open_sockets() -> list[socket.socket]:
    """Python sockets created since tracking started and not closed yet."""
    _require_tracking("open_sockets()")
    alive = (ref() for ref in list(_sockets.values()))
    return [s for s in alive if s is not None and s.fileno() != -1]


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


def _listening(sock: socket.socket) -> bool:
    """True for a socket that listen() was called on (SO_ACCEPTCONN, man 7 socket)."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:  # closed meanwhile
        return False


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
    created since tracking started (except those in `ignore`), child processes, and
    sockets of ours listening outside loopback. TypeError if `ignore` is not a list of
    sockets; RuntimeError if tracking was never started (the socket list would be empty)."""
    ignored = list(ignore) if isinstance(ignore, Iterable) else None
    if ignored is None or not all(isinstance(s, socket.socket) for s in ignored):
        raise TypeError(f"ignore must be a list of sockets (such as open_sockets() returns), got {ignore!r}")
    _require_tracking("leftovers()")
    out = Leftovers()
    out.threads = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    out.servers = [repr(s) for s in live_servers()]
    skip = {id(s) for s in ignored}
    socks = [s for s in open_sockets() if id(s) not in skip]
    out.sockets = [_describe(s) for s in socks]
    out.children = child_pids(os.getpid()) if sys.platform.startswith("linux") else []
    inet = (socket.AF_INET, socket.AF_INET6)
    for s in socks:
        if s.family in inet and _listening(s):
            host, port = s.getsockname()[:2]
            if not _is_loopback(host):
                out.public_listeners.append(f"{(host, port)}")
    return out


def check_clean() -> None:
    """Raise AssertionError naming whatever the lesson left running or open."""
    left = leftovers()
    if left:
        raise AssertionError(f"the lesson left things behind: {left}")
    print("Clean: no server threads, no open sockets, no child processes left behind.")
