"""Plausible wrong answers to lesson 17's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import collections
import os
import socket
import threading


# %% Exercise 1: a queue without a capacity: put() never waits, so a burst piles up in the process
class ConnectionQueue:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items = collections.deque()
        self.cond = threading.Condition()

    def put(self, conn: socket.socket) -> None:
        with self.cond:
            self.items.append(conn)
            self.cond.notify_all()

    def get(self) -> socket.socket:
        with self.cond:
            while not self.items:
                self.cond.wait()
            return self.items.popleft()


# %% Exercise 2: one waitpid() per SIGCHLD: exits that share one signal leave zombies
def reap_children() -> list:
    try:
        pid, _status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return []
    return [pid] if pid else []


# %% Exercise 3: SO_REUSEADDR instead of SO_REUSEPORT: the second bind() fails
def reuseport_listeners(n: int) -> list:
    listeners, port = [], 0
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        port = sock.getsockname()[1]
        sock.listen()
        listeners.append(sock)
    return listeners
