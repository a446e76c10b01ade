"""The rules every lesson notebook follows (CONTRIBUTING.md, "Rules a lesson follows"), as checks.

Each rule has a name. ``static_problems()`` reads the notebook file: its title, first code
cell, last code cell, cell lengths, prose, sections, exercises. ``run_problems()`` reads one
run of it by tests/notebook_runner.py: the lesson's own run time against its budget, and
every code cell that ran for seconds without showing progress. Both return ``{rule: [what is
wrong, ...]}`` for the rules a notebook breaks. tests/test_notebooks.py applies them to every
lesson and to docs/lesson-template.ipynb (static rules only: the template is not a lesson
that runs), and to toy lessons that break each rule on purpose.

NOT_YET is the one list of rules a lesson does not meet yet, while lessons are being
rewritten: it is emptied as they land. A static rule listed for a lesson that meets it
fails the test, so the list cannot go stale; a run rule so listed is only reported (run
times vary with the machine, so "meets it now" is not certain from one run).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import lesson_cells
import nbformat

if TYPE_CHECKING:
    from notebook_runner import NotebookRun

BUDGET_S = 20  # a lesson runs top to bottom in 20 s ...
LONGER_BUDGET_S = {"17": 30, "19": 30}  # ... 30 s for the C10K lesson and the capstone
# Progress: CONTRIBUTING asks for it from about 2 s; the test fails a cell over 3 s without
# any, so that a cell near 2 s on a quiet machine does not fail on a busy one. The seconds
# the kernel's thread waited for a CPU (a busy machine: the two lanes of ./course test, a
# class on one hub) are not the lesson's: a plotting cell of lesson 17 took 3.3 s beside
# the other lane, 1.3 s alone.
PROGRESS_AFTER_S = 2
PROGRESS_REQUIRED_S = 3.0
MAX_CELL_LINES = 30
SERVER_LOOP_LINES = 60  # a cell tagged SERVER_LOOP_TAG: one server loop, split into named functions
SERVER_LOOP_TAG = "server-loop"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# How we build and test the course belongs in code comments and CONTRIBUTING.md, not in the
# prose a learner reads. Words that only ever mean that (case matters for the capitals).
MAINTAINER_TALK = re.compile(
    r"(?i:\b(soak\w*|flak(?:e|es|y|iness)|test machine|build machine|(?:2|two)[- ]core|before this lesson"
    r"|pytest|nbval|papermill|test suite|the tests|our tests|notebook runner|hub test|browser test"
    r"|CONTRIBUTING)\b)|\b(CI|TODO|FIXME|XXX)\b"
)

STATIC_RULES = ("kernelspec", "title", "glossary", "first_code", "last_code", "cell_lines", "prose",
                "sections", "slider_and_plot", "forbidden", "exercises")
RUN_RULES = ("budget", "progress")
# What only a lesson has: a notebook that is no lesson (lesson_cells.NOT_LESSONS, the
# start-here) follows every other rule.
LESSON_ONLY_RULES = ("sections", "slider_and_plot", "exercises")

#: Rules each lesson does not meet yet, and why: {lesson: {rule: why}}. Empty once every
#: lesson meets every rule; a lesson that lands before it does gets an entry here (and only
#: here), and loses it when it meets the rule (the test says so for a static rule).
NOT_YET: dict[str, dict[str, str]] = {}


def budget_s(lesson: str) -> int:
    """The lesson's budget in seconds: 20, or 30 for lessons 17 and 19."""
    return LONGER_BUDGET_S.get(lesson, BUDGET_S)


def _code(nb: nbformat.NotebookNode) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _lines(source: str) -> int:
    return len(source.rstrip("\n").splitlines())


def static_problems(nb: nbformat.NotebookNode, lesson: str) -> dict[str, list[str]]:
    """Every static rule `nb` breaks, as {rule: [problems]}; `lesson` is its number ("03",
    or "NN" for the template)."""
    out: dict[str, list[str]] = {}

    def add(rule: str, problem: str) -> None:
        out.setdefault(rule, []).append(problem)

    if dict(nb.metadata.get("kernelspec", {})) != KERNELSPEC:
        add("kernelspec", f"metadata.kernelspec must be {KERNELSPEC}, found {dict(nb.metadata.get('kernelspec', {}))}")
    first = nb.cells[0] if nb.cells else nbformat.v4.new_code_cell("")
    head = first.source.splitlines()[0] if first.source else ""
    if first.cell_type != "markdown" or not re.fullmatch(rf"# {re.escape(lesson)} · \S.*", head):
        add("title", f"the first cell must be markdown starting '# {lesson} · Title', found {head[:60]!r}")
    if first.cell_type != "markdown" or "](glossary.md)" not in first.source:
        add("glossary", "the first cell must link the glossary: [glossary](glossary.md)")
    code = _code(nb)
    if not code:
        add("first_code", "no code cell")
    else:
        i, cell = code[0]
        if f'h.start_lesson("{lesson}")' not in cell.source:
            add("first_code", f'cell {i}: the first code cell must call h.start_lesson("{lesson}")')
        i, cell = code[-1]
        if cell.source.strip() != "h.check_clean()":
            add("last_code", f"cell {i}: the last code cell must be h.check_clean(), "
                             f"found {cell.source.strip()[:60]!r}")
    for i, cell in code:
        limit = SERVER_LOOP_LINES if SERVER_LOOP_TAG in lesson_cells.tags(cell) else MAX_CELL_LINES
        if _lines(cell.source) > limit:
            how = "" if limit == SERVER_LOOP_LINES else f" (or {SERVER_LOOP_LINES}, tagged {SERVER_LOOP_TAG!r})"
            add("cell_lines", f"cell {i} has {_lines(cell.source)} lines, more than {limit}{how}")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            words = sorted({m.group(0) for m in MAINTAINER_TALK.finditer(cell.source)})
            if words:
                add("prose", f"cell {i} talks about how the course is built or tested: {words}")
    heads = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
             if line.startswith("## ")]
    saw = [k for k, h in enumerate(heads) if re.match(r"## What we saw\b", h)]
    nxt = [k for k, h in enumerate(heads) if re.match(r"## Where next\b", h)]
    if not saw or not nxt or nxt[-1] != len(heads) - 1 or saw[-1] != len(heads) - 2:
        add("sections", "the last two sections must be '## What we saw' then '## Where next'")
    sources = [c.source for _, c in code]
    if not any("Experiment(" in s for s in sources):
        add("slider_and_plot", "no slider: build an h.Experiment(...) with at least one control")
    if not any(re.search(r"\bfigure\(|SequenceDiagram\(", s) for s in sources):
        add("slider_and_plot", "no plot or diagram: h.figure(...) or h.SequenceDiagram(...)")
    for i, cell in code:
        if "raises-exception" in lesson_cells.tags(cell):
            add("forbidden", f"cell {i} is tagged raises-exception (papermill fails on it): show the error "
                             "with try/except")
        if re.search(r"\basyncio\.run\(", cell.source):
            add("forbidden", f"cell {i} calls asyncio.run(), which fails in a notebook's kernel: use top-level await")
        if "%matplotlib" in cell.source:
            add("forbidden", f"cell {i} uses %matplotlib; the inline backend is already the default")
    exercise_problems = lesson_cells.structure_problems(nb)
    if exercise_problems:
        out["exercises"] = exercise_problems
    if lesson in lesson_cells.NOT_LESSONS:
        out = {rule: problems for rule, problems in out.items() if rule not in LESSON_ONLY_RULES}
    return out


def run_problems(run: NotebookRun, lesson: str) -> dict[str, list[str]]:
    """Every run rule one run of a lesson breaks, as {rule: [problems]}."""
    out: dict[str, list[str]] = {}
    if run.seconds > budget_s(lesson):
        out["budget"] = [f"the lesson ran {run.seconds:.1f} s, over its budget of {budget_s(lesson)} s"]
    slow = [f"cell {c.cell} ran {c.seconds:.1f} s without showing progress (h.progress)"
            + (f"; {c.waited:.1f} s of it waiting for a CPU" if c.waited >= 0.05 else "")
            for c in run.cells if c.seconds - c.waited > PROGRESS_REQUIRED_S and not c.progress]
    if slow:
        out["progress"] = slow
    return out


def apply(problems: dict[str, list[str]], lesson: str, rules: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(failures, notes): the problems of `rules` not excused by NOT_YET, plus, for a static
    rule excused but met, a failure asking to remove the excuse; notes say what is excused."""
    failures, notes = [], []
    excused = NOT_YET.get(lesson, {})
    for rule in rules:
        found = problems.get(rule, [])
        if rule in excused:
            if found:
                notes.append(f"not yet ({excused[rule]}): " + "; ".join(found))
            elif rule in STATIC_RULES:
                failures.append(f"lesson {lesson} meets rule {rule!r} now: remove it from NOT_YET in "
                                "tests/lesson_rules.py")
            else:
                notes.append(f"lesson {lesson} met run rule {rule!r} this time: remove it from NOT_YET "
                             "once it does so reliably")
        else:
            failures += [f"{rule}: {p}" for p in found]
    return failures, notes
