"""A lab notebook as data: its parameters, tasks and tests, and what release and grading make of it.

``Lab`` reads one ``labs/NN-name.ipynb`` and knows what each cell is, from its tags (the
format is written up in ``labs/README.md``, "Writing a lab"):

* ``parameters``: the papermill parameters cell, ``name = literal`` lines; exactly one;
* ``solution`` with ``metadata.lab.task``: a task; the answer sits between
  ``### BEGIN SOLUTION: hint`` and ``### END SOLUTION`` inside a function or class;
* ``test`` / ``hidden-test``: one function decorated ``@kit.test(points=...)``; its name is
  the test's name. Hidden ones never reach the learner;
* ``learner-side``: lab code that, when graded, runs in the learner's process beside the
  tasks (a harness a test calls, e.g. a server built on the learner's class);
* ``notebook-only``: cells for the learner's own run (demos, ``kit.check()``,
  ``h.check_clean()``); grading skips them;
* any other code cell is *setup*: it runs in both of the grader's processes.

Everything here is pure: notebooks in, notebooks or plans out, no process started. The
test metadata is read from the code itself (``ast``), so what a test cell says and what the
tools believe cannot drift apart.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LabError",
    "Lab",
    "Test",
    "find_labs",
    "load_lab",
    "LABS_DIR",
    "derive_seed",
    "BEGIN",
    "END",
]

#: Where the lab sources live: ``labs/`` beside the ``helpers`` package.
LABS_DIR = Path(__file__).resolve().parent.parent.parent / "labs"
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?::\s*(?P<hint>.*))?$")
_END_RE = re.compile(r"^[ \t]*### END SOLUTION\s*$")
SOLUTION_TAG, TEST_TAG, HIDDEN_TAG, PARAMETERS_TAG = "solution", "test", "hidden-test", "parameters"
LEARNER_TAG, NOTEBOOK_ONLY_TAG, HIDDEN_PLACEHOLDER_TAG = "learner-side", "notebook-only", "hidden-placeholder"
_ROLE_TAGS = (SOLUTION_TAG, TEST_TAG, HIDDEN_TAG, PARAMETERS_TAG, LEARNER_TAG, NOTEBOOK_ONLY_TAG)


class LabError(Exception):
    """A lab, a parameter or a submission the tooling cannot use; the message says what to do."""


@dataclass(frozen=True)
class Test:
    """One graded test: its name, points, whether learners see it, and how it runs."""

    name: str
    points: float
    hidden: bool
    timeout_s: float | None = None
    timing: bool = False
    cell: int = -1
    uses: tuple[str, ...] = field(default=(), compare=False)  # the tasks whose names it mentions


def _tags(cell: Any) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return list(tags) if isinstance(tags, list) else []


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(map(str, source))


def _ensure_tags(nb: Any) -> None:
    """Give every cell a tags list (papermill looks for the parameters tag in each)."""
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    nb.metadata.setdefault("papermill", {})


def _parse_parameters(source: str, lab: str) -> dict[str, Any]:
    """``name = literal`` lines of a parameters cell -> {name: default}."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise LabError(f"{lab}: the parameters cell is not valid Python: {exc}") from exc
    defaults: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise LabError(f"{lab}: the parameters cell may hold only 'name = literal' lines (line {node.lineno})")
        try:
            defaults[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError as exc:
            raise LabError(f"{lab}: parameter {node.targets[0].id} needs a literal default") from exc
    return defaults


def derive_seed(cohort: str, student: str) -> int:
    """A stable per-student seed in 0..999999 from the cohort and the student's name."""
    digest = hashlib.sha256(f"{cohort}\0{student}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000


def stub_solutions(source: str, where: str = "cell") -> str:
    """Replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region with a stub.

    The stub is ``raise NotImplementedError(hint)`` at the BEGIN line's indentation; the hint
    is the text after ``### BEGIN SOLUTION:``. Regions must be inside a function (indented),
    so that running the cell defines the stub instead of failing.
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), 1):
        begin = _BEGIN_RE.match(line)
        if begin:
            if inside:
                raise LabError(f"{where}: line {number}: BEGIN SOLUTION inside another solution")
            if not begin["indent"]:
                raise LabError(f"{where}: line {number}: put the solution inside a function (it is not indented)")
            hint = (begin["hint"] or "write this part").strip()
            out.append(f"{begin['indent']}raise NotImplementedError({hint!r})")
            inside = True
        elif _END_RE.match(line):
            if not inside:
                raise LabError(f"{where}: line {number}: END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise LabError(f"{where}: BEGIN SOLUTION without END SOLUTION")
    return "\n".join(out)


def defined_names(source: str, where: str) -> list[str]:
    """The names a cell defines at its top level (functions, classes, assignments)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise LabError(f"{where} is not valid Python: {exc}") from exc
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def _top_level_names(tree: ast.AST) -> set[str]:
    """Names a cell reads when it runs (not inside function bodies, which run later)."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack += list(getattr(node, "decorator_list", []))  # decorators run at definition
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.add(node.id)
        stack += list(ast.iter_child_nodes(node))
    return found


def _all_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _parse_test(source: str, hidden: bool, where: str, index: int) -> tuple[Test, ast.AST]:
    """The Test a cell defines: one ``@kit.test(points=...)`` function, nothing else."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise LabError(f"{where} is not valid Python: {exc}") from exc
    body = tree.body
    shape = "one function decorated with @kit.test(points=N), and nothing else"
    if len(body) != 1 or not isinstance(body[0], ast.FunctionDef) or len(body[0].decorator_list) != 1:
        raise LabError(f"{where}: a test cell holds {shape}")
    fn, deco = body[0], body[0].decorator_list[0]
    if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "test"
            and isinstance(deco.func.value, ast.Name) and deco.func.value.id == "kit"):
        raise LabError(f"{where}: a test cell holds {shape}")
    if fn.args.args or fn.args.posonlyargs or fn.args.kwonlyargs or fn.args.vararg or fn.args.kwarg:
        raise LabError(f"{where}: test {fn.name}() takes no arguments")
    try:
        args = [ast.literal_eval(a) for a in deco.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in deco.keywords}
    except ValueError as exc:
        raise LabError(f"{where}: @kit.test arguments must be literals ({exc})") from None
    if args:
        kwargs.setdefault("points", args[0])
    unknown = set(kwargs) - {"points", "timeout_s", "timing"}
    if unknown or len(args) > 1 or None in kwargs:
        raise LabError(f"{where}: @kit.test takes points=, timeout_s= and timing=, got {sorted(map(str, unknown))}")
    points = kwargs.get("points")
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points) or points <= 0:
        raise LabError(f"{where}: test {fn.name} needs points > 0, got {points!r}")
    timeout = kwargs.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise LabError(f"{where}: test {fn.name}: timeout_s must be a number > 0, got {timeout!r}")
    timing = kwargs.get("timing", False)
    if not isinstance(timing, bool):
        raise LabError(f"{where}: test {fn.name}: timing must be True or False, got {timing!r}")
    test = Test(fn.name, float(points), hidden, None if timeout is None else float(timeout), timing, index)
    return test, fn


@dataclass
class Lab:
    """One lab source notebook and what its cells are."""

    path: Path
    nb: Any = field(repr=False)

    @property
    def id(self) -> str:
        """The file stem, e.g. '01-echo'; also the name of the released file."""
        return self.path.stem

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.nb.metadata.get("lab", {}))

    @property
    def title(self) -> str:
        first = self.nb.cells[0].source.splitlines()[0] if self.nb.cells else self.id
        return first.lstrip("# ").strip()

    @property
    def lessons(self) -> list[str]:
        return [str(x) for x in self.meta.get("lessons", [])]

    def cells_tagged(self, tag: str) -> list[Any]:
        return [c for c in self.nb.cells if tag in _tags(c)]

    def role(self, cell: Any) -> str:
        """'markdown', one of the role tags above, or 'setup'."""
        if cell.get("cell_type") != "code":
            return "markdown"
        roles = [t for t in _tags(cell) if t in _ROLE_TAGS]
        return roles[0] if roles else "setup"

    @property
    def parameter_defaults(self) -> dict[str, Any]:
        """{name: default} from the parameters cell."""
        return _parse_parameters(self.cells_tagged(PARAMETERS_TAG)[0].source, self.id)

    @property
    def tasks(self) -> list[str]:
        return [c.metadata["lab"]["task"] for c in self.cells_tagged(SOLUTION_TAG)]

    def task_names(self) -> dict[str, list[str]]:
        """{task: the names its solution defines}, and {'learner-side': names} for those cells."""
        out: dict[str, list[str]] = {}
        for cell in self.nb.cells:
            role = self.role(cell)
            if role == SOLUTION_TAG:
                task = cell.metadata["lab"]["task"]
                out[task] = defined_names(cell.source, f"{self.id} task {task}")
            elif role == LEARNER_TAG:
                out.setdefault(LEARNER_TAG, []).extend(defined_names(cell.source, f"{self.id} learner-side cell"))
        return out

    @property
    def tests(self) -> list[Test]:
        owners = {name: task for task, names in self.task_names().items() for name in names}
        found = []
        for index, cell in enumerate(self.nb.cells):
            role = self.role(cell)
            if role in (TEST_TAG, HIDDEN_TAG):
                test, fn = _parse_test(cell.source, role == HIDDEN_TAG, f"{self.id} cell {index}", index)
                uses = tuple(sorted({owners[n] for n in _all_names(fn) if n in owners} - {LEARNER_TAG}))
                found.append(Test(test.name, test.points, test.hidden, test.timeout_s, test.timing, index, uses))
        return found

    @property
    def max_points(self) -> float:
        return sum(t.points for t in self.tests)

    def check(self) -> None:
        """Raise LabError if the lab's cells do not follow the format (labs/README.md)."""
        params = self.cells_tagged(PARAMETERS_TAG)
        if len(params) != 1:
            raise LabError(f"{self.id}: needs exactly one cell tagged 'parameters' (papermill), found {len(params)}")
        self.parameter_defaults  # noqa: B018 (parses, raising LabError when it cannot)
        tasks: set[str] = set()
        for index, cell in enumerate(self.nb.cells):
            roles = [t for t in _tags(cell) if t in _ROLE_TAGS]
            if len(roles) > 1:
                raise LabError(f"{self.id} cell {index}: one role per cell, this one is tagged {roles}")
            if self.role(cell) == SOLUTION_TAG:
                info = cell.get("metadata", {}).get("lab", {})
                if "task" not in info:
                    raise LabError(f"{self.id} cell {index}: a solution cell lacks metadata.lab.task")
                if info["task"] in tasks:
                    raise LabError(f"{self.id}: two tasks are called {info['task']!r}")
                tasks.add(info["task"])
                if BEGIN not in cell.source:
                    raise LabError(f"{self.id}: task {info['task']} has no '{BEGIN}' line")
                stub_solutions(cell.source, f"{self.id} task {info['task']}")
                if not defined_names(cell.source, f"{self.id} task {info['task']}"):
                    raise LabError(f"{self.id}: task {info['task']} defines no function or class")
        tests = self.tests
        names = [t.name for t in tests]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise LabError(f"{self.id}: two tests are called {doubled[0]!r}")
        if not tests:
            raise LabError(f"{self.id}: has no test cells")
        learner_names = {n for names_ in self.task_names().values() for n in names_}
        for index, cell in enumerate(self.nb.cells):
            if self.role(cell) in ("setup", PARAMETERS_TAG):
                try:
                    used = _top_level_names(ast.parse(cell.source)) & learner_names
                except SyntaxError as exc:
                    raise LabError(f"{self.id} cell {index} is not valid Python: {exc}") from exc
                if used:
                    raise LabError(
                        f"{self.id} cell {index} runs {sorted(used)[0]} (the learner's code) when it runs: tag it "
                        f"'{NOTEBOOK_ONLY_TAG}' (the grader skips it) or move that code into a test")

    def validate_parameters(self, given: dict[str, Any]) -> dict[str, Any]:
        """Check `given` against the parameters cell and metadata.lab.parameters ranges.

        Returns the full set (defaults filled in). Raises LabError naming the parameter,
        the value and what is allowed.
        """
        if not isinstance(given, dict):
            raise LabError(f"{self.id}: the parameters must be a mapping of name to value, got {given!r:.100}")
        defaults = self.parameter_defaults
        ranges = self.meta.get("parameters", {})
        values = dict(defaults)
        for name, value in given.items():
            if name not in defaults:
                raise LabError(f"{self.id} has no parameter {name!r}; its parameters are: {', '.join(defaults)}")
            kind = type(defaults[name])
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not kind:
                raise LabError(
                    f"{self.id}: parameter {name} must be {kind.__name__} (default {defaults[name]!r}), got {value!r}"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise LabError(f"{self.id}: parameter {name} must be a finite number, got {value!r}")
            limits = ranges.get(name, {})
            if "min" in limits and not value >= limits["min"] or "max" in limits and not value <= limits["max"]:
                raise LabError(
                    f"{self.id}: parameter {name}={value!r} is out of range {limits.get('min')}..{limits.get('max')}"
                )
            values[name] = value
        return values

    def parse_parameter_text(self, name: str, text: str) -> Any:
        """Turn the string after ``-p name=`` into the type of the parameter's default.

        Raises LabError naming the parameter and the text when it is not one (a float
        must be finite: 'nan' and 'inf' are refused; int, float, bool and str only).
        """
        if not isinstance(name, str) or not isinstance(text, str):
            raise LabError(f"{self.id}: -p wants name=value text, got {name!r:.60}={text!r:.60}")
        defaults = self.parameter_defaults
        if name not in defaults:
            raise LabError(f"{self.id} has no parameter {name!r}; its parameters are: {', '.join(defaults)}")
        kind = type(defaults[name])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                return text.lower() in ("true", "1")
            if kind not in (int, float, str):
                raise ValueError(text)  # list(text) would be its characters: not a value to guess
            value = kind(text.strip()) if kind is not str else text
            if kind is float and not math.isfinite(value):
                raise ValueError(text)
            return value
        except ValueError:
            raise LabError(f"{self.id}: parameter {name} must be {kind.__name__}, got {text!r}") from None

    # -- what release and grading make of it ----------------------------------------------

    def student_notebook(self, released: dict[str, Any]) -> Any:
        """The learner's version: stubs for solutions, hidden tests replaced by a line that
        names them (for ``kit.check()``), no outputs."""
        import nbformat

        nb = copy.deepcopy(self.nb)
        points = {t.cell: t for t in self.tests}
        cells = []
        for index, cell in enumerate(nb.cells):
            role = self.role(cell)
            if role == HIDDEN_TAG:
                test = points[index]
                cells.append(nbformat.v4.new_code_cell(
                    f"kit.hidden({test.name!r}, points={test.points:g})", metadata={"tags": [HIDDEN_PLACEHOLDER_TAG]}))
                continue
            if role == SOLUTION_TAG:
                cell.source = stub_solutions(cell.source, f"{self.id} task {cell.metadata['lab']['task']}")
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
        nb.cells = cells
        nb.metadata["lab"] = {"id": self.id, "released": released}
        _ensure_tags(nb)
        return nb

    def submitted_tasks(self, submission: Any) -> dict[str, str]:
        """{task: source} of the learner's task cells (matched by ``metadata.lab.task``; the
        first cell per task counts; anything else in the submission is ignored)."""
        answers: dict[str, str] = {}
        for cell in getattr(submission, "cells", None) or []:
            if not isinstance(cell, dict):
                continue
            lab_meta = cell.get("metadata", {}).get("lab", {}) if isinstance(cell.get("metadata"), dict) else {}
            task = lab_meta.get("task") if isinstance(lab_meta, dict) else None
            if cell.get("cell_type") == "code" and isinstance(task, str) and task in self.tasks and task not in answers:
                answers[task] = _source(cell)
        return answers

    def plan(self, answers: dict[str, str] | None) -> list[dict[str, Any]]:
        """The cells grading runs, in order: {role, index, source, ...} (JSON data).

        Task cells carry the learner's source (`answers`; None means the reference solution,
        with its marker lines, which are comments); a task missing from the answers becomes
        a cell that raises. ``notebook-only`` cells and markdown are left out.
        """
        tests = {t.cell: t for t in self.tests}
        names = self.task_names()
        out: list[dict[str, Any]] = []
        for index, cell in enumerate(self.nb.cells):
            role = self.role(cell)
            if role in ("markdown", NOTEBOOK_ONLY_TAG):
                continue
            entry: dict[str, Any] = {"role": role, "index": index, "source": cell.source}
            if role == SOLUTION_TAG:
                task = cell.metadata["lab"]["task"]
                entry["role"], entry["task"], entry["names"] = "task", task, names[task]
                if answers is not None:
                    missing = f"task {task} is missing from the submission"
                    entry["source"] = answers.get(task, f"raise NotImplementedError({missing!r})")
            elif role == LEARNER_TAG:
                entry["names"] = defined_names(cell.source, f"{self.id} learner-side cell")
            elif role in (TEST_TAG, HIDDEN_TAG):
                test = tests[index]
                entry["role"] = "test"
                entry["test"] = {"name": test.name, "points": test.points, "hidden": test.hidden,
                                 "timeout_s": test.timeout_s, "timing": test.timing}
            out.append(entry)
        return out

    def solution_notebook(self) -> Any:
        """The instructor's answer as a submission (marker lines kept: they are comments)."""
        return copy.deepcopy(self.nb)

    def fingerprint(self) -> str:
        """A hash of the lab's cells: a grade made from another version is stale."""
        digest = hashlib.sha256()
        for cell in self.nb.cells:
            digest.update(repr((cell.get("cell_type"), _tags(cell), cell.get("source", ""),
                                cell.get("metadata", {}).get("lab"))).encode())
        return digest.hexdigest()[:16]


def find_labs(labs_dir: Path | None = None) -> list[Lab]:
    """Every ``NN-*.ipynb`` lab in `labs_dir` (default: the repo's ``labs/``), sorted."""
    labs_dir = labs_dir or LABS_DIR
    return [load_lab(p) for p in sorted(labs_dir.glob("[0-9][0-9]-*.ipynb"))]


def load_lab(name_or_path: str | Path, labs_dir: Path | None = None) -> Lab:
    """A lab by path, id ('01-echo') or number ('01', '1'); LabError names the labs there are."""
    import nbformat

    labs_dir = labs_dir or LABS_DIR
    path = Path(name_or_path)
    if not path.suffix == ".ipynb" or not path.exists():
        text = str(name_or_path)
        candidates = sorted(labs_dir.glob("[0-9][0-9]-*.ipynb"))
        if text.isdigit():
            text = f"{int(text):02d}"
        matches = [p for p in candidates if p.stem == text or p.stem.startswith(text + "-")]
        if len(matches) != 1:
            known = ", ".join(p.stem for p in candidates) or f"none (no NN-*.ipynb in {labs_dir})"
            raise LabError(f"no lab called {name_or_path!r}; the labs are: {known}")
        path = matches[0]
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is the same problem for the user)
        raise LabError(f"{path}: not a readable notebook: {exc}") from exc
    lab = Lab(path, nb)
    lab.check()
    return lab
