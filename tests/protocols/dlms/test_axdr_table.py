"""A-XDR tables: the one-struct-per-row form of uniform arrays (profile buffers) agrees with the general
form byte for byte and value for value, falls back when rows differ, and refuses bad input like it."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.axdr import (
    Column,
    CosemDateTime,
    Data,
    DataType,
    Table,
    datetime_octets,
    decode_data,
    decode_data_all,
    encode_data,
    encode_datetime,
    table_rows,
)
from openami.protocols.dlms.errors import DecodeError, EncodeError

_NUMBERS: dict[DataType, st.SearchStrategy[object]] = {
    DataType.BOOLEAN: st.booleans(),
    DataType.DOUBLE_LONG: st.integers(-(2**31), 2**31 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: st.integers(0, 2**32 - 1),
    DataType.INTEGER: st.integers(-128, 127),
    DataType.LONG: st.integers(-(2**15), 2**15 - 1),
    DataType.UNSIGNED: st.integers(0, 255),
    DataType.LONG_UNSIGNED: st.integers(0, 2**16 - 1),
    DataType.LONG64: st.integers(-(2**63), 2**63 - 1),
    DataType.LONG64_UNSIGNED: st.integers(0, 2**64 - 1),
    DataType.ENUM: st.integers(0, 255),
    DataType.FLOAT64: st.floats(allow_nan=False),
}
_COLUMNS = st.one_of(
    st.sampled_from([Column(t) for t in _NUMBERS]),
    st.integers(0, 40).map(lambda n: Column(DataType.OCTET_STRING, n)),
)


def _cell(column: Column) -> st.SearchStrategy[object]:
    if column.type is DataType.OCTET_STRING:
        return st.binary(min_size=column.length, max_size=column.length)
    return _NUMBERS[column.type]


@st.composite
def _tables(draw: st.DrawFn) -> Table:
    columns = tuple(draw(st.lists(_COLUMNS, min_size=1, max_size=6)))
    rows = draw(st.lists(st.tuples(*map(_cell, columns)), min_size=1, max_size=8))
    return Table(columns, tuple(rows))


@given(_tables())
def test_table_encodes_as_the_general_form_and_decodes_back(table: Table) -> None:
    as_table = Data(DataType.ARRAY, table)
    general = Data(DataType.ARRAY, table.to_data())
    raw = encode_data(as_table)
    assert raw == encode_data(general)
    decoded = decode_data_all(raw, tables=True)
    assert table_rows(decoded) == table
    assert decode_data_all(raw) == general  # without tables=True: the usual tuple of Data


def test_rows_of_different_shapes_decode_the_general_way() -> None:
    mixed = Data.array(
        Data.structure(Data.uint32(1), Data.uint8(2)),
        Data.structure(Data.uint32(1), Data.uint16(2)),  # second column changes type
    )
    decoded = decode_data_all(encode_data(mixed), tables=True)
    assert table_rows(decoded) is None
    assert decoded == mixed


@pytest.mark.parametrize(
    "value",
    [
        Data.array(Data.uint8(1), Data.uint8(2)),  # rows that are not structures
        Data.array(Data.structure(Data.visible_string("ab"))),  # a column kind tables do not hold
        Data.array(Data.structure(Data.array(Data.uint8(1)))),
        Data.array(),
    ],
)
def test_arrays_that_are_not_tables_decode_as_before(value: Data) -> None:
    decoded = decode_data_all(encode_data(value), tables=True)
    assert table_rows(decoded) is None
    assert decoded == value


def test_truncated_or_extended_tables_are_decode_errors() -> None:
    table = Table(
        (Column(DataType.OCTET_STRING, 12), Column(DataType.DOUBLE_LONG_UNSIGNED)),
        tuple((bytes(12), n) for n in range(10)),
    )
    raw = encode_data(Data(DataType.ARRAY, table))
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            decode_data_all(raw[:cut], tables=True)
    with pytest.raises(DecodeError, match="trailing"):
        decode_data_all(raw + b"\x00", tables=True)


@given(st.binary(max_size=200))
def test_hostile_bytes_end_in_a_value_or_a_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_data(b"\x01" + raw, tables=True)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (Table((Column(DataType.UNSIGNED),), ((256,),)), "out of range"),
        (Table((Column(DataType.OCTET_STRING, 4),), ((b"abc",),)), "must be 4 bytes"),
        (Table((Column(DataType.UNSIGNED),), ((1, 2),)), "2 fields, 1 columns"),
        (Table((Column(DataType.VISIBLE_STRING, 2),), (("ab",),)), "columns must be"),
        (Table((), ()), "columns must be"),
    ],
)
def test_bad_tables_are_encode_errors(table: Table, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode_data(Data(DataType.ARRAY, table))


@pytest.mark.parametrize(
    "dt",
    [
        datetime(2026, 11, 22, 13, 45, 7, 120_000, UTC),
        datetime(2024, 2, 29, 0, 0, tzinfo=timezone(timedelta(hours=1))),
        datetime(2024, 7, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ],
)
def test_datetime_octets_match_the_general_encoder(dt: datetime) -> None:
    assert datetime_octets(dt) == encode_datetime(CosemDateTime.from_datetime(dt))


def test_datetime_octets_need_an_aware_datetime() -> None:
    with pytest.raises(EncodeError, match="aware"):
        datetime_octets(datetime(2026, 1, 1))
