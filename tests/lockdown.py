"""Run a command the way a locked-down container would: a normal user, new namespaces refused,
one CPU of quota and a memory limit, some programs missing, 1024 descriptors.

Theory of operation. Binder, hub pods and CI containers differ from a laptop in a few ways
that change what the lessons can do. This launcher reproduces them on one machine, for the
locked-down test (tests/test_locked_down.py), in the order the kernel requires:

1. As root, the caller makes a cgroup with a CPU quota (v2 ``cpu.max``, or v1
   ``cpu.cfs_quota_us``) and a memory limit, and names its ``cgroup.procs`` files with
   ``--cgroup``; the launcher moves itself in, so everything it starts is limited too.
2. As root, it enters a mount namespace of its own and mounts /dev/null over each
   ``--hide`` program (ss, lsof, tcpdump): in this process tree the files are there but not
   executable, so ``shutil.which`` and ``helpers.core.features.find_program`` miss them, as
   in an image without the package. The machine's own mounts are untouched (the namespace's
   mounts are private).
3. It lowers the soft RLIMIT_NOFILE (``--nofile``, a normal user's default is 1024).
4. It becomes the normal user ``--user`` (groups, gid, uid; no way back).
5. It sets PR_SET_NO_NEW_PRIVS and installs a seccomp filter (man 2 seccomp) that refuses
   what a container's default profile refuses for namespaces: unshare() and clone() with a
   CLONE_NEW* flag and setns() fail with EPERM; clone3(), whose flags sit in memory a
   classic BPF filter cannot read, fails with ENOSYS, so glibc falls back to clone() for
   threads and processes (Docker's default profile does the same). The filter is inherited
   by every child and cannot be removed.
6. It execs the command.

Run as root: ``python tests/lockdown.py --user course-learner --hide ss,lsof --nofile 1024
--cgroup /sys/fs/cgroup/cpu/x/cgroup.procs -- ./course test ...``. Without root only steps
3 and 5 apply (a normal user may restrict itself), and the launcher says so.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import platform
import pwd
import resource
import shutil
import struct
import sys
from pathlib import Path

# <linux/filter.h>, <linux/seccomp.h>, <linux/audit.h>, <linux/sched.h>, <sys/mount.h>
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x45, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
SECCOMP_MODE_FILTER, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 2, 22, 38
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME = 0x10000000, 0x20000000, 0x40000000, 0x00000080
NAMESPACE_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
                   | CLONE_NEWNET | CLONE_NEWTIME)
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000

#: (AUDIT_ARCH, {syscall: number}) for the machines the course runs on.
ARCHES = {
    "x86_64": (0xC000003E, {"clone": 56, "unshare": 272, "setns": 308, "clone3": 435}),
    "aarch64": (0xC00000B7, {"clone": 220, "unshare": 97, "setns": 268, "clone3": 435}),
}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def seccomp_program(machine: str | None = None) -> bytes:
    """The classic BPF program (struct sock_filter[]) of step 5, for `machine` (uname -m).

    struct seccomp_data holds int nr at offset 0, u32 arch at 4 and u64 args[6] from 16; the
    low 32 bits of args[0] (the flags of clone and unshare) are at 16 on a little-endian
    machine. Calls made for another architecture (a 32-bit program) pass: the course runs none.
    """
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise ValueError(f"no syscall numbers for {machine!r}; known: {sorted(ARCHES)}")
    arch, nr = ARCHES[machine]
    code: list[tuple] = [  # (op, k, jump if true, jump if false), labels as ("label", name)
        ("ld", 4, None, None),  # A = arch
        ("jeq", arch, None, "allow"),
        ("ld", 0, None, None),  # A = the system call's number
        ("jeq", nr["unshare"], "flags", None),
        ("jeq", nr["clone"], "flags", None),
        ("jeq", nr["setns"], "eperm", None),
        ("jeq", nr["clone3"], "enosys", None),
        ("label", "allow"), ("ret", SECCOMP_RET_ALLOW, None, None),
        ("label", "flags"), ("ld", 16, None, None),  # A = the flags
        ("jset", NAMESPACE_FLAGS, "eperm", None),  # BPF jumps only forward, so a second allow
        ("ret", SECCOMP_RET_ALLOW, None, None),
        ("label", "eperm"), ("ret", SECCOMP_RET_ERRNO | errno.EPERM, None, None),
        ("label", "enosys"), ("ret", SECCOMP_RET_ERRNO | errno.ENOSYS, None, None),
    ]
    labels: dict[str, int] = {}
    for item in code:
        if item[0] == "label":
            labels[item[1]] = len([i for i in code[:code.index(item)] if i[0] != "label"])
    insns = [i for i in code if i[0] != "label"]
    ops = {"ld": BPF_LD_W_ABS, "ret": BPF_RET_K, "jeq": BPF_JEQ_K, "jset": BPF_JSET_K}
    out = []
    for index, (op, k, true, false) in enumerate(insns):  # a jump skips that many instructions after the next
        jt = 0 if true is None else labels[true] - index - 1
        jf = 0 if false is None else labels[false] - index - 1
        out.append(struct.pack("=HBBI", ops[op], jt, jf, k))
    return b"".join(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def refuse_namespaces() -> None:
    """Step 5: from now on this process and its children may not create or join namespaces."""
    program = seccomp_program()
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "prctl(PR_SET_SECCOMP)")


def program_files(names: list[str]) -> list[str]:
    """The real files behind each program name on PATH and in the usual bin folders."""
    folders = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/sbin", "/usr/bin", "/bin",
               "/usr/local/sbin", "/usr/local/bin"]
    found = []
    for name in names:
        for folder in folders:
            path = os.path.join(folder, name)
            if folder and os.path.isfile(path):
                real = os.path.realpath(path)
                if real not in found:
                    found.append(real)
    return found


def hide_programs(names: list[str]) -> list[str]:
    """Step 2 (root): a private mount namespace with /dev/null over each program; returns the files hidden."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    hidden = program_files(names)
    for path in hidden:
        _check(_libc.mount(b"/dev/null", path.encode(), None, MS_BIND, None), f"mount --bind /dev/null {path}")
    return hidden


def become(user: str) -> pwd.struct_passwd:
    """Step 4 (root): drop to `user` for good."""
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    return entry


def main(argv: list[str] | None = None) -> None:
    """Parse the options, apply the steps in order, exec the command (never returns)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", help="the normal user to become (root only)")
    parser.add_argument("--cgroup", action="append", default=[], help="a cgroup.procs file to join (root only)")
    parser.add_argument("--hide", default="", help="programs to hide, comma-separated (root only)")
    parser.add_argument("--nofile", type=int, help="the soft RLIMIT_NOFILE to set")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    root = os.geteuid() == 0
    if not root and (args.user or args.cgroup or args.hide):
        print("lockdown: not root, so no cgroup, hidden programs or other user; only the descriptor limit and "
              "the namespace filter apply", file=sys.stderr)
    if root:
        for procs in args.cgroup:
            Path(procs).write_text(str(os.getpid()))
        if args.hide:
            hide_programs([n for n in args.hide.split(",") if n])
    if args.nofile is not None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    if root and args.user:
        become(args.user)
    refuse_namespaces()
    exe = shutil.which(command[0]) or command[0]
    os.execv(exe, command)


if __name__ == "__main__":
    main()
