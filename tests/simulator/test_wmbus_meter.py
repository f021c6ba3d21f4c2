"""Simulated wM-Bus meters: their telegrams decode with their own key only, follow the consumption model,
carry alarms, and come out of the receiver as lines the ingest reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openami.protocols.wmbus import (
    AuthenticationError,
    DecryptionError,
    KeyRequiredError,
    decode_telegram,
    parse_line,
)
from openami.protocols.wmbus.encode import STATUS_ALARM, STATUS_POWER_LOW
from openami.simulator.wmbus_meter import (
    RadioFrame,
    SimulatedWmbusGateway,
    SimulatedWmbusMeter,
    format_line,
)

KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
OTHER = bytes(16)
AT = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def _values(meter: SimulatedWmbusMeter, at: datetime = AT, key: bytes | None = KEY) -> dict[str, object]:
    telegram = decode_telegram(meter.telegram(at).frame, key=key)
    return {r.quantity: r.value for r in telegram.records if r.storage == 0}


@pytest.mark.parametrize("medium", ["water", "heat"])
@pytest.mark.parametrize(("mode", "wrong_key_error"), [(5, DecryptionError), (7, AuthenticationError)])
def test_telegrams_decode_with_the_meters_key_only(
    medium: str, mode: int, wrong_key_error: type[Exception]
) -> None:
    meter = SimulatedWmbusMeter("12345678", medium, key=KEY, security_mode=mode)  # type: ignore[arg-type]
    frame = meter.telegram(AT).frame
    telegram = decode_telegram(frame, key=KEY)
    assert telegram.decrypted and telegram.security_mode == mode
    assert telegram.address.id == "12345678" and telegram.address.manufacturer == "OAM"
    assert telegram.address.medium == medium
    with pytest.raises(wrong_key_error):
        decode_telegram(frame, key=OTHER)
    with pytest.raises(KeyRequiredError):
        decode_telegram(frame)


def test_without_a_key_the_meter_sends_in_the_clear() -> None:
    meter = SimulatedWmbusMeter("12345678")
    assert meter.security_mode == 0
    assert "volume" in _values(meter, key=None)
    with pytest.raises(ValueError, match="needs a key"):
        SimulatedWmbusMeter("12345678", security_mode=5)


def test_registers_follow_the_consumption_model() -> None:
    water = SimulatedWmbusMeter("00000042", "water", key=KEY, seed=42)
    heat = SimulatedWmbusMeter("00000043", "heat", key=KEY, seed=43)
    assert _values(water)["volume"] == pytest.approx(water.model.register_value(AT))  # m3
    assert _values(heat)["energy"] == pytest.approx(heat.model.register_value(AT) * 1000)  # kWh -> Wh
    later = AT + timedelta(minutes=7, seconds=30)  # half-way through the quarter hour
    register, quarter = water.register(later)
    assert register == water.model.counts(AT, AT)[0] + quarter // 2
    assert _values(water, later)["volume"] == pytest.approx(register / 1000)
    values = _values(heat)
    assert values["flow_temperature"] > values["return_temperature"]  # type: ignore[operator]
    assert values["date_time"] == "2026-11-22T06:00:00"


def test_installation_telegram_then_data_with_a_moving_access_number() -> None:
    meter = SimulatedWmbusMeter("12345678", key=KEY)
    first, second = (
        decode_telegram(meter.telegram(AT, installation=True).frame, key=KEY),
        decode_telegram(meter.telegram(AT).frame, key=KEY),
    )
    assert first.is_installation and first.link.c_field == 0x46
    assert not second.is_installation and second.link.c_field == 0x44
    assert second.access_number == (first.access_number + 1) % 256


def test_mode7_message_counter_moves_on() -> None:
    meter = SimulatedWmbusMeter("12345678", key=KEY, security_mode=7)
    counters = [decode_telegram(meter.telegram(AT).frame, key=KEY).afl.message_counter for _ in range(3)]  # type: ignore[union-attr]
    assert counters[1] == counters[0] + 1 and counters[2] == counters[1] + 1  # type: ignore[operator]


def test_alarms_set_status_and_error_flags() -> None:
    meter = SimulatedWmbusMeter("12345678", key=KEY)
    assert decode_telegram(meter.telegram(AT).frame, key=KEY).status == 0
    meter.set_alarm("leak")
    telegram = decode_telegram(meter.telegram(AT).frame, key=KEY)
    assert telegram.status == STATUS_ALARM
    assert next(r.value for r in telegram.records if r.quantity == "error_flags") == 0x01
    meter.set_alarm("leak", False)
    meter.set_alarm("low_battery")
    assert decode_telegram(meter.telegram(AT).frame, key=KEY).status == STATUS_POWER_LOW
    with pytest.raises(ValueError, match="unknown alarm"):
        meter.set_alarm("fire")


@pytest.mark.parametrize("radio", ["T1", "C1"])
@pytest.mark.parametrize("line_format", ["hex", "rtl-wmbus"])
@pytest.mark.parametrize("strip_crc", [True, False])
def test_receiver_lines_parse_back(radio: str, line_format: str, strip_crc: bool) -> None:
    meter = SimulatedWmbusMeter("12345678", "heat", key=KEY, mode=radio, rssi_dbm=-70)  # type: ignore[arg-type]
    frame = meter.telegram(AT)
    line = format_line(frame, line_format, strip_crc=strip_crc)  # type: ignore[arg-type]
    received = parse_line(line)
    assert received is not None and received.rssi is not None and -72 <= received.rssi <= -68
    telegram = decode_telegram(received.frame, key=KEY)
    assert telegram.link.frame_format == ("stripped" if strip_crc else "A" if radio == "T1" else "B")
    if line_format == "rtl-wmbus":
        assert received.mode == radio and received.timestamp == "2026-11-22 06:00:00.000"


async def test_run_sends_installation_then_data_at_the_interval() -> None:
    heard: list[RadioFrame] = []
    meter = SimulatedWmbusMeter("12345678", key=KEY, interval_s=0.01, jitter_s=0.005)
    assert await meter.run(heard.append, count=3) == 4
    kinds = [decode_telegram(f.frame, key=KEY).is_installation for f in heard]
    assert kinds == [True, False, False, False]


def test_gateway_batches_lines_on_its_wmbus_topic() -> None:
    meters = [SimulatedWmbusMeter(f"0000000{i}", key=KEY) for i in range(3)]
    gateway = SimulatedWmbusGateway("GW-7", "acme", meters, max_lines=2)
    assert gateway.topic("openami") == "openami/acme/gw/GW-7/wmbus"
    for meter in meters * 10:
        gateway.hear(meter.telegram(AT))
    assert gateway.lines_dropped == 10  # the buffer holds 10 * max_lines
