"""Shared test fixtures: every helpers test must leave no server, thread or socket behind."""

from __future__ import annotations

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
    assert not left, f"test left things behind: {left}"
