"""What every simulated device's TCP side shares: listen, track connections, close them all on exit.

A simulator (an M-Bus converter, a Modbus TCP gateway, a modem's AT port) subclasses
:class:`LoopbackServer` and writes only :meth:`LoopbackServer._serve`, the conversation on one
connection. The base binds on start (port 0: a free port, then in :attr:`port`), runs each connection
as a task it keeps, treats a peer that goes away as the end of that conversation, and on stop cancels
the conversations still open, so a test's ``async with`` leaves no task or socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """Listens on ``host:port`` while started; subclasses implement :meth:`_serve`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self._wanted_port, self.port = host, port, 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return len(self._handlers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self._wanted_port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio runs every connection handler as a task
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection's conversation; returning (or the peer leaving) ends it."""
        raise NotImplementedError
