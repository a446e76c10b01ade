"""What the lab grading tests share: run the command line, read gradebooks, build submissions,
find processes. No test lives here (tests/test_labs.py is the place to read them)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from helpers.labs import find_labs

ROOT = Path(__file__).resolve().parent.parent
LABS = find_labs()
LAB = {lab.id[:2]: lab for lab in LABS}


def labs_cli(*args: str, timeout_s: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m helpers.labs ARGS`` as an instructor would (`env`: variables to add)."""
    return subprocess.run([sys.executable, "-m", "helpers.labs", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, **env} if env else None)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def points_by_test(rows: list[dict[str, str]], student: str, lab: str) -> dict[str, float]:
    return {r["test"]: float(r["points"]) for r in rows if r["student"] == student and r["lab"] == lab}


def totals(rows: list[dict[str, str]]) -> dict[tuple[str, str], tuple[float, float]]:
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for r in rows:
        got, top = out.get((r["student"], r["lab"]), (0.0, 0.0))
        out[(r["student"], r["lab"])] = (got + float(r["points"]), top + float(r["max"]))
    return out


def with_tasks(nb: nbformat.NotebookNode, **sources: str) -> nbformat.NotebookNode:
    """`nb` with the given task cells' sources replaced."""
    left = dict(sources)
    for cell in nb.cells:
        task = cell.get("metadata", {}).get("lab", {}).get("task")
        if task in left:
            cell.source = left.pop(task)
    assert not left, f"no task(s) {sorted(left)}"
    return nb


def task_source(nb: nbformat.NotebookNode, task: str) -> str:
    return next(c.source for c in nb.cells if c.get("metadata", {}).get("lab", {}).get("task") == task)


def submit(folder: Path, student: str, lab_id: str, nb: nbformat.NotebookNode) -> Path:
    (folder / student).mkdir(parents=True, exist_ok=True)
    path = folder / student / f"{lab_id}.ipynb"
    nbformat.write(nb, path)
    return path


def processes_with(text: str) -> list[int]:
    """Pids of processes (other than us) whose command line or environment holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            except OSError:
                continue
            if text.encode() in blob:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"
