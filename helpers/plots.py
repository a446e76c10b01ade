"""One plotting style for every lesson, and axes that always say their units.

Every plot in the course has a title and labelled axes with units: ``figure()`` refuses an
axis label without a unit in parentheses, so a missing unit is caught when the lesson is
written, not by a confused learner.
"""

from __future__ import annotations

import re
from typing import Any

import matplotlib

__all__ = ["STYLE", "figure", "apply_style"]

#: rcParams shared by every lesson's plots.
STYLE: dict[str, Any] = {
    "figure.figsize": (7.5, 4.0),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titleweight": "bold",
    "font.size": 10,
    "legend.frameon": False,
}

_UNIT = re.compile(r"\(([^()]+)\)\s*$")


def apply_style() -> None:
    """Use the course style for every following plot."""
    matplotlib.rcParams.update(STYLE)


def _check_label(which: str, label: str) -> str:
    if not isinstance(label, str) or not _UNIT.search(label):
        raise ValueError(
            f"{which} label needs a unit in parentheses at the end, e.g. 'round trip (ms)' "
            f"or 'connections (count)'; got {label!r}"
        )
    return label


def figure(title: str, xlabel: str, ylabel: str, *, ncols: int = 1, **subplots: Any) -> tuple[Any, Any]:
    """A new figure and axes in the course style, titled and labelled with units.

    Returns (fig, ax); with ncols > 1, `ax` is the array of axes, each labelled alike.
    Every argument is checked before the figure exists, so a bad one leaves no open figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"every plot needs a title (a non-empty str), got {title!r}")
    _check_label("x", xlabel)
    _check_label("y", ylabel)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or not 1 <= ncols <= 10:
        raise ValueError(f"ncols must be an int in 1-10 (side-by-side axes), got {ncols!r}")
    apply_style()
    fig, ax = plt.subplots(ncols=ncols, **subplots)
    fig.suptitle(title) if ncols > 1 else ax.set_title(title)
    for a in ax if ncols > 1 else [ax]:
        a.set_xlabel(xlabel)
        a.set_ylabel(ylabel)
    fig.set_layout_engine("constrained")
    return fig, ax
