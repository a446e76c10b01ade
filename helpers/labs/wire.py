"""Messages between the grader's tests and the learner's process: values, and sockets as fds.

Theory of operation. When a lab is graded, the learner's code runs in one process and the
tests in another (see ``runner`` and ``learner``). A test calls ``readn(sock, 10)``; the
call travels to the learner's process over one Unix stream socket, and so does the answer.
This module is that channel, in two layers:

* **Frames.** A frame is a fixed header (``!IIH``: JSON length, number of binary blobs,
  number of file descriptors), then the JSON text, then each blob with a 4-byte length.
  File descriptors ride on the header's ``sendmsg`` as ``SCM_RIGHTS`` ancillary data
  (man 7 unix): the receiver gets its own descriptors for the same open files, so a socket
  the test created can be read by the learner's ``recv()``, and the bytes it takes are
  gone for the test too, exactly as if one process held it. Frames are sent under a lock,
  so threads may share one channel.
* **Values.** JSON carries ``None``, booleans, numbers and text as they are; everything else
  is a small tagged object: bytes become a blob, a socket becomes a descriptor (with its
  timeout, since the file's O_NONBLOCK flag is shared but Python's timeout is not), and
  lists, tuples, sets, dicts, paths and the course's own dataclasses (``helpers.*``, such
  as ``Request``) are spelled out. An object of any other type cannot be copied: the
  learner's side keeps it and sends a *handle* (a number), and the grader's side calls its
  methods through the handle.

The grader decodes what the learner's process sends as untrusted input: sizes are bounded
(``MAX_FRAME_BYTES``, ``MAX_FDS``, ``MAX_DEPTH``), unknown tags are refused, a descriptor
must really be a socket, and a dataclass is rebuilt only from a ``helpers`` module, field by
field, through its constructor. Nothing is unpickled. ``WireError`` says what was wrong.
"""

from __future__ import annotations

import _socket
import array
import dataclasses
import importlib
import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

# Taken once, at import: code in the learner's process may replace json.dumps, os.close or
# socket.socket.recv later, and the channel must not notice (it uses a _socket.socket, whose
# C methods cannot be replaced).
_dumps, _loads, _close, _dup, _fstat = json.dumps, json.loads, os.close, os.dup, os.fstat

__all__ = ["Channel", "WireError", "Codec", "MAX_FRAME_BYTES", "MAX_FDS"]

_HEADER = struct.Struct("!IIH")  # JSON bytes, blobs, file descriptors
_BLOB = struct.Struct("!I")
#: Largest frame accepted: a lab moves at most a few MB per call (lab 01 echoes ~400 kB).
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Descriptors per frame: a call passes a few sockets (a listener, a stop socket, ...).
MAX_FDS = 32
#: Nesting of lists, dicts and tuples in one value.
MAX_DEPTH = 64
#: Blobs per frame (one per bytes object).
MAX_BLOBS = 100_000


class WireError(Exception):
    """A frame or value that cannot be read (corrupt, too large, or of an unknown kind)."""


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            _close(fd)
        except OSError:
            pass


class Channel:
    """Frames over one connected AF_UNIX SOCK_STREAM socket; thread-safe for send and recv.

    ``send(obj, blobs, fds)`` writes one frame (the caller keeps its descriptors: the
    kernel dups them into the message). ``recv()`` returns ``(obj, blobs, fds)`` and the
    caller owns the received descriptors; EOFError when the peer closed between frames.
    """

    def __init__(self, sock: _socket.socket):
        if not isinstance(sock, _socket.socket) or sock.family != socket.AF_UNIX:
            raise TypeError(f"a Channel needs an AF_UNIX socket, got {sock!r:.80}")
        self.sock = sock
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()

    def send(self, obj: Any, blobs: Sequence[bytes] = (), fds: Sequence[int] = ()) -> None:
        text = _dumps(obj, separators=(",", ":")).encode()
        blobs, fds = list(blobs), list(fds)
        if len(fds) > MAX_FDS:
            raise WireError(f"a frame carries at most {MAX_FDS} file descriptors, got {len(fds)}")
        size = _HEADER.size + len(text) + sum(_BLOB.size + len(b) for b in blobs)
        if size > MAX_FRAME_BYTES or len(blobs) > MAX_BLOBS:
            raise WireError(f"a frame of {size} bytes and {len(blobs)} blobs is over the limit "
                            f"({MAX_FRAME_BYTES} bytes, {MAX_BLOBS} blobs)")
        header = _HEADER.pack(len(text), len(blobs), len(fds))
        body = [text]
        for blob in blobs:
            body += [_BLOB.pack(len(blob)), blob]
        with self._send_lock:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            sent = self.sock.sendmsg([header], ancillary)
            if sent < len(header):
                self.sock.sendall(header[sent:])
            self.sock.sendall(b"".join(body))

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise WireError(f"the peer closed in the middle of a frame ({got} of {n} bytes)")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv(self) -> tuple[Any, list[bytes], list[int]]:
        with self._recv_lock:
            fds: list[int] = []
            try:
                header = b""
                while len(header) < _HEADER.size:
                    data, ancdata, flags, _ = self.sock.recvmsg(_HEADER.size - len(header),
                                                                 socket.CMSG_SPACE(MAX_FDS * 4))
                    for level, kind, payload in ancdata:
                        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                            usable = len(payload) - len(payload) % 4
                            fds += array.array("i", payload[:usable]).tolist()
                    if flags & socket.MSG_CTRUNC:
                        raise WireError(f"a frame carried more than {MAX_FDS} file descriptors")
                    if not data:
                        if header:
                            raise WireError("the peer closed in the middle of a frame header")
                        raise EOFError("the peer closed the channel")
                    header += data
                text_len, n_blobs, n_fds = _HEADER.unpack(header)
                if n_fds != len(fds):
                    raise WireError(f"a frame announced {n_fds} file descriptors and carried {len(fds)}")
                if text_len > MAX_FRAME_BYTES or n_blobs > MAX_BLOBS:
                    raise WireError(f"a frame announced {text_len} bytes of JSON and {n_blobs} blobs: over the limit")
                total = text_len
                text = self._read_exact(text_len)
                blobs = []
                for _ in range(n_blobs):
                    (length,) = _BLOB.unpack(self._read_exact(_BLOB.size))
                    total += _BLOB.size + length
                    if total > MAX_FRAME_BYTES:
                        raise WireError(f"a frame is over {MAX_FRAME_BYTES} bytes")
                    blobs.append(self._read_exact(length))
                try:
                    obj = _loads(text)
                except (ValueError, RecursionError) as exc:
                    raise WireError(f"a frame's JSON is not readable: {exc}") from None
                return obj, blobs, fds
            except BaseException:
                _close_all(fds)
                raise

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- values


def _is_course_dataclass(value: Any) -> bool:
    cls = type(value)
    return dataclasses.is_dataclass(value) and not isinstance(value, type) and cls.__module__.startswith("helpers.")


class Codec:
    """Turns values into JSON plus blobs and descriptors, and back.

    `export` is called for an object that cannot be copied and returns its JSON form (the
    learner's side registers a handle; the grader's side raises TypeError). `resolve`
    turns a ``{"$": "handle"|"ref", ...}`` back into an object (a proxy on the grader's
    side, the registered object on the learner's side).
    """

    def __init__(self, export: Any, resolve: Any):
        self._export = export
        self._resolve = resolve

    # -- encoding ------------------------------------------------------------------------

    def encode(self, value: Any) -> tuple[Any, list[bytes], list[int]]:
        """(JSON-able form, blobs, fds). The fds are new dups: close them after sending."""
        blobs: list[bytes] = []
        fds: list[int] = []
        try:
            return self._enc(value, blobs, fds, 0), blobs, fds
        except BaseException:
            _close_all(fds)
            raise

    def _enc(self, v: Any, blobs: list[bytes], fds: list[int], depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"a value nested more than {MAX_DEPTH} deep cannot be passed")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)  # an IntEnum travels as its number
        if isinstance(v, float):
            return float(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            blobs.append(bytes(v))
            return {"$": "bytearray" if isinstance(v, bytearray) else "bytes", "i": len(blobs) - 1}
        if isinstance(v, socket.socket):
            if v.fileno() < 0:
                raise WireError("a closed socket cannot be passed")
            if len(fds) >= MAX_FDS:
                raise WireError(f"at most {MAX_FDS} sockets can be passed in one call")
            fds.append(_dup(v.fileno()))
            return {"$": "socket", "i": len(fds) - 1, "timeout": v.gettimeout()}
        if isinstance(v, PurePath):
            return {"$": "path", "v": str(v)}
        d = depth + 1
        if isinstance(v, list):
            return {"$": "list", "v": [self._enc(x, blobs, fds, d) for x in v]}
        if isinstance(v, tuple) and not hasattr(v, "_fields"):
            return {"$": "tuple", "v": [self._enc(x, blobs, fds, d) for x in v]}
        if isinstance(v, (set, frozenset)):
            tag = "set" if isinstance(v, set) else "frozenset"
            return {"$": tag, "v": [self._enc(x, blobs, fds, d) for x in v]}
        if type(v) is dict:
            pairs = [[self._enc(k, blobs, fds, d), self._enc(x, blobs, fds, d)] for k, x in v.items()]
            return {"$": "dict", "v": pairs}
        if _is_course_dataclass(v):
            fields = {f.name: self._enc(getattr(v, f.name), blobs, fds, d) for f in dataclasses.fields(v) if f.init}
            return {"$": "dataclass", "cls": f"{type(v).__module__}:{type(v).__qualname__}", "v": fields}
        return self._export(v)

    # -- decoding ------------------------------------------------------------------------

    def decode(self, obj: Any, blobs: list[bytes], fds: list[int]) -> tuple[Any, list[socket.socket]]:
        """The value, and the sockets made from `fds` (the caller closes them when done).

        Every descriptor in `fds` is either turned into one of the returned sockets or
        closed, whatever happens.
        """
        sockets: dict[int, socket.socket] = {}
        try:
            value = self._dec(obj, blobs, fds, sockets, 0)
        except BaseException:
            for s in sockets.values():
                s.close()
            _close_all([fd for i, fd in enumerate(fds) if i not in sockets])
            raise
        _close_all([fd for i, fd in enumerate(fds) if i not in sockets])
        return value, list(sockets.values())

    def _dec(self, o: Any, blobs: list[bytes], fds: list[int], socks: dict[int, socket.socket], depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"a value nested more than {MAX_DEPTH} deep")
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        if not isinstance(o, dict) or not isinstance(o.get("$"), str):
            raise WireError(f"not a value: {o!r:.80}")
        tag = o["$"]
        d = depth + 1
        if tag in ("bytes", "bytearray"):
            index = o.get("i")
            if not isinstance(index, int) or not 0 <= index < len(blobs):
                raise WireError(f"a bytes value names blob {index!r:.20} of {len(blobs)}")
            return bytearray(blobs[index]) if tag == "bytearray" else blobs[index]
        if tag in ("list", "tuple", "set", "frozenset"):
            items = o.get("v")
            if not isinstance(items, list):
                raise WireError(f"a {tag} without items")
            values = [self._dec(x, blobs, fds, socks, d) for x in items]
            try:
                return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](values)
            except TypeError as exc:  # a set of unhashable values
                raise WireError(f"a {tag} that cannot be built: {exc}") from None
        if tag == "dict":
            pairs = o.get("v")
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise WireError("a dict that is not a list of pairs")
            try:
                return {self._dec(k, blobs, fds, socks, d): self._dec(v, blobs, fds, socks, d) for k, v in pairs}
            except TypeError as exc:
                raise WireError(f"a dict with an unhashable key: {exc}") from None
        if tag == "path":
            if not isinstance(o.get("v"), str):
                raise WireError("a path that is not text")
            return Path(o["v"])
        if tag == "socket":
            index, timeout = o.get("i"), o.get("timeout")
            if not isinstance(index, int) or not 0 <= index < len(fds) or index in socks:
                raise WireError(f"a socket names descriptor {index!r:.20} of {len(fds)}")
            if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                        or not 0 <= timeout <= 1e9):
                raise WireError(f"a socket with timeout {timeout!r:.40}")
            if not stat.S_ISSOCK(_fstat(fds[index]).st_mode):
                raise WireError("a descriptor passed as a socket is not a socket")
            sock = socket.socket(fileno=fds[index])
            socks[index] = sock
            sock.settimeout(timeout)
            return sock
        if tag == "dataclass":
            return self._dataclass(o, blobs, fds, socks, d)
        if tag in ("handle", "ref"):
            return self._resolve(o)
        raise WireError(f"unknown value kind {tag!r:.40}")

    def _dataclass(self, o: dict, blobs: list[bytes], fds: list[int], socks: dict, depth: int) -> Any:
        name, fields = o.get("cls"), o.get("v")
        if not isinstance(name, str) or not isinstance(fields, dict):
            raise WireError("a dataclass without a class name or fields")
        module_name, _, qualname = name.partition(":")
        if not (module_name == "helpers" or module_name.startswith("helpers.")) or not qualname.isidentifier():
            raise WireError(f"only the course's own dataclasses can be passed, not {name!r:.80}")
        try:
            cls = getattr(importlib.import_module(module_name), qualname)
        except (ImportError, AttributeError):
            raise WireError(f"no dataclass {name!r:.80}") from None
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise WireError(f"{name!r:.80} is not a dataclass")
        allowed = {f.name for f in dataclasses.fields(cls) if f.init}
        if not set(fields) <= allowed:
            raise WireError(f"{name}: unknown fields {sorted(set(fields) - allowed)!r:.80}")
        values = {k: self._dec(v, blobs, fds, socks, depth) for k, v in fields.items()}
        try:
            return cls(**values)
        except Exception as exc:  # noqa: BLE001 (a constructor refusing the values: the sender's mistake)
            raise WireError(f"{name} refused its fields: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- exceptions


def describe_exception(exc: BaseException, traceback_text: str = "") -> dict[str, Any]:
    """The JSON form of an exception: its class names (most derived first), message, errno."""
    names = [c.__name__ for c in type(exc).__mro__ if issubclass(c, BaseException)]
    out: dict[str, Any] = {"types": names, "message": str(exc)[:2000], "traceback": traceback_text[-6000:]}
    if isinstance(exc, OSError) and isinstance(exc.errno, int):
        out["errno"] = exc.errno
        out["strerror"] = str(exc.strerror or "")[:200]
    return out
