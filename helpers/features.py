"""What this machine can do, decided once.

Every lesson runs on Linux, as the original course and Binder do. Rather than letting a
lesson fail deep inside with an AttributeError or a missing /proc file, lessons ask this
module, which probes each feature once at import time and explains what is missing.
"""

from __future__ import annotations

import os
import platform
import socket
import sys

__all__ = [
    "BINDER_URL",
    "IS_LINUX",
    "HAS_TCP_INFO",
    "LinuxRequiredError",
    "kernel_version",
    "require_linux",
]

#: Where a learner without Linux can run the course.
BINDER_URL = "https://mybinder.org/v2/gh/netprog-in-practice/course/HEAD?urlpath=lab/tree/notebooks"

IS_LINUX = sys.platform.startswith("linux")
HAS_TCP_INFO = IS_LINUX and hasattr(socket, "TCP_INFO")


class LinuxRequiredError(RuntimeError):
    """A lesson needs a Linux-only facility (TCP_INFO, /proc/net, ...) that this system lacks."""


def require_linux(what: str) -> None:
    """Raise LinuxRequiredError naming `what` unless we run on Linux.

    `what` says what the lesson needs Linux for, e.g. "TCP_INFO (lesson 02)"; it must be a
    non-empty str (TypeError otherwise, on every system, so a bad call shows up on Linux too).
    """
    if not isinstance(what, str) or not what.strip():
        raise TypeError(f"require_linux() needs a non-empty str saying what needs Linux, got {what!r}")
    if not IS_LINUX:
        raise LinuxRequiredError(
            f"{what} needs Linux, and this is {platform.system() or sys.platform}. "
            f"Run the course on a Linux machine, or open it on Binder: {BINDER_URL}"
        )


def kernel_version() -> tuple[int, int]:
    """The running kernel's (major, minor) version, e.g. (6, 8); (0, 0) off Linux."""
    if not IS_LINUX:
        return (0, 0)
    release = os.uname().release  # e.g. "6.8.0-45-generic"
    parts = release.split(".")
    try:
        return (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0))
    except (IndexError, ValueError):
        return (0, 0)
