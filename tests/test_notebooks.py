"""Every lesson notebook: committed clean, runnable, and leaving nothing behind.

nbval (configured in pyproject.toml) executes each notebook as its own test; these tests
add what nbval does not check: clean commits, a stored kernelspec, no leftovers after a
full run, binds only on loopback, and the run time against the lesson budget.
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
    run = run_notebook(path)
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
