"""helpers.services: the echo and one-route HTTP services every C10K model serves, without sockets
(fed whole, one byte at a time, with bytes left over), and serve_blocking over a real connection."""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import services
from helpers.closing import connected_pair

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
ANSWER = re.compile(rb"HTTP/1\.1 200 OK\r\n(?:[^\r\n]+\r\n)*\r\nok\n")


def answers(data: bytes) -> int:
    """How many complete '200 ok' answers `data` holds, whole and back to back (nothing else)."""
    matches = list(ANSWER.finditer(data))
    assert b"".join(m.group(0) for m in matches) == data, data
    return len(matches)


def test_echo_answers_what_it_got_and_closes_at_eof() -> None:
    echo = services.make_service("echo")
    assert echo.receive(b"hello") == (b"hello", False)
    assert echo.receive(b"") == (b"", True)


def test_http_whole_request_and_its_length() -> None:
    out, close = services.make_service("http").receive(REQUEST)
    assert answers(out) == 1 and not close
    assert b"Content-Length: 3\r\n" in out


def test_http_answers_any_path_and_refuses_other_methods() -> None:
    out, _ = services.make_service("http").receive(b"GET /a/b?c=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answers(out) == 1
    out, close = services.make_service("http").receive(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD\r\n" in out and not close


def test_http_one_byte_at_a_time_says_nothing_until_complete() -> None:
    svc = services.make_service("http")
    outs = [svc.receive(REQUEST[i:i + 1])[0] for i in range(len(REQUEST))]
    assert outs[:-1] == [b""] * (len(REQUEST) - 1)
    assert answers(outs[-1]) == 1


def test_http_keeps_trailing_bytes_buffered() -> None:
    svc = services.make_service("http")
    out, _ = svc.receive(REQUEST * 2 + REQUEST[:5])
    assert answers(out) == 2
    out, _ = svc.receive(REQUEST[5:])
    assert answers(out) == 1


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /" + b"a" * 9000, b"431"),                            # a head with no end, past 8 KiB
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 9000 + b"\r\n\r\n", b"431"),  # a complete head, too long
    (b"hello\r\n\r\n", b"400"),                                  # not a request line
])
def test_http_refuses_with_a_status_and_closes(data: bytes, status: bytes) -> None:
    svc = services.make_service("http")
    out, close = svc.receive(data)
    assert out.startswith(b"HTTP/1.1 " + status + b" ") and b"Connection: close\r\n" in out and close
    assert svc.receive(REQUEST) == (b"", True)  # after a refusal nothing more is read


@given(st.lists(st.integers(min_value=0, max_value=3 * len(REQUEST)), max_size=6), st.integers(1, 3))
def test_http_any_split_gives_one_answer_per_request(cuts: list[int], n: int) -> None:
    data = REQUEST * n
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if b > a]  # b"" would mean EOF
    svc = services.make_service("http")
    assert answers(b"".join(svc.receive(p)[0] for p in pieces)) == n


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^service must be one of \('echo', 'http'\), got 'ftp'$"):
        services.make_service("ftp")


@pytest.mark.parametrize("service", services.SERVICES)
def test_serve_blocking_serves_a_real_connection_until_the_peer_closes(service: str) -> None:
    client, server = connected_pair()
    answered: list[int] = []
    worker = threading.Thread(target=lambda: answered.append(services.serve_blocking(server, service)),
                              name="course-server-test-serve-blocking")
    worker.start()
    try:
        client.settimeout(5)
        request = REQUEST if service == "http" else b"ping"
        for _ in range(3):
            client.sendall(request)
            got = b""
            while not (ANSWER.fullmatch(got) if service == "http" else got == request):
                got += client.recv(1000)
        client.shutdown(2)
        worker.join(5)
        assert answered == [3]
    finally:
        client.close()
        server.close()
