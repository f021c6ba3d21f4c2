"""The head-end's IEC 62056-21 pull driver: each round takes one data readout of every such meter.

A meter is read when its ``protocol`` is ``iec62056-21``, it is active, and its communication device
(the RS-485/optical-to-TCP converter) has an address ``iec+tcp://host:port`` with an optional query:

- ``address=<device address>``: sent in the sign-on ``/?<address>!``. Several meters on one RS-485
  line behind one converter share ``host:port`` and are told apart by it, so on a shared converter
  every meter needs one (a meter without is skipped with the reason: ``/?!`` would make every meter
  on the line answer at once). Meters of one converter are read one after the other, since the line
  carries one sign-on at a time; converters are read in parallel (as the M-Bus collector does per bus).
- ``baud=<rate>``: the rate the converter's serial side is fixed at (300 by default, as every sign-on
  starts; another mode C rate for meters configured to run at it), and the option select asks the
  meter to stay there.
- ``switch=1``: the converter follows the meter's baud switch by itself; the readout then runs at the
  highest rate both offer, capped by ``baud=`` when given.

Each readout becomes one ReadingBatch (source ``iec62056-21``). Every current numeric data set becomes
a register series on a channel named by its OBIS code as the readout parser names it, group F left
out (``1.8.0`` and ``1-0:1.8.0`` are both ``1-0:1.8.0``; ``C.1.0`` would be ``0-0:96.1.0``), in the
parser's base units (Wh, W, V, A, varh ...; a unit the parser does not scale is kept as the meter
wrote it). Text values (serial numbers, clock, error register) are not readings. When a code appears
twice in one readout, the first data set is kept: a channel holds one value per read.

Why the read time and not the meter's ``0.9.2``/``0.9.1``: the head-end clock is synchronised and its
zone known; the meter's clock is a local time without zone or daylight-saving flag, usually never
synchronised on these legacy meters, and says when the meter printed its clock, not when the
registers were frozen. Values are stamped with the time of the read, as for Modbus and M-Bus.

Why historic values are skipped: a billing-period value (``1.8.0*12``, or ``1.8.0&12`` which names no
OBIS code) is the register as it was at the end of period F, a past date the readout gives at best as
another data set (``0.1.2*F``). Stamped with the read time, on its own channel or not, it would be a
wrong point in a series; the billing work that needs period values takes them with their dates.

The identity check (it protects against two meters wired to each other's addresses, and a value
stored on the wrong account): the meter's serial number data set ``C.1.0`` (``0-0:96.1.0``) and its
identification number ``0.0.0`` are compared with the registered serial, ignoring case, surrounding
spaces and leading zeros (meters pad their numbers to the display width); one of them must match. A
meter that reports neither must name the serial in its identification line (``/XXXZ<ident>``), else
it cannot be told from another meter and fails too. A failure is that meter's only
(:class:`IecIdentityMismatch` in the round's report); its values are not published.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine

from openami.bus.base import Publisher
from openami.bus.messages import Series
from openami.drivers.iec62056_21.client import read_tcp
from openami.drivers.iec62056_21.errors import Iec62056DriverError
from openami.hes.rounds import MeterOutcome, RoundReport, publish_read
from openami.hes.targets import MeterRow, load_targets
from openami.protocols.iec62056_21 import MODE_C_BAUDRATES, Iec62056Error, Readout

__all__ = [
    "IEC_PROTOCOL",
    "SOURCE",
    "IecCollector",
    "IecIdentityMismatch",
    "IecTarget",
    "check_identity",
    "load_iec_targets",
    "register_values",
    "target_from_row",
]

log = logging.getLogger(__name__)

IEC_PROTOCOL: Final = "iec62056-21"
SOURCE: Final = "iec62056-21"
DEFAULT_BAUDRATE: Final = 300
MAX_BAUDRATE: Final = max(MODE_C_BAUDRATES.values())
_DEVICE_ADDRESS = re.compile(r"[0-9A-Za-z ]{1,32}")
_MAX_UNIT: Final = 16
"""Longest unit a channel keeps (the bus message's limit); a longer one is no unit we know."""


class IecIdentityMismatch(Exception):
    """The meter that answered is not the registered one (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class IecTarget:
    tenant: str
    serial: str
    host: str
    port: int
    address: str = ""
    """The device address of the sign-on; empty: ``/?!``, for a meter alone on its converter."""
    baudrate: int | None = None
    """``baud=``: the converter's fixed rate, or with ``switch`` the highest rate to switch to."""
    switch: bool = False

    @property
    def line_baudrate(self) -> int:
        """The rate of the sign-on: 300 on a converter that follows the switch, else its fixed rate."""
        return DEFAULT_BAUDRATE if self.switch or self.baudrate is None else self.baudrate

    @property
    def max_baudrate(self) -> int:
        return self.baudrate or MAX_BAUDRATE

    @property
    def where(self) -> str:
        """The meter's place, for messages: ``host:port`` and its device address."""
        return f"{self.host}:{self.port}" + (f" address {self.address!r}" if self.address else "")

    async def read(self, timeout_s: float, readout_s: float = 120.0) -> Readout:
        """One readout of the meter, signed on as its converter needs (the head-end's reads and the
        gateway's clock checks both come here). ``timeout_s`` bounds the connection and each answer."""
        return await read_tcp(
            self.host,
            self.port,
            address=self.address,
            switch_baudrate=self.switch,
            max_baudrate=self.max_baudrate,
            baudrate=self.line_baudrate,
            connect_s=timeout_s,
            answer_s=timeout_s,
            readout_s=readout_s,
        )


def _endpoint(address: str) -> tuple[str, int, str, int | None, bool]:
    parts = urlsplit(address.strip())
    if parts.scheme != "iec+tcp" or not parts.hostname or parts.port is None:
        raise ValueError(f"{address!r}: expected iec+tcp://host:port[?address=ID&baud=N&switch=1]")
    query = parse_qs(parts.query, keep_blank_values=True)
    device = query["address"][-1] if "address" in query else ""
    if device and not _DEVICE_ADDRESS.fullmatch(device):
        raise ValueError(f"{address!r}: a device address is 1..32 digits, letters or spaces")
    baud = query["baud"][-1] if "baud" in query else None
    if baud is not None and (not baud.isdigit() or int(baud) not in MODE_C_BAUDRATES.values()):
        rates = ", ".join(map(str, MODE_C_BAUDRATES.values()))
        raise ValueError(f"{address!r}: baud must be one of {rates}")
    switch = query["switch"][-1] if "switch" in query else "0"
    if switch not in ("0", "1"):
        raise ValueError(f"{address!r}: switch must be 0 or 1")
    return parts.hostname, parts.port, device, None if baud is None else int(baud), switch == "1"


def target_from_row(row: MeterRow) -> IecTarget:
    """The target of one meter row; ``ValueError`` naming the problem when its address is unusable.

    A meter without a device address on a shared converter is refused by :func:`load_iec_targets`,
    which sees every row; callers building targets one by one must check that themselves."""
    host, port, device, baud, switch = _endpoint(row.address)
    return IecTarget(row.tenant, row.serial, host, port, device, baud, switch)


def load_iec_targets(
    engine: Engine, meter_ids: list[int] | None = None
) -> tuple[list[IecTarget], list[tuple[str, str]]]:
    """The IEC 62056-21 meters to read (all, or only ``meter_ids``), and (serial, reason) for those
    that cannot be. Blocking.

    Besides addresses that do not parse, a meter without a device address on a converter it shares
    with other meters is skipped: its sign-on ``/?!`` would be answered by every meter on the line.
    Telling that needs every meter on record, so a batch of ``meter_ids`` loads them all only when one
    of its own lacks a device address (meters with one are read whatever else hangs on the line).
    """
    targets, skipped = load_targets(engine, IEC_PROTOCOL, target_from_row, meter_ids=meter_ids)
    everyone = targets
    if meter_ids is not None and any(not target.address for target in targets):
        everyone, _ = load_targets(engine, IEC_PROTOCOL, target_from_row)
    sharing: dict[tuple[str, int], int] = defaultdict(int)
    for target in everyone:
        sharing[target.host, target.port] += 1
    kept = []
    for target in targets:
        if not target.address and sharing[target.host, target.port] > 1:
            skipped.append(
                (
                    target.serial,
                    f"{target.host}:{target.port} is shared by {sharing[target.host, target.port]} meters:"
                    " each needs ?address=",
                )
            )
        else:
            kept.append(target)
    return kept, skipped


def register_values(readout: Readout) -> list[tuple[str, Decimal, str]]:
    """(channel code, value, unit) of the current numeric data sets, in readout order (module
    docstring: historic, unnamed and text data sets are left out, a repeated code keeps its first)."""
    found: list[tuple[str, Decimal, str]] = []
    seen: set[str] = set()
    for ds in readout.datasets:
        obis, value, unit = ds.obis, ds.value, ds.unit
        if obis is None or obis.f != 255 or not isinstance(value, Decimal) or not unit:
            continue
        if len(unit) > _MAX_UNIT:
            continue
        code = obis.reduced
        if code in seen:
            continue
        seen.add(code)
        found.append((code, value, unit))
    return found


def _same_number(reported: str, serial: str) -> bool:
    a, b = reported.strip().casefold(), serial.strip().casefold()
    return a == b or (a.lstrip("0") == b.lstrip("0") and a.lstrip("0") != "")


def check_identity(readout: Readout, serial: str) -> None:
    """Raise :class:`IecIdentityMismatch` unless the readout names ``serial`` (module docstring)."""
    reported = [
        ds.value.strip()
        for ds in readout.datasets
        if ds.obis is not None
        and ds.obis.f == 255
        and (ds.obis.c, ds.obis.d, ds.obis.e) in ((96, 1, 0), (0, 0, 0))
        and isinstance(ds.value, str)
        and ds.value.strip()
    ]
    if reported:
        if not any(_same_number(number, serial) for number in reported):
            names = ", ".join(repr(n) for n in dict.fromkeys(reported))
            raise IecIdentityMismatch(f"the meter reports serial {names}, not {serial!r}")
        return
    ident = readout.identification
    text = "" if ident is None else ident.ident
    if serial.strip().casefold() not in text.casefold() or not serial.strip():
        raise IecIdentityMismatch(
            f"the meter reports no serial (C.1.0, 0.0.0) and its identification {text!r} does not"
            f" name {serial!r}"
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class IecCollector:
    """Reads IEC 62056-21 meters, one at a time per converter, and publishes their current registers.

    ``timeout_s`` bounds the connection and every silence of the meter (the standard gives it 1.5 s to
    answer a sign-on); ``readout_s`` the whole readout, which at 300 baud takes about 35 ms a character.
    """

    def __init__(
        self,
        engine: Engine | None,
        bus: Publisher,
        *,
        timeout_s: float = 3.0,
        readout_s: float = 120.0,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine, self._bus = engine, bus
        self.timeout_s, self.readout_s = timeout_s, readout_s
        self._now = now

    async def collect_all(self) -> RoundReport:
        if self._engine is None:
            raise RuntimeError("collect_all needs the store's engine; without one, call collect(targets)")
        targets, skipped = await asyncio.to_thread(load_iec_targets, self._engine)
        for serial, reason in skipped:
            log.warning("IEC 62056-21 meter %s skipped: %s", serial, reason)
        return await self.collect(targets)

    async def collect(self, targets: Sequence[IecTarget]) -> RoundReport:
        started = time.perf_counter()
        report = RoundReport(meters=len(targets))
        converters: dict[tuple[str, int], list[IecTarget]] = defaultdict(list)
        for target in targets:
            converters[target.host, target.port].append(target)

        async def one_converter(members: list[IecTarget]) -> None:
            for target in members:  # one sign-on at a time on a line
                report.add(await self._read(target))

        await asyncio.gather(*(one_converter(members) for members in converters.values()))
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    async def _read(self, target: IecTarget) -> MeterOutcome:
        outcome = MeterOutcome(target.serial)
        now = self._now()
        try:
            readout = await target.read(self.timeout_s, self.readout_s)
            check_identity(readout, target.serial)
        except (Iec62056DriverError, Iec62056Error, OSError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            return outcome
        except IecIdentityMismatch as exc:
            outcome.error = f"{type(exc).__name__}: {target.where}: {exc}"
            return outcome
        series = [
            Series(
                meter=target.serial, channel=code, unit=unit, kind="register", points=[(now, float(value), 0)]
            )
            for code, value, unit in register_values(readout)
        ]
        await publish_read(self._bus, SOURCE, target.tenant, target.serial, now, series)
        outcome.ok, outcome.readings = True, len(series)
        return outcome
