"""Plausible wrong answers to lesson 09's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import socket
import time


# %% Exercise 1: the three timers without SO_KEEPALIVE (the kernel never starts the timer)
def keepalive_within(sock: socket.socket, deadline_s: int) -> tuple[int, int, int]:
    count, interval = 3, max(1, deadline_s // 10)
    idle = deadline_s - count * interval
    if idle < 1:
        raise ValueError(f"no setting meets {deadline_s} s")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    return idle, interval, count


# %% Exercise 2: the first late PONG is the verdict (one timeout, no count of misses)
def heartbeat(sock: socket.socket, every_s: float, misses: int) -> int:
    pending, answered, seq = bytearray(), 0, 0
    while True:
        seq += 1
        sent_at = time.monotonic()
        sock.sendall(b"PING %d\n" % seq)
        if not wait_for_pong(sock, seq, sent_at + every_s, pending):  # noqa: F821 - the lesson's function
            return answered
        answered += 1
        time.sleep(max(0.0, sent_at + every_s - time.monotonic()))


# %% Exercise 3: the silence timed from the start of the connection, not from the last bytes
def serve_heartbeats(conn: socket.socket, silence_s: float) -> int:
    deadline, answered, pending = time.monotonic() + silence_s, 0, b""
    try:
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            chunk = conn.recv(4096)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                conn.sendall(b"PONG" + line[4:] + b"\n")
                answered += 1
    except TimeoutError:
        pass
    conn.close()
    return answered
