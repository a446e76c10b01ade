"""A progress line for steps that take seconds, that still reads right in a saved notebook.

Theory of operation. A widget progress bar (tqdm.auto) lives in the notebook's kernel
session: saved and reopened, or shown by a static viewer, it renders as "0%" or as a
widget that cannot be displayed. ``progress()`` instead shows one display output (HTML, with
a plain-text twin) and updates it in place (IPython's ``display(..., display_id=True)`` and
``update()``, which send ``update_display_data``: the front end and nbclient replace the
stored output). When the loop ends, the output is replaced by one line of text, "desc: 6 of
6 done in 2.4 s", so the saved notebook shows the final state. Outside a notebook the same
line is printed. Updates are sent at most every 0.1 s, so a fast loop is not slowed by them.
A loop of fewer than two items gets no bar, only the final line: a one-item bar says nothing.
Work that is not a loop over items (bytes read as they come) advances a ``Progress`` by hand
with ``update(n)``; ``progress()`` is a ``Progress`` advanced by one per item.

Inside a widget's output (a slider's ``Experiment``, which runs its function within
``inside_widget()``) display updates are not applied: JupyterLab's Output widget keeps new
outputs but drops ``update_display_data``, so the bar would stay at "0 of 6". There the
same text goes into a small HTML widget whose value is updated instead; the Experiment's
output is a widget anyway.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = ["progress", "Progress", "inside_widget", "displays_shown"]

T = TypeVar("T")
UPDATE_EVERY_S = 0.1
_IN_WIDGET: ContextVar[bool] = ContextVar("progress_in_widget", default=False)
_shown = 0  # progress displays shown in this kernel (see displays_shown)


def displays_shown() -> int:
    """How many progress displays this notebook's kernel has shown so far. The lesson tests
    read it before and after each cell: a cell that runs for seconds must have shown one."""
    return _shown


@contextmanager
def inside_widget() -> Iterator[None]:
    """Mark the code run in this block as writing into a widget's output (see above)."""
    token = _IN_WIDGET.set(True)
    try:
        yield
    finally:
        _IN_WIDGET.reset(token)


class _View:
    """What the display shows: an HTML bar while running, a plain line at the end."""

    def __init__(self, text: str, fraction: float | None = None):
        self.text, self.fraction = text, fraction

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        if self.fraction is None:
            return f"<pre style='margin: 0'>{html.escape(self.text)}</pre>"
        return (f"<progress value='{self.fraction:.3f}' max='1' style='width: 240px'></progress> "
                f"<code>{html.escape(self.text)}</code>")


def _display(view: _View) -> Any:
    """A display handle in a notebook's kernel, or None elsewhere (then we only print)."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it; elsewhere no need to
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "kernel"):
        return None
    from IPython.display import display

    global _shown
    _shown += 1

    if _IN_WIDGET.get():
        return _WidgetHandle(view)
    return display(view, display_id=True)


class _WidgetHandle:
    """A display handle's update(), done by setting an HTML widget's value."""

    def __init__(self, view: _View):
        import ipywidgets
        from IPython.display import display

        self.widget = ipywidgets.HTML(view._repr_html_())
        display(self.widget)

    def update(self, view: _View) -> None:
        self.widget.value = view._repr_html_()


def _check(desc: object, total: object, what: str) -> None:
    if not isinstance(desc, str) or not desc:
        raise TypeError(f"desc must be a non-empty str saying what is done, got {desc!r}")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
        raise TypeError(f"total must be an int (the number of {what}) or None, got {total!r}")
    if total is not None and total < 0:
        raise ValueError(f"total must be >= 0, got {total}")


class Progress:
    """A progress line advanced by hand, for work not counted in loop items (bytes read).

    ``with Progress("reading", total=3 << 20, unit="bytes") as bar: bar.update(len(data))``
    shows "reading: 1,048,576 of 3,145,728 bytes (0.4 s)" as it goes and ends as one line,
    "reading: 3,145,728 of 3,145,728 bytes done in 1.2 s" ("stopped" if it ended short of
    `total`). ``progress()`` is this line, advanced by one per item. TypeError for a `desc`
    that is not a non-empty str, a `total` that is not an int or a `unit` that is not a str;
    ValueError for a negative `total`. ``close()`` (the end of the ``with`` block) shows the
    final line once.
    """

    def __init__(self, desc: str, *, total: int | None = None, unit: str = "") -> None:
        if not isinstance(unit, str):
            raise TypeError(f"unit must be a str such as 'bytes' (or '' for items), got {unit!r}")
        _check(desc, total, unit or "items")
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self._started = self._last = time.monotonic()
        self._closed = False
        show = total is None or total >= 2  # a one-item bar says nothing: only the final line
        self._handle = _display(_View(f"{desc}: {self._count()}", 0.0 if total else None)) if show else None

    def _count(self) -> str:
        of = f" of {self.total:,}" if self.total is not None else ""
        return f"{self.done:,}{of}" + (f" {self.unit}" if self.unit else "")

    def update(self, n: int = 1) -> None:
        """Count `n` more (an int >= 0) and redraw, at most every UPDATE_EVERY_S seconds."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"update() needs how many more were done, an int >= 0, got {n!r}")
        self.done += n
        now = time.monotonic()
        if self._handle is not None and not self._closed and now - self._last >= UPDATE_EVERY_S:
            self._last = now
            fraction = min(1.0, self.done / self.total) if self.total else None
            self._handle.update(_View(f"{self.desc}: {self._count()} ({now - self._started:.1f} s)", fraction))

    def close(self) -> None:
        """Replace the line by its final state, "desc: n of total done in t s". Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        word = "done" if self.total is None or self.done >= self.total else "stopped"
        final = _View(f"{self.desc}: {self._count()} {word} in {time.monotonic() - self._started:.1f} s")
        if self._handle is not None:
            self._handle.update(final)
        elif _display(final) is None:
            print(final.text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None) -> Iterator[T]:
    """Yield from `iterable`, showing "desc: i of total" as it goes and a final line at the end.

    `total` defaults to ``len(iterable)`` when it has one. TypeError for a `desc` that is not
    a non-empty str or a `total` that is not an int; ValueError for a negative `total`.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    _check(desc, total, "items")
    return _progress(iter(iterable), desc, total)


def _progress(items: Iterator[T], desc: str, total: int | None) -> Iterator[T]:
    with Progress(desc, total=total) as bar:
        for item in items:
            yield item
            bar.update()
