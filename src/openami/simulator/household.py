"""What a household's consumer port reports at any second: the model behind the simulated P1 and SML meters.

The consumption model (:mod:`openami.simulator.consumption`) defines registers at quarter-hour boundaries;
a consumer port reports them every second or ten, so the register at an arbitrary second is the one at
the quarter hour before it plus the elapsed share of that quarter hour's consumption (whole Wh or
litres, rounded down, so a register never steps back). Instantaneous import power is the quarter hour's
mean (its Wh times four), which is what a meter averaging over its display period would show.

Some households have a PV system: it exports at a constant power from 09:00 to 15:00 UTC every day, so
the export register has a closed form (whole days times six hours, plus today's share) and any second
costs O(1), as the import register does. Import and export are modelled independently: a real meter
nets them per phase, which matters for nobody reading registers.

Every value is a pure function of (seed, time), like the rest of the simulator, so a test can ask the
model what a meter reported at the timestamp the platform stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from openami.simulator.consumption import EPOCH_START, INTERVAL_S, ConsumptionModel, _mix

__all__ = ["HouseholdModel", "whole_second"]

_PV_START_S: Final = 9 * 3600
_PV_HOURS: Final = 6
_DAY_S: Final = 86400


def whole_second(at: datetime) -> datetime:
    """``at`` in UTC without its fraction of a second: meters report whole seconds."""
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return at.astimezone(UTC).replace(microsecond=0)


def _interpolated(model: ConsumptionModel, at: datetime) -> tuple[int, int]:
    """(register at ``at``, consumption of the quarter hour holding it), in thousandths of the unit."""
    seconds = int((at - EPOCH_START).total_seconds())
    if seconds < 0:
        raise ValueError(f"simulated meters start on {EPOCH_START.isoformat()}, not {at.isoformat()}")
    elapsed = seconds % INTERVAL_S
    start = at - timedelta(seconds=elapsed)
    register, (count,) = model.counts(start, start + timedelta(seconds=INTERVAL_S))
    return register + count * elapsed // INTERVAL_S, count


@dataclass(frozen=True)
class HouseholdModel:
    """One household's electricity (import, PV export) and gas, at any whole second on or after EPOCH."""

    seed: int

    @property
    def electricity(self) -> ConsumptionModel:
        return ConsumptionModel("electricity", self.seed)

    @property
    def gas(self) -> ConsumptionModel:
        return ConsumptionModel("gas", self.seed)

    @property
    def pv_w(self) -> int:
        """The PV system's export power while the sun shines; 0 for the third of households without one."""
        return 0 if self.seed % 3 == 2 else 600 + 350 * (self.seed % 7)

    def import_wh(self, at: datetime) -> int:
        return _interpolated(self.electricity, whole_second(at))[0]

    def import_w(self, at: datetime) -> int:
        """Mean import power of the quarter hour holding ``at``: its Wh times four."""
        return _interpolated(self.electricity, whole_second(at))[1] * 3600 // INTERVAL_S

    def _sunny_seconds(self, at: datetime) -> int:
        seconds = int((whole_second(at) - EPOCH_START).total_seconds())
        if seconds < 0:
            raise ValueError(f"simulated meters start on {EPOCH_START.isoformat()}, not {at.isoformat()}")
        days, today = divmod(seconds, _DAY_S)
        return days * _PV_HOURS * 3600 + min(max(today - _PV_START_S, 0), _PV_HOURS * 3600)

    def export_wh(self, at: datetime) -> int:
        base = 0 if not self.pv_w else 100_000 + 5_000 * (self.seed % 11)
        return base + self.pv_w * self._sunny_seconds(at) // 3600

    def export_w(self, at: datetime) -> int:
        today = int((whole_second(at) - EPOCH_START).total_seconds()) % _DAY_S
        return self.pv_w if _PV_START_S <= today < _PV_START_S + _PV_HOURS * 3600 else 0

    def gas_litres(self, at: datetime) -> int:
        """The gas register in litres (thousandths of a m3)."""
        return _interpolated(self.gas, whole_second(at))[0]

    def voltage_dv(self, at: datetime, phase: int) -> int:
        """Phase voltage in tenths of a volt: 226.0 to 234.0 V, changing every ten seconds."""
        tick = int((whole_second(at) - EPOCH_START).total_seconds()) // 10
        return 2300 + _mix(self.seed, phase, tick) % 81 - 40
