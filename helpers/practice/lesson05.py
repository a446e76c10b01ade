"""Checks for the exercises of lesson 05 (local, Unix-domain, sockets).

1. ``listen_private()``: a listening AF_UNIX stream socket on an abstract name no other
   program will pick (on a shared machine, every user shares the abstract namespace). The
   check calls it twice (a fixed name fails the second time), looks the sockets up in
   /proc/net/unix, and connects to one.
2. ``accept_only(listener, pid)``: a server that serves one process only. Two child processes
   connect, the stranger first; SO_PEERCRED must tell them apart. The check waits until both
   connections sit in the listener's accept queue, where /proc/net/unix shows them as
   CONNECTING under the listener's name.
3. ``pass_file(sock, path)``: open a file and pass the open file (SCM_RIGHTS) to a child
   process. After the call the check deletes the file's name, then the child reads the file
   through the descriptor it received: only an open file handed over by the kernel can still
   be read. The check also looks for the learner's own copy left open in /proc/self/fd.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import tempfile
import time
from typing import Any

from ..closing import ChildProcess
from ..unix import PROC_NET_UNIX, UnixState, entry_for, parse_proc_net_unix
from .core import Trial, exercise


def _private_name() -> str:
    """An abstract name for one check, unique to this process and run."""
    return f"\0course-check05-{os.getpid()}-{secrets.token_hex(4)}"


def _listener(t: Trial, name: str) -> socket.socket:
    listener = t.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(8)
    return listener


# -- 1. listen_private ---------------------------------------------------------------------

LISTEN_HINT = (
    "sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); sock.bind(name) with a name that "
    "starts with a NUL byte (abstract: no file) and is unique, e.g. "
    "f\"\\0lesson05-{os.getpid()}-{secrets.token_hex(4)}\"; then sock.listen() and return sock."
)


def _shown(name: Any) -> str:
    """A socket name as /proc/net/unix prints it ('@' for the leading NUL)."""
    if isinstance(name, bytes):
        return "@" + name[1:].decode(errors="replace") if name.startswith(b"\0") else name.decode(errors="replace")
    return str(name)


@exercise("05", 1, "listen on a private abstract name", hint=LISTEN_HINT)
def check_listen_private(t: Trial, listen_private: Any) -> str:
    first = t.call(listen_private, name="listen_private()", timeout_s=1.0).value
    t.require(isinstance(first, socket.socket), f"listen_private() returned {first!r:.60}, not a socket.", LISTEN_HINT)
    t.own(first)
    t.require((first.family, first.type) == (socket.AF_UNIX, socket.SOCK_STREAM),
              f"listen_private() returned a {first.family.name}/{first.type.name} socket.", LISTEN_HINT)
    name = first.getsockname()
    if isinstance(name, str) and name:  # a path: bind() made a file in the filesystem
        if os.path.exists(name) and stat.S_ISSOCK(os.lstat(name).st_mode):
            os.unlink(name)  # the socket file the learner's bind() just created, not left behind
        t.fail(f"listen_private() bound the path {name!r}, so bind() created a socket file there (the check removed "
               "it): on a shared machine another user can see it, and it stays behind if the program dies.",
               "Start the name with a NUL byte (\"\\0...\"): an abstract name lives only in the kernel.")
    t.require(isinstance(name, bytes) and len(name) > 1, f"The socket's name is {name!r}: it was never bound.",
              LISTEN_HINT)
    t.require(entry_for(first).listening, f"The socket is bound to {_shown(name)!r} but not listening: a "
              "connect() would be refused.", "Call sock.listen() after bind().")
    second = t.call(listen_private, name="listen_private()", timeout_s=1.0, error_hints={
        OSError: "The first socket still holds its name, so binding the same name again fails (EADDRINUSE). Make "
                 "each name unique: the pid for this process, a random token for each call.",
    }).value
    t.require(isinstance(second, socket.socket) and second is not first, "The second call of listen_private() "
              f"returned {'the same socket again' if second is first else repr(second)[:60]}.",
              "Create, bind and listen on a new socket on each call.")
    t.own(second)
    name2 = second.getsockname()
    client = t.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(2.0)
    client.connect(name)
    first.settimeout(2.0)
    conn = t.own(first.accept()[0])
    client.sendall(b"ping")
    t.require(conn.recv(16) == b"ping", "A client connected to the first name, but its bytes did not arrive.",
              LISTEN_HINT)
    return (f"Two calls gave two listening sockets, {_shown(name)!r} and {_shown(name2)!r} in /proc/net/unix, "
            "with no file on disk; a client connected to the first by its name and its bytes arrived.")


# -- 2. accept_only: SO_PEERCRED -------------------------------------------------------------

CONNECT_AND_WAIT = """\
import socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
    c.connect("\\0" + sys.argv[1])
    c.sendall(sys.argv[2].encode())
    c.settimeout(3)
    try:
        print(repr(c.recv(100)))
    except OSError as exc:
        print(type(exc).__name__)
"""
STRANGER, FRIEND = "let me in", "hello from the right process"

ACCEPT_HINT = (
    "Loop: conn, _ = listener.accept(); pid, uid, gid = struct.unpack('3i', conn.getsockopt("
    "socket.SOL_SOCKET, socket.SO_PEERCRED, 12)). If pid is not the one allowed, conn.close() and "
    "accept the next; otherwise return conn.recv(1024) (and close conn)."
)


def _wait_queued(name: str, count: int, timeout_s: float = 10.0) -> int:
    """Wait until `count` connections to the abstract `name` sit in its accept queue (the kernel
    lists each as a CONNECTING socket under the listener's name); how many it saw."""
    shown, deadline = "@" + name[1:], time.monotonic() + timeout_s
    while True:
        rows = parse_proc_net_unix(PROC_NET_UNIX.read_bytes())  # not unix_table(): every embryo has inode 0
        queued = sum(1 for e in rows if e.path == shown and e.state is UnixState.CONNECTING)
        if queued >= count or time.monotonic() > deadline:
            return queued
        time.sleep(0.005)


@exercise("05", 2, "serve only one process (SO_PEERCRED)", hint=ACCEPT_HINT)
def check_accept_only(t: Trial, accept_only: Any) -> str:
    name = _private_name()
    listener = _listener(t, name)
    ours = t.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # first a connection from this very process
    ours.connect(name)
    ours.sendall(b"from the notebook")
    mine = t.call(accept_only, listener, os.getpid(), name="accept_only()", timeout_s=2.0, hang_hint=ACCEPT_HINT).value
    t.require(mine in (b"from the notebook", "from the notebook"), f"A connection from this process (pid "
              f"{os.getpid()}, the allowed one) sent b'from the notebook'; accept_only() returned {mine!r:.60}.",
              ACCEPT_HINT)
    with ChildProcess(CONNECT_AND_WAIT, name[1:], STRANGER) as stranger:
        t.require(_wait_queued(name, 1) >= 1, "The check's first child process did not connect within 10 s.",
                  "Run the check again; the machine may be very busy.")
        with ChildProcess(CONNECT_AND_WAIT, name[1:], FRIEND) as friend:
            t.require(_wait_queued(name, 2) >= 2, "The check's second child process did not connect within 10 s.",
                      "Run the check again; the machine may be very busy.")
            message = t.call(accept_only, listener, friend.pid, name="accept_only()", timeout_s=3.0,
                             hang_hint="Both connections were waiting in the accept queue: call accept() (twice, "
                                       "if the first peer is not the allowed one).").value
            stranger_saw = stranger.wait(timeout_s=5.0).stdout.strip()
    if isinstance(message, str):
        message = message.encode()
    t.require(message != STRANGER.encode(), f"accept_only() returned {message!r}, the message of process "
              f"{stranger.pid}, not of the allowed process {friend.pid}. Both run as the same user, so only the "
              "pid tells them apart.", "Read SO_PEERCRED of each accepted connection and compare its pid.")
    t.require(message == FRIEND.encode(), f"accept_only() returned {message!r:.60}; process {friend.pid} had sent "
              f"{FRIEND.encode()!r}.", ACCEPT_HINT)
    t.require(stranger_saw in ("b''", "ConnectionResetError"), f"The refused process {stranger.pid} was not "
              f"disconnected: its recv() {'timed out' if stranger_saw == 'TimeoutError' else 'got ' + stranger_saw}.",
              "Close a connection you refuse: the peer then sees end of file (or a reset) at once.")
    return (f"accept_only() served a connection from this process, then, with two other processes waiting, "
            f"accepted both: it closed the one from process {stranger.pid}, which "
            f"connected first (that process's recv() got {stranger_saw}), and returned {message!r} from process "
            f"{friend.pid}: SO_PEERCRED told two processes of the same user apart.")


# -- 3. pass_file: SCM_RIGHTS ----------------------------------------------------------------

RECEIVE_FILE = """\
import fcntl, json, os, socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
    c.connect("\\0" + sys.argv[1])
    c.settimeout(5)
    msg, fds, _, _ = socket.recv_fds(c, 1024, 4)
    c.recv(1)  # "go": by now the parent has removed the file's name
    out = {"message": msg.decode(errors="replace"), "fds": len(fds)}
    if fds:
        st = os.fstat(fds[0])
        out.update(content=os.pread(fds[0], 4096, 0).decode(errors="replace"), links=st.st_nlink,
                   inode=[st.st_dev, st.st_ino], read_only=fcntl.fcntl(fds[0], fcntl.F_GETFL) & os.O_ACCMODE == 0)
    c.sendall(json.dumps(out).encode())
"""

PASS_HINT = (
    "fd = os.open(path, os.O_RDONLY); n = socket.send_fds(sock, [b'file'], [fd]); then os.close(fd), "
    "your own copy (the receiver has its own now); return n."
)


def _open_copies(path: str) -> list[int]:
    """The descriptors of this process that are open on `path` (from /proc/self/fd)."""
    found = []
    for entry in os.scandir("/proc/self/fd"):
        try:
            if os.readlink(entry.path) == path:
                found.append(int(entry.name))
        except OSError:  # closed meanwhile
            pass
    return found


def _read_report(conn: socket.socket) -> dict[str, Any]:
    data = b""
    conn.settimeout(5.0)
    while chunk := conn.recv(65536):
        data += chunk
    return json.loads(data)


def _probe(t: Trial, pass_file: Any) -> None:
    """First, within this process: does pass_file() send a descriptor at all?"""
    a, b = (t.own(s) for s in socket.socketpair())
    with tempfile.NamedTemporaryFile(prefix="course-check05-") as f:
        t.call(pass_file, a, f.name, name="pass_file()", timeout_s=2.0)
        b.settimeout(1.0)
        try:
            msg, fds, _, _ = socket.recv_fds(b, 1024, 4)
        except TimeoutError:
            t.fail("pass_file() returned, but nothing arrived on the other end of the socket.", PASS_HINT)
        for fd in fds:
            os.close(fd)
    t.require(fds, f"pass_file() sent {msg!r:.60} but no file descriptor with it.",
              "Pass the open file itself: socket.send_fds(sock, [b'file'], [fd]).")


@exercise("05", 3, "pass an open file (SCM_RIGHTS)", hint=PASS_HINT)
def check_pass_file(t: Trial, pass_file: Any) -> str:
    _probe(t, pass_file)
    name = _private_name()
    listener = _listener(t, name)
    content = f"written by the check: {secrets.token_hex(8)}"
    with tempfile.TemporaryDirectory(prefix="course-check05-") as tmp, \
            ChildProcess(RECEIVE_FILE, name[1:]) as child:
        path = os.path.join(tmp, "passed.txt")
        with open(path, "w") as f:
            f.write(content)
        ours = os.stat(path)
        listener.settimeout(10.0)
        conn = t.own(listener.accept()[0])
        t.call(pass_file, conn, path, name="pass_file()", timeout_s=2.0)
        left_open = _open_copies(path)
        for fd in left_open:
            os.close(fd)  # the learner's copy, lost: nothing else will ever close it
        os.unlink(path)  # from now on no name leads to the file: only an open descriptor does
        conn.sendall(b"g")
        report = _read_report(conn)
        child.wait(timeout_s=5.0)
    t.require(report["fds"] >= 1, f"The child process {child.pid} received your message {report['message']!r:.60} "
              "but no file descriptor with it, and once the check had deleted the file, nobody could open it by "
              "its name any more.", "Pass the open file itself: socket.send_fds(sock, [b'file'], [fd]).")
    t.require(report.get("inode") == [ours.st_dev, ours.st_ino], f"The child received a descriptor, but not for "
              f"the file at {path}.", "Open the path you were given, and pass that descriptor.")
    t.require(report.get("content") == content and report.get("links") == 0, f"The child read "
              f"{report.get('content')!r:.60} through the descriptor.", PASS_HINT)
    t.require(report.get("read_only"), "The descriptor the child received can write to the file.",
              "Open the file read-only (os.O_RDONLY, or open(path, 'rb')): the receiver gets the same access.")
    t.require(not left_open, f"The child read the file, but your own descriptor {left_open} for it was still open "
              "after pass_file() returned (the check closed it).", "After send_fds(), close your copy: the "
              "receiver has its own descriptor, and a program that forgets runs out of descriptors.")
    return (f"Process {child.pid} received a new descriptor for the file. After the check had deleted the file's "
            f"name (its link count was then {report['links']}), the child still read all {len(content)} bytes "
            "through it, read-only: the kernel had handed over the open file, not its name or a number. Your own "
            "copy was closed.")
