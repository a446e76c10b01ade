"""Plausible wrong answers to lesson 19's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import helpers as h


# %% Exercise 1: the unfinished line kept as a view of the loop's input buffer, which the next recv() overwrites
class UpperLines(h.reactor.BaseProtocol):
    def connection_made(self, conn):
        self.conn = conn
        self.pending = memoryview(b"")
        conn.write(b"ready\n")

    def data_received(self, data):
        text = bytes(self.pending) + bytes(data)
        *lines, rest = text.split(b"\n")
        for line in lines:
            self.conn.write(b"%d " % len(line.split()) + line.upper() + b"\n")
        self.pending = data[len(data) - len(rest):]  # a view, not a copy


# %% Exercise 2: everything written at once in connection_made(): the output buffer holds it all
class Sender(h.reactor.BaseProtocol):
    def __init__(self, data: bytes):
        self.data = data

    def connection_made(self, conn):
        self.conn = conn
        conn.write(self.data)
        conn.close()

    def write_completed(self):
        pass


# %% Exercise 3: int() of the first value: it takes "+3", and ignores a second, different length
def body_length(values: list[str]) -> int:
    return int(values[0]) if values else 0
