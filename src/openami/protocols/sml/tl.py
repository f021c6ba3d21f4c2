"""SML's type-length encoding (TR-03109-1 Anlage IV, "SML" 1.04 §6.3): every value starts with a TL field.

TL byte: bit 7 says another TL byte follows, bits 6-4 are the type (000 octet string, 100 boolean, 101
signed integer, 110 unsigned integer, 111 list), bits 3-0 a length nibble; continuation bytes carry type
000 and one more nibble each (most significant first). For scalars the length counts the TL bytes too;
for lists it is the number of elements. ``01`` is an optional value left out, ``00`` ends a message.

Decoding is bounded: a length never runs past the input, a list never claims more elements than bytes
remain, nesting stops at :data:`MAX_DEPTH` and integers at 8 bytes, so hostile input costs linear time.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from openami.protocols.sml.errors import SmlDecodeError

__all__ = ["END_OF_MESSAGE", "MAX_DEPTH", "SmlNode", "SmlReader"]

#: A decoded value: octet string, integer, boolean, left out (None) or a list.
SmlNode: TypeAlias = "bytes | int | bool | tuple[SmlNode, ...] | None"

END_OF_MESSAGE: Final = 0x00
#: Real messages nest 5 or 6 deep (message, body, list, entry, time); 32 leaves room for trees.
MAX_DEPTH: Final = 32
_MAX_TL_BYTES: Final = 4
_OCTETS, _BOOL, _INT, _UINT, _LIST = 0, 4, 5, 6, 7


class SmlReader:
    """Reads TL-encoded values from ``data`` starting at ``pos``; :attr:`pos` moves past what was read."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def peek(self) -> int | None:
        """The next byte, or None at the end."""
        return self.data[self.pos] if self.pos < len(self.data) else None

    def _tl(self) -> tuple[int, int, int]:
        """(type, length, TL bytes) of the TL field at :attr:`pos`."""
        data, start = self.data, self.pos
        if start >= len(data):
            raise SmlDecodeError("input ends where a value should start", start)
        first = data[start]
        kind = (first >> 4) & 0x07
        length = first & 0x0F
        size = 1
        byte = first
        while byte & 0x80:
            if size >= _MAX_TL_BYTES:
                raise SmlDecodeError(f"TL field longer than {_MAX_TL_BYTES} bytes", start)
            if start + size >= len(data):
                raise SmlDecodeError("input ends inside a TL field", start)
            byte = data[start + size]
            if byte & 0x70:
                raise SmlDecodeError(f"TL continuation byte 0x{byte:02X} has type bits set", start + size)
            length = (length << 4) | (byte & 0x0F)
            size += 1
        return kind, length, size

    def read(self, depth: int = 0) -> SmlNode:
        """The value at :attr:`pos` (a list with all its elements)."""
        if depth > MAX_DEPTH:
            raise SmlDecodeError(f"lists nested deeper than {MAX_DEPTH}", self.pos)
        start = self.pos
        kind, length, size = self._tl()
        if kind == _LIST:
            if length > self.remaining - size:
                raise SmlDecodeError(f"list of {length} elements in {self.remaining - size} bytes", start)
            self.pos += size
            return tuple(self.read(depth + 1) for _ in range(length))
        if start < len(self.data) and self.data[start] == END_OF_MESSAGE:
            raise SmlDecodeError("end of message where a value should be", start)
        if length < size:
            raise SmlDecodeError(f"length {length} shorter than its TL field", start)
        end = start + length
        if end > len(self.data):
            raise SmlDecodeError(f"value of {length} bytes runs past the input", start)
        body = self.data[start + size : end]
        self.pos = end
        if kind == _OCTETS:
            return None if self.data[start] == 0x01 else bytes(body)
        if kind == _BOOL:
            if len(body) != 1:
                raise SmlDecodeError(f"boolean of {len(body)} bytes", start)
            return body[0] != 0
        if kind in (_INT, _UINT):
            if not 1 <= len(body) <= 8:
                raise SmlDecodeError(f"integer of {len(body)} bytes (1..8 allowed)", start)
            return int.from_bytes(body, "big", signed=kind == _INT)
        raise SmlDecodeError(f"unknown TL type {kind:03b}", start)

    def read_list_header(self) -> int:
        """Consume the TL field of a list and return its element count (the elements follow)."""
        start = self.pos
        kind, length, size = self._tl()
        if kind != _LIST:
            raise SmlDecodeError("expected a list", start)
        if length > self.remaining - size:
            raise SmlDecodeError(f"list of {length} elements in {self.remaining - size} bytes", start)
        self.pos += size
        return length

    def read_end_of_message(self) -> None:
        """Consume the ``00`` that ends a message."""
        if self.peek() != END_OF_MESSAGE:
            raise SmlDecodeError("message does not end with 00", self.pos)
        self.pos += 1
