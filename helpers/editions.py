"""Editions: the course in another language, built from the English notebooks and translation catalogs.

Theory of operation. English is the source: a lesson (``notebooks/NN-*.ipynb``) or a lab
(``labs/NN-*.ipynb``) is written once, and code is never translated nor copied by hand. An
edition in language L (``zh-CN``) is a set of catalogs, ``i18n/L/<stem>.json`` for a lesson
and ``i18n/L/labs/<stem>.json`` for a lab, each holding one entry per markdown cell::

    {"notebook": "notebooks/03-reading-and-writing.ipynb", "language": "zh-CN",
     "cells": [{"id": "<cell id>", "source_sha256": "<sha256 of the English source>",
                "text": "<the translation>"}]}

* ``problems()`` holds a catalog against the English notebook as it is now: a markdown cell
  without a translation (*missing*), one whose English changed since it was translated
  (*stale*: the hash differs), an entry for a cell that is gone or no longer markdown
  (*orphan*), and a translation that changed what must stay as it is (*code*: the fenced
  code blocks, byte for byte; *links*: the link targets; *headings*: their levels;
  *exercise*: the exercise numbers; *solution*: the solution blocks the exercise runner
  finds by their summary line).
* ``build_notebook()`` refuses a catalog with any problem (``allow_stale`` builds a draft
  despite missing, stale and orphan entries: the English, or the old translation, stays).
  It copies the English notebook, replaces each markdown cell's source by its translation
  with the links rewritten to resolve from the edition's folder (a lesson's link to another
  lesson or to the glossary points at the edition's own when there is one, anything else
  one folder up), and records ``metadata.course.edition`` = {language, source}. Code cells,
  cell ids, tags, the kernelspec and the rest of the metadata stay byte for byte.
* Lessons are committed built (``notebooks/L/NN-*.ipynb``, by ``build``), so Binder, a hub
  and a download open them directly; ``check`` says whether they are what the catalogs make.
  Labs are translated when released (``python -m helpers.labs release --lang L`` calls
  ``translate()``), never committed twice.

Command line (maintainers and translators): ``python -m helpers.editions
build|check|stale|extract`` (``--help``). A lesson's code finds its files from the
edition's folder through ``helpers.core.lessonfiles``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import posixpath
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["LANGUAGES", "SOLUTION_EN", "SOLUTION_SUMMARIES",
           "ROOT", "EditionError", "Entry", "Catalog", "Problem", "sources", "catalog_path",
           "edition_path", "load_catalog", "problems", "translate", "build_notebook", "build", "check",
           "extract", "untranslated", "sha256", "code_blocks", "links", "main"]

#: The course folder: ``notebooks/``, ``labs/`` and ``i18n/`` beside this package.
ROOT = Path(__file__).resolve().parent.parent

#: The editions there are, and the word a translated exercise heading may use instead of
#: "Exercise" (``### 练习 1：...`` as well as ``### Exercise 1: ...``).
LANGUAGES: dict[str, str] = {"zh-CN": "练习"}

#: A solution block's summary line in English (``<details><summary>Show a solution</summary>``)
#: and the words an edition may use instead; tests/lesson_cells.py finds solutions by either.
SOLUTION_EN = "Show a solution"
SOLUTION_SUMMARIES: dict[str, str] = {"zh-CN": "查看参考答案"}

#: Kinds of problem a draft (``allow_stale``) may be built with.
DRAFT_KINDS = frozenset({"missing", "stale", "orphan"})

_EXERCISE_EN = re.compile(r"^### Exercise (\d+): ", re.M)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CLOSING = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target "title") and ![alt](target); <a href="...">, <img src="...">; [id]: target
_MD_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
_REF_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:\s|$)")


class EditionError(Exception):
    """A catalog or an edition that cannot be used; the message names the file, the cell and the fix."""


def sha256(source: str) -> str:
    """The hash a catalog keeps of an English cell: sha256 of its source as nbformat gives it."""
    return hashlib.sha256(source.encode()).hexdigest()


def _language(language: str) -> str:
    if not isinstance(language, str) or language not in LANGUAGES:
        raise ValueError(f"unknown edition language {language!r}; the editions are: {', '.join(LANGUAGES)}")
    return language


def _rel(path: Path, root: Path) -> str:
    """`path` relative to the course folder, with '/' (as catalogs and links name it)."""
    return path.resolve().relative_to(root.resolve()).as_posix()


# --- where things are -------------------------------------------------------------------------

def sources(root: Path = ROOT) -> list[Path]:
    """Every English notebook an edition translates: the lessons (00-start-here included), then the labs."""
    return sorted((root / "notebooks").glob("[0-9][0-9]-*.ipynb")) + sorted((root / "labs").glob("[0-9][0-9]-*.ipynb"))


def _is_lab(source: Path, root: Path) -> bool:
    return _rel(source, root).startswith("labs/")


def catalog_path(source: Path, language: str, root: Path = ROOT) -> Path:
    """``i18n/L/<stem>.json`` for a lesson, ``i18n/L/labs/<stem>.json`` for a lab."""
    folder = root / "i18n" / _language(language)
    return (folder / "labs" if _is_lab(source, root) else folder) / f"{source.stem}.json"


def edition_path(source: Path, language: str, root: Path = ROOT) -> Path | None:
    """Where the built lesson is committed (``notebooks/L/<name>``); None for a lab (released, not committed)."""
    return None if _is_lab(source, root) else root / "notebooks" / _language(language) / source.name


def _edition_dir(source: Path, language: str, root: Path) -> Path:
    """The folder the translated notebook lives in: notebooks/L/ for a lesson; a released lab
    keeps the labs' place (labs/)."""
    return root / "labs" if _is_lab(source, root) else root / "notebooks" / language


# --- catalogs ---------------------------------------------------------------------------------

@dataclass
class Entry:
    """One markdown cell's translation: the cell id, the hash of the English it was made from, the text."""

    id: str
    source_sha256: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "source_sha256": self.source_sha256, "text": self.text}


@dataclass
class Catalog:
    """A notebook's translations into one language (the module comment gives the format)."""

    path: Path
    notebook: str
    language: str
    entries: list[Entry] = field(default_factory=list)

    def by_id(self) -> dict[str, Entry]:
        return {e.id: e for e in self.entries}

    def to_json(self) -> str:
        """The catalog as committed: UTF-8 JSON, one-space indent, a final newline."""
        data = {"notebook": self.notebook, "language": self.language, "cells": [e.to_json() for e in self.entries]}
        return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def load_catalog(path: Path) -> Catalog:
    """Read and check the shape of a catalog; EditionError naming the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EditionError(f"{path}: not a readable JSON catalog: {exc}") from exc
    if not isinstance(data, dict) or not {"notebook", "language", "cells"} <= set(data):
        raise EditionError(f"{path}: a catalog is an object with 'notebook', 'language' and 'cells'")
    if not isinstance(data["cells"], list):
        raise EditionError(f"{path}: 'cells' must be a list of {{id, source_sha256, text}}")
    entries, seen = [], set()
    for n, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or not all(isinstance(cell.get(k), str) for k in ("id", "source_sha256", "text")):
            raise EditionError(f"{path}: cells[{n}] must have the strings 'id', 'source_sha256' and 'text', "
                               f"got {str(cell)[:120]}")
        if cell["id"] in seen:
            raise EditionError(f"{path}: cell id {cell['id']!r} appears twice; keep one entry per cell")
        seen.add(cell["id"])
        entries.append(Entry(cell["id"], cell["source_sha256"], cell["text"]))
    return Catalog(Path(path), str(data["notebook"]), str(data["language"]), entries)


def _catalog_for(source: Path, language: str, root: Path) -> Catalog | None:
    path = catalog_path(source, language, root)
    if not path.exists():
        return None
    catalog = load_catalog(path)
    want = _rel(source, root)
    if catalog.notebook != want or catalog.language != language:
        raise EditionError(f"{path}: says notebook {catalog.notebook!r} in {catalog.language!r}, but sits where "
                           f"the catalog of {want!r} in {language!r} belongs")
    return catalog


# --- what must stay the same in a translation -------------------------------------------------

def _segments(markdown: str) -> list[tuple[bool, str]]:
    """The text cut into (is a fenced code block, text) pieces, in order; a code piece holds
    its fences. An unclosed fence runs to the end, as in CommonMark."""
    pieces: list[tuple[bool, str]] = []
    current: list[str] = []
    fence = ""
    for line in markdown.splitlines(keepends=True):
        opened = _FENCE.match(line)
        if not fence and opened:
            pieces.append((False, "".join(current)))
            current, fence = [line], opened[1]
            continue
        current.append(line)
        closed = _CLOSING.match(line)
        if fence and closed and closed[1][0] == fence[0] and len(closed[1]) >= len(fence):
            pieces.append((True, "".join(current)))
            current, fence = [], ""
    pieces.append((bool(fence), "".join(current)))
    return [(code, text) for code, text in pieces if text]


def code_blocks(markdown: str) -> list[str]:
    """The fenced code blocks of a markdown text (```python ... ```), fences included, in order."""
    return [text.rstrip("\n") for code, text in _segments(markdown) if code]


def _prose(markdown: str) -> str:
    """The text outside code blocks and inline code: where links and headings are."""
    return _INLINE_CODE.sub("", "".join(text for code, text in _segments(markdown) if not code))


def links(markdown: str) -> list[str]:
    """Every link target in a markdown text (markdown and HTML links, images, references);
    the text of code blocks and inline code is skipped."""
    prose = _prose(markdown)
    return [m[1] for pattern in (_MD_LINK, _HTML_LINK, _REF_LINK) for m in pattern.finditer(prose)]


def _headings(markdown: str) -> list[int]:
    return [len(m[1]) for line in _prose(markdown).splitlines() if (m := _HEADING.match(line))]


def _exercises(markdown: str, language: str | None) -> list[int]:
    if language is None:
        return [int(n) for n in _EXERCISE_EN.findall(markdown)]
    pattern = rf"^### (?:Exercise|{re.escape(LANGUAGES[language])}) ?(\d+) ?[:：]"
    return [int(n) for n in re.findall(pattern, markdown, re.M)]


def _solutions(markdown: str, language: str | None) -> int:
    """How many solution blocks `markdown` has whose summary the exercise runner knows."""
    words = [SOLUTION_EN] if language is None else [SOLUTION_EN, SOLUTION_SUMMARIES[language]]
    summaries = "|".join(re.escape(w) for w in words)
    return len(re.findall(rf"<details>\s*<summary>(?:{summaries})</summary>\s*```python\n", markdown))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalog, at one cell (``index`` -1 for an orphan entry)."""

    notebook: str
    cell_id: str
    index: int
    kind: str
    detail: str

    def __str__(self) -> str:
        where = f"cell {self.index} (id {self.cell_id})" if self.index >= 0 else f"entry id {self.cell_id}"
        return f"{self.notebook} {where}: {self.kind}: {self.detail}"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 70 else line[:67] + "..."


def problems(nb: Any, catalog: Catalog, notebook: str) -> list[Problem]:
    """Everything that keeps `catalog` from translating `nb` (English, as it is now); the kinds
    are in the module comment. `notebook` names it in the messages."""
    found: list[Problem] = []
    entries = catalog.by_id()
    markdown_ids = set()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        markdown_ids.add(cell.id)
        entry = entries.get(cell.id)
        english = cell.source
        said = f"'{_first_line(english)}'"

        def report(kind: str, detail: str, cell_id: str = cell.id, index: int = index) -> None:
            found.append(Problem(notebook, cell_id, index, kind, detail))

        if entry is None or not entry.text.strip():
            report("missing", f"no translation of {said}")
            continue
        if entry.source_sha256 != sha256(english):
            report("stale", f"the English {said} changed since it was translated; translate it again and set "
                            f"source_sha256 to {sha256(english)}")
        if code_blocks(entry.text) != code_blocks(english):
            report("code", "the code blocks differ from the English; copy them byte for byte")
        if sorted(links(entry.text)) != sorted(links(english)):
            report("links", f"links to {sorted(links(entry.text))}, the English to {sorted(links(english))}; "
                            "write each link exactly as in English (the build rewrites them)")
        if _headings(entry.text) != _headings(english):
            report("headings", f"heading levels {_headings(entry.text)}, the English {_headings(english)}")
        if _exercises(entry.text, catalog.language) != _exercises(english, None):
            report("exercise", f"exercise headings {_exercises(entry.text, catalog.language)}, the English "
                               f"{_exercises(english, None)}; keep '### Exercise N: ' or write "
                               f"'### {LANGUAGES[catalog.language]} N：'")
        if _solutions(entry.text, catalog.language) != _solutions(english, None):
            report("solution", f"{_solutions(entry.text, catalog.language)} solution block(s) the exercise runner "
                               f"finds, the English {_solutions(english, None)}; keep '<details><summary>' right "
                               f"before the code and write '{SOLUTION_EN}' or "
                               f"'{SOLUTION_SUMMARIES[catalog.language]}' as the summary")
    for entry in catalog.entries:
        if entry.id not in markdown_ids:
            found.append(Problem(notebook, entry.id, -1, "orphan", "no markdown cell has this id any more; "
                                 f"move its translation '{_first_line(entry.text)}' to the cell that replaced it"))
    return found


# --- building ---------------------------------------------------------------------------------

def _counterpart(target: Path, language: str, root: Path) -> Path | None:
    """The edition's own copy of an English lesson or glossary `target` (repo path), when it has one."""
    if target.parent != root / "notebooks":
        return None
    mine = root / "notebooks" / language / target.name
    if mine.exists() and target.suffix != ".ipynb":
        return mine
    if target.suffix == ".ipynb" and catalog_path(target, language, root).exists():
        return mine  # built together with this one
    return None


def _rewrite(target: str, source: Path, language: str, root: Path) -> str:
    """A link of the English `source` rewritten to resolve from the edition's folder."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target  # a URL, an anchor in the same notebook, an absolute path
    path, rest = re.match(r"([^#?]*)(.*)", target, re.S).groups()  # rest: "#anchor" or "?query"
    english = Path(os.path.normpath(source.parent / path))
    goal = _counterpart(english, language, root) or english
    return posixpath.relpath(goal.as_posix(), _edition_dir(source, language, root).as_posix()) + rest


def _rewrite_links(markdown: str, source: Path, language: str, root: Path) -> str:
    """`markdown` with every link target in its prose rewritten by _rewrite(); code blocks
    and inline code stay byte for byte."""
    out = []
    for code, text in _segments(markdown):
        if code:
            out.append(text)
            continue
        last = 0
        for span in _INLINE_CODE.finditer(text):
            out += [_rewrite_targets(text[last:span.start()], source, language, root), span[0]]
            last = span.end()
        out.append(_rewrite_targets(text[last:], source, language, root))
    return "".join(out)


def _rewrite_targets(text: str, source: Path, language: str, root: Path) -> str:
    def swap(m: re.Match[str]) -> str:
        start, end = m.start(1) - m.start(), m.end(1) - m.start()
        return m[0][:start] + _rewrite(m[1], source, language, root) + m[0][end:]

    for pattern in (_MD_LINK, _HTML_LINK, _REF_LINK):
        text = pattern.sub(swap, text)
    return text


def translate(nb: Any, source: Path, language: str, *, root: Path = ROOT, allow_stale: bool = False) -> Any:
    """A copy of the English notebook `nb` (read from `source`) with its markdown in `language`,
    from its catalog; code cells, ids and metadata untouched, ``metadata.course.edition`` added.

    Raises EditionError naming the notebook, each cell and the fix when the catalog is missing
    or has problems (with `allow_stale`, missing, stale and orphan entries are let through:
    a missing cell keeps its English, a stale one its old translation).
    """
    language, root, source = _language(language), root.resolve(), source.resolve()
    notebook = _rel(source, root)
    catalog = _catalog_for(source, language, root)
    if catalog is None:
        where = catalog_path(source, language, root)
        if not allow_stale:
            raise EditionError(f"{notebook} has no {language} catalog ({_rel(where, root)}); make one with: "
                               f"python -m helpers.editions extract {notebook}")
        catalog = Catalog(where, notebook, language)
    found = problems(nb, catalog, notebook)
    blocking = [p for p in found if not (allow_stale and p.kind in DRAFT_KINDS)]
    if blocking:
        hint = "" if allow_stale else " (--allow-stale builds a draft despite missing or stale cells)"
        raise EditionError(f"{notebook}: the {language} catalog cannot be used{hint}:\n"
                           + "\n".join(f"  {p}" for p in blocking))
    out = copy.deepcopy(nb)
    entries = catalog.by_id()
    for cell in out.cells:
        if cell.cell_type == "markdown":
            entry = entries.get(cell.id)
            text = entry.text if entry is not None and entry.text.strip() else cell.source
            cell.source = _rewrite_links(text, source, language, root)
    course = dict(out.metadata.get("course", {}))
    course["edition"] = {"language": language, "source": notebook}
    out.metadata["course"] = course
    return out


def build_notebook(source: Path, language: str, *, root: Path = ROOT, allow_stale: bool = False) -> str:
    """The text of the edition of lesson `source` in `language`, as committed (nbformat's JSON)."""
    nb = nbformat.read(source, as_version=4)
    return _text(translate(nb, source, language, root=root, allow_stale=allow_stale))


def _text(nb: Any) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def _lessons_with_catalogs(language: str, root: Path, only: Iterable[Path] | None) -> list[Path]:
    chosen = [Path(p).resolve() for p in only] if only else None
    found = []
    for source in sources(root):
        if _is_lab(source, root) or (chosen is not None and source.resolve() not in chosen):
            continue
        if chosen is not None or catalog_path(source, language, root).exists():
            found.append(source)
    return found


def build(language: str, *, root: Path = ROOT, allow_stale: bool = False,
          only: Iterable[Path] | None = None) -> list[Path]:
    """Write ``notebooks/L/<name>`` for every lesson with a catalog (or those in `only`); the
    files written. Nothing is written unless every one of them builds (EditionError)."""
    texts = {edition_path(s, language, root): build_notebook(s, language, root=root, allow_stale=allow_stale)
             for s in _lessons_with_catalogs(language, root, only)}
    for path, text in texts.items():
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return [p for p in texts if p is not None]


def check(language: str, *, root: Path = ROOT) -> list[str]:
    """What keeps the committed edition from being exactly what the catalogs build: one
    sentence per lesson (a catalog problem, a file out of date, missing or left over)."""
    language = _language(language)
    out = []
    expected = set()
    for source in _lessons_with_catalogs(language, root, None):
        path = edition_path(source, language, root)
        assert path is not None
        expected.add(path.name)
        try:
            text = build_notebook(source, language, root=root)
        except EditionError as exc:
            out.append(str(exc))
            continue
        if not path.exists():
            out.append(f"{_rel(path, root)} is missing: run python -m helpers.editions build")
        elif path.read_text(encoding="utf-8") != text:
            out.append(f"{_rel(path, root)} is not what its catalog builds ({_first_difference(path, text)}): "
                       "run python -m helpers.editions build, never edit it by hand")
    for path in sorted((root / "notebooks" / language).glob("*.ipynb")):
        if path.name not in expected:
            out.append(f"{_rel(path, root)} has no catalog ({language}/{path.stem}.json) and no English "
                       "source with one: remove it, or add the catalog")
    return out


def _first_difference(path: Path, text: str) -> str:
    committed = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    built = nbformat.reads(text, as_version=4)
    for index, (a, b) in enumerate(zip(committed.cells, built.cells)):
        if a != b:
            return f"first difference at cell {index}, id {b.get('id')}"
    if len(committed.cells) != len(built.cells):
        return f"{len(committed.cells)} cells committed, {len(built.cells)} built"
    return "the metadata or the formatting differs"


# --- for translators --------------------------------------------------------------------------

def extract(source: Path, language: str, *, root: Path = ROOT) -> tuple[Path, int]:
    """Create or update the catalog of `source`: one entry per markdown cell, in notebook
    order. A new cell gets an empty text (it counts as missing) and the current hash; an
    existing entry is kept as it is (its hash too, so a changed English cell stays *stale*
    until translated again); entries for cells that are gone stay at the end (*orphan*), so
    no translation is lost. Returns (the catalog's path, how many new entries)."""
    language, root, source = _language(language), root.resolve(), source.resolve()
    nb = nbformat.read(source, as_version=4)
    path = catalog_path(source, language, root)
    old = _catalog_for(source, language, root) or Catalog(path, _rel(source, root), language)
    kept = old.by_id()
    entries, added = [], 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            if cell.id in kept:
                entries.append(kept.pop(cell.id))
            else:
                entries.append(Entry(cell.id, sha256(cell.source), ""))
                added += 1
    entries += [e for e in old.entries if e.id in kept]
    catalog = Catalog(path, old.notebook, language, entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(catalog.to_json(), encoding="utf-8")
    return path, added


def untranslated(language: str, root: Path = ROOT) -> list[str]:
    """The notebooks listed in ``i18n/L/untranslated.txt``: not translated yet, on purpose
    (one course path a line; '#' starts a comment). The sync test holds the list to the truth."""
    path = root / "i18n" / _language(language) / "untranslated.txt"
    if not path.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def stale_report(language: str, *, root: Path = ROOT, only: Iterable[Path] | None = None,
                 show: bool = False) -> list[str]:
    """One line per problem of each catalog (lessons and labs), and one per notebook without a
    catalog; with `show`, each missing or stale cell's current English below its line."""
    chosen = {Path(p).resolve() for p in only} if only else None
    out = []
    for source in sources(root):
        if chosen is not None and source.resolve() not in chosen:
            continue
        notebook = _rel(source, root)
        catalog = _catalog_for(source, language, root)
        if catalog is None:
            out.append(f"{notebook}: no {language} catalog yet (python -m helpers.editions extract {notebook})")
            continue
        nb = nbformat.read(source, as_version=4)
        for p in problems(nb, catalog, notebook):
            out.append(str(p))
            if show and p.index >= 0 and p.kind in ("missing", "stale"):
                out.append("    | " + nb.cells[p.index].source.replace("\n", "\n    | "))
    return out


# --- command line -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.editions",
                                     description="Build and check the course's editions in other languages.")
    parser.add_argument("--lang", default="zh-CN", choices=sorted(LANGUAGES), help="the edition (default zh-CN)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write notebooks/<lang>/ from the English lessons and their catalogs")
    b.add_argument("notebooks", nargs="*", type=Path, help="English lessons (default: every one with a catalog)")
    b.add_argument("--allow-stale", action="store_true", help="build drafts despite missing or stale cells")
    sub.add_parser("check", help="exit 1 unless notebooks/<lang>/ is exactly what the catalogs build")
    s = sub.add_parser("stale", help="list cells to translate (again), for lessons and labs")
    s.add_argument("notebooks", nargs="*", type=Path, help="English notebooks (default: all)")
    s.add_argument("--show", action="store_true", help="print the current English of each cell listed")
    e = sub.add_parser("extract", help="create or update catalogs: an entry for every markdown cell")
    e.add_argument("notebooks", nargs="+", type=Path, help="English lessons or labs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 when done and in sync, 1 when `check`/`stale` found
    something, 2 for an error (one 'error:' line, or the problems found)."""
    args = _parser().parse_args(argv)
    root = args.root.resolve()
    try:
        for path in getattr(args, "notebooks", []) or []:
            if not path.resolve().is_file() or path.suffix != ".ipynb":
                raise EditionError(f"{path} is not an English notebook (notebooks/NN-*.ipynb or labs/NN-*.ipynb)")
        if args.command == "build":
            for path in build(args.lang, root=root, allow_stale=args.allow_stale, only=args.notebooks or None):
                print(f"built {_rel(path, root)}")
            return 0
        if args.command == "check":
            found = check(args.lang, root=root)
        elif args.command == "stale":
            found = stale_report(args.lang, root=root, only=args.notebooks or None, show=args.show)
        else:
            for source in args.notebooks:
                path, added = extract(source.resolve(), args.lang, root=root)
                print(f"{_rel(path, root)}: {added} new cell(s) to translate")
            return 0
    except (EditionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in found:
        print(line)
    if not found:
        print(f"{args.lang}: nothing to do")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
