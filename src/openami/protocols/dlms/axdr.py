"""A-XDR encoding of the DLMS ``Data`` CHOICE (IEC 62056-6-2, DLMS UA Green Book), written from the
public descriptions of the standard.

Every value is a one-byte tag followed by its contents: fixed-size numbers big-endian, strings and
bit-strings behind a BER-style length, arrays and structures behind an element count, compact arrays
behind a type description and one octet-string holding all element values untagged.

The decoder walks the caller's buffer with offsets and ``struct.unpack_from`` (no slice per value) so a
load-profile buffer costs one pass. Nothing an attacker sends can make it hang or exhaust memory:
nesting is capped at :data:`MAX_DEPTH`, every element count is checked against the bytes that are
actually left *before* anything is allocated, and every failure is a :class:`DecodeError` carrying the
offset where decoding stopped.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntEnum

from openami.protocols.dlms.errors import DecodeError, EncodeError

__all__ = [
    "DAY_LAST",
    "DAY_SECOND_LAST",
    "MAX_DEPTH",
    "MONTH_DST_BEGIN",
    "MONTH_DST_END",
    "BitString",
    "Column",
    "CompactArray",
    "CosemDate",
    "CosemDateTime",
    "CosemTime",
    "Data",
    "DataType",
    "Table",
    "TypeDescription",
    "datetime_octets",
    "decode_data",
    "decode_data_all",
    "decode_length",
    "encode_data",
    "encode_datetime",
    "encode_length",
    "parse_datetime",
    "table_rows",
]

Buffer = bytes | bytearray | memoryview

MAX_DEPTH = 32
"""Most arrays/structures (and compact-array descriptions) that may enclose one another. Real meters
nest three or four deep; the cap keeps recursion and work bounded for hostile input."""

MAX_LENGTH_OCTETS = 4
"""Long-form lengths 0x81..0x84: anything longer cannot describe a real APDU and is refused."""

COMPACT_NODES_PER_BYTE = 16
"""A compact-array element may decode to at most this many values per content byte it needs.

Null-data fields take no content bytes, so without a cap a short description full of them would let
a few content bytes expand into millions of objects. Real descriptions stay below 3."""


class DataType(IntEnum):
    """The tags of the ``Data`` CHOICE."""

    NULL_DATA = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


_TYPES: dict[int, DataType] = {t.value: t for t in DataType}

# Fixed-size numeric types: one struct each, big-endian as A-XDR requires. BCD is kept as its raw byte
# (0..255) so a meter's nibbles survive a round trip even when they are not decimal digits.
_FIXED: dict[DataType, struct.Struct] = {
    DataType.BOOLEAN: struct.Struct(">?"),
    DataType.DOUBLE_LONG: struct.Struct(">i"),
    DataType.DOUBLE_LONG_UNSIGNED: struct.Struct(">I"),
    DataType.BCD: struct.Struct(">B"),
    DataType.INTEGER: struct.Struct(">b"),
    DataType.LONG: struct.Struct(">h"),
    DataType.UNSIGNED: struct.Struct(">B"),
    DataType.LONG_UNSIGNED: struct.Struct(">H"),
    DataType.LONG64: struct.Struct(">q"),
    DataType.LONG64_UNSIGNED: struct.Struct(">Q"),
    DataType.ENUM: struct.Struct(">B"),
    DataType.FLOAT32: struct.Struct(">f"),
    DataType.FLOAT64: struct.Struct(">d"),
}
_FIXED_BY_TAG: dict[int, tuple[DataType, Callable[[Buffer, int], tuple[object, ...]], int]] = {
    t.value: (t, st.unpack_from, st.size) for t, st in _FIXED.items()
}
_FLOATS = frozenset({DataType.FLOAT32, DataType.FLOAT64})

_DATE = struct.Struct(">HBBB")
_TIME = struct.Struct(">BBBB")
_DATE_TIME = struct.Struct(">HBBBBBBBhB")
_U16 = struct.Struct(">H")

# Values carried by no content bytes at all.
_EMPTY = frozenset({DataType.NULL_DATA, DataType.DONT_CARE})
# Strings: a length, then that many bytes.
_STRINGS = frozenset({DataType.OCTET_STRING, DataType.VISIBLE_STRING, DataType.UTF8_STRING})
_CONTAINERS = frozenset({DataType.ARRAY, DataType.STRUCTURE})

# "Not specified" markers of the date and time fields.
YEAR_NOT_SPECIFIED = 0xFFFF
NOT_SPECIFIED = 0xFF
DEVIATION_NOT_SPECIFIED = -0x8000
MONTH_DST_END = 0xFD
"""Month 0xFD: the month daylight saving time ends; kept as this int in :attr:`CosemDate.month`."""
MONTH_DST_BEGIN = 0xFE
"""Month 0xFE: the month daylight saving time begins."""
DAY_SECOND_LAST = 0xFD
"""Day 0xFD: the second last day of the month; kept as this int in :attr:`CosemDate.day`."""
DAY_LAST = 0xFE
"""Day 0xFE: the last day of the month."""


# --------------------------------------------------------------------------------------------- lengths


def decode_length(buf: Buffer, offset: int) -> tuple[int, int]:
    """Read a length (short form below 0x80, long form 0x81..0x84 + that many big-endian bytes).

    Returns the length and the offset after it. Non-minimal long forms (``82 00 05``) are accepted
    because some meters send them; 0x80 (indefinite) and more than four length bytes are refused.
    """
    return _length(buf, offset, len(buf))


def _length(buf: Buffer, offset: int, end: int) -> tuple[int, int]:
    if offset >= end:
        raise DecodeError("truncated length", offset)
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if count == 0 or count > MAX_LENGTH_OCTETS:
        raise DecodeError(f"unsupported length form 0x{first:02X}", offset)
    stop = offset + 1 + count
    if stop > end:
        raise DecodeError(f"truncated length: need {count} length bytes", offset)
    return int.from_bytes(buf[offset + 1 : stop], "big"), stop


def encode_length(n: int) -> bytes:
    """The shortest encoding of ``n`` (0 .. 2**32-1)."""
    if n < 0:
        raise EncodeError(f"negative length {n}")
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    if size > MAX_LENGTH_OCTETS:
        raise EncodeError(f"length {n} needs more than {MAX_LENGTH_OCTETS} length bytes")
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


# ------------------------------------------------------------------------------------------ value types


@dataclass(frozen=True, slots=True)
class BitString:
    """``length`` bits, first bit in the most significant bit of ``data[0]``; padding bits are kept."""

    length: int
    data: bytes

    @property
    def bits(self) -> str:
        """The bits as text, e.g. ``"0101"``."""
        return "".join(f"{byte:08b}" for byte in self.data)[: self.length]

    @classmethod
    def from_bits(cls, bits: str) -> BitString:
        """Build from text such as ``"0101"`` (padding bits zero)."""
        if bits.strip("01"):
            raise EncodeError(f"bit string may only hold 0 and 1: {bits!r}")
        padded = bits + "0" * (-len(bits) % 8)
        data = int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""
        return cls(len(bits), data)


@dataclass(frozen=True, slots=True)
class CosemDate:
    """A date; ``None`` for a field sent as "not specified".

    ``month`` may be :data:`MONTH_DST_END`/:data:`MONTH_DST_BEGIN` and ``day``
    :data:`DAY_SECOND_LAST`/:data:`DAY_LAST`: those markers are kept as the raw ints because they are
    only meaningful against a clock's DST rules (schedules, activity calendars). ``weekday`` is 1
    (Monday) .. 7 (Sunday).
    """

    year: int | None
    month: int | None
    day: int | None
    weekday: int | None = None


@dataclass(frozen=True, slots=True)
class CosemTime:
    """A time of day; ``None`` for a field sent as "not specified"."""

    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None = None


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    """A date-time as a meter sends it.

    ``deviation_minutes`` follows the Blue Book convention: the deviation of local time *to* UTC, so
    ``UTC = local + deviation``. Paris in winter (UTC+01:00) is ``-60``. Some national companion specs
    use the opposite sign; callers that talk to such meters negate it at their edge. ``clock_status`` is
    the raw status byte (bit 0x80: daylight saving active), ``None`` when 0xFF.
    """

    date: CosemDate
    time: CosemTime
    deviation_minutes: int | None = None
    clock_status: int | None = None

    def to_datetime(self) -> datetime | None:
        """The instant named, aware when the deviation is known, naive when not.

        ``None`` when a field it needs is unspecified or a DST/last-day marker, or when the fields do
        not form a real calendar time (meters do send 2021-02-30): a reading without a usable timestamp
        is better dropped by the caller than guessed. Unspecified hundredths count as zero.
        """
        d, t = self.date, self.time
        if d.year is None or d.month is None or d.day is None:
            return None
        if t.hour is None or t.minute is None or t.second is None:
            return None
        tz = None
        if self.deviation_minutes is not None:
            if abs(self.deviation_minutes) >= 24 * 60:
                return None
            tz = timezone(timedelta(minutes=-self.deviation_minutes))
        try:
            return datetime(
                d.year, d.month, d.day, t.hour, t.minute, t.second, (t.hundredths or 0) * 10_000, tz
            )
        except ValueError:
            return None

    @classmethod
    def from_datetime(cls, dt: datetime, clock_status: int | None = None) -> CosemDateTime:
        """The date-time of ``dt`` in its own local time; deviation from its UTC offset (if aware)."""
        offset = dt.utcoffset()
        deviation = None if offset is None else -(int(offset.total_seconds()) // 60)
        return cls(
            CosemDate(dt.year, dt.month, dt.day, dt.isoweekday()),
            CosemTime(dt.hour, dt.minute, dt.second, dt.microsecond // 10_000),
            deviation,
            clock_status,
        )


def _field(raw: int) -> int | None:
    return None if raw == NOT_SPECIFIED else raw


def _raw(value: int | None) -> int:
    return NOT_SPECIFIED if value is None else value


def _date_from(year: int, month: int, day: int, weekday: int) -> CosemDate:
    return CosemDate(
        None if year == YEAR_NOT_SPECIFIED else year, _field(month), _field(day), _field(weekday)
    )


def _date_fields(d: CosemDate) -> tuple[int, int, int, int]:
    year = YEAR_NOT_SPECIFIED if d.year is None else d.year
    return year, _raw(d.month), _raw(d.day), _raw(d.weekday)


def _time_fields(t: CosemTime) -> tuple[int, int, int, int]:
    return _raw(t.hour), _raw(t.minute), _raw(t.second), _raw(t.hundredths)


def parse_datetime(raw: bytes | bytearray | memoryview) -> CosemDateTime:
    """Decode the 12-byte date-time form (as carried inside octet-strings in notifications)."""
    if len(raw) != _DATE_TIME.size:
        raise DecodeError(f"date-time must be {_DATE_TIME.size} bytes, got {len(raw)}", 0)
    return _unpack_datetime(raw, 0)


def encode_datetime(value: CosemDateTime) -> bytes:
    """The 12-byte form of ``value``."""
    deviation = DEVIATION_NOT_SPECIFIED if value.deviation_minutes is None else value.deviation_minutes
    try:
        return _DATE_TIME.pack(
            *_date_fields(value.date), *_time_fields(value.time), deviation, _raw(value.clock_status)
        )
    except struct.error as exc:
        raise EncodeError(f"date-time field out of range: {value!r}") from exc


def datetime_octets(dt: datetime) -> bytes:
    """The 12-byte form of an aware ``dt`` in its own local time, clock status unspecified.

    The same bytes as ``encode_datetime(CosemDateTime.from_datetime(dt))`` at a tenth of the cost: every
    profile row a meter sends carries one.
    """
    offset = dt.utcoffset()
    if offset is None:
        raise EncodeError("datetime_octets needs an aware datetime")
    deviation = -(offset.days * 1440 + offset.seconds // 60)
    return _DATE_TIME.pack(
        dt.year,
        dt.month,
        dt.day,
        dt.isoweekday(),
        dt.hour,
        dt.minute,
        dt.second,
        dt.microsecond // 10_000,
        deviation,
        NOT_SPECIFIED,
    )


def _unpack_datetime(buf: Buffer, off: int) -> CosemDateTime:
    year, month, day, wday, hour, minute, second, hundredths, dev, status = _DATE_TIME.unpack_from(buf, off)
    return CosemDateTime(
        _date_from(year, month, day, wday),
        CosemTime(_field(hour), _field(minute), _field(second), _field(hundredths)),
        None if dev == DEVIATION_NOT_SPECIFIED else dev,
        _field(status),
    )


# ----------------------------------------------------------------------------------------- compact array


@dataclass(frozen=True, slots=True)
class TypeDescription:
    """A compact-array contents description.

    A simple type is just its tag. ``ARRAY`` has ``count`` elements all described by ``elements[0]``;
    ``STRUCTURE`` has one description per field in ``elements`` and ``count == len(elements)`` (use the
    constructors).
    """

    type: DataType
    count: int = 0
    elements: tuple[TypeDescription, ...] = ()

    @classmethod
    def array(cls, count: int, element: TypeDescription) -> TypeDescription:
        return cls(DataType.ARRAY, count, (element,))

    @classmethod
    def structure(cls, *fields: TypeDescription) -> TypeDescription:
        return cls(DataType.STRUCTURE, len(fields), fields)


def _description_cost(desc: TypeDescription) -> tuple[int, int]:
    """(fewest content bytes, number of decoded values) of one element described by ``desc``."""
    if desc.type is DataType.ARRAY:
        size, nodes = _description_cost(desc.elements[0])
        return desc.count * size, 1 + desc.count * nodes
    if desc.type is DataType.STRUCTURE:
        costs = [_description_cost(e) for e in desc.elements]
        return sum(c[0] for c in costs), 1 + sum(c[1] for c in costs)
    fixed = _FIXED.get(desc.type)
    if fixed is not None:
        return fixed.size, 1
    if desc.type in _EMPTY:
        return 0, 1
    # Strings and bit-strings need at least their length byte; date types are fixed.
    return _SIZED.get(desc.type, 1), 1


def _compact_refusal(desc: TypeDescription, nonempty: bool) -> str | None:
    """Why a compact array of ``desc`` cannot be carried, or ``None``: descriptions that would amplify
    (see :data:`COMPACT_NODES_PER_BYTE`), or whose elements take no bytes while there are elements (their
    number could not be told from the contents)."""
    size, nodes = _description_cost(desc)
    if nodes > COMPACT_NODES_PER_BYTE * max(size, 1) or (size == 0 and nonempty):
        return f"compact-array description decodes to {nodes} values from {size} bytes"
    return None


@dataclass(frozen=True, slots=True)
class CompactArray:
    """A compact array: every element has the shape ``description`` and is sent without tags."""

    description: TypeDescription
    values: tuple[Data, ...]


# ----------------------------------------------------------------------------------------------- Data


@dataclass(frozen=True, slots=True)
class Data:
    """One DLMS value: its tag and the Python value for it.

    ``value`` is ``None`` (null-data, dont-care), ``bool``, ``int`` (integers, enum, BCD raw byte),
    ``float``, ``bytes`` (octet-string), ``str`` (visible-string latin-1, utf8-string),
    ``tuple[Data, ...]`` (array, structure), :class:`Table` (array, see there), :class:`BitString`,
    :class:`CompactArray`,
    :class:`CosemDateTime`, :class:`CosemDate` or :class:`CosemTime`. Construction does not validate
    (decoding must stay cheap); :func:`encode_data` does.
    """

    type: DataType
    value: object

    @classmethod
    def null(cls) -> Data:
        return cls(DataType.NULL_DATA, None)

    @classmethod
    def boolean(cls, v: bool) -> Data:
        return cls(DataType.BOOLEAN, v)

    @classmethod
    def int8(cls, v: int) -> Data:
        return cls(DataType.INTEGER, v)

    @classmethod
    def int16(cls, v: int) -> Data:
        return cls(DataType.LONG, v)

    @classmethod
    def int32(cls, v: int) -> Data:
        return cls(DataType.DOUBLE_LONG, v)

    @classmethod
    def int64(cls, v: int) -> Data:
        return cls(DataType.LONG64, v)

    @classmethod
    def uint8(cls, v: int) -> Data:
        return cls(DataType.UNSIGNED, v)

    @classmethod
    def uint16(cls, v: int) -> Data:
        return cls(DataType.LONG_UNSIGNED, v)

    @classmethod
    def uint32(cls, v: int) -> Data:
        return cls(DataType.DOUBLE_LONG_UNSIGNED, v)

    @classmethod
    def uint64(cls, v: int) -> Data:
        return cls(DataType.LONG64_UNSIGNED, v)

    @classmethod
    def enum(cls, v: int) -> Data:
        return cls(DataType.ENUM, v)

    @classmethod
    def float32(cls, v: float) -> Data:
        return cls(DataType.FLOAT32, v)

    @classmethod
    def float64(cls, v: float) -> Data:
        return cls(DataType.FLOAT64, v)

    @classmethod
    def octet_string(cls, v: bytes) -> Data:
        return cls(DataType.OCTET_STRING, bytes(v))

    @classmethod
    def visible_string(cls, v: str) -> Data:
        return cls(DataType.VISIBLE_STRING, v)

    @classmethod
    def utf8_string(cls, v: str) -> Data:
        return cls(DataType.UTF8_STRING, v)

    @classmethod
    def array(cls, *items: Data) -> Data:
        return cls(DataType.ARRAY, items)

    @classmethod
    def structure(cls, *items: Data) -> Data:
        return cls(DataType.STRUCTURE, items)

    @classmethod
    def date_time(cls, v: CosemDateTime) -> Data:
        return cls(DataType.DATE_TIME, v)

    def to_python(self) -> object:
        """Plain values: arrays, structures and compact arrays become lists; everything else as is."""
        v = self.value
        if isinstance(v, tuple):
            return [item.to_python() for item in v]
        if isinstance(v, CompactArray):
            return [item.to_python() for item in v.values]
        if isinstance(v, Table):
            return [list(row) for row in v.rows]
        return v


# -------------------------------------------------------------------------------------------- decoding

# The decoder builds one Data per value; the frozen dataclass __init__ goes through object.__setattr__ per
# field and costs twice what setting the two slots directly does, which shows in a load-profile read.
_new_object = object.__new__
_set_type = vars(Data)["type"].__set__
_set_value = vars(Data)["value"].__set__


def _data(dtype: DataType, value: object) -> Data:
    data: Data = _new_object(Data)
    _set_type(data, dtype)
    _set_value(data, value)
    return data


# Leaf decoders share one signature so tagged values and untagged compact-array contents use the same
# code: (buffer, offset, end of the region) -> (python value, new offset).
_LeafDecoder = Callable[[Buffer, int, int], tuple[object, int]]


def _need(dtype: DataType, off: int, size: int, end: int) -> None:
    if off + size > end:
        raise DecodeError(f"truncated {dtype.name}: need {size} bytes, have {max(end - off, 0)}", off)


def _fixed_decoder(dtype: DataType, st: struct.Struct) -> _LeafDecoder:
    size = st.size
    unpack = st.unpack_from

    def decode(buf: Buffer, off: int, end: int) -> tuple[object, int]:
        if off + size > end:
            _need(dtype, off, size, end)
        return unpack(buf, off)[0], off + size

    return decode


def _string_body(dtype: DataType, buf: Buffer, off: int, end: int) -> tuple[bytes, int]:
    if off < end and buf[off] < 0x80:  # short form, nearly always
        n = buf[off]
        off += 1
    else:
        n, off = _length(buf, off, end)
    if off + n > end:
        _need(dtype, off, n, end)
    return bytes(buf[off : off + n]), off + n


def _decode_octets(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    return _string_body(DataType.OCTET_STRING, buf, off, end)


def _decode_visible(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    raw, new = _string_body(DataType.VISIBLE_STRING, buf, off, end)
    return raw.decode("latin-1"), new


def _decode_utf8(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    raw, new = _string_body(DataType.UTF8_STRING, buf, off, end)
    try:
        return raw.decode("utf-8"), new
    except UnicodeDecodeError as exc:
        raise DecodeError(f"utf8-string is not UTF-8: {exc.reason}", off) from exc


def _decode_bits(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    bits, start = _length(buf, off, end)
    size = (bits + 7) // 8
    _need(DataType.BIT_STRING, start, size, end)
    return BitString(bits, bytes(buf[start : start + size])), start + size


def _decode_empty(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    return None, off


def _decode_date_time(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    _need(DataType.DATE_TIME, off, _DATE_TIME.size, end)
    return _unpack_datetime(buf, off), off + _DATE_TIME.size


def _decode_date(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    _need(DataType.DATE, off, _DATE.size, end)
    return _date_from(*_DATE.unpack_from(buf, off)), off + _DATE.size


def _decode_time(buf: Buffer, off: int, end: int) -> tuple[object, int]:
    _need(DataType.TIME, off, _TIME.size, end)
    hour, minute, second, hundredths = _TIME.unpack_from(buf, off)
    return CosemTime(_field(hour), _field(minute), _field(second), _field(hundredths)), off + _TIME.size


_SIZED: dict[DataType, int] = {
    DataType.DATE_TIME: _DATE_TIME.size,
    DataType.DATE: _DATE.size,
    DataType.TIME: _TIME.size,
}

_LEAF_DECODERS: dict[DataType, _LeafDecoder] = {
    **{t: _fixed_decoder(t, st) for t, st in _FIXED.items()},
    DataType.NULL_DATA: _decode_empty,
    DataType.DONT_CARE: _decode_empty,
    DataType.BIT_STRING: _decode_bits,
    DataType.OCTET_STRING: _decode_octets,
    DataType.VISIBLE_STRING: _decode_visible,
    DataType.UTF8_STRING: _decode_utf8,
    DataType.DATE_TIME: _decode_date_time,
    DataType.DATE: _decode_date,
    DataType.TIME: _decode_time,
}


def _decode(buf: Buffer, off: int, end: int, depth: int) -> tuple[Data, int]:
    if off >= end:
        raise DecodeError("truncated data: missing tag", off)
    tag = buf[off]
    off += 1
    fixed = _FIXED_BY_TAG.get(tag)
    if fixed is not None:  # the common case, inlined
        number_type, unpack, size = fixed
        if off + size > end:
            _need(number_type, off, size, end)
        return _data(number_type, unpack(buf, off)[0]), off + size
    dtype = _TYPES.get(tag)
    if dtype is None:
        raise DecodeError(f"unknown data tag {tag} (0x{tag:02X})", off - 1)
    leaf = _LEAF_DECODERS.get(dtype)
    if leaf is not None:
        value, off = leaf(buf, off, end)
        return _data(dtype, value), off
    if depth >= MAX_DEPTH:
        raise DecodeError(f"data nested deeper than {MAX_DEPTH}", off - 1)
    if dtype is DataType.COMPACT_ARRAY:
        compact, off = _decode_compact(buf, off, end, depth + 1)
        return _data(dtype, compact), off
    count, off = _length(buf, off, end)
    # Each element needs at least its tag byte: refuse impossible counts before building anything.
    if count > end - off:
        raise DecodeError(f"{dtype.name} claims {count} elements but only {end - off} bytes remain", off)
    items = []
    for _ in range(count):
        item, off = _decode(buf, off, end, depth + 1)
        items.append(item)
    return _data(dtype, tuple(items)), off


def _decode_description(buf: Buffer, off: int, end: int, depth: int) -> tuple[TypeDescription, int]:
    if off >= end:
        raise DecodeError("truncated compact-array description", off)
    tag = buf[off]
    dtype = _TYPES.get(tag)
    if dtype is None or dtype is DataType.COMPACT_ARRAY:
        raise DecodeError(f"unknown compact-array element type {tag} (0x{tag:02X})", off)
    off += 1
    if dtype not in _CONTAINERS:
        return TypeDescription(dtype), off
    if depth >= MAX_DEPTH:
        raise DecodeError(f"compact-array description nested deeper than {MAX_DEPTH}", off)
    if dtype is DataType.ARRAY:
        _need(dtype, off, _U16.size, end)
        (count,) = _U16.unpack_from(buf, off)
        element, off = _decode_description(buf, off + _U16.size, end, depth + 1)
        return TypeDescription(dtype, count, (element,)), off
    count, off = _length(buf, off, end)
    if count > end - off:
        raise DecodeError(f"description STRUCTURE claims {count} fields, {end - off} bytes remain", off)
    fields = []
    for _ in range(count):
        field, off = _decode_description(buf, off, end, depth + 1)
        fields.append(field)
    return TypeDescription(dtype, count, tuple(fields)), off


def _decode_untagged(buf: Buffer, off: int, end: int, desc: TypeDescription) -> tuple[Data, int]:
    """One compact-array value; the description was depth-checked and costed when it was read."""
    dtype = desc.type
    leaf = _LEAF_DECODERS.get(dtype)
    if leaf is not None:
        value, off = leaf(buf, off, end)
        return _data(dtype, value), off
    items = []
    descs = desc.elements * desc.count if dtype is DataType.ARRAY else desc.elements
    for element in descs:
        item, off = _decode_untagged(buf, off, end, element)
        items.append(item)
    return _data(dtype, tuple(items)), off


def _decode_compact(buf: Buffer, off: int, end: int, depth: int) -> tuple[CompactArray, int]:
    desc, off = _decode_description(buf, off, end, depth)
    size, off = _length(buf, off, end)
    _need(DataType.COMPACT_ARRAY, off, size, end)
    content_end = off + size
    refusal = _compact_refusal(desc, size > 0)
    if refusal is not None:
        raise DecodeError(refusal, off)
    if 0 < size < _description_cost(desc)[0]:
        raise DecodeError(f"compact-array contents of {size} bytes cannot hold one element", off)
    values = []
    while off < content_end:
        value, off = _decode_untagged(buf, off, content_end, desc)
        values.append(value)
    return CompactArray(desc, tuple(values)), off


# ----------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a :class:`Table`: a fixed-size number type, or an octet-string of ``length`` bytes."""

    type: DataType
    length: int = 0


@dataclass(frozen=True, slots=True)
class Table:
    """An array of structures whose every row has the same fixed-size field types: a profile buffer.

    The biggest values a meter sends are load profiles, hundreds of rows of a clock and a few registers.
    Held as rows of plain values (ints, floats, bools, and bytes for octet-strings) instead of one
    :class:`Data` per field, each row costs one ``struct`` call to encode or decode, which is most of a
    load-profile read. A Table may stand as the value of an ``ARRAY`` Data; decoders produce one only
    when asked (``tables=True``) and :meth:`to_data` gives the general form. Encoding checks octet-string
    lengths and number ranges; like the rest of :class:`Data`, construction does not.
    """

    columns: tuple[Column, ...]
    rows: tuple[tuple[object, ...], ...]

    def to_data(self) -> tuple[Data, ...]:
        """The rows as STRUCTURE Data, the form every other array has."""
        types = [column.type for column in self.columns]
        return tuple(_data(DataType.STRUCTURE, tuple(map(_data, types, row))) for row in self.rows)


class _RowCodec:
    """How one table row goes on and off the wire in a single ``struct`` call.

    Encoding packs every column as a constant then a value: numbers as (tag byte, value), octet-strings
    as (tag and length in one big-endian u16, bytes). That regular shape puts the values of a row at
    its even positions, so a row is put together by one slice assignment into a template.

    Decoding checks every row's constants at once, with one regular expression over the whole table
    (the constant bytes literally, any bytes in the value positions), then unpacks the values of all
    rows with ``iter_unpack`` on a struct that skips the constants: no Python code runs per row.
    """

    __slots__ = ("octet_columns", "rows_pattern", "size", "struct", "template", "values")

    def __init__(self, columns: tuple[Column, ...]) -> None:
        fmt, values_fmt = [">H"], [">2x"]
        constants: list[int] = []
        pattern = [re.escape(bytes((DataType.STRUCTURE, len(columns))))]
        for column in columns:
            if column.type is DataType.OCTET_STRING:
                constant, value_fmt, width, prefix = (
                    DataType.OCTET_STRING << 8 | column.length,
                    f"{column.length}s",
                    column.length,
                    2,
                )
                pattern.append(re.escape(bytes((DataType.OCTET_STRING, column.length))))
            else:
                fixed = _FIXED[column.type]
                constant, value_fmt, width, prefix = column.type, fixed.format[1:], fixed.size, 1
                pattern.append(re.escape(bytes((column.type,))))
            fmt.append(("H" if prefix == 2 else "B") + value_fmt)
            values_fmt.append(f"{prefix}x{value_fmt}")
            pattern.append(b"." * width if width < 16 else b".{%d}" % width)
            constants.append(constant)
        self.struct = struct.Struct("".join(fmt))
        self.values = struct.Struct("".join(values_fmt))
        self.size = self.struct.size
        self.rows_pattern = re.compile(b"(?:" + b"".join(pattern) + b")*", re.DOTALL)
        self.octet_columns = tuple(
            (index, column.length)
            for index, column in enumerate(columns)
            if column.type is DataType.OCTET_STRING
        )
        self.template: list[object] = [DataType.STRUCTURE << 8 | len(columns)]
        for constant in constants:
            self.template += [constant, None]


_ROW_CODECS: dict[tuple[Column, ...], _RowCodec] = {}
_MAX_ROW_CODECS = 256


def _row_codec(columns: tuple[Column, ...]) -> _RowCodec:
    codec = _ROW_CODECS.get(columns)
    if codec is None:
        if len(_ROW_CODECS) >= _MAX_ROW_CODECS:  # shapes come from meters: keep the cache bounded
            _ROW_CODECS.clear()
        codec = _ROW_CODECS[columns] = _RowCodec(columns)
    return codec


def _table_columns(buf: Buffer, off: int, end: int) -> tuple[Column, ...] | None:
    """The columns of the row at ``off`` when it is a structure of table-able fields, else None."""
    if off + 2 > end or buf[off] != DataType.STRUCTURE or not 0 < buf[off + 1] < 0x80:
        return None
    columns = []
    pos = off + 2
    for _ in range(buf[off + 1]):
        if pos >= end:
            return None
        tag = buf[pos]
        fixed = _FIXED_BY_TAG.get(tag)
        if fixed is not None:
            columns.append(Column(fixed[0]))
            pos += 1 + fixed[2]
        elif tag == DataType.OCTET_STRING and pos + 1 < end and buf[pos + 1] < 0x80:
            columns.append(Column(DataType.OCTET_STRING, buf[pos + 1]))
            pos += 2 + buf[pos + 1]
        else:
            return None
    return tuple(columns)


def _decode_table(buf: Buffer, off: int, end: int) -> tuple[Data, int] | None:
    """The array at ``off`` (its tag included) as a Table, or None when its rows do not all share one
    table-able shape; the caller then decodes it the general way, which also reports any error."""
    count, start = _length(buf, off + 1, end)
    if count == 0:
        return None
    columns = _table_columns(buf, start, end)
    if columns is None:
        return None
    codec = _row_codec(columns)
    size = codec.size
    if start + count * size > end:
        return None
    stop = start + count * size
    region = bytes(buf[start:stop])
    if codec.rows_pattern.fullmatch(region) is None:
        return None
    return _data(DataType.ARRAY, Table(columns, tuple(codec.values.iter_unpack(region)))), stop


def _encode_table(table: Table, out: bytearray) -> None:
    if (
        not isinstance(table.columns, tuple)
        or not all(
            isinstance(c, Column)
            and (c.type in _FIXED or (c.type is DataType.OCTET_STRING and c.length < 0x80))
            for c in table.columns
        )
        or not 0 < len(table.columns) < 0x80
    ):
        raise EncodeError("table columns must be 1..127 fixed-size numbers or short octet-strings")
    codec = _row_codec(table.columns)
    pack, args, octets, width = codec.struct.pack, codec.template[:], codec.octet_columns, len(table.columns)
    out += encode_length(len(table.rows))
    try:
        for row in table.rows:
            if len(row) != width:
                raise EncodeError(f"table row of {len(row)} fields, {width} columns")
            for index, length in octets:
                value = row[index]
                if not isinstance(value, bytes) or len(value) != length:
                    raise EncodeError(f"table column {index} must be {length} bytes, got {value!r:.40}")
            args[2::2] = row
            out += pack(*args)
    except (struct.error, OverflowError) as exc:
        raise EncodeError(f"table value out of range: {exc}") from exc


def table_rows(data: Data) -> Table | None:
    """The Table an ARRAY holds, or None when it holds Data items (decoded without ``tables=True``, or
    whose rows differ in shape)."""
    return data.value if isinstance(data.value, Table) else None


def decode_data(buf: Buffer, offset: int = 0, *, tables: bool = False) -> tuple[Data, int]:
    """Decode one value at ``offset``; returns it and the offset just after it.

    ``tables``: an array whose rows all share one fixed-size shape comes back holding a :class:`Table`
    rather than a tuple of Data (only at the top level, where profile buffers are).
    """
    if not 0 <= offset <= len(buf):
        raise DecodeError(f"offset outside the {len(buf)}-byte buffer", offset)
    if tables and offset < len(buf) and buf[offset] == DataType.ARRAY:
        table = _decode_table(buf, offset, len(buf))
        if table is not None:
            return table
    return _decode(buf, offset, len(buf), 0)


def decode_data_all(buf: Buffer, *, tables: bool = False) -> Data:
    """Decode one value that must fill ``buf`` exactly (trailing bytes are an error, not ignored)."""
    data, off = decode_data(buf, 0, tables=tables)
    if off != len(buf):
        raise DecodeError(f"{len(buf) - off} trailing bytes after data", off)
    return data


# -------------------------------------------------------------------------------------------- encoding

_LeafEncoder = Callable[[DataType, object], bytes]


def _wrong(dtype: DataType, value: object) -> EncodeError:
    return EncodeError(f"{dtype.name} cannot hold {type(value).__name__} {value!r:.60}")


def _encode_fixed(dtype: DataType, value: object) -> bytes:
    if dtype is DataType.BOOLEAN:
        ok = isinstance(value, bool)
    elif dtype in _FLOATS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok:
        raise _wrong(dtype, value)
    try:
        return _FIXED[dtype].pack(value)
    except (struct.error, OverflowError) as exc:
        raise EncodeError(f"{dtype.name} out of range: {value!r}") from exc


def _encode_string(dtype: DataType, value: object) -> bytes:
    if dtype is DataType.OCTET_STRING and isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif dtype is not DataType.OCTET_STRING and isinstance(value, str):
        try:
            raw = value.encode("latin-1" if dtype is DataType.VISIBLE_STRING else "utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"{dtype.name} cannot encode {value!r:.60}: {exc.reason}") from exc
    else:
        raise _wrong(dtype, value)
    return encode_length(len(raw)) + raw


def _encode_bits(dtype: DataType, value: object) -> bytes:
    if not isinstance(value, BitString):
        raise _wrong(dtype, value)
    if len(value.data) != (value.length + 7) // 8:
        raise EncodeError(f"bit-string of {value.length} bits needs {(value.length + 7) // 8} bytes")
    return encode_length(value.length) + value.data


def _encode_empty(dtype: DataType, value: object) -> bytes:
    if value is not None:
        raise _wrong(dtype, value)
    return b""


def _encode_date_time(dtype: DataType, value: object) -> bytes:
    if not isinstance(value, CosemDateTime):
        raise _wrong(dtype, value)
    return encode_datetime(value)


def _encode_date(dtype: DataType, value: object) -> bytes:
    if not isinstance(value, CosemDate):
        raise _wrong(dtype, value)
    try:
        return _DATE.pack(*_date_fields(value))
    except struct.error as exc:
        raise EncodeError(f"date field out of range: {value!r}") from exc


def _encode_time(dtype: DataType, value: object) -> bytes:
    if not isinstance(value, CosemTime):
        raise _wrong(dtype, value)
    try:
        return _TIME.pack(*_time_fields(value))
    except struct.error as exc:
        raise EncodeError(f"time field out of range: {value!r}") from exc


_LEAF_ENCODERS: dict[DataType, _LeafEncoder] = {
    **dict.fromkeys(_FIXED, _encode_fixed),
    **dict.fromkeys(_EMPTY, _encode_empty),
    **dict.fromkeys(_STRINGS, _encode_string),
    DataType.BIT_STRING: _encode_bits,
    DataType.DATE_TIME: _encode_date_time,
    DataType.DATE: _encode_date,
    DataType.TIME: _encode_time,
}


def _encode(data: Data, out: bytearray, depth: int) -> None:
    dtype = DataType(data.type)
    out.append(dtype)
    leaf = _LEAF_ENCODERS.get(dtype)
    if leaf is not None:
        out += leaf(dtype, data.value)
        return
    if depth >= MAX_DEPTH:
        raise EncodeError(f"data nested deeper than {MAX_DEPTH}")
    value = data.value
    if dtype is DataType.COMPACT_ARRAY:
        if not isinstance(value, CompactArray):
            raise _wrong(dtype, value)
        _encode_compact(value, out, depth + 1)
        return
    if isinstance(value, Table) and dtype is DataType.ARRAY:
        _encode_table(value, out)
        return
    if not isinstance(value, tuple):
        raise _wrong(dtype, value)
    out += encode_length(len(value))
    for item in value:
        _encode(item, out, depth + 1)


def _encode_description(desc: TypeDescription, out: bytearray, depth: int) -> None:
    dtype = DataType(desc.type)
    if dtype is DataType.COMPACT_ARRAY:
        raise EncodeError("a compact array cannot contain compact arrays")
    out.append(dtype)
    if dtype not in _CONTAINERS:
        return
    if depth >= MAX_DEPTH:
        raise EncodeError(f"compact-array description nested deeper than {MAX_DEPTH}")
    if dtype is DataType.ARRAY:
        if len(desc.elements) != 1 or not 0 <= desc.count <= 0xFFFF:
            raise EncodeError("array description needs one element description and 0..65535 elements")
        out += _U16.pack(desc.count)
    else:
        if desc.count != len(desc.elements):
            raise EncodeError("structure description count differs from its fields")
        out += encode_length(desc.count)
    for element in desc.elements:
        _encode_description(element, out, depth + 1)


def _encode_untagged(data: Data, desc: TypeDescription, out: bytearray) -> None:
    if data.type != desc.type:
        raise EncodeError(f"compact-array value {data.type!r} does not match description {desc.type!r}")
    leaf = _LEAF_ENCODERS.get(desc.type)
    if leaf is not None:
        out += leaf(desc.type, data.value)
        return
    value = data.value
    descs = desc.elements * desc.count if desc.type is DataType.ARRAY else desc.elements
    if not isinstance(value, tuple) or len(value) != len(descs):
        raise EncodeError(f"compact-array value does not have the {len(descs)} elements described")
    for item, element in zip(value, descs, strict=True):
        _encode_untagged(item, element, out)


def _encode_compact(value: CompactArray, out: bytearray, depth: int) -> None:
    _encode_description(value.description, out, depth)
    refusal = _compact_refusal(value.description, bool(value.values))
    if refusal is not None:
        raise EncodeError(refusal)
    content = bytearray()
    for item in value.values:
        _encode_untagged(item, value.description, content)
    out += encode_length(len(content))
    out += content


def encode_data(data: Data) -> bytes:
    """The A-XDR bytes of ``data`` (tag included). Wrong Python types or out-of-range values raise
    :class:`EncodeError` rather than being coerced: a silently wrapped int would be a wrong reading."""
    out = bytearray()
    try:
        _encode(data, out, 0)
    except ValueError as exc:  # DataType(...) of an unknown tag
        raise EncodeError(str(exc)) from exc
    return bytes(out)
