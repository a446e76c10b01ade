"""helpers.filters and helpers.keepalive: a socket filter makes a real peer vanish.

Where this process may not attach a filter to a TCP socket (some kernels refuse a normal
user), the same trials run in a user + network namespace of our own (helpers.netns), where
it may; where neither works, they are skipped with the reason.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from helpers import closing, filters, keepalive, netns


def _run(fn: Any, **kwargs: Any) -> Any:
    """fn(**kwargs) here if this process may attach filters, else in a namespace of our own."""
    if filters.support()[0]:
        return fn(**kwargs)
    status = netns.support()
    if not status.available:
        pytest.skip(f"{filters.support()[1]}; and {status.reason}")
    return netns.run_in_netns(fn, timeout_s=30, **kwargs)


def test_a_vanished_peer_hears_nothing_and_keepalive_gives_up_with_etimedout() -> None:
    seen = _run(keepalive.vanished_peer, idle_s=1, interval_s=1, count=2, limit_s=8)
    assert seen["error"] == "ETIMEDOUT", seen["error"]
    silent_s = seen["idle_before_s"] + seen["after_s"]   # keep-alive's clock starts at the last segment received
    assert 2.7 <= silent_s <= 6, seen  # idle 1 s + 2 probes x 1 s; wide above: a busy machine
    assert seen["peer_heard"] == 0, "the filter dropped every segment before the peer's TCP saw it"
    alive = [row for row in seen["timeline"] if row[1] == "ESTABLISHED"]
    assert max(row[2] for row in alive) == 2 and seen["timeline"][-1][1] == "CLOSE", seen["timeline"][-3:]


def _vanished_after_a_silence(silence_s: float) -> dict:
    """A keep-alive connection left silent for `silence_s` before its peer vanishes."""
    import socket
    import time

    from helpers import closing
    from helpers.keepalive import watch_vanished_peer

    client, peer = closing.connected_pair()
    with client, peer:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 1)
        time.sleep(silence_s)
        return watch_vanished_peer(client, peer, limit_s=6)


def test_keepalive_counts_its_idle_time_from_the_last_segment_received_not_from_the_vanishing() -> None:
    seen = _run(_vanished_after_a_silence, silence_s=1.2)
    assert seen["error"] == "ETIMEDOUT", seen
    assert 1.2 <= seen["idle_before_s"] < 2, seen  # TCP_INFO's last_ack_recv: the silence before the vanishing
    assert 2.85 <= seen["idle_before_s"] + seen["after_s"] <= 5, seen  # idle 2 s + 1 probe x 1 s, from the handshake
    assert seen["after_s"] < 2.85, seen  # so the verdict came sooner than 3 s after the vanishing


def _dropped_then_detached() -> dict:
    """Data sent while the peer drops everything is retransmitted, and arrives once it hears again."""
    import time

    from helpers import closing, filters
    from helpers.observe import tcp_info

    client, server = closing.connected_pair()
    with client, server:
        filters.drop_all(server)
        client.sendall(b"hello")
        deadline = time.monotonic() + 5
        while tcp_info(client).total_retrans < 1:  # dropped once, so TCP sends it again
            if time.monotonic() > deadline:
                return {"retransmitted": False}
            time.sleep(0.01)
        queued_while_deaf = closing.queued(server)[0]
        filters.detach(server)
        arrived = closing.wait_for_inq(server, 5, timeout_s=5)  # the next retransmission gets through
        return {"retransmitted": True, "queued_while_deaf": queued_while_deaf, "arrived": arrived,
                "data": server.recv(5).decode()}


def test_detach_lets_the_retransmitted_data_through() -> None:
    seen = _run(_dropped_then_detached)
    assert seen == {"retransmitted": True, "queued_while_deaf": 0, "arrived": 5, "data": "hello"}, seen


def test_bad_sockets_are_refused_before_anything_is_attached() -> None:
    with pytest.raises(TypeError, match=r"^drop_all\(\) needs a connected stream socket, got int 3$"):
        filters.drop_all(3)  # type: ignore[arg-type]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(ValueError, match=r"^drop_all\(\) needs a connected stream \(TCP\) socket, got a "):
            filters.drop_all(udp)
    client, server = closing.connected_pair()
    with client, server:
        with pytest.raises(ValueError, match=r"^detach\(\): this socket has no filter attached; call "
                                             r"drop_all\(sock\) first$"):
            filters.detach(server)


def test_a_refusing_kernel_gets_an_answer_that_says_where_it_works(monkeypatch: pytest.MonkeyPatch) -> None:
    if filters.support()[0]:  # allowed here (root, or a kernel that lets users filter TCP): simulate the refusal
        def refuse(sock: socket.socket) -> None:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(filters, "_attach_drop_all", refuse)
    client, server = closing.connected_pair()
    with client, server:
        with pytest.raises(PermissionError, match=r"drop_all\(\): this kernel does not let this process attach a "
                                                  r"filter to a TCP socket \(EPERM\); a normal user may do it inside"):
            filters.drop_all(server)
