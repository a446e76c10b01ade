"""What a lesson notebook's cells are for, read from the file: exercises and closing checks.

The notebook runner (notebook_runner.py) and the structure tests use this to find, without
running anything:

* each exercise: a markdown cell with a line ``### Exercise N: title``, then a code cell
  tagged ``exercise`` (the stub), a code cell tagged ``check`` (one call of
  ``h.practice.check``), and a markdown cell holding the solution in a collapsed
  ``<details><summary>Show a solution</summary>`` block with one ```python fence;
* the closing checks: code cells tagged ``closing``, which assert what the lesson showed.
  A cell after the "## What we saw" heading that asserts must carry the tag.
* the plausible wrong answers kept for each exercise in ``tests/exercise_mistakes/NN.py``,
  one section per exercise, each starting with a line ``# %% Exercise N``.

An edition's notebook (``notebooks/zh-CN/...``, helpers.editions) may say these in its own
words: ``### 练习 N：title`` and ``<summary>查看参考答案</summary>`` (helpers.editions.LANGUAGES
and SOLUTION_SUMMARIES); everything else (tags, cells, code) is the English lesson's.

A lesson takes part in the practice checks (and the controls-moved check) once it has
exercise cells; see CONTRIBUTING.md, "Writing an exercise".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from helpers.editions import LANGUAGES, SOLUTION_EN, SOLUTION_SUMMARIES

ROOT = Path(__file__).resolve().parent.parent
MISTAKES = ROOT / "tests" / "exercise_mistakes"
MIN_EXERCISES = 3

_EXERCISE_WORDS = "|".join(re.escape(w) for w in LANGUAGES.values())
_SUMMARIES = "|".join(re.escape(w) for w in (SOLUTION_EN, *SOLUTION_SUMMARIES.values()))
# "### Exercise N: title", or an edition's "### 练习 N：title" (number in group 1 or 2, title in 3)
HEADING = re.compile(rf"^### (?:Exercise (\d+): |(?:{_EXERCISE_WORDS}) ?(\d+) ?[:：] ?)(.+)$", re.M)
SOLUTION = re.compile(rf"<details>\s*<summary>(?:{_SUMMARIES})</summary>\s*```python\n(.*?)```\s*</details>", re.S)
WHAT_WE_SAW = re.compile(r"^## What we saw\b", re.M)
SECTION = re.compile(r"^## ", re.M)
ASSERT = re.compile(r"^\s*assert\b", re.M)
MISTAKE = re.compile(r"^# %% Exercise (\d+)\b.*$", re.M)


@dataclass
class ExerciseCells:
    """One exercise's cells (indices into nb.cells) and its solution's source."""

    number: int
    title: str
    heading: int
    exercise: int | None = None
    check: int | None = None
    solution: str | None = None


def tags(cell: nbformat.NotebookNode) -> list[str]:
    """The cell's tags."""
    return list(cell.get("metadata", {}).get("tags", []))


def lesson_of(path: Path) -> str:
    """'03' for notebooks/03-reading-and-writing.ipynb."""
    return path.name[:2]


#: notebooks/00-start-here.ipynb opens the course (how a lesson works, the environment
#: doctor, progress). It runs like a lesson (every cell, leaks, budget, the browser test)
#: but is no lesson: no exercises, no closing checks, no score (lesson_rules.LESSON_ONLY_RULES).
NOT_LESSONS = frozenset({"00"})


def takes_part(nb: nbformat.NotebookNode) -> bool:
    """True once a lesson has exercise cells: the runner's opt-in while lessons are migrated."""
    return any("exercise" in tags(c) for c in nb.cells if c.cell_type == "code")


def exercises(nb: nbformat.NotebookNode) -> tuple[list[ExerciseCells], list[str]]:
    """The exercises in order, and every way their cells break the rules (module comment)."""
    found: list[ExerciseCells] = []
    problems: list[str] = []
    current: ExerciseCells | None = None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            heading = HEADING.search(cell.source)
            if heading:
                current = ExerciseCells(int(heading[1] or heading[2]), heading[3].strip(), i)
                found.append(current)
                continue
            solution = SOLUTION.search(cell.source)
            if solution and current and current.check is not None and current.solution is None:
                current.solution = solution[1]
            elif solution:
                problems.append(f"cell {i}: a solution block that does not follow an exercise's check cell")
            elif SECTION.search(cell.source):
                current = None  # a new section ends the exercise
            continue
        kinds = [t for t in ("exercise", "check") if t in tags(cell)]
        for kind in kinds:
            if current is None or getattr(current, kind) is not None:
                problems.append(f"cell {i}: a cell tagged {kind!r} outside an exercise (or a second one)")
            elif kind == "check" and current.exercise is None:
                problems.append(f"cell {i}: exercise {current.number}'s check comes before its exercise cell")
            else:
                setattr(current, kind, i)
    for ex in found:
        for part in ("exercise", "check", "solution"):
            if getattr(ex, part) is None:
                problems.append(f"exercise {ex.number} (cell {ex.heading}) has no {part} cell")
        if ex.check is not None and "practice.check(" not in nb.cells[ex.check].source:
            problems.append(f"exercise {ex.number}: its check cell does not call h.practice.check(...)")
    numbers = [ex.number for ex in found]
    if numbers != list(range(1, len(found) + 1)):
        problems.append(f"exercises must be numbered 1, 2, 3, ... in order, found {numbers}")
    return found, problems


def structure_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Everything a lesson with exercises breaks: counts, cells, the tagging of its closing checks."""
    found, problems = exercises(nb)
    count = {kind: sum(kind in tags(c) for c in nb.cells if c.cell_type == "code") for kind in ("exercise", "check")}
    for kind, n in count.items():
        if n < MIN_EXERCISES:
            problems.append(f"{n} cells tagged {kind!r}; a lesson has at least {MIN_EXERCISES} exercises")
    problems += untagged_closing(nb)
    score = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "practice.score(" in c.source]
    if not score or (found and score[-1] < found[-1].heading):
        problems.append("no h.practice.score(...) cell after the exercises: end the lesson with the learner's score")
    return problems


def closing_cells(nb: nbformat.NotebookNode) -> list[int]:
    """The cells tagged closing; for a lesson without tags, those after "## What we saw" that assert."""
    tagged = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "closing" in tags(c)]
    return tagged or [i for i in _after_what_we_saw(nb) if ASSERT.search(nb.cells[i].source)]


def untagged_closing(nb: nbformat.NotebookNode) -> list[str]:
    """Cells after "## What we saw" that assert but are not tagged closing."""
    return [f"cell {i} asserts after '## What we saw' but is not tagged 'closing'"
            for i in _after_what_we_saw(nb)
            if ASSERT.search(nb.cells[i].source) and "closing" not in tags(nb.cells[i])]


def _after_what_we_saw(nb: nbformat.NotebookNode) -> list[int]:
    out, inside = [], False
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and SECTION.search(cell.source):
            inside = bool(WHAT_WE_SAW.search(cell.source))
        elif inside and cell.cell_type == "code":
            out.append(i)
    return out


def mistakes(lesson: str) -> dict[int, str]:
    """The plausible wrong answers for `lesson`'s exercises, by exercise number ({} if none)."""
    path = MISTAKES / f"{lesson}.py"
    if not path.exists():
        return {}
    text = path.read_text()
    marks = list(MISTAKE.finditer(text))
    return {int(m[1]): text[m.end():(marks[k + 1].start() if k + 1 < len(marks) else len(text))].strip("\n") + "\n"
            for k, m in enumerate(marks)}
