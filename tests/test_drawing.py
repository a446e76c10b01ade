"""helpers.diagrams, helpers.plots and helpers.widgets: output a learner can read."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from helpers import plots, widgets  # noqa: E402
from helpers.diagrams import SequenceDiagram  # noqa: E402


def test_sequence_diagram_mermaid_and_text() -> None:
    d = SequenceDiagram("Client", "Server", title="handshake")
    d.message("Client", "Server", "SYN; seq=0", time_s=0.0)
    d.message("Server", "Client", "SYN-ACK", reply=True)
    d.note("Client", "ESTABLISHED")
    src = d.mermaid()
    assert src.splitlines()[0] == "sequenceDiagram"
    assert "Client->>Server: SYN#59; seq=0 (t=0.00 ms)" in src  # ';' would end the Mermaid line
    assert "Server-->>Client: SYN-ACK" in src and "Note over Client: ESTABLISHED" in src
    text = d.text()
    assert "SYN; seq=0" in text and "<" in text and ">" in text
    bundle = d._repr_mimebundle_()
    assert set(bundle) == {"text/vnd.mermaid", "text/plain"}


def test_sequence_diagram_errors() -> None:
    with pytest.raises(ValueError, match="participant names must be identifiers"):
        SequenceDiagram("my client")
    d = SequenceDiagram("A", "B")
    with pytest.raises(ValueError, match=r"unknown participant 'C'; this diagram has \['A', 'B'\]"):
        d.message("A", "C", "x")


def test_figure_demands_units() -> None:
    fig, ax = plots.figure("t", "time (s)", "bytes (B)")
    assert ax.get_xlabel() == "time (s)" and ax.get_title() == "t"
    with pytest.raises(ValueError, match="needs a unit in parentheses"):
        plots.figure("t", "time", "bytes (B)")
    with pytest.raises(ValueError, match="needs a title"):
        plots.figure("", "time (s)", "bytes (B)")
    matplotlib.pyplot.close("all")


def test_experiment_runs_on_change_and_reports_errors() -> None:
    def square(n: int) -> int:
        if n > 5:
            raise ValueError("too big")
        return n * n

    slider = widgets.int_slider("n", 3, min=0, max=10)
    assert slider.continuous_update is False
    exp = widgets.Experiment(square, n=slider)
    assert (exp.runs, exp.last) == (1, 9)
    slider.value = 4
    assert (exp.runs, exp.last) == (2, 16)
    slider.value = 10
    assert isinstance(exp.last, ValueError) and "too big" in exp.status.value and "n=10" in exp.status.value
    with pytest.raises(ValueError, match=r"outside \[0, 10\]"):
        widgets.int_slider("n", 11, min=0, max=10)
