"""Command line: ``python -m helpers.labs {list,release,grade,merge}`` (see labs/README.md).

Mistakes in what is typed (an unknown lab, ``-p seed=abc``, ``--shard 5/4``, a deadline
without its UTC offset) print one ``error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path
from typing import NoReturn

from .source import LabError

PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one 'error:' line (and exit status 2), like LabError."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise LabError(f"-p wants name=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def _deadlines(values: list[str]) -> dict[str, str]:
    """``[LAB=]TIME`` options -> {lab or '*': time}."""
    out = {}
    for value in values:
        lab, sep, when = value.partition("=")
        out[lab.strip() if sep else "*"] = when if sep else value
    return out


def _students(args: argparse.Namespace) -> list[str] | None:
    from .books import read_roster

    names = list(args.student or [])
    if args.roster:
        names += [p["student"] for p in read_roster(Path(args.roster))]
    if len(set(names)) != len(names):
        raise LabError("a student is named twice in --student/--roster")
    return names or None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m helpers.labs", description="Release and grade the course labs.")
    parser.add_argument("--labs-dir", type=Path, default=None, help="where the lab sources are (default: labs/)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the labs, their lessons, parameters and points")

    rel = sub.add_parser("release", help="write student versions (stubs, hidden tests named only, parameters)")
    rel.add_argument("labs", nargs="*", help="lab ids or numbers (default: all)")
    rel.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    rel.add_argument("--cohort", default="cohort", help="cohort name (the folder when no students are given)")
    rel.add_argument("--student", action="append", help="release to this student (repeat); seeds differ per student")
    rel.add_argument("--roster", help="students: one name per line, or a CSV with a 'student' column")
    rel.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="set a parameter")
    rel.add_argument("--deadline", action="append", default=[], metavar="[LAB=]TIME",
                     help="deadline, ISO 8601 with its UTC offset (2026-03-01T23:59+01:00); LAB= for one lab; "
                          "kept in the manifest")
    rel.add_argument("--late-penalty", metavar="P%/day[,max=C%]", help="late policy kept in the manifest")
    rel.add_argument("--lang", metavar="LANG", help="release an edition's text (zh-CN): each lab's markdown from "
                                                    "i18n/LANG/labs/<lab>.json")

    gr = sub.add_parser("grade", help="grade <folder>/<student>/<lab>.ipynb into records, gradebooks and feedback")
    gr.add_argument("submissions", type=Path, help="a folder of <student>/<lab>.ipynb")
    gr.add_argument("-o", "--out", type=Path, required=True, help="output folder (results/, *.csv, feedback/)")
    gr.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded at once")
    gr.add_argument("--manifest", type=Path, help="release manifest.json: each student's parameters, the deadlines")
    gr.add_argument("--cell-timeout", type=float, default=60.0, help="seconds for one of the learner's cells to load")
    gr.add_argument("--test-timeout", type=float, default=15.0, help="seconds per test (a test may set its own)")
    gr.add_argument("--submission-timeout", type=float, default=180.0, help="seconds per submission in all")
    gr.add_argument("--sandbox", default="auto", choices=["auto", "on", "off"],
                    help="namespaces per submission: auto (where the kernel allows, else a loud warning), "
                         "on (required), off")
    gr.add_argument("--memory-mb", type=int, default=4096, help="address-space limit of the learner's process")
    gr.add_argument("--shard", default="1/1", metavar="K/N", help="grade only share K of N (a stable split)")
    gr.add_argument("--regrade", metavar="STUDENT[/LAB[/TEST]]",
                    help="grade these again even if recorded ('*' for every student); the rest is resumed")
    gr.add_argument("--deadline", action="append", default=[], metavar="[LAB=]TIME",
                    help="deadline (ISO 8601 with its UTC offset); over the manifest's")
    gr.add_argument("--late-penalty", metavar="P%/day[,max=C%]", help="late policy, e.g. 10%%/day,max=50%%")
    gr.add_argument("--submission-times", type=Path, metavar="CSV",
                    help="student,lab,submitted_at (default: each file's modification time)")
    gr.add_argument("--export", action="append", default=[], choices=["canvas", "moodle"],
                    help="also write canvas.csv or moodle.csv (repeat for both)")
    gr.add_argument("--roster", type=Path, help="CSV: student, name, canvas_id, sis_user_id, sis_login_id, section, "
                                                "email, username, idnumber (for grades.csv and the exports)")
    gr.add_argument("--private-hidden", action="store_true",
                    help="feedback names failed hidden tests but not their messages")

    me = sub.add_parser("merge", help="combine the output folders of shards 1..N into one")
    me.add_argument("shards", nargs="+", type=Path, help="the shards' output folders")
    me.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    me.add_argument("--export", action="append", default=[], choices=["canvas", "moodle"])
    me.add_argument("--roster", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            from .source import find_labs

            for lab in find_labs(args.labs_dir):
                print(f"{lab.id:24} lessons {','.join(lab.lessons):10} {lab.max_points:5g} points  "
                      f"{len(lab.tests)} tests ({sum(t.hidden for t in lab.tests)} hidden)  parameters: "
                      + ", ".join(f"{k}={v!r}" for k, v in lab.parameter_defaults.items()))
        elif args.command == "release":
            from .release import release
            from .source import find_labs, load_lab

            labs = [load_lab(name, args.labs_dir) for name in args.labs] if args.labs else find_labs(args.labs_dir)
            if not labs:
                raise LabError("no labs to release")
            manifest = release(labs, args.out, cohort=args.cohort, students=_students(args),
                               parameters=_params(args.param), deadlines=_deadlines(args.deadline),
                               late_penalty=args.late_penalty, language=args.lang)
            for who, released in manifest["released"].items():
                print(f"{who}: " + ", ".join(f"{lab} {params}" for lab, params in released.items()))
            print(f"wrote {args.out}/<who>/<lab>.ipynb and {args.out / 'manifest.json'}")
        elif args.command == "grade":
            from .grade import Options, grade_folder, parse_regrade, parse_shard

            options = Options(
                jobs=args.jobs, manifest=args.manifest, labs_dir=args.labs_dir, cell_timeout_s=args.cell_timeout,
                test_timeout_s=args.test_timeout, submission_timeout_s=args.submission_timeout, sandbox=args.sandbox,
                shard=parse_shard(args.shard), regrade=parse_regrade(args.regrade) if args.regrade else None,
                deadlines=_deadlines(args.deadline), late_penalty=args.late_penalty,
                submission_times=args.submission_times, exports=args.export, roster=args.roster,
                private_hidden=args.private_hidden, memory_mb=args.memory_mb, progress=True,
                reap_orphans=_is_the_program)
            started = time.monotonic()
            outcomes = grade_folder(args.submissions, args.out, options)
            for o in outcomes:
                note = f"  ({o.error})" if o.error else ""
                late = f"  {o.late_days} day(s) late: -{o.penalty_percent:g}% = {o.final:g}" if o.late_days else ""
                print(f"{o.student:20} {o.lab:24} {o.points:5g}/{o.max:<5g}{late}{note}")
            print(f"{len(outcomes)} submission(s) in {time.monotonic() - started:.1f} s; wrote "
                  f"{args.out / 'gradebook.csv'}, submissions.csv, grades.csv and {args.out / 'feedback'}/")
        else:
            from .grade import merge

            outcomes = merge(args.out, args.shards, labs_dir=args.labs_dir, roster=args.roster, exports=args.export)
            print(f"merged {len(outcomes)} submission(s) from {len(args.shards)} shard(s) into {args.out}")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


_is_the_program = False  # True only when this module runs as ``python -m helpers.labs``


def _guard_the_grader() -> None:
    """Make this process a child subreaper and not dumpable: the orphans of a runner that died
    become ours, so grading can find and kill them, and no process of our user (a learner's,
    without the sandbox) may open our /proc/<pid>/fd/N to write into a runner's report pipe.

    Process-wide and irreversible, so only the program itself does it: a test (or a notebook)
    that calls main() in-process would otherwise adopt, and never reap, every orphaned
    grandchild of its own later tests.
    """
    global _is_the_program
    _is_the_program = True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except OSError:
        pass


if __name__ == "__main__":
    _guard_the_grader()
    sys.exit(main())
