"""The contents of one ``(...)`` field of a P1 line: quantities, timestamps, hex-encoded text.

Meters write quantities in the unit that suits the display (``kWh``, ``kW``, ``GJ``); the platform stores
base units (Wh, W, J), so every quantity is scaled here, once, with decimal arithmetic: ``1.001*kWh`` is
exactly 1001 Wh, not 1000.9999999999999. Results are integers when they are whole, floats otherwise.

Timestamps are ``YYMMDDhhmmssX`` in the meter's local time; ``X`` is ``S`` (summer, DST) or ``W`` (winter).
The flag is what disambiguates the repeated hour in autumn, so it picks the ``fold`` of the aware datetime.
Nothing here raises on odd content: a field that is not what it looks like yields ``None`` and the
caller keeps the raw text, because one strange object must not cost the other readings of a telegram
whose CRC has already vouched for its bytes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final

__all__ = [
    "BASE_UNITS",
    "decode_hex_text",
    "parse_number",
    "parse_quantity",
    "parse_timestamp",
]

#: Lower-cased unit as written -> (base unit, factor). Units not listed are kept as written, unscaled.
BASE_UNITS: Final[MappingProxyType[str, tuple[str, Decimal]]] = MappingProxyType(
    {
        "wh": ("Wh", Decimal(1)),
        "kwh": ("Wh", Decimal(1000)),
        "mwh": ("Wh", Decimal(1_000_000)),
        "w": ("W", Decimal(1)),
        "kw": ("W", Decimal(1000)),
        "mw": ("W", Decimal(1_000_000)),
        "varh": ("varh", Decimal(1)),
        "kvarh": ("varh", Decimal(1000)),
        "var": ("var", Decimal(1)),
        "kvar": ("var", Decimal(1000)),
        "vah": ("VAh", Decimal(1)),
        "kvah": ("VAh", Decimal(1000)),
        "va": ("VA", Decimal(1)),
        "kva": ("VA", Decimal(1000)),
        "v": ("V", Decimal(1)),
        "a": ("A", Decimal(1)),
        "ma": ("A", Decimal("0.001")),
        "hz": ("Hz", Decimal(1)),
        "s": ("s", Decimal(1)),
        "m3": ("m3", Decimal(1)),
        "m³": ("m3", Decimal(1)),
        "dm3": ("m3", Decimal("0.001")),
        "l": ("m3", Decimal("0.001")),
        "j": ("J", Decimal(1)),
        "kj": ("J", Decimal(1000)),
        "mj": ("J", Decimal(1_000_000)),
        "gj": ("J", Decimal(1_000_000_000)),
    }
)

# Digits are bounded so that Decimal never works on a hostile 10 kB number.
_NUMBER: Final = re.compile(r"[+-]?\d{1,30}(?:\.\d{1,30})?")
_TIMESTAMP: Final = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW]?)")
_HEX: Final = re.compile(r"(?:[0-9A-Fa-f]{2}){1,1024}")


def _to_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def parse_number(text: str) -> int | float | None:
    """``0001`` -> 1, ``4.556`` -> 4.556; None for anything that is not a plain decimal number."""
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return _to_number(Decimal(text))
    except InvalidOperation:  # pragma: no cover - the pattern only admits valid decimals
        return None


def parse_quantity(text: str) -> tuple[int | float, str | None] | None:
    """``001.19*kW`` -> (1190, "W"); ``0001`` -> (1, None); None when the number part is not a number.

    An unknown unit is kept as written and the number left unscaled, rather than guessing a factor.
    """
    number, star, unit = text.partition("*")
    if not _NUMBER.fullmatch(number):
        return None
    value = Decimal(number)
    if not star:
        return _to_number(value), None
    unit = unit.strip()
    base = BASE_UNITS.get(unit.lower())
    if base is None:
        return _to_number(value), unit or None
    return _to_number(value * base[1]), base[0]


def parse_timestamp(text: str, tz: tzinfo, *, require_flag: bool = True) -> datetime | None:
    """``YYMMDDhhmmssX`` as an aware datetime with the UTC offset it had in ``tz``, or None if invalid.

    The DST flag picks between the two readings of the repeated autumn hour. The result carries a
    fixed offset rather than the zone itself: Python compares two datetimes of one zone by wall time,
    ignoring ``fold``, so 02:30 summer and 02:30 winter would compare equal. A flag that contradicts
    the zone's rules (a meter clock set wrong, or ``tz`` without DST) is believed: the offset is then
    the zone's standard offset plus one hour for ``S``. Without a flag (v2.2 gas) the first reading wins.
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None or (require_flag and not match.group(7)):
        return None
    yy, mo, dd, hh, mi, ss = (int(g) for g in match.groups()[:6])
    try:
        naive = datetime(2000 + yy, mo, dd, hh, mi, ss)
    except ValueError:
        return None
    flag = match.group(7)
    local = naive.replace(tzinfo=tz)
    if flag:
        summer = flag == "S"
        for fold in (0, 1):
            candidate = naive.replace(tzinfo=tz, fold=fold)
            if bool(candidate.dst()) == summer:
                local = candidate
                break
        else:
            standard = (local.utcoffset() or timedelta(0)) - (local.dst() or timedelta(0))
            return naive.replace(tzinfo=timezone(standard + (timedelta(hours=1) if summer else timedelta(0))))
    return naive.replace(tzinfo=timezone(local.utcoffset() or timedelta(0)))


def decode_hex_text(text: str) -> str | None:
    """Hex-encoded ASCII (``4B3845...`` -> ``K8E...``), or None when ``text`` is not printable text in hex.

    DSMR 4+ writes equipment ids and messages as hex; older meters and other countries write them
    plainly, and an all-zero id decodes to NULs, so only a result that is printable is accepted.
    """
    if not _HEX.fullmatch(text):
        return None
    decoded = bytes.fromhex(text)
    if not all(0x20 <= b < 0x7F or b in (0x09, 0x0A, 0x0D) for b in decoded):
        return None
    return decoded.decode("ascii")
