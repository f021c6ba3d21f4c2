"""Serving simulated DLMS meters over TCP: one listening port per meter, IEC 62056-47 wrapper framing.

The meters themselves (object model, associations, relay, clock) are in
:mod:`openami.simulator.dlms_meter`; this module only moves their APDUs over sockets, so other framings
(HDLC over TCP, as terminal servers and concentrators carry it) can sit beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from openami.protocols.dlms.errors import DlmsError
from openami.protocols.dlms.wrapper import WrapperFrame, WrapperStreamParser, encode_wrapper
from openami.simulator.dlms_meter import MeterKeys, SimulatedMeter
from openami.transports.ports import probe_port

__all__ = ["DlmsSimulator", "build_meters", "run_simulator"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DlmsSimulator:
    """Serves each meter on its own TCP port (``base_port + index``; ``base_port`` 0: ports the OS picks,
    listed in :attr:`ports` after :meth:`start`)."""

    def __init__(self, host: str, meters: list[SimulatedMeter], base_port: int) -> None:
        self.host = host
        self.meters = meters
        self.base_port = base_port
        self.ports: list[int] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for index, meter in enumerate(self.meters):
            port = 0
            if self.base_port:
                port = probe_port(self.host, self.base_port + index, "--base-port")

            async def serve(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, meter: SimulatedMeter = meter
            ) -> None:
                await self._serve(meter, reader, writer)

            server = await asyncio.start_server(serve, self.host, port)
            self._servers.append(server)
            self.ports.append(int(server.sockets[0].getsockname()[1]))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        # Closing a connection ends its handler through end of stream; cancelling it instead would make
        # asyncio's stream callback log the CancelledError on Python 3.11.
        handlers = list(self._connections.values())
        for writer in list(self._connections):
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self.ports.clear()

    async def __aenter__(self) -> DlmsSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(
        self, meter: SimulatedMeter, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio runs every connection handler as a task
        self._connections[writer] = task
        parser = WrapperStreamParser()
        session = meter.session()
        try:
            while data := await reader.read(0x10000):
                for frame in parser.feed(data):
                    reply = session.handle(frame.source, frame.apdu)
                    writer.write(encode_wrapper(WrapperFrame(frame.destination, frame.source, reply)))
                await writer.drain()
        except (DlmsError, ConnectionError):
            pass  # a broken stream or peer: the connection is simply closed, as a meter does
        finally:
            self._connections.pop(writer, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def build_meters(count: int, seed: int = 0, now: Callable[[], datetime] = _utcnow) -> list[SimulatedMeter]:
    """``count`` meters with serials ``SIM00000001``..., system titles ``OAM`` + index, demo keys."""
    meters = []
    for index in range(1, count + 1):
        serial = f"SIM{index:08d}"
        title = b"OAM" + index.to_bytes(5, "big")
        meters.append(
            SimulatedMeter(serial, title, MeterKeys.demo(serial), seed * 1_000_003 + index, now=now)
        )
    return meters


async def run_simulator(
    meters: int,
    base_port: int,
    *,
    host: str = "127.0.0.1",
    seed: int = 0,
    on_ready: Callable[[DlmsSimulator], None] | None = None,
) -> None:
    """Serve ``meters`` meters on ``base_port``, ``base_port + 1``, ... until cancelled.

    The body of ``openami simulate dlms``; ``on_ready`` gets the started simulator (to print its ports).
    """
    simulator = DlmsSimulator(host, build_meters(meters, seed), base_port)
    async with simulator:
        if on_ready is not None:
            on_ready(simulator)
        await asyncio.Event().wait()
