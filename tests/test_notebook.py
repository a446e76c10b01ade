"""helpers.notebook: a lesson's first line (start_lesson), its tables and show_source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import helpers as h
from helpers import notebook

ROOT = Path(__file__).resolve().parent.parent


def test_table_aligns_numbers_right_and_text_left() -> None:
    t = h.table([(1, "nothing", "100"), (20, "read 10 bytes", "90")], columns=["wait", "after", "queued (bytes)"])
    assert repr(t).splitlines() == [
        "wait  after          queued (bytes)",
        "   1  nothing                   100",
        "  20  read 10 bytes              90",
    ]
    html = t._repr_html_()
    assert html.count("<tr>") == 3 and '<td style="text-align:right">20</td>' in html


def test_table_escapes_html_and_keeps_an_empty_table() -> None:
    assert "&lt;b&gt;" in h.table([("<b>",)], columns=["x"])._repr_html_()
    assert repr(h.table([], columns=["a", "b"])) == "a  b"


@pytest.mark.parametrize(
    ("rows", "columns", "error", "message"),
    [
        ([(1, 2)], "ab", TypeError, r"^columns must be a list of str column names, got 'ab'$"),
        ([(1, 2)], [], ValueError, r"^columns must name at least one column$"),
        ([(1,)], ["a", "b"], ValueError, r"^row 0 has 1 cells for 2 columns \['a', 'b'\]: \(1,\)$"),
        (["ab"], ["a", "b"], TypeError, r"^row 0 must be a sequence of cells \(a tuple or list\), got 'ab'$"),
    ],
)
def test_table_refuses_what_is_no_table(rows, columns, error, message) -> None:
    with pytest.raises(error, match=message):
        h.table(rows, columns=columns)


@pytest.mark.parametrize(("lesson", "error"), [(3, TypeError), ("", ValueError), ("03; rm", ValueError)])
def test_start_lesson_wants_the_lessons_number(lesson, error) -> None:
    with pytest.raises(error, match="start_lesson"):
        h.start_lesson(lesson)


def test_start_lesson_turns_tracking_on_in_a_fresh_process() -> None:
    """Import alone tracks nothing (no audit hook); start_lesson() does, and check_clean() sees a
    socket left open. Without start_lesson(), check_clean() says tracking is off."""
    code = f"""
import json, socket, sys
sys.path.insert(0, {str(ROOT)!r})
import helpers as h
out = {{}}
try:
    h.check_clean()
except RuntimeError as exc:
    out["before"] = str(exc)
h.start_lesson("03")
s = socket.socket()
try:
    h.check_clean()
except AssertionError as exc:
    out["left"] = str(exc)
s.close()
h.check_clean()
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    out = json.loads(last)
    assert "tracking is off" in out["before"] and "start_lesson" in out["before"], out
    assert "AF_INET/SOCK_STREAM" in out["left"], out
    assert printed == ["Clean: no server threads, no open sockets, no child processes left behind."]


def test_show_source_names_the_file_and_refuses_what_has_no_source(capsys) -> None:
    assert notebook._where(h.TCPServer) == "helpers/servers.py, TCPServer"
    h.show_source(h.core.registry.stop_all)  # outside a notebook, display() prints the text form
    shown = capsys.readouterr().out
    assert "# helpers/core/registry.py, stop_all" in shown and "def stop_all() -> int:" in shown
    with pytest.raises(TypeError, match=r"^show_source\(\) shows the Python source of a function"):
        h.show_source(5)
    with pytest.raises(TypeError, match="at least one"):
        h.show_source()
