"""EN 13757-3 application layer: DIF/DIFE, VIF tables, data codings, headers, CIs and the JSON form."""

from __future__ import annotations

import pytest

from openami.protocols.mbus import (
    ApplicationError,
    DecodeError,
    decode_frame,
    decode_records,
    parse_long_header,
    to_json,
)
from openami.protocols.mbus.dif import encode_dib, parse_dib
from openami.protocols.mbus.frames import FrameKind, MbusFrame, encode_frame
from openami.protocols.mbus.header import decode_manufacturer, encode_manufacturer
from openami.protocols.mbus.values import decode_bcd, decode_time_point

LONG_HEADER = bytes.fromhex("78563412 2D2C 1B 04 2A 00 0000")  # 12345678, KAM, v27, heat, access 42


def one(record_hex: str):  # type: ignore[no-untyped-def]
    records = decode_records(bytes.fromhex(record_hex))
    assert len(records) == 1
    return records[0]


@pytest.mark.parametrize(
    ("record", "value", "unit", "quantity"),
    [
        ("0C06 78563412", 12345678000, "Wh", "energy"),  # kWh, BCD8
        ("0403 39300000", 12345, "Wh", "energy"),
        ("040E 01000000", 1000000, "J", "energy"),  # MJ
        ("0C13 15310000", 3.115, "m3", "volume"),  # litres
        ("0215 0A00", 1.0, "m3", "volume"),  # 0.1 m3
        ("021B 0500", 5, "kg", "mass"),
        ("0222 0200", 7200, "s", "on_time"),  # hours
        ("0227 0100", 86400, "s", "operating_time"),  # days
        ("022D 0300", 300, "W", "power"),
        ("0233 E803", 1000000, "J/h", "power"),
        ("023B E803", 1.0, "m3/h", "volume_flow"),
        ("0247 0100", 60, "m3/h", "volume_flow"),  # m3/min
        ("024F 0100", 36, "m3/h", "volume_flow"),  # 0.01 m3/s
        ("0253 0100", 1, "kg/h", "mass_flow"),
        ("025A 2B02", 55.5, "°C", "flow_temperature"),
        ("025E 0A00", 1.0, "°C", "return_temperature"),
        ("0262 F6FF", -1.0, "K", "temperature_difference"),
        ("0265 C800", 2.0, "°C", "external_temperature"),
        ("0269 0A00", 0.1, "bar", "pressure"),
        ("026E 0500", 5, "HCA", "hca"),
        ("0171 05", 300, "s", "averaging_duration"),
        ("0174 04", 4, "s", "actuality_duration"),
        ("0C78 78563412", 12345678, None, "fabrication_no"),
        ("017A 05", 5, None, "bus_address"),
        ("05 2E 0000C03F", 1500.0, "W", "power"),  # real32 1.5 kW
        ("04FD48 E6000000", 23.0, "V", "voltage"),  # 0.1 V
        ("04FD59 E8030000", 1.0, "A", "current"),  # mA
        ("02FD17 0180", 0x8001, None, "error_flags"),  # bit field: unsigned
        ("01FD1B 03", 3, None, "digital_input"),
        ("01FD0C 07", 7, None, "model_version"),
        ("02FD60 0500", 5, None, "reset_counter"),
        ("02FD74 0A00", 864000, "s", "remaining_battery_life"),
        ("02FD01 E803", 10.0, "currency", "credit"),  # 0.01 units
        ("01FB1A 2D", 4.5, "%", "relative_humidity"),
        ("02FB01 0100", 1000000, "Wh", "energy"),  # 10 MWh range starts at 0.1 MWh * 10
        ("0E 06 563412000000", 123456000, "Wh", "energy"),  # BCD12
        ("07 06 0100000000000000", 1000, "Wh", "energy"),  # int64
        ("06 06 010000000000", 1000, "Wh", "energy"),  # int48
        ("03 06 FFFFFF", -1000, "Wh", "energy"),  # int24, two's complement
    ],
)
def test_primary_and_extension_vifs(record: str, value: object, unit: str | None, quantity: str) -> None:
    r = one(record)
    assert (r.quantity, r.unit) == (quantity, unit)
    assert r.value == pytest.approx(value)


def test_negative_bcd_and_bad_digits() -> None:
    assert decode_bcd(bytes.fromhex("34F2")) == -234
    assert decode_bcd(bytes.fromhex("3412")) == 1234
    assert decode_bcd(bytes.fromhex("BDEB")) == "EBBD"


def test_dif_storage_tariff_subunit() -> None:
    dib, end = parse_dib(bytes.fromhex("C4 8F 4F"), 0)
    assert (dib.storage, dib.tariff, dib.subunit, end) == (1 + (15 << 1) + (15 << 5), 0, 2, 3)
    for storage, tariff, subunit in [(0, 0, 0), (1, 0, 0), (2, 1, 0), (300, 3, 1), (8191, 15, 3)]:
        dib, _ = parse_dib(encode_dib(4, 2, storage, tariff, subunit), 0)
        assert (dib.storage, dib.tariff, dib.subunit, dib.function) == (storage, tariff, subunit, "minimum")


def test_functions_specials_and_fillers() -> None:
    records = decode_records(bytes.fromhex("2F 2F 14 13 01000000 34 13 02000000 24 13 03000000 0F 01 02"))
    assert [r.function for r in records] == [
        "maximum",
        "value_during_error",
        "minimum",
        "manufacturer_specific",
    ]
    assert records[-1].value == b"\x01\x02"
    more = decode_records(bytes.fromhex("04 13 01000000 1F"))
    assert more[-1].function == "more_records_follow"
    assert decode_records(bytes.fromhex("08 13 00 13"))[0].value is None  # selection for readout


def test_time_points() -> None:
    assert one("026C 9F1C").value == "2012-12-31"
    assert one("046D 2B0B6918").value == "2011-08-09T11:43:00"
    assert one("046D 2B8B6918").value is not None  # SU bit only
    assert one("046D AB0B6918").value is None  # IV: invalid
    assert decode_time_point(bytes.fromhex("0A1E0D")) == "13:30:10"
    assert decode_time_point(bytes.fromhex("0A1E0D0F2C00")) == "2016-12-15T13:30:10"


def test_vife_orthogonal_and_unknown_kept() -> None:
    r = one("04 93 3B 01000000")  # volume, accumulation only if positive
    assert r.annotations == ("accumulation_if_positive",)
    r = one("04 86 22 01000000")  # kWh per hour
    assert r.unit == "Wh/h"
    r = one("02 AB F4 7F 0100")  # W, correction 10^-2 then manufacturer-specific VIFE
    assert r.value == pytest.approx(0.01)
    r = one("01 AB 65 03")  # W with an unknown VIFE 0x65: kept as annotation, value still decoded
    assert r.annotations == ("vife_0x65",)
    assert r.value == 3
    r = one("02 FF 01 0500")  # manufacturer-specific VIF: a number with no unit
    assert (r.quantity, r.unit, r.value) == ("manufacturer_specific", None, 5)


def test_plain_text_vif_and_lvar() -> None:
    r = one("02 FC 03 48 52 25 74 D4 11")  # "%RH", correction 10^-2
    assert (r.quantity, r.unit, r.value) == ("plain_text", "%RH", pytest.approx(45.64))
    assert one("0D FD 11 03 43 42 41").value == "ABC"  # customer, text LVAR, last char first
    assert one("0D 13 C2 34 12").value == pytest.approx(1.234)  # positive BCD LVAR, litres
    assert one("0D 13 D2 34 12").value == pytest.approx(-1.234)
    assert one("0D 13 E2 34 12").value == pytest.approx(4.66)  # 2-byte binary LVAR
    with pytest.raises(DecodeError, match="reserved LVAR"):
        decode_records(bytes.fromhex("0D 13 FA 00"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("04 13 0100", "runs past"),
        ("84", "DIFE chain"),
        ("04", "before the VIF"),
        ("04 93", "VIFE chain"),
        ("84 80 80 80 80 80 80 80 80 80 80 00 13 00000000", "more than 10 DIFE"),
        ("04 93 80 80 80 80 80 80 80 80 80 80 00 00000000", "more than 10 VIFE"),
        ("04 7C 09 41", "plain-text unit"),
        ("3F", "reserved special"),
        ("0D 13", "LVAR"),
    ],
)
def test_structure_errors_are_typed(data: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_records(bytes.fromhex(data))


def test_long_header_and_manufacturer() -> None:
    h = parse_long_header(LONG_HEADER)
    assert (h.id, h.manufacturer, h.version, h.medium, h.access_number, h.status) == (
        "12345678", "KAM", 27, "heat_outlet", 42, 0,
    )  # fmt: skip
    assert encode_manufacturer("KAM") == 0x2C2D
    assert decode_manufacturer(0x2C2D) == "KAM"
    assert parse_long_header(b"\x00" + LONG_HEADER, offset=1) == h
    with pytest.raises(DecodeError):
        parse_long_header(LONG_HEADER[:11])


def _frame(ci: int, data: bytes) -> bytes:
    return encode_frame(MbusFrame(FrameKind.LONG, 0x08, 3, ci, data))


def test_ci_variants_and_json() -> None:
    body = bytes.fromhex("0C06 78563412")
    long_ = decode_frame(_frame(0x72, LONG_HEADER + body))
    assert to_json(long_) == {
        "header": {
            "id": "12345678",
            "manufacturer": "KAM",
            "version": 27,
            "medium": "heat_outlet",
            "access_number": 42,
            "status": 0,
        },
        "records": [
            {
                "value": 12345678000,
                "unit": "Wh",
                "quantity": "energy",
                "function": "instantaneous",
                "storage": 0,
                "tariff": 0,
                "subunit": 0,
            }
        ],
    }
    short = to_json(decode_frame(_frame(0x7A, bytes.fromhex("07 10 0000") + body)))
    assert short["header"] == {"id": None, "manufacturer": None, "version": None, "medium": None,
                               "access_number": 7, "status": 0x10}  # fmt: skip
    none = decode_frame(_frame(0x78, body))
    assert none.header is None and none.records[0].value == 12345678000
    fixed = to_json(decode_frame(_frame(0x73, bytes.fromhex("78563412 0A 00 E9 7E 01000000 35010000"))))
    assert fixed["header"]["medium"] == "water"
    assert [(r["value"], r["unit"], r["storage"]) for r in fixed["records"]] == [
        (0.001, "m3", 0),
        (0.135, "m3", 1),
    ]
    with pytest.raises(ApplicationError) as err:
        decode_frame(_frame(0x70, b"\x08"))
    assert err.value.code == 8
    with pytest.raises(DecodeError, match="CI 0x51"):
        decode_frame(_frame(0x51, body))
    with pytest.raises(DecodeError, match="encrypted"):
        decode_frame(_frame(0x72, LONG_HEADER[:10] + b"\x00\x05" + body))
    assert to_json(decode_frame(_frame(0x72, LONG_HEADER + b"\x0f\xab")))["records"][0]["value"] == "AB"
