"""Shared test fixtures: every helpers test must leave no server, thread or socket behind."""

from __future__ import annotations

import sys
import threading
import traceback
from pathlib import Path

import pytest

from helpers import hygiene, servers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail a helpers test that leaves a course server, thread or socket open."""
    if request.node.get_closest_marker("browser") or "notebook" in request.node.nodeid:
        yield
        return
    before = hygiene.open_sockets()  # e.g. a module-scoped fixture's sockets
    yield
    left = hygiene.leftovers(ignore=before)
    servers.stop_all()
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
