"""How many learners one machine holds: a class of N real users on a real JupyterHub, each
running the whole course at once, for several N; every lesson's time against its budget.

    sudo .venv/bin/python bench/class_capacity.py                  # N = 1, 2, 3, 4, 6
    sudo .venv/bin/python bench/class_capacity.py -n 1 -n 4 --lockstep -k 05 -k 17

Needs root and what ./course test installs as root (the learners' venv and the proxy):
the hub and the accounts are tests/hub_class.py's, the same as the class test's. Each
learner takes the course in its own order (rotated, so a class is spread over the lessons,
as in a lab session where everyone works at their own pace); with ``--lockstep`` every
learner runs the same lesson at the same moment (the instructor says "run lesson 17 now"),
the worst case.

The baseline is N = 1, measured in the same run: for each N the table shows the slowest
learner's time per lesson, its ratio to the lone learner's time, and the lessons over
budget (20 s; 17 and 19: 30 s). Per learner and lesson it also reports the kernel's peak
resident memory (VmHWM), its children's peak (forked servers, load generators) and CPU
seconds (the kernel and its reaped children), and each single-user server's peak. The
machine is shared with whatever else runs: the load average before each class is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hub_class  # noqa: E402
from lesson_rules import budget_s  # noqa: E402


def budget(lesson: str) -> int:
    return budget_s(lesson[:2])


def server_peak_mb(learner: hub_class.Learner) -> float:
    """Peak resident memory (VmHWM) of the learner's single-user server process."""
    for pid, cmd in hub_class.user_processes(learner.uid):
        if "jupyterhub-singleuser" in cmd:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            return int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) / 1024
    return 0.0


def one_class(n: int, paths: list[str], lockstep: bool) -> dict:
    """Run the course for `n` learners at once; what each lesson took and used."""
    with hub_class.classroom(n) as hub:
        names = [lr.name for lr in hub.learners]
        step = max(1, len(paths) // n)
        plans = {name: list(paths) if lockstep else paths[i * step:] + paths[:i * step] for i, name in enumerate(names)}
        load = os.getloadavg()[0]
        together = [(set(names), {Path(p).stem for p in paths})] if lockstep else []
        result = hub_class.run_class(hub, plans, together=together)
        servers = [server_peak_mb(lr) for lr in hub.learners]
    return {"n": n, "lockstep": lockstep, "load_before": load, "seconds": result.seconds,
            "errors": result.errors, "server_peak_mb": servers, "runs": [vars(r) for r in result.runs]}


def summarise(classes: list[dict]) -> str:
    base = {r["lesson"]: r["seconds"] for r in classes[0]["runs"]} if classes[0]["n"] == 1 else {}
    lines = []
    for cls in classes:
        runs = cls["runs"]
        slowest: dict[str, float] = {}
        for r in runs:
            slowest[r["lesson"]] = max(slowest.get(r["lesson"], 0.0), r["seconds"])
        over = sorted(k for k, v in slowest.items() if v > budget(k))
        failed = sorted({f"{r['learner']} {r['lesson']}" for r in runs if r["error"]})
        ratios = [slowest[k] / base[k] for k in slowest if base.get(k)]
        lines.append(
            f"N={cls['n']}{' lockstep' if cls['lockstep'] else ''}: class {cls['seconds']:.0f} s, load before "
            f"{cls['load_before']:.1f}; slowest lesson {max(slowest, key=slowest.get)} "
            f"{max(slowest.values()):.1f} s; slowdown vs N=1 median "
            f"{sorted(ratios)[len(ratios) // 2] if ratios else float('nan'):.2f}x, max "
            f"{max(ratios) if ratios else float('nan'):.2f}x; over budget: {', '.join(over) or 'none'}; "
            f"failed: {', '.join(failed) or 'none'}; server peak {max(cls['server_peak_mb'] or [0]):.0f} MB"
        )
    lines.append("")
    lines.append(f"{'lesson':<30} {'alone s':>7} " + " ".join(f"{'N=' + str(c['n']):>7}" for c in classes[1:])
                 + f" {'budget':>6} {'kernel MB':>9} {'child MB':>8} {'CPU s':>6}")
    for lesson in sorted({r["lesson"] for c in classes for r in c["runs"]}):
        cells = []
        for cls in classes:
            mine = [r["seconds"] for r in cls["runs"] if r["lesson"] == lesson]
            cells.append(f"{max(mine):>7.1f}" if mine else f"{'-':>7}")
        every = [r for c in classes for r in c["runs"] if r["lesson"] == lesson and r["usage"]]
        kern = max(r["usage"]["peak_rss_kib"] for r in every) / 1024 if every else 0
        kids = max(r["usage"]["children_peak_rss_kib"] for r in every) / 1024 if every else 0
        alone = [r for r in classes[0]["runs"] if r["lesson"] == lesson and r["usage"]]
        cpu = max((r["usage"]["cpu_s"] + r["usage"]["children_cpu_s"] for r in alone), default=0.0)
        lines.append(f"{lesson:<30} {' '.join(cells)} {budget(lesson):>6} {kern:>9.0f} {kids:>8.0f} {cpu:>6.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--learners", type=int, action="append", help="class sizes (default 1 2 3 4 6)")
    parser.add_argument("-k", "--lesson", action="append", default=[], help="only lessons whose name contains this")
    parser.add_argument("--lockstep", action="store_true", help="every learner runs the same lesson at once")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "tests" / "artifacts" / "class-capacity.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: the class's learners are local users this script creates")
    sizes = sorted(set(args.learners or [1, 2, 3, 4, 6]))
    if sizes[0] < 1:
        parser.error(f"a class has at least 1 learner, got {sizes[0]}")
    if sizes[0] != 1:
        sizes.insert(0, 1)  # the baseline, measured in the same run
    paths = [p for p in hub_class.lessons() if not args.lesson or any(k in p for k in args.lesson)]
    if not paths:
        parser.error(f"no lesson matches {args.lesson}")
    classes = []
    for n in sizes:
        print(f"class of {n} ...", flush=True)
        started = time.monotonic()
        classes.append(one_class(n, paths, args.lockstep))
        print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(classes, indent=1))
    print(summarise(classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
