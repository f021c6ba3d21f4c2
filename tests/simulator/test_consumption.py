"""Simulated consumption: deterministic, plausible per medium, and registers consistent with intervals."""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, timedelta

import pytest

from openami.simulator.consumption import (
    EPOCH,
    INTERVALS_PER_DAY,
    MILLI,
    PROFILES,
    ConsumptionModel,
    Medium,
    heating_degree_days,
    temperature_c,
)

WINTER = datetime(2026, 1, 12, tzinfo=UTC)  # a Monday
SUMMER = datetime(2026, 7, 13, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)
MEDIA: tuple[Medium, ...] = ("electricity", "water", "gas", "heat")


def _daily_mean(model: ConsumptionModel, start: datetime, days: int = 7) -> float:
    _, counts = model.counts(start, start + timedelta(days=days))
    return sum(counts) / MILLI / days


@pytest.mark.parametrize("medium", MEDIA)
def test_same_seed_same_values_other_seed_other_values(medium: Medium) -> None:
    span = (WINTER, WINTER + timedelta(days=2))
    assert ConsumptionModel(medium, 7).counts(*span) == ConsumptionModel(medium, 7).counts(*span)
    assert ConsumptionModel(medium, 7).counts(*span) != ConsumptionModel(medium, 8).counts(*span)


def test_any_span_is_the_same_however_it_is_cut() -> None:
    model = ConsumptionModel("electricity", 42)
    start, middle, end = WINTER, WINTER + timedelta(hours=30, minutes=45), WINTER + timedelta(days=3)
    register, whole = model.counts(start, end)
    first_register, first = model.counts(start, middle)
    second_register, second = model.counts(middle, end)
    assert (first_register, first + second) == (register, whole)
    assert second_register == register + sum(first)


@pytest.mark.parametrize("medium", MEDIA)
def test_registers_are_cumulative_sums_of_intervals(medium: Medium) -> None:
    model = ConsumptionModel(medium, 3)
    register, counts = model.counts(WINTER, WINTER + WEEK)
    assert all(count >= 0 for count in counts)
    assert len(counts) == 7 * INTERVALS_PER_DAY
    end_register, _ = model.counts(WINTER + WEEK, WINTER + WEEK)
    assert end_register == register + sum(counts)
    for day in range(7):
        midnight = (WINTER + timedelta(days=day)).date()
        assert model.register_at_midnight(midnight + timedelta(days=1)) - model.register_at_midnight(
            midnight
        ) == sum(model.day_counts(midnight))


@pytest.mark.parametrize("medium", MEDIA)
def test_registers_never_fall_over_two_years(medium: Medium) -> None:
    model = ConsumptionModel(medium, 11)
    registers = [model.register_at_midnight(EPOCH + timedelta(days=d)) for d in range(0, 730)]
    assert registers == sorted(registers)
    low, high = PROFILES[medium].start_range
    assert low * MILLI <= registers[0] <= high * MILLI + PROFILES[medium].base_per_day * MILLI


def test_point_queries_agree_with_the_bulk_form() -> None:
    model = ConsumptionModel("gas", 5)
    ts = WINTER + timedelta(hours=7, minutes=30)
    register, counts = model.counts(ts - timedelta(minutes=15), ts)
    assert model.interval_value(ts) == counts[0] / MILLI
    assert model.register_value(ts) == (register + counts[0]) / MILLI


@pytest.mark.parametrize(
    ("medium", "low", "high"),
    [("electricity", 5.0, 15.0), ("water", 0.1, 0.5)],
)
@pytest.mark.parametrize("start", [WINTER, SUMMER], ids=["winter", "summer"])
def test_household_daily_consumption_is_plausible(
    medium: Medium, low: float, high: float, start: datetime
) -> None:
    means = [_daily_mean(ConsumptionModel(medium, seed), start) for seed in range(40)]
    assert all(low <= mean <= high for mean in means), (min(means), max(means))
    assert statistics.pstdev(means) > 0.05 * statistics.mean(means)  # households differ


@pytest.mark.parametrize("medium", ["gas", "heat"])
def test_heating_media_follow_the_weather(medium: Medium) -> None:
    winter = statistics.mean(_daily_mean(ConsumptionModel(medium, seed), WINTER) for seed in range(20))
    summer = statistics.mean(_daily_mean(ConsumptionModel(medium, seed), SUMMER) for seed in range(20))
    assert winter > 3 * summer


@pytest.mark.parametrize(
    ("medium", "low", "high"),
    [("electricity", 2_500, 4_500), ("water", 80, 160), ("gas", 800, 2_000), ("heat", 5_000, 20_000)],
)
def test_average_household_year_is_typical(medium: Medium, low: float, high: float) -> None:
    year = sum(PROFILES[medium].daily_mean(date(2025, 1, 1) + timedelta(days=d)) for d in range(365))
    assert low < year < high


def test_weather_is_seasonal() -> None:
    january = statistics.mean(temperature_c(date(2026, 1, d)) for d in range(1, 32))
    july = statistics.mean(temperature_c(date(2026, 7, d)) for d in range(1, 32))
    assert -3 < january < 5
    assert 15 < july < 23
    degree_days = sum(heating_degree_days(date(2025, 1, 1) + timedelta(days=d)) for d in range(365))
    assert 2_000 < degree_days < 3_500  # north-western Europe, base 15.5 degC


def test_electricity_has_an_evening_peak_and_quiet_nights() -> None:
    by_hour = [0.0] * 24
    for seed in range(30):
        _, counts = ConsumptionModel("electricity", seed).counts(WINTER, WINTER + WEEK)
        for i, count in enumerate(counts):
            by_hour[(i // 4) % 24] += count
    night, evening = sum(by_hour[1:5]) / 4, sum(by_hour[18:21]) / 3
    assert evening > 3 * night


def test_water_nights_are_near_zero_unless_the_meter_leaks() -> None:
    def night_litres(model: ConsumptionModel) -> int:
        _, counts = model.counts(WINTER, WINTER + WEEK)
        return sum(count for i, count in enumerate(counts) if (i // 4) % 24 in (1, 2, 3))

    dry = [night_litres(ConsumptionModel("water", seed)) for seed in range(20)]
    leaking = [night_litres(ConsumptionModel("water", seed, leak_l_per_h=2.0)) for seed in range(20)]
    assert statistics.median(dry) < 10  # litres over 7 nights x 3 h: the odd night-time flush
    # The leak adds its constant flow (2 L/h x 21 h) on top of the very same household draw-offs.
    assert [wet - litres for wet, litres in zip(leaking, dry, strict=True)] == [42] * 20


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown medium"):
        ConsumptionModel("steam", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only water meters leak"):
        ConsumptionModel("gas", 1, leak_l_per_h=1.0)
    model = ConsumptionModel("electricity", 1)
    with pytest.raises(ValueError, match="start on 2024-01-01"):
        model.register_at_midnight(date(2023, 12, 31))
    with pytest.raises(ValueError, match="quarter-hour boundary"):
        model.counts(WINTER + timedelta(minutes=7), WINTER + timedelta(hours=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        model.counts(datetime(2026, 1, 1), datetime(2026, 1, 2))
