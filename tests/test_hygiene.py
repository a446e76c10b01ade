"""helpers.core.hygiene: what counts as left behind, and what is the kernel's own business."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

from helpers import TCPServer
from helpers.core import hygiene


def test_open_sockets_are_listed_until_closed() -> None:
    a, b = socket.socketpair()
    left = hygiene.leftovers()
    assert len(left.sockets) == 2 and "AF_UNIX" in left.sockets[0]
    a.close()
    b.close()
    assert not hygiene.leftovers()


def test_running_servers_and_their_threads_are_listed() -> None:
    server = TCPServer()
    left = hygiene.leftovers()
    assert left.servers and left.threads and left.sockets
    server.stop()
    assert not hygiene.leftovers()


def test_sockets_made_by_kernel_machinery_are_not_the_lessons(tmp_path: Path) -> None:
    # Stand-in for ipykernel's subshell start-up, which makes an asyncio self-pipe.
    pkg = tmp_path / "ipykernel"
    pkg.mkdir()
    (pkg / "fake_subshell.py").write_text("import socket\ndef start():\n    return socket.socketpair()\n")
    spec = importlib.util.spec_from_file_location("fake_subshell", pkg / "fake_subshell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a, b = module.start()
    try:
        assert not hygiene.leftovers().sockets
    finally:
        a.close()
        b.close()


def test_non_loopback_binds_are_recorded() -> None:
    before = len(hygiene.non_loopback_binds())
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # bound, never listening: allowed in a lesson about binding
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
    binds = hygiene.non_loopback_binds()[before:]
    assert binds == ["('0.0.0.0', 0)"]


def test_check_clean_names_what_is_left(capsys) -> None:
    s = socket.socket()
    try:
        try:
            hygiene.check_clean()
        except AssertionError as exc:
            assert "AF_INET/SOCK_STREAM" in str(exc)
        else:
            raise AssertionError("check_clean() passed with an open socket")
    finally:
        s.close()
    hygiene.check_clean()
    assert "Clean" in capsys.readouterr().out


def test_the_record_of_sockets_stays_small_and_keeps_the_open_ones() -> None:
    """Closed sockets are forgotten as more are made (the record is purged every few thousand),
    while one kept open all along is still listed."""
    kept = socket.socket()
    try:
        for _ in range(3 * hygiene._PURGE_EVERY):
            socket.socket().close()
        assert len(hygiene._sockets) <= hygiene._PURGE_EVERY + 10
        assert any(s is kept for s in hygiene.open_sockets())
    finally:
        kept.close()
