"""The helpers every lesson imports: ``import helpers as h``.

Layers (tests/test_layers.py checks them): ``core`` holds the infrastructure (argument
checks, platform probes, /proc and sock_diag readers, the server registry, leak checks) and
imports no lesson module and no plotting; ``servers`` and ``behaviours`` run the other side
of a connection; ``observe`` measures the kernel and knows nothing of drawing; ``plots``,
``diagrams`` and ``widgets`` draw and interact (``progressbar`` shows steps that take seconds);
``practice`` checks the learner's exercises; the other modules each serve a lesson.
Protocol code (``framing``, ``packets``, ``reactor.http``) does no I/O.

This file only re-exports, lazily (PEP 562): ``import helpers`` loads nothing else, and
``h.figure`` imports matplotlib only when a lesson first asks for it. Every submodule is an
attribute too (``h.framing``, ``h.reactor``), imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    # a lesson's first line, and its last
    "start_lesson": ".notebook",
    "progress": ".progressbar",
    "show_source": ".notebook",
    "table": ".notebook",
    "check_clean": ".core.hygiene",
    "leftovers": ".core.hygiene",
    "open_sockets": ".core.hygiene",
    # platform
    "BINDER_URL": ".core.features",
    "HAS_TCP_INFO": ".core.features",
    "IS_LINUX": ".core.features",
    "LinuxRequiredError": ".core.features",
    "kernel_version": ".core.features",
    "require_linux": ".core.features",
    # servers
    "ProcessServer": ".servers",
    "ServerError": ".servers",
    "TCPServer": ".servers",
    "LoopServer": ".servers",
    "UDPServer": ".servers",
    "UnixStreamServer": ".servers",
    "live_servers": ".core.registry",
    "stop_all": ".core.registry",
    # observing the kernel
    "Counters": ".observe",
    "SocketEntry": ".observe",
    "SocketTable": ".observe",
    "TcpInfo": ".observe",
    "TcpState": ".observe",
    "counters_diff": ".observe",
    "entries_for": ".observe",
    "kernel_counters": ".observe",
    "open_fds": ".observe",
    "socket_drops": ".observe",
    "socket_table": ".observe",
    "tcp_info": ".observe",
    # drawing and interacting
    "figure": ".plots",
    "SequenceDiagram": ".diagrams",
    "Experiment": ".widgets",
    "int_slider": ".widgets",
    "float_slider": ".widgets",
    "choice": ".widgets",
}

_SUBMODULES = frozenset({
    "addresses", "aio", "behaviours", "c10k", "capture", "capture_root", "chat", "closing", "completion", "core",
    "diagrams", "filters", "framing", "hostile", "httpbench", "iomodels", "keepalive", "loadgen", "lossy",
    "multiplex", "nagle", "netns", "notebook", "observe", "packets", "placement", "plots", "practice", "progressbar",
    "reactor", "reliable_udp", "sampling", "servers", "services", "sockaddr", "timewait", "tools", "udp_ports", "unix",
    "unix_vs_tcp", "widgets", "labs", "serveloop", "editions",
    "cwait",  # lessons 14-15: select(2) and poll(2) with their C structures
    "doctor",  # the start-here notebook and ./course doctor: what this machine allows
})

__all__ = [  # what `h.` offers; _EXPORTS says where each is defined (tests/test_layers.py checks they agree)
    "start_lesson", "show_source", "table", "progress", "check_clean", "leftovers", "open_sockets",
    "BINDER_URL", "HAS_TCP_INFO", "IS_LINUX", "LinuxRequiredError", "kernel_version", "require_linux",
    "ProcessServer", "ServerError", "TCPServer", "LoopServer", "UDPServer", "UnixStreamServer", "live_servers",
    "stop_all",
    "Counters", "SocketEntry", "SocketTable", "TcpInfo", "TcpState", "counters_diff", "entries_for",
    "kernel_counters", "open_fds", "socket_drops", "socket_table", "tcp_info",
    "figure", "SequenceDiagram", "Experiment", "int_slider", "float_slider", "choice",
]


def __getattr__(name: str) -> Any:
    """Import what `name` needs on first use, then keep it as a plain attribute."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'helpers' has no attribute {name!r}; see dir(helpers) or helpers.__all__")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
