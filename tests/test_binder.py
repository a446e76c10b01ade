"""Binder's configuration (binder/): repo2docker reads it, and its pins match ours.

`repo2docker --no-build --debug .` prints the Dockerfile it would build, without needing a
Docker engine, so we can assert what Binder will do: Python 3.11 from binder/runtime.txt,
the packages of binder/requirements.txt, then binder/postBuild. A `binder/` folder makes
repo2docker ignore configuration files at the repository root, so binder/requirements.txt
must repeat requirements.txt exactly; the first test keeps the two from drifting apart.
binder/apt.txt names the Debian packages of the programs the lessons run (ss, lsof, ...),
the same as ./course's LESSON_PACKAGES, and repo2docker's plan must install them.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
NEWS_SETTINGS = Path("@jupyterlab/apputils-extension/notification.jupyterlab-settings")


def test_binder_requirements_match_root_requirements() -> None:
    """binder/requirements.txt is requirements.txt, line for line."""
    root = (ROOT / "requirements.txt").read_text().splitlines()
    binder = (BINDER / "requirements.txt").read_text().splitlines()
    diff = "\n".join(difflib.unified_diff(root, binder, "requirements.txt", "binder/requirements.txt", lineterm=""))
    assert root == binder, f"copy requirements.txt to binder/requirements.txt:\n{diff}"


@pytest.mark.timeout(120)
def test_repo2docker_builds_from_binder_folder() -> None:
    """repo2docker plans Python 3.11, binder/requirements.txt and binder/postBuild."""
    result = subprocess.run(
        [sys.executable, "-m", "repo2docker", "--no-build", "--debug", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"repo2docker --no-build failed ({result.returncode}):\n{out[-3000:]}"
    assert "Building conda environment for python=3.11" in out, "binder/runtime.txt (python-3.11) was not used"
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in out, "binder/requirements.txt is not installed"
    assert 'pip install --no-cache-dir -r "requirements.txt"' not in out, "the root requirements.txt was used"
    assert "RUN ./binder/postBuild" in out, "binder/postBuild does not run"
    packages = " ".join(sorted(_apt_txt()))
    assert f"apt-get install --yes --no-install-recommends {packages} &&" in out, (
        f"binder/apt.txt ({packages}) is not installed: {[line for line in out.splitlines() if 'apt-get' in line]}")
    assert "fonts-noto-cjk" in out, "binder/apt.txt's CJK font (the zh-CN edition's glyphs) is not installed"


def _apt_txt() -> list[str]:
    """The packages binder/apt.txt lists (comments and blank lines left out, as repo2docker does)."""
    lines = (BINDER / "apt.txt").read_text().splitlines()
    return [p for p in (line.partition("#")[0].strip() for line in lines) if p]


def test_apt_txt_lists_the_packages_course_installs() -> None:
    """binder/apt.txt names the Debian packages ./course installs for learners: its
    LESSON_PACKAGES, the programs the lessons run beside their own code (ss, ip, nstat, tc,
    lsof, netstat), which the doctor looks for; and ensure_cjk_font's font for the zh-CN edition."""
    course = (ROOT / "course").read_text()
    found = re.search(r"^LESSON_PACKAGES=\(([^)]*)\)$", course, flags=re.M)
    assert found, "./course defines no LESSON_PACKAGES=(...)"
    font = re.findall(r"^ensure_cjk_font\(\) \{\n(?:.*\n)*?.*apt_install (\S+);", course, flags=re.M)
    assert font == ["fonts-noto-cjk"], font
    assert sorted(_apt_txt()) == sorted(found[1].split() + font), (
        "keep binder/apt.txt equal to ./course's LESSON_PACKAGES and its CJK font")
    assert {"iproute2", "lsof"} <= set(_apt_txt())


@pytest.mark.timeout(60)
def test_postbuild_installs_helpers_and_silences_news(tmp_path: Path) -> None:
    """postBuild installs this checkout (editable) and writes valid JupyterLab settings.

    A stand-in `python` records the pip call instead of installing into this venv.
    """
    import jsonschema
    from jupyterlab.commands import get_app_dir

    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    calls = tmp_path / "python-calls.txt"
    (stub_bin / "python").write_text(f'#!/bin/sh\necho "$PWD $*" >> {calls}\n')
    (stub_bin / "python").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JUPYTERLAB_SETTINGS_DIR"}
    env.update(HOME=str(home), PATH=f"{stub_bin}{os.pathsep}{env.get('PATH', '')}")

    result = subprocess.run(
        ["bash", str(BINDER / "postBuild")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"binder/postBuild failed:\n{result.stdout}{result.stderr}"
    assert calls.read_text().split() == [
        str(ROOT),
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--no-deps",
        "--editable",
        ".",
    ]

    settings = json.loads((home / ".jupyter/lab/user-settings" / NEWS_SETTINGS).read_text())
    schema_path = Path(get_app_dir()) / "schemas" / NEWS_SETTINGS.parent / "notification.json"
    jsonschema.Draft7Validator(json.loads(schema_path.read_text())).validate(settings)
    assert settings == {"fetchNews": "false", "checkForUpdates": False}
