"""The feedback notebook a learner gets back: their notebook, what each cell printed, each verdict.

It is built from the released version of the lab (``Lab.student_notebook``), so it never
contains a solution or a hidden test's code: the learner's task cells go back in, each
cell gets the output it produced when graded, each test cell a verdict line, and each
hidden test's placeholder the test's name, points and, unless the instructor keeps them
private (``--private-hidden``), the message it failed with. A table on top sums it up,
with the lateness and penalty, and says loudly when grading ran without the sandbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

from .books import Outcome, points_text
from .source import HIDDEN_TAG, SOLUTION_TAG, TEST_TAG, Lab

__all__ = ["write_feedback"]

OUTPUT_LIMIT = 10_000  # characters of output shown per cell

_p = points_text

def _stream(text: str) -> Any:
    if len(text) > OUTPUT_LIMIT:
        text = text[:OUTPUT_LIMIT] + "\n[feedback: output trimmed]\n"
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_feedback(target: Path, lab: Lab, outcome: Outcome, answers: dict[str, str], events: list[dict[str, Any]],
                   params: dict[str, Any], *, private_hidden: bool) -> Path:
    """Write the feedback notebook for one graded submission to `target`."""
    nb = lab.student_notebook({"student": outcome.student, "graded": True})
    by_test = {r.test: r for r in outcome.rows}
    hidden = {t.name for t in lab.tests if t.hidden}
    tests_at = {t.cell: t for t in lab.tests}
    outputs: dict[int, list[str]] = {}
    for event in events:
        index = event.get("index")
        if event.get("event") == "cell" and isinstance(index, int):
            outputs.setdefault(index, []).append(str(event.get("output", "")))
            if event.get("error"):
                outputs[index].append(f"[grader: this cell failed: {event['error']}]\n")
        elif event.get("event") == "learner-cell" and isinstance(index, int):
            outputs.setdefault(index, []).append(str(event.get("output", "")))
            if event.get("skipped"):
                outputs[index].append(f"[grader: {event['skipped']}; its functions raise that reason]\n")
            elif event.get("error"):
                outputs[index].append(f"[grader: this cell raised {event['error']}]\n")
    test_output = {str(e.get("test")): str(e.get("output", "")) for e in events if e.get("event") == "test"}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        original = lab.nb.cells[index]
        role = lab.role(original)
        parts = list(outputs.get(index, []))
        if role == SOLUTION_TAG:
            cell.source = answers.get(original.metadata["lab"]["task"], cell.source)
        if role in (TEST_TAG, HIDDEN_TAG) and index in tests_at:
            test = tests_at[index]
            row = by_test.get(test.name)
            if role == TEST_TAG:
                parts.append(test_output.get(test.name, ""))
            if row is not None:
                verdict = "passed" if row.points == row.max else "FAILED" if row.points == 0 else "partly passed"
                message = row.error if not (private_hidden and test.name in hidden) else ""
                parts.append(f"[graded] {test.name}: {verdict}, {_p(row.points)}/{_p(row.max)} points"
                             + (f": {message}" if message and row.points < row.max else "") + "\n")
        text = "".join(p for p in parts if p)
        cell.outputs = [_stream(text)] if text else []
    lines = [f"# Feedback: {lab.title}", "",
             f"Student **{outcome.student}**, parameters `{params}`: **{_p(outcome.points)} / {_p(outcome.max)}** "
             "points."]
    if outcome.late_days:
        lines += ["", f"Submitted {outcome.submitted_at}, {outcome.late_days} day(s) after the deadline "
                      f"({outcome.deadline}): {_p(outcome.penalty_percent)}% off, **{_p(outcome.final)}** points."]
    if outcome.sandbox.startswith("OFF"):
        lines += ["", f"**Graded without the sandbox** ({outcome.sandbox[4:].strip()})."]
    if outcome.error:
        lines += ["", f"Grading note: {outcome.error}"]
    lines += ["", "| test | hidden | points | max | message |", "|---|---|---|---|---|"]
    for row in outcome.rows:
        secret = private_hidden and row.test in hidden
        message = "" if secret and row.points < row.max else _cell(row.error + (f" ({row.note})" if row.note else ""))
        lines.append(f"| {row.test} | {'yes' if row.test in hidden else ''} | {_p(row.points)} | {_p(row.max)} "
                     f"| {message} |")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("\n".join(lines)))
    nb.metadata["kernelspec"] = lab.nb.metadata.get("kernelspec", {})
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target
