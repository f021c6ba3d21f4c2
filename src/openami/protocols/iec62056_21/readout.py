"""A whole data readout: optional identification, then the data message, parsed into data sets.

:func:`parse_readout` is what a driver calls on the bytes of a session and what ``openami decode``
calls on a capture, so it accepts what captures hold around the data message: an echoed request
``/?...!`` (optical heads echo the HHU's own transmission), the identification line, the option
select ``ACK 0 Z 0``, and whitespace. A data block without STX/ETX framing (a log that dropped the
control characters, a mode D push stored as text) is parsed too; it has no BCC to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from openami.protocols.iec62056_21.datasets import DataSet, combine, parse_data_block, parse_date, parse_time
from openami.protocols.iec62056_21.errors import DecodeError
from openami.protocols.iec62056_21.messages import (
    ACK,
    CRLF,
    STX,
    Identification,
    OptionSelect,
    parse_identification,
    parse_option_select,
    parse_request,
    split_data_message,
)

__all__ = ["Readout", "parse_readout", "to_json"]

_BLANK: Final = b" \t\r\n\x00"
_MAX_LINE: Final = 128
"""Longest request/identification/option line looked at; a longer one is not that message."""


@dataclass(frozen=True, slots=True)
class Readout:
    """A parsed data readout. ``bcc_checked``: the data message was framed and its BCC verified."""

    identification: Identification | None
    datasets: tuple[DataSet, ...]
    option: OptionSelect | None = None
    bcc_checked: bool = False

    def find(self, address: str) -> DataSet | None:
        """The first data set with exactly this address."""
        return next((ds for ds in self.datasets if ds.address == address), None)

    @property
    def timestamp(self) -> datetime | None:
        """The meter's clock from its date (``0.9.2``) and time (``0.9.1``) data sets, in its local time."""
        day = clock = None
        for ds in self.datasets:
            if ds.obis is None or ds.obis.f != 255 or (ds.obis.c, ds.obis.d) != (0, 9):
                continue
            if ds.obis.e == 2 and day is None and isinstance(ds.value, str):
                day = parse_date(ds.value)
            elif ds.obis.e == 1 and clock is None and isinstance(ds.value, str):
                clock = parse_time(ds.value)
        return combine(day, clock)


def _skip_blank(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _BLANK:
        pos += 1
    return pos


def _line(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    end = data.find(CRLF, pos, pos + _MAX_LINE)
    if end < 0:
        raise DecodeError(f"{what} has no CR LF (truncated?)", pos)
    return data[pos : end + 2], end + 2


def parse_readout(data: bytes, *, check_bcc: bool = True) -> Readout:
    """Parse a data readout (see the module docstring for what may surround the data message).

    Raises :class:`~openami.protocols.iec62056_21.errors.DecodeError` for input that is not a readout
    (truncated, malformed, trailing garbage) and its subclass
    :class:`~openami.protocols.iec62056_21.errors.BccError` when ``check_bcc`` and the BCC is wrong.
    """
    pos = _skip_blank(data, 0)
    if data.startswith(b"/?", pos):
        line, pos = _line(data, pos, "request message")
        parse_request(line)
        pos = _skip_blank(data, pos)
    identification = None
    if data.startswith(b"/", pos):
        line, pos = _line(data, pos, "identification message")
        identification = parse_identification(line)
        pos = _skip_blank(data, pos)
    option = None
    if pos < len(data) and data[pos] == ACK:
        line, pos = _line(data, pos, "option select message")
        option = parse_option_select(line)
        pos = _skip_blank(data, pos)
    if pos >= len(data):
        raise DecodeError("no data message", pos)
    if data[pos] != STX:
        sets = parse_data_block(data[pos:].decode("latin-1"), base_offset=pos)
        return Readout(identification, tuple(sets), option, bcc_checked=False)
    block, after = split_data_message(data, check_bcc=check_bcc, start=pos)
    if _skip_blank(data, after) < len(data):
        raise DecodeError("data after the data message's BCC", after)
    sets = parse_data_block(block.decode("latin-1"), base_offset=pos + 1)
    return Readout(identification, tuple(sets), option, bcc_checked=check_bcc)


def _json_value(value: Decimal | str) -> int | float | str:
    if isinstance(value, str):
        return value
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def to_json(readout: Readout) -> dict[str, Any]:
    """The readout as JSON-ready data (numbers in base units; ``more`` only for multi-value data sets)::

    {"identification": "ME382-1000" | null, "manufacturer": "ISK" | null,
     "timestamp": "2024-05-01T12:00:00" | null,
     "values": [{"address": "1.8.0", "obis": "1.0.1.8.0.255" | null, "value": 1234500, "unit": "Wh",
                 "raw": "001234.5*kWh", "more": [{"value": ..., "unit": ..., "raw": ...}]}]}
    """
    values: list[dict[str, Any]] = []
    for ds in readout.datasets:
        first = ds.values[0]
        entry: dict[str, Any] = {
            "address": ds.address,
            "obis": None if ds.obis is None else ds.obis.dotted,
            "value": _json_value(first.value),
            "unit": first.unit,
            "raw": first.raw,
        }
        if len(ds.values) > 1:
            entry["more"] = [
                {"value": _json_value(v.value), "unit": v.unit, "raw": v.raw} for v in ds.values[1:]
            ]
        values.append(entry)
    ident = readout.identification
    stamp = readout.timestamp
    return {
        "identification": None if ident is None else ident.ident,
        "manufacturer": None if ident is None else ident.manufacturer,
        "timestamp": None if stamp is None else stamp.isoformat(),
        "values": values,
    }
