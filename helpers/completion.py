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

from . import checks

__all__ = [
    "UringStatus",
    "io_uring_status",
    "Completion",
    "Ring",
    "PosixAioRead",
    "read_syscalls",
    "native_threads",
    "OP_NOP",
    "OP_READ",
    "OP_RECV",
    "URING_ARCHES",
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

    @property
    def usable(self) -> bool:
        """True if io_uring_setup(2) gave us a ring."""
        return self.setup_errno is None

    def explain(self) -> str:
        """One sentence for the learner."""
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
    """Try io_uring_setup(2) with a 1-entry ring and report what happened."""
    try:
        disabled: int | None = int(Path("/proc/sys/kernel/io_uring_disabled").read_text())
    except (OSError, ValueError):
        disabled = None
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

