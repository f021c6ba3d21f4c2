"""xDLMS GET / SET / ACTION services with logical name referencing (IEC 62056-5-3), sans-IO.

Every APDU here is ``tag, choice, invoke-id-and-priority, fields...`` in A-XDR (ExceptionResponse has
no choice and no invoke byte). Rather than one hand-written encoder and decoder per APDU, each class
is described once as a *layout*: its tag, its CHOICE number and the ordered list of field codecs. The
generic encoder and decoder walk that list, so adding a service variant is one table row and the
wire order can be read off the table next to the ASN.1.

Decoding walks the caller's buffer with one cursor and hands ``Data`` values to
:func:`~openami.protocols.dlms.axdr.decode_data` at their offset (no slicing), which keeps a
load-profile response to one pass. Every failure, including an unknown tag, choice or enumerated code,
is a :class:`~openami.protocols.dlms.errors.DecodeError`; every count is checked against the bytes
left before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, fields
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar

from openami.protocols.dlms.axdr import (
    Data,
    DataType,
    decode_data,
    decode_data_all,
    encode_data,
    encode_length,
)
from openami.protocols.dlms.axdr import decode_length as _decode_length
from openami.protocols.dlms.errors import DecodeError, EncodeError
from openami.protocols.dlms.obis import Obis

__all__ = [
    "ACTION_REQUEST",
    "ACTION_RESPONSE",
    "EXCEPTION_RESPONSE",
    "GET_REQUEST",
    "GET_RESPONSE",
    "SET_REQUEST",
    "SET_RESPONSE",
    "ActionRequestNextPblock",
    "ActionRequestNormal",
    "ActionRequestWithFirstPblock",
    "ActionRequestWithList",
    "ActionRequestWithListAndFirstPblock",
    "ActionRequestWithPblock",
    "ActionResponseNextPblock",
    "ActionResponseNormal",
    "ActionResponseWithList",
    "ActionResponseWithPblock",
    "ActionResult",
    "CaptureObject",
    "CosemAttribute",
    "CosemMethod",
    "DataAccessResult",
    "EntryDescriptor",
    "ExceptionResponse",
    "ExceptionServiceError",
    "ExceptionStateError",
    "GetRequestNext",
    "GetRequestNormal",
    "GetRequestWithList",
    "GetResponseNormal",
    "GetResponseWithDatablock",
    "GetResponseWithList",
    "RangeDescriptor",
    "RawAccess",
    "SelectiveAccess",
    "SetRequestNormal",
    "SetRequestWithDatablock",
    "SetRequestWithFirstDatablock",
    "SetRequestWithList",
    "SetRequestWithListAndFirstDatablock",
    "SetResponseDatablock",
    "SetResponseLastDatablock",
    "SetResponseLastDatablockWithList",
    "SetResponseNormal",
    "SetResponseWithList",
    "XdlmsApdu",
    "decode_xdlms",
    "encode_xdlms",
    "reassemble_datablocks",
]

GET_REQUEST: Final = 0xC0
SET_REQUEST: Final = 0xC1
ACTION_REQUEST: Final = 0xC3
GET_RESPONSE: Final = 0xC4
SET_RESPONSE: Final = 0xC5
ACTION_RESPONSE: Final = 0xC7
EXCEPTION_RESPONSE: Final = 0xD8

# invoke-id-and-priority: bits 0-3 invoke id, 4-5 reserved, 6 service class (1 confirmed), 7 priority
# (1 high). Reserved bits are ignored on decoding: some meters echo whatever the client sent.
_INVOKE_ID_MASK: Final = 0x0F
_CONFIRMED: Final = 0x40
_PRIORITY_HIGH: Final = 0x80

_RANGE_SELECTOR: Final = 1
_ENTRY_SELECTOR: Final = 2


class DataAccessResult(IntEnum):
    """Why an attribute could not be read or written (``success`` only appears in SET responses)."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class ActionResult(IntEnum):
    """The outcome of a method invocation."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


class ExceptionStateError(IntEnum):
    """ExceptionResponse ``state-error``."""

    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ExceptionServiceError(IntEnum):
    """ExceptionResponse ``service-error``; only INVOCATION_COUNTER_ERROR carries a value (the
    counter the meter expects next), so a client can resynchronise instead of guessing."""

    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


# ----------------------------------------------------------------------------------------- descriptors


@dataclass(frozen=True, slots=True)
class CosemAttribute:
    """cosem-attribute-descriptor: attribute ``attribute`` of object ``obis`` of interface ``class_id``."""

    class_id: int
    obis: Obis
    attribute: int


@dataclass(frozen=True, slots=True)
class CosemMethod:
    """cosem-method-descriptor."""

    class_id: int
    obis: Obis
    method: int


class CaptureObject(NamedTuple):
    """A capture-object definition (profile generic): the column a range restricts on or selects.
    ``data_index`` 0 means the whole attribute."""

    class_id: int
    obis: Obis
    attribute: int
    data_index: int = 0


@dataclass(frozen=True, slots=True)
class RangeDescriptor:
    """Access selector 1 of a profile generic buffer: rows whose ``restricting_object`` value lies in
    ``from_value .. to_value`` (usually the clock and two date-times), optionally only some columns
    (``selected_values``, empty for all)."""

    restricting_object: CaptureObject
    from_value: Data
    to_value: Data
    selected_values: tuple[CaptureObject, ...] = ()


@dataclass(frozen=True, slots=True)
class EntryDescriptor:
    """Access selector 2: rows ``from_entry .. to_entry`` (1-based, ``to_entry`` 0 = last) and columns
    ``from_selected_value .. to_selected_value`` (``to_selected_value`` 0 = last)."""

    from_entry: int
    to_entry: int
    from_selected_value: int = 1
    to_selected_value: int = 0


@dataclass(frozen=True, slots=True)
class RawAccess:
    """Any other access selector, kept as its selector number and parameter ``Data`` (interface
    classes other than profile generic define their own)."""

    selector: int
    parameters: Data


SelectiveAccess: TypeAlias = RangeDescriptor | EntryDescriptor | RawAccess
AttributeItem: TypeAlias = tuple[CosemAttribute, SelectiveAccess | None]
GetResult: TypeAlias = Data | DataAccessResult


# ---------------------------------------------------------------------------------------------- APDUs
#
# Every class with an invoke byte starts with ``invoke_id``; ``priority_high`` and ``confirmed`` are
# keyword-only and default to the usual 0xC1 (high priority, confirmed) so examples read naturally.


@dataclass(frozen=True, slots=True)
class GetRequestNormal:
    invoke_id: int
    attribute: CosemAttribute
    access: SelectiveAccess | None = None
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    """Ask for the block after ``block_number`` (the number of the last block received)."""

    invoke_id: int
    block_number: int
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class GetRequestWithList:
    invoke_id: int
    items: tuple[AttributeItem, ...]
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class GetResponseNormal:
    invoke_id: int
    result: GetResult
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class GetResponseWithDatablock:
    """One block of a long GET: ``raw_data`` is a slice of the A-XDR encoding of the whole value
    (see :func:`reassemble_datablocks`), or the reason the transfer stopped."""

    invoke_id: int
    last_block: bool
    block_number: int
    raw_data: bytes | DataAccessResult
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class GetResponseWithList:
    invoke_id: int
    results: tuple[GetResult, ...]
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetRequestNormal:
    invoke_id: int
    attribute: CosemAttribute
    access: SelectiveAccess | None
    value: Data
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetRequestWithFirstDatablock:
    """First block of a long SET: the target plus the start of the encoded value."""

    invoke_id: int
    attribute: CosemAttribute
    access: SelectiveAccess | None
    last_block: bool
    block_number: int
    raw_data: bytes
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetRequestWithDatablock:
    invoke_id: int
    last_block: bool
    block_number: int
    raw_data: bytes
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetRequestWithList:
    invoke_id: int
    items: tuple[AttributeItem, ...]
    values: tuple[Data, ...]
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetRequestWithListAndFirstDatablock:
    invoke_id: int
    items: tuple[AttributeItem, ...]
    last_block: bool
    block_number: int
    raw_data: bytes
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    invoke_id: int
    result: DataAccessResult
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetResponseDatablock:
    """The meter acknowledges block ``block_number`` of a long SET and waits for the next."""

    invoke_id: int
    block_number: int
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetResponseLastDatablock:
    invoke_id: int
    result: DataAccessResult
    block_number: int
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetResponseLastDatablockWithList:
    invoke_id: int
    results: tuple[DataAccessResult, ...]
    block_number: int
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class SetResponseWithList:
    invoke_id: int
    results: tuple[DataAccessResult, ...]
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionRequestNormal:
    invoke_id: int
    method: CosemMethod
    parameters: Data | None = None
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionRequestNextPblock:
    """Ask for the next block of a long action response."""

    invoke_id: int
    block_number: int
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionRequestWithList:
    invoke_id: int
    methods: tuple[CosemMethod, ...]
    parameters: tuple[Data, ...]
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionRequestWithFirstPblock:
    invoke_id: int
    method: CosemMethod
    last_block: bool
    block_number: int
    raw_data: bytes
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionRequestWithListAndFirstPblock:
    invoke_id: int
    methods: tuple[CosemMethod, ...]
    last_block: bool
    block_number: int
    raw_data: bytes
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionRequestWithPblock:
    invoke_id: int
    last_block: bool
    block_number: int
    raw_data: bytes
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionResponseNormal:
    """``return_data`` is absent (None) for most methods; a DataAccessResult when the method ran but
    its return value could not be produced."""

    invoke_id: int
    result: ActionResult
    return_data: GetResult | None = None
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionResponseWithPblock:
    invoke_id: int
    last_block: bool
    block_number: int
    raw_data: bytes
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionResponseWithList:
    invoke_id: int
    results: tuple[tuple[ActionResult, GetResult | None], ...]
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ActionResponseNextPblock:
    invoke_id: int
    block_number: int
    _: KW_ONLY
    priority_high: bool = True
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """What a meter sends when it cannot even parse or accept a request (no invoke id to answer)."""

    state_error: ExceptionStateError
    service_error: ExceptionServiceError
    invocation_counter: int | None = None


XdlmsApdu: TypeAlias = (
    GetRequestNormal
    | GetRequestNext
    | GetRequestWithList
    | GetResponseNormal
    | GetResponseWithDatablock
    | GetResponseWithList
    | SetRequestNormal
    | SetRequestWithFirstDatablock
    | SetRequestWithDatablock
    | SetRequestWithList
    | SetRequestWithListAndFirstDatablock
    | SetResponseNormal
    | SetResponseDatablock
    | SetResponseLastDatablock
    | SetResponseLastDatablockWithList
    | SetResponseWithList
    | ActionRequestNormal
    | ActionRequestNextPblock
    | ActionRequestWithList
    | ActionRequestWithFirstPblock
    | ActionRequestWithListAndFirstPblock
    | ActionRequestWithPblock
    | ActionResponseNormal
    | ActionResponseWithPblock
    | ActionResponseWithList
    | ActionResponseNextPblock
    | ExceptionResponse
)


# --------------------------------------------------------------------------------------------- cursor


class _Reader:
    """A cursor over one APDU; the only place bounds are checked for fixed-size fields."""

    __slots__ = ("buf", "end", "pos", "tables")

    def __init__(self, buf: bytes, pos: int, tables: bool = False) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.tables = tables

    def take(self, n: int, what: str) -> bytes:
        pos = self.pos
        if pos + n > self.end:
            raise DecodeError(f"truncated {what}: need {n} bytes, have {self.end - pos}", pos)
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def u8(self, what: str) -> int:
        pos = self.pos
        if pos >= self.end:
            raise DecodeError(f"truncated {what}", pos)
        self.pos = pos + 1
        return self.buf[pos]

    def count(self, what: str) -> int:
        """A SEQUENCE OF length, refused when more elements are claimed than bytes remain."""
        n, self.pos = _decode_length(self.buf, self.pos)
        if n > self.end - self.pos:
            raise DecodeError(f"{what} claims {n} elements, {self.end - self.pos} bytes remain", self.pos)
        return n

    def data(self) -> Data:
        value, self.pos = decode_data(self.buf, self.pos, tables=self.tables)
        return value


# --------------------------------------------------------------------------------------------- codecs


class _Codec(NamedTuple):
    """How one field goes on and off the wire. ``encode`` validates the Python type (EncodeError)."""

    encode: Callable[[object, bytearray], None]
    decode: Callable[[_Reader], object]


_E = TypeVar("_E", bound=IntEnum)


def _int_codec(size: int, what: str) -> _Codec:
    top = 1 << (8 * size)

    def encode(value: object, out: bytearray) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < top:
            raise EncodeError(f"{what} must be an int 0..{top - 1}, got {value!r:.40}")
        out += value.to_bytes(size, "big")

    def decode(r: _Reader) -> object:
        return r.uint(size, what)

    return _Codec(encode, decode)


def _enum_codec(enum: type[_E], what: str) -> _Codec:
    def encode(value: object, out: bytearray) -> None:
        if not isinstance(value, enum):
            raise EncodeError(f"{what} must be a {enum.__name__}, got {value!r:.40}")
        out.append(value)

    def decode(r: _Reader) -> object:
        pos = r.pos
        code = r.u8(what)
        try:
            return enum(code)
        except ValueError:
            raise DecodeError(f"unknown {what} {code}", pos) from None

    return _Codec(encode, decode)


def _encode_bool(value: object, out: bytearray) -> None:
    if not isinstance(value, bool):
        raise EncodeError(f"last-block must be a bool, got {value!r:.40}")
    out.append(value)


def _decode_bool(r: _Reader) -> object:
    return r.u8("last-block") != 0  # A-XDR: any non-zero byte is TRUE


def _encode_octets(value: object, out: bytearray) -> None:
    if not isinstance(value, bytes):
        raise EncodeError(f"raw-data must be bytes, got {type(value).__name__}")
    out += encode_length(len(value))
    out += value


def _decode_octets(r: _Reader) -> object:
    n, r.pos = _decode_length(r.buf, r.pos)
    return r.take(n, "raw-data")


def _encode_data(value: object, out: bytearray) -> None:
    if not isinstance(value, Data):
        raise EncodeError(f"expected Data, got {type(value).__name__}")
    out += encode_data(value)


def _decode_data(r: _Reader) -> object:
    return r.data()


def _check_obis(value: object) -> Obis:
    if not isinstance(value, Obis):
        raise EncodeError(f"instance id must be an Obis, got {value!r:.40}")
    return value


_U8 = _int_codec(1, "id")
_U16 = _int_codec(2, "class id")
_U32 = _int_codec(4, "block number")
_BOOL = _Codec(_encode_bool, _decode_bool)
_OCTETS = _Codec(_encode_octets, _decode_octets)
_DATA = _Codec(_encode_data, _decode_data)
_DAR = _enum_codec(DataAccessResult, "data-access-result")
_ACTION_RESULT = _enum_codec(ActionResult, "action-result")


def _descriptor_codec(kind: type[CosemAttribute] | type[CosemMethod], member: str) -> _Codec:
    """class-id (u16), instance-id (6 bytes), attribute/method id (u8)."""

    def encode(value: object, out: bytearray) -> None:
        if not isinstance(value, kind):
            raise EncodeError(f"expected {kind.__name__}, got {value!r:.40}")
        _U16.encode(value.class_id, out)
        out += _check_obis(value.obis).to_bytes()
        _U8.encode(getattr(value, member), out)

    def decode(r: _Reader) -> object:
        class_id = r.uint(2, "class id")
        obis = Obis(*r.take(6, "instance id"))
        return kind(class_id, obis, r.u8(f"{member} id"))

    return _Codec(encode, decode)


_ATTRIBUTE = _descriptor_codec(CosemAttribute, "attribute")
_METHOD = _descriptor_codec(CosemMethod, "method")


def _optional(codec: _Codec, what: str) -> _Codec:
    """An A-XDR OPTIONAL: 00 absent (None) or 01 followed by the value."""

    def encode(value: object, out: bytearray) -> None:
        if value is None:
            out.append(0)
        else:
            out.append(1)
            codec.encode(value, out)

    def decode(r: _Reader) -> object:
        pos = r.pos
        flag = r.u8(what)
        if flag > 1:
            raise DecodeError(f"{what}: presence flag 0x{flag:02X}", pos)
        return codec.decode(r) if flag else None

    return _Codec(encode, decode)


def _either(data_codec: _Codec, data_type: type, error_codec: _Codec, what: str) -> _Codec:
    """A two-way CHOICE: [0] a value of ``data_type``, [1] an error enum (Get-Data-Result and the
    DataBlock-G result are both this shape)."""

    def encode(value: object, out: bytearray) -> None:
        if isinstance(value, data_type):
            out.append(0)
            data_codec.encode(value, out)
        else:
            out.append(1)
            error_codec.encode(value, out)

    def decode(r: _Reader) -> object:
        pos = r.pos
        choice = r.u8(what)
        if choice > 1:
            raise DecodeError(f"{what}: unknown CHOICE {choice}", pos)
        return error_codec.decode(r) if choice else data_codec.decode(r)

    return _Codec(encode, decode)


def _sequence_of(codec: _Codec, what: str) -> _Codec:
    def encode(value: object, out: bytearray) -> None:
        if not isinstance(value, tuple):
            raise EncodeError(f"{what} must be a tuple, got {type(value).__name__}")
        out += encode_length(len(value))
        for item in value:
            codec.encode(item, out)

    def decode(r: _Reader) -> object:
        item_decode = codec.decode
        return tuple([item_decode(r) for _ in range(r.count(what))])

    return _Codec(encode, decode)


def _pair(first: _Codec, second: _Codec, what: str) -> _Codec:
    def encode(value: object, out: bytearray) -> None:
        if not isinstance(value, tuple) or len(value) != 2:
            raise EncodeError(f"{what} must be a pair, got {value!r:.40}")
        first.encode(value[0], out)
        second.encode(value[1], out)

    def decode(r: _Reader) -> object:
        return first.decode(r), second.decode(r)

    return _Codec(encode, decode)


# Selective access: the descriptors are Data structures of a fixed shape; they are built from and
# checked against that shape so a malformed one fails here instead of deep in a caller.


def _capture_data(obj: CaptureObject) -> Data:
    return Data.structure(
        Data.uint16(obj.class_id),
        Data.octet_string(_check_obis(obj.obis).to_bytes()),
        Data.int8(obj.attribute),
        Data.uint16(obj.data_index),
    )


def _fields(data: Data, count: int, what: str, kind: DataType = DataType.STRUCTURE) -> tuple[Data, ...]:
    value = data.value
    if data.type is not kind or not isinstance(value, tuple) or (count >= 0 and len(value) != count):
        raise DecodeError(f"{what}: expected {kind.name.lower()} of {count} elements", None)
    return value


def _scalar(data: Data, kind: DataType, what: str) -> Any:
    if data.type is not kind:
        raise DecodeError(f"{what}: expected {kind.name.lower()}, got {data.type.name.lower()}", None)
    return data.value


def _capture_object(data: Data) -> CaptureObject:
    class_id, name, attribute, index = _fields(data, 4, "capture object definition")
    raw = _scalar(name, DataType.OCTET_STRING, "logical name")
    if len(raw) != 6:
        raise DecodeError(f"logical name of {len(raw)} bytes", None)
    return CaptureObject(
        _scalar(class_id, DataType.LONG_UNSIGNED, "class id"),
        Obis(*raw),
        _scalar(attribute, DataType.INTEGER, "attribute index"),
        _scalar(index, DataType.LONG_UNSIGNED, "data index"),
    )


def _range_parameters(access: RangeDescriptor) -> Data:
    return Data.structure(
        _capture_data(access.restricting_object),
        access.from_value,
        access.to_value,
        Data.array(*map(_capture_data, access.selected_values)),
    )


def _range_from(data: Data) -> RangeDescriptor:
    restricting, from_value, to_value, selected = _fields(data, 4, "range descriptor")
    columns = _fields(selected, -1, "selected values", DataType.ARRAY)
    return RangeDescriptor(
        _capture_object(restricting), from_value, to_value, tuple(map(_capture_object, columns))
    )


def _entry_parameters(access: EntryDescriptor) -> Data:
    return Data.structure(
        Data.uint32(access.from_entry),
        Data.uint32(access.to_entry),
        Data.uint16(access.from_selected_value),
        Data.uint16(access.to_selected_value),
    )


def _entry_from(data: Data) -> EntryDescriptor:
    values = _fields(data, 4, "entry descriptor")
    kinds = (DataType.DOUBLE_LONG_UNSIGNED,) * 2 + (DataType.LONG_UNSIGNED,) * 2
    return EntryDescriptor(*(_scalar(v, k, "entry descriptor") for v, k in zip(values, kinds, strict=True)))


_ACCESS_TO_WIRE: Final[MappingProxyType[type, tuple[int, Callable[[Any], Data]]]] = MappingProxyType(
    {
        RangeDescriptor: (_RANGE_SELECTOR, _range_parameters),
        EntryDescriptor: (_ENTRY_SELECTOR, _entry_parameters),
        RawAccess: (-1, lambda access: access.parameters),
    }
)
_ACCESS_FROM_WIRE: Final[MappingProxyType[int, Callable[[Data], SelectiveAccess]]] = MappingProxyType(
    {_RANGE_SELECTOR: _range_from, _ENTRY_SELECTOR: _entry_from}
)


def _encode_access(value: object, out: bytearray) -> None:
    entry = _ACCESS_TO_WIRE.get(type(value))
    if entry is None:
        raise EncodeError(f"not a selective access descriptor: {value!r:.40}")
    selector, parameters = entry
    if isinstance(value, RawAccess):
        selector = value.selector
    _U8.encode(selector, out)
    out += encode_data(parameters(value))


def _decode_access(r: _Reader) -> object:
    selector = r.u8("access selector")
    start = r.pos
    parameters = r.data()
    build = _ACCESS_FROM_WIRE.get(selector)
    if build is None:
        return RawAccess(selector, parameters)
    try:
        return build(parameters)
    except DecodeError as exc:
        raise DecodeError(f"access selector {selector}: {exc.reason}", start) from None


_ACCESS = _optional(_Codec(_encode_access, _decode_access), "access-selection")
_ATTRIBUTE_ITEMS = _sequence_of(_pair(_ATTRIBUTE, _ACCESS, "attribute item"), "attribute list")
_GET_RESULT = _either(_DATA, Data, _DAR, "get-data-result")
_OPT_GET_RESULT = _optional(_GET_RESULT, "return-parameters")
_BLOCK_G_RESULT = _either(_OCTETS, bytes, _DAR, "datablock result")
_DAR_LIST = _sequence_of(_DAR, "result list")

# ------------------------------------------------------------------------------------------- layouts


class _Layout(NamedTuple):
    tag: int
    choice: int
    cls: Callable[..., XdlmsApdu]
    fields: tuple[tuple[str, _Codec], ...]


_BLOCK_SA = (("last_block", _BOOL), ("block_number", _U32), ("raw_data", _OCTETS))

# One row per APDU, in the CHOICE order of IEC 62056-5-3; field order is wire order.
_LAYOUTS: Final[tuple[_Layout, ...]] = (
    _Layout(GET_REQUEST, 1, GetRequestNormal, (("attribute", _ATTRIBUTE), ("access", _ACCESS))),
    _Layout(GET_REQUEST, 2, GetRequestNext, (("block_number", _U32),)),
    _Layout(GET_REQUEST, 3, GetRequestWithList, (("items", _ATTRIBUTE_ITEMS),)),
    _Layout(GET_RESPONSE, 1, GetResponseNormal, (("result", _GET_RESULT),)),
    _Layout(
        GET_RESPONSE,
        2,
        GetResponseWithDatablock,
        (("last_block", _BOOL), ("block_number", _U32), ("raw_data", _BLOCK_G_RESULT)),
    ),
    _Layout(GET_RESPONSE, 3, GetResponseWithList, (("results", _sequence_of(_GET_RESULT, "results")),)),
    _Layout(
        SET_REQUEST,
        1,
        SetRequestNormal,
        (("attribute", _ATTRIBUTE), ("access", _ACCESS), ("value", _DATA)),
    ),
    _Layout(
        SET_REQUEST,
        2,
        SetRequestWithFirstDatablock,
        (("attribute", _ATTRIBUTE), ("access", _ACCESS), *_BLOCK_SA),
    ),
    _Layout(SET_REQUEST, 3, SetRequestWithDatablock, _BLOCK_SA),
    _Layout(
        SET_REQUEST,
        4,
        SetRequestWithList,
        (("items", _ATTRIBUTE_ITEMS), ("values", _sequence_of(_DATA, "value list"))),
    ),
    _Layout(SET_REQUEST, 5, SetRequestWithListAndFirstDatablock, (("items", _ATTRIBUTE_ITEMS), *_BLOCK_SA)),
    _Layout(SET_RESPONSE, 1, SetResponseNormal, (("result", _DAR),)),
    _Layout(SET_RESPONSE, 2, SetResponseDatablock, (("block_number", _U32),)),
    _Layout(SET_RESPONSE, 3, SetResponseLastDatablock, (("result", _DAR), ("block_number", _U32))),
    _Layout(
        SET_RESPONSE, 4, SetResponseLastDatablockWithList, (("results", _DAR_LIST), ("block_number", _U32))
    ),
    _Layout(SET_RESPONSE, 5, SetResponseWithList, (("results", _DAR_LIST),)),
    _Layout(
        ACTION_REQUEST,
        1,
        ActionRequestNormal,
        (("method", _METHOD), ("parameters", _optional(_DATA, "method-invocation-parameters"))),
    ),
    _Layout(ACTION_REQUEST, 2, ActionRequestNextPblock, (("block_number", _U32),)),
    _Layout(
        ACTION_REQUEST,
        3,
        ActionRequestWithList,
        (
            ("methods", _sequence_of(_METHOD, "method list")),
            ("parameters", _sequence_of(_DATA, "parameters")),
        ),
    ),
    _Layout(ACTION_REQUEST, 4, ActionRequestWithFirstPblock, (("method", _METHOD), *_BLOCK_SA)),
    _Layout(
        ACTION_REQUEST,
        5,
        ActionRequestWithListAndFirstPblock,
        (("methods", _sequence_of(_METHOD, "method list")), *_BLOCK_SA),
    ),
    _Layout(ACTION_REQUEST, 6, ActionRequestWithPblock, _BLOCK_SA),
    _Layout(
        ACTION_RESPONSE,
        1,
        ActionResponseNormal,
        (("result", _ACTION_RESULT), ("return_data", _OPT_GET_RESULT)),
    ),
    _Layout(ACTION_RESPONSE, 2, ActionResponseWithPblock, _BLOCK_SA),
    _Layout(
        ACTION_RESPONSE,
        3,
        ActionResponseWithList,
        (("results", _sequence_of(_pair(_ACTION_RESULT, _OPT_GET_RESULT, "action result"), "results")),),
    ),
    _Layout(ACTION_RESPONSE, 4, ActionResponseNextPblock, (("block_number", _U32),)),
)

_BY_CLASS: Final[MappingProxyType[Callable[..., XdlmsApdu], _Layout]] = MappingProxyType(
    {layout.cls: layout for layout in _LAYOUTS}
)
_BY_TAG: Final[MappingProxyType[int, dict[int, _Layout]]] = MappingProxyType(
    {tag: {lay.choice: lay for lay in _LAYOUTS if lay.tag == tag} for tag in {lay.tag for lay in _LAYOUTS}}
)


def _check_layout_matches_classes() -> None:
    """Import-time guard: a table row whose field names differ from its dataclass would silently
    encode the wrong attribute; fail loudly at import instead."""
    for layout in _LAYOUTS:
        names = tuple(f.name for f in fields(layout.cls) if not f.kw_only)  # type: ignore[arg-type]
        if names != ("invoke_id", *(name for name, _ in layout.fields)):
            raise AssertionError(f"layout of {layout.cls} does not match its fields {names}")


_check_layout_matches_classes()


def _invoke_byte(apdu: Any) -> int:
    invoke_id = apdu.invoke_id
    if not isinstance(invoke_id, int) or not 0 <= invoke_id <= _INVOKE_ID_MASK:
        raise EncodeError(f"invoke id must be 0..15, got {invoke_id!r:.40}")
    return invoke_id | (_CONFIRMED if apdu.confirmed else 0) | (_PRIORITY_HIGH if apdu.priority_high else 0)


def _encode_layout(layout: _Layout, apdu: Any) -> bytes:
    out = bytearray((layout.tag, layout.choice, _invoke_byte(apdu)))
    for name, codec in layout.fields:
        codec.encode(getattr(apdu, name), out)
    return bytes(out)


def _decode_layout(r: _Reader) -> XdlmsApdu:
    tag = r.buf[0]
    choice = r.u8("service choice")
    layout = _BY_TAG[tag].get(choice)
    if layout is None:
        raise DecodeError(f"unknown choice {choice} of service tag 0x{tag:02X}", 1)
    invoke = r.u8("invoke-id-and-priority")
    values = {name: codec.decode(r) for name, codec in layout.fields}
    return layout.cls(
        invoke & _INVOKE_ID_MASK,
        **values,
        priority_high=bool(invoke & _PRIORITY_HIGH),
        confirmed=bool(invoke & _CONFIRMED),
    )


_STATE_ERROR = _enum_codec(ExceptionStateError, "state-error")
_SERVICE_ERROR = _enum_codec(ExceptionServiceError, "service-error")


def _encode_exception(apdu: Any) -> bytes:
    out = bytearray((EXCEPTION_RESPONSE,))
    _STATE_ERROR.encode(apdu.state_error, out)
    _SERVICE_ERROR.encode(apdu.service_error, out)
    carries_counter = apdu.service_error is ExceptionServiceError.INVOCATION_COUNTER_ERROR
    if carries_counter != (apdu.invocation_counter is not None):
        raise EncodeError("an invocation counter goes with (and only with) invocation-counter-error")
    if carries_counter:
        _U32.encode(apdu.invocation_counter, out)
    return bytes(out)


def _decode_exception(r: _Reader) -> XdlmsApdu:
    state = _STATE_ERROR.decode(r)
    service = _SERVICE_ERROR.decode(r)
    counter = None
    if service is ExceptionServiceError.INVOCATION_COUNTER_ERROR:
        counter = r.uint(4, "invocation counter")
    return ExceptionResponse(state, service, counter)  # type: ignore[arg-type]


_DECODERS: Final[MappingProxyType[int, Callable[[_Reader], XdlmsApdu]]] = MappingProxyType(
    {**dict.fromkeys(_BY_TAG, _decode_layout), EXCEPTION_RESPONSE: _decode_exception}
)


def encode_xdlms(apdu: XdlmsApdu) -> bytes:
    """The A-XDR bytes of ``apdu``; wrong types or out-of-range numbers raise EncodeError."""
    if isinstance(apdu, ExceptionResponse):
        return _encode_exception(apdu)
    layout = _BY_CLASS.get(type(apdu))
    if layout is None:
        raise EncodeError(f"not an xDLMS APDU: {type(apdu).__name__}")
    return _encode_layout(layout, apdu)


def decode_xdlms(raw: bytes | bytearray | memoryview, *, tables: bool = False) -> XdlmsApdu:
    """Decode one unciphered, reassembled GET/SET/ACTION/exception APDU that fills ``raw`` exactly.

    ``tables``: uniform arrays in its values come back as :class:`~openami.protocols.dlms.axdr.Table`.
    """
    buf = raw if isinstance(raw, bytes) else bytes(raw)
    if not buf:
        raise DecodeError("empty APDU", 0)
    decoder = _DECODERS.get(buf[0])
    if decoder is None:
        raise DecodeError(f"unsupported xDLMS tag 0x{buf[0]:02X}", 0)
    r = _Reader(buf, 1, tables)
    apdu = decoder(r)
    if r.pos != r.end:
        raise DecodeError(f"{r.end - r.pos} trailing bytes after APDU", r.pos)
    return apdu


def reassemble_datablocks(blocks: Sequence[GetResponseWithDatablock], *, tables: bool = False) -> Data:
    """Join the blocks of a long GET and decode the value they carry.

    The blocks must number 1, 2, ... with only the last flagged ``last_block``: a gap or repeat means
    a lost or duplicated frame and would otherwise decode to a plausible but wrong value. A block
    carrying a DataAccessResult means the meter aborted the transfer; all are DecodeErrors.
    """
    if not blocks:
        raise DecodeError("no datablocks", None)
    parts: list[bytes] = []
    for index, block in enumerate(blocks, start=1):
        if block.block_number != index:
            raise DecodeError(f"datablock {block.block_number} where {index} was expected", None)
        if block.last_block != (index == len(blocks)):
            raise DecodeError(f"datablock {index} has last-block={block.last_block}", None)
        if not isinstance(block.raw_data, bytes):
            raise DecodeError(f"datablock {index} aborted: {block.raw_data.name}", None)
        parts.append(block.raw_data)
    return decode_data_all(b"".join(parts), tables=tables)
