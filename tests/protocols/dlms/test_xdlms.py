"""xDLMS GET/SET/ACTION/exception APDUs: published example bytes, round trips, fuzz, speed."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.axdr import (
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    encode_data,
    encode_datetime,
)
from openami.protocols.dlms.errors import DecodeError, EncodeError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import (
    ActionRequestNextPblock,
    ActionRequestNormal,
    ActionRequestWithFirstPblock,
    ActionRequestWithList,
    ActionRequestWithListAndFirstPblock,
    ActionRequestWithPblock,
    ActionResponseNextPblock,
    ActionResponseNormal,
    ActionResponseWithList,
    ActionResponseWithPblock,
    ActionResult,
    CaptureObject,
    CosemAttribute,
    CosemMethod,
    DataAccessResult,
    EntryDescriptor,
    ExceptionResponse,
    ExceptionServiceError,
    ExceptionStateError,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDatablock,
    GetResponseWithList,
    RangeDescriptor,
    RawAccess,
    SetRequestNormal,
    SetRequestWithDatablock,
    SetRequestWithFirstDatablock,
    SetRequestWithList,
    SetRequestWithListAndFirstDatablock,
    SetResponseDatablock,
    SetResponseLastDatablock,
    SetResponseLastDatablockWithList,
    SetResponseNormal,
    SetResponseWithList,
    decode_xdlms,
    encode_xdlms,
    reassemble_datablocks,
)
from tests.protocols.dlms.fuzzing import assert_value_or_error, truncated_and_mutated

CLOCK = CosemAttribute(8, Obis(0, 0, 1, 0, 0, 255), 2)
LOAD_PROFILE = CosemAttribute(7, Obis(1, 0, 99, 1, 0, 255), 2)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_get_clock_request() -> None:
    raw = _hex("C0 01 C1 00 08 00 00 01 00 00 FF 02 00")
    assert decode_xdlms(raw) == GetRequestNormal(1, CLOCK)
    assert encode_xdlms(GetRequestNormal(1, CLOCK)) == raw


def test_get_clock_response() -> None:
    clock = _hex("07 E1 04 06 03 10 0A 27 00 FF 88 80")
    raw = _hex("C4 01 C1 00 09 0C") + clock
    apdu = decode_xdlms(raw)
    assert apdu == GetResponseNormal(1, Data.octet_string(clock))
    assert encode_xdlms(apdu) == raw


def test_invoke_byte_flags() -> None:
    apdu = decode_xdlms(_hex("C0 01 05 00 08 00 00 01 00 00 FF 02 00"))
    assert apdu == GetRequestNormal(5, CLOCK, priority_high=False, confirmed=False)
    assert encode_xdlms(GetRequestNormal(3, CLOCK, priority_high=True, confirmed=False))[2] == 0x83


def test_get_by_range_on_load_profile() -> None:
    """Selective access by range on 1-0:99.1.0, restricted on the clock (0-0:1.0.0 attribute 2)."""
    start = encode_datetime(CosemDateTime(CosemDate(2024, 1, 1, None), CosemTime(0, 0, 0, None), None, 0))
    end = encode_datetime(CosemDateTime(CosemDate(2024, 1, 2, None), CosemTime(0, 0, 0, None), None, 0))
    raw = _hex(
        "C0 01 C1 00 07 01 00 63 01 00 FF 02"
        "01 01"  # access selection present, selector 1 (range)
        "02 04"  # range_descriptor structure of 4
        "02 04 12 00 08 09 06 00 00 01 00 00 FF 0F 02 12 00 00"  # restricting object: clock, attr 2
        "09 0C" + start.hex() + "09 0C" + end.hex() + "01 00"  # from, to, all columns
    )
    access = RangeDescriptor(
        CaptureObject(8, Obis(0, 0, 1, 0, 0, 255), 2, 0),
        Data.octet_string(start),
        Data.octet_string(end),
    )
    assert start.hex() == "07e80101ff000000ff800000"
    assert decode_xdlms(raw) == GetRequestNormal(1, LOAD_PROFILE, access)
    assert encode_xdlms(GetRequestNormal(1, LOAD_PROFILE, access)) == raw


def test_get_by_entry() -> None:
    raw = _hex(
        "C0 01 C1 00 07 01 00 63 01 00 FF 02 01 02 02 04 06 00 00 00 01 06 00 00 00 0A 12 00 01 12 00 00"
    )
    apdu = GetRequestNormal(1, LOAD_PROFILE, EntryDescriptor(1, 10))
    assert decode_xdlms(raw) == apdu
    assert encode_xdlms(apdu) == raw


def test_range_with_wrong_shape_is_refused() -> None:
    raw = _hex("C0 01 C1 00 07 01 00 63 01 00 FF 02 01 01 02 01 11 00")
    with pytest.raises(DecodeError, match="access selector 1"):
        decode_xdlms(raw)


def test_other_selectors_are_kept_raw() -> None:
    apdu = decode_xdlms(_hex("C0 01 C1 00 07 01 00 63 01 00 FF 02 01 03 11 05"))
    assert isinstance(apdu, GetRequestNormal)
    assert apdu.access == RawAccess(3, Data.uint8(5))


def test_set_request_example() -> None:
    """A published single-action-schedule (class 22) execution_time write."""
    raw = _hex("C1 01 C1 00 16 00 00 0F 00 00 FF 04 00 01 01 02 02 09 04 10 0A 27 FF 09 05 07 E1 04 06 FF")
    apdu = decode_xdlms(raw)
    assert isinstance(apdu, SetRequestNormal)
    assert apdu.attribute == CosemAttribute(22, Obis(0, 0, 15, 0, 0, 255), 4)
    assert apdu.access is None
    assert encode_xdlms(apdu) == raw
    assert decode_xdlms(_hex("C5 01 C1 00")) == SetResponseNormal(1, DataAccessResult.SUCCESS)


def test_action_normal() -> None:
    method = CosemMethod(70, Obis(0, 0, 96, 3, 10, 255), 1)  # disconnect control: remote_disconnect
    raw = _hex("C3 01 C1 00 46 00 00 60 03 0A FF 01 01 0F 00")
    assert decode_xdlms(raw) == ActionRequestNormal(1, method, Data.int8(0))
    assert encode_xdlms(ActionRequestNormal(1, method)) == _hex("C3 01 C1 00 46 00 00 60 03 0A FF 01 00")
    assert decode_xdlms(_hex("C7 01 C1 00 00")) == ActionResponseNormal(1, ActionResult.SUCCESS)
    assert decode_xdlms(_hex("C7 01 C1 00 01 00 11 07")) == ActionResponseNormal(
        1, ActionResult.SUCCESS, Data.uint8(7)
    )
    assert decode_xdlms(_hex("C7 01 C1 03 01 01 0B")) == ActionResponseNormal(
        1, ActionResult.READ_WRITE_DENIED, DataAccessResult.OBJECT_UNAVAILABLE
    )


def test_exception_response() -> None:
    assert decode_xdlms(_hex("D8 01 02")) == ExceptionResponse(
        ExceptionStateError.SERVICE_NOT_ALLOWED, ExceptionServiceError.SERVICE_NOT_SUPPORTED
    )
    apdu = ExceptionResponse(
        ExceptionStateError.SERVICE_UNKNOWN, ExceptionServiceError.INVOCATION_COUNTER_ERROR, 0x1234
    )
    assert encode_xdlms(apdu) == _hex("D8 02 06 00 00 12 34")
    assert decode_xdlms(encode_xdlms(apdu)) == apdu
    with pytest.raises(EncodeError):
        encode_xdlms(
            ExceptionResponse(ExceptionStateError.SERVICE_UNKNOWN, ExceptionServiceError.OTHER_REASON, 1)
        )


def test_get_with_list_and_results() -> None:
    raw = _hex("C0 03 C1 02 00 08 00 00 01 00 00 FF 02 00 00 03 01 00 01 08 00 FF 02 00")
    energy = CosemAttribute(3, Obis(1, 0, 1, 8, 0, 255), 2)
    apdu = GetRequestWithList(1, ((CLOCK, None), (energy, None)))
    assert decode_xdlms(raw) == apdu
    assert encode_xdlms(apdu) == raw
    response = _hex("C4 03 C1 02 00 06 00 00 30 39 01 04")
    assert decode_xdlms(response) == GetResponseWithList(
        1, (Data.uint32(12345), DataAccessResult.OBJECT_UNDEFINED)
    )


def _profile(rows: int) -> Data:
    stamp = CosemDateTime(CosemDate(2024, 1, 1, 1), CosemTime(0, 0, 0, 0), -60, 0)
    row = Data.structure(
        Data.octet_string(encode_datetime(stamp)),
        Data.uint8(0),
        Data.uint32(123456),
        Data.uint32(654321),
        Data.int16(-3),
        Data.uint16(500),
    )
    return Data.array(*([row] * rows))


def test_datablocks_reassemble() -> None:
    whole = encode_data(_profile(96))
    parts = [whole[i : i + 200] for i in range(0, len(whole), 200)]
    blocks = [GetResponseWithDatablock(1, n == len(parts), n, part) for n, part in enumerate(parts, start=1)]
    wire = [encode_xdlms(b) for b in blocks]
    assert wire[0][:8] == bytes((0xC4, 0x02, 0xC1, 0x00, 0x00, 0x00, 0x00, 0x01))
    decoded = [decode_xdlms(w) for w in wire]
    assert decoded == blocks
    assert reassemble_datablocks(blocks) == _profile(96)
    assert encode_xdlms(GetRequestNext(1, 1)) == _hex("C0 02 C1 00 00 00 01")


@pytest.mark.parametrize(
    ("blocks", "why"),
    [
        ([], "no datablocks"),
        ([GetResponseWithDatablock(1, True, 2, b"\x11\x01")], "where 1 was expected"),
        ([GetResponseWithDatablock(1, False, 1, b"\x11\x01")], "last-block"),
        ([GetResponseWithDatablock(1, True, 1, DataAccessResult.LONG_GET_ABORTED)], "aborted"),
        ([GetResponseWithDatablock(1, True, 1, b"\x11")], "truncated"),
    ],
)
def test_datablock_refusals(blocks: list[GetResponseWithDatablock], why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        reassemble_datablocks(blocks)


def test_load_profile_decodes_fast() -> None:
    raw = encode_xdlms(GetResponseNormal(1, _profile(96)))
    best = float("inf")
    for _ in range(30):
        started = time.perf_counter()
        apdu = decode_xdlms(raw)
        best = min(best, time.perf_counter() - started)
    assert isinstance(apdu, GetResponseNormal)
    assert best < 0.002, f"96-row profile took {best * 1000:.2f} ms"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("C2", "unsupported"),
        ("C009C1", "unknown choice"),
        ("C001", "truncated"),
        ("C001C100080000010000FF020000", "trailing"),
        ("C001C100080000010000FF0202", "presence flag"),
        ("C401C1020A", "get-data-result"),
        ("C501C107", "unknown data-access-result"),
        ("C403C17F", "claims"),
        ("D80903", "state-error"),
    ],
)
def test_refusals(raw: str, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode_xdlms(bytes.fromhex(raw))


def test_encode_refusals() -> None:
    with pytest.raises(EncodeError, match="invoke id"):
        encode_xdlms(GetRequestNormal(16, CLOCK))
    with pytest.raises(EncodeError):
        encode_xdlms(GetRequestNext(1, -1))
    with pytest.raises(EncodeError):
        encode_xdlms(GetResponseWithList(1, [Data.null()]))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ properties

_leaf = st.one_of(
    st.builds(Data.null),
    st.booleans().map(Data.boolean),
    st.integers(-(2**31), 2**31 - 1).map(Data.int32),
    st.integers(0, 255).map(Data.uint8),
    st.integers(0, 0xFFFF).map(Data.uint16),
    st.binary(max_size=20).map(Data.octet_string),
    st.text(alphabet=st.characters(max_codepoint=126, min_codepoint=32), max_size=10).map(
        Data.visible_string
    ),
)
_data = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: Data.array(*xs))
        | st.lists(inner, max_size=4).map(lambda xs: Data.structure(*xs))
    ),
    max_leaves=12,
)
_obis = st.tuples(*[st.integers(0, 255)] * 6).map(lambda t: Obis(*t))
_attribute = st.builds(CosemAttribute, st.integers(0, 0xFFFF), _obis, st.integers(0, 255))
_method = st.builds(CosemMethod, st.integers(0, 0xFFFF), _obis, st.integers(0, 255))
_capture = st.builds(
    CaptureObject, st.integers(0, 0xFFFF), _obis, st.integers(-128, 127), st.integers(0, 0xFFFF)
)
_access = st.none() | st.one_of(
    st.builds(RangeDescriptor, _capture, _data, _data, st.lists(_capture, max_size=3).map(tuple)),
    st.builds(
        EntryDescriptor,
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
    ),
    st.builds(RawAccess, st.integers(3, 255), _data),
)
_invoke = st.integers(0, 15)
_u32 = st.integers(0, 2**32 - 1)
_raw = st.binary(max_size=60)
_dar = st.sampled_from(DataAccessResult)
_get_result = _data | _dar
_items = st.lists(st.tuples(_attribute, _access), max_size=4).map(tuple)
_flags = {"priority_high": st.booleans(), "confirmed": st.booleans()}


def _apdu(cls: Any, *args: Any) -> st.SearchStrategy[Any]:
    return st.builds(cls, _invoke, *args, **_flags)


_APDUS = st.one_of(
    _apdu(GetRequestNormal, _attribute, _access),
    _apdu(GetRequestNext, _u32),
    _apdu(GetRequestWithList, _items),
    _apdu(GetResponseNormal, _get_result),
    _apdu(GetResponseWithDatablock, st.booleans(), _u32, _raw | _dar),
    _apdu(GetResponseWithList, st.lists(_get_result, max_size=4).map(tuple)),
    _apdu(SetRequestNormal, _attribute, _access, _data),
    _apdu(SetRequestWithFirstDatablock, _attribute, _access, st.booleans(), _u32, _raw),
    _apdu(SetRequestWithDatablock, st.booleans(), _u32, _raw),
    _apdu(SetRequestWithList, _items, st.lists(_data, max_size=4).map(tuple)),
    _apdu(SetRequestWithListAndFirstDatablock, _items, st.booleans(), _u32, _raw),
    _apdu(SetResponseNormal, _dar),
    _apdu(SetResponseDatablock, _u32),
    _apdu(SetResponseLastDatablock, _dar, _u32),
    _apdu(SetResponseLastDatablockWithList, st.lists(_dar, max_size=4).map(tuple), _u32),
    _apdu(SetResponseWithList, st.lists(_dar, max_size=4).map(tuple)),
    _apdu(ActionRequestNormal, _method, st.none() | _data),
    _apdu(ActionRequestNextPblock, _u32),
    _apdu(
        ActionRequestWithList,
        st.lists(_method, max_size=3).map(tuple),
        st.lists(_data, max_size=3).map(tuple),
    ),
    _apdu(ActionRequestWithFirstPblock, _method, st.booleans(), _u32, _raw),
    _apdu(
        ActionRequestWithListAndFirstPblock,
        st.lists(_method, max_size=3).map(tuple),
        st.booleans(),
        _u32,
        _raw,
    ),
    _apdu(ActionRequestWithPblock, st.booleans(), _u32, _raw),
    _apdu(ActionResponseNormal, st.sampled_from(ActionResult), st.none() | _get_result),
    _apdu(ActionResponseWithPblock, st.booleans(), _u32, _raw),
    _apdu(
        ActionResponseWithList,
        st.lists(st.tuples(st.sampled_from(ActionResult), st.none() | _get_result), max_size=3).map(tuple),
    ),
    _apdu(ActionResponseNextPblock, _u32),
    st.builds(
        ExceptionResponse,
        st.sampled_from(ExceptionStateError),
        st.sampled_from(
            [e for e in ExceptionServiceError if e is not ExceptionServiceError.INVOCATION_COUNTER_ERROR]
        ),
    ),
    st.builds(
        ExceptionResponse,
        st.sampled_from(ExceptionStateError),
        st.just(ExceptionServiceError.INVOCATION_COUNTER_ERROR),
        _u32,
    ),
)


@given(_APDUS)
def test_round_trip_every_class(apdu: Any) -> None:
    raw = encode_xdlms(apdu)
    assert decode_xdlms(raw) == apdu
    assert encode_xdlms(decode_xdlms(raw)) == raw


def _only_decode_error(raw: bytes) -> None:
    assert_value_or_error(decode_xdlms, DecodeError, raw)


@given(st.sampled_from([0xC0, 0xC1, 0xC3, 0xC4, 0xC5, 0xC7, 0xD8]), st.binary(max_size=120))
def test_fuzz_random_bodies(tag: int, body: bytes) -> None:
    _only_decode_error(bytes((tag,)) + body)


@given(_APDUS, st.data())
def test_fuzz_truncated_and_mutated(apdu: Any, data: st.DataObject) -> None:
    for raw in truncated_and_mutated(encode_xdlms(apdu), data):
        _only_decode_error(raw)


def test_null_result() -> None:
    """A null-data result is a value (choice 0), not an error."""
    raw = encode_xdlms(GetResponseNormal(1, Data(DataType.NULL_DATA, None)))
    assert raw == _hex("C4 01 C1 00 00")
