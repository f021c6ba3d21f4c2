"""Serving simulated DLMS meters: one listening port per meter, IEC 62056-47 wrapper or HDLC framing.

The meters themselves (object model, associations, relay, clock) are in
:mod:`openami.simulator.dlms_meter`; this module only moves their APDUs over sockets and serial lines.

HDLC (``framing="hdlc"``, IEC 62056-46 as terminal servers and concentrators carry it over TCP): meter
``i`` (port ``base_port + i``) is the secondary station at upper (logical) address 1, the management
logical device, and lower (physical) address ``16 + i`` (:func:`hdlc_address`): two address bytes up to
meter 111, four above, as a multi-drop bus would number them. Frames to any other address go unanswered,
as on a real line. Its limits are :data:`HDLC_PARAMETERS` (up to 1024-byte information fields and window
7 each way), lowered to what each client proposes. A new SNRM drops the associations of the connection.
:func:`serve_hdlc_fd` serves one meter the same way on an open serial descriptor (a pty in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Literal

from openami.drivers.dlms.transport import ByteReader, ByteWriter, FdStream
from openami.protocols.dlms.association import MANAGEMENT_SERVER
from openami.protocols.dlms.errors import DlmsError
from openami.protocols.dlms.hdlc import HdlcAddress, HdlcParameters
from openami.protocols.dlms.hdlc_link import ApduReceived, Connected, Disconnected, HdlcServerLink
from openami.protocols.dlms.wrapper import WrapperFrame, WrapperStreamParser, encode_wrapper
from openami.simulator.dlms_meter import MeterKeys, SimulatedMeter
from openami.transports.ports import probe_port

__all__ = [
    "FRAMINGS",
    "HDLC_PARAMETERS",
    "DlmsSimulator",
    "Framing",
    "build_meters",
    "hdlc_address",
    "run_simulator",
    "serve_hdlc",
    "serve_hdlc_fd",
]

Framing = Literal["wrapper", "hdlc"]
FRAMINGS: Final[tuple[Framing, ...]] = ("wrapper", "hdlc")
HDLC_PARAMETERS: Final = HdlcParameters(max_info_tx=1024, max_info_rx=1024, window_tx=7, window_rx=7)
"""A simulated meter's own HDLC limits; each link gets the lower of these and the client's proposal."""
_HDLC_PHYSICAL_BASE: Final = 16


def _utcnow() -> datetime:
    return datetime.now(UTC)


def hdlc_address(index: int) -> HdlcAddress:
    """The HDLC address of the simulator's meter ``index`` (0-based, as its port): upper 1, lower 16 + i."""
    return HdlcAddress(MANAGEMENT_SERVER, _HDLC_PHYSICAL_BASE + index)


class DlmsSimulator:
    """Serves each meter on its own TCP port (``base_port + index``; ``base_port`` 0: ports the OS picks,
    listed in :attr:`ports` after :meth:`start`), in wrapper or HDLC ``framing``."""

    def __init__(
        self, host: str, meters: list[SimulatedMeter], base_port: int, *, framing: Framing = "wrapper"
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"unknown DLMS framing {framing!r}, expected one of {', '.join(FRAMINGS)}")
        self.host = host
        self.meters = meters
        self.base_port = base_port
        self.framing = framing
        self.ports: list[int] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for index, meter in enumerate(self.meters):
            port = 0
            if self.base_port:
                port = probe_port(self.host, self.base_port + index, "--base-port")

            async def serve(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                meter: SimulatedMeter = meter,
                address: HdlcAddress = hdlc_address(index),
            ) -> None:
                await self._serve(meter, address, reader, writer)

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
        self,
        meter: SimulatedMeter,
        address: HdlcAddress,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio runs every connection handler as a task
        self._connections[writer] = task
        try:
            if self.framing == "hdlc":
                await serve_hdlc(meter, address, reader, writer)
                return
            parser = WrapperStreamParser()
            session = meter.session()
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


async def serve_hdlc(
    meter: SimulatedMeter,
    address: HdlcAddress,
    reader: ByteReader,
    writer: ByteWriter,
    parameters: HdlcParameters = HDLC_PARAMETERS,
) -> None:
    """Answer one HDLC link as ``meter`` at ``address`` until end of stream.

    Raises what breaks the stream (:class:`DlmsError` for a flood of broken frames, ``OSError``); the
    caller closes it.
    """
    link = HdlcServerLink(address, parameters)
    session = meter.session()
    while data := await reader.read(0x10000):
        for event in link.receive(data):
            if isinstance(event, ApduReceived):
                link.send(session.handle(event.peer.logical, event.apdu))
            elif isinstance(event, Connected | Disconnected):
                session = meter.session()  # associations do not outlive the link that carried them
        out = link.data_to_send()
        if out:
            writer.write(out)
            await writer.drain()


async def serve_hdlc_fd(
    meter: SimulatedMeter,
    fd: int,
    address: HdlcAddress,
    parameters: HdlcParameters = HDLC_PARAMETERS,
) -> None:
    """Serve ``meter`` over HDLC on the open serial descriptor ``fd`` (a tty, or a pty master in tests).

    Takes ownership of ``fd`` and closes it on return; returns at end of file or when the line fails
    (a pty master reads EIO once no process holds the slave open), runs until cancelled otherwise.
    """
    stream = FdStream(fd)
    try:
        await serve_hdlc(meter, address, stream, stream, parameters)
    except (DlmsError, OSError):
        pass  # a broken line: as a meter would, stop answering
    finally:
        stream.close()


def build_meters(
    count: int, seed: int = 0, now: Callable[[], datetime] = _utcnow, *, strict_counters: bool = False
) -> list[SimulatedMeter]:
    """``count`` meters with serials ``SIM00000001``..., system titles ``OAM`` + index, demo keys
    (``strict_counters``: see :class:`SimulatedMeter`)."""
    meters = []
    for index in range(1, count + 1):
        serial = f"SIM{index:08d}"
        title = b"OAM" + index.to_bytes(5, "big")
        meters.append(
            SimulatedMeter(
                serial,
                title,
                MeterKeys.demo(serial),
                seed * 1_000_003 + index,
                now=now,
                strict_counters=strict_counters,
            )
        )
    return meters


async def run_simulator(
    meters: int,
    base_port: int,
    *,
    host: str = "127.0.0.1",
    seed: int = 0,
    framing: Framing = "wrapper",
    on_ready: Callable[[DlmsSimulator], None] | None = None,
) -> None:
    """Serve ``meters`` meters on ``base_port``, ``base_port + 1``, ... until cancelled.

    The body of ``openami simulate dlms``; ``on_ready`` gets the started simulator (to print its ports).
    """
    simulator = DlmsSimulator(host, build_meters(meters, seed), base_port, framing=framing)
    async with simulator:
        if on_ready is not None:
            on_ready(simulator)
        await asyncio.Event().wait()
