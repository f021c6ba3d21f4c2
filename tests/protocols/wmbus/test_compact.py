"""Compact frames: formats learnt from full frames, compact ones rebuilt and checked by the full-frame CRC."""

from __future__ import annotations

import pytest

from openami.protocols.wmbus import (
    DecodeError,
    FormatCache,
    FormatUnknownError,
    UnsupportedCIError,
    crc16_en13757,
    decode_telegram,
    decode_telegrams,
)
from openami.protocols.wmbus.compact import format_of
from tests.protocols.wmbus.builders import frame

# Volume 12.345 m3 (04 13), flow temperature 45.6 °C (02 5A), a date (42 6C), a text record (0D FD 11).
FULL_APP = bytes.fromhex("041339300000025AC801426C7F2A0DFD1103313233")
#: The compact frame's data fields: 12.352 m3, 45.7 °C, the same date, text "654" (LVAR 03 kept).
COMPACT_DATA = bytes.fromhex("40300000C9017F2A03343536")
FULL_AFTER = bytes.fromhex("041340300000025AC901426C7F2A0DFD1103343536")


def _compact(app: bytes, *, ci: int = 0x79, signature: int | None = None, crc: int | None = None) -> bytes:
    sig = format_of(app).signature if signature is None else signature
    check = crc16_en13757(FULL_AFTER) if crc is None else crc
    header = bytes([ci]) if ci == 0x79 else bytes([ci, 0x11, 0x00, 0x00, 0x00])
    return frame(header + sig.to_bytes(2, "little") + check.to_bytes(2, "little") + COMPACT_DATA)


def _values(telegram: object) -> list[object]:
    return [r.value for r in telegram.records]  # type: ignore[attr-defined]


def test_signature_is_the_crc_of_the_record_headers() -> None:
    fmt = format_of(FULL_APP)
    assert fmt.signature == crc16_en13757(bytes.fromhex("0413025A426C0DFD11"))
    assert [length for _header, length in fmt.layout] == [4, 2, 2, -1]


def test_compact_frame_rebuilt_after_its_full_frame() -> None:
    formats = FormatCache()
    full = decode_telegram(frame(b"\x78" + FULL_APP), formats=formats)
    assert len(formats) == 1
    compact = decode_telegram(_compact(FULL_APP), formats=formats)
    assert _values(full) == [12.345, 45.6, "2019-10-31", "321"]
    assert _values(compact) == [12.352, 45.7, "2019-10-31", "654"]
    assert [r.quantity for r in compact.records] == [r.quantity for r in full.records]


def test_short_header_compact_frame() -> None:
    formats = FormatCache()
    decode_telegram(frame(bytes([0x7A, 0x10, 0, 0, 0]) + FULL_APP), formats=formats)
    compact = decode_telegram(_compact(FULL_APP, ci=0x7B), formats=formats)
    assert compact.access_number == 0x11 and _values(compact)[0] == 12.352


def test_compact_frame_before_any_full_frame_is_a_typed_error() -> None:
    with pytest.raises(FormatUnknownError) as info:
        decode_telegram(_compact(FULL_APP), formats=FormatCache())
    assert info.value.signature == format_of(FULL_APP).signature
    with pytest.raises(UnsupportedCIError):
        decode_telegram(_compact(FULL_APP))  # no cache at all


def test_wrong_full_frame_crc_is_refused() -> None:
    formats = FormatCache()
    decode_telegram(frame(b"\x78" + FULL_APP), formats=formats)
    with pytest.raises(FormatUnknownError, match="full-frame CRC"):
        decode_telegram(_compact(FULL_APP, crc=0x1234), formats=formats)


def test_format_is_per_meter_model() -> None:
    formats = FormatCache()
    decode_telegram(frame(b"\x78" + FULL_APP, manufacturer="ABB"), formats=formats)
    with pytest.raises(FormatUnknownError):
        decode_telegram(_compact(FULL_APP), formats=formats)  # KAM has not sent it


def test_cache_is_bounded() -> None:
    formats = FormatCache(size=2)
    for manufacturer in ("AAA", "BBB", "CCC"):
        decode_telegram(frame(b"\x78" + FULL_APP, manufacturer=manufacturer), formats=formats)
    assert len(formats) == 2
    with pytest.raises(ValueError, match="positive"):
        FormatCache(size=0)


def test_decode_telegrams_shares_formats_and_names_the_bad_one() -> None:
    decoded = decode_telegrams([frame(b"\x78" + FULL_APP), _compact(FULL_APP)])
    assert _values(decoded[1])[0] == 12.352
    with pytest.raises(Exception, match="telegram 1 of 1"):
        decode_telegrams([_compact(FULL_APP)])


@pytest.mark.parametrize("cut", range(1, 8))
def test_truncated_compact_frame_is_a_typed_error(cut: int) -> None:
    formats = FormatCache()
    decode_telegram(frame(b"\x78" + FULL_APP), formats=formats)
    data = _compact(FULL_APP)
    body = data[1:-cut]
    with pytest.raises(DecodeError):
        decode_telegram(bytes([len(body)]) + body, formats=formats)
