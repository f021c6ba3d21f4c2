"""Wireless M-Bus data link layer (EN 13757-4): L, C, M and A fields, CRC blocks of frame formats A and B.

Over the air every telegram is cut into blocks that each carry a CRC-16 (polynomial 0x3D65, result
inverted). Frame format A (modes T1 meter-to-other, S, C) has a 10-byte first block (L C M A) and then
16-byte blocks; the L field counts the bytes after it *without* the CRCs. Frame format B (C mode) has a
first CRC after up to 126 bytes and a second over the rest, and its L field *includes* the CRCs.

Most receivers and USB sticks check and remove the CRCs before handing the telegram on, and that is also
how the reference corpora store them, so ``crc="auto"`` accepts a frame whose length matches L exactly
as already stripped and a frame whose length matches L plus the format-A CRCs as format A (every CRC then
has to verify). Format B cannot be told from a stripped frame by length alone (its L already counts the
CRCs), so it is used only when asked for or when a C-mode receiver leaves the sync-word tail in front:
``54 CD`` announces format A, ``54 3D`` format B. Mode S uses format A too; modes differ only on the
radio (chip rate, preamble), which is the receiver's business, not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from openami.protocols.wmbus.errors import FrameError

__all__ = [
    "C_SND_IR",
    "C_SND_NR",
    "DEVICE_TYPES",
    "Address",
    "CrcMode",
    "LinkFrame",
    "add_crc_format_a",
    "add_crc_format_b",
    "crc16_en13757",
    "manufacturer_code",
    "manufacturer_name",
    "parse_link",
    "strip_crc_format_a",
    "strip_crc_format_b",
]

CrcMode = Literal["auto", "none", "A", "B"]

#: C field values a meter sends: SND-NR (spontaneous data) and SND-IR (installation request).
C_SND_NR: Final = 0x44
C_SND_IR: Final = 0x46

_POLY: Final = 0x3D65
_FIRST_BLOCK: Final = 10  # L C M(2) A(6)
_BLOCK: Final = 16
_B_FIRST: Final = 126  # frame format B: data bytes covered by the first CRC (L included)
_MAX_FRAME: Final = 1 + 255 + 2 * 17  # longest possible format-A frame with CRCs
_C_MODE_PREFIX_A: Final = b"\x54\xcd"
_C_MODE_PREFIX_B: Final = b"\x54\x3d"

#: Device type (medium) byte of the A field, EN 13757-7 table 12 / OMS Vol. 2 (names in plain words).
DEVICE_TYPES: Final[dict[int, str]] = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat",
    0x05: "steam",
    0x06: "warm water",
    0x07: "water",
    0x08: "heat cost allocator",
    0x09: "compressed air",
    0x0A: "cooling load meter (outlet)",
    0x0B: "cooling load meter (inlet)",
    0x0C: "heat (inlet)",
    0x0D: "heat/cooling load meter",
    0x0E: "bus/system component",
    0x0F: "unknown",
    0x14: "calorific value",
    0x15: "hot water",
    0x16: "cold water",
    0x17: "dual register water",
    0x18: "pressure",
    0x19: "a/d converter",
    0x1A: "smoke detector",
    0x1B: "room sensor",
    0x1C: "gas detector",
    0x20: "breaker (electricity)",
    0x21: "valve (gas or water)",
    0x25: "customer unit (display)",
    0x28: "waste water",
    0x29: "garbage",
    0x31: "communication controller",
    0x32: "unidirectional repeater",
    0x33: "bidirectional repeater",
    0x36: "radio converter (system side)",
    0x37: "radio converter (meter side)",
}


def crc16_en13757(data: bytes | bytearray | memoryview) -> int:
    """CRC-16 of EN 13757 (poly 0x3D65, init 0, not reflected, result inverted); check value 0xC2B7."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc ^ 0xFFFF


def manufacturer_name(code: int) -> str:
    """The three-letter FLAG id packed in the M field (5 bits a letter, 'A' = 1); '?' for impossible letters.

    Bit 15 set marks a locally administered code in some stacks; it is ignored like everyone else does.
    """
    letters = ((code >> 10) & 0x1F, (code >> 5) & 0x1F, code & 0x1F)
    return "".join(chr(64 + v) if 1 <= v <= 26 else "?" for v in letters)


def manufacturer_code(name: str) -> int:
    """Inverse of :func:`manufacturer_name` (for building telegrams in tests and registries)."""
    if len(name) != 3 or not all("A" <= ch <= "Z" for ch in name):
        raise ValueError(f"manufacturer must be three letters A-Z: {name!r}")
    return ((ord(name[0]) - 64) << 10) | ((ord(name[1]) - 64) << 5) | (ord(name[2]) - 64)


@dataclass(frozen=True, slots=True)
class Address:
    """Manufacturer plus A field (id, version, device type): who sent the data.

    The same shape appears in the link layer and in the TPL long header (CI 0x72), where it names the meter
    behind a radio module or repeater. ``id_bytes`` are kept as sent (little-endian BCD) because the
    security IVs and KDF use them in that order.
    """

    manufacturer_code: int
    id_bytes: bytes
    version: int
    device_type: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> Address:
        """M (2 bytes little-endian), id (4), version, device type: the 8-byte wire order of both layers."""
        if len(raw) != 8:
            raise FrameError(f"address needs 8 bytes, got {len(raw)}")
        return cls(int.from_bytes(raw[0:2], "little"), bytes(raw[2:6]), raw[6], raw[7])

    def to_bytes(self) -> bytes:
        return (
            self.manufacturer_code.to_bytes(2, "little")
            + self.id_bytes
            + bytes((self.version, self.device_type))
        )

    @property
    def manufacturer(self) -> str:
        return manufacturer_name(self.manufacturer_code)

    @property
    def id(self) -> str:
        """The identification number as printed on the meter: BCD digits, most significant first.

        Rendered as hex so that non-BCD ids (some makers use hex serials) survive unchanged.
        """
        return self.id_bytes[::-1].hex()

    @property
    def medium(self) -> str:
        return DEVICE_TYPES.get(self.device_type, f"reserved 0x{self.device_type:02x}")


@dataclass(frozen=True, slots=True)
class LinkFrame:
    """A link-layer frame with CRCs removed: the header fields and the bytes from the CI field on."""

    length: int
    c_field: int
    address: Address
    body: bytes
    frame_format: Literal["A", "B", "stripped"]

    @property
    def is_installation(self) -> bool:
        """SND-IR: the meter asks to be installed (OMS installation telegram); data decodes all the same."""
        return self.c_field == C_SND_IR


def _a_length_with_crc(l_field: int) -> int:
    rest = l_field + 1 - _FIRST_BLOCK
    blocks = 1 + (rest + _BLOCK - 1) // _BLOCK
    return l_field + 1 + 2 * blocks


def strip_crc_format_a(frame: bytes) -> bytes:
    """Check and remove the CRCs of a format-A frame; :class:`FrameError` on any mismatch or bad length."""
    if not frame:
        raise FrameError("empty frame")
    if len(frame) != _a_length_with_crc(frame[0]):
        raise FrameError(f"format A frame length {len(frame)} does not match L field {frame[0]}")
    out = bytearray()
    pos, size = 0, _FIRST_BLOCK
    while pos < len(frame):
        block = frame[pos : pos + size]
        crc = frame[pos + size : pos + size + 2]
        if crc16_en13757(block) != int.from_bytes(crc, "big"):
            raise FrameError("format A block CRC mismatch", pos)
        out += block
        pos += size + 2
        size = min(_BLOCK, len(frame) - pos - 2)
    return bytes(out)


def strip_crc_format_b(frame: bytes) -> bytes:
    """Check and remove the CRCs of a format-B frame (L counts the CRC bytes); returns L as in format A."""
    if not frame or len(frame) != frame[0] + 1:
        raise FrameError("format B frame length does not match L field")
    if len(frame) < _FIRST_BLOCK + 2:
        raise FrameError("format B frame too short")
    first_end = min(len(frame) - 2, _B_FIRST)
    parts = [(0, first_end)]
    if first_end + 2 < len(frame):
        if len(frame) - (first_end + 2) < 3:
            raise FrameError("format B second block too short")
        parts.append((first_end + 2, len(frame) - 2))
    out = bytearray()
    for start, end in parts:
        if crc16_en13757(frame[start:end]) != int.from_bytes(frame[end : end + 2], "big"):
            raise FrameError("format B block CRC mismatch", start)
        out += frame[start:end]
    out[0] = len(out) - 1
    return bytes(out)


def add_crc_format_a(frame: bytes) -> bytes:
    """Insert format-A CRCs into a stripped frame (L must match its length): for tests and simulators."""
    if not frame or frame[0] != len(frame) - 1 or len(frame) < _FIRST_BLOCK:
        raise FrameError("stripped frame length does not match L field")
    out = bytearray()
    pos, size = 0, _FIRST_BLOCK
    while pos < len(frame):
        block = frame[pos : pos + size]
        out += block + crc16_en13757(block).to_bytes(2, "big")
        pos += size
        size = _BLOCK
    return bytes(out)


def add_crc_format_b(frame: bytes) -> bytes:
    """Insert format-B CRCs into a stripped frame and fix L to count them."""
    if not frame or frame[0] != len(frame) - 1 or len(frame) < _FIRST_BLOCK:
        raise FrameError("stripped frame length does not match L field")
    crc_count = 1 if len(frame) + 2 <= _B_FIRST + 2 else 2
    body = bytearray(frame)
    body[0] = len(frame) - 1 + 2 * crc_count
    first = bytes(body[: min(len(body), _B_FIRST)])
    out = first + crc16_en13757(first).to_bytes(2, "big")
    if crc_count == 2:
        second = bytes(body[_B_FIRST:])
        out += second + crc16_en13757(second).to_bytes(2, "big")
    return out


def parse_link(data: bytes, *, crc: CrcMode = "auto") -> LinkFrame:
    """Split a received frame into link header and body, checking or removing CRCs as ``crc`` says.

    ``"none"``: CRCs were already removed; ``"A"``/``"B"``: CRCs present in that format; ``"auto"``: see the
    module docstring. A C-mode sync-word tail in front (``54 CD`` / ``54 3D``) is removed and fixes
    the format.
    """
    data = bytes(data)
    if len(data) > _MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes is longer than any wireless M-Bus frame")
    if data[:2] in (_C_MODE_PREFIX_A, _C_MODE_PREFIX_B):
        crc = "A" if data[:2] == _C_MODE_PREFIX_A else "B"
        data = data[2:]
    if len(data) < _FIRST_BLOCK:
        raise FrameError(f"frame of {len(data)} bytes is shorter than the link header")
    fmt: Literal["A", "B", "stripped"]
    if crc == "A" or (
        crc == "auto" and len(data) != data[0] + 1 and len(data) == _a_length_with_crc(data[0])
    ):
        data, fmt = strip_crc_format_a(data), "A"
    elif crc == "B":
        data, fmt = strip_crc_format_b(data), "B"
    else:
        fmt = "stripped"
        if len(data) != data[0] + 1:
            raise FrameError(f"frame length {len(data)} does not match L field {data[0]}")
    return LinkFrame(
        length=data[0],
        c_field=data[1],
        address=Address.from_bytes(data[2:10]),
        body=data[10:],
        frame_format=fmt,
    )
