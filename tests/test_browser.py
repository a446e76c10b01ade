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

Environment: COURSE_NOTEBOOKS_DIR points at another notebooks folder (default
<repo>/notebooks); COURSE_REQUIRE_BROWSER=1 turns a missing chromium into a failure.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, LabServer

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

pytestmark = pytest.mark.browser

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

# What a slider's cell shows, minus the sliders themselves (their readout moves with them).
CELL_SIGNATURE_JS = """
(handle) => {
  const area = handle.closest('.jp-CodeCell').querySelector('.jp-Cell-outputArea').cloneNode(true);
  area.querySelectorAll('.widget-slider').forEach(s => s.remove());
  const images = Array.from(area.querySelectorAll('img')).map(i => i.src);
  return area.textContent + '\\n' + images.join('\\n');
}
"""


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


def _run_all(page: Any, path: str, budget: _Budget) -> dict[str, Any]:
    """Wait for an Idle kernel, choose Run > Run All Cells, wait until done; the run state."""
    try:
        _wait_js(page, f"(path) => ({RUN_STATE_JS})(path).idle", path, budget.ms(KERNEL_READY_S))
    except _playwright().TimeoutError:
        state = page.evaluate(RUN_STATE_JS, path)
        pytest.fail(
            f"the kernel was not Idle within {KERNEL_READY_S} s; status bar: {state['status']!r}", pytrace=False
        )
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # Run All stops at the first error, leaving later cells unrun: stop waiting then too.
    done = f"(path) => {{ const s = ({RUN_STATE_JS})(path); return s.idle && (s.pending === 0 || s.errors.length); }}"
    started = time.monotonic()
    try:
        _wait_js(page, done, path, budget.ms(RUN_ALL_S))
    except _playwright().TimeoutError:
        state = page.evaluate(RUN_STATE_JS, path)
        pytest.fail(
            f"Run All had not finished after {time.monotonic() - started:.0f} s: {state['pending']} of "
            f"{state['code']} code cells without an execution count; status bar: {state['status']!r}",
            pytrace=False,
        )
    return page.evaluate(RUN_STATE_JS, path)


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


def _move_first_slider(page: Any, path: str, budget: _Budget) -> tuple[str, str]:
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
    _wait_js(page, f"(path) => ({RUN_STATE_JS})(path).idle", path, budget.ms(SLIDER_S))
    return before, page.evaluate(CELL_SIGNATURE_JS, node)


def _failed_experiments(page: Any) -> list[str]:
    """The status lines of helpers.widgets.Experiment runs that raised (shown, not thrown)."""
    return page.locator(f".{ERROR_CLASS}").all_inner_texts()


@pytest.mark.timeout(TEST_TIMEOUT_S, method="signal")  # "signal" lets the fixtures stop the server
@pytest.mark.parametrize("notebook", _notebook_params())
def test_notebook_runs_in_jupyterlab(notebook: Path, lab: LabServer, browser: Any) -> None:
    """Run All works, nothing raised, everything rendered, and a slider changes its output."""
    budget = _Budget(TEST_TIMEOUT_S - 10)
    path = notebook.relative_to(lab.root_dir).as_posix()
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(notebook, as_version=4).cells)
    for stale in SCREENSHOTS.glob(f"{notebook.stem}-*.png"):
        stale.unlink()  # a screenshot always shows this run
    started = time.monotonic()
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        # ?reset: a fresh workspace, so no tab (and kernel) of an earlier notebook reopens.
        page.goto(lab.url(f"lab/tree/{path}?reset"), timeout=budget.ms(KERNEL_READY_S))
        run = _run_all(page, path, budget)
        ran_s = time.monotonic() - started
        if run["errors"]:
            pytest.fail(f"{notebook.name} raised:\n{_errors_text(run['errors'])}", pytrace=False)
        assert run["code"] == code_cells, f"the page has {run['code']} code cells, the file {code_cells}"

        kernels = lab.kernels()
        assert len(kernels) == 1, f"expected one kernel, found {[k.argv() for k in kernels]}"
        assert kernels[0].argv()[:1] == [sys.executable], (
            f"the kernel runs {kernels[0].argv()[:1]}, not {sys.executable}"
        )

        shown = _wait_rendered(page, path, run, budget)
        _screenshot(page, f"{notebook.stem}-ran.png")
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

        if shown["sliders"]:
            before, after = _move_first_slider(page, path, budget)
            _show_whole_notebook(page, path)
            _screenshot(page, f"{notebook.stem}-slider.png")
            if "Traceback (most recent call last)" in after:
                pytest.fail(f"the slider's callback raised:\n{after}", pytrace=False)
            assert after != before, "moving the slider did not change its cell's output"
            assert not _failed_experiments(page), f"after the slider moved: {_failed_experiments(page)}"
        total_s = time.monotonic() - started
        print(f"{notebook.name}: Run All done after {ran_s:.1f} s, whole check {total_s:.1f} s")
    except BaseException:
        _screenshot_on_failure(page, f"{notebook.stem}-failed.png")
        raise
    finally:
        context.close()
        alive = lab.shutdown_sessions()
    assert not alive, f"kernels still alive after their session was shut down: {[k.argv() for k in alive]}"
