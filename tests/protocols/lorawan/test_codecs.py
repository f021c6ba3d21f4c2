"""Payload codecs: Elvaco CMi41xx message formats (laid out from the modules' manuals), plain EN 13757-3
records, and OMS payloads (built with our wM-Bus encoder: the same OMS layers without the radio link)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.lorawan import CodecContext, CodecError, UnknownProfileError, codec
from openami.protocols.lorawan.codecs import elvaco
from openami.protocols.lorawan.codecs.oms import oms_address
from openami.protocols.wmbus.encode import date_time_record, encode_telegram, make_address, number_record
from openami.protocols.wmbus.link import parse_link
from tests.protocols.dlms.fuzzing import assert_value_or_error, truncated_and_mutated

# The Standard format's fields, as the CMi4110 manual lists them: energy (0406: kWh), volume (0414: 0.01
# m3), power (022D: 100 W ... here 0x2B: W), flow (023B: l/h), forward and return temperature (0259/025D:
# 0.01 °C), meter id as an enhanced identification (0779: id, manufacturer, version, medium), error flags
# (02FD17), meter date-time (046D).
STANDARD = bytes.fromhex(
    "00"  # message format: CMi4110 standard
    "0406"
    "39300000"  # 12345 kWh
    "0414"
    "D2040000"  # 12.34 m3
    "022B"
    "E803"  # 1000 W
    "023B"
    "7800"  # 120 l/h
    "0259"
    "A41F"  # 81.00 °C
    "025D"
    "8813"  # 50.00 °C
    "0779"
    "78563412"
    "A732"
    "16"
    "04"  # id 12345678, LUG, version 0x16, heat
    "02FD17"
    "0000"
    "046D"
    "2B0CC22C"  # 2022-12-02 12:43
)


def test_elvaco_standard_message() -> None:
    decoded = codec("elvaco-cmi41xx")(2, STANDARD, CodecContext())
    values = {v.channel: (v.value, v.unit) for v in decoded.values}
    assert values["energy"] == (12_345_000, "Wh")
    assert values["volume"] == pytest.approx((12.34, "m3"))
    assert values["power"] == (1000, "W")
    assert values["volume_flow"] == pytest.approx((0.12, "m3/h"))
    assert values["flow_temperature"] == pytest.approx((81.0, "°C"))
    assert values["return_temperature"] == pytest.approx((50.0, "°C"))
    assert decoded.meter_id == "12345678"
    assert decoded.meter_time == datetime(2022, 12, 2, 12, 43)
    assert decoded.events == []


def test_values_the_module_could_not_read_are_an_event_not_readings() -> None:
    failed = bytes.fromhex("1E340600000000341400000000")  # CMi4160, DIF 0x34: error state
    decoded = codec("elvaco-cmi41xx")(2, failed, CodecContext())
    assert decoded.values == []
    assert [(e.code, e.severity) for e in decoded.events] == [("meter_read_error", "warning")]


def test_clock_message_carries_only_the_meter_clock() -> None:
    decoded = codec("elvaco-cmi41xx")(2, bytes.fromhex("FA046D2B0CC22C"), CodecContext())
    assert decoded.values == [] and decoded.meter_time == datetime(2022, 12, 2, 12, 43)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [("", "empty"), ("02", "JSON"), ("99", "unknown"), ("0004", "Elvaco message")],
)
def test_elvaco_bad_payloads(payload: str, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        codec("elvaco-cmi41xx")(2, bytes.fromhex(payload), CodecContext())


def test_elvaco_downlinks_follow_the_command_table() -> None:
    assert elvaco.set_transmit_interval(30) == bytes.fromhex("0006021E00")
    assert elvaco.shift_clock(60) == bytes.fromhex("0013043C000000")
    assert elvaco.shift_clock(-60) == bytes.fromhex("0013043C000080")
    assert elvaco.set_utc_offset(-60) == bytes.fromhex("0017023C80")
    assert elvaco.set_message_format(0x1F) == bytes.fromhex("0007011F")
    assert elvaco.reboot() == bytes.fromhex("0022029E75")
    with pytest.raises(ValueError, match="message format"):
        elvaco.set_message_format(0x77)


def test_plain_records_codec() -> None:
    decoded = codec("en13757-3")(1, bytes.fromhex("0413393000000C7821436587"), CodecContext())
    assert [(v.channel, v.value, v.unit) for v in decoded.values] == [("volume", 12.345, "m3")]
    assert decoded.meter_id == "87654321"
    with pytest.raises(CodecError):
        codec("en13757-3")(1, bytes.fromhex("04"), CodecContext())


KEY = bytes(range(16))
METER = make_address("DME", "40302010", 0x1B, 0x07)
RECORDS = number_record("volume", 123_456, exponent=-3) + date_time_record(datetime(2026, 12, 2, 6, 0))


@pytest.mark.parametrize("mode", [5, 7])
def test_oms_payload_with_the_meter_address_tag(mode: int) -> None:
    frame = encode_telegram(
        METER, RECORDS, access_number=0x21, security_mode=mode, key=KEY, message_counter=9
    )
    payload = parse_link(frame).body  # what an OMS meter puts in its LoRaWAN frame: from the CI on
    tags = {"oms_address": METER.to_bytes().hex()}
    decoded = codec("oms")(1, payload, CodecContext(tags=tags, key=KEY))
    assert [(v.channel, v.value) for v in decoded.values] == [("volume", 123.456)]
    assert decoded.meter_id == "40302010"
    with pytest.raises(CodecError):
        codec("oms")(1, payload, CodecContext(tags=tags, key=bytes(16)))  # wrong key: no garbage values
    with pytest.raises(CodecError, match="oms_address"):
        codec("oms")(1, payload, CodecContext(key=KEY))


def test_oms_payload_with_a_long_header_needs_no_tag() -> None:
    radio = make_address("OAM", "99999999", 1, 0x37)
    frame = encode_telegram(radio, RECORDS, security_mode=5, key=KEY, meter_address=METER, access_number=3)
    payload = parse_link(frame).body
    assert oms_address(payload, {}) == METER
    decoded = codec("oms")(1, payload, CodecContext(key=KEY))
    assert decoded.values[0].value == 123.456


def test_unknown_profile() -> None:
    with pytest.raises(UnknownProfileError, match="known: "):
        codec("no-such-meter")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_payloads_end_in_values_or_codec_errors(data: st.DataObject) -> None:
    context = CodecContext(tags={"oms_address": METER.to_bytes().hex()}, key=KEY)
    oms = parse_link(encode_telegram(METER, RECORDS, security_mode=5, key=KEY)).body
    for name, seed in (("elvaco-cmi41xx", STANDARD), ("en13757-3", STANDARD[1:]), ("oms", oms)):
        decode = codec(name)
        for raw in truncated_and_mutated(seed, data):
            assert_value_or_error(lambda d, decode=decode: decode(2, d, context), CodecError, raw)


def test_timestamps_are_left_to_the_uplink_when_the_payload_has_none() -> None:
    decoded = codec("en13757-3")(1, bytes.fromhex("041339300000"), CodecContext())
    assert decoded.values[0].ts is None and decoded.meter_time is None
    assert UTC  # the head-end stamps such values with the uplink's (UTC) time
