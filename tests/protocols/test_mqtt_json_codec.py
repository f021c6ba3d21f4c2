"""The JSON gateway format v1 codec: examples, every rejection path, gzip, round trips and fuzzing."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import time
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openami.bus.messages import ReadingBatch
from openami.drivers.mqtt_json import (
    DRIVER_SPEC,
    MAX_PAYLOAD_BYTES,
    MAX_READINGS,
    CompactSeries,
    EventV1,
    GatewayPayloadError,
    MeterV1,
    TimedSeries,
    UplinkV1,
    decode_uplink,
    encode_uplink,
    parse_uplink,
    parse_uplink_topic,
    uplink_filter,
    uplink_topic,
)

RECEIVED = datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)

EXAMPLE: dict[str, Any] = {
    "v": 1,
    "gateway": "GW-0001",
    "seq": 17,
    "sent_at": "2026-11-22T10:00:00Z",
    "meters": [
        {
            "id": "E-000001",
            "series": [
                {
                    "channel": "1-0:1.8.0",
                    "unit": "kWh",
                    "kind": "register",
                    "values": [["2026-11-22T09:45:00Z", 1234.5], ["2026-11-22T10:00:00+01:00", 1234.0, 8]],
                },
                {
                    "channel": "1-0:1.29.0",
                    "unit": "kWh",
                    "kind": "interval",
                    "interval_s": 900,
                    "start": "2026-11-22T09:15:00Z",
                    "values": [0.12, None, 0.15],
                },
            ],
            "events": [{"ts": "2026-11-22T09:50:00Z", "code": "cover_open", "severity": "alarm"}],
        }
    ],
}


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _with(**changes: Any) -> dict[str, Any]:
    """EXAMPLE with its first series replaced by ``changes`` applied to it (None deletes a key)."""
    doc: dict[str, Any] = json.loads(json.dumps(EXAMPLE))
    series = doc["meters"][0]["series"][0]
    for key, value in changes.items():
        if value is None:
            series.pop(key, None)
        else:
            series[key] = value
    return doc


def _decode(payload: bytes, gateway: str = "GW-0001") -> ReadingBatch:
    return decode_uplink("acme", gateway, payload, RECEIVED)


def test_example_decodes_to_readings_and_events() -> None:
    batch = _decode(_raw(EXAMPLE))

    assert (batch.tenant, batch.source, batch.gateway, batch.received_at) == (
        "acme",
        DRIVER_SPEC.name,
        "GW-0001",
        RECEIVED,
    )
    register, late_register, first, last = batch.readings
    assert (register.meter, register.channel, register.kind, register.unit) == (
        "E-000001",
        "1-0:1.8.0",
        "register",
        "kWh",
    )
    assert (register.value, register.quality, register.interval_s) == (1234.5, 0, None)
    assert register.ts == datetime(2026, 11, 22, 9, 45, tzinfo=UTC)
    # Offsets are normalised to UTC; the optional third element is the quality.
    assert late_register.ts == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert late_register.ts.utcoffset() == timedelta(0)
    assert late_register.quality == 8
    # Compact: value i ends at start + (i + 1) * interval_s; the null gap yields no reading.
    assert (first.ts, first.value, first.interval_s) == (datetime(2026, 11, 22, 9, 30, tzinfo=UTC), 0.12, 900)
    assert (last.ts, last.value) == (datetime(2026, 11, 22, 10, 0, tzinfo=UTC), 0.15)
    (event,) = batch.events
    assert (event.meter, event.code, event.severity) == ("E-000001", "cover_open", "alarm")
    assert ReadingBatch.from_bytes(batch.to_bytes()) == batch


def test_optional_fields_may_be_left_out() -> None:
    doc = {"v": 1, "gateway": "GW-0001", "meters": [{"id": "W-1"}]}
    uplink = parse_uplink(_raw(doc))
    assert (uplink.seq, uplink.sent_at, uplink.meters[0].series) == (None, None, [])
    assert _decode(_raw(doc)).readings == []


def test_gzip_payload_decodes_like_plain_json() -> None:
    assert _decode(gzip.compress(_raw(EXAMPLE))) == _decode(_raw(EXAMPLE))


def _series_values(count: int) -> dict[str, Any]:
    return _with(start="2026-01-01T00:00:00Z", interval_s=60, values=[1.0] * count)


REJECTIONS: list[tuple[str, bytes, str]] = [
    ("not json", b"meter says hi", "Invalid JSON"),
    ("not utf-8", b"\xff\xfe{", "Invalid JSON"),
    ("empty", b"", "Invalid JSON"),
    ("json array", b"[]", "Input should be an object"),
    ("deep nesting", b"[" * 100_000, "recursion limit"),
    ("wrong version", _raw({**EXAMPLE, "v": 2}), "v: Input should be 1"),
    ("version as string", _raw({**EXAMPLE, "v": "1"}), "v: Input should be 1"),
    ("no meters", _raw({"v": 1, "gateway": "GW-0001"}), "meters: Field required"),
    ("no channel", _raw(_with(channel=None)), "channel: Field required"),
    ("unknown field", _raw(_with(interval=900)), "Extra inputs are not permitted"),
    (
        "unknown field named like a log line",
        _raw({**EXAMPLE, "x\nERROR fake": 1}),
        "x?ERROR fake: Extra inputs",
    ),
    ("unknown kind", _raw(_with(kind="gauge")), "kind: Input should be 'interval' or 'register'"),
    ("number as string", _raw(_with(values=[["2026-11-22T09:45:00Z", "1.5"]])), "valid number"),
    ("NaN", _raw(_with(values=[["2026-11-22T09:45:00Z", math.nan]])), "finite number"),
    ("Infinity", _raw(_with(values=[["2026-11-22T09:45:00Z", math.inf]])), "finite number"),
    (
        "overflowing number",
        _raw(_with(start="2026-11-22T09:45:00Z", interval_s=900, values=[1e308])).replace(
            b"1e+308", b"1e999"
        ),
        "finite number",
    ),
    ("naive timestamp", _raw(_with(values=[["2026-11-22T09:45:00", 1.0]])), "timezone"),
    ("naive start", _raw(_with(start="2026-11-22T09:45:00", interval_s=900, values=[1.0])), "timezone"),
    ("bad timestamp", _raw(_with(values=[["yesterday", 1.0]])), "datetime"),
    (
        "negative quality",
        _raw(_with(values=[["2026-11-22T09:45:00Z", 1.0, -1]])),
        "values.0.[ts,value,quality].2: Input should be greater than or equal to 0",
    ),
    (
        "value without timestamp",
        _raw(_with(values=[[1.0]])),
        "values.0: Expected [ts, value] or [ts, value, quality]",
    ),
    ("interval without length", _raw(_with(kind="interval")), "an interval series needs interval_s"),
    ("zero interval", _raw(_with(start="2026-11-22T09:45:00Z", interval_s=0, values=[1.0])), "interval_s"),
    ("gateway id with space", _raw({**EXAMPLE, "gateway": "GW 1"}), "gateway: String should match"),
    (
        "event detail too long",
        _raw(
            {
                **EXAMPLE,
                "meters": [
                    {
                        "id": "M",
                        "events": [
                            {"ts": "2026-11-22T09:50:00Z", "code": "x", "detail": {"note": "n" * 257}}
                        ],
                    }
                ],
            }
        ),
        "at most 256 characters",
    ),
    ("meter id too long", _raw({**EXAMPLE, "meters": [{"id": "M" * 65}]}), "at most 64"),
    ("series list too long", _raw(_series_values(MAX_READINGS + 1)), "at most 200000"),
    (
        "too many readings in total",
        _raw(
            {
                **EXAMPLE,
                "meters": [
                    {"id": f"M{i}", "series": _series_values(MAX_READINGS // 4)["meters"][0]["series"][:1]}
                    for i in range(5)
                ],
            }
        ),
        "250000 readings exceed the limit of 200000",
    ),
    ("too large", b" " * (MAX_PAYLOAD_BYTES + 1), "exceeds"),
    ("corrupt gzip", b"\x1f\x8b" + b"\x00" * 20, "corrupt gzip"),
    ("truncated gzip", gzip.compress(_raw(EXAMPLE))[:-12], "truncated gzip"),
    ("data after gzip", gzip.compress(_raw(EXAMPLE)) * 2, "data after the gzip stream"),
]


@pytest.mark.parametrize(
    ("payload", "reason"), [(p, r) for _, p, r in REJECTIONS], ids=[n for n, _, _ in REJECTIONS]
)
def test_invalid_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(GatewayPayloadError) as caught:
        _decode(payload)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason
    assert len(caught.value.reason) <= 300


def test_reason_points_at_the_offending_value() -> None:
    doc = _with(values=[["2026-11-22T09:45:00Z", 1.0], ["2026-11-22T10:00:00Z", math.nan]])
    with pytest.raises(GatewayPayloadError, match=r"^meters\.0\.series\.0\.timed\.values\.1"):
        _decode(_raw(doc))


def test_gateway_in_body_must_match_topic() -> None:
    with pytest.raises(GatewayPayloadError, match="does not match 'GW-0002' in the topic"):
        _decode(_raw(EXAMPLE), gateway="GW-0002")


def _gzip_bomb(inflated_mib: int) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # zeros deflate about 1000:1
    chunk = b"\x00" * (1024 * 1024)
    return b"".join(deflate.compress(chunk) for _ in range(inflated_mib)) + deflate.flush()


def test_gzip_bomb_is_rejected_quickly_with_bounded_memory() -> None:
    bomb = _gzip_bomb(128)  # 128 MiB of zeros, eight times the limit, in about 128 KiB
    assert len(bomb) < 200 * 1024

    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(GatewayPayloadError, match="inflates beyond"):
            parse_uplink(bomb)
        elapsed = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 3 * MAX_PAYLOAD_BYTES  # zlib's growing output buffer, never the whole bomb


def test_gzip_just_under_the_limit_is_accepted() -> None:
    doc = _raw({"v": 1, "gateway": "GW-0001", "meters": []})
    padded = doc[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(doc)) + b"}"
    assert len(padded) == MAX_PAYLOAD_BYTES
    assert parse_uplink(gzip.compress(padded)).meters == []


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("openami/acme/gw/GW-1/down", "is not openami/<tenant>/gw/<gateway>/up"),
        ("openami/acme/gw/GW-1/up/extra", "is not"),
        ("other/acme/gw/GW-1/up", "is not"),
        ("openami/ac me/gw/GW-1/up", "tenant id 'ac me'"),
        ("openami/acme/gw/GW$1/up", "gateway id 'GW$1'"),
        ("openami/acme/gw//up", "gateway id ''"),
        (f"openami/{'t' * 65}/gw/GW-1/up", "tenant id"),
        ("openami/ac.me/gw/GW-1/up", "tenant id 'ac.me'"),  # a dot would split the bus subject
        ("openami/Acme/gw/GW-1/up", "tenant id 'Acme'"),
    ],
)
def test_bad_topics_are_rejected(topic: str, reason: str) -> None:
    with pytest.raises(GatewayPayloadError) as caught:
        parse_uplink_topic("openami", topic)
    assert reason in caught.value.reason


def test_topic_layout() -> None:
    assert uplink_topic("site/openami", "acme", "GW-0001") == "site/openami/acme/gw/GW-0001/up"
    assert uplink_filter("site/openami") == "site/openami/+/gw/+/up"
    assert parse_uplink_topic("site/openami", "site/openami/acme/gw/GW-0001/up") == ("acme", "GW-0001")
    assert parse_uplink_topic("openami", "openami/acme/gw/GW.roof.1/up") == ("acme", "GW.roof.1")
    with pytest.raises(ValueError, match="gateway id"):
        uplink_topic("openami", "acme", "GW/1")


# --- property-based: round trip and fuzz -------------------------------------------------------------

_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=_offsets)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_codes = st.text(min_size=1, max_size=64)
_units = st.text(max_size=16)
_ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")

_timed = st.builds(
    TimedSeries,
    channel=_codes,
    unit=_units,
    kind=st.just("register"),
    values=st.lists(
        st.one_of(
            st.tuples(_instants, _finite),
            st.tuples(_instants, _finite, st.integers(min_value=0, max_value=2**31 - 1)),
        ),
        max_size=5,
    ),
)
_compact = st.builds(
    CompactSeries,
    channel=_codes,
    unit=_units,
    kind=st.sampled_from(["interval", "register"]),
    start=_instants,
    interval_s=st.integers(min_value=1, max_value=86400),
    values=st.lists(st.one_of(st.none(), _finite), max_size=8),
)
_detail_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    _finite,
    st.text(max_size=256),
)
_events = st.builds(
    EventV1,
    ts=_instants,
    code=_codes,
    severity=st.sampled_from(["info", "warning", "alarm"]),
    detail=st.dictionaries(_codes, _detail_values, max_size=3),
)
_meters = st.builds(
    MeterV1,
    id=_codes,
    series=st.lists(st.one_of(_timed, _compact), max_size=3),
    events=st.lists(_events, max_size=2),
)
_uplinks = st.builds(
    UplinkV1,
    v=st.just(1),
    gateway=_ids,
    seq=st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
    sent_at=st.one_of(st.none(), _instants),
    meters=st.lists(_meters, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(uplink=_uplinks, compress=st.booleans())
def test_encode_then_decode_round_trips(uplink: UplinkV1, compress: bool) -> None:
    payload = encode_uplink(uplink, compress=compress)
    assert payload.startswith(b"\x1f\x8b") == compress
    assert parse_uplink(payload) == uplink

    batch = decode_uplink("acme", uplink.gateway, payload, RECEIVED)
    expected = [
        value if isinstance(value, float) else value[1]
        for meter in uplink.meters
        for series in meter.series
        for value in series.values
        if value is not None
    ]
    assert [reading.value for reading in batch.readings] == expected
    assert len(batch.events) == sum(len(meter.events) for meter in uplink.meters)
    assert all(reading.ts.utcoffset() == timedelta(0) for reading in batch.readings)


def _assert_only_payload_errors(payload: bytes) -> None:
    """Decoding either succeeds or raises GatewayPayloadError; anything else fails the test."""
    with contextlib.suppress(GatewayPayloadError):
        _decode(payload)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=512))
def test_random_bytes_only_ever_raise_payload_errors(payload: bytes) -> None:
    _assert_only_payload_errors(payload)
    _assert_only_payload_errors(b"\x1f\x8b" + payload)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_series_fields = st.fixed_dictionaries(
    {},
    optional={
        "channel": _json,
        "unit": _json,
        "kind": st.sampled_from(["interval", "register"]) | _json,
        "interval_s": st.integers() | _json,
        "start": st.sampled_from(["2026-11-22T09:15:00Z", "2026-11-22T09:15:00"]) | _json,
        "values": st.lists(st.one_of(_json, st.lists(_json, max_size=3)), max_size=4) | _json,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    meters=st.one_of(
        _json,
        st.lists(
            st.fixed_dictionaries(
                {"id": st.text(max_size=70) | _json},
                optional={"series": st.lists(_series_fields, max_size=3) | _json, "events": _json},
            ),
            max_size=3,
        ),
    ),
    top=st.dictionaries(st.sampled_from(["v", "gateway", "seq", "sent_at", "extra"]), _json, max_size=3),
    compress=st.booleans(),
)
def test_structured_garbage_only_ever_raises_payload_errors(
    meters: Any, top: dict[str, Any], compress: bool
) -> None:
    doc = {"v": 1, "gateway": "GW-0001", "meters": meters, **top}
    raw = json.dumps(doc, allow_nan=True).encode()
    _assert_only_payload_errors(gzip.compress(raw) if compress else raw)
