"""A-XDR data codec: exact bytes per type, round trips, date-time semantics and hostile input."""

from __future__ import annotations

import contextlib
import math
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openami.protocols.dlms.axdr import (
    DAY_LAST,
    DAY_SECOND_LAST,
    MAX_DEPTH,
    MONTH_DST_BEGIN,
    MONTH_DST_END,
    BitString,
    CompactArray,
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    TypeDescription,
    decode_data,
    decode_data_all,
    decode_length,
    encode_data,
    encode_datetime,
    encode_length,
    parse_datetime,
)
from openami.protocols.dlms.errors import DecodeError, EncodeError
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S

# The date-time used in public DLMS examples: 2020-08-15 (Saturday) 04:19:45.00, deviation -60, status 0.
EXAMPLE_DT = bytes.fromhex("07E4080F0604132D00FFC400")
EXAMPLE = CosemDateTime(CosemDate(2020, 8, 15, 6), CosemTime(4, 19, 45, 0), -60, 0)

EXACT: list[tuple[str, Data]] = [
    ("00", Data.null()),
    ("FF", Data(DataType.DONT_CARE, None)),
    ("0301", Data.boolean(True)),
    ("0300", Data.boolean(False)),
    ("040CA5F0", Data(DataType.BIT_STRING, BitString(12, b"\xa5\xf0"))),
    ("05FFFFFFFE", Data.int32(-2)),
    ("0600003039", Data.uint32(12345)),
    ("0903010203", Data.octet_string(b"\x01\x02\x03")),
    ("09060000010000FF", Data.octet_string(bytes([0, 0, 1, 0, 0, 255]))),
    ("0A0441424344", Data.visible_string("ABCD")),
    ("0C02C3A9", Data.utf8_string("é")),
    ("0D12", Data(DataType.BCD, 0x12)),
    ("0F80", Data.int8(-128)),
    ("108000", Data.int16(-32768)),
    ("11FF", Data.uint8(255)),
    ("120100", Data.uint16(256)),
    ("14FFFFFFFFFFFFFFFF", Data.int64(-1)),
    ("15FFFFFFFFFFFFFFFF", Data.uint64(2**64 - 1)),
    ("1603", Data.enum(3)),
    ("173F800000", Data.float32(1.0)),
    ("18400921FB54442D18", Data.float64(math.pi)),
    ("19" + EXAMPLE_DT.hex(), Data.date_time(EXAMPLE)),
    ("1A07E4080F06", Data(DataType.DATE, CosemDate(2020, 8, 15, 6))),
    ("1B04132D00", Data(DataType.TIME, CosemTime(4, 19, 45, 0))),
    ("0102110111 02".replace(" ", ""), Data.array(Data.uint8(1), Data.uint8(2))),
    ("0100", Data.array()),
    # Attribute descriptor as a structure: class_id 8 (Clock), logical name 0.0.1.0.0.255, attribute 2.
    (
        "020312000809060000010000FF0F02",
        Data.structure(Data.uint16(8), Data.octet_string(bytes([0, 0, 1, 0, 0, 255])), Data.int8(2)),
    ),
    # Compact array of uint8 1, 2, 3: description is the bare tag, contents one octet-string.
    (
        "131103010203",
        Data(
            DataType.COMPACT_ARRAY,
            CompactArray(TypeDescription(DataType.UNSIGNED), (Data.uint8(1), Data.uint8(2), Data.uint8(3))),
        ),
    ),
    # Compact array of structure{long-unsigned, double-long-unsigned}: 2 rows of 6 bytes each.
    (
        "13020212060C00010000000A000200000014",
        Data(
            DataType.COMPACT_ARRAY,
            CompactArray(
                TypeDescription.structure(
                    TypeDescription(DataType.LONG_UNSIGNED), TypeDescription(DataType.DOUBLE_LONG_UNSIGNED)
                ),
                (
                    Data.structure(Data.uint16(1), Data.uint32(10)),
                    Data.structure(Data.uint16(2), Data.uint32(20)),
                ),
            ),
        ),
    ),
    # Compact array whose element is an array of 2 uint8 (count is 2 bytes in a description).
    (
        "1301000211040102 0304".replace(" ", ""),
        Data(
            DataType.COMPACT_ARRAY,
            CompactArray(
                TypeDescription.array(2, TypeDescription(DataType.UNSIGNED)),
                (
                    Data.array(Data.uint8(1), Data.uint8(2)),
                    Data.array(Data.uint8(3), Data.uint8(4)),
                ),
            ),
        ),
    ),
]


@pytest.mark.parametrize(("hex_bytes", "data"), EXACT, ids=[h[:16] for h, _ in EXACT])
def test_exact_bytes(hex_bytes: str, data: Data) -> None:
    raw = bytes.fromhex(hex_bytes)
    assert encode_data(data) == raw
    assert decode_data_all(raw) == data


def test_every_tag_has_an_exact_example() -> None:
    assert {d.type for _, d in EXACT} == set(DataType)


def test_boolean_nonzero_is_true() -> None:
    assert decode_data_all(b"\x03\x7f") == Data.boolean(True)


def test_bit_string_bits() -> None:
    bits = BitString(12, b"\xa5\xf0")
    assert bits.bits == "101001011111"
    assert BitString.from_bits("0101") == BitString(4, b"\x50")
    assert BitString.from_bits("").bits == ""
    with pytest.raises(EncodeError):
        BitString.from_bits("012")


def test_decode_data_offset_and_buffer_kinds() -> None:
    raw = bytes.fromhex("AA11051200FF")
    for buf in (raw, bytearray(raw), memoryview(raw)):
        assert decode_data(buf, 1) == (Data.uint8(5), 3)
        assert decode_data(buf, 3) == (Data.uint16(255), 6)


def test_decode_data_all_refuses_trailing_bytes() -> None:
    with pytest.raises(DecodeError, match="trailing") as err:
        decode_data_all(b"\x11\x05\x00")
    assert err.value.offset == 2


def test_to_python() -> None:
    data = decode_data_all(bytes.fromhex("020312000809060000010000FF0F02"))
    assert data.to_python() == [8, bytes([0, 0, 1, 0, 0, 255]), 2]
    compact = decode_data_all(bytes.fromhex("13020212060C00010000000A000200000014"))
    assert compact.to_python() == [[1, 10], [2, 20]]
    assert Data.date_time(EXAMPLE).to_python() is EXAMPLE


# --------------------------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    ("n", "hex_bytes"),
    [
        (0, "00"),
        (0x7F, "7F"),
        (0x80, "8180"),
        (0xFF, "81FF"),
        (0x100, "820100"),
        (0xFFFF, "82FFFF"),
        (0x10000, "83010000"),
        (0xFFFFFFFF, "84FFFFFFFF"),
    ],
)
def test_length_edges(n: int, hex_bytes: str) -> None:
    raw = bytes.fromhex(hex_bytes)
    assert encode_length(n) == raw
    assert decode_length(b"\xee" + raw, 1) == (n, 1 + len(raw))


def test_length_refusals() -> None:
    with pytest.raises(EncodeError):
        encode_length(2**32)
    with pytest.raises(EncodeError):
        encode_length(-1)
    for bad in ("80", "85000000000001", "8201", ""):
        with pytest.raises(DecodeError):
            decode_length(bytes.fromhex(bad), 0)


def test_length_non_minimal_accepted() -> None:
    assert decode_length(bytes.fromhex("820005"), 0) == (5, 3)


def test_long_octet_string_uses_long_length() -> None:
    payload = bytes(range(256)) * 2
    raw = encode_data(Data.octet_string(payload))
    assert raw[:4] == bytes.fromhex("09820200")
    assert decode_data_all(raw).value == payload


# ------------------------------------------------------------------------------------------- date-time


def test_example_date_time_meaning() -> None:
    """Blue Book deviation convention: UTC = local + deviation, so -60 is local time UTC+01:00."""
    dt = parse_datetime(EXAMPLE_DT)
    assert dt == EXAMPLE
    aware = dt.to_datetime()
    assert aware == datetime(2020, 8, 15, 4, 19, 45, tzinfo=timezone(timedelta(hours=1)))
    assert aware is not None
    assert aware.astimezone(UTC) == datetime(2020, 8, 15, 3, 19, 45, tzinfo=UTC)
    assert encode_datetime(dt) == EXAMPLE_DT


def test_example_in_octet_string_as_notifications_carry_it() -> None:
    data = decode_data_all(b"\x09\x0c" + EXAMPLE_DT)
    assert isinstance(data.value, bytes)
    assert parse_datetime(data.value) == EXAMPLE


def test_from_datetime_deviation_sign() -> None:
    local = datetime(2024, 3, 31, 12, 0, 0, 450_000, tzinfo=timezone(timedelta(hours=2)))
    cosem = CosemDateTime.from_datetime(local, clock_status=0x80)
    assert cosem.deviation_minutes == -120
    assert cosem.date.weekday == 7  # Sunday
    assert cosem.time.hundredths == 45
    assert encode_datetime(cosem) == bytes.fromhex("07E8031F070C00002DFF8880")
    assert cosem.to_datetime() == local
    west = CosemDateTime.from_datetime(
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    )
    assert west.deviation_minutes == 210


def test_naive_when_deviation_unknown() -> None:
    cosem = parse_datetime(bytes.fromhex("07E4080F0604132DFF800000"))
    assert cosem.deviation_minutes is None
    assert cosem.time.hundredths is None
    assert cosem.to_datetime() == datetime(2020, 8, 15, 4, 19, 45)
    assert CosemDateTime.from_datetime(datetime(2020, 8, 15, 4, 19, 45)).deviation_minutes is None


def test_not_specified_fields() -> None:
    cosem = parse_datetime(bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF"))
    assert cosem == CosemDateTime(CosemDate(None, None, None, None), CosemTime(None, None, None, None))
    assert cosem.to_datetime() is None
    assert encode_datetime(cosem) == bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")


@pytest.mark.parametrize(
    ("month", "day"), [(MONTH_DST_END, 1), (MONTH_DST_BEGIN, 1), (3, DAY_SECOND_LAST), (10, DAY_LAST)]
)
def test_dst_and_last_day_markers(month: int, day: int) -> None:
    raw = bytes.fromhex("FFFF") + bytes([month, day]) + bytes.fromhex("07020000FF8000FF")
    cosem = parse_datetime(raw)
    assert (cosem.date.month, cosem.date.day) == (month, day)
    assert cosem.to_datetime() is None
    assert encode_datetime(cosem) == raw


def test_impossible_calendar_gives_none() -> None:
    assert parse_datetime(bytes.fromhex("07E5021EFF000000000000FF")).to_datetime() is None  # 30 Feb


def test_parse_datetime_length() -> None:
    with pytest.raises(DecodeError):
        parse_datetime(EXAMPLE_DT[:11])


def test_date_time_field_range_on_encode() -> None:
    with pytest.raises(EncodeError):
        encode_datetime(CosemDateTime(CosemDate(70000, 1, 1), CosemTime(0, 0, 0)))


# ------------------------------------------------------------------------------------------ refusals


def test_unknown_tag_named() -> None:
    with pytest.raises(DecodeError, match="tag 7") as err:
        decode_data(b"\x01\x01\x07")
    assert err.value.offset == 2


def test_huge_count_fails_before_allocating() -> None:
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="elements"):
        decode_data(bytes.fromhex("0184FFFFFFFF0000000000"))
    with pytest.raises(DecodeError):
        decode_data(bytes.fromhex("0284FFFFFFFF0000000000"))
    assert time.perf_counter() - start < FUZZ_TIME_LIMIT_S


def test_depth_limit() -> None:
    ok = b"\x01\x01" * MAX_DEPTH + b"\x00"
    assert decode_data_all(ok).type is DataType.ARRAY
    with pytest.raises(DecodeError, match="nested"):
        decode_data(b"\x01\x01" * (MAX_DEPTH + 1) + b"\x00")
    with pytest.raises(DecodeError):
        decode_data(b"\x02\x01" * 100_000)


def test_encode_depth_limit() -> None:
    data = Data.null()
    for _ in range(MAX_DEPTH + 1):
        data = Data.array(data)
    with pytest.raises(EncodeError):
        encode_data(data)


@pytest.mark.parametrize(
    "hex_bytes",
    [
        "05000000",  # truncated int32
        "0905010203",  # octet-string shorter than its length
        "0C02C328",  # invalid UTF-8
        "040C A5".replace(" ", ""),  # bit-string missing a byte
        "19 07E4080F0604132D00FFC4".replace(" ", ""),  # date-time one byte short
        "1A07E408",
        "1B0413",
        "010211",
        "02",
        "",
        "13",  # compact array without description
        "1314",  # description then no contents length
        "131103010203FF"[:10],  # contents shorter than declared
        "130707",  # unknown element type in a description
        "131303",  # compact array inside a compact array description
        "1301FFFF01FFFF11 0101".replace(" ", ""),  # 65535x65535 uint8 cannot fit in 1 byte
        "1300 0101".replace(" ", ""),  # null elements take no bytes, contents must be empty
        "1312 0301 0203".replace(" ", ""),  # 3 bytes cannot hold uint16 rows exactly
    ],
)
def test_malformed_inputs(hex_bytes: str) -> None:
    with pytest.raises(DecodeError):
        decode_data_all(bytes.fromhex(hex_bytes))


def test_compact_array_amplification_refused() -> None:
    # structure{40 x null-data, uint8}: 42 values per content byte.
    description = bytes([2, 41]) + bytes(40) + bytes([0x11])
    with pytest.raises(DecodeError, match="compact-array description"):
        decode_data(b"\x13" + description + b"\x01\x05")


def test_empty_compact_array_of_nulls() -> None:
    data = Data(DataType.COMPACT_ARRAY, CompactArray(TypeDescription(DataType.NULL_DATA), ()))
    assert encode_data(data) == b"\x13\x00\x00"
    assert decode_data_all(b"\x13\x00\x00") == data
    with pytest.raises(EncodeError):
        encode_data(
            Data(DataType.COMPACT_ARRAY, CompactArray(TypeDescription(DataType.NULL_DATA), (Data.null(),)))
        )


@pytest.mark.parametrize(
    "data",
    [
        Data.uint8(256),
        Data.int8(-129),
        Data.uint16(-1),
        Data.uint32(True),
        Data.int32(1.5),  # type: ignore[arg-type]
        Data.boolean(1),  # type: ignore[arg-type]
        Data.float32(1e300),
        Data(DataType.OCTET_STRING, "text"),
        Data(DataType.VISIBLE_STRING, "€"),
        Data(DataType.VISIBLE_STRING, b"x"),
        Data(DataType.NULL_DATA, 0),
        Data(DataType.ARRAY, [Data.null()]),
        Data(DataType.BIT_STRING, BitString(9, b"\x00")),
        Data(DataType.DATE, CosemTime(1, 2, 3)),
        Data(DataType.TIME, CosemTime(256, 0, 0)),
        Data(99, None),  # type: ignore[arg-type]
        Data(DataType.COMPACT_ARRAY, (Data.uint8(1),)),
        Data(
            DataType.COMPACT_ARRAY,
            CompactArray(TypeDescription(DataType.UNSIGNED), (Data.uint16(1),)),
        ),
        Data(
            DataType.COMPACT_ARRAY,
            CompactArray(
                TypeDescription.array(2, TypeDescription(DataType.UNSIGNED)), (Data.array(Data.uint8(1)),)
            ),
        ),
        Data(
            DataType.COMPACT_ARRAY,
            CompactArray(TypeDescription(DataType.COMPACT_ARRAY), ()),
        ),
    ],
)
def test_encode_refusals(data: Data) -> None:
    with pytest.raises(EncodeError):
        encode_data(data)


# ---------------------------------------------------------------------------------------- round trips

_FIELD = st.one_of(st.none(), st.integers(0, 0xFE))
_DATES = st.builds(CosemDate, st.one_of(st.none(), st.integers(0, 0xFFFE)), _FIELD, _FIELD, _FIELD)
_TIMES = st.builds(CosemTime, _FIELD, _FIELD, _FIELD, _FIELD)
_DATE_TIMES = st.builds(
    CosemDateTime, _DATES, _TIMES, st.one_of(st.none(), st.integers(-0x7FFF, 0x7FFF)), _FIELD
)
_BIT_STRINGS = st.integers(0, 40).flatmap(
    lambda n: st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8).map(lambda b: BitString(n, b))
)

# One strategy per leaf type: the Python values that type can carry.
_LEAF_VALUES: dict[DataType, st.SearchStrategy[object]] = {
    DataType.NULL_DATA: st.none(),
    DataType.DONT_CARE: st.none(),
    DataType.BOOLEAN: st.booleans(),
    DataType.BIT_STRING: _BIT_STRINGS,
    DataType.DOUBLE_LONG: st.integers(-(2**31), 2**31 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: st.integers(0, 2**32 - 1),
    DataType.OCTET_STRING: st.binary(max_size=300),
    DataType.VISIBLE_STRING: st.text(st.characters(max_codepoint=255), max_size=20),
    DataType.UTF8_STRING: st.text(max_size=20),  # default alphabet: no surrogates
    DataType.BCD: st.integers(0, 255),
    DataType.INTEGER: st.integers(-128, 127),
    DataType.LONG: st.integers(-(2**15), 2**15 - 1),
    DataType.UNSIGNED: st.integers(0, 255),
    DataType.LONG_UNSIGNED: st.integers(0, 2**16 - 1),
    DataType.LONG64: st.integers(-(2**63), 2**63 - 1),
    DataType.LONG64_UNSIGNED: st.integers(0, 2**64 - 1),
    DataType.ENUM: st.integers(0, 255),
    DataType.FLOAT32: st.floats(width=32, allow_nan=False),
    DataType.FLOAT64: st.floats(allow_nan=False),
    DataType.DATE_TIME: _DATE_TIMES,
    DataType.DATE: _DATES,
    DataType.TIME: _TIMES,
}


def _leaf(dtype: DataType) -> st.SearchStrategy[Data]:
    return _LEAF_VALUES[dtype].map(lambda v: Data(dtype, v))


_LEAVES = st.one_of([_leaf(t) for t in _LEAF_VALUES])

# Compact arrays: descriptions whose elements take bytes (no null/dont-care, no empty arrays); the
# zero-byte cases cannot round trip by design and are tested above.
_DESC_LEAVES = st.sampled_from(
    [TypeDescription(t) for t in _LEAF_VALUES if t not in (DataType.NULL_DATA, DataType.DONT_CARE)]
)
_DESCRIPTIONS = st.recursive(
    _DESC_LEAVES,
    lambda inner: st.one_of(
        st.builds(TypeDescription.array, st.integers(1, 3), inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda f: TypeDescription.structure(*f)),
    ),
    max_leaves=6,
)


def _value_for(desc: TypeDescription) -> st.SearchStrategy[Data]:
    if desc.type is DataType.ARRAY:
        return st.tuples(*[_value_for(desc.elements[0])] * desc.count).map(lambda v: Data(DataType.ARRAY, v))
    if desc.type is DataType.STRUCTURE:
        return st.tuples(*map(_value_for, desc.elements)).map(lambda v: Data(DataType.STRUCTURE, v))
    return _leaf(desc.type)


def _compact(desc: TypeDescription) -> st.SearchStrategy[Data]:
    return st.lists(_value_for(desc), max_size=4).map(
        lambda values: Data(DataType.COMPACT_ARRAY, CompactArray(desc, tuple(values)))
    )


_COMPACTS = _DESCRIPTIONS.flatmap(_compact)

DATA = st.recursive(
    st.one_of(_LEAVES, _COMPACTS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: Data.array(*items)),
        st.lists(inner, max_size=4).map(lambda items: Data.structure(*items)),
    ),
    max_leaves=20,
)


@pytest.mark.parametrize("dtype", list(_LEAF_VALUES))
@given(data=st.data())
def test_round_trip_each_leaf_type(dtype: DataType, data: st.DataObject) -> None:
    value = data.draw(_leaf(dtype))
    assert decode_data_all(encode_data(value)) == value


@given(_COMPACTS)
def test_round_trip_compact_arrays(value: Data) -> None:
    assert decode_data_all(encode_data(value)) == value


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(DATA)
def test_round_trip_trees(value: Data) -> None:
    raw = encode_data(value)
    assert decode_data_all(raw) == value
    assert decode_data(raw + b"\x00\x11", 0) == (value, len(raw))


@given(_DATE_TIMES)
def test_round_trip_datetime_bytes(value: CosemDateTime) -> None:
    assert parse_datetime(encode_datetime(value)) == value


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        timezones=st.one_of(st.none(), st.integers(-720, 720).map(lambda m: timezone(timedelta(minutes=m)))),
    )
)
def test_round_trip_python_datetime(value: datetime) -> None:
    value = value.replace(microsecond=value.microsecond // 10_000 * 10_000)
    assert CosemDateTime.from_datetime(value).to_datetime() == value
    if value.tzinfo is not None:
        assert CosemDateTime.from_datetime(value).to_datetime().utcoffset() == value.utcoffset()  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------- fuzzing

_TIME_LIMIT = FUZZ_TIME_LIMIT_S
_TIME_PER_BYTE = 10e-6  # large inputs may legitimately hold one value per byte


def _decode_bounded(raw: bytes) -> None:
    """Decoding ends in a value or a DecodeError, quickly (linear in the input), whatever the bytes."""
    start = time.perf_counter()
    with contextlib.suppress(DecodeError):
        decode_data(raw)
    assert time.perf_counter() - start < _TIME_LIMIT + len(raw) * _TIME_PER_BYTE


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _decode_bounded(raw)


@settings(max_examples=300)
@given(st.sampled_from(sorted({t.value for t in DataType})), st.binary(max_size=64))
def test_fuzz_random_bytes_after_valid_tag(tag: int, rest: bytes) -> None:
    _decode_bounded(bytes([tag]) + rest)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(DATA)
def test_fuzz_every_truncation_fails(value: Data) -> None:
    raw = encode_data(value)
    for cut in range(len(raw)):
        start = time.perf_counter()
        with pytest.raises(DecodeError):
            decode_data(raw[:cut])
        assert time.perf_counter() - start < _TIME_LIMIT


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(DATA, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_mutations(value: Data, edits: list[tuple[int, int]]) -> None:
    raw = bytearray(encode_data(value))
    for position, byte in edits:
        raw[position % len(raw)] = byte
    _decode_bounded(bytes(raw))


def test_bounded_on_adversarial_shapes() -> None:
    shapes = [
        b"\x01\x84\x7f\xff\xff\xff" + b"\x01\x7f" * 5000,
        b"\x13\x01\xff\xff\x01\xff\xff\x01\xff\xff\x11\x84\xff\xff\xff\xff",
        b"\x13\x02\x7f" + b"\x02\x7f" * 200,
        b"\x13\x01\xff\xff\x09\x82\xff\xff" + b"\x00" * 65535,
    ]
    for raw in shapes:
        _decode_bounded(raw)
