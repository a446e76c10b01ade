"""The graded labs and their tooling (helpers.labs): release, grade, and what grading resists.

Real processes, real namespaces, real sockets. The module fixtures release every lab and
grade folders of submissions with the command line, as an instructor would:

* ``graded``: each lab's reference solution and fresh student version, plus what a grader
  must survive (a task that hangs with its timers off, one that kills its process, an
  output flood, a file that is no notebook, edited tests, odd parameters, stray files);
* ``forgeries`` (sandbox on, and off): an honest but partly wrong submission, and the same
  code with each forgery added; each must score exactly what the honest code scores;
* ``trial`` (sandbox on, and off): the four-submission trial (correct, wrong ``readn``, an
  infinite loop, a detached ``sleep 600`` + 10 MB of output + servers left listening):
  nothing it started survives grading;
* ``classroom``: a small class graded whole, in shards, resumed and regraded.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from labs_support import (
    LAB,
    LABS,
    alive,
    labs_cli,
    points_by_test,
    processes_with,
    read_csv,
    submit,
    task_source,
    totals,
    with_tasks,
)

from helpers.labs import sandbox
from helpers.labs.source import BEGIN, END, HIDDEN_TAG, SOLUTION_TAG

LAB_IDS = [lab.id for lab in LABS]
SOLUTION_BUDGET_S = 20  # each lab's solution, graded top to bottom (issue 7)
SANDBOX = sandbox.support()
needs_sandbox = pytest.mark.skipif(not SANDBOX, reason=f"no sandbox here: {SANDBOX.reason}")
MODES = [pytest.param("on", marks=needs_sandbox), "off"]


@contextlib.contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    # Not tmp_path: pytest prunes old /tmp/pytest-of-<user> dirs when any other pytest session
    # of this user starts, which can delete a folder while it is being graded.
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)


def grade(subs: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = labs_cli("grade", str(subs), "-o", str(out), *args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


# Each of these module-scoped fixtures grades labs in real kernels (a minute or more): the
# tests that use one are marked slow (tests/conftest.py), out of the fast loop; CI runs them.
SLOW_FIXTURES = ("graded", "forgeries", "trial", "shortcuts", "partial_and_retry", "classroom")


def test_every_module_fixture_is_slow() -> None:
    """A new module-scoped fixture here grades too: list it in SLOW_FIXTURES, or the fast
    loop runs its tests."""
    found = re.findall(r'^@pytest\.fixture\(scope="module"[^)]*\)\ndef (\w+)', Path(__file__).read_text(), re.M)
    assert found and not set(found) - set(SLOW_FIXTURES), f"add to SLOW_FIXTURES: {set(found) - set(SLOW_FIXTURES)}"


# --------------------------------------------------------------------------- the format


def test_there_are_six_labs() -> None:
    assert len(LABS) >= 6, LAB_IDS


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_lab_follows_the_format(lab) -> None:
    nb = lab.nb
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{lab.id}: cells {dirty} have outputs; commit labs without outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert any(t.hidden for t in lab.tests) and any(not t.hidden for t in lab.tests)
    assert lab.lessons, f"{lab.id}: metadata.lab.lessons names the lessons it follows"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[-2].source.strip() == "kit.check()" and code[-1].source.strip().endswith("h.check_clean()")
    assert all("notebook-only" in c.metadata.get("tags", []) for c in code[-2:])
    assert "from helpers.labs import kit" in code[0].source


# --------------------------------------------------------------------------- the main run


@pytest.fixture(scope="module")
def graded() -> Iterator[dict]:
    # A process of our user that no submission started, in its own session and not our child
    # (so the leak check does not count it): no cleanup may kill it.
    start = ("import subprocess; print(subprocess.Popen(['sleep', '600'], start_new_session=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    bystander = int(subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, check=True).stdout)
    try:
        with private_dir("labs-graded-") as base:
            yield {**_grade_main(base), "bystander": bystander}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bystander, signal.SIGKILL)


def _grade_main(base: Path) -> dict:
    released = base / "released"
    result = labs_cli("release", "-o", str(released), "--cohort", "spring", "--student", "stu")
    assert result.returncode == 0, result.stderr
    subs = base / "submissions"
    for lab in LABS:
        submit(subs, "sol", lab.id, lab.solution_notebook())
        (subs / "stu").mkdir(exist_ok=True)
        (subs / "stu" / f"{lab.id}.ipynb").write_bytes((released / "stu" / f"{lab.id}.ipynb").read_bytes())
    echo, framing, transfer = LAB["01"], LAB["02"], LAB["03"]
    # readn hangs while it is defined, with SIGALRM and SIGINT ignored: its process is killed
    # and started again without that cell; the other tasks are graded.
    submit(subs, "hang", echo.id, with_tasks(echo.solution_notebook(), readn=(
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n    pass\n")))
    # Kills its own process in the second task: the first task's tests still count.
    submit(subs, "crash", framing.id, with_tasks(framing.solution_notebook(),
                                                  decoder="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"))
    # Correct, but prints ~40 MB while its task loads and more in every call.
    flood = transfer.solution_notebook()
    source = task_source(flood, "receive_file")
    submit(subs, "flood", transfer.id, with_tasks(flood, receive_file=(
        "for _ in range(200_000):\n    print('flood ' * 30)\n" + source.replace(
            "    count = 0\n", "    count = 0\n    print('more flood ' * 10_000)\n", 1))))
    (subs / "garbage").mkdir()
    (subs / "garbage" / f"{echo.id}.ipynb").write_bytes(os.urandom(3000))
    # The student version with every visible test edited to pass, and a test of its own added.
    edited = nbformat.read(released / "stu" / f"{echo.id}.ipynb", as_version=4)
    for cell in edited.cells:
        if "test" in cell.metadata.get("tags", []):
            cell.source = "@kit.test(points=2)\ndef readn_exact():\n    pass\n"
    edited.cells.append(nbformat.v4.new_code_cell("@kit.test(points=100)\ndef mine():\n    pass\n",
                                                  metadata={"tags": ["hidden-test"]}))
    submit(subs, "edited", echo.id, edited)
    weird = nbformat.read(released / "stu" / f"{echo.id}.ipynb", as_version=4)
    weird.metadata.papermill.parameters = [1, 2]
    submit(subs, "weird", echo.id, weird)
    (subs / "stray.txt").write_text("not in a student folder")
    (subs / "lost").mkdir()
    (subs / "lost" / "99-nothing.ipynb").write_text("{}")

    out = base / "graded"
    started = time.monotonic()
    result = labs_cli("grade", str(subs), "-o", str(out), "-j", "2", "--cell-timeout", "10", "--test-timeout", "10")
    seconds = time.monotonic() - started
    return {"base": base, "subs": subs, "out": out, "released": released, "result": result, "seconds": seconds,
            "rows": read_csv(out / "gradebook.csv") if (out / "gradebook.csv").exists() else [],
            "records": {p.parent.name + "/" + p.stem: json.loads(p.read_text())
                        for p in (out / "results").glob("*/*.json")}}


def test_grader_finished_and_reported(graded: dict) -> None:
    result = graded["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    print(f"graded {len(graded['records'])} submissions in {graded['seconds']:.1f} s with -j 2")


def test_sandbox_is_on_where_the_kernel_allows_it(graded: dict) -> None:
    subs = read_csv(graded["out"] / "submissions.csv")
    expected = "on" if SANDBOX else f"OFF: {SANDBOX.reason}"
    assert {r["sandbox"] for r in subs} == {expected}, subs


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_solution_scores_full_marks_within_budget(graded: dict, lab) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "sol" and r["lab"] == lab.id]
    assert [r["test"] for r in rows] == [t.name for t in lab.tests]
    failed = [(r["test"], r["error"]) for r in rows if r["points"] != r["max"]]
    assert not failed, f"{lab.id} solution lost points: {failed}"
    seconds = graded["records"][f"sol/{lab.id}"]["seconds"]
    print(f"{lab.id}: the solution was graded in {seconds:.1f} s")
    assert seconds <= SOLUTION_BUDGET_S, f"{lab.id} took {seconds:.1f} s (budget {SOLUTION_BUDGET_S} s)"


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_fresh_student_version_scores_zero(graded: dict, lab) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "stu" and r["lab"] == lab.id]
    assert len(rows) == len(lab.tests)
    assert all(float(r["points"]) == 0 and r["error"] for r in rows), rows
    assert any("NotImplementedError" in r["error"] for r in rows), rows
    assert (graded["out"] / "feedback" / "stu" / f"{lab.id}.ipynb").exists()


def test_a_task_that_hangs_costs_only_its_own_tests(graded: dict) -> None:
    got = points_by_test(graded["rows"], "hang", "01-echo")
    # The reference echo_roundtrip calls readn, so only echo_handler's tests can pass.
    need_readn = {t.name for t in LAB["01"].tests if set(t.uses) & {"readn", "echo_roundtrip"}}
    assert all(got[name] == 0 for name in need_readn), got
    rows = {r["test"]: r for r in graded["rows"] if r["student"] == "hang"}
    assert rows["readn_exact"]["error"] == ("RuntimeError: task readn did not finish within 10 s when it was "
                                            "defined"), rows["readn_exact"]
    others = {t.name: t.points for t in LAB["01"].tests if t.name not in need_readn}
    assert others and all(got[name] == points for name, points in others.items()), got


def test_a_task_that_kills_its_process_costs_only_its_own_tests(graded: dict) -> None:
    rows = {r["test"]: r for r in graded["rows"] if r["student"] == "crash"}
    assert float(rows["encode_basic"]["points"]) == 1, "a test of the other task counts"
    later = [r for name, r in rows.items() if name != "encode_basic"]
    assert later and all(float(r["points"]) == 0 for r in later), later
    assert "task decoder ended the learner's process (killed by signal 9)" in rows["conformance_eof"]["error"]


def test_output_flood_is_capped_and_graded(graded: dict) -> None:
    lab = LAB["03"]
    assert totals(graded["rows"])[("flood", lab.id)] == (lab.max_points, lab.max_points)
    feedback = graded["out"] / "feedback" / "flood" / f"{lab.id}.ipynb"
    assert feedback.stat().st_size < 1_000_000, f"{feedback.stat().st_size} bytes stored"
    events = (graded["out"] / "work" / "flood" / lab.id / "events.jsonl").read_text()
    assert len(events) < 2_000_000 and "output limit reached" in events


def test_not_a_notebook_is_an_error_row(graded: dict) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "garbage"]
    assert len(rows) == len(LAB["01"].tests)
    assert all(r["error"].startswith("not a notebook") and float(r["points"]) == 0 for r in rows)
    feedback = nbformat.read(graded["out"] / "feedback" / "garbage" / "01-echo.ipynb", as_version=4)
    assert "Grading note: not a notebook" in feedback.cells[0].source


def test_malformed_parameters_are_an_error_row(graded: dict) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "weird"]
    assert len(rows) == len(LAB["01"].tests)
    assert all("parameters is not a mapping" in r["error"] and float(r["points"]) == 0 for r in rows), rows


def test_edited_tests_are_graded_with_the_pristine_ones(graded: dict) -> None:
    rows = [r for r in graded["rows"] if r["student"] == "edited"]
    assert [r["test"] for r in rows] == [t.name for t in LAB["01"].tests], "the learner's own test is ignored"
    assert all(float(r["points"]) == 0 for r in rows), rows


def test_stray_and_unknown_files_are_reported(graded: dict) -> None:
    by_student = {r["student"]: r for r in graded["rows"] if r["test"] == "-"}
    assert "folder named after the student" in by_student["stray"]["error"]
    assert "not one of the labs" in by_student["lost"]["error"]


def test_nothing_left_running_and_bystanders_untouched(graded: dict) -> None:
    deadline = time.monotonic() + 5  # a killed process's children may take a moment to be reaped
    while (left := processes_with("labs-scratch-")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left by grading: {left}"
    assert alive(graded["bystander"]), "grading killed a process it did not start"


def test_feedback_has_the_score_and_no_hidden_code(graded: dict) -> None:
    lab = LAB["01"]
    fb = nbformat.read(graded["out"] / "feedback" / "stu" / f"{lab.id}.ipynb", as_version=4)
    assert f"**0 / {lab.max_points:g}** points" in fb.cells[0].source
    text = json.dumps(fb)
    for test in lab.tests:
        assert test.name in fb.cells[0].source
        if test.hidden:
            assert f"def {test.name}" not in text, f"the feedback holds the code of hidden test {test.name}"
    assert "[graded] echo_roundtrip_large: FAILED, 0/3 points: NotImplementedError" in text


def _distinct_lines(cells: list, others: list) -> set[str]:
    """Non-trivial lines of `cells` that appear in none of `others`."""
    elsewhere = {line.strip() for c in others for line in c.source.splitlines()}
    return {s for c in cells for line in c.source.splitlines()
            if len(s := line.strip()) > 12 and s not in elsewhere and not s.startswith("#")}


def stripped_regions(source: str) -> str:
    out, inside = [], False
    for line in source.splitlines():
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("lab", LABS, ids=LAB_IDS)
def test_released_files_hold_no_solution_or_hidden_test(graded: dict, lab) -> None:
    path = graded["released"] / "stu" / f"{lab.id}.ipynb"
    text = path.read_text()
    released_lines = {line.strip() for c in nbformat.read(path, as_version=4).cells for line in c.source.splitlines()}
    hidden = [c for c in lab.nb.cells if HIDDEN_TAG in c.metadata.get("tags", [])]
    visible = [c for c in lab.nb.cells if c not in hidden]
    solution_lines = set()
    for cell in lab.nb.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            inside = False
            for line in cell.source.splitlines():
                if BEGIN in line:
                    inside = True
                elif END in line:
                    inside = False
                elif inside and len(line.strip()) > 12:
                    solution_lines.add(line.strip())
    outside = {line.strip() for c in lab.nb.cells for line in stripped_regions(c.source).splitlines()}
    leaked = sorted((solution_lines - outside) & released_lines)
    assert not leaked, f"solution text in the released {lab.id}: {leaked[:3]}"
    leaked = sorted(_distinct_lines(hidden, visible) & released_lines)
    assert not leaked, f"hidden-test text in the released {lab.id}: {leaked[:3]}"
    assert BEGIN not in text and '"hidden-test"' not in text
    assert "NotImplementedError" in text
    for test in lab.tests:
        if test.hidden:
            assert f"kit.hidden({test.name!r}, points={test.points:g})" in text


# --------------------------------------------------------------------------- forgeries

# An honest submission, partly wrong: readn reads at most 3 bytes, echo_handler forgets to
# echo; echo_roundtrip is right (it reads with its own loop). Every forgery below is added
# to it, and must score exactly what it scores, test by test.
HONEST = {
    "readn": ("def readn(sock: socket.socket, n: int) -> bytes:\n"
              "    return sock.recv(min(n, 3)) if n else b''  # one short recv: wrong\n"),
    "echo_handler": "def echo_handler(conn: socket.socket) -> int:\n    return 0  # forgot to echo\n",
    "echo_roundtrip": (
        "def echo_roundtrip(address, payload, piece_size):\n"
        "    echoed = bytearray()\n"
        "    with socket.create_connection(address, timeout=10) as sock:\n"
        "        for start in range(0, len(payload), piece_size):\n"
        "            piece = payload[start:start + piece_size]\n"
        "            sock.sendall(piece)\n"
        "            got = b''\n"
        "            while len(got) < len(piece):\n"
        "                chunk = sock.recv(len(piece) - len(got))\n"
        "                if not chunk:\n"
        "                    raise EOFError('closed')\n"
        "                got += chunk\n"
        "            echoed += got\n"
        "    return bytes(echoed)\n"),
}

FORGERIES = {
    # The one the issue found: rebind the harness's recorder from a task cell.
    "forged_recorder": ("echo_handler", (
        "_lab_harness.run_test = lambda t, p, c, ns, **k: _lab_harness._record(event='test', test=t, points=p, "
        "max=p)\n")),
    "forged_session": ("echo_handler", (
        "from helpers.labs import kit, runner\n"
        "class Always:\n"
        "    def run_test(self, fn, **k):\n"
        "        print(json.dumps({'event': 'test', 'test': fn.__name__, 'points': 3, 'max': 3}))\n"
        "    def rng(self):\n        import random; return random.Random(0)\n"
        "    def learner_threads(self):\n        return 0\n"
        "import json\nkit._install(Always())\nrunner.Session.run_test = Always.run_test\n")),
    "patched_asserts": ("readn", (
        "import builtins\nfrom helpers.labs import kit\n"
        "kit.test = lambda *a, **k: (lambda fn: fn)\n"
        "kit.run = lambda fn, timeout_s: kit.Outcome(1.0)\n"
        "builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
        "import helpers as h\nh.check_clean = lambda: None\n")),
    "results_file": ("echo_handler", (
        "import json, os, glob\n"
        "line = json.dumps({'event': 'test', 'test': 'readn_exact', 'points': 2, 'max': 2}) + '\\n'\n"
        "record = {'student': 'STUDENT', 'lab': '01-echo', 'rows': [{'student': 'STUDENT', 'lab': '01-echo', "
        "'test': 'readn_exact', 'points': 2, 'max': 2}]}\n"
        "for path in ['results.jsonl', os.environ.get('TMPDIR', '.') + '/results.jsonl'] + "
        "glob.glob('OUT/work/STUDENT/*/') + ['OUT/results/STUDENT/']:\n"
        "    try:\n"
        "        if path.endswith('/'):\n"
        "            open(path + 'events.jsonl', 'a').write(line * 20)\n"
        "            open(path + '01-echo.json', 'w').write(json.dumps(record))\n"
        "        else:\n"
        "            open(path, 'a').write(line)\n"
        "    except OSError as exc:\n"
        "        print('could not write', path, exc)\n")),
    "sys_exit": ("readn", "import sys\nsys.exit(0)\n"),
    "os_exit": ("echo_handler", "import os\nos._exit(0)\n"),
    "patched_socket": ("readn", (
        "import socket as _s\n"
        "_pair = _s.socketpair\n"
        "def socketpair(*a, **k):\n"
        "    x, y = _pair()\n"
        "    x.sendall(b'abcdefghijextra')\n"
        "    return x, y\n"
        "_s.socketpair = socketpair\n"
        "_s.socket.shutdown = lambda self, how: None\n"
        "_s.create_server = lambda *a, **k: None\n")),
    "fake_passed_lines": ("readn", (
        "import os, json\n"
        "for t in ['readn_exact', 'readn_eof', 'echo_handler_small']:\n"
        "    print(f'{t}: passed, 2/2 points')\n"
        "    print(json.dumps({'event': 'test', 'test': t, 'points': 2, 'max': 2, 'error': ''}))\n"
        "    os.write(1, (json.dumps({'event': 'test', 'test': t, 'points': 2, 'max': 2}) + '\\n').encode())\n"
        "    os.write(2, b'PASSED ' + t.encode() + b'\\n')\n")),
    "kill_parent": ("echo_handler", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"),
    # Sandbox only: on the host these would reach the instructor's own processes and files.
    "kill_everything": ("echo_handler", "import os, signal\nos.kill(-1, signal.SIGKILL)\n"),
    "phone_home": ("readn", (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', HOST_PORT), timeout=2).sendall(b'escaped')\n"
        "except OSError as exc:\n"
        "    print('cannot reach the host', type(exc).__name__)\n")),
    "read_hidden_tests": ("readn", (
        "from helpers.labs.source import LABS_DIR\n"
        "for path in [LABS_DIR / '01-echo.ipynb', LABS_DIR.parent / '.git' / 'HEAD', 'SUBS/honest/01-echo.ipynb']:\n"
        "    try:\n"
        "        print(open(path).read())\n"
        "    except OSError as exc:\n"
        "        print('cannot read', path, type(exc).__name__)\n")),
}
HOST_UNSAFE = {"kill_everything", "read_hidden_tests", "phone_home"}


@pytest.fixture(scope="module", params=MODES)
def forgeries(request) -> Iterator[dict]:
    mode = request.param
    # A server on the host's loopback that a sandboxed submission must not reach.
    with private_dir(f"labs-forged-{mode}-") as base, socket.create_server(("127.0.0.1", 0)) as host:
        host.setblocking(False)
        subs, out = base / "subs", base / "out"
        lab = LAB["01"]
        submit(subs, "honest", lab.id, with_tasks(lab.solution_notebook(), **HONEST))
        for name, (task, snippet) in FORGERIES.items():
            if mode == "off" and name in HOST_UNSAFE:
                continue
            snippet = (snippet.replace("OUT", str(out)).replace("STUDENT", name).replace("SUBS", str(subs))
                       .replace("HOST_PORT", str(host.getsockname()[1])))
            sources = {**HONEST, task: HONEST[task] + snippet}
            submit(subs, name, lab.id, with_tasks(lab.solution_notebook(), **sources))
        result = grade(subs, out, "-j", "2", "--sandbox", mode, "--test-timeout", "10")
        try:
            reached = host.accept()[0]
            reached.close()
        except BlockingIOError:
            reached = None
        yield {"mode": mode, "out": out, "rows": read_csv(out / "gradebook.csv"), "stderr": result.stderr,
               "host_reached": reached is not None}


def test_the_honest_submission_scores_what_it_should(forgeries: dict) -> None:
    got = points_by_test(forgeries["rows"], "honest", "01-echo")
    roundtrip = {"echo_roundtrip_small": 2.0, "echo_roundtrip_large": 3.0}
    assert got == {t.name: roundtrip.get(t.name, 0.0) for t in LAB["01"].tests}, got


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forgery_scores_what_the_honest_code_scores(forgeries: dict, forgery: str) -> None:
    if forgeries["mode"] == "off" and forgery in HOST_UNSAFE:
        pytest.skip("without the sandbox this forgery would reach the instructor's own processes or files")
    honest = points_by_test(forgeries["rows"], "honest", "01-echo")
    forged = points_by_test(forgeries["rows"], forgery, "01-echo")
    assert forged == honest, f"{forgery}: {forged} (honest: {honest})"


@needs_sandbox
def test_hidden_tests_cannot_be_read_from_the_sandbox(forgeries: dict) -> None:
    if forgeries["mode"] != "on":
        pytest.skip("only the sandbox hides the lab sources")
    events = (forgeries["out"] / "work" / "read_hidden_tests" / "01-echo" / "events.jsonl").read_text()
    assert events.count("cannot read") == 3 and "FileNotFoundError" in events, events[-2000:]
    assert "def readn_eof_message" not in events
    feedback = (forgeries["out"] / "feedback" / "read_hidden_tests" / "01-echo.ipynb").read_text()
    assert "def readn_eof_message" not in feedback


def test_the_sandbox_has_its_own_network(forgeries: dict) -> None:
    if forgeries["mode"] != "on":
        pytest.skip("without the sandbox the learner's code shares the host's loopback")
    assert not forgeries["host_reached"], "a submission reached a server on the host's loopback"
    events = (forgeries["out"] / "work" / "phone_home" / "01-echo" / "events.jsonl").read_text()
    assert "cannot reach the host ConnectionRefusedError" in events


def test_without_the_sandbox_every_row_says_so(forgeries: dict) -> None:
    if forgeries["mode"] != "off":
        assert all("WITHOUT the sandbox" not in r["note"] for r in forgeries["rows"])
        return
    assert "WARNING: grading WITHOUT the sandbox" in forgeries["stderr"]
    assert all("graded WITHOUT the sandbox" in r["note"] for r in forgeries["rows"] if r["test"] != "-")
    subs = read_csv(forgeries["out"] / "submissions.csv")
    assert all(r["sandbox"] == "OFF: turned off with --sandbox off" for r in subs)
    feedback = (forgeries["out"] / "feedback" / "honest" / "01-echo.ipynb").read_text()
    assert "Graded without the sandbox" in feedback


# --------------------------------------------------------------------------- the hostile trial


@pytest.fixture(scope="module", params=MODES)
def trial(request) -> Iterator[dict]:
    mode = request.param
    token = uuid.uuid4().hex[:8]
    sleep_for = f"600.{int(token, 16) % 10**6:06d}"  # `sleep 600`, with a mark only this run uses
    lab = LAB["01"]
    solution = lab.solution_notebook()
    detach = (
        "import subprocess, sys, socket, threading\n"
        f"subprocess.Popen(['sleep', {sleep_for!r}], env={{}}, start_new_session=True)\n"
        "subprocess.Popen([sys.executable, '-c', 'import socket, time; s = socket.create_server((\"127.0.0.1\", 0)); "
        f"time.sleep(600)  # {token}'], env={{}}, start_new_session=True)\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "threading.Thread(target=listener.accept, daemon=False).start()\n"
        "print('x' * 10_000_000)\n")
    with private_dir(f"labs-trial-{mode}-") as base:
        subs, out = base / "subs", base / "out"
        submit(subs, "correct", lab.id, solution)
        submit(subs, "wrong_readn", lab.id, with_tasks(lab.solution_notebook(), readn=(
            "def readn(sock, n):\n    return sock.recv(n)  # one recv\n")))
        submit(subs, "infinite_loop", lab.id, with_tasks(lab.solution_notebook(), echo_handler=(
            "def echo_handler(conn):\n    while True:\n        pass\n")))
        submit(subs, "memory_hog", lab.id, with_tasks(lab.solution_notebook(), echo_handler=(
            "def echo_handler(conn):\n    hog = bytearray(16 << 30)  # 16 GiB\n    return len(hog)\n")))
        submit(subs, "detached", lab.id, with_tasks(lab.solution_notebook(), echo_handler=(
            task_source(solution, "echo_handler") + "\n" + detach)))
        # This run's scratch folders live in a folder of its own, so the check that none of its
        # processes outlived grading cannot see another grading run on the same machine.
        scratch = base / "scratch"
        scratch.mkdir()
        base.chmod(0o755)
        scratch.chmod(0o1777)
        started = time.monotonic()
        result = grade(subs, out, "-j", "2", "--sandbox", mode, "--test-timeout", "4", env={"TMPDIR": str(scratch)})
        yield {"mode": mode, "out": out, "rows": read_csv(out / "gradebook.csv"), "token": token,
               "sleep_for": sleep_for, "stderr": result.stderr, "seconds": time.monotonic() - started,
               "scratch": f"{scratch}/labs-scratch-"}


def test_trial_scores(trial: dict) -> None:
    sums = {k[0]: v[0] for k, v in totals(trial["rows"]).items()}
    lost = [(r["student"], r["test"], r["error"]) for r in trial["rows"] if r["points"] != r["max"]]
    print("points lost in the trial:", *lost, sep="\n  ")
    full = LAB["01"].max_points
    assert sums["correct"] == full and sums["detached"] == full, sums
    assert 0 < sums["wrong_readn"] < full, sums
    loop = points_by_test(trial["rows"], "infinite_loop", "01-echo")
    assert loop["echo_handler_small"] == 0 and loop["readn_exact"] == 2, loop
    rows = {r["test"]: r for r in trial["rows"] if r["student"] == "infinite_loop"}
    assert rows["echo_handler_small"]["error"].startswith("TestTimeout: timed out after 4 s")
    hog = {r["test"]: r for r in trial["rows"] if r["student"] == "memory_hog"}
    assert hog["echo_handler_counts_payload"]["error"].startswith("MemoryError"), hog  # the address-space rlimit
    assert sums["memory_hog"] == full - 4, sums
    print(f"sandbox {trial['mode']}: the trial took {trial['seconds']:.1f} s")


def test_trial_leaves_nothing_running(trial: dict) -> None:
    deadline = time.monotonic() + 5
    while (left := processes_with(trial["sleep_for"]) + processes_with(trial["token"])) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"sandbox {trial['mode']}: processes the submission started outlived grading: {left}"
    assert not processes_with(trial["scratch"]), "a runner or learner process outlived grading"


def test_trial_output_flood_is_capped(trial: dict) -> None:
    feedback = trial["out"] / "feedback" / "detached" / "01-echo.ipynb"
    assert feedback.stat().st_size < 300_000, feedback.stat().st_size
    assert "[feedback: output trimmed]" in feedback.read_text()


def test_trial_warns_loudly_without_the_sandbox(trial: dict) -> None:
    loud = "WARNING: grading WITHOUT the sandbox" in trial["stderr"]
    assert loud == (trial["mode"] == "off"), trial["stderr"][-500:]


# --------------------------------------------------------------------------- the shortcuts the labs exist to replace

# Lab 12's protocol, honest, but run by a thread per connection instead of the reactor: the
# learner's cell rebinds the TcpServer that start_server() uses.
_END_OF_PROTOCOL = ("        self.buf, self.body, self.decoder = bytearray(), bytearray(), None\n"
                    "        ### END SOLUTION")
THREAD_PER_CONNECTION = _END_OF_PROTOCOL + '''


import threading as _threading


class TcpServer:  # not the reactor: a thread per connection, each blocking in recv()
    def __init__(self, factory):
        self.factory, self.listener = factory, socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        _threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            _threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        protocol, closed = self.factory(), []

        class Conn:
            def write(self, data):
                sock.sendall(data)

            def close(self):
                closed.append(True)
                sock.shutdown(socket.SHUT_WR)

        protocol.connection_made(Conn())
        while not closed and (data := sock.recv(65536)):
            protocol.data_received(memoryview(data))
        sock.close()

    def stop(self):
        self.listener.close()
'''

# Each lab's reference solution with the one change a learner might make instead of the
# lesson's technique; the tests named must catch it, and only them: (task, old, new, caught).
SHORTCUTS = {
    "04": ("serve_chat", "sent = action.to.send(action.data)",  # a blocking sendall(), as lab 04 once accepted
           "action.to.setblocking(True)\n                    action.to.sendall(action.data)\n"
           "                    sent = len(action.data)", {"member_who_never_reads"}),
    "07": ("send_window", "    sock.connect(dest)\n    sent = base = next_seq = 0\n",  # stop-and-wait called a window
           "    return send_stop_and_wait(sock, dest, messages, rto_s)\n    sent = base = next_seq = 0\n",
           {"window_clean_path", "goodput_against_lesson_04"}),
    "08": ("serve_chat", "events = select.POLLIN | (select.POLLOUT if outbox.pending() else 0)",  # POLLOUT for good
           "events = select.POLLIN | select.POLLOUT", {"sleeps_when_idle"}),
    "09": ("serve_echo", "            out += data\n",  # one recv() per edge, as level-triggered code may do
           "            out += data\n            return True\n",
           {"data_before_the_edge", "pieces_with_pauses", "slow_reader_gets_everything"}),
    "10": ("BoundedQueue", "while len(self.items) >= self.maxsize:",  # a queue without a bound
           "while False:", {"put_waits_while_full", "burst_bounded_and_nothing_lost"}),
    "11": ("FlowServer", "        self.writing = False\n",  # pause_writing() ignored: write everything at once
           "        pass\n", {"slow_reader_bounded", "pause_reading_when_behind"}),
    "12": ("protocol", "                    return  # wait for more bytes: never block the loop\n",  # a blocking read
           "                    self.conn.sock.setblocking(True)  # wait for the rest, as a thread per client would\n"
           "                    more = self.conn.sock.recv(65536)\n"
           "                    self.conn.sock.setblocking(False)\n"
           "                    if not more:\n                        return\n                    self.buf += more\n"
           "                    continue\n", {"half_a_request_blocks_nobody"}),
    "12-decoder": ("decoder", "                    take = min(self._left, len(self._buf))\n",  # a whole chunk at a time
                   "                    if len(self._buf) < self._left:\n                        break\n"
                   "                    take = self._left\n", {"chunked_streams_data"}),
    "12-threads": ("protocol", _END_OF_PROTOCOL, THREAD_PER_CONNECTION, {"half_a_request_blocks_nobody"}),
}

# A ready-made queue, however it is reached, loses the test that reads the task cells as
# submitted (kit.learner_source: the runner's copy), and nothing else.
QUEUE_MODULE = (
    "class BoundedQueue:\n"
    "    def __init__(self, maxsize):\n"
    "        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:\n"
    "            raise ValueError(maxsize)\n"
    "        self.q = IMPORT.Queue(maxsize)\n"
    "        self.cv = threading.Condition()  # named, never waited on\n"
    "    def put(self, item):\n        self.q.put(item)\n"
    "    def get(self):\n        return self.q.get()\n"
    "    def qsize(self):\n        return self.q.qsize()\n")
# What a test reads from the learner's process (a queue's qsize(), the harness's write-buffer
# peak) is never the only evidence: a lie there scores what the same code scores honestly.
DISGUISES = {
    "queue_module": ("10", "BoundedQueue", "import queue\n" + QUEUE_MODULE.replace("IMPORT", "queue"),
                     {"built_on_a_condition"}),
    "queue_by_string": ("10", "BoundedQueue", QUEUE_MODULE.replace("IMPORT", "__import__('qu' + 'eue')"),
                        {"built_on_a_condition"}),
    "pool_by_executor": ("10", "serve_pool", [  # the same workers, run by an executor
        ("import select\n", "import concurrent.futures\nimport select\n"),
        ('    workers = [threading.Thread(target=work, name=f"pool-worker-{n}") for n in range(WORKERS)]\n'
         "    for worker in workers:\n        worker.start()\n",
         "    executor = concurrent.futures.ThreadPoolExecutor(WORKERS)\n"
         "    workers = [executor.submit(work) for _ in range(WORKERS)]\n"),
        ("            worker.join()\n", "            worker.result()\n        executor.shutdown()\n")],
        {"built_on_a_condition"}),
    "lying_qsize": ("10", "BoundedQueue", [("while len(self.items) >= self.maxsize:", "while False:"),
                                           ("            return len(self.items)",
                                            "            return min(len(self.items), self.maxsize)")], "10"),
    "forged_peak": ("11", "FlowServer", [("        self.writing = False\n",
                                          "        globals()['write_buffer_peak'] = lambda: 0\n")], "11"),
}


def disguised(key: str, task: str, change: str | list[tuple[str, str]]) -> str:
    """The solution's `task` cell with `change`: a whole new cell (str), or [(old, new)] edits."""
    source = task_source(LAB[key].nb, task)
    if isinstance(change, str):
        return change
    for old, new in change:
        assert old in source, f"{key}: the solution of {task} no longer contains {old!r}"
        source = source.replace(old, new)
    return source


@pytest.fixture(scope="module")
def shortcuts() -> Iterator[dict]:
    with private_dir("labs-shortcuts-") as base:
        subs, out = base / "subs", base / "out"
        for key, (task, old, new, _) in SHORTCUTS.items():
            lab = LAB[key[:2]]  # "12-decoder": a second shortcut in lab 12, graded as another student
            source = task_source(lab.nb, task)
            assert old in source, f"{lab.id}: the solution of {task} no longer contains {old!r}"
            submit(subs, f"shortcut{key[2:]}", lab.id, with_tasks(lab.solution_notebook(),
                                                                  **{task: source.replace(old, new)}))
        for name, (key, task, change, _) in DISGUISES.items():
            submit(subs, name, LAB[key].id, with_tasks(LAB[key].solution_notebook(),
                                                       **{task: disguised(key, task, change)}))
        grade(subs, out, "-j", "2")
        yield {"rows": read_csv(out / "gradebook.csv")}


@pytest.mark.parametrize("key", sorted(SHORTCUTS))
def test_the_shortcut_a_lab_replaces_loses_exactly_its_tests(shortcuts: dict, key: str) -> None:
    lab, caught = LAB[key[:2]], SHORTCUTS[key][3]
    got = points_by_test(shortcuts["rows"], f"shortcut{key[2:]}", lab.id)
    full = {t.name: t.points for t in lab.tests}
    assert {name for name in full if got[name] < full[name]} == caught, got


@pytest.mark.parametrize("name", sorted(DISGUISES))
def test_a_disguised_shortcut_loses_what_it_should(shortcuts: dict, name: str) -> None:
    key, _, _, expected = DISGUISES[name]
    lab = LAB[key]
    got = points_by_test(shortcuts["rows"], name, lab.id)
    if isinstance(expected, set):  # a ready-made queue: only the test that reads the source catches it
        full = {t.name: t.points for t in lab.tests}
        assert {test for test in full if got[test] < full[test]} == expected, got
    else:  # a lie told by the learner's process: exactly what its honest twin (the shortcut) scores
        assert got == points_by_test(shortcuts["rows"], "shortcut", lab.id), got


# --------------------------------------------------------------------------- self-check


def test_self_check_in_the_learners_notebook(tmp_path: Path) -> None:
    """A learner who has done readn only runs the released notebook top to bottom."""
    from notebook_runner import execute

    result = labs_cli("release", "01", "-o", str(tmp_path / "rel"), "--cohort", "c", "--student", "ann")
    assert result.returncode == 0, result.stderr
    lab = LAB["01"]
    nb = nbformat.read(tmp_path / "rel" / "ann" / f"{lab.id}.ipynb", as_version=4)
    with_tasks(nb, readn=task_source(lab.nb, "readn"))
    # The one runner of notebooks in tests (a fresh kernel, its own event loop, closed after:
    # papermill.execute_notebook here left jupyter_core's per-thread loop and its socketpair).
    execute(nb, tmp_path, timeout_s=120)
    run = nb
    printed = "".join(o.get("text", "") for c in run.cells if c.cell_type == "code" for o in c.outputs)
    assert "readn_exact: passed, 2/2 points" in printed
    assert "echo_handler_small: FAILED, 0/2 points: NotImplementedError: recv in a loop" in printed
    assert "A hidden test, readn_eof_message (1 point), runs here when your lab is graded." in printed
    check = next(c for c in run.cells if c.source.strip() == "kit.check()")
    summary = "".join(o.get("text", "") for o in check.outputs)
    assert summary.startswith("Visible tests: 4 of 8 points\n"), summary
    hidden = ", ".join(f"{t.name} ({t.points:g})" for t in lab.tests if t.hidden)
    assert f"Hidden tests, run when graded (8 points): {hidden}" in summary
    assert "def readn_eof_message" not in json.dumps(run), "the released notebook shows no hidden test's code"


def test_check_for_one_task_runs_only_its_tests(capsys) -> None:
    from helpers.labs import kit

    saved = dict(kit._tests)
    kit._tests.clear()
    try:
        ns: dict = {"readn": lambda: None}
        exec("def readn_ok():\n    readn()\n\ndef other():\n    raise AssertionError('not this one')\n", ns)
        kit._tests["readn_ok"] = kit._Registered(ns["readn_ok"], 2.0, 5.0, False)
        kit._tests["other"] = kit._Registered(ns["other"], 1.0, 5.0, False)
        kit.check("readn")
        out = capsys.readouterr().out
        assert out == "Visible tests that use readn: 2 of 2 points\n  readn_ok: passed, 2/2 points\n", out
        kit.check("nothing_here")
        assert "No test you have run uses 'nothing_here' (tests run so far: readn_ok, other)" in \
            capsys.readouterr().out
    finally:
        kit._tests.clear()
        kit._tests.update(saved)


def test_kit_rejects_bad_test_arguments() -> None:
    from helpers.labs import kit

    for bad, kind, match in [(0, ValueError, r"^points must be a number > 0, got 0$"),
                             (True, ValueError, r"^points must be a number > 0, got True$")]:
        with pytest.raises(kind, match=match):
            kit.test(points=bad)
    with pytest.raises(ValueError, match=r"^timeout_s must be a number of seconds in \(0, 3600\], got -1$"):
        kit.test(points=1, timeout_s=-1)
    with pytest.raises(TypeError, match=r"^timing must be True or False, got 'yes'$"):
        kit.test(points=1, timing="yes")
    with pytest.raises(RuntimeError, match=r"^kit.case\(\) belongs inside a test function"):
        with kit.case("outside"):
            pass


def test_learner_source_finds_the_cell_that_defines_a_task() -> None:
    from helpers.labs import kit

    with pytest.raises(TypeError, match=r"^learner_source\(\) needs the name a task defines, e\.g\. 'BoundedQueue', "
                                        r"got 'no such'$"):
        kit.learner_source("no such")
    with pytest.raises(LookupError, match=r"^no cell run in this notebook defines Nowhere: run its task cell first$"):
        kit.learner_source("Nowhere")  # no notebook here: no cell history
    assert kit._defines("import x\nclass Q:\n    pass\n", "Q") and kit._defines("Q = 1\n", "Q")
    assert not kit._defines("Q.put(1)\n", "Q") and not kit._defines("def Q(:\n", "Q")


# --------------------------------------------------------------------------- partial credit and retry


@pytest.fixture(scope="module")
def partial_and_retry() -> Iterator[dict]:
    with private_dir("labs-partial-") as base:
        subs, out = base / "subs", base / "out"
        http, beats = LAB["06"], LAB["05"]
        # HTTP/1.0 keep-alive not understood: 8 of the 10 RFC cases right.
        submit(subs, "partial", http.id, with_tasks(http.solution_notebook(), persistent=(
            "def persistent(version, connection):\n"
            "    tokens = {t.strip().lower() for t in (connection or '').split(',')}\n"
            "    return version == '1.1' and 'close' not in tokens\n")))
        # The first heartbeat ever fails (a timing test: retried once); PONG numbers are not
        # checked (a test that is not about timing: never retried).
        source = task_source(beats.nb, "heartbeat").replace(
            "    rtts = []\n", "    global CALLS\n    CALLS = globals().get('CALLS', 0) + 1\n"
            "    if CALLS == 1:\n        raise ConnectionError('a hiccup on the first call')\n    rtts = []\n", 1)
        source = source.replace('if line != f"PONG {n}".encode():', 'if not line.startswith(b"PONG "):')
        assert "CALLS == 1" in source and 'startswith(b"PONG ")' in source
        submit(subs, "retry", beats.id, with_tasks(beats.solution_notebook(), heartbeat=source))
        grade(subs, out, "-j", "2")
        yield {"rows": read_csv(out / "gradebook.csv"), "out": out}


def test_partial_credit_counts_each_case(partial_and_retry: dict) -> None:
    rows = {r["test"]: r for r in partial_and_retry["rows"] if r["student"] == "partial"}
    rfc = rows["persistent_rfc_cases"]
    assert (float(rfc["points"]), float(rfc["max"]), rfc["error"]) == (1.6, 2.0, ""), rfc
    assert rfc["note"].startswith("8 of 10 cases passed; case HTTP/1.0, Connection: 'Keep-Alive': AssertionError: "
                                  "persistent('1.0', 'Keep-Alive') returned False, should be True"), rfc["note"]
    assert float(rows["persistent_basics"]["points"]) == 0, "a test without cases is all or nothing"
    feedback = (partial_and_retry["out"] / "feedback" / "partial" / "06-reactor-http.ipynb").read_text()
    assert "persistent_rfc_cases: partly passed, 1.6/2 points" in feedback


def test_timing_tests_get_one_retry_and_say_so(partial_and_retry: dict) -> None:
    rows = {r["test"]: r for r in partial_and_retry["rows"] if r["student"] == "retry"}
    live = rows["heartbeats_live_peer"]
    assert float(live["points"]) == float(live["max"]) == 2, live
    assert live["note"] == ("timing test retried once (first attempt: ConnectionError: a hiccup on the first "
                            "call)"), live["note"]
    wrong = rows["wrong_pong_number"]
    assert float(wrong["points"]) == 0 and "retried" not in wrong["note"], wrong
    assert all(float(r["points"]) == float(r["max"]) for n, r in rows.items() if n != "wrong_pong_number"), rows


# --------------------------------------------------------------------------- a class: shards, resume, regrade


CLASS_LABS = ("01", "06")


@pytest.fixture(scope="module")
def classroom() -> Iterator[dict]:
    with private_dir("labs-class-") as base:
        released, subs = base / "rel", base / "subs"
        students = ["ann", "bob", "cy"]  # dee and eve are on the roster and submit nothing
        result = labs_cli("release", *CLASS_LABS, "-o", str(released), "--cohort", "c",
                          *[a for s in students for a in ("--student", s)],
                          "--deadline", "2026-03-01T23:59+01:00", "--late-penalty", "10%/day,max=25%")
        assert result.returncode == 0, result.stderr
        for i, student in enumerate(students):
            for lab_key in CLASS_LABS:
                lab = LAB[lab_key]
                if i % 2 == 0:
                    nb = lab.solution_notebook()
                    nb.metadata["papermill"] = {"parameters": {}}
                    submit(subs, student, lab.id, nb)
                else:
                    (subs / student).mkdir(parents=True, exist_ok=True)
                    (subs / student / f"{lab.id}.ipynb").write_bytes(
                        (released / student / f"{lab.id}.ipynb").read_bytes())
        times = base / "times.csv"
        times.write_text("student,lab,submitted_at\nann,01,2026-03-03T12:00+01:00\nann,06-reactor-http,"
                         "2026-03-01T23:00+01:00\nbob,1,2026-03-01T08:00Z\nbob,6,2026-03-01T08:00Z\n"
                         "cy,01,2026-09-09T00:00Z\ncy,06,2026-02-01T00:00Z\n")
        roster = base / "roster.csv"
        roster.write_text("student,name,canvas_id,sis_user_id,sis_login_id,section,email,username,idnumber\n"
                          "ann,Ann A,101,S1,ann@u,Sec 1,ann@u.example,ann,1001\nbob,Bob B,102,S2,bob@u,Sec 1,"
                          "bob@u.example,bob,1002\ncy,Cy C,103,S3,cy@u,Sec 2,cy@u.example,cy,1003\n"
                          "dee,Dee D,104,S4,dee@u,Sec 2,dee@u.example,dee,1004\neve,Eve E,105,S5,eve@u,Sec 2,"
                          "eve@u.example,eve,1005\n")
        common = ["--manifest", str(released / "manifest.json"), "--submission-times", str(times),
                  "--roster", str(roster), "--export", "canvas", "--export", "moodle"]
        whole = base / "whole"
        grade(subs, whole, "-j", "2", *common)
        shards = [base / "s1", base / "s2"]
        for k, out in enumerate(shards, 1):
            grade(subs, out, "-j", "2", "--shard", f"{k}/2", *common)
        merged = base / "merged"
        result = labs_cli("merge", *map(str, shards), "-o", str(merged), "--roster", str(roster),
                          "--export", "canvas", "--export", "moodle")
        assert result.returncode == 0, result.stderr
        yield {"base": base, "subs": subs, "whole": whole, "shards": shards, "merged": merged, "common": common,
               "students": students, "released": released}


def test_shards_merged_equal_one_unsharded_run(classroom: dict) -> None:
    for name in ("gradebook.csv", "submissions.csv", "grades.csv", "canvas.csv", "moodle.csv"):
        whole = (classroom["whole"] / name).read_text()
        assert (classroom["merged"] / name).read_text() == whole, name
    graded = [set(json.loads((s / "run.json").read_text())["graded"]) for s in classroom["shards"]]
    assert graded[0] and graded[1] and not graded[0] & graded[1], "each shard grades its own share"
    feedback = sorted(p.relative_to(classroom["merged"]) for p in (classroom["merged"] / "feedback").rglob("*.ipynb"))
    assert len(feedback) == 6


def test_merge_refuses_a_missing_or_doubled_shard(classroom: dict) -> None:
    s1, s2 = map(str, classroom["shards"])
    out = str(classroom["base"] / "bad-merge")
    missing = labs_cli("merge", s1, "-o", out)
    assert missing.returncode == 2 and missing.stderr == "error: shard(s) 2/2 missing: merge needs all 2\n"
    doubled = labs_cli("merge", s1, s1, s2, "-o", out)
    assert doubled.returncode == 2 and doubled.stderr.startswith("error: shard 1/2 is given twice: "), doubled.stderr


def test_late_policy_in_the_gradebooks(classroom: dict) -> None:
    subs = {(r["student"], r["lab"]): r for r in read_csv(classroom["whole"] / "submissions.csv")}
    ann = subs[("ann", "01-echo")]
    assert (ann["late_days"], ann["penalty_percent"], ann["points"], ann["final"]) == ("2", "20", "16", "12.8"), ann
    assert ann["deadline"] == "2026-03-01T23:59:00+01:00" and ann["submitted_at"] == "2026-03-03T12:00:00+01:00"
    cy = subs[("cy", "06-reactor-http")]
    assert (cy["late_days"], cy["penalty_percent"], cy["final"]) == ("0", "0", "15"), cy
    capped = subs[("cy", "01-echo")]
    assert (capped["late_days"], capped["penalty_percent"]) == ("192", "25"), "the cap holds"
    wide = {r["student"]: r for r in read_csv(classroom["whole"] / "grades.csv")}
    assert list(wide["ann"]) == ["student", "01-echo", "06-reactor-http", "total"]
    assert (wide["ann"]["01-echo"], wide["ann"]["06-reactor-http"], wide["ann"]["total"]) == ("12.8", "15", "27.8")
    assert (wide["eve"]["01-echo"], wide["eve"]["total"]) == ("", "0"), "on the roster, nothing submitted"
    feedback = (classroom["whole"] / "feedback" / "ann" / "01-echo.ipynb").read_text()
    assert "2 day(s) after the deadline" in feedback and "20% off" in feedback


def test_regrade_one_test_keeps_the_rest(classroom: dict) -> None:
    out = classroom["whole"]
    work = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("events.jsonl")}
    before = read_csv(out / "gradebook.csv")
    grade(classroom["subs"], out, "--regrade", "bob/01/readn_exact", *classroom["common"])
    rerun = {p for p, m in work.items() if p.stat().st_mtime_ns != m}
    assert rerun == {out / "work" / "bob" / "01-echo" / "events.jsonl"}, rerun
    record = json.loads((out / "results" / "bob" / "01-echo.json").read_text())
    assert record["notes"][-1] == "test readn_exact regraded"
    events = (out / "work" / "bob" / "01-echo" / "events.jsonl").read_text()
    reported = [json.loads(line)["test"] for line in events.splitlines() if '"event": "test"' in line]
    assert sorted(reported) == sorted(t.name for t in LAB["01"].tests), "the other tests' reports are kept"
    assert reported[-1] == "readn_exact", "the regraded test's new report replaces its old one"
    assert read_csv(out / "gradebook.csv") == before, "same submission, same verdicts"


def test_grading_resumes_without_grading_again(classroom: dict) -> None:
    out = classroom["whole"]
    (out / "results" / "cy" / "06-reactor-http.json").unlink()  # as if interrupted before this one
    work = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("events.jsonl")}
    grade(classroom["subs"], out, *classroom["common"])
    rerun = {p for p, m in work.items() if p.stat().st_mtime_ns != m}
    assert rerun == {out / "work" / "cy" / "06-reactor-http" / "events.jsonl"}, rerun
    assert (out / "results" / "cy" / "06-reactor-http.json").exists()


def test_regrade_a_student(classroom: dict) -> None:
    out = classroom["whole"]
    work = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("events.jsonl")}
    grade(classroom["subs"], out, "--regrade", "cy", *classroom["common"])
    rerun = {p.parent.parent.name for p, m in work.items() if p.stat().st_mtime_ns != m}
    assert rerun == {"cy"}, rerun


# --------------------------------------------------------------------------- LMS exports

# What the importers accept, written from their documentation and source: Canvas's
# GradebookImporter (canvas-lms app/models/gradebook_importer.rb) and Moodle's CSV grade
# import (grade/import/csv/classes/load_data.php; docs.moodle.org "Grade import").
CANVAS_SAMPLE = ("Student,ID,SIS User ID,SIS Login ID,Section,Quiz 1 (411),Final Points\n"
                 "    Points Possible,,,,,10,(read only)\nSmith Ann,1234,S001,asmith,Section 1,8.5,8.5\n")
MOODLE_SAMPLE = "Email address,Assignment 1\nann@u.example,8.5\nbob@u.example,-\n"


def canvas_import(text: str) -> dict:
    """Canvas's rules: the header, the student columns up to Section, Points Possible, grades."""
    import csv
    import io
    import re

    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert len(header) > 3 and "Student" in header[0] and "ID" in header[1], "not a Canvas header"
    columns = 3
    if re.search(r"SIS\s+Login\s+ID", header[2]):
        columns += 1
    elif re.search(r"SIS\s+User\s+ID", header[2]) and re.search(r"SIS\s+Login\s+ID", header[3]):
        columns += 2
    assert "Section" in header[columns - 1], "the student columns end with Section"
    non_assignment = ("Current Score", "Current Points", "Current Grade", "Final Score", "Final Points", "Final Grade")
    assignments = [(i, h) for i, h in enumerate(header) if i >= columns and not any(n in h for n in non_assignment)]
    points, students = {}, {}
    for row in rows[1:]:
        if "Points Possible" in row[0]:
            points = {h: row[i] for i, h in assignments}
            continue
        assert row[0] or row[1], "a student row names the student (name or ID)"
        grades = {h: row[i].strip() for i, h in assignments}
        for h, grade in grades.items():
            assert grade in ("", "-", "EX") or re.fullmatch(r"-?[0-9.,]+%?", grade), f"{h}: {grade!r}"
        students[row[1] or row[0]] = grades
    return {"assignments": [h for _, h in assignments], "points": points, "students": students}


def moodle_import(text: str, identify: str) -> dict:
    """Moodle's rules: trimmed headers, one column mapped to a user field, grades numeric or - ."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip() for h in rows[0]]
    assert identify in header, f"no {identify!r} column to map users from"
    key = header.index(identify)
    grades = {}
    for row in rows[1:]:
        assert row[key].strip(), "a row with a blank user field is skipped by Moodle"
        values = {}
        for i, h in enumerate(header):
            if i == key or h in ("Username", "Email address", "ID number"):
                continue
            cell = row[i].strip()
            if cell in ("", "-"):
                values[h] = None
            else:
                value = float(cell)  # unformat_float
                assert 0 <= value <= 100, "above gradepointmax (100) the import fails"
                values[h] = value
        grades[row[key]] = values
    return grades


def test_import_models_accept_the_documented_samples() -> None:
    canvas = canvas_import(CANVAS_SAMPLE)
    assert canvas["assignments"] == ["Quiz 1 (411)"] and canvas["points"] == {"Quiz 1 (411)": "10"}
    assert moodle_import(MOODLE_SAMPLE, "Email address") == {"ann@u.example": {"Assignment 1": 8.5},
                                                             "bob@u.example": {"Assignment 1": None}}


def test_canvas_export_imports(classroom: dict) -> None:
    canvas = canvas_import((classroom["whole"] / "canvas.csv").read_text())
    labs = [LAB[k] for k in CLASS_LABS]
    assert canvas["assignments"] == [lab.id for lab in labs]
    assert canvas["points"] == {lab.id: f"{lab.max_points:g}" for lab in labs}
    assert canvas["students"]["101"] == {"01-echo": "12.8", "06-reactor-http": "15"}, "Ann, by her Canvas ID"
    assert canvas["students"]["105"] == {"01-echo": "", "06-reactor-http": ""}, "no submission: no change"
    header = (classroom["whole"] / "canvas.csv").read_text().splitlines()[0]
    assert header == "Student,ID,SIS User ID,SIS Login ID,Section,01-echo,06-reactor-http"


def test_moodle_export_imports(classroom: dict) -> None:
    text = (classroom["whole"] / "moodle.csv").read_text()
    assert text.splitlines()[0] == "Username,Email address,ID number,01-echo,06-reactor-http"
    by_email = moodle_import(text, "Email address")
    assert by_email["ann@u.example"] == {"01-echo": 12.8, "06-reactor-http": 15.0}
    assert by_email["eve@u.example"] == {"01-echo": None, "06-reactor-http": None}
    assert set(moodle_import(text, "ID number")) == {"1001", "1002", "1003", "1004", "1005"}


# --------------------------------------------------------------------------- the command line


def test_release_per_student_gives_different_numbers(tmp_path: Path) -> None:
    result = labs_cli("release", "01", "-o", str(tmp_path), "--cohort", "c", "--student", "ann", "--student", "ben")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    seeds = {who: labs["01-echo"]["seed"] for who, labs in manifest["released"].items()}
    assert seeds["ann"] != seeds["ben"], seeds
    for who, seed in seeds.items():
        nb = nbformat.read(tmp_path / who / "01-echo.ipynb", as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and f"seed = {seed}" in injected[0].source
        assert nb.metadata.papermill.parameters == {"seed": seed}
    fixed = labs_cli("release", "01", "-o", str(tmp_path / "fixed"), "--cohort", "c", "-p", "seed=42")
    assert fixed.returncode == 0 and "seed = 42" in (tmp_path / "fixed" / "c" / "01-echo.ipynb").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "99", "-o", "{tmp}"], "error: no lab called '99'; the labs are: 01-echo"),
        (["release", "01", "-o", "{tmp}", "-p", "seed=abc"], "error: 01-echo: parameter seed must be int, got 'abc'"),
        (["release", "01", "-o", "{tmp}", "-p", "seed=-5"],
         "error: 01-echo: parameter seed=-5 is out of range 0..999999"),
        (["release", "-o", "{tmp}", "-p", "colour=red"], "error: no lab here has parameter(s) colour"),
        (["release", "-o", "{tmp}", "-p", "seed"], "error: -p wants name=value, got 'seed'"),
        (["release", "-o", "{tmp}", "--student", "../x"], "error: '../x' cannot be a folder name"),
        (["release", "-o", "{tmp}", "--deadline", "98=2026-03-01T00:00Z"],
         "error: --deadline names '98', which is not one of the labs"),
        (["release", "-o", "{tmp}", "--late-penalty", "10%/day"], "error: a late penalty needs deadlines"),
        (["grade", "{tmp}/missing", "-o", "{tmp}/out"], "is not a folder of submissions"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "-j", "0"], "error: -j must be at least 1, got 0"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--shard", "3/2"], "error: --shard wants K/N with 1 <= K <= N"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--shard", "x"], "error: --shard wants K/N with 1 <= K <= N"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--sandbox", "maybe"], "error: argument --sandbox: invalid choice"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--export", "blackboard"], "error: argument --export: invalid choice"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--deadline", "2026-03-01"],
         "error: the time '2026-03-01' has no UTC offset"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--deadline", "soon"], "error: a deadline is an ISO 8601 time"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--deadline", "2026-03-01T00:00Z", "--late-penalty", "ten"],
         "error: --late-penalty wants PERCENT%/day"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--regrade", "a/b/c/d"], "error: --regrade wants STUDENT"),
        (["grade", "{tmp}", "-o", "{tmp}/out", "--regrade", "nobody"], "error: --regrade: no submissions from"),
        (["merge", "{tmp}", "-o", "{tmp}/out"], "is not a grading output folder"),
    ],
)
def test_bad_input_gives_one_error_line(tmp_path: Path, args: list[str], message: str, capsys) -> None:
    from helpers.labs.__main__ import main

    try:
        code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    stderr = capsys.readouterr().err
    assert code == 2
    assert message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not _child_subreaper(), "main() in-process made pytest a subreaper: it would adopt later tests' orphans"


def _child_subreaper() -> bool:
    """prctl(PR_GET_CHILD_SUBREAPER) for this process."""
    flag = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(37, ctypes.byref(flag), 0, 0, 0)
    return bool(flag.value)


def test_manifest_parameters_beat_the_submitted_ones(tmp_path: Path) -> None:
    from helpers.labs.grade import _parameters
    from helpers.labs.source import LabError

    lab = LAB["01"]
    result = labs_cli("release", lab.id, "-o", str(tmp_path), "--cohort", "c", "--student", "ann")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    submitted = nbformat.read(tmp_path / "ann" / f"{lab.id}.ipynb", as_version=4)
    given = manifest["released"]["ann"][lab.id]["seed"]
    submitted.metadata.papermill.parameters = {"seed": (given + 1) % 1_000_000}  # the learner edits their seed
    assert _parameters(lab, "ann", submitted, manifest) == {"seed": given}
    assert _parameters(lab, "ann", submitted, None) == {"seed": (given + 1) % 1_000_000}
    with pytest.raises(LabError, match=r"^manifest has no release of 01-echo to 'bob'$"):
        _parameters(lab, "bob", submitted, manifest)
    submitted.metadata.papermill.parameters = {"seed": "7; import os"}
    with pytest.raises(LabError, match=r"parameter seed must be int"):
        _parameters(lab, "ann", submitted, None)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_grading_30_submissions_with_two_jobs() -> None:
    with private_dir("labs-30-") as base:
        released = base / "released"
        assert labs_cli("release", "-o", str(released), "--cohort", "big", "--student", "s").returncode == 0
        subs = base / "subs"
        expected = {}
        for i in range(30):
            lab = LABS[i % len(LABS)]
            student = f"learner{i:02d}"
            if i % 2:
                submit(subs, student, lab.id, lab.solution_notebook())
                expected[(student, lab.id)] = lab.max_points
            else:
                (subs / student).mkdir(parents=True)
                (subs / student / f"{lab.id}.ipynb").write_bytes((released / "s" / f"{lab.id}.ipynb").read_bytes())
                expected[(student, lab.id)] = 0.0
        started = time.monotonic()
        grade(subs, base / "out", "-j", "2")
        seconds = time.monotonic() - started
        got = {k: v[0] for k, v in totals(read_csv(base / "out" / "gradebook.csv")).items()}
        assert got == expected
        print(f"graded 30 submissions with -j 2 in {seconds:.1f} s ({seconds / 30:.1f} s each)")


# --------------------------------------------------------------------------- the wire between the two processes


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _refuse_objects(value: object) -> dict:
    raise TypeError(f"cannot pass {type(value).__name__}")


def _no_handles(ref: dict) -> object:
    raise AssertionError(f"no handles here: {ref}")


def test_wire_carries_values_and_a_working_socket() -> None:
    from helpers.labs.wire import Channel, Codec
    from helpers.reactor import Request

    codec = Codec(_refuse_objects, _no_handles)
    left, right = socket.socketpair()
    a, b = socket.socketpair()
    with left, right, a, b:
        a.settimeout(3.5)
        value = {"n": [1, 2.5, None, True], ("t", 1): b"\x00" * 100_000, "set": {1, 2}, "path": Path("/x/y"),
                 "ba": bytearray(b"ab"), "req": Request("GET", "/", "1.1", [(b"host", b"x")]), "sock": a}
        encoded, blobs, fds = codec.encode(value)
        Channel(left).send({"v": encoded}, blobs, fds)
        for fd in fds:
            os.close(fd)
        obj, blobs, fds = Channel(right).recv()
        got, sockets = codec.decode(obj["v"], blobs, fds)
        try:
            received = got.pop("sock")
            assert received.gettimeout() == 3.5 and received.fileno() != a.fileno()
            received.sendall(b"through the passed descriptor")
            assert b.recv(100) == b"through the passed descriptor"
            assert got == {k: v for k, v in value.items() if k != "sock"}
        finally:
            for s in sockets:
                s.close()


@pytest.mark.parametrize(("frame", "match"), [
    ({"$": "pickle", "v": "x"}, r"^unknown value kind 'pickle'$"),
    ({"$": "dataclass", "cls": "subprocess:Popen", "v": {}}, r"only the course's own dataclasses can be passed"),
    ({"$": "dataclass", "cls": "helpers.reactor.http:Request", "v": {"evil": 1}},
     r"^helpers.reactor.http:Request: unknown fields \['evil'\]$"),
    ({"$": "bytes", "i": 5}, r"^a bytes value names blob 5 of 0$"),
    ({"$": "socket", "i": 0, "timeout": None}, r"^a descriptor passed as a socket is not a socket$"),
    ({"$": "list", "v": [{"$": "list", "v": []}] * 3}, None),
    ({"$": "set", "v": [{"$": "list", "v": []}]}, r"^a set that cannot be built"),
])
def test_wire_refuses_what_it_cannot_trust(frame: dict, match: str | None) -> None:
    from helpers.labs.wire import Codec, WireError

    codec = Codec(_refuse_objects, _no_handles)
    before = _fd_count()
    fds = [os.open(os.devnull, os.O_RDONLY)] if frame.get("$") == "socket" else []
    if match is None:
        assert codec.decode(frame, [], fds)[0] == [[], [], []]
    else:
        with pytest.raises(WireError, match=match):
            codec.decode(frame, [], fds)
    assert _fd_count() == before, "every descriptor received is closed or handed over"


def test_wire_refuses_oversized_and_lying_frames() -> None:
    import struct

    from helpers.labs.wire import MAX_FRAME_BYTES, Channel, WireError

    for header, match in [(struct.pack("!IIH", MAX_FRAME_BYTES + 1, 0, 0), r"over the limit"),
                          (struct.pack("!IIH", 2, 0, 3), r"^a frame announced 3 file descriptors and carried 0$")]:
        left, right = socket.socketpair()
        with left, right:
            left.sendall(header + b"{}")
            with pytest.raises(WireError, match=match):
                Channel(right).recv()
    with pytest.raises(TypeError, match=r"cannot pass"):
        from helpers.labs.wire import Codec

        Codec(_refuse_objects, _no_handles).encode([object()])
