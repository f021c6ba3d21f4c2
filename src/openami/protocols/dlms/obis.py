"""OBIS codes (IEC 62056-6-1): the six-group names of COSEM objects, e.g. ``1-0:1.8.0*255``."""

from __future__ import annotations

import re
from typing import NamedTuple

from openami.protocols.dlms.errors import DecodeError, EncodeError

__all__ = ["Obis"]

_GROUP = "([0-9]{1,3})"
# The two spellings met in configuration and logs; group F is often left out and then means 255.
_REDUCED = re.compile(rf"{_GROUP}-{_GROUP}:{_GROUP}\.{_GROUP}\.{_GROUP}(?:\*{_GROUP})?")
_DOTTED = re.compile(rf"{_GROUP}\.{_GROUP}\.{_GROUP}\.{_GROUP}\.{_GROUP}(?:\.{_GROUP})?")


class Obis(NamedTuple):
    """An OBIS code; each group 0..255 (checked by :meth:`parse` and :meth:`from_bytes`)."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    @classmethod
    def parse(cls, text: str) -> Obis:
        """Accept ``1-0:1.8.0*255``, ``1-0:1.8.0``, ``1.0.1.8.0.255`` or ``1.0.1.8.0`` (F = 255)."""
        stripped = text.strip()
        match = _REDUCED.fullmatch(stripped) or _DOTTED.fullmatch(stripped)
        if match is None:
            raise DecodeError(f"not an OBIS code (want A-B:C.D.E*F or A.B.C.D.E.F): {text!r:.60}")
        groups = [255 if g is None else int(g) for g in match.groups()]
        too_big = [g for g in groups if g > 255]
        if too_big:
            raise DecodeError(f"OBIS group {too_big[0]} out of range 0..255 in {text!r:.60}")
        return cls(*groups)

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> Obis:
        """The 6-byte form used on the wire (logical_name octet-strings, attribute descriptors)."""
        if len(raw) != 6:
            raise DecodeError(f"OBIS code must be 6 bytes, got {len(raw)}")
        return cls(*bytes(raw))

    def to_bytes(self) -> bytes:
        """The 6-byte wire form."""
        if not all(0 <= g <= 255 for g in self):
            raise EncodeError(f"OBIS group out of range 0..255 in {tuple(self)}")
        return bytes(self)

    @property
    def dotted(self) -> str:
        """``1.0.1.8.0.255``."""
        return ".".join(map(str, self))

    @property
    def reduced(self) -> str:
        """``1-0:1.8.0`` (group F left out)."""
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}"

    def __str__(self) -> str:
        return f"{self.reduced}*{self.f}"
