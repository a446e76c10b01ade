"""Completion-based I/O on Linux from plain Python (ctypes): io_uring, and glibc's POSIX aio.

Theory of operation. A *reactor* (select, poll, epoll, asyncio) asks the kernel which
sockets are ready and then does the I/O itself. A *proactor* hands the whole operation
("read 64 bytes from fd 7 into this buffer") to someone else and is told later that it is
done, with the result. Linux offers two ways to get that from user space:

* **io_uring** (man 7 io_uring; Linux 5.1+). ``io_uring_setup(2)`` creates two ring
  buffers shared between the process and the kernel: the submission queue (SQ), an array
  of 64-byte entries (SQEs) we fill in, and the completion queue (CQ) of 16-byte entries
  (CQEs: our ``user_data`` tag and the result, like a system call's return value). We
  ``mmap`` the rings, write SQEs, move the SQ tail, and call ``io_uring_enter(2)`` once to
  submit any number of them (and, optionally, wait for completions). The kernel does the
  reads and writes into our buffers and appends CQEs; we read them and move the CQ head.
  ``Ring`` below is that, in ~150 lines, with no library. The system call numbers, 425
  (setup) and 426 (enter), come from the generic table (include/uapi/asm-generic/unistd.h)
  that x86_64, arm64 and the other architectures in ``URING_ARCHES`` share; elsewhere
  (alpha, mips, ia64 offset them) we do not try.
  An administrator can turn io_uring off: /proc/sys/kernel/io_uring_disabled is 0 (allowed),
  1 (only root and members of kernel.io_uring_group) or 2 (off for everyone); container
  sandboxes often block the syscalls with seccomp (EPERM or ENOSYS). ``io_uring_status()``
  checks all of that by trying.
* **POSIX aio** (man 7 aio): ``aio_read(3)`` and friends. glibc implements them in user
  space: the first request starts a helper thread that does an ordinary blocking
  ``pread``/``read`` for you and exits after an idle second (``aio_init(3)``'s
  ``aio_idle_time``). ``PosixAioRead`` lets a lesson watch that thread appear, wait in
  read(2), and go away.
* **Kernel AIO** (``io_setup(2)``, ``io_submit(2)``, ``io_getevents(2)``; Linux 2.6, the
  interface libaio wraps). It is a real kernel interface with no helper thread, but it is
  asynchronous only where a driver can queue the operation (O_DIRECT file I/O). A buffered
  file read is done inside io_submit(2), and a read from a socket blocks io_submit(2) itself
  until data arrives (fs/aio.c calls the socket's read_iter, which sleeps unless asked not
  to). Since Linux 4.18 ``IOCB_CMD_POLL`` queues a readiness wait that completes with the
  poll mask: readiness again, not data. ``KernelAio`` lets a lesson observe all three.

Where io_uring is refused (a container's seccomp profile, io_uring_disabled), lesson 18 shows
its io_uring experiments from a run recorded earlier by ``save_recording()`` and read back by
``load_recording()`` (``UringRecording``), labelled with where, when and the kernel.

Memory ordering: the kernel reads the SQ tail with acquire semantics; on x86_64 and arm64
Python's byte stores through ``mmap`` reach memory in program order well enough for this
one-thread teaching ring (liburing uses explicit barriers; production code should use it).
Buffers handed to the kernel must outlive the operation: ``Ring`` keeps a reference to each
until its completion is reaped or the ring is closed (closing cancels what is in flight).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import platform
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import checks, recordings
from .core.features import switched_off
from .iomodels import Watched

__all__ = [
    "UringStatus",
    "io_uring_status",
    "Completion",
    "Ring",
    "PosixAioRead",
    "KernelAio",
    "KaioStatus",
    "kernel_aio_status",
    "read_syscalls",
    "UringRecording",
    "save_recording",
    "load_recording",
    "native_threads",
    "OP_NOP",
    "OP_READ",
    "OP_RECV",
    "URING_ARCHES",
    "IOCB_CMD_PREAD",
    "IOCB_CMD_POLL",
]

SYS_IO_URING_SETUP = 425  # include/uapi/asm-generic/unistd.h; x86_64's table uses the same numbers
SYS_IO_URING_ENTER = 426
#: Architectures (platform.machine()) whose io_uring syscalls have those numbers.
URING_ARCHES = {"x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x", "armv7l"}
IORING_ENTER_GETEVENTS = 1
IORING_FEAT_SINGLE_MMAP = 1  # SQ and CQ rings share one mapping (Linux 5.4+)
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
OP_NOP, OP_READ, OP_RECV = 0, 22, 27  # enum io_uring_op in include/uapi/linux/io_uring.h
SQE_SIZE, CQE_SIZE = 64, 16
_SQE = struct.Struct("<BBHiQQIIQ")  # opcode, flags, ioprio, fd, off, addr, len, op_flags, user_data
_CQE = struct.Struct("<QiI")  # user_data, res, flags
_OFFSETS = struct.Struct("<8IQ")  # io_sqring_offsets / io_cqring_offsets: 8 u32 and a u64
PARAMS_SIZE = 120  # sizeof(struct io_uring_params)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: int | None) -> int:
    """syscall(2) with every argument passed as a C long; returns the result or -errno.

    Returns -ENOSYS without calling anything on an architecture not in URING_ARCHES, where
    these numbers could mean another system call.
    """
    if platform.machine() not in URING_ARCHES:
        return -errno.ENOSYS
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a or 0) for a in args))
    return -ctypes.get_errno() if ret == -1 else ret


@dataclass
class UringStatus:
    """Whether this process may use io_uring, and why not."""

    disabled_sysctl: int | None  # /proc/sys/kernel/io_uring_disabled (None: no such file, kernel < 6.6)
    setup_errno: int | None  # None: io_uring_setup succeeded
    features: int = 0
    switched_off: str = ""  # why a test switched the probe off ("" when it answered for real)

    @property
    def usable(self) -> bool:
        """True if io_uring_setup(2) gave us a ring."""
        return self.setup_errno is None

    def explain(self) -> str:
        """One sentence for the learner."""
        if self.switched_off:
            return self.switched_off + "."
        if self.usable:
            return f"io_uring_setup(2) works here (features 0x{self.features:x}): we can build a ring."
        name = errno.errorcode.get(self.setup_errno or 0, str(self.setup_errno))
        reason = {
            errno.ENOSYS: "this kernel (or a seccomp filter) does not offer the system call, or this "
                          f"architecture ({platform.machine()}) is not one this module knows the numbers for",
            errno.EPERM: "io_uring is switched off for this user (io_uring_disabled, or a seccomp filter)",
            errno.EACCES: "a security module (e.g. SELinux) denies io_uring",
            errno.ENOMEM: "the ring could not be allocated (locked-memory limit)",
        }.get(self.setup_errno or 0, os.strerror(self.setup_errno or 0))
        return f"io_uring_setup(2) failed with {name}: {reason} (io_uring_disabled = {self.disabled_sysctl})."


def io_uring_status() -> UringStatus:
    """Try io_uring_setup(2) with a 1-entry ring and report what happened.

    A test may switch this probe ("io_uring") off: helpers.core.features; the status then
    says so instead of trying.
    """
    try:
        disabled: int | None = int(Path("/proc/sys/kernel/io_uring_disabled").read_text())
    except (OSError, ValueError):
        disabled = None
    why = switched_off("io_uring")
    if why:
        return UringStatus(disabled, errno.ENOSYS, switched_off=f"io_uring is {why}")
    params = ctypes.create_string_buffer(PARAMS_SIZE)
    fd = _syscall(SYS_IO_URING_SETUP, 1, ctypes.addressof(params))
    if fd < 0:
        return UringStatus(disabled, -fd)
    os.close(fd)
    return UringStatus(disabled, None, struct.unpack_from("<I", params, 20)[0])


@dataclass(frozen=True)
class Completion:
    """One CQE: the tag we gave the request and its result (bytes done, or -errno)."""

    user_data: int
    res: int

    @property
    def error(self) -> str | None:
        """The errno name if the operation failed, e.g. 'ECANCELED'."""
        return errno.errorcode.get(-self.res, str(-self.res)) if self.res < 0 else None


class Ring:
    """A minimal io_uring: submit NOP, READ and RECV requests, reap their completions.

    ``Ring(entries)`` calls io_uring_setup(2) and maps the rings (OSError if io_uring is
    unavailable: see ``io_uring_status()``). ``submit(*requests, wait=n)`` queues requests
    made by ``nop()``, ``read()`` or ``recv()`` and makes one io_uring_enter(2) call; ``reap()``
    returns the completions available now. ``enter_calls`` counts our io_uring_enter calls.
    """

    def __init__(self, entries: int = 64):
        if isinstance(entries, bool) or not isinstance(entries, int) or not 1 <= entries <= 4096:
            raise ValueError(f"entries must be an int in 1-4096 (rounded up to a power of two), got {entries!r}")
        params = ctypes.create_string_buffer(PARAMS_SIZE)
        fd = _syscall(SYS_IO_URING_SETUP, entries, ctypes.addressof(params))
        if fd < 0:
            raise OSError(-fd, f"io_uring_setup: {os.strerror(-fd)}; " + UringStatus(None, -fd).explain())
        self.fd = fd
        self.enter_calls = 0
        self._buffers: dict[int, Any] = {}  # user_data -> buffer the kernel may still write into
        self._maps: list[mmap.mmap] = []
        try:
            self.sq_entries, self.cq_entries, _, _, _, self.features = struct.unpack_from("<6I", params, 0)
            self.sq = dict(zip(("head", "tail", "mask", "entries", "flags", "dropped", "array"),
                               _OFFSETS.unpack_from(params, 40)[:7]))
            self.cq = dict(zip(("head", "tail", "mask", "entries", "overflow", "cqes"),
                               _OFFSETS.unpack_from(params, 80)[:6]))
            sq_size = self.sq["array"] + self.sq_entries * 4
            cq_size = self.cq["cqes"] + self.cq_entries * CQE_SIZE
            if self.features & IORING_FEAT_SINGLE_MMAP:
                self.sq_ring = self.cq_ring = self._map(max(sq_size, cq_size), IORING_OFF_SQ_RING)
            else:
                self.sq_ring = self._map(sq_size, IORING_OFF_SQ_RING)
                self.cq_ring = self._map(cq_size, IORING_OFF_CQ_RING)
            self.sqes = self._map(self.sq_entries * SQE_SIZE, IORING_OFF_SQES)
        except BaseException:
            self.close()
            raise

    def _map(self, size: int, offset: int) -> mmap.mmap:
        m = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        self._maps.append(m)
        return m

    def _u32(self, ring: mmap.mmap, offset: int) -> int:
        return struct.unpack_from("<I", ring, offset)[0]

    # -- building requests (SQEs); each is a tuple the kernel's struct io_uring_sqe wants.
    # The fields are checked here, against the SQE's C types, so a wrong one is named now
    # rather than surfacing as a struct.error (or a wrapped-around number) inside submit().
    @staticmethod
    def nop(user_data: int) -> tuple[Any, ...]:
        """A request that does nothing: measures the ring's own round trip."""
        return (OP_NOP, -1, 0, None, 0, _field("user_data", user_data, 0, (1 << 64) - 1))

    @staticmethod
    def read(fd: int, buffer: Any, offset: int, user_data: int) -> tuple[Any, ...]:
        """Read len(buffer) bytes at `offset` of file `fd` into `buffer` (a ctypes array).

        `fd` may be any int the kernel's s32 takes (a bad one comes back as EBADF in the
        completion); `offset` is an int >= 0; `user_data` an int in 0 to 2**64 - 1.
        """
        return (OP_READ, _field("fd", fd, -(1 << 31), (1 << 31) - 1), _field("offset", offset, 0, (1 << 63) - 1),
                buffer, _buffer_size(buffer), _field("user_data", user_data, 0, (1 << 64) - 1))

    @staticmethod
    def recv(fd: int, buffer: Any, user_data: int) -> tuple[Any, ...]:
        """Receive up to len(buffer) bytes from socket `fd` into `buffer` (a ctypes array)."""
        return (OP_RECV, _field("fd", fd, -(1 << 31), (1 << 31) - 1), 0, buffer, _buffer_size(buffer),
                _field("user_data", user_data, 0, (1 << 64) - 1))

    def submit(self, *requests: tuple[Any, ...], wait: int = 0) -> int:
        """Queue `requests` and make one io_uring_enter(2) call; return how many it took.

        With ``wait=n`` the call also blocks until n completions are ready; n may not be more
        than the requests in flight after this call (it would wait forever). Requests must
        come from nop(), read() or recv(), with a `user_data` tag not already in flight.
        """
        if self.fd < 0:
            raise ValueError("this Ring is closed")
        in_flight = len(self._buffers)
        if len(requests) + in_flight > self.sq_entries:
            raise ValueError(f"{len(requests)} requests + {in_flight} in flight exceed the ring's {self.sq_entries}")
        tags = set(self._buffers)
        for request in requests:
            if not (isinstance(request, tuple) and len(request) == 6 and request[0] in (OP_NOP, OP_READ, OP_RECV)):
                raise TypeError(f"submit() takes requests made by nop(), read() or recv(), got {request!r:.80}")
            if request[5] in tags:
                raise ValueError(f"user_data {request[5]} is already in flight or repeated: give each request its "
                                 "own tag, it is how its completion is found")
            tags.add(request[5])
        if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= len(tags):
            raise ValueError(f"wait must be an int in 0-{len(tags)} (the requests in flight after this call), "
                             f"got {wait!r}")
        tail = self._u32(self.sq_ring, self.sq["tail"])
        mask = self._u32(self.sq_ring, self.sq["mask"])
        for opcode, fd, offset, buffer, length, user_data in requests:
            index = tail & mask
            address = ctypes.addressof(buffer) if buffer is not None else 0
            self.sqes[index * SQE_SIZE:(index + 1) * SQE_SIZE] = bytes(SQE_SIZE)
            _SQE.pack_into(self.sqes, index * SQE_SIZE, opcode, 0, 0, fd, offset, address, length, 0, user_data)
            struct.pack_into("<I", self.sq_ring, self.sq["array"] + 4 * index, index)
            self._buffers[user_data] = buffer
            tail += 1
        struct.pack_into("<I", self.sq_ring, self.sq["tail"], tail & 0xFFFFFFFF)  # publish the new entries
        flags = IORING_ENTER_GETEVENTS if wait else 0
        self.enter_calls += 1
        ret = _syscall(SYS_IO_URING_ENTER, self.fd, len(requests), wait, flags, None, 0)
        if ret < 0:
            raise OSError(-ret, f"io_uring_enter: {os.strerror(-ret)}")
        return ret

    def wait(self, n: int = 1) -> list[Completion]:
        """Block in io_uring_enter(2) until `n` completions are ready, then reap them.

        `n` may not exceed the requests in flight (ValueError: it would wait forever).
        """
        if self.fd < 0:
            raise ValueError("this Ring is closed")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self._buffers):
            raise ValueError(f"n must be an int in 1-{len(self._buffers)} (the requests in flight), got {n!r}")
        ready = (self._u32(self.cq_ring, self.cq["tail"]) - self._u32(self.cq_ring, self.cq["head"])) & 0xFFFFFFFF
        if ready < n:
            self.enter_calls += 1
            ret = _syscall(SYS_IO_URING_ENTER, self.fd, 0, n, IORING_ENTER_GETEVENTS, None, 0)
            if ret < 0:
                raise OSError(-ret, f"io_uring_enter: {os.strerror(-ret)}")
        return self.reap()

    def reap(self) -> list[Completion]:
        """The completions the kernel has posted so far (possibly none); marks them seen."""
        if self.fd < 0:
            raise ValueError("this Ring is closed")
        head = self._u32(self.cq_ring, self.cq["head"])
        tail = self._u32(self.cq_ring, self.cq["tail"])
        mask = self._u32(self.cq_ring, self.cq["mask"])
        out = []
        while head != tail:
            user_data, res, _ = _CQE.unpack_from(self.cq_ring, self.cq["cqes"] + (head & mask) * CQE_SIZE)
            out.append(Completion(user_data, res))
            self._buffers.pop(user_data, None)
            head = (head + 1) & 0xFFFFFFFF
        struct.pack_into("<I", self.cq_ring, self.cq["head"], head)  # tell the kernel the slots are free
        return out

    def close(self) -> None:
        """Unmap the rings and close the ring fd (the kernel cancels what is in flight). Idempotent."""
        for m in self._maps:
            m.close()
        self._maps.clear()
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1
        self._buffers.clear()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _field(name: str, value: object, low: int, high: int) -> int:
    """`value` if it is an int in [low, high] (the range of its C field); TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}-{high}, got {value}")
    return value


def _buffer_size(buffer: object) -> int:
    """The size of a ctypes array the kernel may write into; TypeError for anything else (bytes are immutable)."""
    if not isinstance(buffer, ctypes.Array) or ctypes.sizeof(buffer) == 0:
        raise TypeError(f"buffer must be a non-empty ctypes array, e.g. ctypes.create_string_buffer(64), got "
                        f"{type(buffer).__name__}")
    return ctypes.sizeof(buffer)


def read_syscalls() -> int:
    """read-family system calls (read, pread64, readv, ...) made by the calling thread so far.

    From /proc/thread-self/io, field ``syscr`` (man 5 proc). I/O done by io_uring requests
    does not go through those system calls, so it does not count here. Reading the file is
    itself one read(2), counted once it returns: the difference of two calls is one more
    than the reads made in between.
    """
    fd = os.open("/proc/thread-self/io", os.O_RDONLY)
    try:
        text = os.read(fd, 4096).decode()  # one read(2): the file is ~100 bytes
    finally:
        os.close(fd)
    for line in text.splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise RuntimeError("no syscr line in /proc/thread-self/io")


# ---- recordings of lesson 18's io_uring experiments ----

PROACTOR_KEYS = ("submitted", "before", "done", "bytes")


@dataclass(frozen=True)
class UringRecording:
    """Lesson 18's io_uring experiments as ``save_recording()`` stored them: never assert on them.

    ``asynchronous``: the io_uring reader as ``iomodels.watch()`` saw it (None if not recorded);
    ``proactor``: {"submitted": int, "before": [Completion], "done": [Completion], "bytes": bytes},
    a receive submitted before any data; ``batching``: {row: (read syscalls, syscalls we made,
    time per block in us)}, block reads with os.pread and the ring; ``source``: "RECORDED
    earlier: " and the recording's label (who, where, when, the kernel).
    """

    asynchronous: Watched | None
    proactor: dict[str, Any]
    batching: dict[str, tuple[int, int, float]]
    source: str
    live: bool = False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _completions_json(name: str, value: object) -> list[list[int]]:
    if not isinstance(value, list) or not all(isinstance(c, Completion) and _is_int(c.user_data) and _is_int(c.res)
                                              for c in value):
        raise TypeError(f"proactor[{name!r}] must be a list of Completion, got {value!r:.80}")
    return [[c.user_data, c.res] for c in value]


def _proactor_json(proactor: object) -> dict[str, Any]:
    """The proactor step's result, {"submitted", "before", "done", "bytes"}, as JSON; TypeError otherwise."""
    if not isinstance(proactor, dict) or set(proactor) != set(PROACTOR_KEYS):
        raise TypeError(f"proactor must be a dict with the keys {', '.join(PROACTOR_KEYS)}, got {proactor!r:.80}")
    if not _is_int(proactor["submitted"]) or not isinstance(proactor["bytes"], bytes):
        raise TypeError(f"proactor's 'submitted' must be an int and its 'bytes' bytes, got {proactor!r:.80}")
    return {"submitted": proactor["submitted"], "before": _completions_json("before", proactor["before"]),
            "done": _completions_json("done", proactor["done"]), "bytes_hex": proactor["bytes"].hex()}


def _batching_json(batching: object) -> dict[str, list[float]]:
    """{row: (read syscalls, syscalls made, us per block)} as JSON; TypeError for anything else,
    ValueError without any io_uring row."""
    if not isinstance(batching, dict):
        raise TypeError(f"batching must be a dict {{row: (reads, calls, us)}}, got {batching!r:.80}")
    rows = {}
    for name, row in batching.items():
        if not (isinstance(name, str) and isinstance(row, tuple) and len(row) == 3 and _is_int(row[0])
                and _is_int(row[1]) and isinstance(row[2], (int, float)) and not isinstance(row[2], bool)):
            raise TypeError(f"batching must map a row's name to (read syscalls, syscalls made, us per block), "
                            f"got {name!r}: {row!r:.80}")
        rows[name] = [row[0], row[1], float(row[2])]
    if not any(name.startswith("io_uring") for name in rows):
        raise ValueError(f"batching has no io_uring row, only {list(rows)}: record the ring's runs too")
    return rows


def _watched_json(watched: object) -> dict[str, Any]:
    """iomodels.watch()'s result for a read that returned, as JSON; TypeError otherwise."""
    if not isinstance(watched, Watched) or watched.error is not None or not isinstance(watched.data, bytes):
        raise TypeError(f"asynchronous must be what iomodels.watch() returned for a read that worked, got "
                        f"{watched!r:.80}")
    if not (isinstance(watched.name, str) and isinstance(watched.how, str) and _is_int(watched.samples)
            and isinstance(watched.waiting, dict) and all(isinstance(k, str) and isinstance(v, (int, float))
                                                          for k, v in watched.waiting.items())
            and isinstance(watched.cpu_ms, (int, float))):
        raise TypeError(f"asynchronous holds fields of the wrong types: {watched!r:.80}")
    return {"name": watched.name, "waiting": dict(watched.waiting), "samples": watched.samples,
            "cpu_ms": float(watched.cpu_ms), "data_hex": watched.data.hex(), "how": watched.how}


def save_recording(path: str | Path, where: str, *, proactor: dict[str, Any],
                   batching: dict[str, tuple[int, int, float]], asynchronous: Watched | None = None) -> None:
    """Store lesson 18's live io_uring results as JSON, labelled with `where` (the machine),
    the time and the kernel, for load_recording() where io_uring is refused.

    `proactor` and `batching` are the dicts the lesson's proactor and batching steps build;
    `asynchronous` what ``iomodels.watch()`` returned for the io_uring reader. TypeError for an
    empty `where` or results of the wrong shape; ValueError for batching without an io_uring
    row, or where io_uring is not usable (so these cannot be a live run, e.g. a recording's
    own results). Nothing is written unless everything can be stored.
    """
    label = recordings.label(where, by="helpers.completion")  # TypeError for an empty `where`
    record: dict[str, Any] = {"recorded": label, "proactor": _proactor_json(proactor),
                              "batching": _batching_json(batching)}
    if asynchronous is not None:
        record["asynchronous"] = _watched_json(asynchronous)
    status = io_uring_status()
    if not status.usable:
        raise ValueError(f"io_uring is not usable here, so these results are no live run: {status.explain()}")
    recordings.write(path, record)


def load_recording(path: str | Path) -> UringRecording:
    """The io_uring results recorded earlier by save_recording() (``live`` False, ``source``
    "RECORDED earlier: " and its label). Found from an edition's folder too; ValueError naming
    the file for anything that is not such a recording."""
    def build(label: str, data: dict[str, Any]) -> UringRecording:
        p = data["proactor"]
        proactor = {"submitted": p["submitted"], "before": [Completion(*c) for c in p["before"]],
                    "done": [Completion(*c) for c in p["done"]], "bytes": bytes.fromhex(p["bytes_hex"])}
        batching = {name: tuple(row) for name, row in data["batching"].items()}
        _proactor_json(proactor)  # the same checks as when it was saved
        _batching_json(batching)
        w = data.get("asynchronous")
        watched = None if w is None else Watched(w["name"], w["waiting"], w["samples"], w["cpu_ms"],
                                                 bytes.fromhex(w["data_hex"]), w["how"])
        if watched is not None:
            _watched_json(watched)
        return UringRecording(watched, proactor, batching, f"RECORDED earlier: {label}")  # type: ignore[arg-type]

    return recordings.read(path, "completion.save_recording()", build)  # also from an edition's folder


# ---- POSIX aio (glibc) ----

class _Aiocb(ctypes.Structure):
    """struct aiocb for glibc on 64-bit Linux (168 bytes; checked against <aio.h> with gcc)."""

    _fields_ = [
        ("aio_fildes", ctypes.c_int), ("aio_lio_opcode", ctypes.c_int), ("aio_reqprio", ctypes.c_int),
        ("aio_buf", ctypes.c_void_p), ("aio_nbytes", ctypes.c_size_t),
        ("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int), ("sigev_notify", ctypes.c_int),
        ("_sigev_rest", ctypes.c_byte * 48),
        ("_next_prio", ctypes.c_void_p), ("_abs_prio", ctypes.c_int), ("_policy", ctypes.c_int),
        ("_error_code", ctypes.c_int), ("_return_value", ctypes.c_ssize_t), ("aio_offset", ctypes.c_long),
        ("_reserved", ctypes.c_byte * 32),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


SIGEV_NONE = 1  # no signal, no thread callback: we ask aio_error() / aio_suspend() ourselves
_unfinished: list[Any] = []  # requests abandoned in flight: their buffers must never be freed
_aio_lib: Any = None


def _aio() -> Any:
    global _aio_lib
    if _aio_lib is None:
        if platform.libc_ver()[0] != "glibc" or ctypes.sizeof(ctypes.c_long) != 8:
            raise OSError(errno.ENOSYS, "PosixAioRead knows struct aiocb for 64-bit glibc only, "
                          f"not {platform.libc_ver()[0] or 'this libc'} on {platform.machine()}")
        for name in (None, ctypes.util.find_library("rt")):  # glibc 2.34+ has aio in libc; older in librt
            lib = ctypes.CDLL(name, use_errno=True)
            if hasattr(lib, "aio_read"):
                _aio_lib = lib
                break
        else:
            raise OSError(errno.ENOSYS, "no aio_read in libc or librt: POSIX aio needs glibc on Linux")
    return _aio_lib


class PosixAioRead:
    """One glibc ``aio_read(3)`` of up to `nbytes` from `fd` (a file at `offset`, or a socket).

    ``aio_read`` returns at once; ``done()`` asks ``aio_error(3)``; ``result(timeout_s)``
    waits with ``aio_suspend(3)`` and returns the bytes read. glibc does the read in a
    helper thread of this process: for a socket it blocks in read(2) until data arrives.
    Use it as a context manager: leaving the block with the read still in flight keeps its
    buffer alive for good (the helper thread would write into freed memory otherwise) and
    raises RuntimeError, because glibc cannot cancel a read that already started: make it
    finish (send data, or shut the socket down).
    """

    def __init__(self, fd: int, nbytes: int, offset: int = 0):
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 1 <= nbytes <= 1 << 20:
            raise ValueError(f"nbytes must be an int in 1-1048576, got {nbytes!r}")
        _field("fd", fd, 0, (1 << 31) - 1)
        _field("offset", offset, 0, (1 << 63) - 1)
        self.buffer = ctypes.create_string_buffer(nbytes)
        self.cb = _Aiocb(aio_fildes=fd, aio_buf=ctypes.addressof(self.buffer), aio_nbytes=nbytes,
                         sigev_notify=SIGEV_NONE, aio_offset=offset)
        if _aio().aio_read(ctypes.byref(self.cb)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"aio_read: {os.strerror(err)}")
        self._finished = False

    def done(self) -> bool:
        """True once the read has finished (aio_error() is no longer EINPROGRESS)."""
        return _aio().aio_error(ctypes.byref(self.cb)) != errno.EINPROGRESS

    def result(self, timeout_s: float = 2.0) -> bytes:
        """Wait up to `timeout_s` for the read; return the bytes (b'' at EOF).

        Raises TimeoutError if it is still in flight, OSError if the read failed, TypeError or
        ValueError if `timeout_s` is not a number of seconds in [0, 600].
        """
        checks.seconds("timeout_s", timeout_s, high=600, zero_ok=True)
        if not self._finished:
            deadline = time.monotonic() + timeout_s
            cbs = (ctypes.POINTER(_Aiocb) * 1)(ctypes.pointer(self.cb))
            while not self.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"aio_read still in flight after {timeout_s} s (is anyone sending?)")
                ts = _Timespec(int(left), int((left % 1) * 1e9))
                _aio().aio_suspend(cbs, 1, ctypes.byref(ts))  # returns early on completion, EINTR or EAGAIN
            err = _aio().aio_error(ctypes.byref(self.cb))
            self._n = _aio().aio_return(ctypes.byref(self.cb))  # reap it (once)
            self._finished = True
            if err:
                raise OSError(err, f"aio_read: {os.strerror(err)}")
        return self.buffer.raw[: self._n]

    def __enter__(self) -> PosixAioRead:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._finished:
            return
        if self.done():
            self.result(0)
            return
        _unfinished.append(self)
        if exc_type is None:
            raise RuntimeError("aio_read still in flight when its block ended; make it finish first "
                               "(send data or shut the socket down), its buffer is kept alive meanwhile")


# ---- kernel AIO (io_setup / io_submit / io_getevents) ----

#: (io_setup, io_destroy, io_getevents, io_submit) per architecture: x86_64's own table
#: (arch/x86/entry/syscalls/syscall_64.tbl) and the generic one (include/uapi/asm-generic/unistd.h).
KAIO_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2), "arm64": (0, 1, 4, 2),
                 "riscv64": (0, 1, 4, 2)}
IOCB_CMD_PREAD, IOCB_CMD_POLL = 0, 5  # include/uapi/linux/aio_abi.h
_IOCB = struct.Struct("<QIIHhIQQqQII")  # struct iocb: data, key, rw_flags, opcode, prio, fd, buf, nbytes, offset, ...
_IO_EVENT = struct.Struct("<QQqq")  # struct io_event: data, obj, res, res2


def _kaio(call: int, *args: int | None) -> int:
    """One kernel AIO system call (index into KAIO_SYSCALLS' tuple); the result or -errno."""
    numbers = KAIO_SYSCALLS.get(platform.machine())
    if numbers is None:
        return -errno.ENOSYS
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(numbers[call]), *(ctypes.c_long(a or 0) for a in args))
    return -ctypes.get_errno() if ret == -1 else ret


@dataclass(frozen=True)
class KaioStatus:
    """Whether io_setup(2) works for this process, and why not."""

    setup_errno: int | None  # None: io_setup succeeded

    @property
    def usable(self) -> bool:
        """True if io_setup(2) gave us a context."""
        return self.setup_errno is None

    def explain(self) -> str:
        """One sentence for the learner."""
        if self.usable:
            return "io_setup(2) works here: we can submit kernel AIO requests."
        name = errno.errorcode.get(self.setup_errno or 0, str(self.setup_errno))
        reason = {
            errno.ENOSYS: f"this kernel, a seccomp filter or this architecture ({platform.machine()}) does not "
                          "offer it",
            errno.EPERM: "a seccomp filter refuses it",
            errno.EAGAIN: "the system-wide limit /proc/sys/fs/aio-max-nr is used up",
        }.get(self.setup_errno or 0, os.strerror(self.setup_errno or 0))
        return f"io_setup(2) failed with {name}: {reason}."


def kernel_aio_status() -> KaioStatus:
    """Try io_setup(2) with one slot (and io_destroy it) and report what happened."""
    ctx = ctypes.c_ulong(0)
    ret = _kaio(0, 1, ctypes.addressof(ctx))
    if ret < 0:
        return KaioStatus(-ret)
    _kaio(1, ctx.value)
    return KaioStatus(None)


class KernelAio:
    """A kernel AIO context: ``io_setup(2)``, requests by ``io_submit(2)``, results by ``io_getevents(2)``.

    ``pread(fd, buffer, offset, user_data)`` and ``poll(fd, events, user_data)`` build
    requests; ``submit(*requests)`` hands them over in one io_submit(2) call (which may
    itself block: a socket read does until data arrives); ``getevents(min_nr, timeout_s)``
    collects completions (``Completion``: the tag and the result, bytes read or the poll
    mask, or -errno). OSError if io_setup fails (see ``kernel_aio_status()``). Closing calls
    io_destroy(2), which cancels what is still queued (a poll) and waits for the rest.
    """

    def __init__(self, entries: int = 8):
        _field("entries", entries, 1, 1024)
        ctx = ctypes.c_ulong(0)
        ret = _kaio(0, entries, ctypes.addressof(ctx))
        if ret < 0:
            raise OSError(-ret, f"io_setup: {os.strerror(-ret)}; " + KaioStatus(-ret).explain())
        self.ctx: int | None = ctx.value
        self.entries = entries
        self._kept: dict[int, Any] = {}  # user_data -> (iocb, buffer): memory the kernel may still use

    @staticmethod
    def pread(fd: int, buffer: Any, offset: int, user_data: int) -> tuple[Any, ...]:
        """Read up to len(buffer) bytes from `fd` at `offset` (0 for a socket) into `buffer` (a ctypes array)."""
        return (IOCB_CMD_PREAD, _field("fd", fd, 0, (1 << 31) - 1), _field("offset", offset, 0, (1 << 63) - 1),
                buffer, _buffer_size(buffer), _field("user_data", user_data, 0, (1 << 64) - 1))

    @staticmethod
    def poll(fd: int, events: int, user_data: int) -> tuple[Any, ...]:
        """Wait until `fd` is ready for `events` (POLLIN, ...); completes with the ready mask (Linux 4.18+)."""
        return (IOCB_CMD_POLL, _field("fd", fd, 0, (1 << 31) - 1), 0, None, _field("events", events, 1, 0xFFFF),
                _field("user_data", user_data, 0, (1 << 64) - 1))

    def submit(self, *requests: tuple[Any, ...]) -> int:
        """Hand `requests` (from pread() or poll()) to the kernel in one io_submit(2); return how many it took.

        For a poll the "buffer" field carries the event mask, as struct iocb wants it.
        """
        if self.ctx is None:
            raise ValueError("this KernelAio is closed")
        if not requests or len(requests) + len(self._kept) > self.entries:
            raise ValueError(f"submit 1-{self.entries - len(self._kept)} requests, got {len(requests)}")
        iocbs = []
        for request in requests:
            if not (isinstance(request, tuple) and len(request) == 6 and request[0] in (IOCB_CMD_PREAD, IOCB_CMD_POLL)):
                raise TypeError(f"submit() takes requests made by pread() or poll(), got {request!r:.80}")
            opcode, fd, offset, buffer, length, user_data = request
            if user_data in self._kept:
                raise ValueError(f"user_data {user_data} is already in flight: give each request its own tag")
            address, nbytes = (length, 0) if opcode == IOCB_CMD_POLL else (ctypes.addressof(buffer), length)
            iocb = ctypes.create_string_buffer(
                _IOCB.pack(user_data, 0, 0, opcode, 0, fd, address, nbytes, offset, 0, 0, 0), _IOCB.size)
            self._kept[user_data] = (iocb, buffer)
            iocbs.append(iocb)
        pointers = (ctypes.c_void_p * len(iocbs))(*(ctypes.addressof(i) for i in iocbs))
        ret = _kaio(3, self.ctx, len(iocbs), ctypes.addressof(pointers))
        if ret < 0:
            for request in requests:
                self._kept.pop(request[5], None)
            raise OSError(-ret, f"io_submit: {os.strerror(-ret)}")
        for request in requests[ret:]:  # not taken: the kernel will never touch them
            self._kept.pop(request[5], None)
        return ret

    def getevents(self, min_nr: int = 1, timeout_s: float | None = 2.0) -> list[Completion]:
        """Completions from io_getevents(2): wait for at least `min_nr` (0: take what is there),
        at most `timeout_s` seconds (None: no limit)."""
        if self.ctx is None:
            raise ValueError("this KernelAio is closed")
        _field("min_nr", min_nr, 0, self.entries)
        ts = None
        if timeout_s is not None:
            checks.seconds("timeout_s", timeout_s, high=600, zero_ok=True)
            ts = _Timespec(int(timeout_s), int((timeout_s % 1) * 1e9))
        events = ctypes.create_string_buffer(_IO_EVENT.size * self.entries)
        ret = _kaio(2, self.ctx, min_nr, self.entries, ctypes.addressof(events),
                    ctypes.addressof(ts) if ts is not None else None)
        if ret < 0:
            raise OSError(-ret, f"io_getevents: {os.strerror(-ret)}")
        out = []
        for i in range(ret):
            user_data, _, res, _ = _IO_EVENT.unpack_from(events, i * _IO_EVENT.size)
            self._kept.pop(user_data, None)
            out.append(Completion(user_data, res))
        return out

    def close(self) -> None:
        """io_destroy(2): cancel what is still queued, wait for the rest, free the context. Idempotent."""
        if self.ctx is not None:
            _kaio(1, self.ctx)
            self.ctx = None
        self._kept.clear()

    def __enter__(self) -> KernelAio:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def native_threads(*, foreign_only: bool = False) -> list[int]:
    """The kernel thread ids of this process (/proc/self/task).

    With ``foreign_only=True``, only threads Python's ``threading`` module knows nothing of:
    those started in C, such as glibc's aio helpers (and libzmq's, in a Jupyter kernel).
    """
    tids = sorted(int(t.name) for t in Path("/proc/self/task").iterdir())
    if foreign_only:
        known = {t.native_id for t in threading.enumerate()}
        tids = [t for t in tids if t not in known]
    return tids

