"""Plumbing for lesson 09 (keep-alive vs heartbeats): a peer that vanishes, and the probes.

Theory of operation. A keep-alive probe is an empty ACK whose sequence number is one below
the next byte to send (RFC 1122, section 4.2.3.6): the peer cannot accept a byte it already
has, so its kernel answers with an ACK, and the prober learns that the peer is there. To
show the other outcome, the peer must vanish at the kernel level: ``watch_vanished_peer()``
attaches a socket filter that drops everything arriving for the peer's socket
(``helpers.filters``) and samples the prober's TCP_INFO until the kernel gives up.

Some kernels refuse that filter to a normal user on the host, but allow it inside a user +
network namespace of the user's own. So the functions here are written to run in a child
process too: ``vanished_peer()`` (for ``helpers.netns.run_in_netns``) and
``probes_on_the_wire()`` (for ``helpers.capture``, which also records the packets) import
what they use and return plain data.
"""

from __future__ import annotations

import socket

from .capture import mark, watch  # placeholders here: capture() provides the real ones

__all__ = ["watch_vanished_peer", "vanished_peer", "probes_on_the_wire"]


def watch_vanished_peer(client: socket.socket, peer: socket.socket, limit_s: float, *,
                        progress: str | None = None) -> dict:
    """Make `peer` vanish and sample `client`'s TCP_INFO until keep-alive gives up (at most
    `limit_s` s; `progress` labels a progress line). Returns plain data: the error recv()
    then raised (None if none came), seconds from the vanishing to the verdict (``after_s``),
    seconds the connection had already been silent when the peer vanished (``idle_before_s``:
    keep-alive's idle time counts from the last segment received, TCP_INFO's last_ack_recv and
    last_data_recv, not from the vanishing), segments the peer's TCP saw meanwhile (0: all
    dropped before TCP), and the timeline as [seconds, state name, unanswered probes,
    segs_out]. PermissionError where this process may not attach the filter (see
    helpers.filters)."""
    import errno

    from helpers.filters import drop_all
    from helpers.observe import TcpState, tcp_info
    from helpers.sampling import sample_tcp_info

    drop_all(peer)
    heard, before = tcp_info(peer).segs_in, tcp_info(client)
    samples = sample_tcp_info(client, limit_s, progress=progress,
                              stop_when=lambda info: info.state is not TcpState.ESTABLISHED)
    error = None
    if samples[-1].info.state is not TcpState.ESTABLISHED:
        client.setblocking(False)
        try:
            client.recv(1)
        except BlockingIOError:
            pass
        except OSError as exc:  # the verdict waits here as the socket's pending error
            error = errno.errorcode.get(exc.errno or 0, str(exc))
    return {"error": error, "after_s": samples[-1].t_s,
            "idle_before_s": min(before.last_ack_recv_ms, before.last_data_recv_ms) / 1000,
            "peer_heard": tcp_info(peer).segs_in - heard,
            "timeline": [[s.t_s, s.info.state.name, s.info.probes, s.info.segs_out] for s in samples]}


def vanished_peer(idle_s: int, interval_s: int, count: int, limit_s: float) -> dict:
    """A fresh loopback connection with keep-alive (idle_s, interval_s, count) whose peer
    vanishes: watch_vanished_peer() on it. Self-contained, so helpers.netns can run it."""
    import socket

    from helpers.closing import connected_pair
    from helpers.keepalive import watch_vanished_peer

    client, peer = connected_pair()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval_s)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        return watch_vanished_peer(client, peer, limit_s)
    finally:
        client.close()
        peer.close()


def probes_on_the_wire(idle_s: int, interval_s: int, count: int) -> dict:
    """For helpers.capture: two idle connections with the same keep-alive timers; the second's
    peer vanishes. Runs until keep-alive gives up on the second; returns what it saw."""
    import socket
    import time

    srv = socket.create_server(("127.0.0.1", 0))
    watch(srv.getsockname()[1])
    from helpers.keepalive import watch_vanished_peer  # after watch(): as root it puts the package on the path

    pairs = []
    for _ in range(2):
        client = socket.create_connection(srv.getsockname())
        pairs.append((client, srv.accept()[0]))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval_s)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    mark(f"keep-alive on both (idle {idle_s} s, interval {interval_s} s, {count} probes); #2's peer vanishes")
    vanished = watch_vanished_peer(*pairs[1], limit_s=idle_s + count * interval_s + 2.0)
    mark(f"#2: recv() raised {vanished['error']}")
    time.sleep(0.1)  # the reset that follows the verdict
    for client, conn in pairs:
        client.close()
        conn.close()
    srv.close()
    return {"idle_s": idle_s, "interval_s": interval_s, "count": count, **vanished}
