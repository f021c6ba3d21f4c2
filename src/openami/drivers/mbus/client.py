"""Asynchronous wired M-Bus master over an M-Bus-to-TCP converter (asyncio streams).

The protocol is the sans-IO :mod:`openami.protocols.mbus`: this class writes its requests, collects
answer bytes until a frame is complete, bounds every wait by a time-out and translates failures into
:mod:`openami.drivers.mbus.errors`. A converter passes bytes both ways unchanged, so what arrives is what
the bus carried, collisions included: bytes that form no valid frame are reported as a collision.

One request at a time: M-Bus is half duplex with a single master, so the client serialises exchanges
with a lock and, after a failure, waits for the line to go quiet and discards the leftovers before the
next request (otherwise a late answer would be taken for the next one's).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from openami.drivers.mbus.errors import MbusCollision, MbusProtocolError, MbusTimeout, MbusUnreachable
from openami.protocols.mbus.errors import MbusError
from openami.protocols.mbus.frames import FrameKind, FrameStreamParser, MbusFrame
from openami.protocols.mbus.master import (
    ADDRESS_NETWORK,
    FcbTracker,
    SecondaryAddress,
    narrow,
    req_ud2,
    select_secondary,
    snd_nke,
)
from openami.protocols.mbus.telegram import MbusTelegram, decode_application

__all__ = ["MbusTcpClient"]

MAX_TELEGRAMS = 32
"""Most telegrams one multi-telegram readout may take: a slave that always says "more follow" must not
keep the master forever."""
MAX_SEARCH_STEPS = 2000
"""Most selections one secondary search may send (ten per digit per meter; a bus holds 250 meters)."""


class MbusTcpClient:
    """A master on one bus behind ``host:port``. Use as ``async with MbusTcpClient(...) as bus:``."""

    def __init__(self, host: str, port: int, *, timeout: float = 2.0, connect_timeout: float = 5.0,
                 settle: float = 0.05) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.timeout, self.connect_timeout, self.settle = timeout, connect_timeout, settle
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._fcb = FcbTracker()

    async def __aenter__(self) -> MbusTcpClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise MbusUnreachable(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    # --- exchanges ------------------------------------------------------------------------------

    async def _exchange(self, request: bytes, expect_answer: bool = True) -> MbusFrame | None:
        """Send ``request`` and return the one frame answered (``None`` if silence was expected)."""
        if self._reader is None or self._writer is None:
            raise MbusUnreachable("not connected")
        async with self._lock:
            try:
                self._writer.write(request)
                await self._writer.drain()
            except ConnectionError as exc:
                raise MbusUnreachable(f"connection lost: {exc}") from exc
            if not expect_answer:
                return None
            return await self._receive(self._reader)

    async def _receive(self, reader: asyncio.StreamReader) -> MbusFrame:
        parser = FrameStreamParser()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if received:
                    await self._drain(reader)
                    raise MbusCollision(f"{received} bytes but no valid frame (colliding answers?)")
                raise MbusTimeout(f"no answer within {self.timeout} s")
            try:
                data = await asyncio.wait_for(reader.read(512), remaining)
            except TimeoutError:
                continue
            except ConnectionError as exc:
                raise MbusUnreachable(f"connection lost: {exc}") from exc
            if not data:
                raise MbusUnreachable("the converter closed the connection")
            received += len(data)
            frames = parser.feed(data)
            if parser.errors:
                await self._drain(reader)
                raise MbusCollision(f"garbled answer: {parser.errors[0].reason}")
            if frames:
                if len(frames) > 1 or parser.buffered:
                    await self._drain(reader)
                    raise MbusCollision("more than one answer")
                return frames[0]

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        """Wait until the line has been quiet for ``settle`` seconds, discarding what arrives."""
        while True:
            try:
                data = await asyncio.wait_for(reader.read(4096), self.settle)
            except TimeoutError:
                return
            if not data:
                return

    # --- requests -------------------------------------------------------------------------------

    async def reset(self, address: int) -> None:
        """SND_NKE; the slave's E5 is awaited (except for broadcast 255, which nobody answers)."""
        answer = await self._exchange(snd_nke(address), expect_answer=address != 0xFF)
        self._fcb.reset(address)
        if answer is not None and answer.kind is not FrameKind.ACK:
            raise MbusProtocolError(f"SND_NKE answered with a {answer.kind.value} frame, not E5")

    async def read_telegram(self, address: int) -> MbusTelegram:
        """One REQ_UD2 and its RSP_UD, decoded; the FCB toggles once the slave has answered."""
        frame = await self._exchange(req_ud2(address, self._fcb.current(address)))
        assert frame is not None  # an answer was expected
        self._fcb.answered(address)
        if frame.kind is not FrameKind.LONG:
            raise MbusProtocolError(f"REQ_UD2 answered with a {frame.kind.value} frame")
        try:
            return decode_application(frame)
        except MbusError as exc:
            raise MbusProtocolError(f"undecodable telegram: {exc}") from exc

    async def read(self, address: int, *, max_telegrams: int = MAX_TELEGRAMS) -> MbusTelegram:
        """All records of the slave at ``address`` (1..250, or 253 after a selection), following
        "more records follow" across telegrams with the frame count bit toggled each time. The
        result has the first telegram's header and every record but the 0x1F markers."""
        first: MbusTelegram | None = None
        records = []
        for _ in range(max_telegrams):
            telegram = await self.read_telegram(address)
            first = first or telegram
            more = telegram.more_records_follow
            records += telegram.records[:-1] if more else telegram.records
            if not more:
                return MbusTelegram(first.ci, first.address, first.control, first.header, records)
        raise MbusProtocolError(f"slave still had more records after {max_telegrams} telegrams")

    async def read_primary(self, address: int) -> MbusTelegram:
        """SND_NKE then a full readout of a primary address (1..250)."""
        if not 0 <= address <= 250:
            raise ValueError(f"primary address {address} out of range 0..250")
        await self.reset(address)
        return await self.read(address)

    async def select(self, address: SecondaryAddress) -> bool:
        """Select by secondary address; ``True`` when some slave acknowledged (maybe several)."""
        try:
            answer = await self._exchange(select_secondary(address))
        except MbusTimeout:
            return False
        if answer is None or answer.kind is not FrameKind.ACK:
            raise MbusProtocolError("selection answered with something other than E5")
        self._fcb.reset(ADDRESS_NETWORK)
        return True

    async def read_secondary(self, address: SecondaryAddress) -> MbusTelegram:
        """Select one slave by its complete secondary address and read it at 0xFD."""
        if not await self.select(address):
            raise MbusTimeout(f"no slave acknowledged secondary address {address.id}")
        return await self.read(ADDRESS_NETWORK)

    async def search(self, pattern: SecondaryAddress | None = None) -> list[str]:
        """Identification numbers of every slave matching ``pattern`` (default: all), by selecting
        with wildcards and narrowing the first wildcard digit wherever answers collide."""
        found: list[str] = []
        todo = [pattern or SecondaryAddress()]
        steps = 0
        while todo:
            steps += 1
            if steps > MAX_SEARCH_STEPS:
                raise MbusProtocolError(f"secondary search exceeded {MAX_SEARCH_STEPS} selections")
            current = todo.pop(0)
            try:
                if not await self.select(current):
                    continue
                telegram = await self.read_telegram(ADDRESS_NETWORK)
            except MbusCollision:
                if current.complete:
                    raise MbusCollision(f"several slaves share secondary address {current.id}") from None
                todo[:0] = narrow(current)
                continue
            ident = getattr(telegram.header, "id", None)
            if ident is not None and ident not in found:
                found.append(ident)
            await self.reset(ADDRESS_NETWORK)  # deselect before the next pattern
        return found
