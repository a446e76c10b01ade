"""Child entries for tests/test_spawn.py, run by helpers.core.spawn as ``tests.spawn_children:NAME``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from helpers.core import spawn


def echo(config: dict[str, Any]) -> None:
    """Say ready with `config`, then send every command back until end of file."""
    print("a stray print: it must land in stderr, not in the messages")
    import helpers

    spawn.ready(**config, module=__name__, isolated=sys.flags.isolated, helpers=helpers.__file__)
    for command in spawn.commands():
        spawn.say(command)


def fail_before_ready(config: dict[str, Any]) -> None:
    raise ValueError("boom before ready")


def silent(config: dict[str, Any]) -> None:
    threading.Event().wait()  # never says ready


def stubborn(config: dict[str, Any]) -> None:
    """Ignore SIGTERM and end of file, and leave a grandchild behind: only a group SIGKILL ends both."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(600)
        os._exit(0)
    spawn.ready(grandchild=grandchild)
    for _ in spawn.commands():
        pass
    threading.Event().wait()  # stdin closed: stay anyway
