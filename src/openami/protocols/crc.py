"""The reflected CRC-16s of the metering protocols, table-driven: one table builder, one per variant.

- CRC-16/X.25 (polynomial 0x1021 reflected = 0x8408, init and final XOR 0xFFFF): HDLC frames
  (IEC 62056-46) and SML files.
- CRC-16/ARC (polynomial 0x8005 reflected = 0xA001, init 0, no final XOR): DSMR P1 telegrams.

Wireless M-Bus uses a non-reflected polynomial (0x3D65) and keeps its own in its link layer.
"""

from __future__ import annotations

from typing import Final

__all__ = ["crc16_arc", "crc16_x25"]


def _reflected_table(polynomial: int) -> tuple[int, ...]:
    """The 256 partial remainders of a reflected polynomial."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_X25: Final = _reflected_table(0x8408)
_ARC: Final = _reflected_table(0xA001)


def crc16_x25(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25 (check value of ``b"123456789"``: 0x906E)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _X25[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def crc16_arc(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/ARC (check value of ``b"123456789"``: 0xBB3D)."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _ARC[(crc ^ byte) & 0xFF]
    return crc
