"""Every lesson notebook: committed clean, runnable, and leaving nothing behind.

nbval (configured in pyproject.toml) executes each notebook as its own test; these tests
add what nbval does not check: clean commits, a stored kernelspec, no leftovers after a
full run, binds only on loopback, the run time against the lesson budget, and every slider
experiment at its extremes (each control at its min and max, and every combination of the
choices with all sliders at one end): each run works, or shows a clear error, fast, and
leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
BUDGET_S = 20  # a lesson runs top to bottom in seconds (design.md); reported, see below
EXTREME_RUN_S = 30  # one slider release at its extreme: a learner waits for it, so seconds too
TIMINGS = ROOT / "tests" / "artifacts" / "notebook-times.json"

params = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])


def test_there_are_lessons() -> None:
    assert NOTEBOOKS, "no notebooks/NN-*.ipynb found"


@params
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; strip them before committing"


@params
def test_has_kernelspec_and_title(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "store metadata.kernelspec (python3)"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "a lesson opens with a '# Title' cell"
    assert "glossary.md" in "".join(c.source for c in nb.cells if c.cell_type == "markdown"), (
        "link the glossary (glossary.md) from every lesson"
    )


@params
def test_runs_and_leaves_nothing_behind(path: Path) -> None:
    run = run_notebook(path, extremes=True)
    allowed = nbformat.read(path, as_version=4).metadata.get("course", {}).get("allow_non_loopback_bind", False)
    times = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    times[path.stem] = {"seconds": round(run.seconds, 1), "peak_rss_mb": round(run.peak_rss_mb)}
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps(times, indent=1, sort_keys=True))
    left = {k: v for k, v in run.leftovers.items() if v}
    assert not left, f"{path.name} left things behind: {left}"
    if not allowed:
        assert not run.non_loopback_binds, (
            f"{path.name} bound outside loopback: {run.non_loopback_binds}; bind 127.0.0.1 or ::1, "
            "or set metadata.course.allow_non_loopback_bind in a lesson about binding"
        )
    print(f"{path.name}: {run.seconds:.1f} s (budget {BUDGET_S} s), kernel peak RSS {run.peak_rss_mb:.0f} MB")
    for extreme in run.extremes:
        print(f"  extreme {extreme['experiment']} {extreme['values']}: {extreme['seconds']} s"
              + (f", shows {extreme['error']}" if extreme["error"] else ""))
    unclear = [e for e in run.extremes if e["error"] and not _clear_error(e)]
    assert not unclear, f"{path.name}: a slider at its extreme fails without a clear ValueError: {unclear}"
    slow = [e for e in run.extremes if e["seconds"] > EXTREME_RUN_S]
    assert not slow, f"{path.name}: a slider at its extreme takes over {EXTREME_RUN_S} s: {slow}"


def _clear_error(extreme: dict) -> bool:
    """A clear error: a ValueError (the value is out of what the experiment can do) whose
    message names the control's value that caused it or the value's own words."""
    if not extreme["error"].startswith("ValueError: "):
        return False
    message = extreme["error"].split(": ", 1)[1]
    return any(str(v) in message for v in extreme["values"].values())


def test_extremes_check_catches_an_unclear_failure(tmp_path: Path) -> None:
    """The extremes cell really drives the sliders: a toy experiment that breaks at its max
    with an IndexError is reported as unclear; one that refuses with a ValueError is clear."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(
        "from helpers.widgets import Experiment, int_slider, choice\n"
        "def probe(n, how):\n"
        "    if n == 9 and how == 'index':\n"
        "        return [][n]\n"
        "    if n == 9:\n"
        "        raise ValueError(f'n must be below 9, got {n}')\n"
        "    return n\n"
        "toy = Experiment(probe, n=int_slider('n', 3, 0, 9), how=choice('how', ['value', 'index']))\n"
    ))
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    run = run_notebook(path, extremes=True)
    seen = {(e["values"]["n"], e["values"]["how"]): e for e in run.extremes}
    assert set(seen) == {(0, "value"), (9, "value"), (0, "index"), (9, "index")}
    assert seen[(0, "index")]["error"] is None
    assert _clear_error(seen[(9, "value")])
    assert seen[(9, "index")]["error"].startswith("IndexError") and not _clear_error(seen[(9, "index")])
