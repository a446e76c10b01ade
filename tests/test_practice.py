"""helpers.practice and helpers.progressbar: the pieces every lesson's exercises use.

The checks of each lesson are tested where they run, in the lesson's kernel, by the
notebook runner (stub, solution, plausible mistake); here: the result, the bounded runner,
check() with a toy exercise, the progress store, the score and the progress line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from pathlib import Path

import nbformat
import pytest
from notebook_runner import execute

from helpers import practice
from helpers.core import hygiene
from helpers.practice import Status, call_bounded, check, exercise, score, store
from helpers.progressbar import Progress, progress

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def progress_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps its own progress file."""
    path = tmp_path / "data" / "progress.json"
    monkeypatch.setenv(store.ENV, str(path))
    return path


# -- the bounded runner ---------------------------------------------------------------------


def test_bounded_call_returns_the_value_and_the_cpu_it_used() -> None:
    out = call_bounded(sum, range(1000), timeout_s=2)
    assert (out.value, out.error, out.overran, out.stopped) == (499500, None, False, True)
    assert 0 <= out.cpu_s <= out.wall_s + 0.05


def test_bounded_call_keeps_the_learners_exception() -> None:
    out = call_bounded(int, "x", timeout_s=2)
    assert isinstance(out.error, ValueError) and out.value is None and not out.overran


def test_a_call_blocked_in_recv_is_woken_by_shutting_its_socket_down() -> None:
    a, b = socket.socketpair()
    try:
        out = call_bounded(b.recv, 10, timeout_s=0.2, sockets=[b])
        assert out.overran and out.stopped, out
        assert b.fileno() == -1, "the socket the learner blocked on is closed"
    finally:
        a.close()
        b.close()


def test_a_busy_loop_is_stopped_by_an_exception_in_its_thread() -> None:
    def spin() -> None:
        while True:
            try:
                pass
            except Exception:  # noqa: BLE001 - a learner's catch-all must not swallow the stop
                pass

    out = call_bounded(spin, timeout_s=0.2)
    assert out.overran and out.stopped and out.error is None, out
    assert out.cpu_s > 0.05, "the loop really ran"


def test_a_thread_that_cannot_be_stopped_is_reported_and_listed_by_the_leak_check() -> None:
    release = threading.Event()
    try:
        out = call_bounded(release.wait, timeout_s=0.1, label="blocked")
        assert out.overran and not out.stopped, out
        assert "course-server-exercise-blocked" in hygiene.leftovers().threads
    finally:
        release.set()
    for thread in threading.enumerate():
        if thread.name == "course-server-exercise-blocked":
            thread.join(5)
    assert "course-server-exercise-blocked" not in hygiene.leftovers().threads


def test_bounded_call_refuses_what_it_cannot_run() -> None:
    with pytest.raises(TypeError, match=r"^call_bounded\(\) needs a function to call, got int 3$"):
        call_bounded(3)
    with pytest.raises(ValueError, match=r"^timeout_s must be a number of seconds in \(0, 60\], got 0$"):
        call_bounded(print, timeout_s=0)


# -- check() on a toy exercise -------------------------------------------------------------


@exercise("98", 1, "answer 42", hint="return 42")
def _answer(t: practice.Trial, fn: object, *, timeout_s: float = 0.5) -> str:
    a, b = (t.own(s) for s in socket.socketpair())
    value = t.call(fn, b, name="fn()", timeout_s=timeout_s, hang_hint="do not wait for data",
                   error_hints={KeyError: "look the key up with .get()"}).value
    t.require(value == 42, f"fn() returned {value!r}", "42, not anything else")
    return "fn() returned 42"


@exercise("98", 2, "a check with a bug", hint="nothing to do")
def _buggy(t: practice.Trial, fn: object) -> str:
    return {}["missing"]


def test_check_says_passed_with_what_it_observed() -> None:
    result = check("98", 1, lambda sock: 42)
    assert result.status is Status.PASSED and result.passed
    assert str(result) == "PASSED: Exercise 1 (answer 42). fn() returned 42"
    assert "PASSED" in result._repr_html_()


@pytest.mark.parametrize(("fn", "observed"), [
    (lambda sock: None, "fn() returned None: replace the `...` with your code."),
    (lambda sock: (_ for _ in ()).throw(NotImplementedError), "fn() raised NotImplementedError: it is still the stub."),
    ("not a function", "fn() is not a function here (got str 'not a function')."),
])
def test_an_unchanged_stub_is_not_done_yet_with_the_exercises_hint(fn: object, observed: str) -> None:
    result = check("98", 1, fn)
    assert (result.status, result.observed, result.hint) == (Status.NOT_DONE, observed, "return 42")
    assert str(result).startswith("NOT DONE YET: Exercise 1 (answer 42). ")


@exercise("97", 1, "a class with a method", hint="define answer() on the class")
def _method(t: practice.Trial, cls: object) -> str:
    if not isinstance(cls, type) or "answer" not in vars(cls):
        t.not_done(f"{getattr(cls, '__name__', cls)!s} defines no answer() yet.")
    return "answer() is there"


def test_not_done_says_not_done_yet_with_the_exercises_hint() -> None:
    class Stub:
        ...

    result = check("97", 1, Stub)
    assert (result.status, result.observed, result.hint) == (
        Status.NOT_DONE, "Stub defines no answer() yet.", "define answer() on the class")

    class Done:
        def answer(self) -> int:
            return 42

    assert check("97", 1, Done).passed


def test_wrong_code_is_not_yet_with_what_was_seen_and_a_hint() -> None:
    result = check("98", 1, lambda sock: 41)
    assert (result.status, result.observed) == (Status.NOT_YET, "fn() returned 41")
    assert result.hint == "42, not anything else"


def test_the_learners_exception_is_named_in_one_line_with_its_hint() -> None:
    result = check("98", 1, lambda sock: {}["port"])
    assert (result.status, result.observed) == (Status.NOT_YET, "fn() raised KeyError: 'port'.")
    assert result.hint == "look the key up with .get()"
    assert "Traceback" not in str(result) and "\n" not in result.observed


def test_a_socket_the_learners_failing_code_made_and_lost_is_closed_at_once() -> None:
    made: list[socket.socket] = []

    def bind_twice(sock: socket.socket) -> None:
        lost = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # never closed by the learner
        made.append(weakref.proxy(lost))
        lost.connect(f"\0course-test-nobody-{os.getpid()}")  # ECONNREFUSED, and `lost` is lost

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # CPython warns as it closes the lost socket
        result = check("98", 1, bind_twice)
    assert result.status is Status.NOT_YET and result.observed.startswith("fn() raised ConnectionRefusedError:"), result
    with pytest.raises(ReferenceError):  # not kept alive by the traceback until a garbage collection
        made[0].fileno()


def test_a_hanging_learner_function_is_stopped_and_reported_and_nothing_leaks() -> None:
    before = hygiene.open_sockets()
    started = time.monotonic()
    result = check("98", 1, lambda sock: sock.recv(1))
    assert time.monotonic() - started < 2, "the check answered within its deadline and the grace"
    assert result.status is Status.NOT_YET
    assert result.observed == "fn() was still running after 0.5 s; the check shut its socket down to stop it."
    assert result.hint == "do not wait for data"
    assert not hygiene.leftovers(ignore=before), "the check closed its sockets and its thread ended"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the learner's unclosed sockets warn
def test_sockets_a_stopped_learner_function_left_in_a_reference_cycle_are_collected() -> None:
    def spin(sock: socket.socket) -> None:
        pair = socket.socketpair()  # never closed: the frame holds it
        try:
            while pair:  # a busy loop: the check stops it with an exception in its thread
                pass
        except BaseException as exc:  # noqa: BLE001 - the stop signal, kept in a cycle on purpose
            err = exc  # the frame now refers to its own traceback: a cycle only the collector frees
            raise err from None

    before = hygiene.open_sockets()
    result = check("98", 1, spin)
    assert result.status is Status.NOT_YET and result.observed.startswith("fn() was still running after 0.5 s")
    assert not hygiene.leftovers(ignore=before), "the check collected the stopped code's garbage, and its sockets"


def test_a_bug_in_the_check_itself_is_said_to_be_the_courses_not_raised() -> None:
    result = check("98", 2, print)
    assert result.status is Status.CHECK_ERROR
    assert result.observed == ("The check itself failed (KeyError: 'missing'); this is a bug in the course, "
                               "not in your code.")


def test_check_and_exercise_refuse_what_does_not_exist() -> None:
    with pytest.raises(ValueError, match=r"^lesson 98 has no exercise 7; its exercises are \[1, 2\]$"):
        check("98", 7, print)
    with pytest.raises(ValueError, match=r"^lesson must be a two-digit string such as '03', got 3$"):
        check(3, 1, print)
    with pytest.raises(ValueError, match=r"^exercise number must be an int >= 1, got 0$"):
        exercise("98", 0, "t", hint="h")
    with pytest.raises(ValueError, match=r"^exercise 1 of lesson 98 is already _answer$"):
        exercise("98", 1, "t", hint="h")(lambda t: "x")


def test_every_result_is_logged_for_the_runner_and_the_score(progress_file: Path) -> None:
    logged = len(practice.results())
    check("98", 1, lambda sock: 42)
    check("98", 2, print)
    check("98", 1, lambda sock: 41)
    new = practice.results()[logged:]
    assert [r.status for r in new] == [Status.PASSED, Status.CHECK_ERROR, Status.NOT_YET]
    assert new[-1].to_dict()["status"] == "not yet"
    s = score("98")
    assert s.passed == 0, "the latest result counts: exercise 1 is not passing now"
    assert str(s).splitlines() == [
        "Lesson 98: 0 of 2 exercises passed.",
        "  Exercise 1 (answer 42): NOT YET",
        "  Exercise 2 (a check with a bug): CHECK ERROR",
        "Saved progress for lesson 98: 1 of 2 passed at least once.",
    ]
    assert "0 of 2 exercises passed" in s._repr_html_()


# -- the progress store --------------------------------------------------------------------


def test_the_progress_file_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(store.ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store.progress_file() == tmp_path / "xdg" / "netprog-course" / "progress.json"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # the XDG spec: ignore a relative path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store.progress_file() == tmp_path / "home" / ".local" / "share" / "netprog-course" / "progress.json"
    monkeypatch.setenv(store.ENV, "progress.json")
    with pytest.raises(ValueError, match=r"^COURSE_PROGRESS_FILE must be an absolute path, got 'progress.json'$"):
        store.progress_file()
    result = check("98", 1, lambda sock: 42)  # a check and the score still answer
    assert result.passed and result.note == ("Progress not saved (ValueError: COURSE_PROGRESS_FILE must be an "
                                             "absolute path, got 'progress.json').")
    with pytest.warns(UserWarning, match=r"^no progress file: COURSE_PROGRESS_FILE must be an absolute path"):
        assert score("98").saved == []


def test_a_passed_exercise_stays_passed(progress_file: Path) -> None:
    assert store.record("03", 2, "t", "passed", True) == ""
    assert store.record("03", 2, "t", "not yet", False) == ""
    assert store.record("03", 1, "t", "not done yet", False) == ""
    entry = json.loads(progress_file.read_text())["lessons"]["03"]["2"]
    assert entry["passed"] and entry["last"] == "not yet" and entry["first_passed"]
    assert store.passed_exercises() == {"03": [2]}
    assert sorted(p.name for p in progress_file.parent.iterdir()) == ["progress.json", "progress.json.lock"]


def test_a_corrupt_file_is_kept_aside_and_a_new_one_started(progress_file: Path) -> None:
    progress_file.parent.mkdir(parents=True)
    progress_file.write_text('{"lessons": {"03": ')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.passed_exercises() == {}
    assert f"progress file {progress_file} could not be read: it is not valid JSON" in str(caught[0].message)
    result = check("98", 1, lambda sock: 42)
    aside = [p for p in progress_file.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_text() == '{"lessons": {"03": '
    assert result.passed and result.note.startswith("Your progress file could not be read (it is not valid JSON")
    assert result.note.endswith(f"it was kept as {aside[0]} and a new one started.")
    assert store.passed_exercises() == {"98": [1]}


def test_a_file_of_another_shape_counts_as_corrupt(progress_file: Path) -> None:
    progress_file.parent.mkdir(parents=True)
    progress_file.write_text("[1, 2]")
    assert "it does not hold a 'lessons' table" in store.record("03", 1, "t", "passed", True)


def test_a_progress_file_that_cannot_be_written_never_breaks_a_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(store.ENV, str(tmp_path / "a-file" / "progress.json"))  # its folder is a file: even root fails
    result = check("98", 1, lambda sock: 42)
    assert result.passed
    assert result.note == f"Progress not saved (FileExistsError: [Errno 17] File exists: '{tmp_path / 'a-file'}')."


WRITER = """\
import sys
from helpers.practice import store
sys.stdin.readline()  # both writers start together
for n in range(1, 51):
    store.record(sys.argv[1], n, "t", "passed", True)
"""


def test_two_processes_recording_at_once_lose_nothing(progress_file: Path) -> None:
    """Each record is a read-modify-write: without the lock, one writer's update would
    overwrite the other's (a lost update)."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, lesson], stdin=subprocess.PIPE, cwd=ROOT, text=True)
             for lesson in ("01", "02")]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.stdin.close()
        assert p.wait(60) == 0
    assert store.passed_exercises() == {"01": list(range(1, 51)), "02": list(range(1, 51))}


READER_WHILE_WRITING = """\
import json, sys
from pathlib import Path
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
reads = torn = 0
while not stop.exists():
    try:
        json.loads(path.read_text())
    except ValueError:  # a half-written (or truncated) file does not parse
        torn += 1
    reads += 1
print(reads, torn)
"""


def test_a_reader_never_sees_half_a_file(progress_file: Path, tmp_path: Path) -> None:
    """Writes go to a temporary file renamed over the old one: a reader reading all the
    while sees one or the other, never a truncated or half-written file."""
    store.record("03", 1, "t", "passed", True)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER_WHILE_WRITING, str(progress_file), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline() == "ready\n"
        for n in range(100):
            store.record(f"{n % 19 + 1:02d}", n % 20 + 1, "t" * 2000, "passed", True)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    reads, torn = map(int, out.split())
    assert reads > 20 and torn == 0, (reads, torn)


# -- the progress line ---------------------------------------------------------------------


def test_progress_prints_its_final_line_outside_a_notebook(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(range(3), desc="steps")) == [0, 1, 2]
    assert re.fullmatch(r"steps: 3 of 3 done in \d+\.\d s\n", capsys.readouterr().out)
    assert list(progress(iter("ab"), desc="letters")) == ["a", "b"]
    assert re.fullmatch(r"letters: 2 done in \d+\.\d s\n", capsys.readouterr().out)
    for _ in progress([1, 2, 3], desc="early"):
        break
    assert re.fullmatch(r"early: 0 of 3 stopped in \d+\.\d s\n", capsys.readouterr().out)


def test_progress_refuses_what_it_cannot_show() -> None:
    with pytest.raises(TypeError, match=r"^desc must be a non-empty str saying what is done, got ''$"):
        progress([1], desc="")
    with pytest.raises(TypeError, match=r"^total must be an int \(the number of items\) or None, got 2.5$"):
        progress([1], desc="x", total=2.5)
    with pytest.raises(ValueError, match=r"^total must be >= 0, got -1$"):
        progress([1], desc="x", total=-1)


def test_a_progress_advanced_by_hand_counts_in_its_unit(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("reading", total=3 << 20, unit="bytes") as bar:
        bar.update(1 << 20)
        bar.update(2 << 20)
    assert re.fullmatch(r"reading: 3,145,728 of 3,145,728 bytes done in \d+\.\d s\n", capsys.readouterr().out)
    bar = Progress("reading", total=3 << 20, unit="bytes")
    bar.update(1000)
    bar.close()
    bar.close()  # the final line once, however often it is closed
    assert re.fullmatch(r"reading: 1,000 of 3,145,728 bytes stopped in \d+\.\d s\n", capsys.readouterr().out)
    with Progress("polls") as bar:
        bar.update()
        bar.update(0)
    assert re.fullmatch(r"polls: 1 done in \d+\.\d s\n", capsys.readouterr().out)


def test_a_progress_advanced_by_hand_refuses_what_it_cannot_count() -> None:
    with pytest.raises(TypeError, match=r"^unit must be a str such as 'bytes' \(or '' for items\), got 8$"):
        Progress("reading", total=10, unit=8)
    with pytest.raises(TypeError, match=r"^total must be an int \(the number of bytes\) or None, got 2.5$"):
        Progress("reading", total=2.5, unit="bytes")
    with pytest.raises(TypeError, match=r"^desc must be a non-empty str saying what is done, got None$"):
        Progress(None, total=10)
    bar = Progress("reading", total=10, unit="bytes")
    for wrong in (-1, 1.5, True):
        with pytest.raises(ValueError, match=rf"^update\(\) needs how many more were done, an int >= 0, "
                                             rf"got {re.escape(repr(wrong))}$"):
            bar.update(wrong)
    assert bar.done == 0
    bar.close()


def test_progress_in_a_notebook_leaves_its_final_state_in_the_saved_output(tmp_path: Path) -> None:
    """In a kernel the line is one display updated in place; the saved notebook holds the
    final line, not "0 of 6"; a one-item loop shows only the final line, and a Progress
    advanced by hand (bytes) ends the same way. Inside a slider's
    Experiment (a widget's output, where display updates are dropped) it is a widget whose
    value ends as the final line."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(textwrap.dedent("""\
            import time
            import helpers as h
            for _ in h.progress(range(6), desc="six steps"):
                time.sleep(0.05)  # long enough for in-between updates
        """)),
        nbformat.v4.new_code_cell('for _ in h.progress(["one"], desc="one step"):\n    pass'),
        nbformat.v4.new_code_cell(textwrap.dedent("""\
            with h.progressbar.Progress("reading", total=3000, unit="bytes") as bar:
                for _ in range(3):
                    time.sleep(0.05)
                    bar.update(1000)
        """)),
        nbformat.v4.new_code_cell(textwrap.dedent("""\
            import gc, ipywidgets
            def experiment(n):
                for _ in h.progress(range(n), desc="inside a slider's output"):
                    pass
            slid = h.Experiment(experiment, n=h.int_slider("n", 3, min=2, max=5))
            print([w.value for w in gc.get_objects() if type(w) is ipywidgets.HTML and "slider" in w.value])
        """)),
    ]
    execute(nb, tmp_path, timeout_s=60)
    inside = nb.cells[3].outputs[-1].text
    final_inside = r"\[\"<pre .*>inside a slider&#x27;s output: 3 of 3 done in \d+\.\d s</pre>\"\]\n"
    assert re.fullmatch(final_inside, inside), inside
    finals = [r"six steps: 6 of 6 done in \d+\.\d s", r"one step: 1 of 1 done in \d+\.\d s",
              r"reading: 3,000 of 3,000 bytes done in \d+\.\d s"]
    for cell, final in zip(nb.cells[:3], finals):
        outputs = [o for o in cell.outputs if o.output_type in ("display_data", "update_display_data")]
        assert len(outputs) == 1, cell.outputs
        assert re.fullmatch(final, outputs[0].data["text/plain"]), outputs[0].data
        assert "<progress" not in outputs[0].data["text/html"], "the final state is a line, not a bar"
