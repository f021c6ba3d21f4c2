"""Pulse inputs read at the gateway: a counter file becomes the meter's register reading.

A pulse meter's address is ``pulse+file:///path``: a file holding the current count as a decimal
integer, which is how Linux exposes hardware counters (the counter subsystem's
``/sys/bus/counter/devices/counter0/count0/count``, a GPIO counter driver, or a file a small logger
daemon rewrites). What a pulse is worth is the meter's ``pulse`` table in the configuration; the
register is computed by :class:`openami.drivers.pulse.PulseRegister` (wraps, resets flagged
``COUNTER_RESET``).

The register's running state (its last value and count) is kept in the archive's state table, so a
restart continues counting from where it stopped; it is restarted from the configuration when the
configuration of that input changes (a meter exchange gives a new ``initial_value``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from openami.bus.base import Publisher
from openami.bus.messages import Series
from openami.drivers.pulse.counter import PulseError, PulseInput, PulseRegister
from openami.edge.archive import Archive
from openami.hes.rounds import MeterOutcome, RoundReport, publish_read

__all__ = ["SOURCE", "PulseCollector", "PulseTarget"]

SOURCE: Final = "pulse"
_MAX_COUNT_BYTES: Final = 64


@dataclass(frozen=True, slots=True)
class PulseTarget:
    tenant: str
    serial: str
    path: Path
    input: PulseInput


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _read_count(path: Path) -> int:
    with path.open("rb") as handle:
        text = handle.read(_MAX_COUNT_BYTES).decode("ascii", "replace").strip()
    if not text.isdigit():
        raise PulseError(f"{path} does not hold a count")  # its content is not repeated: any file
    return int(text)


class PulseCollector:
    """Reads every pulse input's counter file and publishes the register values."""

    def __init__(self, archive: Archive, bus: Publisher, *, now: Callable[[], datetime] = _utcnow) -> None:
        self._archive, self._bus, self._now = archive, bus, now
        self._registers: dict[str, tuple[str, PulseRegister]] = {}

    def _register(self, target: PulseTarget) -> PulseRegister:
        fingerprint = json.dumps(asdict(target.input), sort_keys=True)
        known = self._registers.get(target.serial)
        if known is not None and known[0] == fingerprint:
            return known[1]
        config = target.input
        stored = self._archive.get_state(f"pulse:{target.serial}")
        if stored is not None:
            state = json.loads(stored)
            if state.get("config") == fingerprint:  # same input: continue from the last sample
                config = PulseInput(
                    config.meter,
                    config.channel,
                    config.unit,
                    config.weight,
                    initial_value=float(state["value"]),
                    initial_count=int(state["count"]),
                    counter_bits=config.counter_bits,
                )
        register = PulseRegister(config)
        self._registers[target.serial] = (fingerprint, register)
        return register

    def _sample(self, target: PulseTarget, ts: datetime) -> tuple[float, int, int]:
        """(register value, quality, count): blocking, it reads the file and the archive."""
        register = self._register(target)
        count = _read_count(target.path)
        value, quality = register.sample(ts, count)
        return value, quality, count

    def _keep(self, target: PulseTarget, value: float, count: int) -> None:
        fingerprint = self._registers[target.serial][0]
        state = {"config": fingerprint, "value": value, "count": count}
        self._archive.set_state(f"pulse:{target.serial}", json.dumps(state))

    async def collect(self, targets: Sequence[PulseTarget]) -> RoundReport:
        started = time.perf_counter()
        report = RoundReport(meters=len(targets))
        for target in targets:
            report.add(await self._read(target))
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    async def _read(self, target: PulseTarget) -> MeterOutcome:
        outcome = MeterOutcome(target.serial)
        now = self._now()
        try:
            value, quality, count = await asyncio.to_thread(self._sample, target, now)
        except (OSError, PulseError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            return outcome
        series = [
            Series(
                meter=target.serial,
                channel=target.input.channel,
                unit=target.input.unit,
                kind="register",
                points=[(now, value, quality)],
            )
        ]
        await publish_read(self._bus, SOURCE, target.tenant, target.serial, now, series)
        await asyncio.to_thread(self._keep, target, value, count)
        outcome.ok, outcome.readings = True, 1
        return outcome
