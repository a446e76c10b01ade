"""Every notebook, as a learner sees it: JupyterLab in Debian's chromium, Run All, a slider.

For each notebooks/*.ipynb: open it in a private JupyterLab (tests/browser_support.py),
wait until the status bar says the kernel is Idle, choose Run > Run All Cells, and wait
until every code cell has an execution count and the kernel is Idle again. Then check that
no cell raised, that every widget, plot and Mermaid diagram rendered, and that moving the
first slider one step (ArrowRight on its handle) changes what its cell shows. Screenshots
go to tests/artifacts/screenshots/<stem>-ran.png and <stem>-slider.png.

Facts this test relies on, seen with JupyterLab 4.6.6, ipywidgets 8.1.9 and chromium:
- the kernel is ready when the status bar reads "... | Idle" (the toolbar's indicator was
  seen to turn idle too early, and a Run All sent then was lost about one time in three).
- an error output renders exactly like stderr (`data-mime-type=application/vnd.jupyter.stderr`),
  so errors are read from the cell models (`window.jupyterapp`, output_type "error").
- a `text/vnd.mermaid` output renders as `figure[data-jp-mermaid-version] img` (an SVG image);
  one Mermaid cannot parse renders as `.jp-RenderedMermaid.jp-mod-warning` with the error.
- a widget closed by the kernel (tqdm's `leave=False`) leaves a hidden, empty output.
- a slider's handle is `.noUi-handle`; an arrow key moves it one step and, with
  continuous_update=False, sends the new value to the kernel at once.
- a Markdown cell's `<details><summary>Show a solution</summary>` block (blank lines around
  a ```python fence inside) renders as a closed `details` element, its code block hidden,
  and a click on the summary opens it: the exercises' solutions are one click away.

For a lesson with exercises, the test also checks that every check cell shows its answer
on the committed stub ("NOT DONE YET") and that every solution block is closed and opens.

The Simplified Chinese edition (notebooks/zh-CN/, tests/test_editions.py) is opened in a
JupyterLab whose interface is Chinese (the language pack, locale zh_CN, as a learner sets it
with Settings -> Language): its start-here notebook and two lessons (three lessons until the
start-here is translated). Each runs through the Chinese menus (运行 > 运行所有单元格) and is
checked exactly like an English one, in place of its English run: a lesson's code is the
same in both editions (tests/test_editions.py), so each lesson opens once, in one edition or
the other, and the edition costs no extra Run All. Then every Chinese character on the page (the lesson's text
and the interface's) is drawn with the page's own font list and compared with what the
browser draws for a character no font has (the "tofu" box): a character drawn like that, or
not drawn at all, is a missing glyph. A control character that no font has must come out
missing, so the check can fail. Which fonts really drew the text is read from Chromium
(CSS.getPlatformFontsForNode) and printed. Screenshots: zh-CN-<stem>-ran.png.

Environment: COURSE_NOTEBOOKS_DIR points at another notebooks folder (default
<repo>/notebooks); COURSE_REQUIRE_BROWSER=1 turns a missing chromium into a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, ZH_CN_SETTINGS, LabServer

from helpers.widgets import ERROR_CLASS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = Path(os.environ.get("COURSE_NOTEBOOKS_DIR", ROOT / "notebooks")).resolve()
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SCREENSHOTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"

TEST_TIMEOUT_S = 120  # pytest-timeout's hard stop for one notebook, start-up included
KERNEL_READY_S = 30  # page load until the status bar says Idle
RUN_ALL_S = 90  # Run All until every cell has run
RENDER_S = 20  # widgets, images and diagrams appear after the kernel is done
SLIDER_S = 30  # one slider step until its output has changed and the kernel is Idle
VIEWPORT = {"width": 1280, "height": 900}
MAX_SCREENSHOT_PX = 16_000  # chromium cannot capture much taller pages

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # each lesson in a real JupyterLab: tens of seconds

# The notebook panel showing PATH, found among the main area's widgets (not "current
# widget", which a dialog or a stray click can change).
_PANEL = """
(path) => {
  const app = window.jupyterapp;  // set once JupyterLab has started, not at page load
  if (!app || !app.shell) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path) return w;
  }
  return null;
}
"""

PANEL_ID_JS = f"(path) => {{ const p = ({_PANEL})(path); return p ? p.id : null; }}"

# Kernel status as the status bar shows it, and what the cell models say about the run.
RUN_STATE_JS = f"""
(path) => {{
  const panel = ({_PANEL})(path);
  const status = document.querySelector('#jp-main-statusbar [title^="Change kernel"]');
  const state = {{
    status: status ? status.textContent : '',
    found: !!panel,
    idle: !!panel && !!status && status.textContent.trim().endsWith('| Idle'),
    code: 0, pending: 0, errors: [], widgets: 0, mermaid: 0,
  }};
  if (!panel) return state;
  const cells = panel.content.model.cells;
  for (let i = 0; i < cells.length; i++) {{
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    state.code += 1;
    if (cell.executionCount === null) state.pending += 1;
    for (const out of cell.outputs.toJSON()) {{
      if (out.output_type === 'error') {{
        state.errors.push({{cell: i, ename: out.ename, evalue: out.evalue, traceback: out.traceback.join('\\n')}});
      }}
      const data = out.data || {{}};
      if ('application/vnd.jupyter.widget-view+json' in data) state.widgets += 1;
      if ('text/vnd.mermaid' in data) state.mermaid += 1;
    }}
  }}
  return state;
}}
"""

# What the page actually shows. Each widget output (the cell model's output j is the j-th
# child of the cell's output area) is "shown" (a .jupyter-widgets view), "closed" (hidden:
# its model was closed, as tqdm's leave=False does), "error" ("Error displaying widget")
# or still "loading"; a widget repr shown as plain text stays "loading" too. Diagrams and
# images are counted over the whole notebook, widget Output areas and Markdown included.
RENDER_STATE_JS = f"""
(path) => {{
  const panel = ({_PANEL})(path);
  const node = panel.node;
  const widgets = {{shown: 0, closed: 0, error: [], loading: []}};
  const cells = panel.content.model.cells;
  for (let i = 0; i < cells.length; i++) {{
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    const shown = panel.content.widgets[i].node.querySelectorAll(
      '.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output');
    cell.outputs.toJSON().forEach((out, j) => {{
      if (!('application/vnd.jupyter.widget-view+json' in (out.data || {{}}))) return;
      const el = shown[j];
      const text = el ? el.textContent.slice(0, 300) : '(no output element)';
      if (text.includes('Error displaying widget')) widgets.error.push(`cell ${{i}}: ${{text}}`);
      else if (el && el.querySelector(':scope > .jupyter-widgets')) widgets.shown += 1;
      else if (el && el.classList.contains('lm-mod-hidden')) widgets.closed += 1;
      else widgets.loading.push(`cell ${{i}}: ${{text}}`);
    }});
  }}
  const imgs = Array.from(node.querySelectorAll('.jp-OutputArea-output img'));
  const sliders = Array.from(node.querySelectorAll('.widget-slider'));
  return {{
    domCodeCells: node.querySelectorAll('.jp-CodeCell').length,
    widgets,
    sliders: sliders.length,
    slidersWithoutHandle: sliders.filter(s => !s.querySelector('.noUi-handle')).length,
    imagesLoading: imgs.filter(i => !i.complete).length,
    imagesBroken: imgs.filter(i => i.complete && i.naturalWidth === 0).length,
    mermaid: Array.from(node.querySelectorAll('figure[data-jp-mermaid-version] img'))
      .filter(i => i.complete && i.naturalWidth > 0).length,
    // A diagram Mermaid cannot parse shows its source and the parse error instead.
    mermaidErrors: Array.from(node.querySelectorAll('.jp-RenderedMermaid.jp-mod-warning'))
      .map(m => {{
        const copy = m.cloneNode(true);  // its <br> line breaks as newlines
        copy.querySelectorAll('br').forEach(br => br.replaceWith('\\n'));
        return copy.textContent;
      }}),
  }};
}}
"""

# After the next layout (two animation frames): how many pixels taller the page must be to
# show every cell without scrolling, measured to the last cell's bottom (scrollHeight would
# include the "scroll past end" space, which grows with the page); then scroll to the top.
EXTRA_HEIGHT_JS = f"""
(path) => new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(() => {{
  const outer = ({_PANEL})(path).node.querySelector('.jp-WindowedPanel-outer');
  const cells = outer ? outer.querySelectorAll('.jp-Cell') : [];
  if (!cells.length) return resolve(0);
  const bottom = cells[cells.length - 1].getBoundingClientRect().bottom
    - outer.getBoundingClientRect().top + outer.scrollTop;
  outer.scrollTop = 0;
  resolve(Math.max(0, Math.ceil(bottom + 24 - outer.clientHeight)));
}})))
"""

# The text of cell i's outputs, as shown.
OUTPUT_TEXT_JS = f"""
([path, i]) => {{
  const outputs = ({_PANEL})(path).content.widgets[i].node.querySelectorAll('.jp-OutputArea-output');
  return Array.from(outputs).map(o => o.innerText.trim()).join('\\n');
}}
"""

# What a slider's cell shows, minus the sliders themselves (their readout moves with them).
CELL_SIGNATURE_JS = """
(handle) => {
  const area = handle.closest('.jp-CodeCell').querySelector('.jp-Cell-outputArea').cloneNode(true);
  area.querySelectorAll('.widget-slider').forEach(s => s.remove());
  const images = Array.from(area.querySelectorAll('img')).map(i => i.src);
  return area.textContent + '\\n' + images.join('\\n');
}
"""


ZH_DIR = ROOT / "notebooks" / "zh-CN"
# The start-here, then two lessons with sliders, plots and exercises; others while these wait.
ZH_PREFERRED = ["00-start-here", "03-reading-and-writing", "07-time-wait-and-reuseaddr"]
ZH_COUNT = 3


def _zh_chosen() -> list[Path]:
    """The zh-CN notebooks this test opens: ZH_PREFERRED first, others while those wait."""
    built = {p.stem: p for p in sorted(ZH_DIR.glob("[0-9][0-9]-*.ipynb"))}
    chosen = [built[s] for s in ZH_PREFERRED if s in built]
    return chosen + [p for p in built.values() if p not in chosen][: max(0, ZH_COUNT - len(chosen))]


def _notebook_params() -> list[Any]:
    if not NOTEBOOKS:
        reason = f"no notebooks (*.ipynb) in {NOTEBOOKS_DIR} yet"
        return [pytest.param(None, id="no-notebooks", marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(path, id=path.stem) for path in NOTEBOOKS]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium, or a loud skip (a failure under COURSE_REQUIRE_BROWSER=1)."""
    missing = None
    if not os.access(CHROMIUM, os.X_OK):
        missing = f"{CHROMIUM} is missing"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (pip install -r requirements.txt)"
    if missing:
        fix = "install it with 'sudo apt-get install chromium' (never 'playwright install')"
        if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"COURSE_REQUIRE_BROWSER=1 but {missing}: {fix}", pytrace=False)
        pytest.skip(f"BROWSER TEST SKIPPED: {missing}; {fix}")
    return CHROMIUM


@pytest.fixture(scope="module")
def lab(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """One private JupyterLab for all notebooks, serving the notebooks folder's parent."""
    server = LabServer(NOTEBOOKS_DIR.parent, tmp_path_factory.mktemp("jupyterlab"))
    try:
        server.start()
        yield server
    finally:
        killed = server.stop()
        assert not killed, "processes outlived the server's shutdown and had to be killed:\n" + "\n".join(killed)


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Any]:
    """Headless chromium driven by Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class _Budget:
    """One deadline shared by the waits of a test, so their sum stays inside the timeout."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def ms(self, limit_s: float) -> float:
        """Milliseconds for the next wait: `limit_s`, or less if the deadline is nearer."""
        return max(1.0, min(limit_s, self.deadline - time.monotonic())) * 1000


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A solution block's summary line in a lesson's markdown (tests/lesson_cells.py, CONTRIBUTING.md)
SOLUTION_SUMMARY = re.compile(r"<details>\s*<summary>([^<]*)</summary>\s*```python")


def _errors_text(errors: list[dict[str, Any]]) -> str:
    """The errors the cells raised, tracebacks without terminal colours."""
    return "\n\n".join(
        f"cell {e['cell']}: {e['ename']}: {e['evalue']}\n{_ANSI.sub('', e['traceback'])}" for e in errors
    )


def _playwright() -> Any:
    """playwright.sync_api, imported late so that a missing package skips instead of erroring."""
    import playwright.sync_api

    return playwright.sync_api


def _screenshot(page: Any, name: str) -> None:
    """Save a screenshot of the whole page under tests/artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def _screenshot_on_failure(page: Any, name: str) -> None:
    """Best effort: the page as it was when the test failed (skipped if the page is gone)."""
    try:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True, timeout=5000)
    except _playwright().Error:
        pass


def _wait_js(page: Any, predicate: str, arg: Any, timeout_ms: float) -> None:
    """Wait until the JS `predicate(arg)` is truthy, checked every 100 ms in the page."""
    page.wait_for_function(predicate, arg=arg, timeout=timeout_ms, polling=100)


@dataclass(frozen=True)
class _Interface:
    """What JupyterLab's interface says in one language: the run state as its status bar
    shows it (RUN_STATE_JS), and the menu and item that run every cell."""

    state_js: str
    run_menu: str
    run_all: str


ENGLISH = _Interface(RUN_STATE_JS, "Run", "Run All Cells")


def _run_all(page: Any, path: str, budget: _Budget, ui: _Interface = ENGLISH) -> dict[str, Any]:
    """Wait for an Idle kernel, choose Run > Run All Cells (in `ui`'s words), wait until done; the run state."""
    try:
        _wait_js(page, f"(path) => ({ui.state_js})(path).idle", path, budget.ms(KERNEL_READY_S))
    except _playwright().TimeoutError:
        state = page.evaluate(ui.state_js, path)
        pytest.fail(
            f"the kernel was not Idle within {KERNEL_READY_S} s; status bar: {state['status']!r}", pytrace=False
        )
    page.locator(".lm-MenuBar-item", has_text=ui.run_menu).first.click()
    page.get_by_role("menuitem", name=ui.run_all, exact=True).click()
    # Run All stops at the first error, leaving later cells unrun: stop waiting then too.
    done = f"(path) => {{ const s = ({ui.state_js})(path); return s.idle && (s.pending === 0 || s.errors.length); }}"
    started = time.monotonic()
    try:
        _wait_js(page, done, path, budget.ms(RUN_ALL_S))
    except _playwright().TimeoutError:
        state = page.evaluate(ui.state_js, path)
        pytest.fail(
            f"Run All had not finished after {time.monotonic() - started:.0f} s: {state['pending']} of "
            f"{state['code']} code cells without an execution count; status bar: {state['status']!r}",
            pytrace=False,
        )
    return page.evaluate(ui.state_js, path)


@contextlib.contextmanager
def _notebook_page(browser: Any, lab: LabServer, name: str, **options: Any) -> Iterator[Any]:
    """A fresh browser page; on failure a screenshot `name`-failed.png; at the end every
    session shut down, and a failure if a kernel outlives it."""
    context = browser.new_context(viewport=VIEWPORT, **options)
    page = context.new_page()
    try:
        yield page
    except BaseException:
        _screenshot_on_failure(page, f"{name}-failed.png")
        raise
    finally:
        context.close()
        alive = lab.shutdown_sessions()
    assert not alive, f"kernels still alive after their session was shut down: {[k.argv() for k in alive]}"


def _show_whole_notebook(page: Any, path: str) -> None:
    """Make the page tall enough to show the whole notebook from its top, for screenshots.

    Cells off screen are laid out with estimated heights (CSS content-visibility) until they
    are shown, so the notebook grows as the page does: a few rounds settle it.
    """
    height = page.viewport_size["height"]
    for _ in range(8):
        extra = page.evaluate(EXTRA_HEIGHT_JS, path)
        if extra == 0 or height >= MAX_SCREENSHOT_PX:
            return
        height = min(height + extra, MAX_SCREENSHOT_PX)
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    page.evaluate(EXTRA_HEIGHT_JS, path)


def _wait_rendered(page: Any, path: str, run: dict[str, Any], budget: _Budget) -> dict[str, Any]:
    """Show the whole notebook, wait for widgets, images and diagrams; what the page shows."""
    _show_whole_notebook(page, path)
    rendered = f"""([path, mermaid]) => {{
      const r = ({RENDER_STATE_JS})(path);
      return r.widgets.loading.length === 0 && r.mermaid + r.mermaidErrors.length >= mermaid && r.imagesLoading === 0;
    }}"""
    try:
        _wait_js(page, rendered, [path, run["mermaid"]], budget.ms(RENDER_S))
    except _playwright().TimeoutError:
        pass  # the checks on what did render say what is missing
    _show_whole_notebook(page, path)  # rendered widgets and images may have made it taller
    return page.evaluate(RENDER_STATE_JS, path)


def _move_first_slider(page: Any, path: str, budget: _Budget, ui: _Interface) -> tuple[str, str]:
    """Press one arrow key on the first slider; its cell's output (before, after) the change.

    One step, the smallest and cheapest change: each key press runs the experiment again.
    """
    panel_id = page.evaluate(PANEL_ID_JS, path)
    handle = page.locator(f'[id="{panel_id}"] .widget-slider .noUi-handle').first
    node = handle.element_handle()
    before = page.evaluate(CELL_SIGNATURE_JS, node)
    value = handle.get_attribute("aria-valuenow")
    handle.press("ArrowLeft" if value == handle.get_attribute("aria-valuemax") else "ArrowRight")
    moved_to = handle.get_attribute("aria-valuenow")
    assert moved_to != value, f"the slider at {value} did not move on an arrow key"
    # The output changes once the kernel runs the callback (continuous_update=False sends
    # the value on the key press); then wait for Idle, so the callback's output is complete.
    changed = f"([node, before]) => ({CELL_SIGNATURE_JS})(node) !== before"
    try:
        _wait_js(page, changed, [node, before], budget.ms(SLIDER_S))
    except _playwright().TimeoutError:
        pytest.fail(
            f"moving the first slider from {value} to {moved_to} did not change its cell's output", pytrace=False
        )
    _wait_js(page, f"(path) => ({ui.state_js})(path).idle", path, budget.ms(SLIDER_S))
    return before, page.evaluate(CELL_SIGNATURE_JS, node)


def _check_exercises(page: Any, path: str, notebook: Path) -> None:
    """Each check cell shows "NOT DONE YET" on its stub; each solution block is closed, its
    code hidden, and opens when its summary is clicked."""
    nb = nbformat.read(notebook, as_version=4)
    checks = [i for i, c in enumerate(nb.cells) if "check" in c.get("metadata", {}).get("tags", [])]
    # "Show a solution" in English, the edition's words in an edition (查看参考答案)
    summaries = [m for c in nb.cells if c.cell_type == "markdown" for m in re.findall(SOLUTION_SUMMARY, c.source)]
    solutions = len(summaries)
    if "edition" not in nb.metadata.get("course", {}):
        assert set(summaries) <= {"Show a solution"}, f"an English solution block's summary: {summaries}"
    for i in checks:
        shown = page.evaluate(OUTPUT_TEXT_JS, [path, i])
        assert shown.startswith("NOT DONE YET: Exercise"), f"cell {i}, a check on its stub, shows {shown[:200]!r}"
    panel_id = page.evaluate(PANEL_ID_JS, path)
    blocks = page.locator(f'[id="{panel_id}"] .jp-RenderedMarkdown details')
    assert blocks.count() == solutions, f"{blocks.count()} solution blocks rendered, {solutions} in the notebook"
    for k in range(blocks.count()):
        block = blocks.nth(k)
        assert block.locator("summary").inner_text().strip() == summaries[k]
        assert not block.evaluate("d => d.open") and not block.locator("pre").is_visible(), f"solution {k} is open"
    if solutions:
        first = blocks.first
        first.locator("summary").click()
        first.locator("pre").wait_for(state="visible", timeout=5000)
        assert "def " in first.locator("pre").inner_text(), "the opened solution shows its code"


def _failed_experiments(page: Any) -> list[str]:
    """The status lines of helpers.widgets.Experiment runs that raised (shown, not thrown)."""
    return page.locator(f".{ERROR_CLASS}").all_inner_texts()


def _english_params() -> list[Any]:
    """Each lesson, but those the zh-CN test below opens in their zh-CN edition instead."""
    params = _notebook_params()
    if NOTEBOOKS and NOTEBOOKS_DIR.resolve() == (ROOT / "notebooks").resolve():
        in_zh = {p.stem for p in _zh_chosen()}
        params = [p for p in params if p.values[0].stem not in in_zh]
    return params


@pytest.mark.timeout(TEST_TIMEOUT_S, method="signal")  # "signal" lets the fixtures stop the server
@pytest.mark.parametrize("notebook", _english_params())
def test_notebook_runs_in_jupyterlab(notebook: Path, lab: LabServer, browser: Any) -> None:
    """Run All works, nothing raised, everything rendered, and a slider changes its output."""
    budget = _Budget(TEST_TIMEOUT_S - 10)
    path = notebook.relative_to(lab.root_dir).as_posix()
    for stale in SCREENSHOTS.glob(f"{notebook.stem}-*.png"):
        stale.unlink()  # a screenshot always shows this run
    started = time.monotonic()
    with _notebook_page(browser, lab, notebook.stem) as page:
        ran_s = _runs_as_a_learner_sees_it(page, lab, notebook, path, budget, ENGLISH, notebook.stem)
    print(f"{notebook.name}: Run All done after {ran_s:.1f} s, whole check {time.monotonic() - started:.1f} s")


def _runs_as_a_learner_sees_it(page: Any, lab: LabServer, notebook: Path, path: str, budget: _Budget,
                               ui: _Interface, name: str) -> float:
    """Open `path`, Run All through `ui`'s menus, and check what the module comment lists:
    nothing raised, one kernel (ours), everything rendered, the exercises, the first slider;
    screenshots `name`-ran.png and `name`-slider.png. The seconds Run All took."""
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(notebook, as_version=4).cells)
    started = time.monotonic()
    # ?reset: a fresh workspace, so no tab (and kernel) of an earlier notebook reopens.
    page.goto(lab.url(f"lab/tree/{path}?reset"), timeout=budget.ms(KERNEL_READY_S))
    run = _run_all(page, path, budget, ui)
    ran_s = time.monotonic() - started
    if run["errors"]:
        pytest.fail(f"{path} raised:\n{_errors_text(run['errors'])}", pytrace=False)
    assert run["code"] == code_cells, f"the page has {run['code']} code cells, the file {code_cells}"
    assert run["pending"] == 0, f"{run['pending']} of {run['code']} cells unrun"

    kernels = lab.kernels()
    assert len(kernels) == 1, f"expected one kernel, found {[k.argv() for k in kernels]}"
    assert kernels[0].argv()[:1] == [sys.executable], f"the kernel runs {kernels[0].argv()[:1]}, not {sys.executable}"

    shown = _wait_rendered(page, path, run, budget)
    _screenshot(page, f"{name}-ran.png")
    assert shown["domCodeCells"] == code_cells, f"the page shows {shown['domCodeCells']} of {code_cells} code cells"
    widgets = shown["widgets"]
    assert not widgets["error"], "widgets failed to display:\n" + "\n".join(widgets["error"])
    assert not widgets["loading"], f"widgets not displayed after {RENDER_S} s:\n" + "\n".join(widgets["loading"])
    assert widgets["shown"] + widgets["closed"] == run["widgets"], f"{widgets} for {run['widgets']} widget outputs"
    assert shown["slidersWithoutHandle"] == 0, "a slider rendered without its handle"
    assert shown["imagesBroken"] == 0, f"{shown['imagesBroken']} output images failed to load"
    assert not shown["mermaidErrors"], "Mermaid could not draw a diagram:\n" + "\n".join(shown["mermaidErrors"])
    assert shown["mermaid"] >= run["mermaid"], f"{shown['mermaid']} of {run['mermaid']} Mermaid diagrams rendered"

    assert not _failed_experiments(page), f"an experiment failed: {_failed_experiments(page)}"
    _check_exercises(page, path, notebook)

    if shown["sliders"]:
        before, after = _move_first_slider(page, path, budget, ui)
        _show_whole_notebook(page, path)
        _screenshot(page, f"{name}-slider.png")
        if "Traceback (most recent call last)" in after:
            pytest.fail(f"the slider's callback raised:\n{after}", pytrace=False)
        assert after != before, "moving the slider did not change its cell's output"
        assert not _failed_experiments(page), f"after the slider moved: {_failed_experiments(page)}"
    return ran_s


# --- the zh-CN edition, in a Chinese JupyterLab ---------------------------------------------

# What the Chinese interface shows for the English test's "Run" > "Run All Cells" and the
# status bar's "Python 3 (ipykernel) | Idle" (titled "Change kernel for ...").
ZH = _Interface(RUN_STATE_JS.replace("[title^=\"Change kernel\"]", "[title^=\"更改 \"][title$=\"的内核\"]")
                .replace("endsWith('| Idle')", "endsWith('| 空闲')"), "运行", "运行所有单元格")
assert ZH.state_js.count("| 空闲") == 1 and "的内核" in ZH.state_js

# Every Chinese character the page shows (the notebook's rendered text, the menu bar and the
# status bar), each drawn on a canvas with the rendered markdown's own font list, against
# what the browser draws for characters that no font has (unassigned code points).
GLYPHS_JS = f"""
(path) => {{
  const panel = ({_PANEL})(path);
  const texts = [panel.node.innerText, document.querySelector('#jp-menu-panel, .lm-MenuBar').innerText,
                 document.querySelector('#jp-main-statusbar').innerText];
  const han = /[\\u3000-\\u303f\\u3400-\\u9fff\\uff00-\\uffef]/u;
  const chars = [...new Set(Array.from(texts.join('')).filter(c => han.test(c)))];
  const md = panel.node.querySelector('.jp-RenderedMarkdown');
  const family = getComputedStyle(md).fontFamily;
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 40;
  const ctx = canvas.getContext('2d', {{willReadFrequently: true}});
  const draw = (c) => {{
    ctx.clearRect(0, 0, 40, 40);
    ctx.font = `28px ${{family}}`;
    ctx.textBaseline = 'top';
    ctx.fillText(c, 4, 4);
    return Array.from(ctx.getImageData(0, 0, 40, 40).data.filter((_, i) => i % 4 === 3)).join(',');
  }};
  const tofu = new Set(['\\u0378', '\\u0380', '\\u{{2fffd}}'].map(draw));
  const blank = draw(' ');
  const missing = (c) => {{ const d = draw(c); return tofu.has(d) || d === blank; }};
  return {{family, count: chars.length, missing: chars.filter(missing), control: missing('\\u0379'),
           sample: chars.slice(0, 40).join('')}};
}}
"""


def _zh_params() -> list[Any]:
    chosen = _zh_chosen()
    if not chosen:
        return [pytest.param(None, id="zh-CN-none", marks=pytest.mark.skip(reason="no zh-CN notebook built yet"))]
    return [pytest.param(p, id=f"zh-CN-{p.stem}") for p in chosen]


@pytest.fixture(scope="module")
def zh_lab(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A private JupyterLab with the Chinese interface, serving the repository."""
    server = LabServer(ROOT, tmp_path_factory.mktemp("jupyterlab-zh"), settings=ZH_CN_SETTINGS)
    try:
        server.start()
        yield server
    finally:
        killed = server.stop()
        assert not killed, "processes outlived the server's shutdown and had to be killed:\n" + "\n".join(killed)


def _platform_fonts(page: Any, path: str) -> list[str]:
    """The fonts Chromium drew the notebook's first rendered markdown with ("family: glyphs")."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
        panel_id = page.evaluate(PANEL_ID_JS, path)
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": f'[id="{panel_id}"] .jp-RenderedMarkdown'})
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})["fonts"]
        return [f"{f['familyName']}: {f['glyphCount']}" for f in fonts]
    finally:
        cdp.detach()


@pytest.mark.timeout(TEST_TIMEOUT_S, method="signal")
@pytest.mark.parametrize("notebook", _zh_params())
def test_zh_cn_edition_in_chinese_jupyterlab(notebook: Path, zh_lab: LabServer, browser: Any) -> None:
    """Everything the English test checks (a lesson is opened in one edition or the other:
    the code is the same), through the Chinese menus; the interface is Chinese, and no
    Chinese glyph is missing."""
    budget = _Budget(TEST_TIMEOUT_S - 10)
    path = notebook.relative_to(ROOT).as_posix()
    name = f"zh-CN-{notebook.stem}"
    for stale in SCREENSHOTS.glob(f"{name}-*.png"):
        stale.unlink()
    with _notebook_page(browser, zh_lab, name, locale="zh-CN") as page:
        # waits for the status bar's "空闲" (Idle), then 运行 > 运行所有单元格
        ran_s = _runs_as_a_learner_sees_it(page, zh_lab, notebook, path, budget, ZH, name)
        menus = [m.strip() for m in page.locator(".lm-MenuBar-item").all_inner_texts()]
        assert ZH.run_menu in menus and "文件" in menus, f"the menu bar is not Chinese: {menus}"

        glyphs = page.evaluate(GLYPHS_JS, path)
        fonts = _platform_fonts(page, path)
        print(f"{path}: Run All done after {ran_s:.1f} s; {glyphs['count']} Chinese characters "
              f"({glyphs['sample']}...) drawn with {glyphs['family']}; Chromium used {fonts}")
        assert glyphs["control"], "the glyph check did not see a character no font has as missing: it cannot fail"
        assert glyphs["count"] >= 20, f"only {glyphs['count']} Chinese characters on the page: is it the zh-CN one?"
        assert not glyphs["missing"], (
            f"{len(glyphs['missing'])} of {glyphs['count']} Chinese characters have no glyph "
            f"(drawn as empty boxes): {''.join(glyphs['missing'][:40])}; install a CJK font: "
            "sudo apt-get install fonts-noto-cjk (./course does it as root)")
