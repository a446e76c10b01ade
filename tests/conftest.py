"""Shared test fixtures: every test must leave no server, thread, socket or child process behind."""

from __future__ import annotations

import sys
import threading
import traceback
from pathlib import Path

import pytest

from helpers.core import hygiene, registry

ROOT = Path(__file__).resolve().parent.parent
hygiene.track()  # before any test makes a socket: the leak check below needs to see them


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses one of its module's ``SLOW_FIXTURES`` is marked ``slow``.

    For a file whose fast tests share it with tests of one costly module-scoped fixture
    (tests/test_labs.py grades every lab in real kernels once, for many tests): the fast
    loop (``-m "not slow"``) leaves out exactly the tests that need that fixture.
    """
    for item in items:
        slow = set(getattr(getattr(item, "module", None), "SLOW_FIXTURES", ()))
        if slow & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail a test that leaves a course server, thread, socket or child process behind.

    On for every test, notebook runs included: their kernels are child processes that must be
    gone at the end. What a fixture of wider scope made is not the test's leftover (pytest
    sets those up before this function-scoped fixture): the sockets and child processes
    alive at the start, such as the browser test's JupyterLab server and browser, are the
    baseline. One kind of test is exempt, by its marker ``own_leak_check``: the class test
    (tests/test_hub.py) starts a hub and servers as other users and checks from outside,
    more strictly, that none of their processes, sockets or files is left.
    """
    if request.node.get_closest_marker("own_leak_check"):
        yield
        return
    before = hygiene.open_sockets()
    children_before = set(hygiene.leftovers().children)
    yield
    left = hygiene.leftovers(ignore=before)
    left.children = [pid for pid in left.children if pid not in children_before]
    registry.stop_all()
    assert not left, f"test left things behind: {left}{_where(left.threads)}"


def _where(names: list[str]) -> str:
    """Where each leftover thread is stuck: the last lines of its stack."""
    frames = sys._current_frames()
    out = []
    for t in threading.enumerate():
        if t.name in names and t.ident in frames:
            stack = "".join(traceback.format_stack(frames[t.ident])[-4:])
            out.append(f"\n--- {t.name} is at:\n{stack}")
    return "".join(out)
