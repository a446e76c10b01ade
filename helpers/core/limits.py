"""Resource limits a server or a load generator raises for itself: RLIMIT_NOFILE.

Theory of operation. Every socket is a file descriptor, and a process may hold at most its
soft RLIMIT_NOFILE of them (``man 2 getrlimit``), usually 1024: too few for a server or a
load generator with thousands of connections. A process may raise its soft limit up to its
hard limit without any privilege, so server and load processes do that first. Nothing here
lowers a limit.
"""

from __future__ import annotations

import resource

from . import checks

__all__ = ["NR_OPEN", "raise_nofile_limit"]

NR_OPEN = 1 << 20  # Linux's default ceiling (fs.nr_open) when the hard limit says "unlimited"


def raise_nofile_limit(want: int | None = None) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to `want` (default: the hard limit).

    Returns the previous (soft, hard), to restore with resource.setrlimit. A larger `want`
    stops at the hard limit; `want` must be an int >= 1 (TypeError/ValueError otherwise).
    The limit is never lowered.
    """
    if want is not None:
        checks.count("want", want, 1, 1 << 30, note=" (file descriptors), or None for the hard limit")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = NR_OPEN if hard == resource.RLIM_INFINITY else hard
    target = ceiling if want is None else min(want, ceiling)
    if soft != resource.RLIM_INFINITY and target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard
