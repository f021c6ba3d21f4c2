"""Link layer: the EN 13757 CRC, frame formats A and B, CRC detection, addresses."""

from __future__ import annotations

import pytest

from openami.protocols.wmbus import FrameError, decode_telegram, parse_link
from openami.protocols.wmbus.link import (
    C_SND_IR,
    add_crc_format_a,
    add_crc_format_b,
    crc16_en13757,
    manufacturer_code,
    manufacturer_name,
    strip_crc_format_a,
    strip_crc_format_b,
)
from tests.protocols.wmbus.builders import RECORDS, frame

PLAIN = frame(bytes([0x78]) + RECORDS[:8])


def test_crc_check_value() -> None:
    # CRC-16/EN-13757 catalogue check value over "123456789".
    assert crc16_en13757(b"123456789") == 0xC2B7


def test_manufacturer_round_trip() -> None:
    assert manufacturer_name(0x2C2D) == "KAM"
    assert manufacturer_code("KAM") == 0x2C2D
    assert manufacturer_name(0) == "???"
    with pytest.raises(ValueError, match="three letters"):
        manufacturer_code("ka")


def test_format_a_blocks_by_hand() -> None:
    crc_frame = add_crc_format_a(PLAIN)
    # First block: 10 bytes + CRC, then the remaining 9 bytes + CRC.
    assert len(crc_frame) == len(PLAIN) + 4
    assert crc_frame[10:12] == crc16_en13757(PLAIN[:10]).to_bytes(2, "big")
    assert strip_crc_format_a(crc_frame) == PLAIN
    link = parse_link(crc_frame)
    assert link.frame_format == "A"
    assert link.address.id == "12345678"
    assert link.address.manufacturer == "KAM"
    assert link.address.medium == "water"


def test_long_format_a_frame_has_16_byte_blocks() -> None:
    long_frame = frame(bytes([0x78]) + RECORDS * 5)
    crc_frame = add_crc_format_a(long_frame)
    blocks = 1 + -(-(len(long_frame) - 10) // 16)
    assert len(crc_frame) == len(long_frame) + 2 * blocks
    assert parse_link(crc_frame).body == long_frame[10:]


def test_format_a_bad_crc() -> None:
    crc_frame = bytearray(add_crc_format_a(PLAIN))
    crc_frame[5] ^= 0x01
    with pytest.raises(FrameError):
        parse_link(bytes(crc_frame))


@pytest.mark.parametrize("size", [20, 126, 140, 200])
def test_format_b_round_trip(size: int) -> None:
    stripped = frame(bytes([0x78]) + bytes(range(size - 11)))
    b_frame = add_crc_format_b(stripped)
    assert b_frame[0] == len(b_frame) - 1  # L counts the CRCs in format B
    assert strip_crc_format_b(b_frame) == stripped
    assert parse_link(b_frame, crc="B").body == stripped[10:]
    assert parse_link(b"\x54\x3d" + b_frame).frame_format == "B"  # C-mode sync tail selects B


def test_format_b_bad_crc() -> None:
    b_frame = bytearray(add_crc_format_b(PLAIN))
    b_frame[-1] ^= 0xFF
    with pytest.raises(FrameError):
        parse_link(bytes(b_frame), crc="B")


def test_c_mode_prefix_format_a() -> None:
    assert parse_link(b"\x54\xcd" + add_crc_format_a(PLAIN)).frame_format == "A"


def test_stripped_and_length_mismatch() -> None:
    assert parse_link(PLAIN).frame_format == "stripped"
    with pytest.raises(FrameError):
        parse_link(PLAIN + b"\x00\x00\x00")
    with pytest.raises(FrameError):
        parse_link(PLAIN[:5])


def test_installation_telegram_recognised() -> None:
    telegram = decode_telegram(frame(bytes([0x78]) + RECORDS[:8], c_field=C_SND_IR))
    assert telegram.is_installation
