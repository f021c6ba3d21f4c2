"""The head-end's Modbus pull driver: each round reads every Modbus meter's register map once.

A meter is read when its ``protocol`` is ``modbus``, it is active, its ``model`` names a register map
(:data:`openami.drivers.modbus.models.MODELS`) and its communication device (the Modbus TCP gateway, or
the meter itself) has an address ``modbus+tcp://host:port?unit=N`` (N: the device id behind the
gateway, default 1). Each read becomes one ReadingBatch (source ``modbus``) with one register series per
point, stamped with the time of the read: Modbus meters have no clock of their own to stamp values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine

from openami.bus.base import Publisher
from openami.bus.messages import Series
from openami.drivers.modbus.models import MODELS
from openami.drivers.modbus.reader import ModbusDriverError, ModbusMeterReader
from openami.drivers.modbus.registers import RegisterMap
from openami.hes.rounds import MeterOutcome, RoundReport, publish_read
from openami.hes.targets import MeterRow, load_targets

__all__ = [
    "MODBUS_PROTOCOL",
    "SOURCE",
    "ModbusCollector",
    "ModbusTarget",
    "load_modbus_targets",
    "target_from_row",
]

log = logging.getLogger(__name__)

MODBUS_PROTOCOL: Final = "modbus"
SOURCE: Final = "modbus"


@dataclass(frozen=True, slots=True)
class ModbusTarget:
    tenant: str
    serial: str
    host: str
    port: int
    device_id: int
    register_map: RegisterMap


def _endpoint(address: str) -> tuple[str, int, int]:
    parts = urlsplit(address.strip())
    if parts.scheme != "modbus+tcp" or not parts.hostname or parts.port is None:
        raise ValueError(f"{address!r}: expected modbus+tcp://host:port?unit=N")
    unit = (parse_qs(parts.query).get("unit") or ["1"])[-1]
    if not unit.isdigit() or not 0 <= int(unit) <= 247:
        raise ValueError(f"{address!r}: unit must be 0..247")
    return parts.hostname, parts.port, int(unit)


def target_from_row(row: MeterRow) -> ModbusTarget:
    """The target of one meter row; ``ValueError`` when its model has no map or its address is unusable."""
    register_map = MODELS.get(row.model)
    if register_map is None:
        raise ValueError(f"no register map for model {row.model!r}")
    host, port, unit = _endpoint(row.address)
    return ModbusTarget(row.tenant, row.serial, host, port, unit, register_map)


def load_modbus_targets(
    engine: Engine, meter_ids: list[int] | None = None
) -> tuple[list[ModbusTarget], list[tuple[str, str]]]:
    """The Modbus meters to read, and (serial, reason) for those that cannot be. Blocking."""
    return load_targets(engine, MODBUS_PROTOCOL, target_from_row, meter_ids=meter_ids)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ModbusCollector:
    """Reads Modbus meters (at most ``concurrency`` at once) and publishes their values."""

    def __init__(
        self,
        engine: Engine | None,
        bus: Publisher,
        *,
        timeout_s: float = 3.0,
        concurrency: int = 32,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine, self._bus = engine, bus
        self.timeout_s, self.concurrency = timeout_s, concurrency
        self._now = now

    async def collect_all(self) -> RoundReport:
        if self._engine is None:
            raise RuntimeError("collect_all needs the store's engine; without one, call collect(targets)")
        targets, skipped = await asyncio.to_thread(load_modbus_targets, self._engine)
        for serial, reason in skipped:
            log.warning("Modbus meter %s skipped: %s", serial, reason)
        return await self.collect(targets)

    async def collect(self, targets: Sequence[ModbusTarget]) -> RoundReport:
        started = time.perf_counter()
        report = RoundReport(meters=len(targets))
        limit = asyncio.Semaphore(self.concurrency)

        async def one(target: ModbusTarget) -> None:
            async with limit:
                report.add(await self._read(target))

        await asyncio.gather(*(one(t) for t in targets))
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    async def _read(self, target: ModbusTarget) -> MeterOutcome:
        outcome = MeterOutcome(target.serial)
        now = self._now()
        try:
            reader = ModbusMeterReader(
                target.host, target.port, target.device_id, target.register_map, timeout=self.timeout_s
            )
            async with reader:
                values = await reader.read()
        except ModbusDriverError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            return outcome
        series = [
            Series(
                meter=target.serial,
                channel=v.point.channel,
                unit=v.point.unit,
                kind="register",
                points=[(now, v.value, 0)],
            )
            for v in values
        ]
        await publish_read(self._bus, SOURCE, target.tenant, target.serial, now, series)
        outcome.ok, outcome.readings = True, len(series)
        return outcome
