"""bench/soak.py's one-line failure reports (the soak itself runs for half an hour: not here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("soak", Path(__file__).resolve().parent.parent / "bench" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


class CellError(Exception):
    """Shaped like nbclient's CellExecutionError: the kernel's traceback as text, plus ename/evalue."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.ename, self.evalue = "AssertionError", ""


# Traceback text as IPython 8 and IPython 9 print it (colours included, as nbclient passes them on).
IPYTHON8 = "\x1b[0;32m      6\x1b[0m held \x1b[38;5;241m=\x1b[39m [\x1b[38;5;241m1\x1b[39m]\n" \
    "\x1b[0;32m----> 7\x1b[0m \x1b[38;5;28;01massert\x1b[39;00m held \x1b[38;5;241m==\x1b[39m []\n"
IPYTHON9 = "\x1b[32m     31\x1b[39m held = [\x1b[32m1\x1b[39m]\n" \
    "\x1b[32m---> \x1b[39m\x1b[32m32\x1b[39m \x1b[38;5;28;01massert\x1b[39;00m held == []\n"


@pytest.mark.parametrize("text", [IPYTHON8, IPYTHON9], ids=["ipython8", "ipython9"])
def test_a_bare_assert_in_a_cell_is_reported_with_its_line(text: str) -> None:
    assert soak._why(CellError(text)) == "at `assert held == []`: AssertionError: "


def test_an_error_outside_a_cell_says_where_it_was_raised() -> None:
    try:
        assert None is not None  # noqa: PT017 - the report of a bare assert is the subject
    except AssertionError as exc:
        report = soak._why(exc)
    assert report.startswith("in test_soak.py:") and "not in a cell" in report, report
