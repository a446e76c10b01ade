"""Plausible wrong answers to lesson 18's exercises: each must NOT pass its check, and must
get a hint (tests/notebook_runner.py runs each section in the lesson's kernel, in place of
the learner's cell, then the exercise's check cell). One section per exercise, starting
with a line "# %% Exercise N"; the lines above the first section are not run."""

import asyncio

# %% Exercise 1: the transport kept in a global (every echo goes to the last client that connected)
current = None


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        global current
        current = transport

    def data_received(self, data: bytes) -> None:
        current.write(data)


# %% Exercise 2: no deadline on the read (a silent server keeps it waiting for ever)
async def ask(host: str, port: int, request: bytes, timeout_s: float) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


# %% Exercise 3: everything written at once (pause_writing() is called, and nothing listens)
class Sender(asyncio.Protocol):
    def __init__(self, data: bytes):
        self.data = data

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.data)
        transport.close()
