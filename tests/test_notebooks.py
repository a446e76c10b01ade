"""Every lesson notebook: committed clean, runnable, practised, and leaving nothing behind.

notebook_runner.py is the one runner of lessons in the default run (nbval runs a notebook
only when its path is given: `./course test notebooks/03-reading-and-writing.ipynb`). One
kernel run per lesson checks: every cell runs; no leftovers; binds only on loopback; the
lesson's run time against its budget and progress shown by every slow cell
(lesson_rules.run_problems); every slider experiment at its extremes (each control at its
min and max, and every combination of the choices with all sliders at one end): each run
works, or shows a clear error, fast, and leaves nothing behind. For a lesson with
exercises, the same run checks each exercise (its check says "not done yet" on the
committed stub, passes the solution, and does not pass a plausible wrong answer) and moves
every control off its default before running the closing checks again. The file alone
must be committed clean and follow the static rules (lesson_rules.static_problems: title,
glossary, first and last code cells, cell lengths, prose, sections, exercises, ...); so
must the lesson template, docs/lesson-template.ipynb. Toy lessons that break each rule on
purpose show that the checks fail them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lesson_rules
import nbformat
import pytest
from lesson_cells import lesson_of, structure_problems
from notebook_runner import EXTREME_RUN_S, clear_error, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
TEMPLATE = ROOT / "docs" / "lesson-template.ipynb"
TIMINGS = ROOT / "tests" / "artifacts" / "notebook-times.json"
PEAK_RSS_MB = 1024  # the kernel's peak resident memory: Binder gives a container 1-2 GB in all

params = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
slow_params = pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) for p in NOTEBOOKS],
                                      ids=[p.stem for p in NOTEBOOKS])


def test_there_are_lessons() -> None:
    assert NOTEBOOKS, "no notebooks/NN-*.ipynb found"


@params
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; strip them before committing"


@pytest.mark.parametrize("path", [*NOTEBOOKS, TEMPLATE], ids=[*(p.stem for p in NOTEBOOKS), "template"])
def test_follows_the_lesson_rules(path: Path) -> None:
    """The static rules (lesson_rules.STATIC_RULES), except those NOT_YET excuses; an excuse
    for a rule the lesson meets fails too, so the list only shrinks."""
    lesson = "NN" if path == TEMPLATE else lesson_of(path)
    problems = lesson_rules.static_problems(nbformat.read(path, as_version=4), lesson)
    failures, notes = lesson_rules.apply(problems, lesson, lesson_rules.STATIC_RULES)
    for note in notes:
        print(note)
    assert not failures, f"{path.name}:\n" + "\n".join(failures)


def test_not_yet_names_real_lessons_and_rules() -> None:
    lessons = {lesson_of(p) for p in NOTEBOOKS}
    for lesson, rules in lesson_rules.NOT_YET.items():
        assert lesson in lessons, f"NOT_YET names lesson {lesson!r}, which does not exist"
        unknown = set(rules) - set(lesson_rules.STATIC_RULES) - set(lesson_rules.RUN_RULES)
        assert not unknown, f"NOT_YET[{lesson!r}] names unknown rules {unknown}"
        assert all(isinstance(why, str) and why for why in rules.values()), "say why in NOT_YET"


@slow_params
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
    lesson = lesson_of(path)
    print(f"{path.name}: {run.seconds:.1f} s (budget {lesson_rules.budget_s(lesson)} s), "
          f"kernel peak RSS {run.peak_rss_mb:.0f} MB")
    assert run.peak_rss_mb < PEAK_RSS_MB, f"{path.name}: the kernel peaked at {run.peak_rss_mb:.0f} MB"
    for extreme in run.extremes:
        print(f"  extreme {extreme['experiment']} {extreme['values']}: {extreme['seconds']} s"
              + (f", shows {extreme['error']}" if extreme["error"] else ""))
    unclear = [e for e in run.extremes if e["error"] and not clear_error(e)]
    assert not unclear, f"{path.name}: a slider at its extreme fails without a clear ValueError: {unclear}"
    slow = [e for e in run.extremes if e["seconds"] > EXTREME_RUN_S]
    assert not slow, f"{path.name}: a slider at its extreme takes over {EXTREME_RUN_S} s: {slow}"
    if run.practice:
        for step in run.practice["steps"]:
            print(f"  exercise {step['exercise']} {step['kind']}: {step['result'] and step['result']['status']}")
    problems = run.problems()
    assert not problems, f"{path.name}: the exercises or closing checks failed:\n" + "\n".join(problems)
    failures, notes = lesson_rules.apply(lesson_rules.run_problems(run, lesson), lesson, lesson_rules.RUN_RULES)
    for note in notes:
        print(note)
    assert not failures, f"{path.name}:\n" + "\n".join(failures)


def test_extremes_check_catches_an_unclear_failure(tmp_path: Path) -> None:
    """The extremes cell really drives the sliders: a toy experiment that breaks at its max
    with an IndexError is reported as unclear; one that refuses with a ValueError is clear."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(
        "import helpers as h\n"
        "def probe(n, how):\n"
        "    if n == 9 and how == 'index':\n"
        "        return [][n]\n"
        "    if n == 9:\n"
        "        raise ValueError(f'n must be below 9, got {n}')\n"
        "    return n\n"
        "toy = h.Experiment(probe, n=h.int_slider('n', 3, min=0, max=9), how=h.choice('how', ['value', 'index']))\n"
    ))
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    run = run_notebook(path, extremes=True)
    seen = {(e["values"]["n"], e["values"]["how"]): e for e in run.extremes}
    assert set(seen) == {(0, "value"), (9, "value"), (0, "index"), (9, "index")}
    assert seen[(0, "index")]["error"] is None
    assert clear_error(seen[(9, "value")])
    assert seen[(9, "index")]["error"].startswith("IndexError") and not clear_error(seen[(9, "index")])


def _toy(path: Path, cells: list[tuple[str, str, list[str]]]) -> Path:
    """Write a toy notebook of (kind, source, tags) cells to `path`."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source, tags in cells:
        cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


TOY_CHECKS = """\
import helpers as h

@h.practice.exercise("99", 1, "a check that cannot fail", hint="anything passes")
def vacuous(t, fn):
    return "passed, whatever fn does"

def _answer(t, fn):
    value = t.call(fn, name="fn()").value
    t.require(value == 42, f"fn() returned {value!r}", "return 42")
    return "fn() returned 42"

def _weak(t, fn):
    value = t.call(fn, name="fn()").value
    t.require(isinstance(value, int), f"fn() returned {value!r}", "return an int")
    return "fn() returned an int"

h.practice.exercise("99", 2, "a solution that is wrong", hint="return 42")(_answer)
h.practice.exercise("99", 3, "a check a mistake passes", hint="return 42")(_weak)
h.practice.exercise("99", 4, "a sound exercise", hint="return 42")(_answer)
toy = h.Experiment(lambda n: n * 10, n=h.int_slider("n", 3, min=0, max=9))
"""


def _exercise_cells(n: int, solution: str) -> list[tuple[str, str, list[str]]]:
    return [
        ("markdown", f"### Exercise {n}: toy {n}\n\nWrite fn{n}().", []),
        ("code", f"def fn{n}():\n    ...", ["exercise"]),
        ("code", f'h.practice.check("99", {n}, fn{n})', ["check"]),
        ("markdown", f"<details><summary>Show a solution</summary>\n\n```python\n{solution}\n```\n\n</details>", []),
    ]


def test_practice_steps_catch_vacuous_checks_and_slider_dependent_closing(tmp_path: Path) -> None:
    """The runner's practice steps, on a toy lesson: a check that passes its stub, a
    solution that fails, a mistake that passes, a closing cell that reads the slider's last
    run, and an untagged assert in "What we saw" are each reported; the sound exercise 4
    and the closing cell that reads a fixed run are not."""
    cells = [("code", TOY_CHECKS, [])]
    for n, solution in [(1, "def fn1():\n    return 1"), (2, "def fn2():\n    return 41"),
                        (3, "def fn3():\n    return 42"), (4, "def fn4():\n    return 42")]:
        cells += _exercise_cells(n, solution)
    cells += [
        ("code", "at_default = toy.last", []),
        ("markdown", "## What we saw", []),
        ("code", "assert at_default == 30, at_default", ["closing"]),
        ("code", "assert toy.last == 30, toy.last", ["closing"]),
        ("code", "assert 1 + 1 == 2", []),
        ("code", 'h.practice.score("99")', []),
    ]
    path = _toy(tmp_path / "99-toy.ipynb", cells)
    mistakes = {1: "def fn1():\n    return 0", 2: "def fn2():\n    return 0", 3: "def fn3():\n    return 7",
                4: "def fn4():\n    return 41"}
    run = run_notebook(path, mistakes=mistakes)
    problems = run.problems()
    text = "\n".join(problems)
    assert any(p.startswith("exercise 1: on the committed stub the check said 'passed'") for p in problems), text
    assert any(p.startswith("exercise 2: the solution did not pass: not yet: fn() returned 41") for p in problems), text
    for n in (1, 3):
        assert any(p.startswith(f"exercise {n}: a plausible wrong answer got 'passed'") for p in problems), text
    assert not any(p.startswith("exercise 4") for p in problems), text
    moved = [p for p in problems if p.startswith("closing cell")]
    assert len(moved) == 1, text
    assert moved[0].startswith("closing cell 20 failed once the controls had moved (toy {'n': 6})"), text
    assert "at `assert toy.last == 30, toy.last` (in " in moved[0], text
    assert moved[0].endswith("AssertionError: a closing check read toy.last, "
                             "the slider's latest run; assert on a run the lesson made at fixed settings "
                             "(at_default = toy.last right after building the Experiment)"), text
    assert "cell 21 asserts after '## What we saw' but is not tagged 'closing'" in problems, text
    assert len(problems) == 6, text  # exercise 1's mistake passes too: its check cannot fail
    stub = {r["exercise"]: r["status"] for r in run.practice["stub"]}
    assert stub == {1: "passed", 2: "not done yet", 3: "not done yet", 4: "not done yet"}, stub


def test_exercise_cell_rules_name_each_break(tmp_path: Path) -> None:
    """The structure rules, on a lesson that breaks each: a check before its exercise cell,
    an exercise without a solution, numbers out of order, a check cell that calls nothing,
    tagged cells outside any exercise, an untagged assert in "What we saw", no score, and
    too few exercises."""
    cells = [
        ("code", "x = 1", ["exercise"]),
        *_exercise_cells(1, "def fn1():\n    return 1"),
        ("markdown", "### Exercise 3: skipped a number", []),
        ("code", 'h.practice.check("99", 3, fn3)', ["check"]),
        ("code", "def fn3():\n    ...", ["exercise"]),
        ("markdown", "### Exercise 2: no solution", []),
        ("code", "def fn2():\n    ...", ["exercise"]),
        ("code", "print(fn2)", ["check"]),
        ("code", "print(fn2)", ["check"]),
        ("markdown", "## What we saw", []),
        ("code", "assert x == 1", []),
    ]
    nb = nbformat.read(_toy(tmp_path / "99-bad.ipynb", cells), as_version=4)
    assert structure_problems(nb) == [
        "cell 0: a cell tagged 'exercise' outside an exercise (or a second one)",
        "cell 6: exercise 3's check comes before its exercise cell",
        "cell 11: a cell tagged 'check' outside an exercise (or a second one)",
        "exercise 3 (cell 5) has no check cell",
        "exercise 3 (cell 5) has no solution cell",
        "exercise 2 (cell 8) has no solution cell",
        "exercise 2: its check cell does not call h.practice.check(...)",
        "exercises must be numbered 1, 2, 3, ... in order, found [1, 3, 2]",
        "cell 13 asserts after '## What we saw' but is not tagged 'closing'",
        "no h.practice.score(...) cell after the exercises: end the lesson with the learner's score",
    ]
    few = [*_exercise_cells(1, "def fn1():\n    return 1"), *_exercise_cells(2, "def fn2():\n    return 2"),
           ("code", 'h.practice.score("99")', [])]
    assert structure_problems(nbformat.read(_toy(tmp_path / "99-few.ipynb", few), as_version=4)) == [
        "2 cells tagged 'exercise'; a lesson has at least 3 exercises",
        "2 cells tagged 'check'; a lesson has at least 3 exercises",
    ]


def test_static_rules_name_each_break(tmp_path: Path) -> None:
    """A toy lesson that breaks every static rule: each is named, with where and how."""
    long_cell = "\n".join(f"x{i} = {i}" for i in range(35))
    cells = [
        ("markdown", "# Toy lesson\n\nA promise, and no glossary link.", []),
        ("code", "import asyncio\nimport helpers as h\n%matplotlib inline", []),
        ("markdown", "## Part one\n\nThe soak test found this flaky in CI; TODO: fix before this lesson ships.", []),
        ("code", long_cell, []),
        ("code", long_cell, [lesson_rules.SERVER_LOOP_TAG]),  # a marked server loop may take 60
        ("code", long_cell + "\n" + long_cell, [lesson_rules.SERVER_LOOP_TAG]),
        ("code", "asyncio.run(main())", ["raises-exception"]),
        ("markdown", "## Where next\n\nman 7 tcp", []),
        ("markdown", "## What we saw", []),
        ("code", "h.check_clean()\nprint('done')", []),
    ]
    nb = nbformat.read(_toy(tmp_path / "99-toy.ipynb", cells), as_version=4)
    del nb.metadata["kernelspec"]
    problems = lesson_rules.static_problems(nb, "99")
    assert problems == {
        "kernelspec": [f"metadata.kernelspec must be {lesson_rules.KERNELSPEC}, found {{}}"],
        "title": ["the first cell must be markdown starting '# 99 · Title', found '# Toy lesson'"],
        "glossary": ["the first cell must link the glossary: [glossary](glossary.md)"],
        "first_code": ['cell 1: the first code cell must call h.start_lesson("99")'],
        "last_code": ["cell 9: the last code cell must be h.check_clean(), found \"h.check_clean()\\nprint('done')\""],
        "cell_lines": ["cell 3 has 35 lines, more than 30 (or 60, tagged 'server-loop')",
                       "cell 5 has 70 lines, more than 60"],
        "prose": ["cell 2 talks about how the course is built or tested: "
                  "['CI', 'TODO', 'before this lesson', 'flaky', 'soak']"],
        "sections": ["the last two sections must be '## What we saw' then '## Where next'"],
        "slider_and_plot": ["no slider: build an h.Experiment(...) with at least one control",
                            "no plot or diagram: h.figure(...) or h.SequenceDiagram(...)"],
        "forbidden": ["cell 1 uses %matplotlib; the inline backend is already the default",
                      "cell 6 is tagged raises-exception (papermill fails on it): show the error with try/except",
                      "cell 6 calls asyncio.run(), which fails in a notebook's kernel: use top-level await"],
        "exercises": ["0 cells tagged 'exercise'; a lesson has at least 3 exercises",
                      "0 cells tagged 'check'; a lesson has at least 3 exercises",
                      "no h.practice.score(...) cell after the exercises: end the lesson with the learner's score"],
    }
    failures, _ = lesson_rules.apply(problems, "99", lesson_rules.STATIC_RULES)
    assert len(failures) == sum(map(len, problems.values()))


def test_an_excuse_for_a_rule_met_fails_and_one_for_a_rule_broken_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(lesson_rules.NOT_YET, "99", {"title": "renamed soon", "budget": "slow machine"})
    failures, notes = lesson_rules.apply({"title": ["bad title"]}, "99", ("title", "glossary"))
    assert (failures, notes) == ([], ["not yet (renamed soon): bad title"])
    failures, notes = lesson_rules.apply({}, "99", lesson_rules.STATIC_RULES + lesson_rules.RUN_RULES)
    assert failures == ["lesson 99 meets rule 'title' now: remove it from NOT_YET in tests/lesson_rules.py"]
    assert notes == ["lesson 99 met run rule 'budget' this time: remove it from NOT_YET once it does so reliably"]


def test_a_slow_cell_without_progress_fails(tmp_path: Path) -> None:
    """The runner times each cell in the kernel: a cell that waits 3.5 s and shows nothing
    breaks the progress rule; one that waits as long inside h.progress does not."""
    path = _toy(tmp_path / "99-toy.ipynb", [
        ("markdown", "# 99 · Toy", []),
        ("code", "import time\nimport helpers as h", []),
        ("code", "time.sleep(3.5)", []),
        ("code", 'for _ in h.progress(range(2), desc="waiting"):\n    time.sleep(1.75)', []),
        ("code", "x = 1", []),
    ])
    run = run_notebook(path, practice=False)
    assert [c.cell for c in run.cells] == [1, 2, 3, 4]
    assert [c.progress for c in run.cells] == [False, False, True, False]
    assert 3.5 <= run.cells[1].seconds < 10 and 3.5 <= run.cells[2].seconds < 10, run.cells
    assert run.seconds >= 7.0, run.seconds
    problems = lesson_rules.run_problems(run, "99")
    assert list(problems) == ["progress"] and len(problems["progress"]) == 1, problems
    assert problems["progress"][0].startswith("cell 2 ran 3."), problems


def test_seconds_spent_waiting_for_a_cpu_are_measured_and_not_the_lessons(tmp_path: Path) -> None:
    """A cell that computes for about 1.5 s of CPU while another process keeps its only CPU
    busy takes about twice as long; the runner measures the wait (schedstat's run delay), and
    the progress rule counts only the rest. The same cell alone needs no progress display."""
    if not Path("/proc/thread-self/schedstat").exists():
        pytest.skip("this kernel keeps no schedstat: the runner cannot tell waiting from running")
    hog = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
    path = _toy(tmp_path / "99-toy.ipynb", [
        ("markdown", "# 99 · Toy", []),
        ("code", "import os, subprocess, sys, time\nimport helpers as h", []),
        ("code", "os.sched_setaffinity(0, {0})\n"
                 f"hog = subprocess.Popen([sys.executable, '-c', {hog!r}])\n"
                 "time.sleep(0.3)\n"
                 "end = time.process_time() + 1.5\n"
                 "while time.process_time() < end:\n    pass\n"
                 "hog.kill()\nhog.wait()", []),
    ])
    run = run_notebook(path, practice=False)
    cell = run.cells[1]
    assert cell.seconds > 2.5 and 0.8 < cell.waited < cell.seconds, cell
    assert cell.seconds - cell.waited < 2.5, cell
    assert lesson_rules.run_problems(run, "99") == {}, cell


def test_a_lesson_over_its_budget_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lesson that runs longer than its budget (showing progress all along) breaks it: lesson
    99 gets a budget of 2 s here, looked up as the real lessons' are, and runs about 3 s."""
    monkeypatch.setitem(lesson_rules.LONGER_BUDGET_S, "99", 2)
    assert lesson_rules.budget_s("99") == 2 and lesson_rules.budget_s("98") == lesson_rules.BUDGET_S == 20
    path = _toy(tmp_path / "99-toy.ipynb", [
        ("code", "import time\nimport helpers as h", []),
        ("code", 'for _ in h.progress(range(6), desc="waiting"):\n    time.sleep(0.5)', []),
    ])
    run = run_notebook(path, practice=False)
    problems = lesson_rules.run_problems(run, "99")
    assert list(problems) == ["budget"], problems
    assert re.fullmatch(r"the lesson ran \d+\.\d s, over its budget of 2 s", problems["budget"][0]), problems
    failures, _ = lesson_rules.apply(problems, "99", lesson_rules.RUN_RULES)
    assert failures == [f"budget: {problems['budget'][0]}"]


def test_a_run_leaves_no_client_thread_or_descriptor_in_the_test_process(tmp_path: Path) -> None:
    """Each run stops its kernel client: no heartbeat thread outlives the kernel, and the
    test process holds no more descriptors after two runs than after one (a heartbeat left
    running re-created its ZMQ socket every second, about ten fds per lesson, until a test
    that used up RLIMIT_NOFILE made it die with "Too many open files")."""
    import os
    import threading

    path = _toy(tmp_path / "99-tiny.ipynb", [("code", "print('hello')", [])])
    run_notebook(path)  # the first run may start nbclient's one shared event-loop thread
    fds, threads = len(os.listdir("/proc/self/fd")), {t.ident for t in threading.enumerate()}
    run_notebook(path)
    run_notebook(path)
    heartbeats = [t.name for t in threading.enumerate() if type(t).__name__ == "HBChannel"]
    assert not heartbeats, f"kernel clients' heartbeat threads still run: {heartbeats}"
    assert {t.ident for t in threading.enumerate()} <= threads, [t.name for t in threading.enumerate()]
    assert len(os.listdir("/proc/self/fd")) <= fds, sorted(os.listdir("/proc/self/fd"))
