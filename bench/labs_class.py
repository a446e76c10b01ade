"""Grading a class: time and peak memory for LABS labs x STUDENTS students, against one submission alone.

Releases every lab to STUDENTS students, makes each student submit each lab (two thirds the
reference solution, one third the untouched release: a mix of full runs and quick failures),
then, in one run:

1. baseline: each lab's solution graded alone (``-j 1``), one after the other;
2. the class graded with ``-j JOBS`` (default 2), as ``python -m helpers.labs grade``.

Peak memory is the largest sum of PSS (proportional set size, from /proc/<pid>/smaps_rollup)
over the grader's whole process tree (the grader, every runner and learner process, their
sandboxes' launchers), sampled every 0.1 s. Prints the class's time and memory and their
ratio to the baseline. Reproduce: ``.venv/bin/python bench/labs_class.py --students 30 -j 2``.
Run it as root for the memory: the grader and the runners are undumpable, so a normal user
cannot read their PSS (the bench says so and counts only what it can read).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers.c10k import process_tree  # noqa: E402

LABS = sorted((ROOT / "labs").glob("[0-9][0-9]-*.ipynb"))  # a lab source is its own reference submission


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(seconds, peak MiB of the process tree, result) of ``python -m helpers.labs ARGS``."""
    peak = [0]
    proc = subprocess.Popen([sys.executable, "-m", "helpers.labs", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], sum(pss_kib(pid) for pid in process_tree(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.monotonic()
    sampler.start()
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if proc.returncode != 0:
        raise SystemExit(f"grading failed:\n{err[-3000:]}")
    return seconds, peak[0] / 1024, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--labs", nargs="*", help="lab numbers (default: all)")
    args = parser.parse_args()
    labs = [path for path in LABS if not args.labs or path.name[:2] in args.labs]
    if os.geteuid() != 0:
        print("note: not root: the undumpable grader and runners are left out of the peak memory")
    with tempfile.TemporaryDirectory(prefix="labs-class-bench-") as base_dir:
        base = Path(base_dir)
        students = [f"s{i:03d}" for i in range(args.students)]
        roster = base / "roster.txt"
        roster.write_text("\n".join(students) + "\n")
        release = subprocess.run([sys.executable, "-m", "helpers.labs", "release", *[lab.stem for lab in labs], "-o",
                                  str(base / "rel"), "--cohort", "bench", "--roster", str(roster)],
                                 cwd=ROOT, capture_output=True, text=True)
        if release.returncode != 0:
            raise SystemExit(release.stderr)
        alone = base / "alone"
        for lab in labs:
            (alone / "ref").mkdir(parents=True, exist_ok=True)
            (alone / "ref" / lab.name).write_bytes(lab.read_bytes())
        subs = base / "subs"
        for i, student in enumerate(students):
            (subs / student).mkdir(parents=True)
            for k, lab in enumerate(labs):
                source = lab if (i + k) % 3 else base / "rel" / student / lab.name
                (subs / student / lab.name).write_bytes(source.read_bytes())
        base_s, base_mib, _ = run_measured(["grade", str(alone), "-o", str(base / "alone-out"), "-j", "1"])
        per_submission = base_s / len(labs)
        class_s, class_mib, _ = run_measured(["grade", str(subs), "-o", str(base / "out"), "-j",
                                                   str(args.jobs), "--manifest", str(base / "rel" / "manifest.json")])
        count = len(students) * len(labs)
        sandbox = "on" if ",on," in (base / "out" / "submissions.csv").read_text() else "OFF"
        print(f"{len(labs)} labs x {len(students)} students = {count} submissions, -j {args.jobs}, sandbox {sandbox}, "
              f"{os.cpu_count()} CPUs")
        print(f"baseline: {len(labs)} reference solutions alone (-j 1): {base_s:.1f} s "
              f"({per_submission:.2f} s each), peak {base_mib:.0f} MiB")
        print(f"class: {class_s:.1f} s ({class_s / count:.2f} s per submission), peak {class_mib:.0f} MiB")
        ratio = class_s / (count * per_submission)
        print(f"ratio: class time / (submissions x baseline per submission) = {ratio:.2f}; "
              f"class peak / baseline peak = {class_mib / base_mib:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
