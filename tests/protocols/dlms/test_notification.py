"""Push bodies to meter values: layout recognisers, scalers and units, meter id and time; the stream
front end (framing detection, hex text) and its promise to never raise anything but its own errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.apdu import DataNotification
from openami.protocols.dlms.axdr import CosemDate, CosemDateTime, CosemTime, Data, encode_data
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.notification import default_unit, interpret, jsonable
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.stream import decode_stream, parse_hex_text
from openami.protocols.dlms.units import UNIT_SYMBOLS, ScalerUnit, unit_symbol

CLOCK = Obis(0, 0, 1, 0, 0, 255)
ENERGY = Obis(1, 0, 1, 8, 0, 255)
VOLTAGE = Obis(1, 0, 32, 7, 0, 255)
DT = CosemDateTime(CosemDate(2024, 3, 1, 5), CosemTime(12, 0, 0, 0), -60, 0)
DT12 = bytes.fromhex("07e8030105 0c000000 ffc4 00".replace(" ", ""))


def _os(obis: Obis) -> Data:
    return Data.octet_string(obis.to_bytes())


def _notify(body: Data, when: CosemDateTime | None = None) -> DataNotification:
    return DataNotification(1, False, False, when, body)


# --------------------------------------------------------------------------------------------- units


def test_notification_scaler_unit_apply() -> None:
    assert ScalerUnit(-1, 35).apply(2307) == 230.7
    assert ScalerUnit(-2, 33).apply(9) == 0.09
    assert ScalerUnit(3, 30).apply(12) == 12000
    assert isinstance(ScalerUnit(3, 30).apply(12), int)
    assert ScalerUnit(0, 27).apply(5) == 5
    assert ScalerUnit(1, 27).apply(1.5) == 15.0
    assert (ScalerUnit(0, 30).symbol, ScalerUnit(0, 255).symbol, ScalerUnit(0, 200).symbol) == (
        "Wh",
        None,
        None,
    )
    assert (UNIT_SYMBOLS[27], UNIT_SYMBOLS[9], unit_symbol(32)) == ("W", "°C", "varh")


@pytest.mark.parametrize(
    ("obis", "unit"),
    [
        ("1.0.1.8.0.255", "Wh"),
        ("1.1.2.8.1.255", "Wh"),
        ("1.0.1.7.0.255", "W"),
        ("1.0.5.8.0.255", "varh"),
        ("1.0.4.7.0.255", "var"),
        ("1.0.9.7.0.255", "VA"),
        ("1.0.31.7.0.255", "A"),
        ("1.0.72.7.0.255", "V"),
        ("1.0.14.7.0.255", "Hz"),
        ("1.0.13.7.0.255", None),
        ("0.0.96.1.0.255", None),
        ("7.0.3.0.0.255", None),
    ],
)
def test_notification_default_unit(obis: str, unit: str | None) -> None:
    assert default_unit(Obis.parse(obis)) == unit


# --------------------------------------------------------------------------------------- recognisers


def test_notification_push_object_list_with_scaler_attribute() -> None:
    push = Obis(0, 0, 25, 9, 0, 255)
    descriptors = Data.array(
        *(
            Data.structure(Data.uint16(c), _os(o), Data.int8(a), Data.uint16(0))
            for c, o, a in [
                (40, push, 2),
                (1, Obis(0, 0, 96, 1, 0, 255), 2),
                (8, CLOCK, 2),
                (3, VOLTAGE, 2),
                (3, VOLTAGE, 3),
            ]
        )
    )
    body = Data.structure(
        descriptors,
        Data.octet_string(b"MTR-1"),
        Data.date_time(DT),
        Data.uint16(2311),
        Data.structure(Data.int8(-1), Data.enum(35)),
    )
    n = interpret(_notify(body))
    assert n.meter_id == "MTR-1"
    assert n.timestamp == datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    assert [(v.obis, v.value, v.unit) for v in n.values] == [
        (Obis(0, 0, 96, 1, 0, 255), "MTR-1", None),
        (CLOCK, "2024-03-01T12:00:00+01:00", None),
        (VOLTAGE, 231.1, "V"),
    ]


def test_notification_obis_value_list_and_header_time() -> None:
    body = Data.array(
        Data.structure(_os(ENERGY), Data.uint32(1234), Data.structure(Data.int8(3), Data.enum(30))),
        Data.structure(_os(Obis(0, 0, 42, 0, 0, 255)), Data.visible_string("LGZ1")),
    )
    n = interpret(_notify(body, DT))
    assert (n.meter_id, n.timestamp) == ("LGZ1", datetime(2024, 3, 1, 11, 0, tzinfo=UTC))
    assert (n.values[0].value, n.values[0].unit, n.values[0].raw) == (1234000, "Wh", Data.uint32(1234))


def test_notification_body_clock_wins_over_header() -> None:
    later = CosemDateTime(CosemDate(2024, 3, 1, 5), CosemTime(12, 0, 1, 0), -60, 0)
    body = Data.structure(
        Data.visible_string("ID"), _os(CLOCK), Data.octet_string(DT12), _os(ENERGY), Data.uint32(5)
    )
    n = interpret(_notify(body, later))
    assert n.timestamp == datetime(2024, 3, 1, 11, 0, tzinfo=UTC)
    assert [v.obis for v in n.values] == [CLOCK, ENERGY]


def test_notification_inline_obis_skips_null_padding() -> None:
    body = Data.structure(
        Data.visible_string("Kamstrup_V0001"),
        _os(ENERGY),
        Data.uint32(7),
        Data.null(),
        Data.null(),
        _os(VOLTAGE),
        Data.uint16(230),
    )
    n = interpret(_notify(body))
    assert [(v.obis, v.value, v.unit) for v in n.values] == [(ENERGY, 7, "Wh"), (VOLTAGE, 230, "V")]


def test_notification_caller_scalers_apply_when_push_has_none() -> None:
    body = Data.structure(_os(VOLTAGE), Data.uint16(2357))
    n = interpret(_notify(body), scalers={VOLTAGE: ScalerUnit(-1, 35)})
    assert (n.values[0].value, n.values[0].unit) == (235.7, "V")


@pytest.mark.parametrize(
    "body",
    [
        Data.octet_string(bytes(34)),
        Data.structure(Data.visible_string("KFM_001"), Data.uint32(1), Data.uint32(2)),  # positional: no OBIS
        Data.structure(_os(ENERGY)),  # OBIS without its value
        Data.array(),
        Data.uint8(1),
    ],
)
def test_notification_unknown_layout_yields_no_values(body: Data) -> None:
    n = interpret(_notify(body))
    assert (n.meter_id, n.values) == (None, [])


def test_notification_jsonable() -> None:
    assert jsonable(Data.structure(Data.octet_string(b"\x01\xff"), Data.uint8(3), Data.date_time(DT))) == [
        "01ff",
        3,
        "2024-03-01T12:00:00+01:00",
    ]


# -------------------------------------------------------------------------------------------- stream


def test_notification_hex_text() -> None:
    assert parse_hex_text("0x0F 00\n01, db  # comment\n// more\nAB:cd") == bytes.fromhex("0f0001dbabcd")
    assert parse_hex_text("") == b""
    for bad in ("abc", "0g", "12 3"):
        with pytest.raises(DecodeError):
            parse_hex_text(bad)


def test_notification_stream_wrapper_framing() -> None:
    apdu = b"\x0f\x00\x00\x00\x01\x00" + encode_data(Data.structure(_os(ENERGY), Data.uint32(9)))
    wrapped = b"\x00\x01\x00\x01\x00\x10" + len(apdu).to_bytes(2, "big") + apdu
    result = decode_stream(wrapped + wrapped)
    assert result.errors == []
    assert [n.values[0].value for n in result.notifications] == [9, 9]


def test_notification_stream_garbage_reports_errors() -> None:
    for data in (b"", b"\x7e\x7e\x7e", b"\x00\x01\xff", b"\x01\x02\x03", b"\xdb\x08" + bytes(20)):
        result = decode_stream(data)
        assert result.notifications == []
        assert result.errors


@given(
    st.binary(max_size=300),
    st.sampled_from([b"", b"\x7e\xa0", b"\x00\x01", b"\xe6\xe7\x00\x0f", b"\xe0\x80"]),
)
def test_notification_stream_never_raises(data: bytes, prefix: bytes) -> None:
    result = decode_stream(prefix + data, encryption_key=bytes(16))
    assert isinstance(result.errors, list)
