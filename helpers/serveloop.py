"""What the labs add to ``servers.LoopServer`` to test a server loop: line clients, small send
buffers, a late start, and the loop's own error first.

Theory of operation. Labs 04, 08 and 09 ask for a whole server in one function,
``serve(listener, stop)``: one thread, one loop over poll() or epoll, serving every
connection accepted on `listener` until `stop` is readable. ``h.LoopServer`` (lessons 15
and 16) already runs such a loop in a background thread and stops it with a byte on a
socket pair. ``ServeLoop`` is that server with what a lab's tests need besides:

* ``sndbuf`` sets the listener's SO_SNDBUF, which every accepted socket inherits; setting it
  also turns off the kernel's send-buffer autotuning (man 7 tcp), so a client that never
  reads fills the path in tens of kilobytes rather than megabytes;
* ``start=False`` keeps the loop from running until ``go()``: clients connected before wait
  in the accept queue (man 2 listen) with their data queued, which is how a test shows that
  an edge-triggered loop must accept and read until EAGAIN;
* ``connect()`` makes a ``LineClient``: a TCP client that sends text and reads whole lines
  with a deadline (recv() returns whatever bytes have arrived, lesson 12), optionally with a
  small SO_RCVBUF (a client that never reads). A client waiting for a line raises the loop's
  own exception at once if the loop has failed;
* ``stop()`` reports a loop that does not return after the stop byte (blocked in a call, say
  a ``sendall()`` to a client that does not read) as a ServerError, after closing the clients
  to wake it; and when the ``with`` block fails, the clients are closed first and the loop's
  own exception, if it raised one, is raised instead of the block's: a client that saw only
  silence says less than the loop's mistake.
* ``loop_thread`` is the thread the loop runs in (its ``native_id`` names it in /proc).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .core import checks
from .servers import LoopServer

__all__ = ["ServeLoop", "LineClient", "MAX_BUFFER"]

#: The largest SO_SNDBUF / SO_RCVBUF asked for here: the kernel caps larger values anyway
#: (net.core.wmem_max, rmem_max), and the point of these options here is small buffers.
MAX_BUFFER = 1 << 24
_SLICE_S = 0.05  # a waiting client checks this often whether the loop has failed


def _buffer_size(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= MAX_BUFFER:
        raise ValueError(f"{name} must be a number of bytes in 1024..{MAX_BUFFER} (the kernel doubles it), "
                         f"or None; got {value!r}")
    return value


class ServeLoop(LoopServer):
    """``h.LoopServer`` for a lab's ``serve(listener, stop)``, with line clients (``connect()``),
    an optional small SO_SNDBUF for every accepted socket (`sndbuf`), and, with
    ``start=False``, a loop that waits for ``go()``. Use it as a context manager. TypeError
    for a `serve` that is not callable, ValueError for a bad `sndbuf` or `backlog`.
    """

    def __init__(self, serve: Callable[[socket.socket, socket.socket], Any], *, sndbuf: int | None = None,
                 start: bool = True, backlog: int = 128):
        if not callable(serve):
            raise TypeError(f"serve must be a function serve(listener, stop), got {serve!r:.60}")
        sndbuf = _buffer_size("sndbuf", sndbuf)
        self.serve = serve
        self.clients: list[LineClient] = []
        self.loop_thread: threading.Thread | None = None
        self._go = threading.Event()
        if start:
            self._go.set()
        super().__init__(self._gated, backlog=backlog)  # starts the thread: the attributes above come first
        if sndbuf is not None:  # before any client connects: accepted sockets copy it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)

    def _gated(self, listener: socket.socket, wake: socket.socket) -> Any:
        self.loop_thread = threading.current_thread()
        self._go.wait()
        return self.serve(listener, wake)

    @property
    def listener(self) -> socket.socket:
        """The listening socket the loop serves."""
        return self.sock

    @property
    def stop_socket(self) -> socket.socket:
        """The socket the loop watches for the stop byte."""
        return self._wakeup.reader

    def go(self) -> None:
        """Let a loop made with start=False run."""
        self._go.set()

    def connect(self, *, rcvbuf: int | None = None, timeout_s: float = 5.0) -> LineClient:
        """A new client of this loop, closed when the ``with`` block ends."""
        client = LineClient(self.address, rcvbuf=rcvbuf, timeout_s=timeout_s, loop=self)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()

    def stop(self, timeout_s: float = 2.0, *, raise_errors: bool = True) -> None:
        """Stop as LoopServer does. A loop still running `timeout_s` after the stop byte is
        reported (a ServerError, with raise_errors) after its clients are closed to wake it;
        the clients stay open otherwise, to read what the loop did last."""
        timeout_s = checks.seconds("timeout_s", timeout_s, zero_ok=True)
        self._go.set()
        thread = self.loop_thread
        if self.running and thread is not None and thread is not threading.current_thread():
            self._wakeup.wake()
            thread.join(timeout_s)
            if thread.is_alive():
                self.errors.append(TimeoutError(f"serve() did not return within {timeout_s:g} s of the stop signal"))
                self.close_clients()  # a loop blocked writing to a client wakes when the client goes
                thread.join(1.0)
        super().stop(max(timeout_s, 1.0), raise_errors=raise_errors)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        raised = list(self.errors)  # what the loop raised by itself, before it was asked to stop
        if exc_type is not None:  # a failed block: the clients go first (a loop blocked on one wakes)
            self.close_clients()
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            self.close_clients()
        if exc_type is not None and raised and exc is not raised[0]:
            raise raised[0]  # the loop's own error says more than the silence its clients saw


class LineClient:
    """A TCP client that sends text and reads whole lines (LF-terminated, UTF-8).

    `rcvbuf` sets SO_RCVBUF before connecting (a small one for a client that never reads);
    `timeout_s` is how long ``line()`` waits by default. With `loop` (a LoopServer), a wait
    ends at once, raising the loop's own exception, if the loop fails meanwhile.
    """

    def __init__(self, address: tuple[str, int], *, rcvbuf: int | None = None, timeout_s: float = 5.0,
                 loop: LoopServer | None = None):
        rcvbuf = _buffer_size("rcvbuf", rcvbuf)
        self.timeout_s = checks.seconds("timeout_s", timeout_s)
        self.loop = loop
        self.buffer = b""
        self.sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(self.timeout_s)
            self.sock.connect(address)
            self.sock.settimeout(_SLICE_S)
        except BaseException:
            self.sock.close()
            raise

    def say(self, text: str) -> None:
        """Send `text` (UTF-8) whole."""
        self.sock.settimeout(self.timeout_s)
        try:
            self.sock.sendall(text.encode())
        finally:
            self.sock.settimeout(_SLICE_S)

    def _loop_failed(self) -> None:
        if self.loop is not None and self.loop.errors:
            raise self.loop.errors[0]  # what the loop raised says more than the silence or EOF seen here

    def line(self, timeout_s: float | None = None) -> str:
        """The next whole line, without its LF. TimeoutError if none is complete within
        `timeout_s` (default: the client's), EOFError if the server closed first."""
        wait_s = self.timeout_s if timeout_s is None else checks.seconds("timeout_s", timeout_s)
        deadline = time.monotonic() + wait_s
        while b"\n" not in self.buffer:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                self._loop_failed()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no whole line within {wait_s:g} s; unread: {self.buffer[:80]!r}") from None
                continue
            if not data:
                self._loop_failed()
                raise EOFError(f"the server closed the connection; unread: {self.buffer[:80]!r}")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", errors="replace")

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
