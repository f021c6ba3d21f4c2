"""The gateway link's pure parts: topics, subscription filters, and the payload parsers' salvage rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openami.hes.gateway_link import (
    UnusablePayload,
    link_filter,
    link_topics,
    parse_batch,
    parse_discovery,
    parse_link_topic,
)

TS = "2026-12-01T00:15:00+00:00"


def _series(meter: str = "MB-1", **changes: Any) -> dict[str, Any]:
    return {
        "meter": meter,
        "channel": "energy",
        "unit": "Wh",
        "kind": "register",
        "points": [[TS, 1.5, 0]],
    } | changes


def test_topics_and_filters() -> None:
    assert link_topics("openami", "acme", "GW.roof-1") == (
        "openami/acme/gw/GW.roof-1/link/up",
        "openami/acme/gw/GW.roof-1/link/down",
    )
    assert parse_link_topic("a/b", "a/b/acme/gw/GW-1/link/up") == ("acme", "GW-1")
    assert link_filter("openami") == "openami/+/gw/+/link/up"
    assert link_filter("openami", "hes") == "$share/hes/openami/+/gw/+/link/up"
    for topic in (
        "openami/acme/gw/GW-1/link/down",
        "openami/acme/gw/GW-1/up",
        "other/acme/gw/GW-1/link/up",
        "openami/Acme/gw/GW-1/link/up",
        "openami/acme/gw/GW 1/link/up",
        "openami/acme/gw/GW-1/link/up/more",
    ):
        with pytest.raises(ValueError, match=r"topic|tenant|gateway"):
            parse_link_topic("openami", topic)


def test_a_valid_batch_takes_the_fast_path() -> None:
    body = {
        "series": [_series()],
        "events": [{"meter": "MB-1", "ts": TS, "code": "leak", "severity": "alarm"}],
    }
    parsed = parse_batch(json.dumps(body).encode())
    assert (len(parsed.series), len(parsed.events), parsed.problems) == (1, 1, [])
    assert parse_batch(b'{"series": [], "events": [], "future_field": 1}').problems == []


def test_invalid_items_are_dropped_one_by_one() -> None:
    nan_point = _series(
        points=[[TS, 1.0, 0], [TS.replace("00:15", "00:30"), "NaN", 0], ["yesterday", 2.0, 0]]
    )
    body = {
        "series": [nan_point, _series(unit="x" * 17), _series("MB-\x00"), _series("MB-2")],
        "events": [
            {"meter": "MB-1", "ts": TS, "code": "x", "severity": "fatal"},
            {"meter": "MB-1", "ts": TS},
        ],
    }
    parsed = parse_batch(json.dumps(body).encode())
    assert [(s.meter, len(s.points)) for s in parsed.series] == [("MB-1", 1), ("MB-2", 1)]
    assert parsed.events == []
    assert parsed.problems[0].startswith("series[0]: 2 points dropped")
    assert parsed.problems[1].startswith("series[1] dropped: unit")
    assert "events[0] dropped: severity" in parsed.problems[2]
    assert "events[1] dropped: code" in parsed.problems[3]
    assert parsed.problems[4] == "series 'MB-\\x00'/'energy' dropped: control characters"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"series": {}}', "must be lists"),
        (json.dumps({"series": [{"meter": "MB-1"}]}).encode(), "nothing in the batch is valid"),
    ],
)
def test_unusable_batches(payload: bytes, reason: str) -> None:
    with pytest.raises(UnusablePayload, match=reason):
        parse_batch(payload)


def test_discovery_devices_are_validated_and_deduplicated() -> None:
    devices = [
        {"protocol": "mbus", "id": "1", "address": "a", "manufacturer": "KAM", "medium": "heat", "extra": 1},
        {"protocol": "mbus", "id": "1", "address": "b"},  # the same device again: the last report wins
        {"protocol": "mbus", "id": "2\x00"},
        {"protocol": "", "id": "3"},
    ]
    found, problems = parse_discovery(json.dumps({"devices": devices}).encode())
    assert [(d.protocol, d.ident, d.address) for d in found] == [("mbus", "1", "b")]
    assert [p.split(":")[0] for p in problems] == ["devices[2] dropped", "devices[3] dropped"]
    with pytest.raises(UnusablePayload, match="must be a list"):
        parse_discovery(b'{"devices": null}')
    with pytest.raises(UnusablePayload, match="no valid device"):
        parse_discovery(b'{"devices": [{"id": 1}]}')
