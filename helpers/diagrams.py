"""Sequence diagrams built from observed events, rendered by JupyterLab as Mermaid.

A SequenceDiagram collects messages between participants (client, server, kernel...) as
the lesson observes them, then displays as a Mermaid ``sequenceDiagram``: JupyterLab 4.1+
renders the ``text/vnd.mermaid`` MIME type natively, and every other front end (a
terminal, nbval, papermill) shows the plain-text ladder that travels with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["SequenceDiagram"]

MERMAID_MIME = "text/vnd.mermaid"

# Characters Mermaid would read as syntax inside a message ( ; # : and angle brackets);
# everything outside this set is written as a Mermaid entity code, #<decimal>;
_SAFE = re.compile(r"[A-Za-z0-9 ,.=()/_+\-\[\]{}'?!%*&|~^@$]")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _escape(text: str) -> str:
    return "".join(ch if _SAFE.fullmatch(ch) else f"#{ord(ch)};" for ch in text)


@dataclass
class _Step:
    kind: str  # "message" or "note"
    src: str
    dst: str
    text: str
    time_s: float | None = None
    dashed: bool = False


class SequenceDiagram:
    """A message ladder between named participants.

    >>> d = SequenceDiagram("Client", "Server")
    >>> d.message("Client", "Server", "SYN")
    >>> print(d.text())  # doctest: +NORMALIZE_WHITESPACE
    Client                Server
      |------- SYN -------->|
    """

    def __init__(self, *participants: str, title: str = ""):
        for p in participants:
            self._check_name(p)
        if len(set(participants)) != len(participants):
            raise ValueError(f"participant names must be distinct, got {participants!r}")
        if not isinstance(title, str):
            raise TypeError(f"title must be a str ('' for none), got {type(title).__name__} {title!r}")
        self.participants: list[str] = list(participants)
        self.title = title
        self.steps: list[_Step] = []

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"participant names must be identifiers such as 'Client' or 'Kernel_A', got {name!r}"
            )

    def _known(self, name: str) -> None:
        if name not in self.participants:
            raise ValueError(f"unknown participant {name!r}; this diagram has {self.participants}")

    def message(self, src: str, dst: str, text: str, *, time_s: float | None = None, reply: bool = False) -> None:
        """Add an arrow src -> dst labelled `text` (converted with str()); `time_s` (seconds
        since the start, a finite number >= 0) is shown beside it; `reply` draws it dashed.

        src and dst must be two different participants (a note() describes one on its own).
        """
        self._known(src)
        self._known(dst)
        if src == dst:
            raise ValueError(f"a message goes between two participants, got {src!r} to itself; use note() instead")
        if time_s is not None and (isinstance(time_s, bool) or not isinstance(time_s, (int, float))
                                   or not 0 <= time_s < math.inf):
            raise ValueError(f"time_s must be None or a finite number of seconds >= 0, got {time_s!r}")
        if not isinstance(reply, bool):
            raise TypeError(f"reply must be True or False, got {type(reply).__name__} {reply!r}")
        self.steps.append(_Step("message", src, dst, str(text), time_s, reply))

    def note(self, over: str, text: str) -> None:
        """Add a note over one participant (e.g. a state change: 'ESTABLISHED')."""
        self._known(over)
        self.steps.append(_Step("note", over, over, str(text)))

    def mermaid(self) -> str:
        """The diagram as Mermaid source."""
        lines = ["sequenceDiagram"]
        if self.title:
            lines.append(f"    title {_escape(self.title)}")
        lines += [f"    participant {p}" for p in self.participants]
        for s in self.steps:
            label = _escape(self._label(s))
            if s.kind == "note":
                lines.append(f"    Note over {s.src}: {label}")
            else:
                arrow = "-->>" if s.dashed else "->>"
                lines.append(f"    {s.src}{arrow}{s.dst}: {label}")
        return "\n".join(lines)

    def text(self) -> str:
        """A plain-text ladder, for front ends that cannot draw Mermaid."""
        labels = [self._label(s) for s in self.steps if s.kind == "message"]
        width = max([22] + [len(lbl) + 10 for lbl in labels])
        col = {p: i * width + 2 for i, p in enumerate(self.participants)}
        total = width * (len(self.participants) - 1) + 3
        lines = [self.title] if self.title else []
        lines.append("".join(p.ljust(width) for p in self.participants).rstrip())
        for s in self.steps:
            row = [" "] * total
            for x in col.values():
                row[x] = "|"
            if s.kind == "note":
                text = f"[{s.text}]"
                start = max(0, col[s.src] - 1)
                row[start : start + len(text)] = list(text)
                lines.append("".join(row).rstrip())
                continue
            lo, hi = sorted((col[s.src], col[s.dst]))
            for x in range(lo + 1, hi):
                row[x] = "." if s.dashed else "-"
            if col[s.dst] > col[s.src]:
                row[hi - 1] = ">"
            else:
                row[lo + 1] = "<"
            mid = f" {self._label(s)} "
            start = lo + (hi - lo - len(mid)) // 2
            row[start : start + len(mid)] = list(mid)
            lines.append("".join(row).rstrip())
        return "\n".join(lines)

    @staticmethod
    def _label(s: _Step) -> str:
        return s.text if s.time_s is None else f"{s.text} (t={s.time_s * 1000:.2f} ms)"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, str]:
        return {MERMAID_MIME: self.mermaid(), "text/plain": self.text()}
