"""Compact frames (EN 13757-3/-7, OMS Vol. 2): the data without its DIF/VIF headers, named by a signature.

A meter that sends the same records every few seconds saves air time by sending the full frame (CI 0x78,
0x7A or 0x72) now and then and, in between, only the data fields (CI 0x79 without, 0x7B with a short and
0x73 with a long TPL header). A compact frame's application data starts with the format signature (CRC16
of every record's DIB and VIB bytes, in order) and the full-frame CRC (CRC16 of the application data the
full frame would have had), both least significant byte first, then the data fields.

:class:`FormatCache` learns formats from the full frames a receiver sees and rebuilds compact frames
from them; the rebuilt frame is accepted only when its CRC equals the full-frame CRC, so a stale or
colliding format yields :class:`~openami.protocols.wmbus.errors.FormatUnknownError`, never wrong values.
The cache is bounded (least recently used formats go first) and keyed by manufacturer, version, device
type and signature, since meters of one model share their formats.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from openami.protocols.mbus import MbusError
from openami.protocols.mbus.dif import VARIABLE
from openami.protocols.mbus.records import record_layout
from openami.protocols.mbus.values import decode_lvar_length
from openami.protocols.wmbus.errors import DecodeError, FormatUnknownError
from openami.protocols.wmbus.link import Address, crc16_en13757

__all__ = ["COMPACT_CIS", "FULL_CIS", "Format", "FormatCache", "format_of"]

#: TPL CIs of compact frames and of the full frames they abbreviate.
COMPACT_CIS: Final = frozenset({0x79, 0x7B, 0x73})
FULL_CIS: Final = frozenset({0x78, 0x7A, 0x72})
_FILLER: Final = 0x2F
_DEFAULT_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class Format:
    """The record headers of a full frame, each with its data length (``VARIABLE``: LVAR-coded)."""

    signature: int
    layout: tuple[tuple[bytes, int], ...]
    manufacturer_tail: bool

    def expand(self, data: bytes) -> bytes:
        """The full frame's application data with ``data``'s fields behind their headers."""
        out = bytearray()
        pos = 0
        last = len(self.layout) - 1
        for index, (header, length) in enumerate(self.layout):
            out += header
            if index == last and self.manufacturer_tail:
                out += data[pos:]  # manufacturer data: whatever is left
                return bytes(out)
            if length == VARIABLE:
                if pos >= len(data):
                    raise DecodeError("compact frame ends before an LVAR byte", pos)
                try:
                    length = decode_lvar_length(data[pos], pos)[0] + 1
                except MbusError as exc:
                    raise DecodeError(f"compact frame: {exc}", pos) from exc
            if pos + length > len(data):
                raise DecodeError("compact frame shorter than its format", pos)
            out += data[pos : pos + length]
            pos += length
        if pos != len(data) and any(b != _FILLER for b in data[pos:]):
            raise DecodeError("compact frame longer than its format", pos)
        return bytes(out)


def format_of(app: bytes) -> Format:
    """The format of a full frame's application data (raises ``DecodeError`` for a broken one)."""
    try:
        layout, tail = record_layout(app)
    except MbusError as exc:
        raise DecodeError(f"application layer: {exc}") from exc
    signature = crc16_en13757(b"".join(header for header, _length in layout))
    return Format(signature, tuple(layout), tail)


def _strip_fillers(app: bytes) -> bytes:
    pos = 0
    while pos < len(app) and app[pos] == _FILLER:
        pos += 1
    return app[pos:]


class FormatCache:
    """Formats seen in full frames, to rebuild the compact frames of the same meter model."""

    def __init__(self, size: int = _DEFAULT_SIZE) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self._size = size
        self._formats: OrderedDict[tuple[str, int, int, int], Format] = OrderedDict()

    def __len__(self) -> int:
        return len(self._formats)

    def learn(self, address: Address, app: bytes) -> Format | None:
        """Remember the format of a full frame; ``None`` (nothing learnt) when its records do not parse."""
        try:
            found = format_of(app)
        except DecodeError:
            return None
        key = (address.manufacturer, address.version, address.device_type, found.signature)
        self._formats[key] = found
        self._formats.move_to_end(key)
        while len(self._formats) > self._size:
            self._formats.popitem(last=False)
        return found

    def expand(self, ci: int, address: Address, app: bytes) -> bytes:
        """The full application data for the compact frame (TPL ``ci``) whose application data is ``app``
        (fillers, signature, CRC, data)."""
        body = _strip_fillers(app)
        if len(body) < 4:
            raise DecodeError("compact frame shorter than its signature and CRC")
        signature = int.from_bytes(body[:2], "little")
        full_crc = int.from_bytes(body[2:4], "little")
        key = (address.manufacturer, address.version, address.device_type, signature)
        found = self._formats.get(key)
        if found is None:
            raise FormatUnknownError(ci, signature)
        self._formats.move_to_end(key)
        full = found.expand(body[4:])
        if crc16_en13757(full) != full_crc:
            raise FormatUnknownError(ci, signature, "rebuilt frame fails the full-frame CRC")
        return full
