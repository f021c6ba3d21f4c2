"""The variable data structure (EN 13757-3 §6): the walk over DIB, VIB and data field, record by record.

``decode_records`` is public and stable: the wireless M-Bus decoder calls it on decrypted payloads.
It is bounded by construction: every step consumes at least one byte, DIFE and VIFE chains stop at ten,
and a data field is never read past the end of the buffer (that is a :class:`DecodeError`, with the
offset, not an IndexError).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from openami.protocols.mbus.datarecord import DataRecord, Value
from openami.protocols.mbus.dif import (
    BCD_FIELDS,
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
from openami.protocols.mbus.profiles import expand_profile, profile_kind
from openami.protocols.mbus.values import decode_bcd, decode_lvar_length, decode_real, decode_time_point
from openami.protocols.mbus.vif import ValueInformation, parse_vib

__all__ = ["DataRecord", "Value", "decode_records", "record_layout"]


def _special(dif: int, data: bytes, pos: int) -> DataRecord:
    function = "more_records_follow" if dif == DIF_MORE_RECORDS else "manufacturer_specific"
    rest = bytes(data[pos + 1 :])
    return DataRecord(rest, None, "manufacturer_specific", function, 0, 0, 0, dif, raw=rest)


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
    if field in BCD_FIELDS or coding in ("bcd", "-bcd"):
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
    return vib.scale(number)


@dataclass(frozen=True, slots=True)
class _Span:
    """Where one data record lies: its DIB+VIB header ``[start, data)`` and its data field
    ``[value, end)`` (``data`` < ``value`` when an LVAR byte sits between them)."""

    start: int
    data: int
    value: int
    end: int
    dib: DataInformation
    vib: ValueInformation
    coding: str


def _walk(data: bytes, offset: int) -> Iterator[_Span | DataRecord]:
    """The records of ``data[offset:]`` in order: a :class:`_Span` for each data record, a finished
    :class:`DataRecord` for the special functions (manufacturer data, global readout). Fillers are
    skipped; manufacturer data ends the walk."""
    pos = offset
    while pos < len(data):
        dif = data[pos]
        if dif == DIF_IDLE_FILLER:
            pos += 1
            continue
        if dif in (DIF_MANUFACTURER, DIF_MORE_RECORDS):
            yield _special(dif, data, pos)
            return
        if dif == DIF_GLOBAL_READOUT:
            yield DataRecord(None, None, "global_readout", "instantaneous", 0, 0, 0, dif)
            pos += 1
            continue
        if dif & 0x0F == 0x0F:
            raise DecodeError(f"reserved special function DIF {dif:#04x}", pos)
        start = pos
        dib, pos = parse_dib(data, pos)
        vib, pos = parse_vib(data, pos)
        header_end = pos
        length = FIELD_LENGTHS[dib.data_field]
        coding = "fixed"
        if length == VARIABLE:
            if pos >= len(data):
                raise DecodeError("telegram ends before the LVAR byte", pos)
            length, coding = decode_lvar_length(data[pos], pos)
            pos += 1
        if pos + length > len(data):
            raise DecodeError(f"data field of {length} bytes runs past the telegram", start)
        yield _Span(start, header_end, pos, pos + length, dib, vib, coding)
        pos += length


def _records(data: bytes, span: _Span) -> list[DataRecord]:
    dib, vib = span.dib, span.vib
    raw = data[span.value : span.end]
    if profile_kind(dib, vib) is not None:  # its LVAR (< 0xC0, "text") is only the length
        try:
            return expand_profile(dib, vib, raw)
        except DecodeError as exc:
            raise DecodeError(exc.reason, span.value) from exc
    try:
        value = _value(dib, vib, raw, span.coding, span.value)
    except DecodeError as exc:
        raise DecodeError(exc.reason, span.value) from exc
    return [
        DataRecord(
            value, vib.unit, vib.quantity, dib.function, dib.storage, dib.tariff, dib.subunit,
            dib.dif, dib.dife, vib.vif, vib.vife, vib.annotations, raw,
        )
    ]  # fmt: skip


def decode_records(data: bytes, offset: int = 0) -> list[DataRecord]:
    """Every data record in ``data[offset:]``, an application-data region with no header.

    Stable API (the wireless M-Bus decoder depends on it). Idle fillers (DIF 0x2F) are skipped; a
    manufacturer-specific DIF (0x0F, or 0x1F when more records follow) ends the walk and becomes a last
    record whose value is the remaining bytes; a compact profile (:mod:`~openami.protocols.mbus.profiles`)
    becomes one record per element. Raises :class:`DecodeError` with the offset where the structure broke.
    """
    data = bytes(data)
    records: list[DataRecord] = []
    for item in _walk(data, offset):
        records += [item] if isinstance(item, DataRecord) else _records(data, item)
    return records


def record_layout(data: bytes, offset: int = 0) -> tuple[list[tuple[bytes, int]], bool]:
    """The format of an application-data region: (DIB+VIB bytes, data length or ``VARIABLE``) per data
    record in order, and whether manufacturer data (DIF 0x0F/0x1F, kept with its DIF in the list) ends
    it. Compact frames send only the data and name this format by its CRC (its *signature*)."""
    data = bytes(data)
    layout: list[tuple[bytes, int]] = []
    for item in _walk(data, offset):
        if isinstance(item, DataRecord):
            if item.quantity == "manufacturer_specific":
                layout.append((bytes([item.dif]), VARIABLE))
                return layout, True
            layout.append((bytes([item.dif]), 0))
            continue
        length = VARIABLE if item.data < item.value else item.end - item.value
        layout.append((data[item.start : item.data], length))
    return layout, False
