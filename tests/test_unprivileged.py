"""The course as a learner runs it: no root. When the suite runs as root (as CI does), this
test copies the checkout, gives it to an unprivileged user, and runs the README test
command there on the lessons and the helpers tests, so root-only behaviour cannot hide."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USER = os.environ.get("COURSE_TEST_USER", "course-learner")
# What the unprivileged run covers: every notebook (run and leak-checked) and the helpers.
SUITE = ["tests", "-m", "not browser and not unprivileged", "--ignore=tests/test_binder.py", "-p", "no:cacheprovider"]
SKIP_COPY = {".venv", ".git", "artifacts", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
        return pwd.getpwnam(USER)


@pytest.mark.unprivileged
@pytest.mark.timeout(1800)
def test_suite_passes_as_a_normal_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("this run is already unprivileged: every test above ran as a normal user")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("runuser (util-linux) is missing, so the suite cannot switch to a normal user here")
    user = _ensure_user()
    work = Path(tempfile.mkdtemp(prefix="course-unprivileged-"))
    try:
        repo = work / "course"
        shutil.copytree(ROOT, repo, ignore=lambda _dir, names: [n for n in names if n in SKIP_COPY])
        (work / "home").mkdir()
        for path in [work, *work.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",  # root's own Python tools stay out of reach
            "HOME": str(work / "home"),
            "LANG": "C.UTF-8",
            **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "SSL_", "REQUESTS_CA"))},
        }
        result = subprocess.run(
            [runuser, "-u", USER, "--", "./course", "test", *SUITE],
            cwd=repo, env=env, capture_output=True, text=True, timeout=1700,
        )
        tail = "\n".join(result.stdout.splitlines()[-40:] + ["--- stderr:"] + result.stderr.splitlines()[-15:])
        assert result.returncode == 0, f"as user {USER}, ./course test failed:\n{tail}"
        print(tail)
    finally:
        shutil.rmtree(work, ignore_errors=True)
