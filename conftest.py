"""For every pytest run from this folder, the tests in tests/ or a notebook given by path
(nbval): the exercise checks keep the learner's progress in a temporary folder, so a test
never writes ~/.local/share/netprog-course/. This file sits at the top so pytest loads it
whatever paths it is given (tests/conftest.py is not loaded for `pytest notebooks/x.ipynb`)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_PROGRESS_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point COURSE_PROGRESS_FILE at a temporary folder before any kernel starts (nbval's,
    the browser test's JupyterLab and every subprocess inherit it)."""
    global _PROGRESS_DIR
    _PROGRESS_DIR = tempfile.mkdtemp(prefix="course-progress-")
    os.environ["COURSE_PROGRESS_FILE"] = os.path.join(_PROGRESS_DIR, "progress.json")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PROGRESS_DIR is not None:
        shutil.rmtree(_PROGRESS_DIR, ignore_errors=True)
