"""RSP_UD telegrams end to end: link frame -> CI -> header -> records, and their JSON form.

``decode_frame`` is the entry point for one wired M-Bus frame as read from the bus (the CLI's
``openami decode mbus`` calls it, then ``to_json``). Any bad input ends in :class:`MbusError`:
:class:`FrameError` for the link layer, :class:`ApplicationError` for a slave's CI 0x70 error report,
:class:`DecodeError` for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openami.protocols.mbus.errors import ApplicationError, DecodeError
from openami.protocols.mbus.frames import FrameKind, MbusFrame, parse_frame
from openami.protocols.mbus.header import (
    LONG_HEADER_SIZE,
    SHORT_HEADER_SIZE,
    FixedHeader,
    LongHeader,
    ShortHeader,
    decode_id,
    parse_long_header,
    parse_short_header,
)
from openami.protocols.mbus.records import DataRecord, decode_records
from openami.protocols.mbus.values import decode_bcd

__all__ = [
    "CI_APPLICATION_ERROR",
    "CI_FIXED",
    "CI_LONG",
    "CI_NONE",
    "CI_SHORT",
    "MbusTelegram",
    "decode_application",
    "decode_frame",
    "to_json",
]

CI_APPLICATION_ERROR = 0x70
CI_LONG = 0x72
CI_FIXED = 0x73
CI_FIXED_MSB = 0x77
CI_NONE = 0x78
CI_SHORT = 0x7A

APPLICATION_ERRORS = {
    0: "unspecified error", 1: "unimplemented CI-field", 2: "buffer too long, truncated",
    3: "too many records", 4: "premature end of record", 5: "more than 10 DIFE", 6: "more than 10 VIFE",
    7: "reserved", 8: "application too busy for handling readout request", 9: "too many readouts",
}  # fmt: skip

ENCRYPTION_MODES = frozenset({5, 7, 8, 9, 10, 13})
"""Security modes (OMS / EN 13757-7) that encrypt the records. Other values occur in wired meters whose
signature field predates the configuration field, and are read as plain data."""

Header = LongHeader | ShortHeader | FixedHeader


@dataclass(frozen=True, slots=True)
class MbusTelegram:
    """A decoded RSP_UD. ``header`` is ``None`` for CI 0x78 (no header)."""

    ci: int
    address: int
    control: int
    header: Header | None
    records: list[DataRecord] = field(default_factory=list)

    @property
    def more_records_follow(self) -> bool:
        """DIF 0x1F ended the telegram: send another REQ_UD2 (with toggled FCB) for the rest."""
        return bool(self.records) and self.records[-1].function == "more_records_follow"


def decode_frame(data: bytes) -> MbusTelegram:
    """One RSP_UD long frame (``68 L L 68 C A CI ... CS 16``) decoded to header and records."""
    frame = parse_frame(bytes(data))
    if frame.kind is not FrameKind.LONG and frame.kind is not FrameKind.CONTROL:
        raise DecodeError(f"a {frame.kind.value} frame carries no application data", 0)
    return decode_application(frame)


def decode_application(frame: MbusFrame) -> MbusTelegram:
    """The application layer of a checked long frame; offsets in errors count from the frame start."""
    ci, data, base = frame.ci, frame.data, 7
    assert ci is not None  # long and control frames always have one
    if ci == CI_APPLICATION_ERROR:
        code = data[0] if data else None
        name = APPLICATION_ERRORS.get(code, "reserved") if code is not None else "no error code"
        raise ApplicationError(f"slave reports application error: {name}", code)
    header: Header | None
    if ci == CI_LONG:
        header, start = _checked(parse_long_header, data, base), LONG_HEADER_SIZE
    elif ci == CI_SHORT:
        header, start = _checked(parse_short_header, data, base), SHORT_HEADER_SIZE
    elif ci == CI_NONE:
        header, start = None, 0
    elif ci in (CI_FIXED, CI_FIXED_MSB):
        fixed, records = _fixed(data, ci == CI_FIXED_MSB)
        return MbusTelegram(ci, frame.address, frame.control, fixed, records)
    else:
        raise DecodeError(f"CI {ci:#04x} is not a response this decoder knows", base - 1)
    if isinstance(header, LongHeader | ShortHeader):
        _refuse_encrypted(header.signature)
    try:
        records = decode_records(data, start)
    except DecodeError as exc:
        raise DecodeError(exc.reason, None if exc.offset is None else exc.offset + base) from exc
    return MbusTelegram(ci, frame.address, frame.control, header, records)


def _checked(parse: Any, data: bytes, base: int) -> Any:
    try:
        return parse(data)
    except DecodeError as exc:
        raise DecodeError(exc.reason, base + (exc.offset or 0)) from exc


def _refuse_encrypted(signature: int) -> None:
    """Configuration field bits 8..12 name the security mode; mode 0 is plain. Decoding ciphertext as
    records would produce confident garbage, so it is refused (wM-Bus decrypts before calling us)."""
    mode = (signature >> 8) & 0x1F
    if mode in ENCRYPTION_MODES:
        raise DecodeError(f"payload encrypted with security mode {mode}: decrypt it first")


_FIXED_MEDIA = ("other", "oil", "electricity", "gas", "heat", "steam", "hot_water", "water",
                "heat_cost_allocator")  # fmt: skip


def _fixed_unit(code: int) -> tuple[str, str | None, int]:
    """EN 13757-3 fixed-structure unit codes -> (quantity, base unit, exponent)."""
    ranges = ((0x02, "energy", "Wh", 0), (0x0B, "energy", "J", 3), (0x14, "power", "W", 0),
              (0x1D, "power", "J/h", 3), (0x26, "volume", "m3", -6),
              (0x2F, "volume_flow", "m3/h", -6))  # fmt: skip
    for low, quantity, unit, bias in ranges:
        if low <= code < low + 9:
            return quantity, unit, code - low + bias
    named = {0x00: ("time", None, 0), 0x01: ("date", None, 0), 0x38: ("temperature", "°C", -3),
             0x39: ("hca", "HCA", 0), 0x3F: ("dimensionless", None, 0)}  # fmt: skip
    return named.get(code, ("reserved", None, 0))


def _fixed(data: bytes, msb_first: bool) -> tuple[FixedHeader, list[DataRecord]]:
    """Fixed data structure: id, access number, status, medium/units, two 4-byte counters.

    Status bit 7 says the counters are binary (else BCD); unit 2 = 0x3E means "counter 2 is a
    historic value in counter 1's unit", which we report as storage 1.
    """
    if len(data) < 16:
        raise DecodeError(f"fixed data structure needs 16 bytes, {len(data)} given", 7 + len(data))

    def lsb(raw: bytes) -> bytes:
        return raw[::-1] if msb_first else raw

    status, mu = data[5], data[6:8]
    medium_code = ((mu[0] & 0xC0) >> 6) | ((mu[1] & 0xC0) >> 4)
    medium = _FIXED_MEDIA[medium_code] if medium_code < len(_FIXED_MEDIA) else f"reserved_{medium_code:#04x}"
    header = FixedHeader(decode_id(lsb(data[0:4])), medium, medium_code, data[4], status)
    records = []
    units = [mu[0] & 0x3F, mu[1] & 0x3F]
    for i, unit_code in enumerate(units):
        raw = lsb(data[8 + 4 * i : 12 + 4 * i])
        storage = 1 if i == 1 and (unit_code == 0x3E or status & 0x40) else 0
        if i == 1 and unit_code == 0x3E:
            unit_code = units[0]
        quantity, unit, exponent = _fixed_unit(unit_code)
        number = int.from_bytes(raw, "little") if status & 0x80 else decode_bcd(raw)
        value: int | float | str = number
        if isinstance(number, int):
            value = number * 10**exponent if exponent >= 0 else number / 10**-exponent
        records.append(DataRecord(value, unit, quantity, "instantaneous", storage, 0, 0, 0, raw=raw))
    return header, records


def _json_value(value: object) -> object:
    return value.hex(" ").upper() if isinstance(value, bytes) else value


def to_json(telegram: MbusTelegram) -> dict[str, Any]:
    """The JSON form the CLI prints: header (fields a header type lacks are ``null``) and records.

    Byte values (manufacturer-specific data) become space-separated upper-case hex.
    """
    h = telegram.header
    header = {
        name: getattr(h, name, None)
        for name in ("id", "manufacturer", "version", "medium", "access_number", "status")
    }
    return {"header": header, "records": [record_to_json(r) for r in telegram.records]}


def record_to_json(record: DataRecord) -> dict[str, Any]:
    """One record's JSON form, shared with the wireless M-Bus decoder (same application layer)."""
    return {
        "value": _json_value(record.value),
        "unit": record.unit,
        "quantity": record.quantity,
        "function": record.function,
        "storage": record.storage,
        "tariff": record.tariff,
        "subunit": record.subunit,
    }
