"""helpers.core.spawn: the one way the helpers start a Python child (handshake, JSON lines, stdin
for life, the process group stopped as a whole), on real processes."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest

from helpers.core import spawn


def gone(pid: int) -> bool:
    """True once `pid` has exited: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_handshake_messages_and_isolation() -> None:
    with spawn.Child("tests.spawn_children:echo", {"x": 1}) as child:
        hello = child.hello
        assert hello["event"] == "ready" and hello["pid"] == child.pid and hello["x"] == 1
        assert hello["module"] == "tests.spawn_children"  # imported by name, not run as __main__
        assert hello["isolated"] == 1  # python -I
        assert Path(hello["helpers"]).parent.parent == Path(spawn.PACKAGE_ROOT)  # this process's helpers
        assert child.ask({"cmd": "hi", "n": [1, 2]}) == {"cmd": "hi", "n": [1, 2]}
        child.send({"a": 1})
        child.send({"b": 2})
        assert [child.read(), child.read()] == [{"a": 1}, {"b": 2}]
        assert "a stray print" in child.stderr_tail()
        pid = child.pid
    assert child.returncode == 0 and gone(pid)  # end of file on stdin ended it
    assert child.stop() == 0  # idempotent


def test_a_child_that_fails_before_ready_is_reaped_and_says_why() -> None:
    with pytest.raises(spawn.ChildError, match=r"exited before its handshake") as info:
        spawn.Child("tests.spawn_children:fail_before_ready")
    assert "ValueError: boom before ready" in info.value.stderr and info.value.returncode == 1


def test_a_silent_child_times_out_and_is_killed() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waited 0.5 s for its handshake \(the 'ready' line\) from child \d+"):
        spawn.Child("tests.spawn_children:silent", start_timeout_s=0.5)
    assert time.monotonic() - started < 5  # 0.5 s, then stdin closed, SIGTERM: it ends at once


def test_stop_escalates_to_sigkill_and_takes_the_whole_group() -> None:
    child = spawn.Child("tests.spawn_children:stubborn")
    grandchild = child.hello["grandchild"]
    assert not gone(grandchild)
    assert child.stop(timeout_s=0.2) == -9  # ignored end of file and SIGTERM: killed
    deadline = time.monotonic() + 5
    while not gone(grandchild) and time.monotonic() < deadline:  # the group's SIGKILL reaches it
        time.sleep(0.01)
    assert gone(grandchild)


def test_kill_reaps_at_once_and_stop_after_it_signals_nobody() -> None:
    child = spawn.Child("tests.spawn_children:echo")
    assert child.kill() == -9 and not child.running
    assert child.stop() == -9
    with pytest.raises(spawn.ChildError, match=r"could not send"):
        child.send({"late": True})


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"entry": "tests.spawn_children"}, ValueError, r"^entry must name a function as 'package.module:function'"),
    ({"entry": "x:y; import os"}, ValueError, r"^entry must name a function"),
    ({"entry": "tests.spawn_children:echo", "config": {"s": {1}}}, TypeError, r"^config must be JSON data"),
    ({"entry": "tests.spawn_children:echo", "config": [1]}, TypeError, r"^config must be a dict"),
    ({"entry": "tests.spawn_children:echo", "start_timeout_s": math.nan}, ValueError, r"^start_timeout_s"),
])
def test_bad_arguments_are_refused_before_a_child_starts(kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message):
        spawn.Child(**kwargs)


def test_the_config_reaches_the_child_as_json() -> None:
    config = {"text": "é \" \\n", "numbers": [1, 2.5, None, True]}
    with spawn.Child("tests.spawn_children:echo", config) as child:
        assert {k: child.hello[k] for k in config} == json.loads(json.dumps(config))
        assert os.getpgid(child.pid) == child.pid  # its own process group (start_new_session)


def test_a_child_in_our_group_is_stopped_alone_even_when_paused() -> None:
    child = spawn.Child("tests.spawn_children:echo", own_group=False)
    assert os.getpgid(child.pid) == os.getpgid(0)  # a restart's SIGKILL to our group reaches it
    child.signal(signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "tT":
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert child.stop() == 0  # SIGCONT first, then end of file: it leaves on its own
