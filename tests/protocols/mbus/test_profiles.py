"""Compact profiles (VIFE 0x13/0x1E/0x1F): a record per element, invalid elements kept as the meter's code."""

from __future__ import annotations

import pytest

from openami.protocols.mbus import DecodeError, decode_records


def _profile(vif: str, vife: str, body: str) -> bytes:
    data = bytes.fromhex(body)
    return bytes.fromhex(f"8D04{vif}{vife}") + bytes([len(data)]) + data


def test_inverse_profile_of_bcd_hca_values() -> None:
    # Spacing control 0x3B: absolute values, days, 6-digit BCD; spacing 0xFE: one month.
    records = decode_records(_profile("EE", "13", "3BFE990000520000100000000000FFFFFF"))
    assert [r.value for r in records] == [99, 52, 10, 0, "FFFFFF"]
    assert {r.storage for r in records} == {8} and {r.unit for r in records} == {"HCA"}
    assert records[1].annotations == ("inverse_compact_profile", "absolute", "spacing=1month", "element=2")


def test_profile_of_scaled_volumes_with_invalid_marker() -> None:
    # VIF 0x93 (litres, extended) + VIFE 0x1F; 0x24: absolute, hours, int32; spacing 1 h; 0x80000000 = none.
    records = decode_records(_profile("93", "1F", "240139300000000000803A300000"))
    assert [r.value for r in records] == [12.345, None, 12.346]
    assert records[0].annotations == ("compact_profile", "absolute", "spacing=1h", "element=1")


def test_increments_are_reported_as_sent() -> None:
    records = decode_records(_profile("93", "1F", "520205000700"))
    assert [r.value for r in records] == [0.005, 0.007]
    assert "positive_increment" in records[0].annotations and "spacing=2min" in records[0].annotations


def test_profile_with_register_numbers_is_kept_raw() -> None:
    (record,) = decode_records(_profile("93", "1E", "240139300000"))
    assert record.value == bytes.fromhex("240139300000")


@pytest.mark.parametrize(
    "body", ["24", "2401393000", "2801", "2D01"], ids=["no-spacing", "partial-element", "no-size", "lvar"]
)
def test_malformed_profiles_are_typed_errors(body: str) -> None:
    with pytest.raises(DecodeError):
        decode_records(_profile("93", "1F", body))


def test_error_vife_outside_a_variable_field_stays_an_error_code() -> None:
    (record,) = decode_records(bytes.fromhex("04931539300000"))  # VIFE 0x15 on a 32-bit field
    assert record.value == 12.345 and record.annotations == ("record_error_21",)
