"""Data blocks into data sets: addresses, OBIS codes, units, timestamps, JSON, and typed errors."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from openami.protocols.dlms.obis import Obis
from openami.protocols.iec62056_21 import BccError, DecodeError, parse_readout, to_json
from openami.protocols.iec62056_21.datasets import (
    normalise_unit,
    obis_of,
    parse_data_block,
    parse_date,
    parse_time,
)
from openami.protocols.iec62056_21.messages import encode_data_message
from tests.protocols.iec62056_21.examples import EMH_CAPTURE, EMH_DATA, EMH_READOUT, ZMD_TEXT


def test_published_emh_readout() -> None:
    readout = parse_readout(EMH_READOUT)
    assert readout.bcc_checked
    assert readout.identification is not None and readout.identification.manufacturer == "EMH"
    assert len(readout.datasets) == 18
    energy = readout.datasets[0]
    assert (energy.address, energy.obis, energy.value, energy.unit) == (
        "1-0:1.8.0*255",
        Obis(1, 0, 1, 8, 0, 255),
        Decimal(0),
        "Wh",
    )
    assert readout.datasets[2].unit == "varh"
    error = readout.find("0-0:F.F.0*255")
    assert error is not None and error.obis == Obis(0, 0, 97, 97, 0) and error.value == "00000000"
    serial = readout.find("0-0:C.1.0*255")
    assert serial is not None and serial.obis == Obis(0, 0, 96, 1, 0) and serial.value == "03878504"
    period = readout.find("1-0:0.8.4*255")
    assert period is not None and (period.value, period.unit) == (Decimal(5), "min")
    constant = readout.find("1-0:0.3.0*255")
    assert constant is not None and (constant.value, constant.unit) == (Decimal("6.00"), "Imp/kWh")
    billing = readout.find("1-0:0.2.1*50")
    assert billing is not None and billing.obis == Obis(1, 0, 0, 2, 1, 50) and billing.value == "121120??"
    assert readout.find("1-0:0.0.1*255") is not None
    assert readout.timestamp == datetime(2012, 12, 21, 14, 2, 53)


def test_published_capture_with_request_and_ack() -> None:
    readout = parse_readout(EMH_CAPTURE)
    assert readout.option is not None and readout.option.baudrate == 9600
    assert readout.datasets == parse_readout(EMH_READOUT).datasets
    assert parse_readout(EMH_DATA).identification is None


def test_published_zmd_text_readout() -> None:
    readout = parse_readout(ZMD_TEXT)
    assert not readout.bcc_checked
    assert readout.identification is not None and readout.identification.enhanced == "2"
    assert readout.timestamp == datetime(2021, 1, 4, 23, 16, 43)
    historic = readout.find("1.8.1*12")
    assert historic is not None and historic.obis == Obis(1, 0, 1, 8, 1, 12)
    assert historic.value == Decimal("75534.1000")
    other = readout.find("1.8.1&12")
    assert other is not None and other.obis is None
    assert readout.find("C.90.2") is not None and readout.find("C.90.2").obis == Obis(0, 0, 96, 90, 2)  # type: ignore[union-attr]
    doc = to_json(readout)
    assert doc["identification"] == "ZMD4054459.B40" and doc["manufacturer"] == "LGZ"
    assert doc["timestamp"] == "2021-01-04T23:16:43"
    total = next(v for v in doc["values"] if v["address"] == "1.8.0")
    assert total == {
        "address": "1.8.0",
        "obis": "1.0.1.8.0.255",
        "value": 302826,
        "unit": "Wh",
        "raw": "0302.8260*kWh",
    }
    reactive = next(v for v in doc["values"] if v["address"] == "5.8.1")
    assert (reactive["value"], reactive["unit"]) == (64371.4, "varh")


def test_several_sets_per_line_and_multi_value_sets() -> None:
    block = (
        "1.8.1(001.5*kWh)1.8.2(002*kWh) 0.9.1(120000)\r\n"
        "1.6.0(01.23*kW)(2101041315)\r\n"
        "P.01(1)(2)\r\n(3)(4)\r\n!\r\n"
    )
    sets = parse_data_block(block)
    assert [s.address for s in sets] == ["1.8.1", "1.8.2", "0.9.1", "1.6.0", "P.01"]
    assert sets[0].value == Decimal(1500) and sets[1].value == Decimal(2000)
    demand = sets[3]
    assert [(v.value, v.unit) for v in demand.values] == [(Decimal(1230), "W"), ("2101041315", None)]
    assert [v.value for v in sets[4].values] == ["1", "2", "3", "4"]
    assert sets[4].obis == Obis(0, 0, 99, 1, 0)
    doc = to_json(parse_readout(encode_data_message(block)))
    assert doc["values"][3]["more"] == [{"value": "2101041315", "unit": None, "raw": "2101041315"}]
    assert "more" not in doc["values"][0]


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("1.5", "kWh", (Decimal(1500), "Wh")),
        ("2", "MWh", (Decimal(2000000), "Wh")),
        ("3", "kvarh", (Decimal(3000), "varh")),
        ("3", "kVArh", (Decimal(3000), "varh")),
        ("4", "kW", (Decimal(4000), "W")),
        ("4", "KW", (Decimal(4000), "W")),
        ("5", "kVA", (Decimal(5000), "VA")),
        ("230.1", "V", (Decimal("230.1"), "V")),
        ("500", "mA", (Decimal("0.5"), "A")),
        ("50.01", "Hz", (Decimal("50.01"), "Hz")),
        ("7", "kvar", (Decimal(7000), "var")),
    ],
)
def test_units_normalised(value: str, unit: str, expected: tuple[Decimal, str]) -> None:
    assert normalise_unit(Decimal(value), unit) == expected


def test_units_not_scaled() -> None:
    assert normalise_unit(Decimal(1), "m3") is None
    assert normalise_unit(Decimal(1), "°C") is None


@pytest.mark.parametrize(
    ("address", "obis"),
    [
        ("1.8.0", Obis(1, 0, 1, 8, 0)),
        ("1-0:1.8.0*255", Obis(1, 0, 1, 8, 0)),
        ("1-0:1.8.0", Obis(1, 0, 1, 8, 0)),
        ("0-0:C.1.0*255", Obis(0, 0, 96, 1, 0)),
        ("C.1.0", Obis(0, 0, 96, 1, 0)),
        ("F.F", Obis(0, 0, 97, 97, 0)),
        ("0.9.1", Obis(1, 0, 0, 9, 1)),
        ("1.8.0*03", Obis(1, 0, 1, 8, 0, 3)),
        ("L.1.0", Obis(0, 0, 98, 1, 0)),
        ("1.8.0&12", None),
        ("1.8.256", None),
        ("Point-ID", None),
        ("", None),
    ],
)
def test_obis_of_addresses(address: str, obis: Obis | None) -> None:
    assert obis_of(address) == obis


def test_dates_and_times() -> None:
    assert parse_date("121221") == date(2012, 12, 21)
    assert parse_date("21-01-04") == date(2021, 1, 4)
    assert parse_date("20240229") == date(2024, 2, 29)
    assert parse_date("211301") is None and parse_date("x") is None
    assert parse_time("140253") == time(14, 2, 53)
    assert parse_time("23:16:43") == time(23, 16, 43)
    assert parse_time("2316") == time(23, 16)
    assert parse_time("256000") is None
    assert parse_readout(b"0.9.1(999999)\r\n0.9.2(121221)\r\n!\r\n").timestamp is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no data message"),
        (b"\r\n", "no data message"),
        (b"/ISK5ME382", "no CR LF"),
        (b"/?!", "no CR LF"),
        (b"/ISK5ME382\r\n", "no data message"),
        (b"1.8.0(1*kWh)\r\n", "no end line"),
        (b"1.8.0(1*kWh\r\n!\r\n", "unclosed"),
        (b"1.8.0(1*kWh)junk\r\n!\r\n", "text after"),
        (b"(1)\r\n!\r\n", "without an address"),
        (b"1.8.0((1))\r\n!\r\n", "inside a value"),
        (b"1.8/0(1)\r\n!\r\n", "bad character"),
        (b"1.8.0(1\x07)\r\n!\r\n", "control character"),
        (b"1.8.0(1)\r\n!\r\nmore\r\n", "after the end"),
        (b"\x021.8.0(1)\r\n!\r\n\x03", "no BCC"),
        (b"\x021.8.0(1)\r\n!\r\n", "no ETX"),
        (encode_data_message("1.8.0(1)\r\n!\r\n") + b"x", "after the data message"),
        (encode_data_message("1.8.0(1)\r\n"), "no end line"),
        (b"/XY5\r\n\x02!\r\n\x03\x00", "identification"),
        (b"\x06\r\n\x02", "option select"),
    ],
)
def test_malformed_input_raises_decode_error(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        parse_readout(data)


def test_wrong_bcc_is_a_bcc_error_unless_unchecked() -> None:
    broken = EMH_READOUT[:-1] + b"-"
    with pytest.raises(BccError):
        parse_readout(broken)
    readout = parse_readout(broken, check_bcc=False)
    assert not readout.bcc_checked and len(readout.datasets) == 18


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="no data message"):
        parse_readout(b"")
