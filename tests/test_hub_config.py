"""The deployment files under hub/ and the recipes in docs/classroom.md that use them.

* hub/tljh/config.yaml and hub/z2jh/config.yaml are valid YAML, and every key they set is
  in hub/schema.yaml, spelled and typed as the project documents it (with its source);
  no schema entry is left unused.
* The TLJH commands in docs/classroom.md set exactly what hub/tljh/config.yaml holds.
* The z2jh image is the one the documented repo2docker command builds from binder/:
  repo2docker, asked for that command's plan (--no-build), installs binder/requirements.txt,
  runs binder/postBuild and puts the repository where the postStart hook copies lessons from.
* The course's Jupyter config for hubs puts kernels on the IPC transport (the class test
  runs the hub with it and checks each kernel's transport).
* The nbgitpuller link points at this course's repository and at a lesson that exists.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT / "hub"
DOC = ROOT / "docs" / "classroom.md"
SCHEMA = yaml.safe_load((HUB / "schema.yaml").read_text())
TYPES = {"str": str, "int": int, "bool": bool, "number": (int, float), "dict": dict}


def _leaves(tree: dict, known: set[str], prefix: str = "") -> dict[str, object]:
    """Dotted key paths to values; a path the schema names as a whole (a dict) stops there."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in known:
            out.update(_leaves(value, known, path + "."))
        else:
            out[path] = value
    return out


def _accepts(kind: str | list[str], value: object) -> bool:
    kinds = kind if isinstance(kind, list) else [kind]
    if isinstance(value, bool):
        return "bool" in kinds
    return any(isinstance(value, TYPES[k]) for k in kinds)


@pytest.mark.parametrize("project", sorted(SCHEMA))
def test_config_keys_are_documented(project: str) -> None:
    spec = SCHEMA[project]
    config = yaml.safe_load((ROOT / spec["file"]).read_text())
    assert isinstance(config, dict), f"{spec['file']} is not a YAML mapping"
    used = _leaves(config, set(spec["keys"]))
    unknown = sorted(set(used) - set(spec["keys"]))
    assert not unknown, f"{spec['file']} sets keys hub/schema.yaml does not document: {unknown}"
    unused = sorted(set(spec["keys"]) - set(used))
    assert not unused, f"hub/schema.yaml documents keys {spec['file']} no longer sets: {unused}"
    for key, value in used.items():
        entry = spec["keys"][key]
        assert entry["docs"].startswith("https://") and entry["schema"], f"{key}: name its documentation"
        assert _accepts(entry["type"], value), f"{spec['file']}: {key} = {value!r} is not {entry['type']}"
        if "values" in entry:
            assert value in entry["values"], f"{spec['file']}: {key} = {value!r} is not one of {entry['values']}"


def _tljh_commands() -> dict[str, str]:
    sets = re.findall(r"^\s*sudo tljh-config set (\S+) (\S+)$", DOC.read_text(), re.M)
    assert sets, "docs/classroom.md gives no 'sudo tljh-config set KEY VALUE' lines"
    return dict(sets)


def test_tljh_commands_match_the_config_file() -> None:
    config = _leaves(yaml.safe_load((HUB / "tljh" / "config.yaml").read_text()), set())
    assert _tljh_commands() == {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}


def _repo2docker_command() -> list[str]:
    lines = [line.strip() for line in DOC.read_text().splitlines() if line.strip().startswith("jupyter-repo2docker ")]
    assert len(lines) == 1, f"docs/classroom.md should give one repo2docker build command, found {lines}"
    return shlex.split(lines[0])


def test_z2jh_image_is_the_documented_build() -> None:
    config = yaml.safe_load((HUB / "z2jh" / "config.yaml").read_text())["singleuser"]
    command = _repo2docker_command()
    image = command[command.index("--image-name") + 1]
    assert image == f"{config['image']['name']}:{config['image']['tag']}", (image, config["image"])
    target = command[command.index("--target-repo-dir") + 1]
    hook = " ".join(config["lifecycleHooks"]["postStart"]["exec"]["command"])
    assert f"{target}/notebooks" in hook, f"the postStart hook copies from elsewhere than {target}: {hook}"
    assert command[-1] == ".", "build from the repository's root, where repo2docker finds binder/"


@pytest.mark.timeout(120)
def test_repo2docker_plans_the_documented_image() -> None:
    """The documented command, with --no-build: repo2docker's plan uses binder/ and puts the
    repository (and so the editable install of helpers) in the target folder."""
    command = _repo2docker_command()
    command = [sys.executable, "-m", "repo2docker", "--no-build", "--debug",
               *[a for a in command[1:] if a not in ("--no-run",)]]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100, stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"repo2docker --no-build failed ({result.returncode}):\n{out[-3000:]}"
    from repo2docker.__main__ import make_r2d

    documented = _repo2docker_command()
    r2d = make_r2d(documented[1:])  # the command as repo2docker itself reads it
    given = dict(zip(documented, documented[1:]))
    assert r2d.target_repo_dir == given["--target-repo-dir"] and r2d.run is False
    assert (r2d.user_id, r2d.user_name, r2d.output_image_spec) == (1000, "jovyan", given["--image-name"])
    # the target folder is the REPO_DIR build argument: the repository is copied there and
    # postBuild (which installs helpers, editable) runs there
    assert "COPY --chown=1000:1000 src/ ${REPO_DIR}/" in out or "src/ ${REPO_DIR}/" in out, "repository not in REPO_DIR"
    assert "WORKDIR ${REPO_DIR}" in out
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in out, "binder/requirements.txt is not installed"
    assert "RUN ./binder/postBuild" in out, "binder/postBuild does not run"


def test_jupyter_config_puts_kernels_on_ipc() -> None:
    config = json.loads((HUB / "jupyter" / "jupyter_server_config.json").read_text())
    assert config == {"KernelManager": {"transport": "ipc"}}


def test_nbgitpuller_link_opens_a_lesson_of_this_course() -> None:
    doc = DOC.read_text()
    links = re.findall(r"https://\S+/hub/user-redirect/git-pull\?\S+", doc)
    assert links, "docs/classroom.md gives no nbgitpuller link"
    badge = re.search(r"mybinder\.org/v2/gh/([^/]+/[^/?]+)/", (ROOT / "README.md").read_text())
    for link in links:
        query = parse_qs(urlparse(link.rstrip(")`")).query)
        assert query["repo"] == [f"https://github.com/{badge.group(1)}"], query["repo"]
        assert query["branch"] == ["main"], query
        urlpath = query["urlpath"][0]
        assert urlpath.startswith("lab/tree/course/"), urlpath
        assert (ROOT / urlpath.removeprefix("lab/tree/course/")).exists(), f"{urlpath} is not in the repository"
