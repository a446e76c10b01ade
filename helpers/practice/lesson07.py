"""Checks for the exercises of lesson 07 (TIME_WAIT and SO_REUSEADDR).

1. ``listen_on(port, reuse)``: a listener on 127.0.0.1:port, with SO_REUSEADDR set before
   bind() when `reuse` is True. The check first leaves a TIME_WAIT socket on the port (a
   server that closed first), as a server restart finds it; with `reuse` the bind must
   succeed beside that TIME_WAIT, without it the kernel must refuse with EADDRINUSE.
2. ``waiting_ends(a, b)``: which of the two addresses of a closed connection is left in
   TIME_WAIT (a list: one, or none), read from the kernel's socket table. The check closes connections client
   first, server first, and with a RST (SO_LINGER 0), and passes the ends in random order.
3. ``connect_from(port, server)``: a client bound to an explicit local port. The check puts
   that port in TIME_WAIT towards one server; connect() takes the 4-tuple over (TCP
   timestamps make that safe), then a second connect() over the same, now live, 4-tuple gets
   EADDRNOTAVAIL, and the same port towards another server is fine.
"""

from __future__ import annotations

import errno
import random
import socket

from ..observe import TcpState, socket_table
from ..timewait import close_in_order, read_sysctl, wait_for_state
from .core import Trial, exercise

# -- 1. listen_on --------------------------------------------------------------------------

LISTEN_HINT = (
    "socket.socket(), then if reuse: setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1), "
    "then bind(('127.0.0.1', port)) and listen(); return the socket. The option must be set "
    "before bind(): bind() is where the kernel checks the port. If bind() fails, close the "
    "socket and let the OSError propagate."
)


def _time_wait_on_server_port() -> int:
    """A port whose only socket is a TIME_WAIT left by a server (with SO_REUSEADDR) that closed first."""
    with socket.create_server(("127.0.0.1", 0)) as old:  # create_server sets SO_REUSEADDR, as servers do
        _client, server = close_in_order("server", listener=old)
    return server[1]


def _row_states(port: int) -> list[str]:
    return sorted(e.state.name for e in socket_table(port=port) if e.local[1] == port)


@exercise("07", 1, "restart a server on its old port", hint=LISTEN_HINT)
def check_listen_on(t: Trial, listen_on: object) -> str:
    port = _time_wait_on_server_port()
    out = t.call(listen_on, port, True, name="listen_on(port, True)", timeout_s=2.0, error_hints={
        OSError: "bind() refused the port that a TIME_WAIT still holds. Set SO_REUSEADDR with setsockopt() "
                 "before bind(), not after: bind() is where the kernel checks."})
    sock = out.value
    t.require(isinstance(sock, socket.socket), f"listen_on() returned {sock!r:.60}, not a socket.", LISTEN_HINT)
    t.own(sock)
    t.require(sock.getsockname()[:2] == ("127.0.0.1", port), f"The socket is bound to {sock.getsockname()!r}, "
              f"not ('127.0.0.1', {port}).", LISTEN_HINT)
    states = _row_states(port)
    t.require("LISTEN" in states, f"Port {port} shows {states} in the socket table: no LISTEN row. Call listen().",
              LISTEN_HINT)
    t.require("TIME_WAIT" in states, f"Port {port} shows {states}: the TIME_WAIT the check left there is gone, "
              "so this proves nothing. Run the check again.", LISTEN_HINT)
    sock.close()

    port = _time_wait_on_server_port()
    out = t.call(listen_on, port, False, name="listen_on(port, False)", timeout_s=2.0, expect=(OSError,))
    if out.error is None:
        if isinstance(out.value, socket.socket):
            t.own(out.value)
        t.fail(f"listen_on({port}, False) got the port although a TIME_WAIT held it: the new socket must have "
               "had SO_REUSEADDR after all.", "Set SO_REUSEADDR only when reuse is True.")
    err = out.error
    assert isinstance(err, OSError)
    t.require(err.errno == errno.EADDRINUSE, f"listen_on({port}, False) raised {err!r}; the kernel's answer to a "
              "port held by a TIME_WAIT is EADDRINUSE.", LISTEN_HINT)
    return (f"With SO_REUSEADDR your listener got port {port} back beside its TIME_WAIT row (the socket table "
            "showed LISTEN and TIME_WAIT on it); without it bind() raised EADDRINUSE on another such port.")


# -- 2. waiting_ends -----------------------------------------------------------------------

WHO_HINT = (
    "After the close, only the end that closed first may still have a row, in TIME_WAIT. Look "
    "up each direction of the 4-tuple: h.socket_table(local=a, remote=b, states=['TIME_WAIT']) "
    "and the same with a and b swapped, and return the local addresses of the rows you find: "
    "one, normally; none after a connection ended by a RST."
)


@exercise("07", 2, "who is left in TIME_WAIT?", hint=WHO_HINT)
def check_waiting_ends(t: Trial, waiting_ends: object) -> str:
    rng = random.Random()
    seen = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for how in ("client", "server", "reset"):
            client, server = close_in_order("client" if how == "reset" else how, listener=listener,
                                            linger_zero=how == "reset")
            expected = {"client": [client], "server": [server], "reset": []}[how]
            a, b = (client, server) if rng.random() < 0.5 else (server, client)
            got = t.call(waiting_ends, a, b, name="waiting_ends(a, b)", timeout_s=2.0).value
            what = {"client": "the client closed first", "server": "the server closed first",
                    "reset": "the client closed with SO_LINGER 0 (a RST)"}[how]
            t.require(isinstance(got, (list, tuple)), f"waiting_ends() returned {got!r:.60}, not a list.", WHO_HINT)
            got = [tuple(x) if isinstance(x, list) else x for x in got]
            table = "no TIME_WAIT row" if not expected else f"one TIME_WAIT row, at {expected[0]}"
            t.require(got == expected, f"When {what}, waiting_ends({a}, {b}) returned {got!r:.80}; the socket "
                      f"table had {table}.", WHO_HINT)
            seen.append(f"{what}: {got[0] if got else 'nobody'}")
    return "waiting_ends() found the TIME_WAIT end each time (" + "; ".join(seen) + ")."


# -- 3. connect_from -----------------------------------------------------------------------

FROM_HINT = (
    "socket.socket(), setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1), bind(('127.0.0.1', "
    "port)), connect(server), return the socket. Without SO_REUSEADDR bind() refuses a port "
    "that any other socket holds; with it, connect() decides by the whole 4-tuple. If connect() "
    "fails, close the socket and let the OSError propagate."
)


@exercise("07", 3, "connect from a port you chose", hint=FROM_HINT)
def check_connect_from(t: Trial, connect_from: object) -> str:
    timestamps = read_sysctl("tcp_timestamps") != "0"
    first = t.own(socket.create_server(("127.0.0.1", 0)))
    other = t.own(socket.create_server(("127.0.0.1", 0)))
    s1, s2 = first.getsockname()[:2], other.getsockname()[:2]
    client, _ = close_in_order("client", listener=first)  # the client's port now waits in TIME_WAIT towards s1
    port = client[1]
    hints = {OSError: "bind() refused a port that another socket holds: set SO_REUSEADDR before bind()."}

    out = t.call(connect_from, port, s1, name="connect_from(port, server)", timeout_s=2.0, error_hints=hints,
                 expect=() if timestamps else (OSError,))
    if not timestamps:  # tcp_twsk_unique(): without timestamps the TIME_WAIT 4-tuple is not taken over
        if isinstance(out.value, socket.socket):
            t.own(out.value)
        t.require(isinstance(out.error, OSError) and out.error.errno == errno.EADDRNOTAVAIL,
                  f"TCP timestamps are off here, so connect() over a 4-tuple in TIME_WAIT must fail with "
                  f"EADDRNOTAVAIL; connect_from() gave {out.error or out.value!r:.80}.", FROM_HINT)
        return "Timestamps are off here: connect() over the TIME_WAIT 4-tuple failed with EADDRNOTAVAIL, as it must."
    sock = out.value
    t.require(isinstance(sock, socket.socket), f"connect_from() returned {sock!r:.60}, not a socket.", FROM_HINT)
    t.own(sock)
    t.require(sock.getsockname()[:2] == client, f"The socket's local address is {sock.getsockname()!r}, not "
              f"{client}: bind() to the port you were given.", FROM_HINT)
    row = wait_for_state(client, s1, "ESTABLISHED")
    t.require(row.state is TcpState.ESTABLISHED, "The 4-tuple is not ESTABLISHED.", FROM_HINT)

    again = t.call(connect_from, port, s1, name="connect_from(port, server)", timeout_s=2.0, expect=(OSError,))
    if again.error is None:
        if isinstance(again.value, socket.socket):
            t.own(again.value)
        t.fail(f"A second connect_from({port}, {s1}) returned {again.value!r:.60} while the first connection "
               "over that 4-tuple was still open.", FROM_HINT)
    err = again.error
    assert isinstance(err, OSError)
    t.require(err.errno == errno.EADDRNOTAVAIL, f"A second connect_from({port}, {s1}) while the first was open "
              f"raised {err!r}; the kernel's answer for a 4-tuple in use is EADDRNOTAVAIL from connect().",
              hints[OSError] if err.errno == errno.EADDRINUSE else FROM_HINT)

    third = t.call(connect_from, port, s2, name="connect_from(port, other_server)", timeout_s=2.0,
                   error_hints=hints).value
    t.require(isinstance(third, socket.socket), f"connect_from() returned {third!r:.60}, not a socket.", FROM_HINT)
    t.own(third)
    t.require(third.getsockname()[:2] == client and third.getpeername()[:2] == s2,
              f"Towards the other server the socket is {third.getsockname()!r} -> {third.getpeername()!r}.",
              FROM_HINT)
    return (f"From port {port}: connect() took over the 4-tuple that waited in TIME_WAIT (now ESTABLISHED), a "
            f"second connect() over the same live 4-tuple got EADDRNOTAVAIL, and the same port reached another "
            f"server at once ({s2[0]}:{s2[1]}): the kernel checks the whole 4-tuple.")
