"""The Simplified Chinese edition: in sync with the English source, and running from its own folder.

The edition is built by helpers/editions.py from the English notebooks and the catalogs in
i18n/zh-CN/. What this file holds it to:

* **in sync** (static, milliseconds): every English notebook (lessons, start-here, labs) has
  a catalog or is listed in i18n/zh-CN/untranslated.txt, the one list of notebooks not
  translated yet, which must hold nothing else; each catalog's hashes match the English
  cells as they are now (a changed English cell fails here, named, until translated again);
  building from the catalogs reproduces the committed notebooks/zh-CN/ exactly; and, read
  from the committed files themselves: code cells identical to the English (source,
  id, metadata), code blocks inside markdown identical, links that resolve from
  notebooks/zh-CN/, the glossary's terms, the README's commands and badge.
* **runs** (the economy): since every code cell is byte for byte the English one, a zh-CN
  lesson can only behave differently where its code depends on the folder it runs in (the
  kernel starts in notebooks/zh-CN/) or on what its markdown says (the exercise runner reads
  the exercises and their solutions from the Chinese markdown: ``### 练习 N：`` or
  ``### Exercise N:``, ``<summary>查看参考答案</summary>``). So: the English lessons run in
  full in tests/test_notebooks.py; here, (1) statically, for every zh-CN lesson,
  tests/lesson_cells.py finds the same exercises, stubs, checks, solutions and closing cells
  as in the English lesson, and none of the structure problems; (2) a static check finds
  every call in a lesson that names a file relative to the notebook's folder and requires
  it to go through a helper that resolves it from any edition
  (helpers.core.lessonfiles), and each such file resolves from notebooks/zh-CN/; (3) those
  helpers read each recording from notebooks/zh-CN/; (4) one zh-CN lesson, the one that
  reads the most such files, runs under the notebook runner from notebooks/zh-CN/ with its
  exercise checks (stub, solution, plausible mistake, closing cells with the controls
  moved); (5) in the class test (tests/test_hub.py, as root: CI), two of the four learners
  who run the whole course run the zh-CN edition from notebooks/zh-CN/, as normal users,
  and one of them runs every zh-CN lesson's exercise checks through the same runner, which
  must take the same steps as the English; (6) the browser test opens the zh-CN start-here
  and two lessons in a Chinese JupyterLab (tests/test_browser.py).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lesson_cells
import nbformat
import pytest
from notebook_runner import run_notebook

from helpers import editions
from helpers.core import lessonfiles

ROOT = Path(__file__).resolve().parent.parent
LANG = "zh-CN"
EDITION = ROOT / "notebooks" / LANG
SOURCES = editions.sources(ROOT)
TRANSLATED = [s for s in SOURCES if editions.catalog_path(s, LANG, ROOT).exists()]
BUILT = [s for s in TRANSLATED if editions.edition_path(s, LANG, ROOT) is not None]
# A call that names a file relative to the notebook's folder must be one of these: each
# resolves it from an edition's folder too (helpers.core.lessonfiles).
LOADERS = {"load_recording", "load_window_runs", "run_or_replay"}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _ids(paths: list[Path]) -> list[str]:
    return [_rel(p) for p in paths]


def _maybe(paths: list[Path], what: str) -> list:
    """Parameters for `paths`, or one skipped parameter saying none is translated yet."""
    if paths:
        return [pytest.param(p, id=_rel(p)) for p in paths]
    return [pytest.param(None, id="none", marks=pytest.mark.skip(reason=f"no {what} translated yet"))]


# --- the repository's edition ---------------------------------------------------------------

def test_every_notebook_is_translated_or_listed() -> None:
    """Each English notebook has a catalog, or is in i18n/zh-CN/untranslated.txt; the list
    holds only notebooks that exist and have no catalog (so it must be emptied as they come)."""
    listed = editions.untranslated(LANG, ROOT)
    sources = {_rel(s) for s in SOURCES}
    translated = {_rel(s) for s in TRANSLATED}
    unlisted = sorted(sources - translated - set(listed))
    assert not unlisted, (f"no {LANG} catalog for {unlisted}: translate them (python -m helpers.editions extract "
                          "NOTEBOOK), or list them in i18n/zh-CN/untranslated.txt")
    done = sorted(set(listed) & translated)
    assert not done, f"these have a catalog now: remove them from i18n/zh-CN/untranslated.txt: {done}"
    unknown = sorted(set(listed) - sources)
    assert not unknown, f"i18n/zh-CN/untranslated.txt lists what is no English notebook: {unknown}"
    assert len(set(listed)) == len(listed), "i18n/zh-CN/untranslated.txt lists a notebook twice"


def test_no_catalog_without_its_notebook() -> None:
    """Every catalog belongs to an English notebook that exists (a renamed lesson leaves none behind)."""
    catalogs = sorted((ROOT / "i18n" / LANG).rglob("*.json"))
    expected = {editions.catalog_path(s, LANG, ROOT) for s in SOURCES}
    stray = [_rel(c) for c in catalogs if c not in expected]
    assert not stray, f"catalogs of no English notebook: {stray}"


@pytest.mark.parametrize("source", _maybe(TRANSLATED, "notebook"))
def test_catalog_matches_the_english(source: Path) -> None:
    """Every markdown cell translated from the English as it is now (hashes), nothing changed
    that must stay (code blocks, links, headings, exercise numbers), no orphan entry."""
    nb = nbformat.read(source, as_version=4)
    catalog = editions.load_catalog(editions.catalog_path(source, LANG, ROOT))
    found = editions.problems(nb, catalog, _rel(source))
    assert not found, "\n".join(str(p) for p in found)
    markdown = [c.id for c in nb.cells if c.cell_type == "markdown"]
    assert [e.id for e in catalog.entries] == markdown, f"{_rel(source)}: keep the catalog's entries in notebook order"


def test_committed_edition_is_what_the_catalogs_build() -> None:
    """`python -m helpers.editions check`: notebooks/zh-CN/ is exactly what build makes, and
    holds no notebook without a catalog."""
    problems = editions.check(LANG, root=ROOT)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source", _maybe(BUILT, "lesson"))
def test_edition_keeps_the_code(source: Path) -> None:
    """Read from the committed files: the same cells in the same order, each code cell
    identical (source, id, metadata, no outputs), each markdown cell's code blocks identical,
    the kernelspec kept, and the edition marked."""
    english = nbformat.read(source, as_version=4)
    path = editions.edition_path(source, LANG, ROOT)
    assert path is not None
    zh = nbformat.read(path, as_version=4)
    assert [(c.cell_type, c.id) for c in zh.cells] == [(c.cell_type, c.id) for c in english.cells]
    for i, (a, b) in enumerate(zip(english.cells, zh.cells)):
        if a.cell_type == "code":
            assert b == a, f"{_rel(path)} cell {i}: the code cell differs from the English one"
        else:
            assert editions.code_blocks(b.source) == editions.code_blocks(a.source), (
                f"{_rel(path)} cell {i}: a code block inside the markdown differs from the English")
            assert b.metadata == a.metadata, f"{_rel(path)} cell {i}: the markdown cell's metadata differs"
    assert zh.metadata.kernelspec == english.metadata.kernelspec
    assert zh.metadata.course["edition"] == {"language": LANG, "source": _rel(source)}
    assert {k: v for k, v in zh.metadata.items() if k != "course"} == \
        {k: v for k, v in english.metadata.items() if k != "course"}


@pytest.mark.parametrize("source", _maybe(BUILT, "lesson"))
def test_edition_exercises_are_found_as_in_english(source: Path) -> None:
    """The exercise runner (tests/lesson_cells.py) reads the zh-CN lesson's own markdown: it
    must find the same exercises at the same cells, the same solution code and closing
    cells, and no structure problem the English lesson does not have."""
    english = nbformat.read(source, as_version=4)
    path = editions.edition_path(source, LANG, ROOT)
    assert path is not None
    zh = nbformat.read(path, as_version=4)
    assert lesson_cells.takes_part(zh) == lesson_cells.takes_part(english)
    (theirs, their_problems), (mine, my_problems) = lesson_cells.exercises(english), lesson_cells.exercises(zh)
    where = [(e.number, e.heading, e.exercise, e.check, e.solution) for e in theirs]
    assert [(e.number, e.heading, e.exercise, e.check, e.solution) for e in mine] == where, (
        f"{_rel(path)}: the runner finds other exercises than in {_rel(source)}")
    assert my_problems == their_problems
    assert lesson_cells.closing_cells(zh) == lesson_cells.closing_cells(english)
    if lesson_cells.takes_part(english):
        assert lesson_cells.structure_problems(zh) == lesson_cells.structure_problems(english) == []
        assert all(e.solution for e in mine), f"{_rel(path)}: an exercise whose solution the runner cannot read"


def test_exercise_words_of_an_edition() -> None:
    """lesson_cells reads "### 练习 N：" as well as "### Exercise N: ", and a solution block
    summarised "查看参考答案" as well as "Show a solution"; nothing else."""
    def heading(text: str) -> tuple[int, str] | None:
        m = lesson_cells.HEADING.search(text)
        return (int(m[1] or m[2]), m[3]) if m else None

    assert heading("### Exercise 2: 手写 writen()") == (2, "手写 writen()")
    assert heading("### 练习 2：手写 writen()") == (2, "手写 writen()")
    assert heading("### 练习 2: writen()") == (2, "writen()")
    assert heading("### Exercise2: writen()") is None and heading("## 练习 2：writen()") is None
    assert lesson_cells.SOLUTION.search(ZH_SOLUTION)[1] == "def f():\n    return 42\n"
    assert lesson_cells.SOLUTION.search(SOLUTION)[1] == "def f():\n    return 42\n"
    assert lesson_cells.SOLUTION.search(ZH_SOLUTION.replace("查看参考答案", "答案")) is None


def _file(folder: Path, target: str) -> Path | None:
    """The file a link target names from `folder`; None for a URL or an anchor."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
        return None
    return Path(os.path.normpath(folder / re.split(r"[#?]", target)[0]))


@pytest.mark.parametrize("source", _maybe(BUILT, "lesson"))
def test_edition_links_resolve(source: Path) -> None:
    """Read from the committed files, cell by cell: each English link that resolves from
    notebooks/ has a zh-CN link that resolves from notebooks/zh-CN/ to the same file, or to
    the zh-CN lesson or glossary when there is one; URLs are kept as they are."""
    path = editions.edition_path(source, LANG, ROOT)
    assert path is not None
    english, zh = nbformat.read(source, as_version=4), nbformat.read(path, as_version=4)
    broken = []
    for i, (a, b) in enumerate(zip(english.cells, zh.cells)):
        if a.cell_type != "markdown":
            continue
        theirs = editions.links(b.source)
        reached = {_file(EDITION, t) for t in theirs}
        for target in editions.links(a.source):
            file = _file(source.parent, target)
            if file is None:
                if target not in theirs:
                    broken.append(f"cell {i}: {target} is gone")
                continue
            if not file.exists():
                continue  # broken in English too: not the edition's doing
            mine = EDITION / file.name
            want = mine if file.parent == source.parent and mine.exists() else file
            if want not in reached:
                broken.append(f"cell {i}: {target} should lead to {want.relative_to(ROOT)}, the links reach "
                              f"{sorted(str(r) for r in reached if r)}")
    assert not broken, f"{_rel(path)}: " + "; ".join(broken)


@pytest.mark.parametrize("path", sorted(EDITION.glob("*.ipynb")) or [None],
                         ids=[p.name for p in sorted(EDITION.glob("*.ipynb"))] or ["none"])
def test_edition_notebooks_are_clean(path: Path | None) -> None:
    """Committed without outputs or execution counts, with the python3 kernelspec, like the English."""
    if path is None:
        pytest.skip("no zh-CN lesson built yet")
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run python -m helpers.editions build"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def _glossary_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return rows[1:]  # without the header


def test_glossary_in_both_languages() -> None:
    """The zh-CN glossary has a row for every English term, with the original course's
    Chinese term that the English glossary gives; the two link to each other."""
    english = {row[0]: row[1] for row in _glossary_rows((ROOT / "notebooks" / "glossary.md").read_text())}
    zh = {row[1]: row[0] for row in _glossary_rows((EDITION / "glossary.md").read_text())}
    missing = sorted(set(english) - set(zh))
    assert not missing, f"notebooks/zh-CN/glossary.md has no row for {missing}"
    differ = []
    for term, chinese in english.items():
        words = [w.strip() for w in re.split(r"[/()（）]", chinese) if w.strip()]
        if not all(w in zh[term] for w in words):
            differ.append(f"{term}: English glossary {chinese!r}, zh-CN glossary {zh[term]!r}")
    assert not differ, "the Chinese terms differ:\n" + "\n".join(differ)
    assert "粘包" in "".join(zh.values()) and "TCP 是字节流" in (EDITION / "glossary.md").read_text()
    assert "(zh-CN/glossary.md)" in (ROOT / "notebooks" / "glossary.md").read_text()
    assert "(../glossary.md)" in (EDITION / "glossary.md").read_text()


def test_readme_zh_cn() -> None:
    """README.zh-CN.md, linked from the top of README.md: the same two commands, a Binder badge
    that opens the zh-CN start-here, and links that resolve (to a zh-CN lesson, once it is
    translated: until then its line in untranslated.txt excuses it)."""
    readme = (ROOT / "README.md").read_text()
    assert "[简体中文](README.zh-CN.md)" in "\n".join(readme.splitlines()[:4]), "link README.zh-CN.md at the top"
    zh = (ROOT / "README.zh-CN.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", zh, flags=re.S)
    commands = [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if line.startswith("./course")]
    assert commands == ["./course lab", "./course test"]
    assert "urlpath=lab/tree/notebooks/zh-CN/00-start-here.ipynb" in zh
    waiting = {f"notebooks/{LANG}/{Path(p).name}" for p in editions.untranslated(LANG, ROOT)}
    if not (ROOT / "notebooks" / "00-start-here.ipynb").exists():
        waiting.add(f"notebooks/{LANG}/00-start-here.ipynb")  # until the English start-here lands (issue 18)
    targets = re.findall(r"\]\(((?:notebooks|labs|docs)/[^)#]+|README\.md|CONTRIBUTING\.md)\)", zh)
    missing = [t for t in targets if not (ROOT / t).exists() and t not in waiting]
    assert not missing, f"README.zh-CN.md links to missing files: {missing}"
    lessons = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb") if not p.name.startswith("00"))
    linked = sorted(Path(t).name for t in targets if t.startswith(f"notebooks/{LANG}/") and t.endswith(".ipynb"))
    assert [n for n in linked if not n.startswith("00")] == lessons, "README.zh-CN.md's table lists every lesson"


# --- the edition runs from its own folder (the economy above) ------------------------------

def _calls_naming_lesson_files(source: str) -> list[tuple[str, str]]:
    """(function name, path) for each call whose first argument is a str or f-string naming a
    path under the lessons' folder (its first part exists in notebooks/, e.g. recorded/)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        arg = node.args[0]
        if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
            text = str(arg.values[0].value)
        elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            text = arg.value
        else:
            continue
        first = re.match(r"^([\w.-]+)/", text)  # a relative path's first folder
        if first and (ROOT / "notebooks" / first[1]).is_dir():
            func = node.func
            found.append((func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "?"), text))
    return found


def test_lessons_read_their_files_through_helpers_that_find_them_from_any_edition() -> None:
    """Every call in a lesson's code that names a file relative to the notebook's folder is a
    loader that resolves it from notebooks/zh-CN/ too; and there are such calls (the scan works)."""
    calls, wrong = [], []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                for name, text in _calls_naming_lesson_files(cell.source):
                    calls.append(name)
                    if name not in LOADERS:
                        wrong.append(f"{path.name}: {name}({text!r}...)")
    assert calls, "found no lesson reading a recording: the scan is broken"
    assert not wrong, ("these read a file relative to the notebook's folder, which a zh-CN lesson (run from "
                       f"notebooks/zh-CN/) does not have: resolve it with helpers.core.lessonfiles: {wrong}")


def test_recordings_load_from_the_edition_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From an edition's folder, where no recorded/ exists, each loader reads the lessons'
    recordings; a name that exists nowhere fails naming both places looked at."""
    from helpers import addresses, capture, completion, nagle, timewait, tools
    from helpers.core import features

    edition = tmp_path / "notebooks" / LANG
    edition.mkdir(parents=True)
    monkeypatch.chdir(edition)
    assert not Path("recorded").exists()
    handshake = capture.load_recording("recorded/02-tcp-handshake.json")
    assert len(handshake) > 0 and not handshake.live
    assert not nagle.load_recording("recorded/10-nagle-and-delayed-ack-reno.json").live
    assert timewait.load_window_runs("recorded/07-ports.json")
    assert not tools.load_recording("recorded/06-tools-ping.json").live
    assert not completion.load_recording("recorded/18-async-io.json").live
    with features.pretend_missing("ipv6"):
        assert not addresses.run_or_replay(lambda: None, "recorded/01-sockets-and-addresses.json", "exchange").live
    for name in sorted(p.name for p in (ROOT / "notebooks" / "recorded").glob("*.json")):
        assert lessonfiles.lesson_file(f"recorded/{name}") == ROOT / "notebooks" / "recorded" / name
    with pytest.raises(FileNotFoundError, match=r"^no file 'recorded/none\.json': looked in .*/zh-CN \(the "
                                                r"working folder\) and in .*/notebooks \(the course's lessons\)$"):
        lessonfiles.lesson_file("recorded/none.json")
    (edition / "recorded").mkdir()
    (edition / "recorded" / "02-tcp-handshake.json").write_text("{}")
    assert lessonfiles.lesson_file("recorded/02-tcp-handshake.json") == Path("recorded/02-tcp-handshake.json")
    with pytest.raises(TypeError, match=r"^path must be a file name \(str or pathlib\.Path\), got ''$"):
        lessonfiles.lesson_file("")


def _most_file_reads() -> Path | None:
    """The built zh-CN lesson whose code reads the most files relative to its folder."""
    counts = {}
    for source in BUILT:
        cells = nbformat.read(source, as_version=4).cells
        counts[source] = sum(len(_calls_naming_lesson_files(c.source)) for c in cells if c.cell_type == "code")
    return max(counts, key=lambda s: (counts[s], s.name)) if counts else None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_edition_notebook_runs_from_its_folder() -> None:
    """The zh-CN lesson that reads the most files relative to its folder runs under the
    notebook runner from notebooks/zh-CN/: every cell, its exercise checks (stub, solution,
    a plausible mistake, closing cells with the controls moved), no leftovers."""
    source = _most_file_reads()
    if source is None:
        pytest.skip("no zh-CN lesson built yet")
    path = editions.edition_path(source, LANG, ROOT)
    assert path is not None
    run = run_notebook(path)
    left = {k: v for k, v in run.leftovers.items() if v}
    assert not left, f"{path.name} left things behind: {left}"
    assert not run.problems(), "\n".join(run.problems())
    found, _ = lesson_cells.exercises(nbformat.read(source, as_version=4))
    if found:
        assert run.practice, "the exercise checks did not run on the zh-CN lesson"
        ran = {(s["kind"], s["exercise"]) for s in run.practice["steps"]}
        assert ran >= {(kind, e.number) for e in found for kind in ("solution", "mistake")}, (
            f"not every exercise's solution and mistake ran on the zh-CN lesson: {sorted(ran)}")
    steps = len(run.practice["steps"]) if run.practice else 0
    print(f"{_rel(path)}: {run.seconds:.1f} s from notebooks/{LANG}/, {steps} exercise steps")


# --- the builder, on a course of its own -----------------------------------------------------

def _notebook(path: Path, cells: list[tuple[str, str, str]], **metadata: object) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata.update(metadata)
    for kind, cell_id, source in cells:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(source)
        cell.id = cell_id
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return nb


SOLUTION = "<details><summary>Show a solution</summary>\n\n```python\ndef f():\n    return 42\n```\n\n</details>"
ZH_SOLUTION = "<details><summary>查看参考答案</summary>\n\n```python\ndef f():\n    return 42\n```\n\n</details>"


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course of two lessons and a lab, the first lesson translated into zh-CN."""
    _notebook(tmp_path / "notebooks" / "01-first.ipynb", [
        ("markdown", "title", "# 01 · First\n\nSee the [glossary](glossary.md) and [lesson 2](02-second.ipynb#top)."),
        ("code", "imports", "import helpers as h\nh.start_lesson('01')"),
        ("markdown", "ex", "### Exercise 1: answer\n\nWrite `f()`; the [lab](../labs/01-lab.ipynb) waits."),
        ("code", "stub", "def f():\n    ..."),
        ("markdown", "sol", SOLUTION),
        ("markdown", "end", "## Where next\n\n[RFC 9293](https://www.rfc-editor.org/rfc/rfc9293) and `[not](a.md)`."),
    ], course={"allow_non_loopback_bind": True})
    _notebook(tmp_path / "notebooks" / "02-second.ipynb", [("markdown", "t2", "# 02 · Second"), ("code", "c", "1")])
    _notebook(tmp_path / "labs" / "01-lab.ipynb", [
        ("markdown", "l", "# Lab 1\n\nAfter [01](../notebooks/01-first.ipynb)."), ("code", "k", "x = 1")])
    (tmp_path / "notebooks" / "glossary.md").write_text("# Glossary\n")
    (tmp_path / "notebooks" / LANG).mkdir()
    (tmp_path / "notebooks" / LANG / "glossary.md").write_text("# 术语表\n")
    editions.extract(tmp_path / "notebooks" / "01-first.ipynb", LANG, root=tmp_path)
    _translate(tmp_path, "01-first", {
        "title": "# 01 · 第一课\n\n参见[术语表](glossary.md)和[第二课](02-second.ipynb#top)。",
        "ex": "### 练习 1：答案\n\n写出 `f()`；[实验](../labs/01-lab.ipynb)在等你。",
        "sol": ZH_SOLUTION,
        "end": "## 下一步\n\n[RFC 9293](https://www.rfc-editor.org/rfc/rfc9293) 和 `[not](a.md)`。",
    })
    return tmp_path


def _translate(root: Path, stem: str, texts: dict[str, str], lab: bool = False) -> Path:
    path = root / "i18n" / LANG / ("labs" if lab else "") / f"{stem}.json"
    data = json.loads(path.read_text())
    for cell in data["cells"]:
        cell["text"] = texts.get(cell["id"], cell["text"])
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    return path


def test_build_replaces_markdown_and_keeps_everything_else(course: Path) -> None:
    english = nbformat.read(course / "notebooks" / "01-first.ipynb", as_version=4)
    written = editions.build(LANG, root=course)
    assert written == [course / "notebooks" / LANG / "01-first.ipynb"]
    zh = nbformat.read(written[0], as_version=4)
    assert [c.id for c in zh.cells] == [c.id for c in english.cells]
    assert [c for c in zh.cells if c.cell_type == "code"] == [c for c in english.cells if c.cell_type == "code"]
    assert zh.cells[0].source == "# 01 · 第一课\n\n参见[术语表](glossary.md)和[第二课](../02-second.ipynb#top)。"
    assert zh.cells[2].source == "### 练习 1：答案\n\n写出 `f()`；[实验](../../labs/01-lab.ipynb)在等你。"
    assert zh.cells[4].source == ZH_SOLUTION
    assert zh.cells[5].source.endswith("[RFC 9293](https://www.rfc-editor.org/rfc/rfc9293) 和 `[not](a.md)`。")
    assert zh.metadata.course == {"allow_non_loopback_bind": True,
                                  "edition": {"language": LANG, "source": "notebooks/01-first.ipynb"}}
    assert zh.metadata.kernelspec == english.metadata.kernelspec
    assert editions.check(LANG, root=course) == []


def test_links_lead_to_the_edition_once_it_has_the_lesson(course: Path) -> None:
    """Lesson 02's link leads to the English one until 02 has a catalog, then to the zh-CN one;
    `check` says the committed 01 is out of date in between."""
    editions.build(LANG, root=course)
    editions.extract(course / "notebooks" / "02-second.ipynb", LANG, root=course)
    _translate(course, "02-second", {"t2": "# 02 · 第二课"})
    assert editions.check(LANG, root=course) == [
        "notebooks/zh-CN/01-first.ipynb is not what its catalog builds (first difference at cell 0, id title): run "
        "python -m helpers.editions build, never edit it by hand",
        "notebooks/zh-CN/02-second.ipynb is missing: run python -m helpers.editions build"]
    editions.build(LANG, root=course)
    zh = nbformat.read(course / "notebooks" / LANG / "01-first.ipynb", as_version=4)
    assert "[第二课](02-second.ipynb#top)" in zh.cells[0].source
    assert editions.check(LANG, root=course) == []


def test_a_changed_english_cell_is_stale_and_named(course: Path) -> None:
    path = course / "notebooks" / "01-first.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source += " Now longer."
    nbformat.write(nb, path)
    with pytest.raises(editions.EditionError) as caught:
        editions.build(LANG, root=course)
    assert str(caught.value) == (
        "notebooks/01-first.ipynb: the zh-CN catalog cannot be used (--allow-stale builds a draft despite missing "
        "or stale cells):\n  notebooks/01-first.ipynb cell 0 (id title): stale: the English '# 01 · First' changed "
        f"since it was translated; translate it again and set source_sha256 to {editions.sha256(nb.cells[0].source)}")
    assert not (course / "notebooks" / LANG / "01-first.ipynb").exists(), "nothing is written when a build fails"
    assert editions.check(LANG, root=course) == [str(caught.value)], "the test of the committed edition names it too"
    editions.build(LANG, root=course, allow_stale=True)  # a draft keeps the old translation
    zh = nbformat.read(course / "notebooks" / LANG / "01-first.ipynb", as_version=4)
    assert zh.cells[0].source.startswith("# 01 · 第一课")
    assert [str(p) for p in editions.problems(nb, editions.load_catalog(
        course / "i18n" / LANG / "01-first.json"), "01")][0].startswith("01 cell 0 (id title): stale:")


def test_missing_and_orphan_cells(course: Path) -> None:
    """A new English cell is missing (a draft shows its English); a removed one leaves an
    orphan entry, which extract keeps, so no translation is lost."""
    path = course / "notebooks" / "01-first.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[5].id = "end2"
    nbformat.write(nb, path)
    catalog = editions.load_catalog(course / "i18n" / LANG / "01-first.json")
    found = [(p.kind, p.cell_id) for p in editions.problems(nb, catalog, "01")]
    assert found == [("missing", "end2"), ("orphan", "end")]
    path_, added = editions.extract(path, LANG, root=course)
    assert added == 1
    ids = [e.id for e in editions.load_catalog(path_).entries]
    assert ids == ["title", "ex", "sol", "end2", "end"]
    editions.build(LANG, root=course, allow_stale=True)
    zh = nbformat.read(course / "notebooks" / LANG / "01-first.ipynb", as_version=4)
    assert zh.cells[5].source.startswith("## Where next")


@pytest.mark.parametrize(("cell", "text", "kind"), [
    ("sol", ZH_SOLUTION.replace("return 42", "return 41"), "code"),
    ("title", "# 01 · 第一课\n\n参见术语表。", "links"),
    ("end", "### 下一步", "headings"),
    ("ex", "### 练习 2：答案\n\n写出 `f()`；[实验](../labs/01-lab.ipynb)。", "exercise"),
    ("sol", ZH_SOLUTION.replace("查看参考答案", "答案"), "solution"),
])
def test_translation_that_changes_what_must_stay_is_refused(course: Path, cell: str, text: str, kind: str) -> None:
    """Code blocks, links, headings, exercise numbers and solution blocks the exercise runner
    can find stay as in English, drafts included."""
    _translate(course, "01-first", {cell: text})
    with pytest.raises(editions.EditionError, match=rf"cell \d \(id {cell}\): {kind}: "):
        editions.build(LANG, root=course, allow_stale=True)


def test_catalog_shape_errors_name_the_file(course: Path) -> None:
    path = course / "i18n" / LANG / "01-first.json"
    path.write_text('{"notebook": "notebooks/01-first.ipynb", "language": "zh-CN", "cells": [{"id": 1}]}')
    with pytest.raises(editions.EditionError, match=r"01-first\.json: cells\[0\] must have the strings 'id', "
                                                    r"'source_sha256' and 'text', got \{'id': 1\}$"):
        editions.build(LANG, root=course)
    path.write_text('{"notebook": "notebooks/02-second.ipynb", "language": "zh-CN", "cells": []}')
    with pytest.raises(editions.EditionError, match=r"says notebook 'notebooks/02-second\.ipynb' in 'zh-CN', but "
                                                    r"sits where the catalog of 'notebooks/01-first\.ipynb'"):
        editions.build(LANG, root=course)
    with pytest.raises(ValueError, match=r"^unknown edition language 'fr'; the editions are: zh-CN$"):
        editions.build("fr", root=course)


def test_lab_release_in_chinese(course: Path) -> None:
    """release --lang zh-CN: the lab's markdown from its catalog, links to the zh-CN lessons;
    a lab without a catalog is refused, naming it."""
    from helpers.labs import release
    from helpers.labs.source import Lab, LabError

    lab_path = course / "labs" / "01-lab.ipynb"
    lab = Lab(lab_path, nbformat.read(lab_path, as_version=4))
    with pytest.raises(LabError, match=r"^01-lab cannot be released in zh-CN: labs/01-lab\.ipynb has no zh-CN "
                                       r"catalog \(i18n/zh-CN/labs/01-lab\.json\); make one with: python -m "
                                       r"helpers\.editions extract labs/01-lab\.ipynb$"):
        release.translated(lab, LANG)
    editions.extract(lab_path, LANG, root=course)
    _translate(course, "01-lab", {"l": "# 实验 1\n\n学完[第 01 课](../notebooks/01-first.ipynb)之后做。"}, lab=True)
    zh = release.translated(lab, LANG)
    assert zh.nb.cells[0].source == "# 实验 1\n\n学完[第 01 课](../notebooks/zh-CN/01-first.ipynb)之后做。"
    assert zh.nb.cells[1] == lab.nb.cells[1]
    assert zh.fingerprint() != lab.fingerprint() and zh.tests == lab.tests


def test_command_line(course: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """stale lists what to translate and exits 1; build writes; check exits 0 once in sync; a
    broken catalog is one 'error:' paragraph and exit status 2. (`main` in this process, each
    start of Python costs seconds; one real ``python -m helpers.editions`` at the end.)"""
    monkeypatch.chdir(course)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        code = editions.main(["--root", str(course), *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    stale = run("stale")
    assert stale.returncode == 1
    assert stale.stdout.splitlines() == [
        "notebooks/02-second.ipynb: no zh-CN catalog yet "
        "(python -m helpers.editions extract notebooks/02-second.ipynb)",
        "labs/01-lab.ipynb: no zh-CN catalog yet (python -m helpers.editions extract labs/01-lab.ipynb)"]
    assert run("build").stdout == "built notebooks/zh-CN/01-first.ipynb\n"
    done = run("check")
    assert (done.returncode, done.stdout) == (0, "zh-CN: nothing to do\n")
    extracted = run("extract", "notebooks/02-second.ipynb")
    assert extracted.stdout == "i18n/zh-CN/02-second.json: 1 new cell(s) to translate\n"
    shown = run("stale", "--show", "notebooks/02-second.ipynb")
    assert shown.stdout.splitlines() == ["notebooks/02-second.ipynb cell 0 (id t2): missing: no translation of "
                                         "'# 02 · Second'", "    | # 02 · Second"]
    broken = run("build")
    assert broken.returncode == 2 and broken.stdout == ""
    assert broken.stderr.startswith("error: notebooks/02-second.ipynb: the zh-CN catalog cannot be used")
    assert run("build", "README.md").stderr == "error: README.md is not an English notebook (notebooks/NN-*.ipynb " \
                                               "or labs/NN-*.ipynb)\n"
    real = subprocess.run([sys.executable, "-m", "helpers.editions", "--root", str(course), "check"],
                          capture_output=True, text=True, cwd=course, timeout=60)
    assert (real.returncode, real.stderr) == (1, ""), real.stderr
    assert "notebooks/02-second.ipynb cell 0 (id t2): missing: no translation of '# 02 · Second'" in real.stdout


def test_links_and_code_blocks_are_read_from_prose_only() -> None:
    text = ("See [a](a.md), ![b](img/b.png \"B\"), <a href=\"c.html\">c</a>, `[d](d.md)`.\n\n"
            "```python\nprint('[e](e.md)')\n```\n\n[ref]: f.md\n~~~\n[g](g.md)\n~~~~\n")
    assert editions.links(text) == ["a.md", "img/b.png", "c.html", "f.md"]
    assert editions.code_blocks(text) == ["```python\nprint('[e](e.md)')\n```", "~~~\n[g](g.md)\n~~~~"]
    assert os.path.basename(editions.catalog_path(ROOT / "labs" / "01-echo.ipynb", LANG, ROOT)) == "01-echo.json"
