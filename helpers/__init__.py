"""The helpers every lesson imports: servers, measurements, plots, diagrams, widgets.

Layers: ``features`` probes the platform; ``servers`` and ``behaviours`` run the other
side of a connection; ``observe`` measures the kernel and knows nothing of drawing;
``plots``, ``diagrams`` and ``widgets`` draw and interact; ``hygiene`` checks a lesson left
nothing behind. This file only re-exports.
"""

from .diagrams import SequenceDiagram
from .features import BINDER_URL, HAS_TCP_INFO, IS_LINUX, LinuxRequiredError, kernel_version, require_linux
from .hygiene import check_clean, leftovers, open_sockets
from .observe import (
    Counters,
    SocketEntry,
    SocketTable,
    TcpInfo,
    TcpState,
    counters_diff,
    entries_for,
    kernel_counters,
    open_fds,
    socket_table,
    tcp_info,
)
from .plots import figure
from .servers import (
    ProcessServer,
    ServerError,
    TCPServer,
    UDPServer,
    UnixStreamServer,
    live_servers,
    stop_all,
)

__all__ = [
    "BINDER_URL",
    "HAS_TCP_INFO",
    "IS_LINUX",
    "Counters",
    "LinuxRequiredError",
    "ProcessServer",
    "SequenceDiagram",
    "ServerError",
    "SocketEntry",
    "SocketTable",
    "TCPServer",
    "TcpInfo",
    "TcpState",
    "UDPServer",
    "UnixStreamServer",
    "check_clean",
    "counters_diff",
    "entries_for",
    "figure",
    "kernel_counters",
    "kernel_version",
    "leftovers",
    "live_servers",
    "open_fds",
    "require_linux",
    "open_sockets",
    "socket_table",
    "stop_all",
    "tcp_info",
]
