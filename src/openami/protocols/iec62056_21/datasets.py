"""Data sets of an IEC 62056-21 data block: ``address(value*unit)``, their OBIS codes and base units.

A data block is lines of data sets ending with a line ``!``; a line may hold several data sets
(``1.8.1(001.2*kWh)1.8.2(002.3*kWh)``) and a data set several values (``1.6.0(1.23*kW)(2101041315)``,
maximum demand and when). A value group without an address continues the data set before it (load
profile lines). Why the normalisation: the head-end stores readings in base units (Wh, W, varh...), as
the DLMS path does with ``scaler_unit``; meters print kWh with as many decimals as their display has.

Addresses (IEC 62056-61 value group names):

- ``A-B:C.D.E*F`` and ``A-B:C.D.E``: full OBIS codes; F left out is 255.
- ``C.D.E``: the reduced form of a meter that knows its medium: A=1 (electricity), B=0, F=255;
  ``C.D.E*F`` names historical value F (billing period).
- letters in groups C and D are the abstract codes ``C``=96, ``F``=97, ``L``=98, ``P``=99, with A=0
  when group C is a letter: ``C.1.0`` is ``0-0:96.1.0*255`` (meter serial number), ``F.F`` is
  ``0-0:97.97.0*255`` (error register).
- anything else (``1.8.1&12``, manufacturer names) keeps ``obis`` None; the data set is still returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from openami.protocols.dlms.obis import Obis
from openami.protocols.iec62056_21.errors import DecodeError

__all__ = [
    "DataSet",
    "Value",
    "combine",
    "normalise_unit",
    "obis_of",
    "parse_data_block",
    "parse_date",
    "parse_time",
]

_LETTERS: Final = MappingProxyType({"C": 96, "F": 97, "L": 98, "P": 99})
_GROUP = r"([0-9]{1,3}|[CFLP])"
_FULL = re.compile(
    rf"([0-9]{{1,3}})-([0-9]{{1,3}}):{_GROUP}\.{_GROUP}(?:\.([0-9]{{1,3}}))?(?:\*([0-9]{{1,3}}))?"
)
_SHORT = re.compile(rf"{_GROUP}\.{_GROUP}(?:\.([0-9]{{1,3}}))?(?:\*([0-9]{{1,3}}))?")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

_BASE_UNITS: Final = MappingProxyType(
    {
        "wh": "Wh",
        "w": "W",
        "varh": "varh",
        "var": "var",
        "vah": "VAh",
        "va": "VA",
        "v": "V",
        "a": "A",
        "hz": "Hz",
    }
)
_PREFIXES: Final = MappingProxyType({"k": 3, "K": 3, "M": 6, "G": 9, "m": -3})
_FORBIDDEN: Final = frozenset("()/!")


@dataclass(frozen=True, slots=True)
class Value:
    """One value of a data set: a number in base ``unit`` when the meter gave a unit we scale, else text."""

    value: Decimal | str
    unit: str | None
    raw: str
    """The value exactly as sent, unit included (``0302.8260*kWh``)."""


@dataclass(frozen=True, slots=True)
class DataSet:
    """``address(value*unit)(...)``; ``value``/``unit`` are those of the first value."""

    address: str
    obis: Obis | None
    values: tuple[Value, ...]
    raw: str

    @property
    def value(self) -> Decimal | str:
        return self.values[0].value

    @property
    def unit(self) -> str | None:
        return self.values[0].unit


def _group(text: str) -> int:
    return _LETTERS[text] if text in _LETTERS else int(text)


def obis_of(address: str) -> Obis | None:
    """The OBIS code an address names, or None (see the module docstring for the forms)."""
    match = _FULL.fullmatch(address)
    if match is not None:
        a, b, c, d, e, f = match.groups()
        groups = [int(a), int(b), _group(c), _group(d), int(e or 0), int(f or 255)]
    else:
        match = _SHORT.fullmatch(address)
        if match is None:
            return None
        c, d, e, f = match.groups()
        medium = 0 if c in _LETTERS else 1
        groups = [medium, 0, _group(c), _group(d), int(e or 0), int(f or 255)]
    if any(g > 255 for g in groups):
        return None
    return Obis(*groups)


def normalise_unit(number: Decimal, unit: str) -> tuple[Decimal, str] | None:
    """``(value, unit)`` in the base unit (``1.5 kWh`` -> ``1500 Wh``), or None for units not scaled here."""
    base = _BASE_UNITS.get(unit.lower())
    exponent = 0
    if base is None and len(unit) > 1 and unit[0] in _PREFIXES:
        base = _BASE_UNITS.get(unit[1:].lower())
        exponent = _PREFIXES[unit[0]]
    if base is None:
        return None
    return number.scaleb(exponent), base


def _value(raw: str) -> Value:
    """A number with a unit becomes a :class:`Decimal` (scaled to the base unit when known); anything
    else stays text, so serial numbers and error codes keep their leading zeros."""
    text, star, unit = raw.partition("*")
    text, unit = text.strip(), unit.strip()
    if not star:
        return Value(text, None, raw)
    if unit and _NUMBER.fullmatch(text):
        number = Decimal(text)
        scaled = normalise_unit(number, unit)
        if scaled is not None:
            return Value(scaled[0], scaled[1], raw)
        return Value(number, unit, raw)
    return Value(text, unit or None, raw)


def _check_line(line: str, offset: int) -> None:
    for index, char in enumerate(line):
        if char < " " or char == "\x7f":
            raise DecodeError(f"control character 0x{ord(char):02X} in a data line", offset + index)


def _parse_line(line: str, offset: int, out: list[DataSet]) -> None:
    """Append the data sets of one line to ``out`` (an address-less value group extends the last one)."""
    pos = 0
    while pos < len(line):
        opening = line.find("(", pos)
        if opening < 0:
            raise DecodeError(f"text after the last data set: {line[pos:]!r:.40}", offset + pos)
        address = line[pos:opening].strip()
        if any(char in _FORBIDDEN for char in address):
            raise DecodeError(f"bad character in address {address!r:.40}", offset + pos)
        values: list[Value] = []
        start = pos
        pos = opening
        while pos < len(line) and line[pos] == "(":
            closing = line.find(")", pos + 1)
            if closing < 0:
                raise DecodeError("unclosed '(' in a data set", offset + pos)
            inner = line[pos + 1 : closing]
            if "(" in inner:
                raise DecodeError("'(' inside a value", offset + pos)
            values.append(_value(inner))
            pos = closing + 1
        raw = line[start:pos].strip()
        if address:
            out.append(DataSet(address, obis_of(address), tuple(values), raw))
        elif out:
            last = out[-1]
            out[-1] = DataSet(last.address, last.obis, last.values + tuple(values), f"{last.raw}{raw}")
        else:
            raise DecodeError("value without an address at the start of the data block", offset + start)
        while pos < len(line) and line[pos] == " ":
            pos += 1


def parse_data_block(block: str, *, base_offset: int = 0) -> list[DataSet]:
    """The data sets of a data block (text up to and including its ``!`` end line).

    Lines end with CR LF (LF alone is accepted, as logs store it); empty lines are skipped; only
    whitespace may follow the ``!`` line. Raises :class:`DecodeError` for anything else.
    """
    sets: list[DataSet] = []
    offset = base_offset
    lines = block.split("\n")
    for index, full in enumerate(lines):
        line = full.removesuffix("\r")
        stripped = line.strip()
        if stripped == "!":
            rest = "\n".join(lines[index + 1 :])
            if rest.strip():
                raise DecodeError("data after the end of the data block ('!')", offset + len(full) + 1)
            return sets
        _check_line(line, offset)
        if stripped:
            _parse_line(line, offset, sets)
        offset += len(full) + 1
    raise DecodeError("data block has no end line '!' (truncated?)", base_offset + len(block))


_DATE = re.compile(r"([0-9]{2}|[0-9]{4})[-./]?([0-9]{2})[-./]?([0-9]{2})")
_TIME = re.compile(r"([0-9]{2})[:.]?([0-9]{2})(?:[:.]?([0-9]{2}))?")


def parse_date(text: str) -> date | None:
    """``YYMMDD``, ``YY-MM-DD`` or ``YYYYMMDD`` (two-digit years are 2000+), None when not a date."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day = (int(g) for g in match.groups())
    try:
        return date(year + 2000 if year < 100 else year, month, day)
    except ValueError:
        return None


def parse_time(text: str) -> time | None:
    """``hhmmss``, ``hh:mm:ss`` or ``hhmm``; None when not a time of day."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        return None
    hour, minute, second = (int(g or 0) for g in match.groups())
    try:
        return time(hour, minute, second)
    except ValueError:
        return None


def combine(day: date | None, clock: time | None) -> datetime | None:
    """The meter's local date-time (naive: a data readout does not say its time zone)."""
    return None if day is None or clock is None else datetime.combine(day, clock)
