"""Command line: ``python -m helpers.labs {list,release,grade}`` (see labs/README.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .grade import grade_folder
from .release import release
from .source import LabError, find_labs, load_lab


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise LabError(f"-p wants name=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def _students(args: argparse.Namespace) -> list[str] | None:
    names = list(args.student or [])
    if args.roster:
        try:
            text = Path(args.roster).read_text()
        except OSError as exc:
            raise LabError(f"cannot read the roster {args.roster}: {exc.strerror}") from exc
        names += [line.split(",")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(set(names)) != len(names):
        raise LabError("a student is named twice in --student/--roster")
    return names or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.labs", description="Release and grade the course labs.")
    parser.add_argument("--labs-dir", type=Path, default=None, help="where the lab sources are (default: labs/)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the labs, their parameters and points")

    rel = sub.add_parser("release", help="write student versions (stubs, no hidden tests, parameters injected)")
    rel.add_argument("labs", nargs="*", help="lab ids or numbers (default: all)")
    rel.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    rel.add_argument("--cohort", default="cohort", help="cohort name (the folder when no students are given)")
    rel.add_argument("--student", action="append", help="release to this student (repeat); seeds differ per student")
    rel.add_argument("--roster", help="a file with one student name per line (first CSV column)")
    rel.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="set a parameter")

    gr = sub.add_parser("grade", help="grade <folder>/<student>/<lab>.ipynb into a gradebook and feedback")
    gr.add_argument("submissions", type=Path)
    gr.add_argument("-o", "--out", type=Path, required=True, help="output folder (gradebook.csv, feedback/)")
    gr.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded at once")
    gr.add_argument("--manifest", type=Path, help="release manifest.json: the parameters each student got")
    gr.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per notebook cell (papermill)")
    gr.add_argument("--test-timeout", type=float, default=15.0, help="seconds per task or test cell (in the kernel)")
    gr.add_argument("--submission-timeout", type=float, default=180.0, help="seconds per submission in all")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for lab in find_labs(args.labs_dir):
                print(f"{lab.id:24} {lab.max_points:5g} points  {len(lab.tests)} tests  parameters: "
                      + ", ".join(f"{k}={v!r}" for k, v in lab.parameter_defaults.items()))
        elif args.command == "release":
            labs = [load_lab(name, args.labs_dir) for name in args.labs] if args.labs else find_labs(args.labs_dir)
            if not labs:
                raise LabError("no labs to release")
            manifest = release(labs, args.out, cohort=args.cohort, students=_students(args),
                               parameters=_params(args.param))
            for who, released in manifest["released"].items():
                print(f"{who}: " + ", ".join(f"{lab} {params}" for lab, params in released.items()))
            print(f"wrote {args.out}/<who>/<lab>.ipynb and {args.out / 'manifest.json'}")
        else:
            started = time.monotonic()
            outcomes = grade_folder(args.submissions, args.out, jobs=args.jobs, manifest=args.manifest,
                                    labs_dir=args.labs_dir, cell_timeout_s=args.cell_timeout,
                                    test_timeout_s=args.test_timeout, submission_timeout_s=args.submission_timeout,
                                    progress=True)
            for o in outcomes:
                note = f"  ({o.error})" if o.error else ""
                print(f"{o.student:20} {o.lab:24} {o.points:5g}/{o.max:<5g} {o.seconds:6.1f} s{note}")
            print(f"graded {len(outcomes)} submission(s) in {time.monotonic() - started:.1f} s; "
                  f"wrote {args.out / 'gradebook.csv'} and {args.out / 'feedback'}/")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
