"""CI dispatch: TPL headers, ELL, AFL, manufacturer-specific CIs, typed errors for the rest."""

from __future__ import annotations

import pytest

from openami.protocols.wmbus import DecodeError, UnsupportedCIError, decode_telegram, registry, to_json
from openami.protocols.wmbus.transport import parse_afl, parse_tpl
from tests.protocols.wmbus.builders import RECORDS, frame


def test_short_header() -> None:
    telegram = decode_telegram(frame(bytes([0x7A, 0x05, 0x04, 0x00, 0x00]) + RECORDS))
    assert telegram.access_number == 5 and telegram.status == 4 and telegram.security_mode == 0
    assert telegram.application_data == RECORDS


def test_long_header_names_the_meter() -> None:
    long_header = bytes.fromhex("21436587") + (0x0442).to_bytes(2, "little") + bytes([0x02, 0x04])
    telegram = decode_telegram(frame(bytes([0x72]) + long_header + bytes([0x09, 0x00, 0x00, 0x00]) + RECORDS))
    assert telegram.address.id == "87654321"
    assert telegram.address.medium == "heat"
    assert telegram.link.address.id == "12345678"
    header = to_json(telegram)["header"]
    assert header["id"] == "87654321" and header["version"] == 2 and header["access_number"] == 9


def test_no_header_with_ell_access_number() -> None:
    telegram = decode_telegram(frame(bytes([0x8C, 0x20, 0x77, 0x78]) + RECORDS))
    assert telegram.ell is not None and telegram.ell.communication_control == 0x20
    assert telegram.access_number == 0x77 and telegram.status == 0


def test_ell_with_second_address() -> None:
    ell = bytes([0x8E, 0x00, 0x01]) + bytes(8)
    telegram = decode_telegram(frame(ell + bytes([0x78]) + RECORDS))
    assert telegram.ell is not None and telegram.ell.address2 is not None


def test_manufacturer_ci_kept_raw() -> None:
    telegram = decode_telegram(frame(bytes([0xA2]) + b"\x01\x02\x03"))
    assert telegram.manufacturer_data == b"\x01\x02\x03"
    assert telegram.manufacturer_values == {}


def test_registry_example_decoder() -> None:
    assert registry.lookup("ZZZ", 1, 7) is not None
    telegram = decode_telegram(frame(bytes([0xA0]) + (1234).to_bytes(4, "little"), manufacturer="ZZZ"))
    assert telegram.manufacturer_values == {"counter": 1234}
    short = decode_telegram(frame(bytes([0xA0, 0x01]), manufacturer="ZZZ"))
    assert short.manufacturer_values == {}  # decoder refused: raw bytes kept
    registry.register("ZZY", lambda data: {"n": len(data)}, version=0x1B)
    assert registry.lookup("ZZY", 0x1B, 7) is not None and registry.lookup("ZZY", 0x1C, 7) is None


@pytest.mark.parametrize("ci", [0x7C, 0x7F, 0x51, 0x00, 0xFF, 0x70])
def test_unsupported_ci(ci: int) -> None:
    with pytest.raises(UnsupportedCIError) as info:
        decode_telegram(frame(bytes([ci]) + RECORDS))
    assert info.value.ci == ci


def test_truncated_headers() -> None:
    for body in (b"\x7a\x01", b"\x72\x01\x02", b"\x8d\x20", b"\x90\x05\x00"):
        with pytest.raises(DecodeError):
            decode_telegram(frame(body))


def test_afl_fields() -> None:
    fcl = 0x2000 | 0x0800 | 0x0400 | 0x1000
    body = (
        fcl.to_bytes(2, "little")
        + bytes([0x65])
        + (9).to_bytes(4, "little")
        + bytes(8)
        + (30).to_bytes(2, "little")
    )
    data = bytes([0x90, len(body)]) + body + b"\x7a"
    afl, end = parse_afl(data, 0)
    assert end == len(data) - 1
    assert afl.message_counter == 9 and afl.message_length == 30 and len(afl.mac) == 8
    # MCL 0x65: counter and length are covered by the MAC.
    assert afl.mac_input_prefix == bytes([0x65]) + (9).to_bytes(4, "little") + (30).to_bytes(2, "little")


def test_afl_fragment_refused() -> None:
    body = (0x4000 | 0x01).to_bytes(2, "little")
    with pytest.raises(DecodeError):
        decode_telegram(frame(bytes([0x90, 2]) + body + bytes([0x78]) + RECORDS))


def test_mode7_config_extension() -> None:
    tpl, end = parse_tpl(bytes([0x7A, 1, 0, 0x10, 0x07, 0x10]), 0)
    assert tpl.security_mode == 7 and tpl.encrypted_blocks == 1 and tpl.config_extension == 0x10 and end == 6


def test_to_json_records_from_mbus_decoder() -> None:
    out = to_json(decode_telegram(frame(bytes([0x7A, 0x05, 0x00, 0x00, 0x00]) + RECORDS)))
    assert set(out) == {"header", "records"}
    assert set(out["header"]) == {"id", "manufacturer", "version", "medium", "access_number", "status"}
    assert out["header"]["manufacturer"] == "KAM" and out["header"]["medium"] == "water"
    (record,) = out["records"]
    assert record["value"] == pytest.approx(12.345) and record["unit"] == "m3"
