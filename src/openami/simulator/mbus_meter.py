"""A virtual wired M-Bus on a loopback TCP port (an M-Bus-to-TCP converter) or on a serial line (a pty).

Meters (heat and water by default) answer SND_NKE, REQ_UD2 (primary address, 0xFD when selected, 0xFE),
selection by secondary address (SND_UD, CI 0x52, F nibbles and 0xFF bytes as wildcards), the
application reset (SND_UD CI 0x50: the next readout starts at its first telegram) and the baud-rate
switch (SND_UD CI 0xB8..0xBF: acknowledged at the old rate, then the meter listens at the new). When
several meters answer at once the bytes collide as on the wire, where a 0 bit from any slave wins:
the simulator sends the bytewise AND of the answers. E5 AND E5 is still E5, so a selection that hits
several meters looks fine until the data request garbles, exactly the case a real search must handle.

Long readouts are split over several telegrams (DIF 0x1F) and follow the frame count bit: a REQ_UD2
repeating the previous FCB gets the previous telegram again, a toggled one the next.

Clocks: a meter given ``clock_offset_s`` keeps a running clock, that many seconds ahead of the
simulator's time (``time_source``, the machine's clock by default), and writes it, as local time in its
``clock_zone`` with the summer-time flag, into every current date/time record (VIF 0x6D, storage 0) of
its telegrams, in the record's own form (type F to the minute, type I to the second). A SND_UD with
CI 0x51 carrying one date/time record sets that clock (EN 13757-3, as
:meth:`openami.drivers.mbus.client.MbusClient.set_time` sends it); ``clock_write`` says what the meter
does with it: ``apply``, ``ignore`` (acknowledged and kept, as a write-protected meter does) or ``silent``
(no answer). A meter without ``clock_offset_s`` sends its records as written, until a time set starts
its clock.

Baud rates: each meter listens at its own rate (2400 to begin with) and hears only frames sent at that
rate, as a UART at another rate reads garbage. Served on a pty (:meth:`MbusBusSimulator.serve_fd`) the
rate a frame was sent at is the tty's speed when it arrives; after acknowledging a switch the simulator
sets the tty to the new rate, as the meter's side of the line would (a Linux pty has one set of termios
attributes for both ends, so the master's tty shows the new speed too). Over TCP the converter's bus
side runs at ``converter_baudrate``, and follows a switch only when ``converter_follows`` says so:
otherwise a switched meter goes silent for that converter, as on real installations.
"""

from __future__ import annotations

import asyncio
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from openami.drivers.dlms.transport import FdStream, serial_speed
from openami.drivers.lines import tty_baudrate
from openami.drivers.mbus.client import DATE_TIME_VIF, Resolution, encode_date_time
from openami.protocols.mbus.dif import VARIABLE, encode_dib
from openami.protocols.mbus.errors import MbusError
from openami.protocols.mbus.frames import (
    ACK,
    C_REQ_UD2,
    C_RSP_UD,
    C_SND_NKE,
    C_SND_UD,
    FCB,
    FrameKind,
    FrameStreamParser,
    MbusFrame,
    encode_frame,
)
from openami.protocols.mbus.header import encode_manufacturer
from openami.protocols.mbus.master import (
    ADDRESS_BROADCAST_NO_REPLY,
    ADDRESS_BROADCAST_REPLY,
    ADDRESS_NETWORK,
    CI_APPLICATION_RESET,
    CI_DATA_SEND,
    CI_SELECT,
    DEFAULT_BAUDRATE,
    baudrate_of_ci,
)
from openami.protocols.mbus.records import decode_records, record_layout
from openami.simulator.tcp_server import LoopbackServer

__all__ = [
    "Answer",
    "MbusBusSimulator",
    "VirtualMbusMeter",
    "bcd",
    "default_meters",
    "heat_meter",
    "water_meter",
]


def bcd(value: int, digits: int) -> bytes:
    """``value`` as BCD, least significant byte first (data fields 0x9..0xC, 0xE and the id)."""
    return bytes.fromhex(f"{value:0{digits}d}")[::-1]


def record(data_field: int, vib: bytes, payload: bytes, *, function: int = 0, storage: int = 0,
           tariff: int = 0) -> bytes:  # fmt: skip
    return encode_dib(data_field, function, storage, tariff) + vib + payload


def type_f(year: int, month: int, day: int, hour: int, minute: int) -> bytes:
    return encode_date_time(datetime(year, month, day, hour, minute), "minute")


def type_g(year: int, month: int, day: int) -> bytes:
    y = year - 2000
    return bytes([(day & 0x1F) | ((y & 0x07) << 5), (month & 0x0F) | ((y & 0x78) << 1)])


@dataclass
class VirtualMbusMeter:
    """One slave. ``telegrams`` are record blocks; all but the last are sent with DIF 0x1F appended."""

    primary: int
    id: str
    manufacturer: str
    version: int
    medium: int
    telegrams: list[bytes]
    access_number: int = 0
    selected: bool = False
    _index: int = 0
    _last_fcb: bool | None = field(default=None, repr=False)
    baudrate: int = DEFAULT_BAUDRATE
    """The rate this meter listens and answers at (changed by an acknowledged baud-rate switch)."""
    clock_offset_s: float | None = None
    """The meter's clock minus the simulator's time, in seconds; None: no running clock (module
    docstring)."""
    clock_zone: str = "UTC"
    clock_write: Literal["apply", "ignore", "silent"] = "apply"
    time_source: Callable[[], float] = field(default=time.time, repr=False)
    clock_sets: int = 0
    """Time-set frames received (applied or not)."""

    def clock(self) -> datetime | None:
        """The meter's clock now, as local time in its zone (aware); None without a running clock."""
        if self.clock_offset_s is None:
            return None
        epoch = self.time_source() + self.clock_offset_s
        return datetime.fromtimestamp(epoch, UTC).astimezone(ZoneInfo(self.clock_zone))

    def set_clock(self, data: bytes) -> bool | None:
        """A CI 0x51 frame's data: when it is one current date/time record, take it as ``clock_write``
        says; True to acknowledge, None when it is not a time set (the caller goes on)."""
        try:
            records = decode_records(data)
        except MbusError:
            return None
        if len(records) != 1 or records[0].quantity != "date_time" or records[0].storage:
            return None
        self.clock_sets += 1
        if self.clock_write == "silent":
            return False
        value = records[0].value
        if self.clock_write == "apply" and isinstance(value, str) and "T" in value:
            raw = records[0].raw
            summer = bool(raw[1] & (0x80 if len(raw) == 4 else 0x40))
            local = datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(self.clock_zone))
            if local.dst() is not None and bool(local.dst()) != summer:
                local = local.replace(fold=1)  # the repeated hour of the autumn change
            self.clock_offset_s = local.timestamp() - self.time_source()
        return True

    def _with_clock(self, body: bytes) -> bytes:
        """``body`` with every current date/time record showing the meter's clock now."""
        now = self.clock()
        if now is None:
            return body
        try:
            layout, _ = record_layout(body)
        except MbusError:
            return body
        out, pos = bytearray(body), 0
        for header, length in layout:
            if length == VARIABLE:
                break
            if len(header) == 2 and header[1] == DATE_TIME_VIF and header[0] in (0x04, 0x06):
                form: Resolution = "minute" if header[0] == 0x04 else "second"
                data = encode_date_time(now.replace(tzinfo=None), form, summer_time=bool(now.dst()))
                out[pos + 2 : pos + 2 + length] = data
            pos += len(header) + length
        return bytes(out)

    def reset(self) -> None:
        self._index, self._last_fcb = 0, None

    def matches(self, pattern: bytes) -> bool:
        ident = bytes.fromhex(self.id)[::-1]
        for mine, want in zip(ident, pattern[:4], strict=True):
            for shift in (0, 4):
                w = (want >> shift) & 0x0F
                if w != 0x0F and w != (mine >> shift) & 0x0F:
                    return False
        man = int.from_bytes(pattern[4:6], "little")
        return (
            man in (0xFFFF, encode_manufacturer(self.manufacturer))
            and pattern[6] in (0xFF, self.version)
            and pattern[7] in (0xFF, self.medium)
        )

    def respond_ud2(self, fcb: bool) -> bytes:
        if self._last_fcb is not None and fcb != self._last_fcb:
            self._index = (self._index + 1) % len(self.telegrams)
        self._last_fcb = fcb
        self.access_number = (self.access_number + 1) & 0xFF
        body = self._with_clock(self.telegrams[self._index])
        if self._index < len(self.telegrams) - 1:
            body += b"\x1f"
        header = (
            bytes.fromhex(self.id)[::-1]
            + encode_manufacturer(self.manufacturer).to_bytes(2, "little")
            + bytes([self.version, self.medium, self.access_number, 0x00, 0x00, 0x00])
        )
        return encode_frame(MbusFrame(FrameKind.LONG, C_RSP_UD, self.primary, 0x72, header + body))


def heat_meter(primary: int, ident: str, energy_kwh: int = 123456) -> VirtualMbusMeter:
    """A heat meter (medium 0x04) with two telegrams: current values, then historic and service data."""
    current = b"".join(
        [
            record(0xC, b"\x06", bcd(energy_kwh, 8)),  # energy, kWh
            record(0xC, b"\x14", bcd(456789, 8)),  # volume, 0.01 m3
            record(0xB, b"\x2d", bcd(123, 6)),  # power, 100 W
            record(0xB, b"\x3b", bcd(1234, 6)),  # volume flow, l/h
            record(0xA, b"\x5a", bcd(705, 4)),  # flow temperature, 0.1 °C
            record(0xA, b"\x5e", bcd(412, 4)),  # return temperature, 0.1 °C
            record(0xA, b"\x62", bcd(293, 4)),  # temperature difference, 0.1 K
            record(0x4, b"\x6d", type_f(2024, 3, 15, 13, 45)),  # date and time
        ]
    )
    historic = b"".join(
        [
            record(0xC, b"\x06", bcd(energy_kwh - 1000, 8), storage=1),
            record(0x2, b"\x6c", type_g(2023, 12, 31), storage=1),
            record(0xC, b"\x78", bcd(int(ident), 8)),  # fabrication number
            record(0x1, b"\xfd\x17", b"\x00"),  # error flags
            record(
                0x4, b"\x06", (energy_kwh // 2).to_bytes(4, "little"), function=1, tariff=1
            ),  # max, tariff 1
        ]
    )
    return VirtualMbusMeter(primary, ident, "KAM", 0x1B, 0x04, [current, historic])


def water_meter(primary: int, ident: str, volume_l: int = 98765) -> VirtualMbusMeter:
    """A water meter (medium 0x07) answering in one telegram."""
    records = b"".join(
        [
            record(0x4, b"\x13", volume_l.to_bytes(4, "little")),  # volume, l
            record(0x4, b"\x93\x3b", (volume_l // 10).to_bytes(4, "little")),  # volume, only if positive
            record(0x2, b"\x6c", type_g(2024, 1, 1), storage=1),
            record(0x4, b"\x13", max(0, volume_l - 5000).to_bytes(4, "little"), storage=1),
            record(0x4, b"\x6d", type_f(2024, 3, 15, 13, 45)),
            record(0x2, b"\xfd\x74", (3650).to_bytes(2, "little")),  # remaining battery, days
        ]
    )
    return VirtualMbusMeter(primary, ident, "ZRI", 0x01, 0x07, [records])


def default_meters() -> list[VirtualMbusMeter]:
    return [heat_meter(1, "12345678"), water_meter(2, "12345699"), water_meter(5, "87654321", 4242)]


def _collide(answers: list[bytes]) -> bytes:
    """Simultaneous answers as the bus carries them: a 0 bit wins, idle (beyond an answer) is 1."""
    size = max(len(a) for a in answers)
    out = bytearray(b"\xff" * size)
    for answer in answers:
        for i, byte in enumerate(answer):
            out[i] &= byte
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the bus carries back for one request: ``data`` (None: silence), and the rate the answering
    meters listen at afterwards when the request switched it (``switch_to``)."""

    data: bytes | None
    switch_to: int | None = None


_READ_SIZE: Final = 512


class MbusBusSimulator(LoopbackServer):
    """Serves one virtual bus on ``host:port`` (0: a free port, in :attr:`port`), and on serial lines
    with :meth:`serve_fd`; each TCP connection or line is a master on the same bus.

    ``converter_baudrate``/``converter_follows``: the TCP converter's bus-side rate, and whether it
    follows a meter's baud-rate switch (module docstring).
    """

    def __init__(self, meters: list[VirtualMbusMeter] | None = None, host: str = "127.0.0.1",
                 port: int = 0, *, converter_baudrate: int = DEFAULT_BAUDRATE,
                 converter_follows: bool = False) -> None:  # fmt: skip
        super().__init__(host, port)
        self.meters = default_meters() if meters is None else meters
        self.converter_baudrate, self.converter_follows = converter_baudrate, converter_follows

    def handle(self, frame: MbusFrame, baudrate: int | None = None) -> bytes | None:
        """The bytes the bus carries back for one request frame (sans-IO), ``None`` for silence.

        ``baudrate``: the rate the frame was sent at; only meters listening at it hear it (None:
        every meter hears, the rate is not modelled)."""
        return self.answer(frame, baudrate).data

    def answer(self, frame: MbusFrame, baudrate: int | None = None) -> Answer:
        """:meth:`handle` with the rate the answering meters switched to, if the frame asked that."""
        listening = [m for m in self.meters if baudrate is None or m.baudrate == baudrate]
        addr, c = frame.address, frame.control
        if frame.kind is FrameKind.SHORT and c == C_SND_NKE:
            hit = self._addressed(addr, listening)
            for meter in hit:
                meter.reset()
                if addr == ADDRESS_NETWORK:
                    meter.selected = False
            return self._acks(addr, hit)
        if frame.kind is FrameKind.SHORT and c & ~FCB == C_REQ_UD2:
            hit = self._addressed(addr, listening)
            answers = [m.respond_ud2(bool(c & FCB)) for m in hit]
            return Answer(_collide(answers) if answers else None)
        if frame.kind not in (FrameKind.LONG, FrameKind.CONTROL) or c & ~FCB != C_SND_UD:
            return Answer(None)
        if addr == ADDRESS_NETWORK and frame.ci == CI_SELECT and len(frame.data) == 8:
            hit = [m for m in listening if m.matches(frame.data)]
            for meter in listening:
                meter.selected = meter in hit
            return Answer(_collide([bytes([ACK])] * len(hit)) if hit else None)
        if frame.ci == CI_DATA_SEND and frame.data[:2] == b"\x01\x7a" and len(frame.data) == 3:
            hit = self._addressed(addr, listening)
            for meter in hit:
                meter.primary = frame.data[2]
            return Answer(bytes([ACK]) if len(hit) == 1 else None)
        if frame.ci == CI_DATA_SEND:
            hit = self._addressed(addr, listening)
            results = [(m, m.set_clock(frame.data)) for m in hit]
            if any(result is not None for _, result in results):  # a time set: those that took it E5
                return self._acks(addr, [m for m, result in results if result])
        if frame.ci == CI_APPLICATION_RESET and len(frame.data) <= 1:
            hit = self._addressed(addr, listening)
            for meter in hit:
                meter.reset()
            return self._acks(addr, hit)
        rate = baudrate_of_ci(frame.ci)
        if rate is not None and not frame.data:
            hit = self._addressed(addr, listening)
            for meter in hit:  # they acknowledge at the old rate, then listen at the new one
                meter.baudrate = rate
            answer = self._acks(addr, hit)
            return Answer(answer.data, rate if hit else None)
        return Answer(None)

    @staticmethod
    def _acks(addr: int, hit: list[VirtualMbusMeter]) -> Answer:
        """E5 from every meter hit (colliding into one E5), nothing for broadcast 255 or nobody."""
        if addr == ADDRESS_BROADCAST_NO_REPLY or not hit:
            return Answer(None)
        return Answer(_collide([bytes([ACK])] * len(hit)))

    def _addressed(self, addr: int, listening: list[VirtualMbusMeter]) -> list[VirtualMbusMeter]:
        if addr == ADDRESS_NETWORK:
            return [m for m in listening if m.selected]
        if addr in (ADDRESS_BROADCAST_REPLY, ADDRESS_BROADCAST_NO_REPLY):
            return list(listening)
        return [m for m in listening if m.primary == addr]

    async def serve_fd(self, fd: int) -> None:
        """Serve the bus on the open serial descriptor ``fd`` (a tty, or a pty master in tests).

        Takes ownership of ``fd``; returns at end of file or when the line fails (a pty master reads
        EIO once no process holds the slave open), runs until cancelled otherwise. The tty's speed is
        the rate each frame is taken to have been sent at; a switch sets it to the new rate after the
        E5 has been written.
        """
        stream = FdStream(fd)
        parser = FrameStreamParser()
        try:
            while data := await stream.read(_READ_SIZE):
                rate = tty_baudrate(fd)
                for frame in parser.feed(data):
                    answer = self.answer(frame, rate)
                    if answer.data:
                        stream.write(answer.data)
                        await stream.drain()
                    if answer.switch_to is not None:
                        _set_speed(fd, answer.switch_to)
        except OSError:
            pass  # the line went away: stop answering, as the bus would
        finally:
            stream.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = FrameStreamParser()
        rate = self.converter_baudrate
        while data := await reader.read(_READ_SIZE):
            for frame in parser.feed(data):
                answer = self.answer(frame, rate)
                if answer.data:
                    writer.write(answer.data)
                    await writer.drain()
                if answer.switch_to is not None and self.converter_follows:
                    rate = answer.switch_to


def _set_speed(fd: int, baudrate: int) -> None:
    """Both speeds of the tty at ``fd`` to ``baudrate``, at once (the E5 is already in the pty)."""
    speed = serial_speed(baudrate)
    attributes = termios.tcgetattr(fd)
    attributes[4] = attributes[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attributes)
