"""Simulated meters and the virtual gateway: channel table, message layout, events, and valid uplinks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from openami.drivers.mqtt_json import CompactSeries, decode_uplink, encode_uplink
from openami.simulator.consumption import INTERVALS_PER_DAY, Medium
from openami.simulator.gateway import CHANNELS, EVENTS, SimMeter, VirtualGateway

DAY = datetime(2026, 2, 2, tzinfo=UTC)
OBIS_MEDIUM = {"electricity": "1", "heat": "6", "gas": "7", "water": "8"}


def _meters(count: int) -> list[SimMeter]:
    media: tuple[Medium, ...] = ("electricity", "water", "gas", "heat")
    return [SimMeter(f"M-{i:05d}", media[i % 4], seed=i) for i in range(count)]


def test_every_medium_reports_a_register_and_an_interval_channel_of_its_obis_group() -> None:
    for medium, channels in CHANNELS.items():
        assert sorted(channel.kind for channel in channels) == ["interval", "register"]
        assert {channel.code.split("-")[0] for channel in channels} == {OBIS_MEDIUM[medium]}


def test_uplinks_are_cut_per_day_and_per_fifty_meters() -> None:
    gateway = VirtualGateway("GW-0001", "acme", _meters(120), seq_start=100)
    uplinks = list(gateway.uplinks(DAY + timedelta(hours=12), DAY + timedelta(days=2)))

    assert [uplink.seq for uplink in uplinks] == list(range(100, 106))
    assert [len(uplink.meters) for uplink in uplinks] == [50, 50, 20] * 2
    first_day, second_day = uplinks[0].meters[0].series[0], uplinks[3].meters[0].series[0]
    assert isinstance(first_day, CompactSeries)
    assert isinstance(second_day, CompactSeries)
    assert (first_day.start, len(first_day.values)) == (DAY + timedelta(hours=12), INTERVALS_PER_DAY // 2)
    assert (second_day.start, len(second_day.values)) == (DAY + timedelta(days=1), INTERVALS_PER_DAY)
    assert {uplink.gateway for uplink in uplinks} == {"GW-0001"}
    assert gateway.topic("openami") == "openami/acme/gw/GW-0001/up"


@pytest.mark.parametrize("medium", ["electricity", "heat"])
def test_registers_advance_by_the_interval_values(medium: str) -> None:
    meter = next(m for m in _meters(4) if m.medium == medium)
    register, interval = (
        {s.kind: s for s in meter.series(DAY, DAY + timedelta(days=1))}[kind]
        for kind in ("register", "interval")
    )
    scale = {"electricity": 1, "heat": 1000}[medium]  # heat registers count MWh, intervals kWh
    registers = [value for value in register.values if value is not None]
    assert len(registers) == INTERVALS_PER_DAY  # the simulator leaves no gaps
    steps = [round((b - a) * scale, 3) for a, b in pairwise(registers)]
    assert steps == interval.values[1:]
    first_end = DAY + timedelta(minutes=15)
    assert registers[0] == pytest.approx(meter.model.register_value(first_end) / scale, abs=1e-9)


def test_uplinks_decode_to_the_simulated_values() -> None:
    gateway = VirtualGateway("GW-0001", "acme", _meters(8), seq_start=0)
    (uplink,) = gateway.uplinks(DAY, DAY + timedelta(days=1))
    for compress in (False, True):
        batch = decode_uplink("acme", "GW-0001", encode_uplink(uplink, compress=compress), DAY)
        assert len(batch.readings) == 8 * 2 * INTERVALS_PER_DAY
        water = [r for r in batch.readings if r.meter == "M-00001" and r.channel == "8-0:1.29.0"]
        assert water[0].ts == DAY + timedelta(minutes=15)
        assert [r.value for r in water] == [
            gateway.meters[1].model.interval_value(DAY + timedelta(minutes=15 * (i + 1))) for i in range(96)
        ]


def test_events_are_fixed_per_day_however_the_span_is_cut() -> None:
    meters = [SimMeter(f"E-{seed}", "electricity", seed) for seed in range(300)]
    whole = [meter.events(DAY, DAY + timedelta(days=2)) for meter in meters]
    halves = [
        meter.events(DAY, DAY + timedelta(hours=31))
        + meter.events(DAY + timedelta(hours=31), DAY + timedelta(days=2))
        for meter in meters
    ]
    assert whole == halves
    assert any(whole)


def test_event_rates_follow_the_event_table() -> None:
    days = 60
    electricity = [SimMeter(f"E-{seed}", "electricity", seed) for seed in range(100)]
    water = [SimMeter(f"W-{seed}", "water", seed) for seed in range(100)]
    span = (DAY, DAY + timedelta(days=days))
    codes = [event.code for meter in electricity for event in meter.events(*span)]
    water_codes = {event.code for meter in water for event in meter.events(*span)}

    expected = next(spec.per_day for spec in EVENTS if spec.code == "power_down") * 100 * days
    assert 0.5 * expected < codes.count("power_down") < 1.6 * expected
    assert codes.count("power_up") == codes.count("power_down")  # every outage ends
    assert "power_down" not in water_codes
    assert "battery_low" not in codes


def test_gateway_rejects_empty_messages() -> None:
    with pytest.raises(ValueError, match="meters_per_message"):
        VirtualGateway("GW-0001", "acme", _meters(1), meters_per_message=0)
