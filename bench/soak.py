"""Soak the course: run every lesson notebook and every lab's solution N times in a row, then
the same with several complete runs at once, and print a table of failures, run times and
peak memory per notebook. Not part of the default test run: it takes minutes.

    .venv/bin/python bench/soak.py                 # 10 sequential rounds, then 3 rounds x 2 at once
    .venv/bin/python bench/soak.py --rounds 3 --parallel 2 --parallel-rounds 1 -k 02 -k 07

A lab runs as its instructor source (``labs/NN-*.ipynb``): the solutions with the visible
and hidden tests, top to bottom, which is what grading a perfect submission executes.
Each run is the one the tests use (tests/notebook_runner.py): a fresh kernel, the notebook
top to bottom, then the leak check (threads, servers, sockets, child processes, binds
outside loopback). A failure is any exception or any leftover; its first line is listed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from notebook_runner import describe_error, run_notebook  # noqa: E402


def one_run(path: Path) -> tuple[str, float, float, str | None]:
    """(stem, seconds, peak RSS in MB, failure or None) for one execution of `path`."""
    started = time.monotonic()
    try:
        run = run_notebook(path, timeout_s=180)
    except Exception as exc:  # noqa: BLE001 - a soak records failures, it does not stop on them
        return _name(path), time.monotonic() - started, 0.0, _why(exc)
    left = {k: v for k, v in run.leftovers.items() if v}
    problem = f"left behind: {left}" if left else None
    allowed = nbformat.read(path, as_version=4).metadata.get("course", {}).get("allow_non_loopback_bind", False)
    if run.non_loopback_binds and not allowed:
        problem = f"bound outside loopback: {run.non_loopback_binds}"
    return _name(path), run.seconds, run.peak_rss_mb, problem


def _why(exc: Exception) -> str:
    """One line: for a failed cell, the source line that raised and the error; else where in
    this process the exception was raised, and the exception."""
    if hasattr(exc, "ename"):  # nbclient's CellExecutionError: the kernel's traceback as text
        return describe_error(str(exc), exc.ename, exc.evalue)
    # Not a cell's error: raised in this process (nbclient, jupyter_client, the runner), so
    # say where, or an `assert` inside those libraries reads as a bare "AssertionError: ".
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"in {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].name}), not in a cell: " \
        if frames else ""
    return where + traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]


def _name(path: Path) -> str:
    """The row label: the lesson's stem, or 'lab ' + the lab's stem."""
    return f"lab {path.stem}" if path.parent.name == "labs" else path.stem


def suite(notebooks: list[Path]) -> list[tuple[str, float, float, str | None]]:
    """One complete run of the given notebooks, in order."""
    return [one_run(p) for p in notebooks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="sequential complete runs (default 10)")
    parser.add_argument("--parallel", type=int, default=2, help="complete runs at once (default 2)")
    parser.add_argument("--parallel-rounds", type=int, default=3, help="rounds of parallel runs (default 3)")
    parser.add_argument("--no-labs", action="store_true", help="lessons only, without the lab solutions")
    parser.add_argument("-k", action="append", default=[], help="only notebooks whose name contains this")
    args = parser.parse_args()
    for name in ("rounds", "parallel", "parallel_rounds"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    if not args.no_labs:
        notebooks += sorted((ROOT / "labs").glob("[0-9][0-9]-*.ipynb"))
    if args.k:
        notebooks = [p for p in notebooks if any(k in _name(p) for k in args.k)]
    if not notebooks:
        parser.error("no notebook matches")

    results: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for mode, rounds, width in (("sequential", args.rounds, 1), ("parallel", args.parallel_rounds, args.parallel)):
        for r in range(rounds):
            with ThreadPoolExecutor(max_workers=width) as pool:
                for runs in pool.map(lambda _: suite(notebooks), range(width)):
                    for stem, seconds, rss, failure in runs:
                        cell = results[stem]
                        cell[f"{mode}_s"].append(seconds)
                        cell["rss"].append(rss)
                        if failure:
                            cell["failures"].append(f"{mode} round {r + 1}: {failure}")
                            # at once too, so an interrupted soak still says what failed
                            print(f"FAIL {stem}, {mode} round {r + 1}: {failure}", file=sys.stderr, flush=True)
            print(f"{mode} round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

    header = f"{'notebook':34} {'runs':>5} {'fail':>5} {'seq median s':>13} {'seq max s':>10} " \
             f"{'par median s':>13} {'par max s':>10} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    total_failures = 0
    for stem in (_name(p) for p in notebooks):
        cell = results[stem]
        seq, par = cell["sequential_s"], cell["parallel_s"]
        fails = len(cell["failures"])
        total_failures += fails

        def med(xs: list[float]) -> str:
            return f"{statistics.median(xs):.1f}" if xs else "-"

        def top(xs: list[float]) -> str:
            return f"{max(xs):.1f}" if xs else "-"

        print(f"{stem:34} {len(seq) + len(par):>5} {fails:>5} {med(seq):>13} {top(seq):>10} "
              f"{med(par):>13} {top(par):>10} {max(cell['rss'], default=0):>8.0f}")
    for stem, cell in results.items():
        for failure in cell["failures"]:
            print(f"FAIL {stem}: {failure}")
    print(f"{total_failures} failures")
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
