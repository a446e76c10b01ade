"""What a lesson notebook needs beyond measuring: its first line, tables, and helpers' source.

Theory of operation. A lesson starts with ``h.start_lesson("03")``: that says the lesson
needs Linux (a clear message and the Binder link elsewhere), starts the leak tracking that
``h.check_clean()`` reports on at the end (``core.hygiene``), and sets the course's plot
style when matplotlib is there. Nothing here imports matplotlib or IPython until a function
needs it, so ``import helpers`` stays light.

``table()`` returns an object that JupyterLab shows as an HTML table and a saved or plain
text notebook shows as aligned columns (its ``text/plain`` form); ``show_source()`` shows
the source of a helper, highlighted, so a learner reads the code that ran.
"""

from __future__ import annotations

import html
import inspect
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .core import hygiene
from .core.features import require_linux

__all__ = ["start_lesson", "show_source", "table", "Table"]

_LESSON = re.compile(r"[0-9A-Za-z][0-9A-Za-z ._-]{0,39}")


def start_lesson(lesson: str) -> None:
    """Begin a lesson: check for Linux, start tracking sockets, use the course plot style.

    `lesson` names it, as its title does ("03", or "lab 02"): a short str (TypeError or
    ValueError otherwise). Call it in the first cell, before any socket is made: sockets
    made earlier are not tracked (``check_clean()`` at the end would not see them).
    """
    if not isinstance(lesson, str):
        raise TypeError(f"start_lesson() needs the lesson's number as a str such as '03', got {lesson!r}")
    if not _LESSON.fullmatch(lesson):
        raise ValueError(f"start_lesson() needs the lesson's number such as '03' or 'lab 02', got {lesson!r}")
    require_linux(f"lesson {lesson}")
    hygiene.track()
    try:
        import matplotlib  # noqa: F401 - only to know it is there: a plain Python may lack it
    except ImportError:
        return
    from .plots import apply_style

    apply_style()


def _where(obj: Any) -> str:
    """'helpers/c10k.py, ThreadPool._worker': the file (from the package root) and the name."""
    path = Path(inspect.getsourcefile(obj) or "?")
    parts = path.parts
    if "helpers" in parts:
        path = Path(*parts[len(parts) - 1 - parts[::-1].index("helpers"):])
    return f"{path.as_posix()}, {getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def show_source(*objects: Any) -> None:
    """Show the source code of helpers' functions, classes or methods, highlighted.

    Each object's source follows a comment naming its file and name, so the learner can
    open it. TypeError for an object without Python source (a number, a built-in).
    """
    if not objects:
        raise TypeError("show_source() needs at least one function, class or method, e.g. h.show_source(h.TCPServer)")
    parts = []
    for obj in objects:
        try:
            source = inspect.getsource(obj)
        except (TypeError, OSError):
            raise TypeError(
                f"show_source() shows the Python source of a function, class or method, got {obj!r}"
            ) from None
        parts.append(f"# {_where(obj)}\n{textwrap.dedent(source)}")
    from IPython.display import Code, display

    display(Code("\n".join(parts), language="python"))


def _is_number(cell: object) -> bool:
    if isinstance(cell, bool):
        return False
    if isinstance(cell, (int, float)):
        return True
    return isinstance(cell, str) and re.fullmatch(r"[-+]?[0-9][0-9,]*(\.[0-9]+)?( ?[%x])?", cell.strip()) is not None


class Table:
    """Rows under column names: an HTML table in JupyterLab, aligned text elsewhere.

    Cells are shown with str(): format numbers before (``f"{ms:.1f}"``). Numbers are
    right-aligned, text left-aligned, as ``ss`` and ``netstat`` print them.
    """

    def __init__(self, rows: list[tuple[Any, ...]], columns: tuple[str, ...]):
        self.rows = rows
        self.columns = columns

    def _cells(self) -> list[list[str]]:
        return [[str(c) for c in row] for row in self.rows]

    def _right(self) -> list[bool]:
        """Right-align a column whose every cell is a number (or a dash for 'none')."""
        return [
            bool(self.rows) and all(_is_number(r[i]) or r[i] in ("-", "") for r in self.rows)
            for i in range(len(self.columns))
        ]

    def __repr__(self) -> str:
        cells = self._cells()
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.columns)]
        right = self._right()

        def line(values: Sequence[str]) -> str:
            return "  ".join(
                v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)
            ).rstrip()

        return "\n".join([line(self.columns), *(line(r) for r in cells)])

    def _repr_html_(self) -> str:
        right = self._right()
        style = ['style="text-align:right"' if r else 'style="text-align:left"' for r in right]
        head = "".join(f"<th {s}>{html.escape(c)}</th>" for c, s in zip(self.columns, style))
        body = "".join(
            "<tr>" + "".join(f"<td {s}>{html.escape(c)}</td>" for c, s in zip(row, style)) + "</tr>"
            for row in self._cells()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table(rows: Iterable[Sequence[Any]], *, columns: Sequence[str]) -> Table:
    """A table of `rows` (each a sequence, one cell per column) under `columns`.

    Display it (the last line of a cell, or ``display(...)``): JupyterLab shows HTML, a
    saved notebook keeps aligned text too. TypeError for rows that are not sequences or
    column names that are not str, ValueError for a row of the wrong length.
    """
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise TypeError(f"columns must be a list of str column names, got {columns!r}")
    names = tuple(columns)
    if not names:
        raise ValueError("columns must name at least one column")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise TypeError(f"row {i} must be a sequence of cells (a tuple or list), got {row!r}")
        if len(row) != len(names):
            raise ValueError(f"row {i} has {len(row)} cells for {len(names)} columns {list(names)}: {row!r}")
        out.append(tuple(row))
    return Table(out, names)
