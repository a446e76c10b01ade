"""Checks for the exercises of lesson 06 (the tools, rebuilt).

1. ``who_listens(port)``: the lsof question, "which process and fd listen on this port?",
   answered from /proc (the LISTEN row's inode in /proc/net/tcp, found among the
   socket:[INODE] links of /proc/PID/fd). The check starts a server in a child process and
   connects to it, so the port also appears in two ESTABLISHED rows (the accepted
   connection in the same child, our client here); it compares the answer with the
   kernel's own LISTEN row and the fd's link.
2. ``count_active_opens(address, n)``: read Tcp.ActiveOpens from /proc/net/snmp, make `n`
   connections, read it again. The check counts the connections its server accepted and
   brackets the two readings with its own reads of the counter.
3. ``parse_tcp_row(line)``: one line of /proc/net/tcp decoded like ``ss -tan``: state,
   Recv-Q, Send-Q, local and peer address. The check feeds real lines of sockets it made
   in known states and queues: a listener with connections waiting, a receiver with unread
   bytes, a sender whose peer's window is full, and a CLOSE_WAIT (Recv-Q 1, the FIN).
"""

from __future__ import annotations

import os
import random
import socket

from ..closing import connected_pair, fill_send_queue, queued, wait_for_inq, wait_for_row
from ..observe import SocketEntry, kernel_counters, parse_proc_row, socket_table
from ..servers import ProcessServer
from .core import Trial, exercise

# -- 1. who_listens ------------------------------------------------------------------------

LISTENS_HINT = (
    "Find the row of /proc/net/tcp whose state is 0A (LISTEN) and whose local address has "
    "this port (the port is the hex after the colon); its tenth column is the inode. Then "
    "look through /proc/*/fd (skip what you may not read): the fd whose link reads "
    "'socket:[INODE]' is the one. Return (pid, fd) as ints."
)


def _held_by(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError as exc:
        return f"nothing we can read ({exc.strerror})"


@exercise("06", 1, "who listens on this port? (lsof)", hint=LISTENS_HINT)
def check_who_listens(t: Trial, who_listens: object) -> str:
    with ProcessServer("echo") as server:
        client = t.connect(server.address)
        client.sendall(b"ping")
        t.require(client.recv(4) == b"ping", "The check's echo server did not answer.", LISTENS_HINT)
        port = server.address[1]
        (listener,) = socket_table(local=server.address, states=["LISTEN"])  # the kernel's own answer
        want = f"socket:[{listener.inode}]"
        answer = t.call(who_listens, port, name="who_listens(port)", timeout_s=5.0,
                        hang_hint="Reading /proc takes milliseconds; a loop that never ends is waiting on "
                                  "something else.").value
        t.require(isinstance(answer, tuple) and len(answer) == 2 and all(isinstance(x, int) for x in answer),
                  f"who_listens({port}) returned {answer!r:.60}; return (pid, fd), two ints.", LISTENS_HINT)
        pid, fd = answer
        link = _held_by(pid, fd)
        t.require(pid == server.pid, f"who_listens({port}) said pid {pid}, whose fd {fd} is {link}; the server "
                  f"listening on port {port} is pid {server.pid}. The port also appears in connections: the one "
                  "this notebook's kernel made to it, and the one the server accepted.", LISTENS_HINT)
        t.require(link == want, f"fd {fd} of pid {pid} is {link}, but the listener on port {port} is {want} (the "
                  "kernel's LISTEN row). The server's accepted connection has the same local port: only the "
                  "LISTEN row (state 0A) is the listener.", LISTENS_HINT)
    return (f"pid {pid}, fd {fd}: /proc/{pid}/fd/{fd} -> {want}, the inode of the only LISTEN row on port {port}, "
            "although two connections on that port held sockets too. That is what `lsof -i :PORT -sTCP:LISTEN` "
            "answers.")


# -- 2. count_active_opens -----------------------------------------------------------------

OPENS_HINT = (
    "/proc/net/snmp comes in pairs of lines: 'Tcp: RtoAlgorithm RtoMin ... ActiveOpens ...' "
    "names the columns, and the next 'Tcp: ...' line holds the values. Read ActiveOpens, "
    "connect to address n times (closing each socket), read it again, and return "
    "(before, after)."
)


@exercise("06", 2, "a counter around your own connections (nstat)", hint=OPENS_HINT)
def check_count_active_opens(t: Trial, count_active_opens: object) -> str:
    n = random.randint(3, 7)  # a number the learner's code cannot know in advance
    listener = t.own(socket.create_server(("127.0.0.1", 0), backlog=16))  # nobody accepts: they queue
    first = kernel_counters()["Tcp.ActiveOpens"]
    answer = t.call(count_active_opens, listener.getsockname()[:2], n, name="count_active_opens(address, n)",
                    timeout_s=5.0).value
    last = kernel_counters()["Tcp.ActiveOpens"]
    listener.setblocking(False)
    accepted = 0
    while True:  # every handshake that completed waits in the accept queue, closed or not
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            break
        accepted += 1
    t.require(isinstance(answer, tuple) and len(answer) == 2 and all(isinstance(x, int) for x in answer),
              f"count_active_opens() returned {answer!r:.60}; return (before, after), two ints.", OPENS_HINT)
    before, after = answer
    t.require(accepted == n, f"The check's listener received {accepted} connections; it asked for {n}.",
              "Connect exactly n times, between the two readings.")
    t.require(first <= before <= after <= last, f"You read {before} and then {after}, but the kernel's "
              f"Tcp.ActiveOpens went from {first} to {last} during your call: those are not readings of it.",
              OPENS_HINT)
    t.require(after - before >= n, f"Your readings moved by {after - before}, but you made {n} connections: "
              "read the counter before the first connect() and after the last.", OPENS_HINT)
    extra = after - before - n
    return (f"Tcp.ActiveOpens went from {before} to {after} around your {n} connections (+{after - before}"
            + (f": {extra} from other programs in this network namespace" if extra else ", exactly yours")
            + "). nstat reads the same file.")


# -- 3. parse_tcp_row ----------------------------------------------------------------------

ROW_HINT = (
    "Split the line; column 1 is the local address, 2 the peer, 3 the state, 4 'tx:rx' "
    "queues, all in hex. An address is 8 hex digits of IPv4 in the machine's byte order "
    "(little-endian on x86: '0100007F' is 127.0.0.1, so reverse the 4 bytes; "
    "socket.inet_ntoa(struct.pack('<I', int(hex_ip, 16))) does it), then ':' and the "
    "port in big-endian hex. The state number gives the name: h.TcpState(number).name. "
    "tx is Send-Q, rx is Recv-Q."
)


def _proc_line(entry: SocketEntry) -> tuple[str, SocketEntry]:
    """The raw /proc/net/tcp line of the socket `entry` names (its 4-tuple and inode), and
    that line as the course's own parser reads it."""
    with open("/proc/net/tcp") as f:
        lines = f.read().splitlines()[1:]
    for line in lines:
        row = parse_proc_row(line)
        if (row.local, row.remote, row.inode) == (entry.local, entry.remote, entry.inode):
            return line, row
    raise LookupError(f"no /proc/net/tcp line for {entry}")


@exercise("06", 3, "decode a /proc/net/tcp row (ss)", hint=ROW_HINT)
def check_parse_tcp_row(t: Trial, parse_tcp_row: object) -> str:
    listener = t.own(socket.create_server(("127.0.0.1", 0), backlog=8))
    for _ in range(2):
        t.connect(listener.getsockname())  # two connections wait in the accept queue
    reader_peer, reader = (t.own(s) for s in connected_pair())
    reader_peer.sendall(os.urandom(3000))
    wait_for_inq(reader, 3000)
    writer, _idle = (t.own(s) for s in connected_pair(bufsize=16384))
    fill_send_queue(writer)  # the peer reads nothing: bytes wait unacknowledged in the writer's queue
    leaver, stayer = (t.own(s) for s in connected_pair())
    leaver_addr, stayer_addr = leaver.getsockname(), stayer.getsockname()
    leaver.close()
    wait_for_row(stayer_addr, leaver_addr, "CLOSE_WAIT")
    cases = [
        ("a listener with 2 connections waiting in its accept queue", socket_table(local=listener.getsockname(),
                                                                                  states=["LISTEN"])[0]),
        ("a receiver with 3,000 unread bytes", socket_table(local=reader.getsockname(),
                                                           remote=reader.getpeername())[0]),
        ("a sender whose peer's window is full", socket_table(local=writer.getsockname(),
                                                             remote=writer.getpeername())[0]),
        ("a socket whose peer closed (CLOSE_WAIT)", wait_for_row(stayer_addr, leaver_addr, "CLOSE_WAIT")),
    ]
    seen = []
    for what, entry in cases:
        line, row = _proc_line(entry)  # the learner and the course parse the very same text
        want = (row.state.name, row.recv_q, row.send_q, row.local, row.remote)
        got = t.call(parse_tcp_row, line, name="parse_tcp_row(line)", timeout_s=1.0).value
        got = tuple(tuple(x) if isinstance(x, list) else x for x in got) if isinstance(got, (tuple, list)) else got
        t.require(got == want, f"For {what}, the line\n{line.strip()}\ngave {got!r:.200}; ss would say {want}.",
                  ROW_HINT)
        seen.append(f"{want[0]} Recv-Q {want[1]:,} Send-Q {want[2]:,}")
    t.require(queued(reader)[0] == 3000, "The check's receiver lost its bytes.", ROW_HINT)
    return ("parse_tcp_row() read each line as ss does: " + "; ".join(seen) + ". On a listener Recv-Q is the "
            "accept queue; in CLOSE_WAIT the 1 is the FIN, one sequence number not yet read.")
