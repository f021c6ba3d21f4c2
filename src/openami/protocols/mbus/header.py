"""Application-layer headers (EN 13757-3 §5/§7): long (CI 0x72), short (CI 0x7A), fixed data (0x73).

The long header identifies the meter: identification number (8 BCD digits), manufacturer (three letters
packed five bits each), version, medium; access number, status and signature follow in every header.
``parse_long_header`` is public and stable: the wireless M-Bus decoder calls it on decrypted payloads.
"""

from __future__ import annotations

from dataclasses import dataclass

from openami.protocols.mbus.errors import DecodeError, EncodeError

__all__ = [
    "LONG_HEADER_SIZE",
    "MEDIA",
    "SHORT_HEADER_SIZE",
    "FixedHeader",
    "LongHeader",
    "ShortHeader",
    "decode_id",
    "decode_manufacturer",
    "encode_manufacturer",
    "medium_name",
    "parse_long_header",
    "parse_short_header",
]

LONG_HEADER_SIZE = 12
SHORT_HEADER_SIZE = 4

MEDIA: dict[int, str] = {
    0x00: "other", 0x01: "oil", 0x02: "electricity", 0x03: "gas", 0x04: "heat_outlet", 0x05: "steam",
    0x06: "warm_water", 0x07: "water", 0x08: "heat_cost_allocator", 0x09: "compressed_air",
    0x0A: "cooling_outlet", 0x0B: "cooling_inlet", 0x0C: "heat_inlet", 0x0D: "heat_cooling",
    0x0E: "bus_system", 0x0F: "unknown", 0x10: "irrigation_water", 0x11: "water_data_logger",
    0x12: "gas_data_logger", 0x13: "gas_converter", 0x14: "calorific_value", 0x15: "hot_water",
    0x16: "cold_water", 0x17: "dual_register_water", 0x18: "pressure", 0x19: "ad_converter",
    0x1A: "smoke_detector", 0x1B: "room_sensor", 0x1C: "gas_detector", 0x20: "breaker_electricity",
    0x21: "valve", 0x25: "customer_unit", 0x28: "waste_water", 0x29: "garbage", 0x2A: "carbon_dioxide",
    0x31: "communication_controller", 0x32: "unidirectional_repeater", 0x33: "bidirectional_repeater",
    0x36: "radio_converter_system", 0x37: "radio_converter_meter",
}  # fmt: skip
"""EN 13757-3 / OMS device types; codes not listed are reserved and named ``reserved_0x..``."""


def medium_name(code: int) -> str:
    return MEDIA.get(code, f"reserved_{code:#04x}")


@dataclass(frozen=True, slots=True)
class LongHeader:
    """The 12-byte long header. ``id`` keeps its eight digits (leading zeros matter for addressing)."""

    id: str
    manufacturer: str
    version: int
    medium: str
    medium_code: int
    access_number: int
    status: int
    signature: int


@dataclass(frozen=True, slots=True)
class ShortHeader:
    """The 4-byte short header: the link layer (wM-Bus) or the primary address identifies the meter."""

    access_number: int
    status: int
    signature: int


@dataclass(frozen=True, slots=True)
class FixedHeader:
    """What the fixed data structure (CI 0x73) says about its meter: no manufacturer, no version."""

    id: str
    medium: str
    medium_code: int
    access_number: int
    status: int


def decode_id(raw: bytes) -> str:
    """Eight BCD digits, LSB first; non-decimal nibbles (wildcards, errors) are kept as hex digits."""
    return raw[::-1].hex().upper()


def decode_manufacturer(code: int) -> str:
    """Three letters, five bits each (A = 1), as EN 62056-21 / the FLAG association assigns them."""
    return "".join(chr(((code >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def encode_manufacturer(letters: str) -> int:
    if len(letters) != 3 or not all("A" <= c <= "Z" for c in letters.upper()):
        raise EncodeError(f"manufacturer {letters!r} is not three letters")
    code = 0
    for c in letters.upper():
        code = (code << 5) | (ord(c) - 64)
    return code


def parse_long_header(data: bytes, offset: int = 0) -> LongHeader:
    """The long header at ``data[offset:offset + 12]`` (the bytes after CI 0x72, or after the wM-Bus
    CI 0x72 of a decrypted payload). Stable API: :class:`DecodeError` when fewer than 12 bytes remain."""
    raw = bytes(data[offset : offset + LONG_HEADER_SIZE])
    if len(raw) < LONG_HEADER_SIZE:
        raise DecodeError(f"long header needs {LONG_HEADER_SIZE} bytes, {len(raw)} left", offset + len(raw))
    return LongHeader(
        id=decode_id(raw[0:4]),
        manufacturer=decode_manufacturer(int.from_bytes(raw[4:6], "little")),
        version=raw[6],
        medium=medium_name(raw[7]),
        medium_code=raw[7],
        access_number=raw[8],
        status=raw[9],
        signature=int.from_bytes(raw[10:12], "little"),
    )


def parse_short_header(data: bytes, offset: int = 0) -> ShortHeader:
    raw = bytes(data[offset : offset + SHORT_HEADER_SIZE])
    if len(raw) < SHORT_HEADER_SIZE:
        raise DecodeError(f"short header needs {SHORT_HEADER_SIZE} bytes, {len(raw)} left", offset + len(raw))
    return ShortHeader(raw[0], raw[1], int.from_bytes(raw[2:4], "little"))
