"""ChirpStack v4 events parsed strictly; downlink commands in the integration's JSON form."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.lorawan import (
    EventFormatError,
    JoinEvent,
    StatusEvent,
    UplinkEvent,
    downlink_command,
    event_topic_filter,
    parse_event,
)
from tests.protocols.dlms.fuzzing import assert_value_or_error, truncated_and_mutated
from tests.protocols.lorawan.events import APPLICATION, join, status, uplink

EUI = "70b3d52dd3000123"
T = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def test_uplink_event() -> None:
    topic, payload = uplink(EUI, "Elvaco CMi4110", b"\x00\x01\x02", f_cnt=17, time=T, tags={"meter": "H-1"})
    event = parse_event(topic, payload)
    assert isinstance(event, UplinkEvent)
    assert (event.device.dev_eui, event.device.application_id, event.device.device_profile) == (
        EUI, APPLICATION, "Elvaco CMi4110",
    )  # fmt: skip
    assert (event.f_cnt, event.f_port, event.data, event.time) == (17, 2, b"\x00\x01\x02", T)
    assert (event.rssi, event.snr, event.gateways) == (-88.0, 7.25, 2)  # the best of the gateways
    assert event.device.tags == {"meter": "H-1"}


def test_status_and_join_events() -> None:
    event = parse_event(*status(EUI, "p", battery=87.5, margin=9, time=T))
    assert isinstance(event, StatusEvent) and (event.battery_level, event.margin) == (87.5, 9)
    unknown = parse_event(*status(EUI, "p", battery=None, margin=3, time=T))
    assert isinstance(unknown, StatusEvent) and unknown.battery_level is None
    joined = parse_event(*join(EUI, "p", time=T))
    assert isinstance(joined, JoinEvent) and joined.dev_addr == "01e2f3a4"


def test_events_the_head_end_does_not_use_are_none() -> None:
    assert parse_event(f"application/{APPLICATION}/device/{EUI}/event/log", b"{}") is None
    assert parse_event(f"application/{APPLICATION}/device/{EUI}/event/txack", b"not even json") is None


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("application/a/device/xyz/event/up", b"{}"),
        (f"application/a/device/{EUI}/event/bogus", b"{}"),
        (f"application/a/device/{EUI}/event/up", b"[1, 2]"),
        (f"application/a/device/{EUI}/event/up", b"\xff\xfe"),
        (f"application/a/device/{EUI}/event/up", b'{"time": "2026-12-02T06:00:00Z"}'),
        (f"application/a/device/{EUI}/event/up", b"x" * 70_000),
    ],
    ids=["eui", "type", "array", "binary", "no-device", "huge"],
)
def test_malformed_events_are_typed_errors(topic: str, payload: bytes) -> None:
    with pytest.raises(EventFormatError):
        parse_event(topic, payload)


def test_a_device_eui_that_does_not_match_the_topic_is_refused() -> None:
    topic, payload = uplink(EUI, "p", b"", f_cnt=1, time=T)
    with pytest.raises(EventFormatError, match="does not match"):
        parse_event(topic.replace(EUI, "70b3d52dd3000999"), payload)


def test_bad_fields_are_typed_errors() -> None:
    topic, payload = uplink(EUI, "p", b"\x01", f_cnt=1, time=T)
    doc = json.loads(payload)
    for field, value in (("data", "@@@"), ("fPort", 300), ("fCnt", -1), ("time", "yesterday"), ("data", 5)):
        broken = {**doc, field: value}
        with pytest.raises(EventFormatError):
            parse_event(topic, json.dumps(broken).encode())


def test_downlink_command() -> None:
    topic, payload = downlink_command(APPLICATION, EUI.upper(), 2, b"\x00\x06\x02\x1e\x00")
    assert topic == f"application/{APPLICATION}/device/{EUI}/command/down"
    data = base64.b64encode(b"\x00\x06\x02\x1e\x00").decode()
    assert json.loads(payload) == {"devEui": EUI, "confirmed": False, "fPort": 2, "data": data}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((APPLICATION, "xyz", 2, b""), "EUI"),
        ((APPLICATION, EUI, 0, b""), "ports"),
        ((APPLICATION, EUI, 2, bytes(243)), "242"),
        (("a/b", EUI, 2, b""), "application id"),
    ],
)
def test_bad_downlinks_are_refused(args: tuple[str, str, int, bytes], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        downlink_command(*args)


def test_topic_filters() -> None:
    assert event_topic_filter() == "application/+/device/+/event/+"
    assert event_topic_filter("cs/") == "cs/application/+/device/+/event/+"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_events_end_in_a_value_or_typed_error(data: st.DataObject) -> None:
    topic, payload = uplink(EUI, "p", b"\x04\x13\x39\x30\x00\x00", f_cnt=5, time=T)
    for raw in truncated_and_mutated(payload, data):
        assert_value_or_error(lambda p: parse_event(topic, p), EventFormatError, raw)
