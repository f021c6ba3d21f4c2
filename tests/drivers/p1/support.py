"""Peers for the reader tests: a meter on a pty, and TCP servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

from openami.simulator.push_port import PushMeter, push_to_fd

HOST = "127.0.0.1"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def pty_meter(meter: PushMeter) -> AsyncIterator[str]:
    """``meter`` pushing on the master side of a pty; yields the slave's path for the reader to open."""
    master, slave = os.openpty()
    task = asyncio.create_task(push_to_fd(meter, master))
    try:
        yield os.ttyname(slave)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(slave)  # held until now: with no slave open, the master would fail


@contextlib.asynccontextmanager
async def tcp_peer(handler: Handler) -> AsyncIterator[int]:
    """A loopback server running ``handler`` per connection; yields its port."""
    server = await asyncio.start_server(handler, HOST, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never sends, as a dongle whose meter is unplugged."""
    await asyncio.sleep(10)
    writer.close()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def sends(data: bytes, *, then_wait_s: float = 10.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await asyncio.sleep(then_wait_s)
        writer.close()

    return handler


def floods(chunk: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(10_000):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    return handler


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
