"""helpers.core.recordings: the label, the file and reading it back, on real files in tmp_path
and on the recordings committed under notebooks/recorded/ (read as they are, never rewritten)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import fallback_checks
import pytest

from helpers.core import lessonfiles, recordings

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted((ROOT / "notebooks" / "recorded").glob("*.json"))
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"


def _label_and_data(label: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return label, data


# --------------------------------------------------------------------------- the label


def test_a_label_says_who_where_when_and_the_kernel_as_lessons_show_it() -> None:
    said = recordings.label("on a test machine", by="helpers.netns")
    release = re.escape(os.uname().release)
    assert re.fullmatch(rf"recorded by helpers\.netns on a test machine, {STAMP}, Linux {release}", said), said
    assert fallback_checks.RECORDED.search(f"RECORDED earlier: {said}"), said
    plain = recordings.label("recorded by helpers.capture on a test machine")  # capture and nagle: `where` says it
    assert re.fullmatch(rf"recorded by helpers\.capture on a test machine, {STAMP}, Linux {release}", plain), plain
    assert fallback_checks.RECORDED.search(f"RECORDED earlier: {plain}"), plain


@pytest.mark.parametrize("where", ["", "  ", None, 3])
def test_a_label_needs_where_it_was_recorded(where: Any) -> None:
    message = rf"^where must say where it was recorded \(machine\) as a non-empty str, got {re.escape(repr(where))}$"
    with pytest.raises(TypeError, match=message):
        recordings.label(where, by="helpers.netns")
    with pytest.raises(TypeError, match=message):
        recordings.check_where(where)
    assert recordings.check_where("here") == "here"


# --------------------------------------------------------------------------- writing and reading


def test_a_recording_is_written_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    said = recordings.label("in a test", by="helpers.netns")
    recordings.write(path, {"recorded": said, "result": [1, 2.5, {"x": None}]})
    text = path.read_text()
    assert text == json.dumps({"recorded": said, "result": [1, 2.5, {"x": None}]}, indent=1) + "\n"
    assert recordings.read(path, "save_run()", _label_and_data) == (said, {"recorded": said,
                                                                            "result": [1, 2.5, {"x": None}]})
    recordings.write(str(path), {"recorded": said, "samples": [[1, 2], [3, 4]]}, indent=None)  # one line
    assert path.read_text().count("\n") == 1
    assert recordings.read(str(path), "x()", lambda label, data: data["samples"]) == [[1, 2], [3, 4]]


@pytest.mark.parametrize("record", [{"result": 1}, {"recorded": 5, "result": 1}, [("recorded", "x")]],
                         ids=["no label", "label not str", "not a dict"])
def test_a_record_without_its_label_is_not_written(tmp_path: Path, record: Any) -> None:
    path = tmp_path / "run.json"
    with pytest.raises(TypeError, match=r"^a recording is a dict whose 'recorded' is its label, got "):
        recordings.write(path, record)
    assert not path.exists()


def test_a_value_json_cannot_hold_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    with pytest.raises(TypeError, match="not JSON serializable"):
        recordings.write(path, {"recorded": "x", "result": object()})
    assert not path.exists()


@pytest.mark.parametrize(("text", "why"), [
    ("not json", r"JSONDecodeError: Expecting value"),
    ("[1, 2]", r"TypeError: list indices must be integers"),
    ('{"result": 1}', r"KeyError: 'recorded'"),
    ('{"recorded": 7}', r"TypeError: the label 'recorded' must be a str, got 7"),
    ('{"recorded": "x"}', r"KeyError: 'result'"),  # build() finds no result
    ('{"recorded": "x", "result": 5}', r"AttributeError: 'int' object has no attribute 'items'"),
    ('{"recorded": "x", "result": {"a": ["z"]}}', r"ValueError: invalid literal for int\(\)"),
    (b"\xff\xfe".decode("latin-1"), r"UnicodeDecodeError: "),
], ids=["not json", "a list", "no label", "label not str", "missing key", "wrong type", "bad value", "not utf-8"])
def test_a_bad_file_is_one_value_error_naming_the_file_and_its_saver(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("latin-1"))

    def build(label: str, data: dict[str, Any]) -> dict[str, int]:
        return {k: int(v) for k, (v,) in data["result"].items()}

    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not a recording made by save_run\(\): {why}") \
            as caught:
        recordings.read(path, "save_run()", build)
    assert caught.value.__cause__ is not None  # the original error stays attached
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not a recording of 'sockaddr' made by "
                                         rf"addresses\.save_recording\(\): {why}"):
        recordings.read(path, "addresses.save_recording()", build, part="sockaddr")


def test_a_long_complaint_is_cut_to_200_characters(tmp_path: Path) -> None:
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"recorded": "x"}))

    def build(label: str, data: dict[str, Any]) -> None:
        raise KeyError("k" * 500)

    with pytest.raises(ValueError) as caught:
        recordings.read(path, "save_run()", build)
    assert str(caught.value) == f"{path} is not a recording made by save_run(): KeyError: '{'k' * 199}"


def test_what_is_no_file_is_not_called_a_bad_recording(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^no file '.*missing\.json'$"):
        recordings.read(tmp_path / "missing.json", "save_run()", _label_and_data)
    with pytest.raises(TypeError, match=r"^path must be a file name \(str or pathlib\.Path\), got None$"):
        recordings.read(None, "save_run()", _label_and_data)  # type: ignore[arg-type]

    def buggy(label: str, data: dict[str, Any]) -> None:
        raise RuntimeError("a bug in build")

    with pytest.raises(RuntimeError, match="^a bug in build$"):  # no sign of a malformed file: not wrapped
        recordings.read(COMMITTED[0], "save_run()", buggy)


# --------------------------------------------------------------------------- the committed recordings


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_the_committed_recordings_read_as_they_are(path: Path, tmp_path: Path) -> None:
    """Each reads back with the label lessons show; written again, its data gives the very same
    bytes (one line for nagle's, whose samples are many), so write() keeps the files' format."""
    raw = path.read_text()
    label, data = recordings.read(path, "a recorder", _label_and_data)
    assert data == json.loads(raw) and fallback_checks.RECORDED.search(f"RECORDED earlier: {label}"), label
    again = tmp_path / path.name
    recordings.write(again, data, indent=None if label.startswith("recorded by helpers.nagle") else 1)
    assert again.read_text() == raw


def test_a_recording_is_read_from_an_editions_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    edition = tmp_path / "notebooks" / "zh-CN"
    edition.mkdir(parents=True)
    monkeypatch.chdir(edition)  # where a zh-CN lesson's kernel starts: no recorded/ here
    name = f"recorded/{COMMITTED[0].name}"
    assert lessonfiles.lesson_file(name) == COMMITTED[0]
    label, _ = recordings.read(name, "a recorder", _label_and_data)
    assert label == json.loads(COMMITTED[0].read_text())["recorded"]
