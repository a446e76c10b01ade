"""Kernel counters: the namespace-wide TCP, UDP, IP and ICMP counters that ``netstat -s`` prints.

Theory of operation. ``/proc/net/snmp`` and ``/proc/net/netstat`` hold counters for the whole
network namespace, in pairs of lines (a header of names, then a line of values, ``man 5
proc``). Other processes' traffic moves them too, so lessons diff them around an experiment
(``counters_diff()``) and assert only on changes they caused, with margins.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from ..core.features import require_linux
from ..core.proc import PROC_NET

__all__ = ["Counters", "CounterDiff", "kernel_counters", "counters_diff"]

class Counters(Mapping[str, int]):
    """A snapshot of /proc/net/snmp and /proc/net/netstat: 'Tcp.OutRsts' -> 9, ...

    Keys are 'Group.Name' as ``nstat`` prints them without its prefix (TcpExt.DelayedACKs,
    Udp.NoPorts, Icmp.OutDestUnreachs). An unknown key raises KeyError with close matches.
    """

    def __init__(self, values: dict[str, int]):
        self._values = values

    def __getitem__(self, key: str) -> int:
        try:
            return self._values[key]
        except KeyError:
            close = difflib.get_close_matches(str(key), self._values, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"no kernel counter {key!r}{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def diff(self, before: Counters) -> dict[str, int]:
        """Counters that changed since `before`, as {name: increase}."""
        return {k: v - before._values.get(k, 0) for k, v in self._values.items() if v != before._values.get(k, 0)}


def _parse_snmp_style(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    lines = text.splitlines()
    for header, data in zip(lines[::2], lines[1::2]):
        group, names = header.split(":", 1)
        _, nums = data.split(":", 1)
        for name, num in zip(names.split(), nums.split()):
            values[f"{group}.{name}"] = int(num)
    return values


def kernel_counters() -> Counters:
    """Read every counter of /proc/net/snmp and /proc/net/netstat now."""
    require_linux("kernel counters (/proc/net/snmp)")
    values: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        path = PROC_NET / name
        if path.exists():
            values.update(_parse_snmp_style(path.read_text()))
    return Counters(values)


class CounterDiff:
    """What changed between entering and leaving a ``counters_diff()`` block."""

    def __init__(self, before: Counters):
        self.before = before
        self.after: Counters | None = None

    @property
    def changed(self) -> dict[str, int]:
        """{name: increase} for the counters that moved; read it after the block ends."""
        if self.after is None:
            raise RuntimeError("read .changed after the `with counters_diff()` block ends")
        return self.after.diff(self.before)

    def __getitem__(self, key: str) -> int:
        """The increase of one counter (0 if it did not move)."""
        if self.after is None:
            raise RuntimeError("read counters after the `with counters_diff()` block ends")
        return self.after[key] - self.before[key]


@contextmanager
def counters_diff() -> Iterator[CounterDiff]:
    """Snapshot the kernel counters around a block; the result's .changed says what moved.

    Counters are shared by the whole network namespace: other programs move them too.
    """
    diff = CounterDiff(kernel_counters())
    try:
        yield diff
    finally:
        diff.after = kernel_counters()
