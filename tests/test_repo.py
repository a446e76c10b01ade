"""The repository's promises: the two commands, CI calling them, ruff, links that resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_gives_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", readme, flags=re.S)
    commands = [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if line.startswith("./course")]
    assert commands == ["./course lab", "./course test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec \./course test$", ci, flags=re.M), "CI must run exactly ./course test"


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [p for p in re.findall(r"\]\(((?:notebooks|labs)/[^)]+)\)", readme) if not (ROOT / p).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_ruff_is_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_helpers_index_lists_every_module() -> None:
    """helpers/README.md names every module (core's one by one, other packages as folders),
    and every module it names exists."""
    helpers = ROOT / "helpers"
    modules = {p.name for p in helpers.glob("*.py") if p.name != "__init__.py"}
    modules |= {f"{p.name}/" for p in helpers.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"core/"}
    modules |= {f"core/{p.name}" for p in (helpers / "core").glob("*.py") if p.name != "__init__.py"}
    index = (helpers / "README.md").read_text()
    listed = set(re.findall(r"^\| `([\w/]+(?:\.py|/))` \|", index, flags=re.M))
    assert not modules - listed, f"add to helpers/README.md: {sorted(modules - listed)}"
    assert not listed - modules, f"helpers/README.md lists modules that do not exist: {sorted(listed - modules)}"


def test_nothing_points_outside_the_repository() -> None:
    """A clone has only this repository: no file may send a reader to the shared folder beside it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    if not tracked:  # a copy without .git (the normal-user run; git fails there): every text file instead
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    outside = "../" + "shared"  # (spelled so that this file does not match itself)
    pointing = [name for name in tracked if name.endswith((".md", ".py", ".ipynb", ".txt", ".toml", ".cfg"))
                and (ROOT / name).exists() and outside in (ROOT / name).read_text(errors="replace")]
    assert not pointing, f"these point to {outside}/, which a clone does not have: {pointing}"


def test_contributing_names_every_lesson_rule_and_only_those() -> None:
    """Each rule CONTRIBUTING.md states carries the name of what checks it, in brackets: a
    rule of tests/lesson_rules.py or a test function; and every rule there is stated."""
    sys.path.insert(0, str(ROOT / "tests"))
    import lesson_rules

    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text[text.index("## Rules a lesson follows"):text.index("## Writing an exercise")]
    named = set(re.findall(r"\[`?([a-z_]+)`?\]", section))
    rules = set(lesson_rules.STATIC_RULES) | set(lesson_rules.RUN_RULES)
    tests = {n for n in named - rules if n.startswith("test_")}
    assert rules <= named, f"CONTRIBUTING.md does not state the rules {sorted(rules - named)}"
    assert named <= rules | tests, f"CONTRIBUTING.md names checks that do not exist: {sorted(named - rules - tests)}"
    test_names = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert all(f"def {t}(" in test_names for t in tests), tests


def test_an_exception_that_kills_a_thread_fails_the_test(tmp_path: Path) -> None:
    """pyproject's filterwarnings makes an unhandled exception in a thread an error, so a
    dying background thread fails the run instead of printing a warning at its end."""
    (tmp_path / "test_dies.py").write_text(
        "import threading\n\n"
        "def test_a_thread_dies():\n"
        "    t = threading.Thread(target=lambda: 1 / 0)\n"
        "    t.start()\n"
        "    t.join()\n"
    )
    done = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_dies.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "PytestUnhandledThreadExceptionWarning" in done.stdout and "ZeroDivisionError" in done.stdout, done.stdout


def test_the_two_lanes_run_every_test_file_once() -> None:
    """`./course test` splits the files between two lanes (tests/lanes.py): none left out, none twice."""
    import lanes

    lane_a, lane_b = lanes.plan()
    every = sorted(f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py"))
    assert sorted(lane_a + lane_b) == every
    assert lane_a[0] == "tests/test_hub.py" and "tests/test_notebooks.py" in lane_a


def test_a_failing_lane_fails_the_run_and_its_report_is_shown(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import lanes

    (tmp_path / "test_fine.py").write_text("def test_fine():\n    pass\n")
    (tmp_path / "test_broken.py").write_text("def test_broken():\n    assert 1 == 2, 'this lane broke'\n")
    for a, b, want in (("test_fine.py", "test_broken.py", 1), ("test_broken.py", "test_fine.py", 1),
                       ("test_fine.py", "test_fine.py", 0)):
        rc = lanes.run([a, "-p", "no:cacheprovider"], [b, "-p", "no:cacheprovider"], cwd=tmp_path,
                       log_path=tmp_path / "lane-b.log")
        out = capfd.readouterr().out
        assert (rc != 0) == bool(want), (a, b, rc, out[-2000:])
        a_part, marker, b_part = out.partition(f"===== lane B: {b}")
        assert marker, out[-2000:]
        assert ("this lane broke" in a_part) == (a == "test_broken.py")
        assert ("this lane broke" in b_part) == (b == "test_broken.py")


def test_a_normal_users_failure_is_reported_with_its_traceback() -> None:
    """The normal user's run shows its failures section, not only the last lines (a CI run
    once showed 40 lines of durations and lost the assertion that failed)."""
    from test_unprivileged import report

    output = "\n".join(["collected 3 items", "=== FAILURES ===", "___ test_x ___", "E   assert 1 == 2",
                        *[f"{i}.00s call tests/test_x.py::t{i}" for i in range(60)], "= 1 failed, 2 passed ="])
    shown = report(output)
    assert "E   assert 1 == 2" in shown and shown.endswith("= 1 failed, 2 passed =")
    assert "collected 3 items" not in shown
    long = report("\n".join(["=== FAILURES ===", *["E x"] * 500, *["tail"] * 40]))
    assert "[... 201 more lines of failures ...]" in long and long.count("E x") == 299  # the header and 299 lines: 300
    assert report("passed\nall") == "passed\nall"
