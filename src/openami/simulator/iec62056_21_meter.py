"""A virtual IEC 62056-21 meter: answers sign-ons with a realistic data readout over TCP or a pty.

Why: drivers and decoders of the legacy optical/RS-485 protocol need a counterpart that behaves like
a meter (identification, option select, BCC-framed data message) without hardware. The meter is an
Iskraemeco-like single-phase ``/ISK5ME382-1000`` by default: energy registers 1.8.0 (= 1.8.1 + 1.8.2)
and 2.8.0 grow with time at a constant power, instantaneous power 16.7.0, voltage 32.7.0 and current
31.7.0, the clock as date 0.9.2 and time 0.9.1, and the serial number C.1.0.

Protocol behaviour (sans-IO in :class:`MeterSession`): a request ``/?<addr>!`` whose address is empty or
the meter's is answered with the identification; in mode C the meter then waits for ``ACK 0 Z 0``
and sends the data message (at rate ``Z``: nothing to switch over TCP or a pty); in modes A and B the
data message follows the identification at once. Lines it does not understand are ignored, as a meter
on a shared bus ignores traffic not for it.

Programming mode (``ACK 0 Z 1``, :mod:`openami.protocols.iec62056_21.programming`) is refused with NAK
unless the meter has a ``password``: it then sends ``P0``, ACKs the right ``P1`` password (NAKs a wrong
one, and every write after it), and ACKs ``W1``/``W5`` writes to the time ``0.9.1`` and date ``0.9.2``,
which move :attr:`SimulatedIecMeter.clock_offset_s` (shown in the readout's 0.9.1/0.9.2 lines); a
write to any other address, or a malformed value, is answered ``(ERROR)``. ``B0`` ends the session.

Several meters on one line (an RS-485 multidrop bus behind one converter): :class:`BusSession` gives
every meter the bytes on the line. A meter answers only a sign-on with its own address; a sign-on
without an address (``/?!``) is answered only when the meter is alone on the line, since on a bus every
meter would answer it at once; a sign-on for another meter ends a meter's pending session. Two meters
given the same address answer together, and their answers run into each other as on the wire.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from openami.drivers.dlms.transport import ByteReader, ByteWriter, FdStream
from openami.protocols.iec62056_21.errors import DecodeError
from openami.protocols.iec62056_21.messages import (
    ACK,
    CRLF,
    MODE_B_BAUDRATES,
    NAK,
    SOH,
    Identification,
    Mode,
    encode_data_message,
    encode_identification,
    mode_c_char,
    parse_option_select,
    parse_request,
)
from openami.protocols.iec62056_21.programming import (
    DATE_ADDRESS,
    TIME_ADDRESS,
    Command,
    encode_command,
    parse_command,
    split_frame,
)
from openami.simulator.tcp_server import LoopbackServer

__all__ = [
    "BusSession",
    "IecMeterServer",
    "MeterSession",
    "SimulatedIecMeter",
    "serve_iec_fd",
    "serve_iec_stream",
]

_MAX_LINE: Final = 128
_MODE_A_CHAR: Final = "Z"
"""Any character outside the mode B and C tables says mode A; ``Z`` is unambiguous."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _kilo(value: float, places: int) -> str:
    quantum = Decimal(1).scaleb(-places)
    return str(Decimal(value).quantize(quantum, rounding=ROUND_HALF_EVEN))


class SimulatedIecMeter:
    """One meter. ``seed`` varies its registers and load; ``now`` is its clock (UTC; the readout shows it
    as the meter's local time, which for the simulator is UTC). ``password``: the programming mode
    password (None: programming refused); ``clock_offset_s``: how far the meter's clock is off ``now``."""

    def __init__(
        self,
        serial: str = "71234567",
        *,
        manufacturer: str = "ISK",
        ident: str = "ME382-1000",
        mode: Mode = "C",
        max_baudrate: int = 9600,
        address: str = "",
        seed: int = 0,
        now: Callable[[], datetime] = _utcnow,
        password: str | None = None,
        clock_offset_s: float = 0.0,
    ) -> None:
        if mode == "C":
            baud_char = mode_c_char(max_baudrate)
        elif mode == "B":
            baud_char = next((c for c, r in MODE_B_BAUDRATES.items() if r == max_baudrate), "")
            if not baud_char:
                raise ValueError(f"no mode B baud rate character for {max_baudrate}")
        else:
            baud_char = _MODE_A_CHAR
        self.identification = Identification(manufacturer, baud_char, ident)
        encode_identification(self.identification)  # refuse an identification no HHU could parse
        self.serial = serial
        self.mode = mode
        self.address = address
        self.now = now
        self.epoch = now()
        self.import_kw = 0.4 + (seed % 7) * 0.15
        self.export_kw = 0.05 * (seed % 3)
        self.base_import_kwh = 1000.0 + 37.5 * seed
        self.base_export_kwh = 10.0 * (seed % 5)
        self.night_share = 0.4
        self.password = password
        self.clock_offset_s = clock_offset_s
        self.clock_writes = 0

    def clock(self, at: datetime | None = None) -> datetime:
        """What the meter's clock shows at ``at`` (default now), to the microsecond."""
        return (at or self.now()) + timedelta(seconds=self.clock_offset_s)

    def write(self, address: str, value: str) -> bool:
        """A programming-mode write of ``address(value)``; False for anything but a valid time/date."""
        shown = self.clock()
        try:
            if address == TIME_ADDRESS and len(value) == 6:
                parsed = datetime.strptime(value, "%H%M%S")
                target = shown.replace(hour=parsed.hour, minute=parsed.minute, second=parsed.second)
                target = target.replace(microsecond=0)
            elif address == DATE_ADDRESS and len(value) == 6:
                parsed = datetime.strptime(value, "%y%m%d")
                target = shown.replace(year=parsed.year, month=parsed.month, day=parsed.day)
            else:
                return False
        except ValueError:
            return False
        self.clock_offset_s += (target - shown).total_seconds()
        self.clock_writes += 1
        return True

    def _hours(self, at: datetime) -> float:
        return max((at - self.epoch).total_seconds(), 0.0) / 3600.0

    def registers(self, at: datetime) -> dict[str, str]:
        """The data sets at ``at``: address -> value text with unit (ordered as in the readout)."""
        hours = self._hours(at)
        imported = self.base_import_kwh + self.import_kw * hours
        night = Decimal(_kilo(imported * self.night_share, 3))
        day = Decimal(_kilo(imported * (1 - self.night_share), 3))
        exported = self.base_export_kwh + self.export_kw * hours
        ripple = 0.05 * math.sin(at.timestamp() / 60.0)  # a little movement in the instantaneous values
        power = self.import_kw - self.export_kw
        voltage = 230.0 + 40.0 * ripple  # 228..232 V
        current = abs(power) * 1000 / voltage
        shown = self.clock(at)
        return {
            "C.1.0": self.serial,
            "0.0.0": self.serial,
            "F.F": "00000000",
            "0.9.1": shown.strftime("%H%M%S"),
            "0.9.2": shown.strftime("%y%m%d"),
            "1.8.0": f"{night + day:011.3f}*kWh",
            "1.8.1": f"{night:011.3f}*kWh",
            "1.8.2": f"{day:011.3f}*kWh",
            "2.8.0": f"{_kilo(exported, 3):0>11}*kWh",
            "16.7.0": f"{_kilo(power, 3):0>6}*kW",
            "32.7.0": f"{_kilo(voltage, 1):0>5}*V",
            "31.7.0": f"{_kilo(current, 2):0>6}*A",
        }

    def data_block(self, at: datetime | None = None) -> str:
        lines = [f"{address}({value})" for address, value in self.registers(at or self.now()).items()]
        return "\r\n".join([*lines, "!", ""])

    def data_message(self, at: datetime | None = None) -> bytes:
        """``STX data block ! CR LF ETX BCC`` at ``at`` (default: the meter's clock now)."""
        return encode_data_message(self.data_block(at))

    def session(self, *, shared: bool = False) -> MeterSession:
        return MeterSession(self, shared=shared)


class MeterSession:
    """The meter side of one line, sans-IO: :meth:`receive` bytes, get the bytes to answer.

    ``baudrate`` is the rate the meter would now talk at (300 after a sign-on, then the chosen one).
    ``shared``: other meters are on the line, so a sign-on without an address is not answered.
    """

    def __init__(self, meter: SimulatedIecMeter, *, shared: bool = False) -> None:
        self.meter = meter
        self.shared = shared
        self.baudrate = 300
        self.awaiting_option = False
        self.programming = False
        self.authorised = False
        self._buffer = bytearray()

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while self.programming and self._buffer[:1] == bytes([SOH]):
            end = split_frame(self._buffer)
            if end is None:
                break
            frame = bytes(self._buffer[:end])
            del self._buffer[:end]
            out += self._command(frame)
        while (end := self._buffer.find(CRLF)) >= 0:
            line = bytes(self._buffer[: end + 2])
            del self._buffer[: end + 2]
            out += self._line(line)
        if len(self._buffer) > _MAX_LINE:
            self._buffer.clear()  # noise without an end of line: drop it, as a meter's UART buffer would
        return bytes(out)

    def _line(self, line: bytes) -> bytes:
        start = line.find(b"/?")
        if start >= 0:
            return self._request(line[start:])
        if self.awaiting_option and line.find(b"\x06") >= 0:
            self.awaiting_option = False
            try:
                option = parse_option_select(line[line.find(b"\x06") :])
            except DecodeError:
                return b""
            if option.baudrate is None or option.mode not in ("0", "1"):
                return bytes([NAK])
            if option.mode == "1":
                if self.meter.password is None:
                    return bytes([NAK])
                self.baudrate = option.baudrate
                self.programming, self.authorised = True, False
                return encode_command(Command("P", "0", f"({self.meter.serial})"))
            self.baudrate = option.baudrate
            return self.meter.data_message()
        return b""

    def _command(self, frame: bytes) -> bytes:
        """One programming-mode command: a frame with a wrong BCC is NAKed, as the standard says."""
        try:
            command = parse_command(frame)
        except DecodeError:
            return bytes([NAK])
        if command.command == "B":
            self.programming = self.authorised = False
            return b""
        if command.command == "P" and command.type == "1":
            self.authorised = command.data == f"({self.meter.password})"
            return bytes([ACK if self.authorised else NAK])
        if not self.authorised:
            return bytes([NAK])
        if command.command == "W" and command.type in ("1", "5") and command.data is not None:
            address, _, rest = command.data.partition("(")
            if rest.endswith(")") and self.meter.write(address, rest[:-1]):
                return bytes([ACK])
        return encode_data_message("(ERROR)")

    def _request(self, line: bytes) -> bytes:
        try:
            address = parse_request(line)
        except DecodeError:
            return b""
        mine = address == self.meter.address if address else not self.shared
        self.programming = self.authorised = False
        if not mine:
            self.awaiting_option = False  # another meter's sign-on: whatever this one had is over
            return b""
        self.baudrate = 300
        meter = self.meter
        reply = encode_identification(meter.identification)
        if meter.mode == "C":
            self.awaiting_option = True
            return reply
        self.awaiting_option = False
        self.baudrate = meter.identification.baudrate or 300
        return reply + meter.data_message()


class BusSession:
    """The meters on one line, sans-IO (see the module docstring): every meter hears every byte."""

    def __init__(self, meters: Sequence[SimulatedIecMeter]) -> None:
        if not meters:
            raise ValueError("a line needs at least one meter")
        shared = len(meters) > 1
        self.sessions = [meter.session(shared=shared) for meter in meters]

    def receive(self, data: bytes) -> bytes:
        return b"".join(session.receive(data) for session in self.sessions)


Meters = SimulatedIecMeter | Sequence[SimulatedIecMeter]
"""One meter on a line, or several on one multidrop bus."""


def _as_list(meters: Meters) -> list[SimulatedIecMeter]:
    return [meters] if isinstance(meters, SimulatedIecMeter) else list(meters)


async def serve_iec_stream(meters: Meters, reader: ByteReader, writer: ByteWriter) -> None:
    """Answer as ``meters`` (one, or a bus of them) on one byte stream until end of stream; the caller
    closes it."""
    session = BusSession(_as_list(meters))
    while data := await reader.read(0x10000):
        reply = session.receive(data)
        if reply:
            writer.write(reply)
            await writer.drain()


async def serve_iec_fd(meters: Meters, fd: int) -> None:
    """Serve ``meters`` on the open serial descriptor ``fd`` (a tty, or a pty master in tests).

    Takes ownership of ``fd``; returns at end of file or when the line fails (a pty master reads EIO
    once no process holds the slave open), runs until cancelled otherwise.
    """
    stream = FdStream(fd)
    try:
        await serve_iec_stream(meters, stream, stream)
    except OSError:
        pass  # the line went away: stop answering, as a meter would
    finally:
        stream.close()


class IecMeterServer(LoopbackServer):
    """Serves one meter, or a multidrop bus of them, on a loopback TCP port, as an RS-485/optical-to-TCP
    converter would expose it (``port`` 0: the OS picks; read :attr:`port` after :meth:`start`). Every
    connection is a line of its own to the same meters."""

    def __init__(self, meters: Meters, host: str = "127.0.0.1", port: int = 0) -> None:
        self.meters = _as_list(meters)
        if not self.meters:
            raise ValueError("a converter needs at least one meter")
        self.meter = self.meters[0]
        super().__init__(host, port)
        self.port = port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_iec_stream(self.meters, reader, writer)
