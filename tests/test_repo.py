"""The repository's promises: the two commands, CI calling them, ruff, links that resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
