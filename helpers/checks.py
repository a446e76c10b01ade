"""Argument checks shared by the helpers: one place that says what a number of seconds is.

Theory of operation. Helpers take timeouts, durations and deadlines from learners, sliders
and lab code. A bad one must fail at once, at the call, with the parameter's name, the
value and what is allowed: not hang (``queue.get(timeout=nan)`` waits forever), not
overflow deep inside the socket module (``settimeout(1e300)``), not half-start a server.
So every helper that takes seconds asks ``seconds()``. (``helpers/c10k.py`` keeps its own
copy: it also runs as a stand-alone script in server processes, with only the stdlib.)
"""

from __future__ import annotations

__all__ = ["seconds"]


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
