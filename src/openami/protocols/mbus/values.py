"""Data field codings (EN 13757-3 annex A): integers, BCD, real, dates and times, LVAR.

All multi-byte fields are least significant byte first. BCD with ``F`` in the top nibble is negative
(type A); other non-decimal nibbles mean the meter reports an error in that digit, so such a value is
returned as its hex digits (a ``str``) rather than a wrong number. Dates are returned as ISO 8601
strings without zone: M-Bus clocks are local meter time and the telegram does not say which zone.
"""

from __future__ import annotations

import struct

from openami.protocols.mbus.errors import DecodeError

__all__ = ["decode_bcd", "decode_date", "decode_lvar_length", "decode_real", "decode_time_point"]


def decode_bcd(raw: bytes) -> int | str:
    """Type A: decimal digits, LSB first; a top ``F`` nibble makes the value negative."""
    sent = raw[::-1].hex()
    negative = sent[:1] == "f"
    digits = (sent[1:] or "0") if negative else sent
    if not digits.isdigit():
        return sent.upper()  # error digits (all F: "no value"): the meter's code, not a number
    return -int(digits) if negative else int(digits)


def decode_real(raw: bytes) -> float:
    """Type H: IEEE 754 single precision, LSB first."""
    return float(struct.unpack("<f", raw)[0])


def _year(low: int, high: int, hundreds: int | None = None) -> int:
    """Seven year bits split over two bytes; without a century field, 81..99 are the 1900s (as meters
    made before 2000 meant them) and 0..80 the 2000s."""
    year = (low >> 5) | ((high & 0xF0) >> 1)
    if hundreds:
        return 1900 + 100 * hundreds + year
    return 2000 + year if year <= 80 else 1900 + year


def decode_date(raw: bytes) -> str:
    """Type G (2 bytes): a calendar date."""
    day, month = raw[0] & 0x1F, raw[1] & 0x0F
    return f"{_year(raw[0], raw[1]):04d}-{month:02d}-{day:02d}"


def decode_time_point(raw: bytes) -> str | None:
    """A time point by its length: type J (3: time), F (4: date and time to the minute), I (6: with
    seconds), or G (2: date). ``None`` when the meter flags it invalid (IV bit of types F and I): a
    made-up date would be worse than none."""
    if len(raw) == 2:
        return decode_date(raw)
    if len(raw) == 3:
        return f"{raw[2] & 0x1F:02d}:{raw[1] & 0x3F:02d}:{raw[0] & 0x3F:02d}"
    if (len(raw) == 4 and raw[0] & 0x80) or (len(raw) == 6 and raw[1] & 0x80):
        return None  # IV sits beside the minute in both types
    if len(raw) == 4:
        minute, hour = raw[0] & 0x3F, raw[1] & 0x1F
        day, month = raw[2] & 0x1F, raw[3] & 0x0F
        year = _year(raw[2], raw[3], (raw[1] >> 5) & 0x03)
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00"
    if len(raw) == 6:
        second, minute, hour = raw[0] & 0x3F, raw[1] & 0x3F, raw[2] & 0x1F
        day, month = raw[3] & 0x1F, raw[4] & 0x0F
        year = _year(raw[3], raw[4])
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    raise DecodeError(f"no time point is {len(raw)} bytes long")


def decode_lvar_length(lvar: int, offset: int) -> tuple[int, str]:
    """Bytes and coding (``text``, ``bcd``, ``-bcd``, ``binary``) of a variable-length field."""
    if lvar <= 0xBF:
        return lvar, "text"
    if 0xC0 <= lvar <= 0xC9:
        return lvar - 0xC0, "bcd"
    if 0xD0 <= lvar <= 0xD9:
        return lvar - 0xD0, "-bcd"
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0, "binary"
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC), "binary"
    if lvar == 0xF5:
        return 48, "binary"
    if lvar == 0xF6:
        return 64, "binary"
    raise DecodeError(f"reserved LVAR {lvar:#04x}", offset)
