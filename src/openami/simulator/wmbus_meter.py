"""Simulated OMS wireless M-Bus meters, a receiver stick that hears them, and a gateway that forwards them.

Why: the head-end's wM-Bus path (receiver driver, line formats, key vault, ingest) is only tested for real
against something that sends real telegrams over real sockets, ttys and brokers. Every telegram here is
built by :func:`openami.protocols.wmbus.encode.encode_telegram`, so it is laid out as the standard says
and read back by the same decoder the head-end uses.

- :class:`SimulatedWmbusMeter`: an OMS water or heat meter with its own id, manufacturer, version and AES
  key. Its registers follow the :class:`~openami.simulator.consumption.ConsumptionModel` (a pure
  function of seed and time, so a test can predict every value), interpolated inside the quarter hour.
  It sends an installation telegram (SND-IR) when started and then one SND-NR every ``interval_s`` give
  or take ``jitter_s`` (real T1 meters: about 8 to 16 s; a test uses milliseconds), with security mode 5
  (the default when it has a key), 7 or none. An alarm (:data:`ALARM_FLAGS`: ``leak``, ``burst``, ...)
  sets the application status "abnormal condition" in the TPL status byte (``low_battery`` sets "power
  low" instead) and its bit in the error-flags record; the bit values are this simulator's own, as
  error flags are manufacturer-specific.
- :class:`SimulatedReceiver`: prints one line per telegram heard, in a format
  :func:`~openami.protocols.wmbus.parse_line` reads (``hex``: leading RSSI in dBm then the telegram;
  ``rtl-wmbus``: its semicolon fields), CRCs removed as most sticks do (or kept), to every TCP client
  (a stick exposed by ser2net) and every pty it opened (the stick's own tty). A client that does not
  read loses lines, as a real serial port overruns; nobody connected means nobody hears.
- :class:`SimulatedWmbusGateway`: the same lines, batched, published with QoS 1 on
  ``{prefix}/<tenant>/gw/<gateway>/wmbus`` where the head-end's MQTT listener takes them.

A meter belongs to one receiver or gateway: each runs the transmit loops of its own meters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tty
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

import aiomqtt

from openami.drivers.mqtt_json import UPLINK_QOS, uplink_topic
from openami.drivers.mqtt_json.topics import WMBUS_LEAF
from openami.protocols.wmbus.encode import (
    C_SND_IR,
    C_SND_NR,
    DF_INT16,
    STATUS_ALARM,
    STATUS_POWER_LOW,
    SecurityMode,
    date_record,
    date_time_record,
    encode_telegram,
    error_flags_record,
    make_address,
    number_record,
)
from openami.protocols.wmbus.link import Address, strip_crc_format_a, strip_crc_format_b
from openami.simulator.consumption import EPOCH_START, INTERVAL_S, ConsumptionModel, temperature_c

__all__ = [
    "ALARM_FLAGS",
    "DEVICE_TYPES",
    "LineFormat",
    "RadioFrame",
    "RadioMode",
    "SimulatedReceiver",
    "SimulatedWmbusGateway",
    "SimulatedWmbusMeter",
    "WmbusMedium",
    "format_line",
]

WmbusMedium = Literal["water", "heat"]
RadioMode = Literal["T1", "C1"]
LineFormat = Literal["hex", "rtl-wmbus"]

#: Device type byte of the A field per medium (EN 13757-7 table 12).
DEVICE_TYPES: Final[dict[WmbusMedium, int]] = {"water": 0x07, "heat": 0x04}
#: Error-flags bits this simulator's meters use (error flags are manufacturer-specific).
ALARM_FLAGS: Final[dict[str, int]] = {
    "leak": 0x01,
    "burst": 0x02,
    "backflow": 0x04,
    "dry": 0x08,
    "tamper": 0x10,
    "low_battery": 0x20,
}
_QUARTER: Final = timedelta(seconds=INTERVAL_S)
_WH_PER_LITRE_KELVIN: Final = 1.163  # heat carried by a litre of water per kelvin of spread
_DESIGN_SPREAD_K: Final = 20.0
_MAX_PENDING_BYTES: Final = 64 * 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RadioFrame:
    """One telegram on the air: with its CRCs (frame format A in T1 mode, B in C1), and how loud it was."""

    frame: bytes
    mode: RadioMode
    rssi_dbm: int
    address: Address
    sent_at: datetime


class SimulatedWmbusMeter:
    """One OMS meter (see the module docstring). ``ident`` is the 8-digit id printed on the meter.

    ``security_mode`` defaults to 5 with a ``key`` and 0 without one; ``seed`` (default: the id) fixes
    its consumption, its first access number and its jitter; ``clock`` is when "now" is (UTC, at or after
    the consumption model's epoch). The meter's clock record is sent in UTC.
    """

    def __init__(
        self,
        ident: str,
        medium: WmbusMedium = "water",
        *,
        key: bytes | None = None,
        security_mode: SecurityMode | None = None,
        manufacturer: str = "OAM",
        version: int = 0x01,
        seed: int | None = None,
        interval_s: float = 12.0,
        jitter_s: float = 4.0,
        mode: RadioMode = "T1",
        leak_l_per_h: float = 0.0,
        rssi_dbm: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if medium not in DEVICE_TYPES:
            raise ValueError(f"simulated wM-Bus meters are {sorted(DEVICE_TYPES)}, not {medium!r}")
        if interval_s <= 0 or not 0 <= jitter_s < interval_s:
            raise ValueError("interval_s must be positive and jitter_s smaller than it")
        mode_wanted: SecurityMode = (5 if key is not None else 0) if security_mode is None else security_mode
        if mode_wanted and key is None:
            raise ValueError(f"security mode {mode_wanted} needs a key")
        self.address = make_address(manufacturer, ident, version, DEVICE_TYPES[medium])
        self.ident = ident
        self.medium: WmbusMedium = medium
        self.key = key
        self.security_mode: SecurityMode = mode_wanted
        self.interval_s = interval_s
        self.jitter_s = jitter_s
        self.mode: RadioMode = mode
        self.seed = int(ident, 16) if seed is None else seed
        self.model = ConsumptionModel(medium, self.seed, leak_l_per_h)
        self._rng = random.Random(self.seed)
        self.rssi_dbm = rssi_dbm if rssi_dbm is not None else self._rng.randint(-95, -55)
        self.access_number = self._rng.randrange(256)
        self.message_counter = self._rng.randrange(1, 1 << 16)
        self.alarms: set[str] = set()
        self.sent = 0
        self._clock = clock

    @property
    def link_address(self) -> bytes:
        """The 8 bytes the key vault files this meter's key under (M, id, version, device type)."""
        return self.address.to_bytes()

    def set_alarm(self, name: str, active: bool = True) -> None:
        """Raise (or clear) an alarm; it shows in every telegram from the next one on."""
        if name not in ALARM_FLAGS:
            raise ValueError(f"unknown alarm {name!r}; known: {sorted(ALARM_FLAGS)}")
        if active:
            self.alarms.add(name)
        else:
            self.alarms.discard(name)

    @property
    def error_flags(self) -> int:
        flags = 0
        for name in self.alarms:
            flags |= ALARM_FLAGS[name]
        return flags

    @property
    def status(self) -> int:
        """The TPL status byte: "abnormal condition" for an alarm, "power low" for a low battery."""
        status = STATUS_POWER_LOW if "low_battery" in self.alarms else 0
        if self.alarms - {"low_battery"}:
            status |= STATUS_ALARM
        return status

    def register(self, at: datetime) -> tuple[int, int]:
        """(register, consumption of the current quarter hour) at ``at``, in thousandths of the unit
        (litres for water, Wh for heat); the register moves on linearly inside the quarter hour."""
        if at.tzinfo is None:
            raise ValueError("meter clocks are timezone-aware")
        quarters = int((at - EPOCH_START).total_seconds() // INTERVAL_S)
        start = EPOCH_START + quarters * _QUARTER
        register, (count,) = self.model.counts(start, start + _QUARTER)
        fraction = (at - start).total_seconds() / INTERVAL_S
        return register + int(count * fraction), count

    def records(self, at: datetime) -> bytes:
        """The EN 13757-3 records of one telegram at ``at`` (current values, then the month-start values)."""
        register, quarter = self.register(at)
        month_start = at.astimezone(UTC).date().replace(day=1)
        stored = self.model.register_at_midnight(month_start)
        due_date = month_start - timedelta(days=1)
        if self.medium == "water":
            records = [
                number_record("volume", register, exponent=-3),  # litres
                number_record("volume_flow", min(quarter * 4, 0x7FFF), exponent=-3, data_field=DF_INT16),
            ]
            history = number_record("volume", stored, exponent=-3, storage=1)
        else:
            power_w = quarter * 4  # Wh in a quarter hour, times four: mean W
            flow_c, return_c = self._temperatures(at.date(), power_w)
            per_litre = _WH_PER_LITRE_KELVIN * _DESIGN_SPREAD_K
            records = [
                number_record("energy", register, exponent=0),  # Wh
                number_record("volume", int(register / per_litre), exponent=-3),
                number_record("power", power_w, exponent=0),
                number_record("volume_flow", int(power_w / per_litre), exponent=-3),
                number_record("flow_temperature", flow_c, exponent=-1, data_field=DF_INT16),
                number_record("return_temperature", return_c, exponent=-1, data_field=DF_INT16),
            ]
            history = number_record("energy", stored, exponent=0, storage=1)
        records += [
            date_time_record(at.astimezone(UTC)),
            error_flags_record(self.error_flags),
            history,
            date_record(due_date, storage=1),
        ]
        return b"".join(records)

    @staticmethod
    def _temperatures(day: date, power_w: int) -> tuple[int, int]:
        """Flow and return temperature in 0.1 °C: a heating curve over the day's outdoor temperature."""
        flow = min(75.0, max(35.0, 55.0 - (temperature_c(day) - 5.0)))
        spread = _DESIGN_SPREAD_K if power_w else 3.0
        return round(flow * 10), round((flow - spread) * 10)

    def telegram(self, at: datetime | None = None, *, installation: bool = False) -> RadioFrame:
        """The next telegram (access number and, in mode 7, message counter move on by one)."""
        now = at or self._clock()
        self.access_number = (self.access_number + 1) & 0xFF
        if self.security_mode == 7:
            self.message_counter = (self.message_counter + 1) & 0xFFFF_FFFF
        frame = encode_telegram(
            self.address,
            self.records(now),
            c_field=C_SND_IR if installation else C_SND_NR,
            access_number=self.access_number,
            status=self.status,
            security_mode=self.security_mode,
            key=self.key,
            message_counter=self.message_counter,
            frame_format="A" if self.mode == "T1" else "B",
        )
        self.sent += 1
        rssi = self.rssi_dbm + self._rng.randint(-2, 2)
        return RadioFrame(frame, self.mode, rssi, self.address, now)

    def next_interval(self) -> float:
        return self.interval_s + self._rng.uniform(-self.jitter_s, self.jitter_s)

    async def run(
        self, hear: Callable[[RadioFrame], None], *, count: int | None = None, installation: bool = True
    ) -> int:
        """Transmit to ``hear``: an installation telegram at once (unless told not to), then ``count`` data
        telegrams (None: until cancelled), one per interval. Returns how many telegrams were sent."""
        sent = 0
        if installation:
            hear(self.telegram(installation=True))
            sent += 1
        data = 0
        while count is None or data < count:
            await asyncio.sleep(self.next_interval())
            hear(self.telegram())
            sent += 1
            data += 1
        return sent


def format_line(frame: RadioFrame, line_format: LineFormat = "hex", *, strip_crc: bool = True) -> str:
    """The line a receiver prints for ``frame`` (no line end).

    ``strip_crc``: the receiver checks and removes the block CRCs (most sticks); otherwise the frame is
    printed as received, a C1 format-B frame behind the ``54 3D`` sync tail that says so.
    """
    data = frame.frame
    if strip_crc:
        data = strip_crc_format_a(data) if frame.mode == "T1" else strip_crc_format_b(data)
    elif frame.mode == "C1":
        data = b"\x54\x3d" + data
    if line_format == "hex":
        return f"{frame.rssi_dbm} {data.hex().upper()}"
    at = frame.sent_at.astimezone(UTC)
    stamp = at.strftime("%Y-%m-%d %H:%M:%S") + f".{at.microsecond // 1000:03d}"
    # rtl-wmbus fields: mode; CRC ok; 3-out-of-6 ok; time; packet RSSI; current RSSI; link id; telegram
    return f"{frame.mode};1;1;{stamp};{frame.rssi_dbm};{frame.rssi_dbm};{frame.address.id};0x{data.hex()}"


class _Transmitters:
    """The transmit loops of a set of meters, started and cancelled together."""

    def __init__(self, meters: Iterable[SimulatedWmbusMeter]) -> None:
        self.meters = list(meters)
        self._tasks: list[asyncio.Task[int]] = []

    def start(self, hear: Callable[[RadioFrame], None]) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(meter.run(hear), name=f"wmbus-meter-{meter.ident}")
                for meter in self.meters
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _PtyOutput:
    """The stick's side of a pty: non-blocking writes to the master, bounded, overrun when nobody reads."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: bytes pass as the stick sends them
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.dropped = 0
        self._pending = bytearray()
        self._loop = asyncio.get_running_loop()
        self._watching = False

    def write(self, data: bytes) -> None:
        if len(self._pending) + len(data) > _MAX_PENDING_BYTES:
            self.dropped += 1
            return
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        try:
            while self._pending:
                del self._pending[: os.write(self.master, self._pending)]
        except BlockingIOError:
            pass
        except OSError:
            self._pending.clear()  # the pty is gone; nothing can be delivered any more
        if self._pending and not self._watching:
            self._loop.add_writer(self.master, self._flush)
            self._watching = True
        elif not self._pending and self._watching:
            self._loop.remove_writer(self.master)
            self._watching = False

    def close(self) -> None:
        if self._watching:
            self._loop.remove_writer(self.master)
            self._watching = False
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class SimulatedReceiver:
    """A receiver stick hearing ``meters``; see the module docstring. Use ``async with``.

    :meth:`serve_tcp` and :meth:`open_pty` add outputs; :meth:`write_line` and :meth:`write_raw` put
    arbitrary text on every output (a test's bad lines); :meth:`drop_connections` cuts every TCP client,
    as a restarting ser2net does.
    """

    def __init__(
        self,
        meters: Sequence[SimulatedWmbusMeter] = (),
        *,
        line_format: LineFormat = "hex",
        strip_crc: bool = True,
        line_end: bytes = b"\r\n",
    ) -> None:
        self.line_format: LineFormat = line_format
        self.strip_crc = strip_crc
        self.line_end = line_end
        self._meters = _Transmitters(meters)
        self._servers: list[asyncio.Server] = []
        self._clients: set[asyncio.StreamWriter] = set()
        self._ptys: list[_PtyOutput] = []
        self.lines_written = 0
        self.lines_dropped = 0

    @property
    def meters(self) -> list[SimulatedWmbusMeter]:
        return self._meters.meters

    @property
    def clients(self) -> int:
        """TCP clients connected right now."""
        return len(self._clients)

    async def __aenter__(self) -> SimulatedReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the meters' transmit loops."""
        self._meters.start(self.hear)

    async def stop(self) -> None:
        await self._meters.stop()
        for server in self._servers:
            server.close()
        self.drop_connections()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for pty in self._ptys:
            pty.close()
        self._ptys.clear()

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: a free port) and return the port; every client gets every line."""
        server = await asyncio.start_server(self._client, host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def open_pty(self) -> str:
        """A new pty whose slave side is the stick's tty; returns its path (``/dev/pts/N``)."""
        pty = _PtyOutput()
        self._ptys.append(pty)
        return pty.path

    def hear(self, frame: RadioFrame) -> None:
        """A telegram arrived over the air: print its line."""
        self.write_line(format_line(frame, self.line_format, strip_crc=self.strip_crc))

    def write_line(self, text: str) -> None:
        self.write_raw(text.encode("ascii", errors="replace") + self.line_end)
        self.lines_written += 1

    def write_raw(self, data: bytes) -> None:
        """Bytes as they are to every output (no line end added)."""
        for writer in list(self._clients):
            transport = writer.transport
            if transport.is_closing() or transport.get_write_buffer_size() > _MAX_PENDING_BYTES:
                self.lines_dropped += 1
                continue
            writer.write(data)
        for pty in self._ptys:
            pty.write(data)

    def drop_connections(self) -> int:
        """Close every TCP client connection; returns how many there were."""
        clients = list(self._clients)
        for writer in clients:
            writer.close()
        self._clients.clear()
        return len(clients)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while await reader.read(4096):
                pass  # a receiver takes no commands here; whatever the client sends is ignored
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


class SimulatedWmbusGateway:
    """A gateway with a receiver that forwards what it hears over MQTT, ``max_lines`` lines a message at
    most, at least every ``flush_s`` while it has lines. When the broker is slower than the meters, the
    oldest lines beyond ``10 * max_lines`` are dropped, as a gateway's bounded buffer would."""

    def __init__(
        self,
        gateway_id: str,
        tenant: str,
        meters: Sequence[SimulatedWmbusMeter],
        *,
        line_format: LineFormat = "hex",
        strip_crc: bool = True,
        max_lines: int = 50,
        flush_s: float = 1.0,
    ) -> None:
        if max_lines < 1 or flush_s <= 0:
            raise ValueError("max_lines must be at least 1 and flush_s positive")
        self.gateway_id = gateway_id
        self.tenant = tenant
        self.line_format: LineFormat = line_format
        self.strip_crc = strip_crc
        self.max_lines = max_lines
        self.flush_s = flush_s
        self._meters = _Transmitters(meters)
        self._pending: list[str] = []
        self._full = asyncio.Event()
        self.lines_dropped = 0
        self.messages_sent = 0

    @property
    def meters(self) -> list[SimulatedWmbusMeter]:
        return self._meters.meters

    def topic(self, prefix: str) -> str:
        return uplink_topic(prefix, self.tenant, self.gateway_id, WMBUS_LEAF)

    def hear(self, frame: RadioFrame) -> None:
        self._pending.append(format_line(frame, self.line_format, strip_crc=self.strip_crc))
        excess = len(self._pending) - 10 * self.max_lines
        if excess > 0:
            del self._pending[:excess]
            self.lines_dropped += excess
        if len(self._pending) >= self.max_lines:
            self._full.set()

    async def run(self, client: aiomqtt.Client, prefix: str, *, messages: int | None = None) -> int:
        """Run the meters and publish their lines through a connected ``client`` until ``messages`` have
        been sent (None: until cancelled); returns the messages sent."""
        topic = self.topic(prefix)
        sent = 0
        self._meters.start(self.hear)
        try:
            while messages is None or sent < messages:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_s):
                        await self._full.wait()
                self._full.clear()
                while self._pending and (messages is None or sent < messages):
                    chunk = self._pending[: self.max_lines]
                    del self._pending[: self.max_lines]
                    payload = ("\n".join(chunk) + "\n").encode("ascii")
                    await client.publish(topic, payload, qos=UPLINK_QOS)
                    sent += 1
                    self.messages_sent += 1
        finally:
            await self._meters.stop()
        return sent
