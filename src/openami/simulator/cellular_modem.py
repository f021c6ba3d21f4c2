"""A simulated cellular modem: connects *out* to the head-end's front-end processor and serves a meter.

What a GPRS/LTE modem in front of a DLMS meter does in "client mode": open a TCP connection to a
configured server address, send an identification line (``ID:<ident>`` CR LF by default), then pass
bytes between that connection and the meter, here a :class:`~openami.simulator.dlms_meter.SimulatedMeter`
in IEC 62056-47 wrapper or HDLC framing. When the connection drops it connects again after
``reconnect_delay_s``, from a new source port (each connection is bound afresh, as after a network
change or a new PDP context).

Test controls: :meth:`CellularModem.drop` closes the connection (the FEP sees it end);
:meth:`CellularModem.network_change` opens a new connection *without* closing the old one, which stays
silent, as when the mobile network moved the modem and the old path died without a FIN;
``hang_up_after_apdus`` aborts the connection once, in the middle of a session, after that many APDUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final, Literal

from openami.protocols.dlms.errors import DlmsError
from openami.protocols.dlms.hdlc import HdlcAddress, HdlcParameters
from openami.protocols.dlms.hdlc_link import ApduReceived, Connected, Disconnected, HdlcServerLink
from openami.protocols.dlms.wrapper import WrapperFrame, WrapperStreamParser, encode_wrapper
from openami.simulator.dlms_meter import SimulatedMeter
from openami.simulator.dlms_server import HDLC_PARAMETERS, hdlc_address

__all__ = ["CellularModem"]

log = logging.getLogger(__name__)

Framing = Literal["wrapper", "hdlc"]
_READ_SIZE: Final = 0x10000
_PORT_ATTEMPTS: Final = 5


class _HangUp(Exception):
    """The modem drops the line in the middle of a session (a test control)."""


class CellularModem:
    """One modem with one meter behind it, connecting to ``host:port``; see the module docstring.

    ``source_host``: the local address to connect from (None: the OS's choice). ``ident_line``: what is
    sent first (default ``ID:<ident>\\r\\n``). For HDLC the meter answers at ``address``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ident: str,
        meter: SimulatedMeter,
        *,
        framing: Framing = "wrapper",
        address: HdlcAddress | None = None,
        parameters: HdlcParameters = HDLC_PARAMETERS,
        ident_line: bytes | None = None,
        source_host: str | None = None,
        reconnect_delay_s: float = 0.1,
        hang_up_after_apdus: int | None = None,
    ) -> None:
        if framing not in ("wrapper", "hdlc"):
            raise ValueError(f"unknown DLMS framing {framing!r}")
        self.host, self.port = host, port
        self.ident = ident
        self.meter = meter
        self.framing = framing
        self.address = address or hdlc_address(0)
        self.parameters = parameters
        self.ident_line = ident_line if ident_line is not None else f"ID:{ident}\r\n".encode()
        self.source_host = source_host
        self.reconnect_delay_s = reconnect_delay_s
        self.hang_up_after_apdus = hang_up_after_apdus
        self.source_ports: list[int] = []
        """The local port of each connection made, in order."""
        self.apdus = 0
        self._task: asyncio.Task[None] | None = None
        self._change: asyncio.Future[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._abandoned: list[asyncio.StreamWriter] = []
        self._connected = asyncio.Event()

    @property
    def connections(self) -> int:
        return len(self.source_ports)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for writer in [*self._abandoned, *([self._writer] if self._writer else [])]:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        self._abandoned.clear()
        self._writer = None

    async def __aenter__(self) -> CellularModem:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_connections(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until ``count`` connections have been made (and identified themselves)."""
        async with asyncio.timeout(timeout_s):
            while self.connections < count:
                self._connected.clear()
                await self._connected.wait()

    def drop(self) -> None:
        """Close the current connection (the FEP sees its end); the modem connects again."""
        if self._writer is not None:
            self._writer.close()

    def network_change(self) -> None:
        """Connect anew and leave the current connection open but silent (a dead path, no FIN)."""
        if self._change is not None and not self._change.done():
            self._change.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                reader, writer = await self._connect()
            except OSError as exc:
                log.debug("modem %s: cannot connect: %s", self.ident, exc)
                await asyncio.sleep(self.reconnect_delay_s)
                continue
            self._writer = writer
            change = self._change = loop.create_future()
            serving = asyncio.create_task(self._serve(reader, writer))
            self._connected.set()
            try:
                await asyncio.wait({serving, change}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
                raise
            if change.done() and not serving.done():
                serving.cancel()  # the old path is dead: keep its socket, stop answering on it
                await asyncio.gather(serving, return_exceptions=True)
                self._abandoned.append(writer)
                continue
            change.cancel()
            self._writer = None
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            await asyncio.sleep(self.reconnect_delay_s)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection from a source port not used by the previous one, identification sent."""
        last = self.source_ports[-1] if self.source_ports else None
        for _ in range(_PORT_ATTEMPTS):
            local = (self.source_host, 0) if self.source_host else None
            reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=local)
            port = int(writer.get_extra_info("sockname")[1])
            if port != last:
                break
            writer.close()
        writer.write(self.ident_line)
        await writer.drain()
        self.source_ports.append(port)
        return reader, writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.framing == "hdlc":
                await self._serve_hdlc(reader, writer)
            else:
                await self._serve_wrapper(reader, writer)
        except _HangUp:
            writer.transport.abort()
        except (DlmsError, ConnectionError, OSError):
            pass  # a broken stream: the modem drops the line and dials in again

    def _count_apdu(self) -> None:
        self.apdus += 1
        limit = self.hang_up_after_apdus
        if limit is not None and self.apdus > limit:
            self.hang_up_after_apdus = None  # once
            self.apdus = 0
            raise _HangUp

    async def _serve_wrapper(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = WrapperStreamParser()
        session = self.meter.session()
        while data := await reader.read(_READ_SIZE):
            for frame in parser.feed(data):
                self._count_apdu()
                reply = session.handle(frame.source, frame.apdu)
                writer.write(encode_wrapper(WrapperFrame(frame.destination, frame.source, reply)))
            await writer.drain()

    async def _serve_hdlc(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = HdlcServerLink(self.address, self.parameters)
        session = self.meter.session()
        while data := await reader.read(_READ_SIZE):
            for event in link.receive(data):
                if isinstance(event, ApduReceived):
                    self._count_apdu()
                    link.send(session.handle(event.peer.logical, event.apdu))
                elif isinstance(event, Connected | Disconnected):
                    session = self.meter.session()
            out = link.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
