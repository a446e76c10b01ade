"""Run part of the suite as a normal user, from root: a copy of the checkout that user owns.

tests/test_unprivileged.py runs the helpers' and labs' tests this way when the suite runs as
root, and tests/check_lesson.py runs one lesson's tests this way (``./course check NN``).
The copy leaves out the virtual environment, git and caches; the user gets its own home in
the same temporary folder, and a PATH without root's own Python tools. The user's Python is
the learners' environment ./course builds for the hub test (.venv/learners, from the
system's python3, readable by every user), if it exists.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER = os.environ.get("COURSE_TEST_USER", "course-learner")
VENV = Path(os.environ.get("COURSE_VENV", ROOT / ".venv"))
if not VENV.is_absolute():
    VENV = ROOT / VENV
# ./course (as root) installs the learners' own environment inside the venv: a venv from the
# system's python3, which normal users may run (the hub test's single-user servers use it too).
LEARNERS_VENV = VENV / "learners"
SKIP_COPY = {".venv", ".git", "artifacts", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def ensure_user() -> pwd.struct_passwd:
    """The normal user's account, created (with a home) if it does not exist yet."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
        return pwd.getpwnam(USER)


@contextmanager
def user_copy() -> Iterator[tuple[Path, dict[str, str]]]:
    """(the copy of the checkout, the environment to run in) for USER; removed afterwards."""
    user = ensure_user()
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
        if (LEARNERS_VENV / "bin" / "python").exists():  # built by ./course as root, readable by every user
            env["COURSE_VENV"] = str(LEARNERS_VENV)
        yield repo, env
    finally:
        shutil.rmtree(work, ignore_errors=True)


def runuser() -> str | None:
    """The path of util-linux's runuser, or None."""
    return shutil.which("runuser")
