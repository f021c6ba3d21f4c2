"""Pulse counters to register readings: weight, initial dial value, wraps, resets, bad samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.drivers.pulse.counter import COUNTER_RESET, PulseError, PulseInput, PulseRegister

T0 = datetime(2026, 11, 1, tzinfo=UTC)
WATER = PulseInput("W-1", "8-0:1.0.0", "m3", weight=0.01, initial_value=123.45, initial_count=1000)


def test_pulses_times_weight_plus_the_dial_at_installation() -> None:
    register = PulseRegister(WATER)
    assert register.sample(T0, 1000) == (pytest.approx(123.45), 0)
    assert register.sample(T0 + timedelta(hours=1), 1250) == (pytest.approx(125.95), 0)


def test_a_wrapping_counter_continues_seamlessly() -> None:
    register = PulseRegister(PulseInput("E-1", "1-0:1.8.0", "Wh", 1.0, initial_count=65_530, counter_bits=16))
    assert register.sample(T0, 65_535) == (5.0, 0)
    assert register.sample(T0 + timedelta(minutes=15), 4) == (10.0, 0)  # 65535 -> 0 -> 4: five pulses


def test_a_reset_logger_continues_from_the_last_register_and_is_flagged() -> None:
    register = PulseRegister(WATER)
    register.sample(T0, 5000)
    value, quality = register.sample(T0 + timedelta(hours=1), 20)
    assert quality == COUNTER_RESET
    assert value == pytest.approx(123.45 + 40.0 + 0.2)
    assert register.sample(T0 + timedelta(hours=2), 30) == (pytest.approx(123.45 + 40.0 + 0.3), 0)


@given(st.lists(st.integers(0, 2**12 - 1), min_size=1, max_size=50))
def test_the_register_never_goes_down(counts: list[int]) -> None:
    register = PulseRegister(PulseInput("M", "c", "Wh", 2.5, counter_bits=12))
    values = [register.sample(T0 + timedelta(minutes=i), count)[0] for i, count in enumerate(counts)]
    assert values == sorted(values)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"weight": 0.0}, "weight must be positive"),
        ({"weight": 1.0, "counter_bits": 4}, "8..64 bits"),
        ({"weight": 1.0, "initial_count": 256, "counter_bits": 8}, "outside the counter's range"),
    ],
)
def test_bad_configuration_is_refused(config: dict[str, float], message: str) -> None:
    with pytest.raises(PulseError, match=message):
        PulseInput("M", "c", "Wh", **config)  # type: ignore[arg-type]


def test_bad_samples_are_refused_without_changing_the_register() -> None:
    register = PulseRegister(WATER)
    register.sample(T0, 1100)
    with pytest.raises(PulseError, match="outside"):
        register.sample(T0 + timedelta(hours=1), 2**32)
    with pytest.raises(PulseError, match="older"):
        register.sample(T0 - timedelta(hours=1), 1200)
    assert register.value == pytest.approx(124.45)
