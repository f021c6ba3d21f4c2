"""A consumer port that pushes: each reader gets the meter's next frame every ``interval_s``.

P1 and SML meters never answer requests; they send a telegram (or SML file) at a fixed rate to whoever
listens. :class:`PushPortServer` serves that on a loopback TCP port the way ser2net or a Wi-Fi P1 dongle
in front of the port does: one meter clock for every connected reader (a reader that connects between two
frames gets the next one, not one of its own), and a reader that stops reading is dropped rather than
allowed to grow the simulator's memory. :func:`push_to_fd` writes the same frames to a serial
descriptor (a pty master in tests), as the meter's UART would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final, Protocol

from openami.drivers.dlms.transport import FdStream

__all__ = ["PushMeter", "PushPortServer", "push_to_fd", "serve_push_meters"]

#: Bytes a reader may leave unread before it is dropped: minutes of telegrams, never a leak.
_MAX_BACKLOG: Final = 1 << 20


class PushMeter(Protocol):
    """What a pushing simulated meter offers: its frame at a time, and how often it sends one."""

    interval_s: float

    def frame(self, at: datetime | None = None) -> bytes:
        """The bytes the meter sends at ``at`` (default: its clock now)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PushPortServer:
    """Serves one meter's pushes on ``host:port`` (``port`` 0: the OS picks; see :attr:`port`).

    ``sent`` counts the frames written (to at least one reader) so tests can wait for traffic.
    """

    def __init__(self, meter: PushMeter, host: str = "127.0.0.1", port: int = 0) -> None:
        self.meter = meter
        self.host, self.port = host, port
        self.sent = 0
        self._server: asyncio.Server | None = None
        self._clock: asyncio.Task[None] | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._clock = asyncio.create_task(self._push_forever())

    async def stop(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            await asyncio.gather(self._clock, return_exceptions=True)
            self._clock = None
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> PushPortServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def disconnect_all(self) -> None:
        """Close every reader's connection (a dongle rebooting), keeping the server up."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await reader.read(4096):  # a P1 port ignores what is sent to it
                pass
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _push_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.meter.interval_s
        due = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += interval
            if not self._writers:
                continue  # nobody listens: the meter still runs, but no frame is built
            data = self.meter.frame()
            for writer in list(self._writers):
                transport = writer.transport
                if transport.is_closing() or transport.get_write_buffer_size() > _MAX_BACKLOG:
                    self._writers.discard(writer)
                    writer.close()
                    continue
                writer.write(data)
            self.sent += 1


async def push_to_fd(meter: PushMeter, fd: int, *, frames: int | None = None) -> None:
    """Write ``meter``'s frames to the serial descriptor ``fd`` every ``meter.interval_s``.

    Takes ownership of ``fd``; returns after ``frames`` frames (None: until cancelled) or when the line
    fails (a pty master reads and writes EIO once no process holds the slave open).
    """
    stream = FdStream(fd)
    loop = asyncio.get_running_loop()
    due = loop.time()
    sent = 0
    try:
        while frames is None or sent < frames:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += meter.interval_s
            stream.write(meter.frame())
            await stream.drain()
            sent += 1
    except OSError:
        pass  # the line went away: stop sending, as a meter's UART would into nothing
    finally:
        stream.close()


async def serve_push_meters(
    meters: Sequence[PushMeter],
    *,
    host: str = "127.0.0.1",
    base_port: int = 0,
    on_ready: Callable[[list[PushPortServer]], None] | None = None,
) -> None:
    """Serve each meter on its own port (``base_port + i``; 0: ephemeral ports) until cancelled.

    The body of ``openami simulate p1`` and ``openami simulate sml``; ``on_ready`` gets the started
    servers (to print their ports).
    """
    servers = [PushPortServer(m, host, base_port + i if base_port else 0) for i, m in enumerate(meters)]
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        if on_ready is not None:
            on_ready(servers)
        await asyncio.Event().wait()
