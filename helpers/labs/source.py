"""A lab notebook as data: its parameters, tasks and tests, and the two rewrites of it.

``Lab`` reads one ``labs/NN-name.ipynb`` and knows which cell is which (see the package
docstring for the cell tags). ``student_notebook`` is the release rewrite (stubs in, hidden
tests out); ``graded_notebook`` is the grading rewrite (the learner's task cells put into
the pristine lab, every cell wrapped so one failure does not stop the rest). Both are pure:
notebooks in, notebooks out, no kernel.
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

import nbformat

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


class LabError(Exception):
    """A lab, a parameter or a submission the tooling cannot use; the message says what to do."""


@dataclass(frozen=True)
class Test:
    """One graded test cell: its name, points, and whether learners see it."""

    name: str
    points: float
    hidden: bool


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


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


def strip_solution_markers(source: str) -> str:
    """The solution with its marker lines removed (what the instructor's answer runs as)."""
    return "\n".join(line for line in source.splitlines() if not (_BEGIN_RE.match(line) or _END_RE.match(line)))


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

    def cells_tagged(self, tag: str) -> list[Any]:
        return [c for c in self.nb.cells if tag in _tags(c)]

    @property
    def parameter_defaults(self) -> dict[str, Any]:
        """{name: default} from the parameters cell."""
        return _parse_parameters(self.cells_tagged(PARAMETERS_TAG)[0].source, self.id)

    @property
    def tasks(self) -> list[str]:
        return [c.metadata["lab"]["task"] for c in self.cells_tagged(SOLUTION_TAG)]

    @property
    def tests(self) -> list[Test]:
        found = []
        for cell in self.nb.cells:
            tags = _tags(cell)
            if TEST_TAG in tags or HIDDEN_TAG in tags:
                info = cell.metadata["lab"]
                found.append(Test(info["test"], float(info["points"]), HIDDEN_TAG in tags))
        return found

    @property
    def max_points(self) -> float:
        return sum(t.points for t in self.tests)

    def check(self) -> None:
        """Raise LabError if the lab's cells do not follow the conventions."""
        params = self.cells_tagged(PARAMETERS_TAG)
        if len(params) != 1:
            raise LabError(f"{self.id}: needs exactly one cell tagged 'parameters' (papermill), found {len(params)}")
        self.parameter_defaults  # noqa: B018 (parses, raising LabError when it cannot)
        names: set[str] = set()
        for cell in self.nb.cells:
            tags = _tags(cell)
            info = cell.get("metadata", {}).get("lab", {})
            if SOLUTION_TAG in tags:
                if "task" not in info:
                    raise LabError(f"{self.id}: a solution cell lacks metadata.lab.task")
                if BEGIN not in cell.source:
                    raise LabError(f"{self.id}: task {info['task']} has no '{BEGIN}' line")
                stub_solutions(cell.source, f"{self.id} task {info['task']}")
            if TEST_TAG in tags or HIDDEN_TAG in tags:
                if "test" not in info or not isinstance(info.get("points"), int | float) or info["points"] <= 0:
                    raise LabError(f"{self.id}: a test cell needs metadata.lab = {{'test': name, 'points': > 0}}")
                if info["test"] in names:
                    raise LabError(f"{self.id}: two tests are called {info['test']!r}")
                names.add(info["test"])
        if not names:
            raise LabError(f"{self.id}: has no test cells")

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

    # -- the two rewrites -------------------------------------------------------------------

    def student_notebook(self, released: dict[str, Any]) -> Any:
        """The learner's version: stubs for solutions, no hidden tests, no outputs."""
        nb = copy.deepcopy(self.nb)
        cells = []
        for cell in nb.cells:
            tags = _tags(cell)
            if HIDDEN_TAG in tags:
                points = cell.metadata["lab"]["points"]
                cells.append(
                    nbformat.v4.new_markdown_cell(
                        f"*A hidden test worth {points:g} point(s) runs here when your lab is graded.*",
                        metadata={"lab": {"hidden_placeholder": True}},
                    )
                )
                continue
            if SOLUTION_TAG in tags:
                cell.source = stub_solutions(cell.source, f"{self.id} task {cell.metadata['lab']['task']}")
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
        nb.cells = cells
        nb.metadata["lab"] = {"id": self.id, "released": released}
        _ensure_tags(nb)
        return nb

    def graded_notebook(self, submission: Any | None, *, test_timeout_s: float, output_limit: int) -> Any:
        """The pristine lab with the learner's task cells in it, each cell guarded.

        `submission` is the learner's notebook (None: no task cells at all). Cells are
        matched by ``metadata.lab.task``; a task missing from the submission runs as a cell
        that raises, so its tests fail with that message.
        """
        answers: dict[str, str] = {}
        if submission is not None:
            for cell in submission.cells:
                lab_meta = cell.get("metadata", {}).get("lab", {})
                task = lab_meta.get("task") if isinstance(lab_meta, dict) else None
                source = cell.get("source", "")
                if cell.get("cell_type") == "code" and isinstance(task, str) and task not in answers:
                    answers[task] = source if isinstance(source, str) else "".join(map(str, source))
        nb = copy.deepcopy(self.nb)
        setup = (
            "import helpers.labs.harness as _lab_harness\n"
            f"_lab_harness.start(output_limit={output_limit})"
        )
        cells = [nbformat.v4.new_code_cell(setup, metadata={"tags": ["grader-setup"]})]
        for cell in nb.cells:
            if cell.cell_type != "code":
                cells.append(cell)
                continue
            cell.outputs, cell.execution_count = [], None
            tags = _tags(cell)
            info = cell.metadata.get("lab", {})
            if PARAMETERS_TAG in tags:
                pass
            elif SOLUTION_TAG in tags:
                task = info["task"]
                missing = f"task {task} is missing from the submission"
                code = answers.get(task, f"raise NotImplementedError({missing!r})")
                cell.source = f"_lab_harness.run_task({task!r}, {code!r}, globals(), timeout_s={test_timeout_s!r})"
            elif TEST_TAG in tags or HIDDEN_TAG in tags:
                cell.source = (
                    f"_lab_harness.run_test({info['test']!r}, {float(info['points'])!r}, {cell.source!r}, globals(), "
                    f"timeout_s={float(info.get('timeout_s', test_timeout_s))!r})"
                )
            else:
                cell.source = f"_lab_harness.run_setup({cell.source!r}, globals(), timeout_s={test_timeout_s!r})"
            cells.append(cell)
        nb.cells = cells
        _ensure_tags(nb)
        return nb

    def solution_notebook(self) -> Any:
        """The instructor's answer as a submission (marker lines kept: they are comments)."""
        return copy.deepcopy(self.nb)


def find_labs(labs_dir: Path | None = None) -> list[Lab]:
    """Every ``NN-*.ipynb`` lab in `labs_dir` (default: the repo's ``labs/``), sorted."""
    labs_dir = labs_dir or LABS_DIR
    return [load_lab(p) for p in sorted(labs_dir.glob("[0-9][0-9]-*.ipynb"))]


def load_lab(name_or_path: str | Path, labs_dir: Path | None = None) -> Lab:
    """A lab by path, id ('01-echo') or number ('01', '1'); LabError names the labs there are."""
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
