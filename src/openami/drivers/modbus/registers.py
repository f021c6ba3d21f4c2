"""Modbus register maps as data: where each value of a device model lives and how it is encoded.

Modbus itself only moves 16-bit registers; what they mean (which address, which type, which word order,
which scale) is the device maker's choice and differs per model. A map per model, written as data, lets
a new sub-meter be read without code: :class:`Point` says where one value is, :class:`RegisterMap`
gathers a model's points, :func:`plan_reads` groups them into as few requests as the protocol allows
(contiguous registers, at most 125 per read), and :func:`decode_point` turns the registers of one point
into a number in the point's unit.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_REGISTERS_PER_READ",
    "Point",
    "ReadBlock",
    "RegisterMap",
    "RegisterMapError",
    "decode_point",
    "encode_point",
    "plan_reads",
]

MAX_REGISTERS_PER_READ: Final = 125
"""The most registers one Read Holding/Input Registers request may ask for (Modbus application spec)."""

ValueType = Literal["u16", "s16", "u32", "s32", "u64", "s64", "f32", "f64"]
Table = Literal["holding", "input"]
WordOrder = Literal["big", "little"]

_FORMATS: Final[dict[str, tuple[str, int]]] = {
    "u16": ("H", 1),
    "s16": ("h", 1),
    "u32": ("I", 2),
    "s32": ("i", 2),
    "u64": ("Q", 4),
    "s64": ("q", 4),
    "f32": ("f", 2),
    "f64": ("d", 4),
}


class RegisterMapError(ValueError):
    """A map that cannot be read as written: overlapping points, a bad type, an address out of range."""


@dataclass(frozen=True, slots=True)
class Point:
    """One value: ``channel`` is the reading-type code it is stored under (an OBIS code where one
    exists, e.g. ``1-0:1.8.0``), ``scale`` multiplies the raw number into ``unit``.

    ``word_order`` "big" means the most significant register comes first (the Modbus convention and
    most meters); "little" swaps the registers but never the bytes inside one register.
    """

    channel: str
    address: int
    type: ValueType
    unit: str
    scale: float = 1.0
    table: Table = "holding"
    word_order: WordOrder = "big"
    kind: Literal["register", "instant"] = "register"

    @property
    def size(self) -> int:
        return _FORMATS[self.type][1]


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """The points of one device model; checked on construction so a bad map fails at load, not at read."""

    model: str
    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        taken: dict[tuple[str, int], str] = {}
        for point in self.points:
            if point.type not in _FORMATS:
                raise RegisterMapError(f"{self.model}: {point.channel}: unknown type {point.type!r}")
            if not 0 <= point.address <= 0xFFFF - point.size + 1:
                raise RegisterMapError(f"{self.model}: {point.channel}: address {point.address} out of range")
            for register in range(point.address, point.address + point.size):
                other = taken.setdefault((point.table, register), point.channel)
                if other != point.channel:
                    raise RegisterMapError(
                        f"{self.model}: {point.channel} and {other} share {point.table} register {register}"
                    )


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: ``count`` registers of ``table`` from ``start``, holding ``points``."""

    table: Table
    start: int
    count: int
    points: tuple[Point, ...]


def plan_reads(points: Sequence[Point], *, max_gap: int = 0) -> list[ReadBlock]:
    """Group points into requests: same table, registers contiguous (or at most ``max_gap`` unused
    registers apart, for devices that allow reading gaps), at most 125 registers each."""
    blocks: list[ReadBlock] = []
    for table in ("holding", "input"):
        ordered = sorted((p for p in points if p.table == table), key=lambda p: p.address)
        current: list[Point] = []
        start = end = 0
        for point in ordered:
            fits = current and point.address - end <= max_gap
            if fits and point.address + point.size - start <= MAX_REGISTERS_PER_READ:
                current.append(point)
                end = max(end, point.address + point.size)
                continue
            if current:
                blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [point], point.address, point.address + point.size
        if current:
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return blocks


def _ordered(registers: Sequence[int], word_order: WordOrder) -> bytes:
    words = list(registers) if word_order == "big" else list(reversed(registers))
    return struct.pack(f">{len(words)}H", *words)


def decode_point(point: Point, registers: Sequence[int]) -> float:
    """The value of ``point`` in its unit, from its ``size`` registers (most significant first on the
    wire unless the point says "little"). NaN and infinities from float registers are returned as is:
    meters send them for "not available", and the caller drops non-finite values."""
    fmt, size = _FORMATS[point.type]
    if len(registers) != size or not all(0 <= r <= 0xFFFF for r in registers):
        raise RegisterMapError(
            f"{point.channel}: expected {size} registers of 0..65535, got {list(registers)}"
        )
    (raw,) = struct.unpack(f">{fmt}", _ordered(registers, point.word_order))
    return float(raw) * point.scale


def encode_point(point: Point, value: float) -> list[int]:
    """The registers a device holding ``value`` (in the point's unit) sends: the inverse of
    :func:`decode_point`, used by the simulator."""
    fmt, size = _FORMATS[point.type]
    raw = value / point.scale
    number: float | int = raw if fmt in "fd" else round(raw)
    try:
        packed = struct.pack(f">{fmt}", number)
    except struct.error as exc:
        raise RegisterMapError(f"{point.channel}: {value} does not fit {point.type}") from exc
    words = list(struct.unpack(f">{size}H", packed))
    return words if point.word_order == "big" else list(reversed(words))
