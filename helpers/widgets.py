"""Sliders that re-run a real experiment once per release.

Each control is built with ``continuous_update=False``, so dragging a slider runs the
experiment once when the learner lets go, not once per pixel. The experiment's printed
output, plots and errors appear in one output area under the controls; an error shows as a
short message naming the parameter values, not a traceback.

A progress bar inside an experiment must stay (``tqdm(..., leave=True)``): a bar that
closes itself (``leave=False``) leaves the output pointing at a widget that no longer
exists, and JupyterLab shows "Error displaying widget: model not found".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w
from IPython.display import display

from .progressbar import inside_widget

__all__ = ["int_slider", "float_slider", "choice", "controls", "Experiment", "ERROR_CLASS"]

#: CSS class on an Experiment's status line while its last run failed (the browser test
#: looks for it).
ERROR_CLASS = "course-experiment-error"


def int_slider(description: str, value: int, *, min: int, max: int, step: int = 1) -> w.IntSlider:
    """An integer slider that reports its value only on release: ``int_slider("n", 3, min=1, max=9)``."""
    if not min <= value <= max:
        raise ValueError(f"{description}: value {value} is outside [{min}, {max}]")
    return w.IntSlider(
        value=value, min=min, max=max, step=step, description=description,
        continuous_update=False, style={"description_width": "initial"},
        layout=w.Layout(width="420px"),
    )


def float_slider(description: str, value: float, *, min: float, max: float, step: float) -> w.FloatSlider:
    """A float slider that reports its value only on release: ``float_slider("s", 0.5, min=0.1, max=2, step=0.1)``."""
    if not min <= value <= max:
        raise ValueError(f"{description}: value {value} is outside [{min}, {max}]")
    return w.FloatSlider(
        value=value, min=min, max=max, step=step, description=description,
        continuous_update=False, style={"description_width": "initial"},
        layout=w.Layout(width="420px"),
    )


def choice(description: str, options: list[Any], value: Any = None) -> w.ToggleButtons:
    """A row of buttons for a small set of choices (e.g. which side closes first)."""
    return w.ToggleButtons(
        options=options, value=options[0] if value is None else value, description=description,
        style={"description_width": "initial"},
    )


class Experiment:
    """Controls wired to a function: each change re-runs ``fn(**values)`` into one output.

    ``last`` holds the function's latest return value and ``runs`` counts the runs, so a
    notebook can assert on what the slider produced.
    """

    def __init__(self, fn: Callable[..., Any], **controls: w.ValueWidget):
        if not controls:
            raise ValueError("Experiment needs at least one control, e.g. n=int_slider('n', 3, min=1, max=9)")
        self.fn = fn
        self.controls = controls
        self.last: Any = None
        self.runs = 0
        self.status = w.HTML()
        self.output = w.interactive_output(self._run, controls)
        self.widget = w.VBox([w.HBox(list(controls.values())), self.status, self.output])

    def _run(self, **values: Any) -> None:
        started = time.perf_counter()
        try:
            with inside_widget():  # h.progress() inside shows a widget: display updates are lost here
                self.last = self.fn(**values)
        except Exception as exc:  # noqa: BLE001 - shown to the learner, not raised
            params = ", ".join(f"{k}={v!r}" for k, v in values.items())
            self.status.value = f"<b>{type(exc).__name__}</b> with {params}: {exc}"
            self.status.add_class(ERROR_CLASS)
            self.last = exc
        else:
            self.status.value = f"<small>ran in {time.perf_counter() - started:.2f} s</small>"
            self.status.remove_class(ERROR_CLASS)
        self.runs += 1

    def _ipython_display_(self) -> None:
        display(self.widget)


def controls(fn: Callable[..., Any], **sliders: w.ValueWidget) -> Experiment:
    """Wire sliders to `fn` (called as fn(name=value, ...)) and return the Experiment to display."""
    return Experiment(fn, **sliders)
