"""The smartmeter-datacollector captures (Iskra AM550, L+G E360/E450 over HDLC, some via GBT, some ciphered).

Expected values come from the upstream test assertions. Upstream names data points; the table below
maps them to OBIS codes (matched on A, C, D, E, F: these meters use channel B=0 or B=1 for the same
quantity). Upstream turned the meter's date-time into local time on a machine running in UTC, so an
aware timestamp is compared in UTC; one without a deviation is compared as is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from openami.protocols.dlms.notification import Notification, NotifiedValue
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.stream import decode_stream, parse_hex_text
from openami.protocols.dlms.units import ScalerUnit
from tests.conftest import corpora_dir

SCS = "dlms/scs"

#: Upstream point name -> OBIS code.
POINTS = {
    "ACTIVE_POWER_P": "1.0.1.7.0.255",
    "ACTIVE_POWER_N": "1.0.2.7.0.255",
    "REACTIVE_POWER_P": "1.0.3.7.0.255",
    "REACTIVE_POWER_N": "1.0.4.7.0.255",
    "ACTIVE_ENERGY_P": "1.0.1.8.0.255",
    "ACTIVE_ENERGY_N": "1.0.2.8.0.255",
    "REACTIVE_ENERGY_P": "1.0.3.8.0.255",
    "REACTIVE_ENERGY_N": "1.0.4.8.0.255",
    "REACTIVE_ENERGY_Q1": "1.0.5.8.0.255",
    "REACTIVE_ENERGY_Q2": "1.0.6.8.0.255",
    "REACTIVE_ENERGY_Q3": "1.0.7.8.0.255",
    "REACTIVE_ENERGY_Q4": "1.0.8.8.0.255",
    "POWER_FACTOR": "1.0.13.7.0.255",
    "VOLTAGE_L1": "1.0.32.7.0.255",
    "VOLTAGE_L2": "1.0.52.7.0.255",
    "VOLTAGE_L3": "1.0.72.7.0.255",
    "CURRENT_L1": "1.0.31.7.0.255",
    "CURRENT_L2": "1.0.51.7.0.255",
    "CURRENT_L3": "1.0.71.7.0.255",
}

#: The L+G meters in the 2026 VSE configuration push registers without their scaler_unit; their current
#: registers count 0.01 A. A head-end reads attribute 3 once and passes it in, as done here.
LG_SCALERS = {Obis.parse(POINTS[p]): ScalerUnit(-2, 33) for p in ("CURRENT_L1", "CURRENT_L2", "CURRENT_L3")}


@cache
def _index() -> dict[str, Any]:
    index: dict[str, Any] = json.loads((corpora_dir() / SCS / "index.json").read_text())
    return index


def _files() -> list[str]:
    try:
        return [c["file"] for c in _index()["captures"]]
    except BaseException:  # corpora_dir() skips or fails outside a test: let the test report it
        return ["corpus-missing"]


def _capture(name: str) -> dict[str, Any]:
    return next(c for c in _index()["captures"] if c["file"] == name)


def _decode(capture: dict[str, Any]) -> tuple[list[Notification], list[str]]:
    data = parse_hex_text((corpora_dir() / SCS / capture["file"]).read_text())
    key = capture["decryption_key"]
    result = decode_stream(
        data, encryption_key=None if key is None else bytes.fromhex(key), scalers=LG_SCALERS
    )
    return result.notifications, result.errors


def _find(notification: Notification, dotted: str) -> NotifiedValue | None:
    want = Obis.parse(dotted)
    return next(
        (
            v
            for v in notification.values
            if (v.obis.a, v.obis.c, v.obis.d, v.obis.e, v.obis.f) == want[:1] + want[2:]
        ),
        None,
    )


def _as_upstream_local(ts: datetime) -> datetime:
    return (ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts).replace(microsecond=0)


@pytest.mark.parametrize("name", _files())
def test_corpus_capture(name: str) -> None:
    capture = _capture(name)
    notifications, errors = _decode(capture)
    if "INVALID" in name:
        assert notifications == []
        assert errors, "a duplicated GBT block must be reported"
        return
    assert errors == []
    assert len(notifications) == 1  # the E450 "2 messages" capture: the first is incomplete and dropped
    notification = notifications[0]
    assert notification.values
    for expected in capture["expected"]:
        if "source" in expected:
            assert notification.meter_id == expected["source"]
        if "timestamp" in expected:
            want = datetime.strptime(expected["timestamp"], expected["timestamp_local_fmt"])
            assert notification.timestamp is not None
            assert _as_upstream_local(notification.timestamp) == want
        for point in expected.get("points_present", []):
            assert _find(notification, POINTS[point]) is not None, point
        for point, value in expected.get("point_values", {}).items():
            got = _find(notification, POINTS[point])
            assert got is not None, point
            assert got.value == pytest.approx(value), (point, got)
        if "n_dlms_objects" in expected:
            assert len(notification.values) == expected["n_dlms_objects"]


def test_corpus_encrypted_without_key_is_an_error() -> None:
    capture = _capture("lg_e450__ENCRYPTED_DATA_NO_PUSHLIST.hex")
    data = parse_hex_text((corpora_dir() / SCS / capture["file"]).read_text())
    result = decode_stream(data)
    assert result.notifications == []
    assert any("no encryption key" in e for e in result.errors)


def test_corpus_extended_register_gas_reading() -> None:
    notifications, errors = _decode(_capture("lg_e450__UNENCRYPTED_EXTENDED_REGISTER_DATA.hex"))
    assert errors == []
    gas = {v.obis.dotted: v.value for v in notifications[0].values}
    assert gas["0.1.24.2.1.255"] == 30545
    assert gas["0.1.96.1.0.255"] == "24521662"
    assert notifications[0].meter_id is None  # only M-Bus sub-device ids: not the meter's own


def test_corpus_units_without_scaler_unit() -> None:
    notifications, _ = _decode(_capture("lg_e450__UNENCRYPTED_VALID_DATA_CFG2026.hex"))
    units = {v.obis.dotted: v.unit for v in notifications[0].values}
    assert units["1.1.1.8.0.255"] == "Wh"
    assert units["1.0.1.7.0.255"] == "W"
    assert units["1.0.32.7.0.255"] == "V"
    assert units["1.0.31.7.0.255"] == "A"
    assert units["0.0.42.0.0.255"] is None


def test_corpus_green_book_ciphered_data_notification() -> None:
    vectors = json.loads((corpora_dir() / "dlms" / "security_vectors.json").read_text())["vectors"]
    vector = next((v for v in vectors if v["name"] == "general_glo_ciphering_data_notification"), None)
    if vector is None:
        pytest.skip("no ciphered data-notification vector in security_vectors.json")
    apdu, key = bytes.fromhex(vector["apdu"]), bytes.fromhex(vector["block_cipher_key"])
    checked = decode_stream(
        apdu, encryption_key=key, authentication_key=bytes.fromhex(vector["authentication_key"])
    )
    unchecked = decode_stream(apdu, encryption_key=key)
    for result in (checked, unchecked):
        assert result.errors == []
        assert len(result.notifications) == 1
        # The body is one proprietary octet-string: no layout claims it, so there are no values to name.
        assert result.notifications[0].values == []
    wrong = decode_stream(apdu, encryption_key=key, authentication_key=bytes(16))
    assert wrong.notifications == []
    assert len(wrong.errors) == 1
