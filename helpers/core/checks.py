"""Argument checks shared by the helpers: one vocabulary for seconds, ports, addresses, pids.

Theory of operation. Helpers take timeouts, ports and addresses from learners, sliders and
lab code. A bad one must fail at once, at the call, with the parameter's name, the value and
what is allowed: not hang (``queue.get(timeout=nan)`` waits forever), not overflow deep
inside the socket module (``settimeout(1e300)``), not half-start a server. Every check here
says it the same way: TypeError when the value is the wrong kind of thing (a str where a
port goes; a bool is never a number), ValueError when it is the right kind but out of range.
(``helpers/c10k.py`` keeps its own copy of ``seconds``: it also runs as a stand-alone script
in server processes, with only the stdlib.)
"""

from __future__ import annotations

import ipaddress
import os
import socket

__all__ = ["seconds", "count", "port", "ip_port", "family_for", "pid", "tcp_socket"]


def seconds(name: str, value: object, *, high: float = 1e9, zero_ok: bool = False) -> float:
    """`value` as a float if it is a number of seconds in (0, high] (or [0, high] when
    `zero_ok`). TypeError for a non-number (a bool included: True is not a duration),
    ValueError for NaN, infinity or a value out of range. The default `high`, 1e9 s (31
    years), only keeps float() and deadlines finite; callers pass the limit that makes sense.
    """
    interval = f"{'[' if zero_ok else '('}0, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds in {interval}, got {type(value).__name__} {value!r}")
    if not (0 <= value if zero_ok else 0 < value) or not value <= high:  # NaN fails both comparisons
        raise ValueError(f"{name} must be a number of seconds in {interval}, got {value!r}")
    return float(value)


def count(name: str, value: object, low: int, high: int, *, note: str = "") -> int:
    """`value` if it is an int in low-high (both included): a number of workers, connections...

    TypeError for a non-int (a bool or a float included), ValueError for an int out of range;
    `note` is added after the range, e.g. " bytes".
    """
    wanted = f"{name} must be an int in {low}-{high}{note}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{wanted}, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{wanted}, got {value!r}")
    return value


def port(name: str, value: object, *, low: int = 0, note: str = "") -> int:
    """`value` if it is a port number in low-65535 (a TCP or UDP port is 16 bits).

    TypeError for a non-int (a bool or a float included), ValueError for an int out of
    range. `note` is added after the range, e.g. " (0 lets the kernel choose)".
    """
    wanted = f"{name} must be an int in {low}-65535{note}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{wanted}, got {type(value).__name__} {value!r}")
    if not low <= value <= 65535:
        raise ValueError(f"{wanted}, got {value!r}")
    return value


def ip_port(name: str, value: object) -> tuple[str, int]:
    """`value` as a (host, port) pair with the host in the form the kernel's tables print.

    TypeError unless it is a tuple of at least a str and an int (an IPv6 4-tuple is fine),
    ValueError for a host that is no IP address or a port outside 0-65535.
    """
    if not (isinstance(value, tuple) and len(value) >= 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool)):
        raise TypeError(f"{name} must be a (host, port) tuple such as ('127.0.0.1', 8080), got {value!r}")
    number = port(f"{name} port", value[1])
    try:
        return (str(ipaddress.ip_address(value[0])), number)
    except ValueError:
        raise ValueError(f"{name} host must be an IP address such as '127.0.0.1', got {value[0]!r}") from None


def family_for(host: object) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an IP address literal; TypeError for a non-str (ipaddress
    would take the int 1 as '0.0.0.1'), ValueError naming the host otherwise."""
    if not isinstance(host, str):
        raise TypeError(f"host must be an IP str such as '127.0.0.1' or '::1', got {type(host).__name__} {host!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IP address such as '127.0.0.1' or '::1', got {host!r}") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def pid(value: object) -> int | str:
    """`value` if it is a positive int or 'self' naming a process that exists now.

    ValueError for anything else, ProcessLookupError if /proc has no such process.
    """
    if isinstance(value, bool) or not (value == "self" or isinstance(value, int) and value > 0):
        raise ValueError(f"pid must be a positive int or 'self', got {value!r}")
    if not os.path.exists(f"/proc/{value}"):
        raise ProcessLookupError(f"no process with pid {value}")
    return value  # type: ignore[return-value]


def tcp_socket(who: str, sock: object) -> socket.socket:
    """`sock` if it is an open AF_INET/AF_INET6 SOCK_STREAM socket; `who` names the caller.

    TypeError for anything else (another object, a UDP or Unix socket), ValueError for a
    closed socket.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"{who} needs a TCP socket, got {type(sock).__name__}")
    if sock.fileno() == -1:
        raise ValueError(f"{who} needs an open socket; this one is closed")
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        kind = getattr(sock.type, "name", sock.type)
        fam = getattr(sock.family, "name", sock.family)
        raise TypeError(f"{who} needs a TCP socket, got a {fam}/{kind} socket")
    return sock
