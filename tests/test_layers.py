"""The import contract of helpers/ (its layers), read from the source and checked in a fresh Python.

- protocol code (framing, packets, the capstone's HTTP layer) imports no socket, selectors or
  select module at module level: bytes in, events out;
- core/ imports only the standard library and core/; core/ and observe/ import no plotting
  or widgets (matplotlib, ipywidgets, IPython), not even inside a function;
- nothing outside helpers/labs imports helpers.labs (grading), tests aside;
- no helpers module reaches into another's private names (``from x import _y``, ``x._y``);
- ``import helpers`` and ``import helpers.framing`` load no plotting and install no audit hook.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import helpers

ROOT = Path(__file__).resolve().parent.parent
HELPERS = ROOT / "helpers"
PROTOCOL = ["framing.py", "packets.py", "chat.py", "reactor/http.py"]
NO_IO = {"socket", "selectors", "select"}
PLOTTING = {"matplotlib", "ipywidgets", "IPython"}
STDLIB = sys.stdlib_module_names


def _modules(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "labs" not in p.relative_to(HELPERS).parts[:1])


def _imports(tree: ast.AST, *, top_level_only: bool) -> list[tuple[int, str]]:
    """(line, absolute-or-relative module name) of each import, at module level or anywhere."""
    found = []
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def _top_level(tree: ast.AST) -> list[ast.AST]:
    """Statements that run at import: the module body, into if/try/with, not into functions,
    and not into ``if TYPE_CHECKING:`` (never run)."""
    out, todo = [], list(getattr(tree, "body", []))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        out.append(node)
        for field in ("body", "orelse", "finalbody", "handlers"):
            todo += getattr(node, field, [])
    return out


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("name", PROTOCOL)
def test_protocol_modules_import_no_socket(name: str) -> None:
    bad = [(line, m) for line, m in _imports(_tree(HELPERS / name), top_level_only=True)
           if m.split(".")[0] in NO_IO]
    assert not bad, f"helpers/{name} imports I/O modules at module level (protocol code does no I/O): {bad}"


def test_core_imports_only_the_stdlib_and_core() -> None:
    bad = []
    for path in _modules(HELPERS / "core"):
        for line, m in _imports(_tree(path), top_level_only=False):
            inside_core = m.startswith(".") and not m.startswith("..")
            if not inside_core and m.split(".")[0] not in STDLIB | {"__future__"}:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {m}")
    assert not bad, "core/ builds on the standard library only:\n" + "\n".join(bad)


def test_observation_imports_no_plotting() -> None:
    paths = _modules(HELPERS / "core") + _modules(HELPERS / "observe")
    bad = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in paths
           for line, m in _imports(_tree(p), top_level_only=False) if m.split(".")[0] in PLOTTING]
    assert not bad, "measurement knows nothing of drawing:\n" + "\n".join(bad)


def test_nothing_imports_grading() -> None:
    bad = []
    for path in _modules(HELPERS) + sorted((ROOT / "bench").glob("*.py")):
        for line, m in _imports(_tree(path), top_level_only=False):
            if m.startswith("helpers.labs") or m in (".labs", "..labs") or m.startswith((".labs.", "..labs.")):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {m}")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code" and "helpers.labs" in "".join(cell["source"]):
                bad.append(f"{nb.relative_to(ROOT)} imports helpers.labs")
    assert not bad, "lessons and helpers never import the grading package:\n" + "\n".join(bad)


def _private_uses(path: Path) -> list[str]:
    """``from x import _y`` of a helpers module, and ``x._y`` on a helpers module imported as x."""
    tree = _tree(path)
    ours: set[str] = set()  # local names bound to helpers modules
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("helpers")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {node.module}")
                ours.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            ours |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("helpers")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return bad


def test_no_private_name_crosses_modules() -> None:
    bad = [b for path in _modules(HELPERS) for b in _private_uses(path)]
    assert not bad, "make the name public in its module, or move it:\n" + "\n".join(bad)


_FRESH = """
import json, sys
hooks = []
sys.addaudithook(lambda event, args: hooks.append(event) if event == "sys.addaudithook" else None)
sys.path.insert(0, {root!r})
import {module}
print(json.dumps({{"loaded": sorted(m for m in sys.modules if m.split(".")[0] in {plotting!r}),
                   "audit hooks added": len(hooks)}}))
"""


@pytest.mark.parametrize("module", ["helpers", "helpers.framing", "helpers.observe", "helpers.servers"])
def test_import_is_light_and_side_effect_free(module: str) -> None:
    code = _FRESH.format(root=str(ROOT), module=module, plotting=sorted(PLOTTING))
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"loaded": [], "audit hooks added": 0}, f"import {module}: {seen}"


def test_every_name_lessons_use_resolves_lazily() -> None:
    assert sorted(helpers.__all__) == sorted(helpers._EXPORTS), "__all__ and _EXPORTS must list the same names"
    for name in helpers.__all__:  # each name is the very object its module defines
        assert getattr(helpers, name) is getattr(importlib.import_module(helpers._EXPORTS[name], "helpers"), name)
    assert helpers.framing.__name__ == "helpers.framing" and "reactor" in dir(helpers)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        helpers.nope  # noqa: B018


def test_a_package_reaches_each_of_its_modules_by_attribute() -> None:
    """Lessons write ``h.reactor.dispatcher.Dispatcher``: in a fresh process, every module of a
    lazy package must be reachable that way, not only once something else imported it."""
    for package in ("helpers", "helpers.reactor"):
        folder = ROOT.joinpath(*package.split("."))
        names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
        names += sorted(p.name for p in folder.iterdir() if (p / "__init__.py").exists())
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import importlib\n"
                f"pkg = importlib.import_module({package!r})\n"
                f"for n in {names!r}: assert getattr(pkg, n).__name__ == {package!r} + '.' + n, n")
        done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{package}: {done.stderr[-600:]}"


def test_lesson_17_can_show_its_models_source() -> None:
    from helpers import c10k
    from helpers.reactor import EventLoop, TcpConnection

    for obj in (c10k.serve_blocking, c10k.ThreadPool._worker, EventLoop.run_once, TcpConnection.write):
        assert inspect.getsource(obj).lstrip().startswith("def ")


def _starts_python(tree: ast.AST) -> list[int]:
    """Lines that use sys.executable: a Python child being started by hand."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys"
            and node.attr == "executable"]


#: Python children started otherwise, each for a reason core.spawn cannot serve.
OWN_CHILDREN = {
    "closing.py": "lesson 08's subject: a `python -c` child the kernel kills with SIGPIPE",
}


def test_every_python_child_starts_through_core_spawn() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in _modules(HELPERS)
           if p.name != "spawn.py" and str(p.relative_to(HELPERS)) not in OWN_CHILDREN
           for line in _starts_python(_tree(p))]
    assert not bad, "start a Python child with helpers.core.spawn.Child (one convention):\n" + "\n".join(bad)
