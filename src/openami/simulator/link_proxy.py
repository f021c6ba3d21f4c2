"""A cuttable TCP link: the LTE connection between a simulated gateway and the head-end's broker.

:class:`LinkProxy` listens on a loopback port and relays every connection to the broker. :meth:`cut`
drops every connection at once and turns new ones away (accepted, then closed at once, as a cellular
link with no data bearer behaves to a client), until :meth:`restore`. The gateway agent behind it sees
exactly what it sees in the field: its MQTT connection dies, its reconnect attempts fail, and one
succeeds when the link is back. Nothing in the agent is told it is being tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

__all__ = ["LinkProxy", "LinkStats"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


@dataclass(slots=True)
class LinkStats:
    connections: int = 0
    refused: int = 0
    cuts: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class LinkProxy:
    """Relay ``127.0.0.1:<port>`` to ``upstream_host:upstream_port`` (module docstring)."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._bind = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.up = True
        self.stats = LinkStats()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the link proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return self._bind[0]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self._bind)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def cut(self) -> None:
        """The link goes down: every connection is dropped and new ones are turned away."""
        if not self.up:
            return
        self.up = False
        self.stats.cuts += 1
        self._drop()
        log.info("link to %s:%d cut", *self.upstream)

    def restore(self) -> None:
        """The link comes back: new connections reach the broker again."""
        self.up = True
        log.info("link to %s:%d restored", *self.upstream)

    def _drop(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.connections += 1
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, up=True)),
            asyncio.create_task(self._pump(up_reader, writer, up=False)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for side in (writer, up_writer):
                self._writers.discard(side)
                side.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while self.up:
                data = await reader.read(_CHUNK)
                if not data or not self.up:
                    return
                writer.write(data)
                await writer.drain()
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
