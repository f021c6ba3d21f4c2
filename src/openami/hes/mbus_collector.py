"""The head-end's wired M-Bus pull driver: each round reads every M-Bus meter through its converter.

A meter is read when its ``protocol`` is ``mbus``, it is active, and its communication device has an
address naming the bus and the meter on it:

- ``mbus+tcp://host:port?primary=N`` or ``?secondary=12345678`` (the meter's 8-digit id): behind an
  M-Bus-to-TCP converter;
- ``mbus+serial:///dev/ttyUSB0?baud=2400&primary=N`` (or ``&secondary=``): behind a level converter
  on a local tty, 8E1 at ``baud`` (300..38400, default 2400: the rate the meter listens at; the
  collector does not switch rates).

Meters on one converter or tty share one bus, so they are read one after the other per bus while
buses are read in parallel. Whoever else drives a bus (the gateway's secondary-address search) takes the
collector's lock for it (:meth:`MbusCollector.bus_lock`), so it never talks over a read.

Each current value becomes a register reading on a channel named as for every bearer of M-Bus records
(:func:`openami.protocols.mbus.channels.channel_codes`: ``energy``, ``energy:t1``, ``power:maximum``,
``volume#2``), stamped with the time of the read. Historic values (storage > 0) are left for the billing
work that needs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine

from openami.bus.base import Publisher
from openami.bus.messages import Series
from openami.drivers.mbus.client import MbusClient, MbusSerialClient, MbusTcpClient
from openami.drivers.mbus.errors import MbusDriverError
from openami.hes.rounds import MeterOutcome, RoundReport, publish_read
from openami.hes.targets import MeterRow, load_targets
from openami.protocols.mbus import MbusError
from openami.protocols.mbus.channels import channel_codes
from openami.protocols.mbus.master import BAUDRATE_CI, DEFAULT_BAUDRATE, SecondaryAddress

__all__ = [
    "MBUS_PROTOCOL",
    "SOURCE",
    "MbusBus",
    "MbusCollector",
    "MbusTarget",
    "load_mbus_targets",
    "parse_bus",
    "target_from_row",
]

log = logging.getLogger(__name__)

MBUS_PROTOCOL: Final = "mbus"
SOURCE: Final = "mbus"


@dataclass(frozen=True, slots=True)
class MbusTarget:
    tenant: str
    serial: str
    host: str
    """The converter's host; empty for a meter on a local tty (:attr:`path`)."""
    port: int
    primary: int | None
    secondary: str | None
    path: str | None = None
    """The tty of an ``mbus+serial`` bus."""
    baudrate: int = DEFAULT_BAUDRATE
    """The rate the tty runs at for this meter (``mbus+serial`` only)."""

    @property
    def bus(self) -> str:
        """Which bus the meter is on: meters of one bus are read one after the other."""
        return self.line.bus

    @property
    def line(self) -> MbusBus:
        return MbusBus(self.host, self.port, self.path, self.baudrate)


@dataclass(frozen=True, slots=True)
class MbusBus:
    """One bus: behind a converter (``host``, ``port``) or on a local tty (``path`` at ``baudrate``)."""

    host: str
    port: int
    path: str | None = None
    baudrate: int = DEFAULT_BAUDRATE

    @property
    def bus(self) -> str:
        """The key of :meth:`MbusCollector.bus_lock` (and of :attr:`MbusTarget.bus`)."""
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    def client(self, timeout_s: float) -> MbusClient:
        """A master for this bus (not connected yet: use it with ``async with``)."""
        if self.path is not None:
            return MbusSerialClient(self.path, baudrate=self.baudrate, timeout=timeout_s)
        return MbusTcpClient(self.host, self.port, timeout=timeout_s)


def parse_bus(address: str) -> MbusBus:
    """The bus an ``mbus+tcp://`` or ``mbus+serial://`` URL names (meter options are not looked at);
    ``ValueError`` naming the problem."""
    bus, _ = _bus_and_query(address)
    return bus


def _bus_and_query(address: str) -> tuple[MbusBus, dict[str, list[str]]]:
    parts = urlsplit(address.strip())
    query = parse_qs(parts.query)
    path, baudrate = None, DEFAULT_BAUDRATE
    if parts.scheme == "mbus+tcp" and parts.hostname and parts.port is not None:
        host, port = parts.hostname, parts.port
    elif parts.scheme == "mbus+serial":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{address!r}: expected mbus+serial:///dev/ttyX?baud=2400&primary=N")
        path = parts.path
        baud = query["baud"][-1] if "baud" in query else str(DEFAULT_BAUDRATE)
        if not baud.isdigit() or int(baud) not in BAUDRATE_CI:
            raise ValueError(f"{address!r}: baud must be one of {', '.join(map(str, BAUDRATE_CI))}")
        host, port, baudrate = "", 0, int(baud)
    else:
        raise ValueError(
            f"{address!r}: expected mbus+tcp://host:port?primary=N (or ?secondary=ID),"
            " or mbus+serial:///dev/ttyX?baud=2400&primary=N"
        )
    return MbusBus(host, port, path, baudrate), query


def _endpoint(address: str) -> tuple[str, int, int | None, str | None, str | None, int]:
    bus, query = _bus_and_query(address)
    host, port, path, baudrate = bus.host, bus.port, bus.path, bus.baudrate
    primary = query["primary"][-1] if "primary" in query else None
    secondary = query["secondary"][-1] if "secondary" in query else None
    if secondary is not None and (len(secondary) != 8 or not secondary.isdigit()):
        raise ValueError(f"{address!r}: secondary must be the meter's 8-digit id")
    if primary is not None and (not primary.isdigit() or not 1 <= int(primary) <= 250):
        raise ValueError(f"{address!r}: primary must be 1..250")
    if (primary is None) == (secondary is None):
        raise ValueError(f"{address!r}: give exactly one of primary= or secondary=")
    return host, port, None if primary is None else int(primary), secondary, path, baudrate


def target_from_row(row: MeterRow) -> MbusTarget:
    """The target of one meter row; ``ValueError`` naming the problem when its address is unusable."""
    host, port, primary, secondary, path, baudrate = _endpoint(row.address)
    return MbusTarget(row.tenant, row.serial, host, port, primary, secondary, path, baudrate)


def load_mbus_targets(
    engine: Engine, meter_ids: list[int] | None = None
) -> tuple[list[MbusTarget], list[tuple[str, str]]]:
    """The M-Bus meters to read, and (serial, reason) for those that cannot be. Blocking."""
    return load_targets(engine, MBUS_PROTOCOL, target_from_row, meter_ids=meter_ids)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MbusCollector:
    """Reads M-Bus meters, one at a time per converter, and publishes their current values."""

    def __init__(
        self,
        engine: Engine | None,
        bus: Publisher,
        *,
        timeout_s: float = 2.0,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine, self._bus = engine, bus
        self.timeout_s = timeout_s
        self._now = now
        self._bus_locks: dict[str, asyncio.Lock] = {}

    def bus_lock(self, bus: str) -> asyncio.Lock:
        """The lock held while a meter on ``bus`` (:attr:`MbusTarget.bus`) is read: one master at a time."""
        return self._bus_locks.setdefault(bus, asyncio.Lock())

    async def collect_all(self) -> RoundReport:
        if self._engine is None:
            raise RuntimeError("collect_all needs the store's engine; without one, call collect(targets)")
        targets, skipped = await asyncio.to_thread(load_mbus_targets, self._engine)
        for serial, reason in skipped:
            log.warning("M-Bus meter %s skipped: %s", serial, reason)
        return await self.collect(targets)

    async def collect(self, targets: Sequence[MbusTarget]) -> RoundReport:
        started = time.perf_counter()
        report = RoundReport(meters=len(targets))
        buses: dict[str, list[MbusTarget]] = defaultdict(list)
        for target in targets:
            buses[target.bus].append(target)

        async def one_bus(members: list[MbusTarget]) -> None:
            for target in members:  # one master at a time on a bus
                async with self.bus_lock(target.bus):
                    report.add(await self._read(target))

        await asyncio.gather(*(one_bus(members) for members in buses.values()))
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    async def _read(self, target: MbusTarget) -> MeterOutcome:
        outcome = MeterOutcome(target.serial)
        now = self._now()
        try:
            async with target.line.client(self.timeout_s) as client:
                if target.secondary is not None:
                    telegram = await client.read_secondary(SecondaryAddress(target.secondary))
                else:
                    assert target.primary is not None  # one of the two, checked by _endpoint
                    telegram = await client.read_primary(target.primary)
        except (MbusDriverError, MbusError, OSError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            return outcome
        series = [
            Series(
                meter=target.serial,
                channel=code,
                unit=record.unit or "",
                kind="register",
                points=[(now, float(record.value), 0)],  # type: ignore[arg-type]  # numeric, see channel_codes
            )
            for code, record in channel_codes(telegram.records)
        ]
        await publish_read(self._bus, SOURCE, target.tenant, target.serial, now, series)
        outcome.ok, outcome.readings = True, len(series)
        return outcome
