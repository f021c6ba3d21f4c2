"""The variable data structure (EN 13757-3 §6): the walk over DIB, VIB and data field, record by record.

``decode_records`` is public and stable: the wireless M-Bus decoder calls it on decrypted payloads.
It is bounded by construction: every step consumes at least one byte, DIFE and VIFE chains stop at ten,
and a data field is never read past the end of the buffer (that is a :class:`DecodeError`, with the
offset, not an IndexError).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from openami.protocols.mbus.dif import (
    DIF_GLOBAL_READOUT,
    DIF_IDLE_FILLER,
    DIF_MANUFACTURER,
    DIF_MORE_RECORDS,
    FIELD_LENGTHS,
    VARIABLE,
    DataInformation,
    parse_dib,
)
from openami.protocols.mbus.errors import DecodeError
from openami.protocols.mbus.values import decode_bcd, decode_lvar_length, decode_real, decode_time_point
from openami.protocols.mbus.vif import ValueInformation, parse_vib

__all__ = ["DataRecord", "Value", "decode_records"]

Value = float | int | str | bytes | None
"""``None`` only for records that carry no data (data field 0x0 or 0x8, global readout)."""

_BCD_FIELDS = {0x9, 0xA, 0xB, 0xC, 0xE}
_INT_FIELDS = {0x1, 0x2, 0x3, 0x4, 0x6, 0x7}


@dataclass(frozen=True, slots=True)
class DataRecord:
    """One data record, its value normalised to the base unit of its quantity.

    ``dif``/``dife``/``vif``/``vife`` and ``raw`` (the data field as sent) keep what the meter said, so
    a consumer can re-interpret a record this decoder got wrong; ``annotations`` lists the combinable
    VIFE (``per/h``, ``upper_limit``, ``record_error_5``, unknown ``vife_0x..``).
    """

    value: Value
    unit: str | None
    quantity: str
    function: str
    storage: int
    tariff: int
    subunit: int
    dif: int
    dife: tuple[int, ...] = ()
    vif: int | None = None
    vife: tuple[int, ...] = ()
    annotations: tuple[str, ...] = ()
    raw: bytes = b""


def _special(dif: int, data: bytes, pos: int) -> DataRecord:
    function = "more_records_follow" if dif == DIF_MORE_RECORDS else "manufacturer_specific"
    rest = bytes(data[pos + 1 :])
    return DataRecord(rest, None, "manufacturer_specific", function, 0, 0, 0, dif, raw=rest)


def _scale(raw: int | float, vib: ValueInformation) -> int | float:
    """``raw * factor * 10**exponent``; dividing by a power of ten (not multiplying by 0.001) keeps
    1234 Wh*10^-3 exactly the float 1.234."""
    value = raw * vib.factor
    if vib.exponent >= 0:
        scaled: int | float = value * 10**vib.exponent
    else:
        scaled = value / 10**-vib.exponent
    return scaled


def _value(dib: DataInformation, vib: ValueInformation, raw: bytes, coding: str, offset: int) -> Value:
    field = dib.data_field
    if field in (0x0, 0x8):
        return None
    if vib.kind == "raw":
        return raw
    if coding == "text":
        return raw[::-1].decode("latin-1")
    if vib.kind in ("date", "datetime") and field in (0x2, 0x3, 0x4, 0x6):
        return decode_time_point(raw)
    number: int | float | str
    if field in _BCD_FIELDS or coding in ("bcd", "-bcd"):
        number = decode_bcd(raw)
        if coding == "-bcd" and isinstance(number, int):
            number = -number
    elif field == 0x5:
        number = decode_real(raw)
    else:
        signed = vib.kind == "number"
        number = int.from_bytes(raw, "little", signed=signed)
    if isinstance(number, str) or vib.kind != "number":
        return number
    return _scale(number, vib)


def decode_records(data: bytes, offset: int = 0) -> list[DataRecord]:
    """Every data record in ``data[offset:]``, an application-data region with no header.

    Stable API (the wireless M-Bus decoder depends on it). Idle fillers (DIF 0x2F) are skipped; a
    manufacturer-specific DIF (0x0F, or 0x1F when more records follow) ends the walk and becomes a last
    record whose value is the remaining bytes. Raises :class:`DecodeError` with the offset where the
    structure broke.
    """
    data = bytes(data)
    records: list[DataRecord] = []
    pos = offset
    while pos < len(data):
        dif = data[pos]
        if dif == DIF_IDLE_FILLER:
            pos += 1
            continue
        if dif in (DIF_MANUFACTURER, DIF_MORE_RECORDS):
            records.append(_special(dif, data, pos))
            break
        if dif == DIF_GLOBAL_READOUT:
            records.append(DataRecord(None, None, "global_readout", "instantaneous", 0, 0, 0, dif))
            pos += 1
            continue
        if dif & 0x0F == 0x0F:
            raise DecodeError(f"reserved special function DIF {dif:#04x}", pos)
        start = pos
        dib, pos = parse_dib(data, pos)
        vib, pos = parse_vib(data, pos)
        length = FIELD_LENGTHS[dib.data_field]
        coding = "fixed"
        if length == VARIABLE:
            if pos >= len(data):
                raise DecodeError("telegram ends before the LVAR byte", pos)
            length, coding = decode_lvar_length(data[pos], pos)
            pos += 1
        if pos + length > len(data):
            raise DecodeError(f"data field of {length} bytes runs past the telegram", start)
        raw = data[pos : pos + length]
        try:
            value = _value(dib, vib, raw, coding, pos)
        except (struct.error, ValueError) as exc:  # pragma: no cover - lengths are checked above
            raise DecodeError(f"undecodable data field: {exc}", pos) from exc
        except DecodeError as exc:
            raise DecodeError(exc.reason, pos) from exc
        pos += length
        records.append(
            DataRecord(
                value, vib.unit, vib.quantity, dib.function, dib.storage, dib.tariff, dib.subunit,
                dib.dif, dib.dife, vib.vif, vib.vife, vib.annotations, raw,
            )
        )  # fmt: skip
    return records
