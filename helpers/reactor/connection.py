"""A TCP connection on a reactor: input buffer, output buffer, half-close and close.

Theory of operation. A ``TcpConnection`` (yolanda's ``tcp_connection``, asyncio's
``_SelectorSocketTransport``) owns one connected non-blocking socket, its channel, and two
buffers, and talks to a *protocol* object through four calls:
``connection_made(conn)``, ``data_received(view)``, ``eof_received() -> bool`` and
``connection_lost(exc)``, plus, if it defines it, ``write_completed()``. The protocol never
sees the socket. These are yolanda's four callbacks (connection completed, message, write
completed, connection closed) with Python names, and asyncio's ``eof_received`` for the
half-close.

**Reading.** On READ readiness: one ``recv_into`` the loop's preallocated input ``Buffer``
(one per loop, not per connection: callbacks of one loop never run at the same time, so
they can share it, and an idle connection costs no buffer at all, which matters with
10,000 of them); the protocol gets a memoryview of what arrived, valid during the call,
and keeps what it needs (the HTTP session copies it into its parser, whose limits bound
what one connection may hold). 0 bytes means the peer sent FIN: the
protocol's ``eof_received()`` decides whether to keep our side open (half-close, lesson
08); by default the connection closes once its output is sent.

**Writing: the output-buffer pattern** (asyncio's ``write()``). ``write(data)``

1. if nothing is waiting in the output buffer, ``send()`` at once: usually the kernel
   takes it all and we are done, without a trip through the loop;
2. whatever the kernel did not take is appended to the output buffer, and the channel
   asks for WRITE readiness;
3. on WRITE readiness, ``send()`` from the output buffer; once it is empty, stop asking
   for WRITE (a level-triggered loop would otherwise wake on every iteration).

Order is kept: while the output buffer holds bytes, new data is appended behind them,
never sent ahead. **Write completed**: once everything written so far is in the kernel
(the output buffer is empty again), the protocol's ``write_completed()`` runs, from the
loop, never from inside ``write()``: when ``write()`` sent all at once it is queued with
``call_soon`` (as muduo does), so a protocol that writes its next chunk there cannot
recurse without end. A protocol that sends much (a file) writes one chunk, then the next
from ``write_completed()``, and never holds more than a chunk in memory.

If the output buffer grows past ``high_water`` bytes (the peer does not read), we stop
reading from it (backpressure) until it drains.

**Closing.** ``close()`` is graceful: stop reading, send what is buffered, then close.
``shutdown_write()`` sends FIN after the buffer drains and keeps reading (half-close).
``abort()`` closes at once and drops unsent bytes. Every path ends in ``_finish()``,
which runs once: unregister the channel, close the socket, tell the protocol.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

from .channel import READ, WRITE, Channel, no_callback
from .loop import EventLoop

__all__ = ["BaseProtocol", "StreamProtocol", "TcpConnection", "DEFAULT_HIGH_WATER"]

#: Stop reading a peer whose unsent answers exceed this many bytes (asyncio's default
#: write high-water mark is 64 KiB; we allow 1 MiB before pausing).
DEFAULT_HIGH_WATER = 1 << 20


class StreamProtocol(Protocol):
    """What a TcpConnection calls; all calls happen in the connection's loop thread."""

    def connection_made(self, conn: TcpConnection) -> None: ...
    def data_received(self, data: memoryview) -> None: ...
    def eof_received(self) -> bool: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...
    # optional: def write_completed(self) -> None: everything written so far is in the kernel


class BaseProtocol:
    """A protocol to derive from: it keeps the connection, ignores data, closes on EOF.

    Override what your protocol needs (all run in the connection's loop thread, one at a
    time): ``connection_made(conn)`` (call ``super().connection_made(conn)`` or keep `conn`
    yourself), ``data_received(data)`` (a memoryview valid during the call only: copy what
    you keep), ``write_completed()`` (what you wrote is all in the kernel), ``eof_received()``
    (True keeps our side open) and ``connection_lost(exc)`` (None: a clean close).
    """

    conn: TcpConnection | None = None

    def connection_made(self, conn: TcpConnection) -> None:
        self.conn = conn

    def data_received(self, data: memoryview) -> None:
        pass

    def write_completed(self) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


class TcpConnection:
    """One connected socket served by `loop` for `protocol` (created in the loop's thread)."""

    def __init__(self, loop: EventLoop, sock: socket.socket, protocol: StreamProtocol, *,
                 high_water: int = DEFAULT_HIGH_WATER,
                 on_closed: Callable[[TcpConnection], None] | None = None):
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers leave at once (lesson 10)
        self.loop = loop
        self.sock = sock
        self.protocol = protocol
        self.high_water = high_water
        self.on_closed = on_closed
        self.outbuf = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        self._closing = False  # close() called: finish once the output buffer is empty
        self._shut_wr = False  # shutdown_write() called
        self._reading = True
        self._on_write_completed = getattr(protocol, "write_completed", None)
        self._completion_queued = False
        self.writes_completed = 0
        self.channel = Channel(sock.fileno(), on_read=self._handle_read, on_write=self._handle_write)
        loop.add_channel(self.channel)
        protocol.connection_made(self)

    # -- reading ---------------------------------------------------------------------------
    def _handle_read(self) -> None:
        try:
            data = self.loop.read_buffer.recv_chunk(self.sock)  # recv_into the loop's buffer
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # ECONNRESET and friends: the peer is gone
            self._finish(exc)
            return
        if not data:
            self._handle_eof()
            return
        self.bytes_in += len(data)
        try:
            self.protocol.data_received(data)  # valid during the call only: the protocol copies
        except Exception as exc:  # noqa: BLE001 - a protocol bug closes this connection only
            self.loop.on_error(exc)
            self._finish(exc)

    def _handle_eof(self) -> None:
        self.pause_reading()  # EOF stays readable forever: stop asking
        try:
            keep_open = self.protocol.eof_received()
        except Exception as exc:  # noqa: BLE001
            self.loop.on_error(exc)
            keep_open = False
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        """Stop reading from the peer (backpressure, or after EOF)."""
        if self._reading and not self.closed:
            self._reading = False
            self.channel.events &= ~READ
            self.loop.update_channel(self.channel)

    def resume_reading(self) -> None:
        """Read from the peer again."""
        if not self._reading and not self.closed and not self._closing:
            self._reading = True
            self.channel.events |= READ
            self.loop.update_channel(self.channel)

    # -- writing ---------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send `data` now if possible, else buffer it and send it when the socket is writable."""
        if self.closed or self._closing or self._shut_wr or not data:
            return
        if not self.outbuf:
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:  # EPIPE, ECONNRESET: the peer is gone
                self._finish(exc)
                return
            self.bytes_out += n
            if n == len(data):
                if self._on_write_completed is not None and not self._completion_queued:
                    self._completion_queued = True  # one call for several writes sent at once
                    self.loop.call_soon(self._write_completed)  # from the loop, not from inside write()
                return
            self.outbuf += memoryview(data)[n:]
            self.channel.events |= WRITE
            self.loop.update_channel(self.channel)
        else:
            self.outbuf += data
        if len(self.outbuf) > self.high_water:
            self.pause_reading()

    def _handle_write(self) -> None:
        try:
            n = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(exc)
            return
        self.bytes_out += n
        del self.outbuf[:n]
        if self.outbuf:
            return
        self.channel.events &= ~WRITE  # drained: stop asking for WRITE
        self.loop.update_channel(self.channel)
        if self._closing:
            self._finish(None)
            return
        if self._shut_wr:
            self._send_fin()
        elif not self._reading:
            self.resume_reading()
        self._write_completed()

    def _write_completed(self) -> None:
        """Tell the protocol that its output is all in the kernel (if it asked, and still open)."""
        self._completion_queued = False
        if self._on_write_completed is None or self.closed or self.outbuf:
            return
        self.writes_completed += 1
        try:
            self._on_write_completed()
        except Exception as exc:  # noqa: BLE001 - a protocol bug closes this connection only
            self.loop.on_error(exc)
            self._finish(exc)

    # -- closing -----------------------------------------------------------------------------
    def shutdown_write(self) -> None:
        """Half-close: send FIN once the output buffer is empty; keep reading."""
        if self.closed or self._shut_wr:
            return
        self._shut_wr = True
        if not self.outbuf:
            self._send_fin()

    def _send_fin(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._finish(exc)

    def close(self) -> None:
        """Graceful close: stop reading, send what is buffered, then close the socket."""
        if self.closed or self._closing:
            return
        self.pause_reading()
        self._closing = True
        if not self.outbuf:
            self._finish(None)

    def abort(self) -> None:
        """Close now, dropping unsent bytes."""
        self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_channel(self.channel)
        self.sock.close()
        self.outbuf.clear()
        try:
            self.protocol.connection_lost(exc)
        except Exception as err:  # noqa: BLE001
            self.loop.on_error(err)
        if self.on_closed is not None:
            self.on_closed(self)
        # break the cycles (conn -> channel -> bound methods -> conn) so memory returns at once
        self.channel.on_read = self.channel.on_write = no_callback
        self.on_closed = self._on_write_completed = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "closing" if self._closing else "open"
        return f"<TcpConnection fd={self.channel.fd} {state} in={self.bytes_in} out={self.bytes_out}>"

