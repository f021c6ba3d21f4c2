"""Deterministic, plausible household consumption for simulated meters.

Every value is a pure function of a meter's seed and a timestamp, so a demo, a test and a benchmark
all see the same meters, any span can be generated on its own (no need to replay history), and a live
run continues exactly where a back-fill stopped. Four media share one model, parametrised by data
(:data:`PROFILES`), not by code paths:

* a daily mean: a base load plus a heating-degree-day term (one regional weather series shared by all
  meters, so gas and heat rise together on a cold day), higher at weekends;
* a per-meter size factor and day-to-day noise, both drawn from the seed;
* an hour-of-day shape (double peak for electricity, near-zero nights for water, thermostat schedule
  for gas and heat) that spreads each day over its 96 quarter hours, as noisy shares or, for water, as
  discrete draw-offs (showers, toilet flushes, ...).

Values are integers in thousandths of the medium's unit (Wh for kWh, litres for m3), so registers are
exact cumulative sums of the interval values and never step backwards through rounding.

The register at midnight is defined first, in closed form, and the day's consumption is the difference
of two consecutive midnights; that keeps the register at any date O(1) (the seed-independent mean
is summed once per process and cached) while the day-to-day noise still averages out. Days are UTC days
and the hour-of-day shapes are read as UTC hours.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate, pairwise
from typing import Literal

Medium = Literal["electricity", "water", "gas", "heat"]

INTERVAL_S = 900
INTERVALS_PER_DAY = 86400 // INTERVAL_S
MILLI = 1000
"""Model values count thousandths of the medium's unit."""
EPOCH = date(2024, 1, 1)
"""Simulated meters are installed at 00:00 UTC on this day; nothing is defined before it."""
EPOCH_START = datetime(EPOCH.year, EPOCH.month, EPOCH.day, tzinfo=UTC)

HDD_BASE_C = 15.5
_MASK64 = (1 << 64) - 1

# Seed streams: independent random draws for the different uses of one meter seed.
_STREAM_SIZE = 1
_STREAM_START = 2
_STREAM_DAY_NOISE = 3
_STREAM_INTRADAY = 4
EVENT_STREAM = 5
"""Stream for the simulated gateway's meter events (see :func:`day_random`)."""
_WEATHER_SEED = 0x5EA50


def _mix(*parts: int) -> int:
    """A 64-bit hash of integers (splitmix64 finaliser): cheap, well spread and the same on every run."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = (h ^ (part & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h


def _uniform(*parts: int) -> float:
    """A number in [0, 1) determined by ``parts``."""
    return (_mix(*parts) >> 11) / float(1 << 53)


def day_random(seed: int, day: date, stream: int) -> random.Random:
    """A generator for one meter, one day and one purpose; independent of every other day."""
    return random.Random(_mix(seed, day.toordinal(), stream))


def temperature_c(day: date) -> float:
    """Regional daily mean outdoor temperature: a seasonal curve (coldest late January) plus weather.

    The weather anomaly (about +-3 degC) averages three neighbouring days' draws so it drifts instead of
    jumping; it is the same for every meter.
    """
    n = day.toordinal()
    seasonal = 10.5 - 9.5 * math.cos(2 * math.pi * (n - date(2000, 1, 20).toordinal()) / 365.25)
    anomaly = 2.0 * sum(_uniform(_WEATHER_SEED, n + k) - 0.5 for k in (-1, 0, 1))
    return seasonal + anomaly


def heating_degree_days(day: date) -> float:
    return max(0.0, HDD_BASE_C - temperature_c(day))


@dataclass(frozen=True)
class MediumProfile:
    """How one medium is consumed by a typical household (all quantities in ``unit``)."""

    unit: str
    base_per_day: float
    """Daily consumption on a weekday without heating demand."""
    per_hdd: float
    """Extra consumption per heating degree-day."""
    weekend_factor: float
    day_noise: float
    """Day-to-day variation relative to the base load; at most min(1, weekend_factor)."""
    size_range: tuple[float, float]
    """Range of the per-meter household size factor."""
    start_range: tuple[float, float]
    """Range of the register value at :data:`EPOCH`."""
    weekday_hours: tuple[float, ...]
    weekend_hours: tuple[float, ...]
    interval_noise: float = 0.0
    """Relative noise of each quarter hour's share (smooth media)."""
    bursty: bool = False
    """Consumption comes as discrete draw-offs (:data:`WATER_DRAW_OFFS`) rather than smooth shares."""

    def __post_init__(self) -> None:
        if len(self.weekday_hours) != 24 or len(self.weekend_hours) != 24:
            raise ValueError("hour-of-day shapes need 24 weights")
        if not 0 <= self.day_noise <= min(1.0, self.weekend_factor):
            raise ValueError("day_noise larger than the weekday/weekend base would let registers fall")

    def daily_mean(self, day: date) -> float:
        """Expected consumption of a unit-size household on ``day``."""
        mean = self.base_per_day + self.per_hdd * heating_degree_days(day)
        return mean * self.weekend_factor if day.weekday() >= 5 else mean


# Hour-of-day shapes (relative weights, 00-01 h first).
# fmt: off
_ELECTRICITY_WEEKDAY = (0.45, 0.4, 0.38, 0.37, 0.38, 0.45, 0.8, 1.3, 1.2, 0.9, 0.8, 0.8,
                        0.9, 0.8, 0.75, 0.8, 1.0, 1.5, 1.9, 1.9, 1.7, 1.4, 1.0, 0.7)
_ELECTRICITY_WEEKEND = (0.5, 0.45, 0.4, 0.38, 0.38, 0.4, 0.5, 0.7, 1.1, 1.4, 1.3, 1.2,
                        1.3, 1.1, 1.0, 1.0, 1.1, 1.5, 1.8, 1.8, 1.6, 1.4, 1.1, 0.8)
_WATER_WEEKDAY = (0.02, 0.02, 0.02, 0.02, 0.02, 0.1, 0.8, 1.6, 1.2, 0.8, 0.5, 0.5,
                  0.6, 0.5, 0.5, 0.5, 0.6, 0.8, 1.1, 1.2, 1.0, 0.9, 0.5, 0.2)
_WATER_WEEKEND = (0.05, 0.02, 0.02, 0.02, 0.02, 0.02, 0.1, 0.5, 1.2, 1.5, 1.2, 0.9,
                  0.8, 0.7, 0.6, 0.6, 0.7, 0.8, 1.1, 1.2, 1.0, 0.9, 0.6, 0.3)
# Thermostat schedule with a night set-back, for gas and heat alike.
_HEATING = (0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 1.4, 1.6, 1.2, 0.8, 0.8, 0.8,
            0.8, 0.8, 0.8, 0.8, 1.0, 1.3, 1.3, 1.3, 1.3, 1.2, 0.9, 0.5)
# fmt: on

PROFILES: dict[Medium, MediumProfile] = {
    "electricity": MediumProfile(
        unit="kWh", base_per_day=7.5, per_hdd=0.2, weekend_factor=1.1, day_noise=0.4,
        size_range=(0.7, 1.3), start_range=(1_000.0, 40_000.0),
        weekday_hours=_ELECTRICITY_WEEKDAY, weekend_hours=_ELECTRICITY_WEEKEND, interval_noise=0.35,
    ),
    "water": MediumProfile(
        unit="m3", base_per_day=0.3, per_hdd=0.0, weekend_factor=1.1, day_noise=0.5,
        size_range=(0.5, 1.4), start_range=(50.0, 1_500.0),
        weekday_hours=_WATER_WEEKDAY, weekend_hours=_WATER_WEEKEND, bursty=True,
    ),
    "gas": MediumProfile(
        unit="m3", base_per_day=0.8, per_hdd=0.35, weekend_factor=1.05, day_noise=0.5,
        size_range=(0.6, 1.5), start_range=(500.0, 20_000.0),
        weekday_hours=_HEATING, weekend_hours=_HEATING, interval_noise=0.2,
    ),
    "heat": MediumProfile(
        unit="kWh", base_per_day=8.0, per_hdd=3.0, weekend_factor=1.05, day_noise=0.5,
        size_range=(0.6, 1.5), start_range=(5_000.0, 300_000.0),
        weekday_hours=_HEATING, weekend_hours=_HEATING, interval_noise=0.15,
    ),
}  # fmt: skip

WATER_DRAW_OFFS: tuple[tuple[float, float], ...] = (
    # (litres, relative frequency): tap, toilet flush, dishwasher, washing machine, shower
    (2.0, 0.45),
    (6.0, 0.30),
    (12.0, 0.08),
    (45.0, 0.07),
    (60.0, 0.10),
)
_DRAW_OFF_LITRES = tuple(litres for litres, _ in WATER_DRAW_OFFS)
_DRAW_OFF_WEIGHTS = tuple(weight for _, weight in WATER_DRAW_OFFS)
_MEAN_DRAW_OFF_L = sum(litres * weight for litres, weight in WATER_DRAW_OFFS) / sum(_DRAW_OFF_WEIGHTS)

# Prefix sums of each medium's daily_mean from EPOCH, extended on demand. A cache of a pure function of
# the day (no seed in it), so it is shared by every meter and never invalidated.
_MEAN_SUMS: dict[Medium, list[float]] = {medium: [0.0] for medium in PROFILES}


def _mean_sum(medium: Medium, days: int) -> float:
    """Sum of ``daily_mean`` over the first ``days`` days after EPOCH."""
    sums, profile = _MEAN_SUMS[medium], PROFILES[medium]
    while len(sums) <= days:
        sums.append(sums[-1] + profile.daily_mean(EPOCH + timedelta(days=len(sums) - 1)))
    return sums[days]


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split an integer total in proportion to ``weights``; the parts are >= 0 and sum to ``total``."""
    cumulative = list(accumulate(weights))
    whole = cumulative[-1]
    if whole <= 0:
        raise ValueError("weights must not all be zero")
    bounds = [0, *(round(total * c / whole) for c in cumulative)]
    return [b - a for a, b in pairwise(bounds)]


@dataclass(frozen=True)
class ConsumptionModel:
    """One simulated meter's consumption; every method is a pure function of (seed, time)."""

    medium: Medium
    seed: int
    leak_l_per_h: float = 0.0
    """Water only: a leak adding this constant flow around the clock (visible as non-zero nights)."""

    def __post_init__(self) -> None:
        if self.medium not in PROFILES:
            raise ValueError(f"unknown medium {self.medium!r}; expected one of {sorted(PROFILES)}")
        if self.leak_l_per_h < 0 or (self.leak_l_per_h and self.medium != "water"):
            raise ValueError("leak_l_per_h is a non-negative flow and only water meters leak")

    @property
    def profile(self) -> MediumProfile:
        return PROFILES[self.medium]

    @property
    def unit(self) -> str:
        return self.profile.unit

    @property
    def size(self) -> float:
        """Household size factor, scaling the profile's consumption."""
        low, high = self.profile.size_range
        return low + (high - low) * _uniform(self.seed, _STREAM_SIZE)

    def _leak_per_day(self) -> int:
        # Water counts are litres (thousandths of a m3).
        return round(self.leak_l_per_h * 24)

    def register_at_midnight(self, day: date) -> int:
        """Register (thousandths of the unit) at 00:00 UTC of ``day``."""
        days = (day - EPOCH).days
        if days < 0:
            raise ValueError(f"simulated meters start on {EPOCH.isoformat()}, not {day.isoformat()}")
        profile = self.profile
        low, high = profile.start_range
        start = low + (high - low) * _uniform(self.seed, _STREAM_START)
        noise = profile.day_noise * profile.base_per_day * _uniform(self.seed, _STREAM_DAY_NOISE, days)
        household = start + self.size * (_mean_sum(self.medium, days) + noise)
        return math.floor(household * MILLI) + self._leak_per_day() * days

    def day_counts(self, day: date) -> list[int]:
        """Consumption of each quarter hour of ``day`` (thousandths of the unit), 96 values.

        Kept for the most recent days of the most recent meters (a pure function of seed and day, so the
        cache can never be stale): a simulated meter answering repeated reads of today's profile should
        cost what a real one does, a lookup, not a fresh simulation of the day per request.
        """
        return list(_day_counts(self, day))

    def _simulate_day(self, day: date) -> list[int]:
        total = self.register_at_midnight(day + timedelta(days=1)) - self.register_at_midnight(day)
        leak = self._leak_per_day()
        profile = self.profile
        hours = profile.weekend_hours if day.weekday() >= 5 else profile.weekday_hours
        rng = day_random(self.seed, day, _STREAM_INTRADAY)
        if profile.bursty:
            shares = self._draw_offs(rng, hours, litres=total - leak)  # water counts are litres
        else:
            noise = profile.interval_noise
            shares = [
                hours[i // 4] * max(0.05, 1.0 + noise * rng.gauss(0.0, 1.0)) for i in range(INTERVALS_PER_DAY)
            ]
        household = _apportion(total - leak, shares)
        if not leak:
            return household
        return [a + b for a, b in zip(household, _apportion(leak, [1.0] * INTERVALS_PER_DAY), strict=True)]

    @staticmethod
    def _draw_offs(rng: random.Random, hours: Sequence[float], litres: int) -> list[float]:
        """Litres per quarter hour from whole draw-offs placed by the hour-of-day shape."""
        count = max(1, round(litres / _MEAN_DRAW_OFF_L))
        when = rng.choices(
            range(INTERVALS_PER_DAY), weights=[hours[i // 4] for i in range(INTERVALS_PER_DAY)], k=count
        )
        sizes = rng.choices(_DRAW_OFF_LITRES, weights=_DRAW_OFF_WEIGHTS, k=count)
        shares = [0.0] * INTERVALS_PER_DAY
        for index, size in zip(when, sizes, strict=True):
            shares[index] += size
        return shares

    def counts(self, start: datetime, end: datetime) -> tuple[int, list[int]]:
        """The register at ``start`` and each quarter hour's consumption in [start, end).

        Both ends must fall on quarter-hour boundaries; this is the bulk form the gateway uses.
        """
        first, last = _interval_index(start), _interval_index(end)
        day_index, offset = divmod(first, INTERVALS_PER_DAY)
        day = EPOCH + timedelta(days=day_index)
        today = self.day_counts(day)
        register = self.register_at_midnight(day) + sum(today[:offset])
        values: list[int] = []
        while True:
            values.extend(today[offset : offset + last - first - len(values)])
            if len(values) >= last - first:
                return register, values
            day, offset = day + timedelta(days=1), 0
            today = self.day_counts(day)

    def register_value(self, ts: datetime) -> float:
        """The register (in the unit) at ``ts``, a quarter-hour boundary."""
        register, _ = self.counts(ts, ts)
        return register / MILLI

    def interval_value(self, ts: datetime) -> float:
        """Consumption (in the unit) of the quarter hour ending at ``ts``."""
        _, values = self.counts(ts - timedelta(seconds=INTERVAL_S), ts)
        return values[0] / MILLI


@functools.lru_cache(maxsize=8192)
def _day_counts(model: ConsumptionModel, day: date) -> tuple[int, ...]:
    return tuple(model._simulate_day(day))


def _interval_index(ts: datetime) -> int:
    """Quarter hours from EPOCH to ``ts``, which must be aware and on a boundary."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    seconds = (ts - EPOCH_START).total_seconds()
    index, rest = divmod(seconds, INTERVAL_S)
    if rest or index < 0:
        raise ValueError(f"{ts.isoformat()} is not a quarter-hour boundary on or after {EPOCH.isoformat()}")
    return int(index)


__all__ = [
    "EPOCH",
    "EVENT_STREAM",
    "INTERVALS_PER_DAY",
    "INTERVAL_S",
    "MILLI",
    "PROFILES",
    "ConsumptionModel",
    "Medium",
    "MediumProfile",
    "day_random",
    "heating_degree_days",
    "temperature_c",
]
