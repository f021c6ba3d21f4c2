"""Asynchronous wired M-Bus master over a byte line: an M-Bus-to-TCP converter or a level converter's tty.

The protocol is the sans-IO :mod:`openami.protocols.mbus`: :class:`MbusClient` writes its requests,
collects answer bytes until a frame is complete, bounds every wait by a time-out and translates
failures into :mod:`openami.drivers.mbus.errors`. It runs over any
:class:`~openami.drivers.lines.Line`; :class:`MbusTcpClient` opens a TCP converter's and
:class:`MbusSerialClient` a tty's (M-Bus level converters on RS-232 or USB: 2400 baud 8E1 by default,
300..38400). A converter passes bytes both ways unchanged, so what arrives is what the bus carried,
collisions included: bytes that form no valid frame are reported as a collision.

One request at a time: M-Bus is half duplex with a single master, so the client serialises exchanges
with a lock and, after a failure, waits for the line to go quiet and discards the leftovers before the
next request (otherwise a late answer would be taken for the next one's).

Waiting for an answer: ``timeout`` is how long a slave may stay silent after the request has left the
line (EN 13757-2 gives it 330 bit times plus 50 ms; meters that wake up slowly need more). On a tty
the client adds the time the request and a maximal answer take on the wire at the line's rate (a
261-byte frame is 1.2 s at 2400 baud, 9.6 s at 300), so a slow rate never reads as a dead slave.

Baud-rate switch (:meth:`MbusClient.switch_baudrate`, EN 13757-2): the request goes out at the old
rate, the slave's E5 comes back at the old rate, and only then does the master's line change. Over a
TCP converter the bus side runs at the converter's rate, so the switch is refused with
:class:`~openami.drivers.mbus.errors.MbusBaudrateRefused` before anything is sent, unless the client
was told the converter follows switches (``follows_baudrate=True``).

Setting a meter's clock (:meth:`MbusClient.set_time`, EN 13757-3): SND_UD with CI 0x51 ("data send")
carrying one date/time record, VIF 0x6D, whose data field replaces the meter's clock (a record without
an action VIFE means "write, replace"). Type I (DIF 0x06, six bytes, to the second) or type F (DIF 0x04,
four bytes, to the minute): send the form the meter itself reports, since many meters take only that
one. The slave acknowledges with E5 when it took the frame; whether it set its clock (write protection,
a readout in progress) only a read afterwards shows. M-Bus clocks are the meter's local time and the
record names no zone: :func:`encode_date_time` takes a naive local time and the summer-time flag.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import TracebackType
from typing import Final, Literal, Self

from openami.drivers.lines import Line, SerialLine, TcpLine
from openami.drivers.mbus.errors import (
    MbusBaudrateRefused,
    MbusCollision,
    MbusProtocolError,
    MbusTimeout,
    MbusUnreachable,
)
from openami.protocols.mbus.errors import MbusError
from openami.protocols.mbus.frames import (
    C_SND_UD,
    MAX_FRAME,
    FrameKind,
    FrameStreamParser,
    MbusFrame,
    encode_frame,
)
from openami.protocols.mbus.master import (
    ADDRESS_BROADCAST_NO_REPLY,
    ADDRESS_NETWORK,
    BAUDRATE_CI,
    CI_DATA_SEND,
    DEFAULT_BAUDRATE,
    SERIAL_FRAMING,
    FcbTracker,
    SecondaryAddress,
    application_reset,
    narrow,
    req_ud2,
    select_secondary,
    snd_nke,
    switch_baudrate,
)
from openami.protocols.mbus.telegram import MbusTelegram, decode_application

__all__ = [
    "DATE_TIME_VIF",
    "MAX_SEARCH_STEPS",
    "MAX_TELEGRAMS",
    "MbusClient",
    "MbusSerialClient",
    "MbusTcpClient",
    "Resolution",
    "encode_date_time",
    "set_time_request",
]

MAX_TELEGRAMS = 32
"""Most telegrams one multi-telegram readout may take: a slave that always says "more follow" must not
keep the master forever."""
MAX_SEARCH_STEPS = 2000
"""Most selections one secondary search may send (ten per digit per meter; a bus holds 250 meters)."""
_BITS_PER_BYTE: Final = 11
"""Start bit, eight data bits, parity, stop bit."""
DATE_TIME_VIF: Final = 0x6D
"""VIF of a date and time (types F and I)."""
Resolution = Literal["second", "minute"]
_DATE_TIME_DIF: Final[dict[str, int]] = {"second": 0x06, "minute": 0x04}
"""Type I is a 48-bit field, type F a 32-bit one."""
_FIRST_YEAR, _LAST_YEAR = 2000, 2080
"""Years the 7-bit field carries without a century (0..80: the 2000s, as every decoder reads them)."""


def encode_date_time(
    when: datetime, resolution: Resolution = "second", *, summer_time: bool = False
) -> bytes:
    """``when`` (naive: the meter's local time) as a type I (``second``) or type F (``minute``, the
    seconds dropped) data field, least significant byte first, valid, with the summer-time flag.

    Type F: minute, IV; hour, century (0), SU; day, year low bits; month, year high bits.
    Type I: second; minute, SU, IV; hour, day of week (1 Monday .. 7); day, year low bits; month, year
    high bits; week (0: not given). ``ValueError`` for an aware time or a year outside 2000..2080."""
    if when.tzinfo is not None:
        raise ValueError("an M-Bus clock holds the meter's local time: give it as a naive datetime")
    if not _FIRST_YEAR <= when.year <= _LAST_YEAR:
        raise ValueError(
            f"year {when.year} is outside what the date field carries ({_FIRST_YEAR}..{_LAST_YEAR})"
        )
    year = when.year - _FIRST_YEAR
    su = 1 if summer_time else 0
    day = when.day | (year & 0x07) << 5
    month = when.month | (year & 0x78) << 1
    if resolution == "minute":
        return bytes([when.minute, when.hour | su << 7, day, month])
    if resolution != "second":
        raise ValueError(f"resolution {resolution!r}: second or minute")
    return bytes([when.second, when.minute | su << 6, when.hour | when.isoweekday() << 5, day, month, 0])


def set_time_request(address: int, when: datetime, resolution: Resolution = "second", *,
                     summer_time: bool = False) -> bytes:  # fmt: skip
    """SND_UD, CI 0x51, one date/time record (DIF 0x06 or 0x04, VIF 0x6D): set the slave's clock."""
    if not 0 <= address <= 0xFF:
        raise ValueError(f"address {address} out of range 0..255")
    data = bytes([_DATE_TIME_DIF[resolution], DATE_TIME_VIF])
    data += encode_date_time(when, resolution, summer_time=summer_time)
    return encode_frame(MbusFrame(FrameKind.LONG, C_SND_UD, address, CI_DATA_SEND, data))


def _check_rate(baudrate: int) -> None:
    if baudrate not in BAUDRATE_CI:
        raise ValueError(f"baud rate {baudrate} is not an M-Bus rate ({', '.join(map(str, BAUDRATE_CI))})")


class MbusClient:
    """A master on one bus over ``line``, or over the line :meth:`connect` opens (subclasses).

    Use as ``async with MbusTcpClient(...) as bus:`` or ``async with MbusSerialClient(...) as bus:``;
    ``MbusClient(line)`` runs over a line opened elsewhere, and closes it on :meth:`close`.
    """

    def __init__(self, line: Line | None = None, *, timeout: float = 2.0, settle: float = 0.05) -> None:
        self.timeout, self.settle = timeout, settle
        self._line = line
        self._lock = asyncio.Lock()
        self._fcb = FcbTracker()

    @property
    def peer(self) -> str:
        return "not connected" if self._line is None else self._line.peer

    @property
    def baudrate(self) -> int | None:
        """The rate the master's line runs at when it knows (a tty), else None."""
        return None if self._line is None else self._line.baudrate

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    async def connect(self) -> None:
        """Open the line (once); :class:`MbusUnreachable` when it cannot be."""
        if self._line is None:
            self._line = await self._open()

    async def _open(self) -> Line:
        raise MbusUnreachable("no line to open: give MbusClient an open line")

    async def close(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            await line.aclose()

    # --- exchanges ------------------------------------------------------------------------------

    def _wire_time(self, size: int) -> float:
        """Seconds ``size`` bytes take on the line (0 when its rate is unknown: a TCP converter)."""
        rate = self.baudrate
        return 0.0 if not rate else size * _BITS_PER_BYTE / rate

    def _connected(self) -> Line:
        if self._line is None:
            raise MbusUnreachable("not connected")
        return self._line

    async def _exchange(self, request: bytes, expect_answer: bool = True) -> MbusFrame | None:
        """Send ``request`` and return the one frame answered (``None`` if silence was expected)."""
        line = self._connected()
        async with self._lock:
            try:
                await line.send(request)
            except OSError as exc:
                raise MbusUnreachable(f"{line.peer}: line lost: {exc}") from exc
            if not expect_answer:
                return None
            return await self._receive(line, self.timeout + self._wire_time(len(request)))

    async def _receive(self, line: Line, first_s: float) -> MbusFrame:
        parser = FrameStreamParser()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + first_s
        received = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if received:
                    await self._drain(line)
                    raise MbusCollision(f"{received} bytes but no valid frame (colliding answers?)")
                raise MbusTimeout(f"{line.peer}: no answer within {first_s:.3g} s")
            try:
                async with asyncio.timeout(remaining):
                    data = await line.read()
            except TimeoutError:
                continue
            except OSError as exc:
                raise MbusUnreachable(f"{line.peer}: line lost: {exc}") from exc
            if not data:
                raise MbusUnreachable(f"{line.peer}: the converter closed the line")
            if not received:  # the answer has begun: give it the time a maximal frame takes
                deadline = max(deadline, loop.time() + self.timeout + self._wire_time(MAX_FRAME))
            received += len(data)
            frames = parser.feed(data)
            if parser.errors:
                await self._drain(line)
                raise MbusCollision(f"garbled answer: {parser.errors[0].reason}")
            if frames:
                if len(frames) > 1 or parser.buffered:
                    await self._drain(line)
                    raise MbusCollision("more than one answer")
                return frames[0]

    async def _drain(self, line: Line) -> None:
        """Wait until the line has been quiet for ``settle`` seconds, discarding what arrives; a slave
        babbling without pause is cut off after one maximal frame's time plus ``timeout``."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.timeout + self._wire_time(MAX_FRAME)
        while loop.time() < give_up:
            try:
                async with asyncio.timeout(self.settle):
                    data = await line.read()
            except TimeoutError:
                return
            except OSError:
                return
            if not data:
                return

    async def _expect_ack(self, request: bytes, address: int, what: str) -> bool:
        """Send ``request``; True once the slave's E5 is there (False for broadcast 255: no answer)."""
        answer = await self._exchange(request, expect_answer=address != ADDRESS_BROADCAST_NO_REPLY)
        if answer is None:
            return False
        if answer.kind is not FrameKind.ACK:
            raise MbusProtocolError(f"{what} answered with a {answer.kind.value} frame, not E5")
        return True

    # --- requests -------------------------------------------------------------------------------

    async def reset(self, address: int) -> None:
        """SND_NKE; the slave's E5 is awaited (except for broadcast 255, which nobody answers)."""
        answer = await self._exchange(snd_nke(address), expect_answer=address != ADDRESS_BROADCAST_NO_REPLY)
        self._fcb.reset(address)
        if answer is not None and answer.kind is not FrameKind.ACK:
            raise MbusProtocolError(f"SND_NKE answered with a {answer.kind.value} frame, not E5")

    async def application_reset(self, address: int, subcode: int | None = None) -> None:
        """SND_UD CI 0x50: the slave restarts its application (its next REQ_UD2 answer is the first
        telegram of a readout again); the link's frame count bit is left alone."""
        try:
            request = application_reset(address, subcode)
        except MbusError as exc:
            raise ValueError(str(exc)) from exc
        await self._expect_ack(request, address, "application reset")

    async def switch_baudrate(self, address: int, baudrate: int) -> None:
        """Switch the slave at ``address`` and then this master's line to ``baudrate`` (300..38400).

        Raises :class:`MbusBaudrateRefused` on a line that cannot follow (a TCP converter not said to
        follow), before sending; :class:`MbusTimeout` when the slave did not acknowledge, in which
        case the line stays at its rate (had the E5 been lost, the slave now listens at the new rate:
        a read at that rate finds out). Broadcast 255 switches every slave without an answer.
        """
        _check_rate(baudrate)
        line = self._connected()
        if not line.follows_baudrate:
            raise MbusBaudrateRefused(
                f"{line.peer}: the converter keeps its own bus rate; switching the slave to {baudrate}"
                " baud would silence it (connect with follows_baudrate=True if the converter follows)"
            )
        await self._expect_ack(switch_baudrate(address, baudrate), address, "baud-rate switch")
        async with self._lock:
            await self._set_line_rate(line, baudrate)

    async def use_baudrate(self, baudrate: int) -> None:
        """Run the master's own line at ``baudrate`` without asking any slave to switch: to talk to
        slaves left at another rate (a bus whose meters do not all run at one rate)."""
        _check_rate(baudrate)
        line = self._connected()
        if not line.follows_baudrate:
            raise MbusBaudrateRefused(f"{line.peer}: the converter keeps its own bus rate")
        async with self._lock:
            await self._set_line_rate(line, baudrate)

    async def _set_line_rate(self, line: Line, baudrate: int) -> None:
        try:
            await line.set_baudrate(baudrate, self.timeout + self._wire_time(MAX_FRAME))
        except TimeoutError as exc:
            raise MbusTimeout(f"{line.peer}: the line did not drain for the switch") from exc
        except (OSError, ValueError) as exc:
            raise MbusUnreachable(f"{line.peer}: cannot switch to {baudrate} baud: {exc}") from exc

    async def set_time(self, address: int, when: datetime, resolution: Resolution = "second", *,
                       summer_time: bool = False) -> bool:  # fmt: skip
        """Set the clock of the slave at ``address`` to ``when`` (naive: its local time; module
        docstring). True once the slave acknowledged (False for broadcast 255, which nobody answers);
        :class:`MbusTimeout` when it stayed silent, :class:`MbusProtocolError` when it answered with a
        frame. An acknowledgement says the frame arrived, not that the clock took it: read it back."""
        request = set_time_request(address, when, resolution, summer_time=summer_time)
        return await self._expect_ack(request, address, "set date and time")

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


class MbusTcpClient(MbusClient):
    """A master on the bus behind an M-Bus-to-TCP converter at ``host:port``.

    ``follows_baudrate``: the converter follows a slave's baud-rate switch by itself; without it
    :meth:`switch_baudrate` is refused (see the module docstring).
    """

    def __init__(self, host: str, port: int, *, timeout: float = 2.0, connect_timeout: float = 5.0,
                 settle: float = 0.05, follows_baudrate: bool = False) -> None:  # fmt: skip
        super().__init__(timeout=timeout, settle=settle)
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.follows_baudrate = follows_baudrate

    async def _open(self) -> Line:
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await TcpLine.open(self.host, self.port, follows_baudrate=self.follows_baudrate)
        except (OSError, TimeoutError) as exc:
            raise MbusUnreachable(f"cannot connect to {self.host}:{self.port}: {exc}") from exc


class MbusSerialClient(MbusClient):
    """A master on the bus behind a level converter on the tty at ``path``, 8E1 at ``baudrate``."""

    def __init__(self, path: str, *, baudrate: int = DEFAULT_BAUDRATE, timeout: float = 2.0,
                 settle: float = 0.05) -> None:  # fmt: skip
        _check_rate(baudrate)
        super().__init__(timeout=timeout, settle=settle)
        self.path, self.initial_baudrate = path, baudrate

    async def _open(self) -> Line:
        try:
            return await SerialLine.open(self.path, self.initial_baudrate, SERIAL_FRAMING)
        except (OSError, ValueError) as exc:
            raise MbusUnreachable(f"cannot open {self.path}: {exc}") from exc
