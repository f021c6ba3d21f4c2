"""Data information block (EN 13757-3 §6.3): DIF and up to ten DIFE.

The DIF says how long the data field is and which function (instantaneous, maximum, minimum, value
during error state) the value has; every DIFE adds four bits of storage number, two of tariff and one
of subunit, least significant first. The standard caps a DIB at ten DIFE; a longer chain is rejected
rather than walked, because no meter sends one and it would let noise masquerade as a header.
"""

from __future__ import annotations

from dataclasses import dataclass

from openami.protocols.mbus.errors import DecodeError, EncodeError

__all__ = [
    "BCD_FIELDS",
    "DIF_IDLE_FILLER",
    "DIF_MANUFACTURER",
    "DIF_MORE_RECORDS",
    "FIELD_LENGTHS",
    "FUNCTIONS",
    "MAX_DIFE",
    "DataInformation",
    "encode_dib",
    "parse_dib",
]

MAX_DIFE = 10
DIF_MANUFACTURER = 0x0F
"""Manufacturer-specific data follows, up to the end of the telegram."""
DIF_MORE_RECORDS = 0x1F
"""As 0x0F, and the slave has more records for the next REQ_UD2 (multi-telegram readout)."""
DIF_IDLE_FILLER = 0x2F
DIF_GLOBAL_READOUT = 0x7F

FUNCTIONS = ("instantaneous", "maximum", "minimum", "value_during_error")

VARIABLE = -1
BCD_FIELDS = frozenset({0x9, 0xA, 0xB, 0xC, 0xE})
"""Data field codes of BCD values (type A)."""
FIELD_LENGTHS = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, VARIABLE, 6, 0)
"""Data field code (DIF bits 0..3) -> bytes: none, int8/16/24/32, real32, int48, int64, selection for
readout, BCD 2/4/6/8 digits, variable length (LVAR), BCD 12 digits, special function."""


@dataclass(frozen=True, slots=True)
class DataInformation:
    """A decoded DIB. ``data_field`` is DIF bits 0..3 (the coding of the value)."""

    dif: int
    dife: tuple[int, ...]
    function: str
    storage: int
    tariff: int
    subunit: int

    @property
    def data_field(self) -> int:
        return self.dif & 0x0F


def parse_dib(data: bytes, pos: int) -> tuple[DataInformation, int]:
    """The DIB at ``pos`` (not a special function DIF) and the offset after it."""
    dif = data[pos]
    pos += 1
    storage = (dif >> 6) & 1
    tariff = subunit = 0
    difes: list[int] = []
    more = bool(dif & 0x80)
    while more:
        if pos >= len(data):
            raise DecodeError("telegram ends inside the DIFE chain", pos)
        if len(difes) == MAX_DIFE:
            raise DecodeError(f"more than {MAX_DIFE} DIFE", pos)
        dife = data[pos]
        n = len(difes)
        storage |= (dife & 0x0F) << (1 + 4 * n)
        tariff |= ((dife >> 4) & 0x03) << (2 * n)
        subunit |= ((dife >> 6) & 0x01) << n
        difes.append(dife)
        more = bool(dife & 0x80)
        pos += 1
    return DataInformation(dif, tuple(difes), FUNCTIONS[(dif >> 4) & 0x03], storage, tariff, subunit), pos


def encode_dib(
    data_field: int, function: int = 0, storage: int = 0, tariff: int = 0, subunit: int = 0
) -> bytes:
    """The shortest DIB for these fields: the simulator's and the tests' way to build records."""
    dif = (data_field & 0x0F) | ((function & 0x03) << 4) | ((storage & 1) << 6)
    storage >>= 1
    difes: list[int] = []
    while storage or tariff or subunit:
        difes.append((storage & 0x0F) | ((tariff & 0x03) << 4) | ((subunit & 1) << 6))
        storage, tariff, subunit = storage >> 4, tariff >> 2, subunit >> 1
    if len(difes) > MAX_DIFE:
        raise EncodeError("storage, tariff or subunit too large for ten DIFE")
    out = [dif | (0x80 if difes else 0)]
    out += [d | 0x80 for d in difes[:-1]] + difes[-1:]
    return bytes(out)
