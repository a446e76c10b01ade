"""Watch one socket's TCP_INFO over time, and find when its counters moved.

Theory of operation. Some things TCP does happen while the program does nothing: a
keep-alive probe on an idle connection, a retransmission, a delayed ACK. They leave no
trace in the program's own calls, but they move the socket's counters in struct tcp_info
(``segs_out``, ``segs_in``, ``probes``, ...). Reading TCP_INFO every few milliseconds and
noting when a counter rose turns those counters into a timeline. The resolution is the
sampling period (20 ms by default): fine for events a second apart, too coarse for
round trips on loopback (tens of microseconds), which a lesson times directly.

This module only measures; lessons draw the result with ``plots``.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from .observe import TcpInfo, tcp_info
from .progressbar import progress as show_progress

__all__ = ["Sample", "sample_tcp_info", "rise_times"]

_MIN_EVERY_S = 0.001  # below a millisecond the loop only burns CPU that the experiment needs
_PROGRESS_AFTER_S = 2.0  # the course shows progress for anything longer than this
_COUNTERS = tuple(f.name for f in fields(TcpInfo) if f.name != "state")  # every int field


@dataclass(frozen=True)
class Sample:
    """TCP_INFO of one socket at ``t_s`` seconds after sampling began."""

    t_s: float
    info: TcpInfo


def sample_tcp_info(
    sock: socket.socket,
    duration_s: float,
    *,
    every_s: float = 0.02,
    progress: str | None = None,
    stop_when: Callable[[TcpInfo], bool] | None = None,
) -> list[Sample]:
    """Read tcp_info(sock) every `every_s` seconds for `duration_s` seconds.

    The first sample is taken at once, the last at or just after `duration_s`, or the first
    for which `stop_when(info)` is true; samples are due on a fixed schedule, so a late one
    (a busy machine) does not shift the others.
    With `progress` (a label) and a duration over 2 s, a progress line counts the samples
    (``helpers.progressbar``: its final state stays readable in a saved notebook).
    Raises ValueError for a non-positive or absurd duration or period, and what tcp_info()
    raises for a socket that is not TCP.
    """
    for name, value, limit in (("duration_s", duration_s, 3600.0), ("every_s", every_s, 60.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= limit:
            raise ValueError(f"{name} must be a number of seconds in (0, {limit:g}], got {value!r}")
    if progress is not None and (not isinstance(progress, str) or not progress):
        raise ValueError(f"progress must be a label (a non-empty str) or None, got {progress!r}")
    if stop_when is not None and not callable(stop_when):
        raise TypeError(f"stop_when must be a function of a TcpInfo (or None), got {stop_when!r}")
    tcp_info(sock)  # TypeError/ValueError for a socket that is not TCP, before any waiting
    every_s = max(every_s, _MIN_EVERY_S)
    due = [min(k * every_s, duration_s) for k in range(math.ceil(duration_s / every_s) + 1)]
    if progress is not None and duration_s > _PROGRESS_AFTER_S:
        due = show_progress(due, desc=progress)  # type: ignore[assignment]
    samples: list[Sample] = []
    start = time.monotonic()
    for at in due:
        time.sleep(max(0.0, at - (time.monotonic() - start)))
        samples.append(Sample(time.monotonic() - start, tcp_info(sock)))
        if stop_when is not None and stop_when(samples[-1].info):
            break
    return samples


def rise_times(samples: Sequence[Sample], field: str) -> list[float]:
    """The times (s) at which counter `field` of TcpInfo was first seen higher than before.

    A rise by k between two samples gives k entries with the same time, so
    ``len(rise_times(s, "segs_out"))`` is the number of segments sent while sampling.
    Raises ValueError for a field that is not a TcpInfo counter or that this kernel did not
    report, and TypeError unless `samples` is a list of Sample (what sample_tcp_info returns).
    """
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence) or not all(
        isinstance(s, Sample) for s in samples
    ):
        raise TypeError(f"samples must be the list of Sample that sample_tcp_info() returns, got {samples!r:.200}")
    if field not in _COUNTERS:
        raise ValueError(f"TcpInfo has no field {field!r}; counters include: {', '.join(_COUNTERS)}")
    if not samples:
        return []
    values = [getattr(s.info, field) for s in samples]
    if any(v is None for v in values):
        raise ValueError(f"this kernel does not report tcp_info.{field}")
    out: list[float] = []
    for prev, (sample, value) in zip(values, zip(samples[1:], values[1:])):
        if value > prev:
            out += [sample.t_s] * (value - prev)
    return out
