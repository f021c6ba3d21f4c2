"""Compact profiles (EN 13757-3:2018, OMS): a series of values of one quantity packed into one record.

Heat cost allocators and water meters send their monthly history this way: a variable-length record
(DIF data field 0xD) whose VIF names the quantity and whose combinable VIFE 0x13 (inverse: newest first,
going back in time from the record's own storage time) or 0x1F (compact profile) says that the data field
is a profile, not one value. Its first two bytes describe the elements:

- spacing control: bits 7-6 the increment mode (absolute values, positive or negative increments,
  signed differences), bits 5-4 the spacing unit (seconds, minutes, hours, days), bits 3-0 the element
  coding, a DIF data field code (integer, BCD or real of 1 to 8 bytes);
- spacing value: how many units lie between two elements; 0xFE means one month and 0xFD half a month
  (the units cannot express calendar months), 0xFF an irregular spacing.

Each element becomes one :class:`~openami.protocols.mbus.datarecord.DataRecord` with the record's
quantity, unit, function, storage, tariff and subunit, in the order sent, annotated with the profile kind,
the increment mode, the spacing and the element's position (``element=1`` is the one nearest the
record's own time). Increments are not summed here: their base is a matter of the meter's
documentation, so they are reported as sent. An element the meter marks invalid (BCD digits A-F, or an
integer of only the sign bit) is ``None`` or the digits as text, never a made-up number. Profiles with
register numbers (VIFE 0x1E) are kept as raw bytes: their layout is not in the public descriptions.
"""

from __future__ import annotations

from openami.protocols.mbus.datarecord import DataRecord, Value
from openami.protocols.mbus.dif import BCD_FIELDS, FIELD_LENGTHS, DataInformation
from openami.protocols.mbus.errors import DecodeError
from openami.protocols.mbus.values import decode_bcd, decode_real
from openami.protocols.mbus.vif import PROFILE_VIFE, ValueInformation

__all__ = ["expand_profile", "profile_kind"]

_MODES = ("absolute", "positive_increment", "negative_increment", "signed_difference")
_UNITS = ("s", "min", "h", "d")
_SPECIAL_SPACING = {0xFD: "0.5month", 0xFE: "1month", 0xFF: "irregular"}
_LVAR_FIELD = 0xD


def profile_kind(dib: DataInformation, vib: ValueInformation) -> str | None:
    """The compact-profile kind a variable-length record announces, or ``None`` for an ordinary one."""
    if dib.data_field != _LVAR_FIELD:
        return None
    extended = vib.vif & 0x7F in (0x7B, 0x7D)  # the first VIFE picks table FB/FD, it is no qualifier
    for code in vib.vife[1 if extended else 0 :]:
        if code & 0x7F in PROFILE_VIFE:
            return PROFILE_VIFE[code & 0x7F]
    return None


def _element(raw: bytes, field: int, signed: bool) -> int | float | str | None:
    if field in BCD_FIELDS:
        return decode_bcd(raw)
    if field == 0x5:
        return decode_real(raw)
    if signed and raw[-1] == 0x80 and not any(raw[:-1]):
        return None  # only the sign bit: the meter's "no value"
    return int.from_bytes(raw, "little", signed=signed)


def expand_profile(dib: DataInformation, vib: ValueInformation, raw: bytes) -> list[DataRecord]:
    """The elements of the profile in ``raw`` (the LVAR data field), one record each."""
    kind = profile_kind(dib, vib)
    code = next(c for c, name in PROFILE_VIFE.items() if name == kind)
    kept = tuple(note for note in vib.annotations if note != f"record_error_{code}")

    def record(value: Value, notes: tuple[str, ...]) -> DataRecord:
        return DataRecord(
            value, vib.unit, vib.quantity, dib.function, dib.storage, dib.tariff, dib.subunit,
            dib.dif, dib.dife, vib.vif, vib.vife, (*kept, str(kind), *notes), raw,
        )  # fmt: skip

    if kind == "compact_profile_with_registers":
        return [record(bytes(raw), ())]
    if len(raw) < 2:
        raise DecodeError("compact profile shorter than its spacing control and value")
    control, spacing = raw[0], raw[1]
    field = control & 0x0F
    size = FIELD_LENGTHS[field]
    if size <= 0 or field == 0x8:
        raise DecodeError(f"compact profile element coding {field:#x} has no fixed size")
    body = raw[2:]
    if len(body) % size:
        raise DecodeError(
            f"compact profile of {len(body)} bytes is not a whole number of {size}-byte elements"
        )
    mode = _MODES[control >> 6]
    spaced = _SPECIAL_SPACING.get(spacing, f"{spacing}{_UNITS[(control >> 4) & 0x03]}")
    signed = vib.kind == "number"
    out = []
    for index in range(len(body) // size):
        value = _element(body[index * size : (index + 1) * size], field, signed)
        if isinstance(value, int | float) and vib.kind == "number":
            value = vib.scale(value)
        out.append(record(value, (mode, f"spacing={spaced}", f"element={index + 1}")))
    return out
