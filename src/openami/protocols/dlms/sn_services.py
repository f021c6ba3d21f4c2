"""xDLMS services with short-name (SN) referencing (IEC 62056-5-3), sans-IO.

Why a module of its own: legacy and many Indian (IS 15959) meters only speak SN. There an attribute or
method is a DLMS *named variable* identified by a 16-bit short name (see
:func:`~openami.protocols.dlms.cosem.short_name`), and the services are the old DLMS Read, Write,
UnconfirmedWrite and InformationReport rather than GET/SET/ACTION. They share nothing with the LN layouts
of :mod:`~openami.protocols.dlms.xdlms` but the A-XDR :class:`~openami.protocols.dlms.axdr.Data` values,
so they are written as plain encoders and decoders over one bounded cursor.

Written from the public ASN.1 of the xDLMS APDUs (DLMS UA Green Book, IEC 62056-5-3)::

    ReadRequest  [5]  ::= SEQUENCE OF Variable-Access-Specification
    ReadResponse [12] ::= SEQUENCE OF CHOICE { data [0] Data, data-access-error [1] Data-Access-Result,
                                               data-block-result [2] Data-Block-Result,
                                               block-number [3] Unsigned16 }
    WriteRequest [6], UnconfirmedWriteRequest [22] ::= SEQUENCE {
        variable-access-specification SEQUENCE OF Variable-Access-Specification,
        list-of-data SEQUENCE OF Data }
    WriteResponse [13] ::= SEQUENCE OF CHOICE { success [0] NULL, data-access-error [1] Data-Access-Result,
                                                block-number [2] Unsigned16 }
    InformationReportRequest [24] ::= SEQUENCE { current-time GeneralizedTime OPTIONAL,
        variable-access-specification SEQUENCE OF ..., list-of-data SEQUENCE OF Data }
    Variable-Access-Specification ::= CHOICE { variable-name [2] ObjectName,
        parameterized-access [4] { variable-name, selector Unsigned8, parameter Data },
        block-number-access [5] { block-number Unsigned16 },
        read-data-block-access [6] { last-block BOOLEAN, block-number Unsigned16, raw-data OCTET STRING },
        write-data-block-access [7] { last-block BOOLEAN, block-number Unsigned16 } }

ObjectName is typed Integer16 in the ASN.1 but every short name is written unsigned (0xFA00, the current
association), so it is an int 0..0xFFFF here; the two bytes on the wire are the same. ``current-time`` is
kept as its raw bytes (a 12-byte COSEM date-time in practice): both readings of GeneralizedTime in A-XDR
are a length-prefixed string, so nothing is lost.

Parameterized access is how SN does selective access (selector 1 = range, 2 = entry, as for LN) and how
it invokes methods (selector 0, the parameter being the method's argument). :func:`parameterized` and
:func:`selective_access` translate to and from the LN descriptors of :mod:`.xdlms` so both referencings
share one definition of the range and entry shapes.

Every decoding failure is a :class:`~openami.protocols.dlms.errors.DecodeError`; every count is checked
against the bytes left before anything is allocated; Data values are bounded by
:func:`~openami.protocols.dlms.axdr.decode_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from openami.protocols.dlms.axdr import (
    Data,
    DataType,
    decode_data,
    decode_data_all,
    decode_length,
    encode_data,
    encode_length,
)
from openami.protocols.dlms.errors import DecodeError, EncodeError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import (
    CosemAttribute,
    DataAccessResult,
    GetRequestNormal,
    RawAccess,
    SelectiveAccess,
    decode_xdlms,
    encode_xdlms,
)

__all__ = [
    "INFORMATION_REPORT_REQUEST",
    "READ_REQUEST",
    "READ_RESPONSE",
    "SN_TAGS",
    "UNCONFIRMED_WRITE_REQUEST",
    "WRITE_REQUEST",
    "WRITE_RESPONSE",
    "BlockNumberAccess",
    "DataBlockResult",
    "InformationReportRequest",
    "ObjectListEntry",
    "ParameterizedAccess",
    "ReadBlockNumber",
    "ReadDataBlockAccess",
    "ReadRequest",
    "ReadResponse",
    "ReadResult",
    "SnApdu",
    "UnconfirmedWriteRequest",
    "VariableAccess",
    "VariableName",
    "WriteBlockNumber",
    "WriteDataBlockAccess",
    "WriteRequest",
    "WriteResponse",
    "WriteResult",
    "decode_sn",
    "encode_read_results",
    "encode_sn",
    "parameterized",
    "reassemble_read_blocks",
    "selective_access",
]

READ_REQUEST: Final = 0x05
WRITE_REQUEST: Final = 0x06
READ_RESPONSE: Final = 0x0C
WRITE_RESPONSE: Final = 0x0D
UNCONFIRMED_WRITE_REQUEST: Final = 0x16
INFORMATION_REPORT_REQUEST: Final = 0x18
SN_TAGS: Final = frozenset(
    {
        READ_REQUEST,
        WRITE_REQUEST,
        READ_RESPONSE,
        WRITE_RESPONSE,
        UNCONFIRMED_WRITE_REQUEST,
        INFORMATION_REPORT_REQUEST,
    }
)
"""The plaintext tags of the SN services (their glo-ciphered forms are in security.GLO_TAGS)."""

_VARIABLE_NAME, _PARAMETERIZED, _BLOCK_NUMBER, _READ_BLOCK, _WRITE_BLOCK = 2, 4, 5, 6, 7
_DATA, _ERROR, _DATA_BLOCK, _READ_BLOCK_NUMBER = 0, 1, 2, 3
_SUCCESS, _WRITE_BLOCK_NUMBER = 0, 2
_MAX_U16: Final = 0xFFFF


# ------------------------------------------------------------------------------ variable access specs


@dataclass(frozen=True, slots=True)
class VariableName:
    """variable-name: the short name of an attribute (or of a method, to invoke it by Write)."""

    name: int


@dataclass(frozen=True, slots=True)
class ParameterizedAccess:
    """parameterized-access: selective access on an attribute (selector 1 range, 2 entry) or a method
    invoked by Read (selector 0, ``parameters`` its argument)."""

    name: int
    selector: int
    parameters: Data


@dataclass(frozen=True, slots=True)
class BlockNumberAccess:
    """block-number-access: ask for the block after ``block_number`` of a long read response."""

    block_number: int


@dataclass(frozen=True, slots=True)
class ReadDataBlockAccess:
    """read-data-block-access: one block of a read request too long for one APDU."""

    last_block: bool
    block_number: int
    raw_data: bytes


@dataclass(frozen=True, slots=True)
class WriteDataBlockAccess:
    """write-data-block-access: marks a write request carrying one block of a long value."""

    last_block: bool
    block_number: int


VariableAccess: TypeAlias = (
    VariableName | ParameterizedAccess | BlockNumberAccess | ReadDataBlockAccess | WriteDataBlockAccess
)


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class DataBlockResult:
    """data-block-result: one block of a long read response. ``raw_data`` is a slice of the A-XDR
    encoding of the whole result list (see :func:`reassemble_read_blocks`)."""

    last_block: bool
    block_number: int
    raw_data: bytes


@dataclass(frozen=True, slots=True)
class ReadBlockNumber:
    """block-number in a ReadResponse: the server took block ``block_number`` of a long request."""

    block_number: int


@dataclass(frozen=True, slots=True)
class WriteBlockNumber:
    """block-number in a WriteResponse: the server took block ``block_number`` of a long write."""

    block_number: int


ReadResult: TypeAlias = Data | DataAccessResult | DataBlockResult | ReadBlockNumber
"""``DataAccessResult`` is the data-access-error CHOICE."""
WriteResult: TypeAlias = DataAccessResult | WriteBlockNumber
"""``DataAccessResult.SUCCESS`` is the success (NULL) CHOICE, any other member data-access-error."""


# ------------------------------------------------------------------------------------------------ APDUs


@dataclass(frozen=True, slots=True)
class ReadRequest:
    items: tuple[VariableAccess, ...]


@dataclass(frozen=True, slots=True)
class ReadResponse:
    """One result per item of the request, in order (SN has no invoke id: order is the pairing)."""

    results: tuple[ReadResult, ...]


@dataclass(frozen=True, slots=True)
class WriteRequest:
    items: tuple[VariableAccess, ...]
    values: tuple[Data, ...]


@dataclass(frozen=True, slots=True)
class WriteResponse:
    results: tuple[WriteResult, ...]


@dataclass(frozen=True, slots=True)
class UnconfirmedWriteRequest:
    items: tuple[VariableAccess, ...]
    values: tuple[Data, ...]


@dataclass(frozen=True, slots=True)
class InformationReportRequest:
    """What an SN meter pushes; ``current_time`` is the raw GeneralizedTime bytes, or None."""

    current_time: bytes | None
    items: tuple[VariableAccess, ...]
    values: tuple[Data, ...]


SnApdu: TypeAlias = (
    ReadRequest
    | ReadResponse
    | WriteRequest
    | WriteResponse
    | UnconfirmedWriteRequest
    | InformationReportRequest
)


@dataclass(frozen=True, slots=True)
class ObjectListEntry:
    """One row of the Association SN object_list (attribute 2): how an SN client learns the names.

    On the wire: structure {base_name long, class_id long-unsigned, version unsigned, logical_name
    octet-string}. ``long`` is signed, so base names from 0x8000 (the association's 0xFA00) travel as
    negative numbers; they are kept unsigned here.
    """

    base_name: int
    class_id: int
    version: int
    logical_name: Obis

    def to_data(self) -> Data:
        if not 0 <= self.base_name <= _MAX_U16:
            raise EncodeError(f"base name {self.base_name:#x} out of range")
        signed = self.base_name - 0x10000 if self.base_name >= 0x8000 else self.base_name
        return Data.structure(
            Data.int16(signed),
            Data.uint16(self.class_id),
            Data.uint8(self.version),
            Data.octet_string(self.logical_name.to_bytes()),
        )

    @classmethod
    def from_data(cls, data: Data) -> ObjectListEntry:
        fields = data.value
        if data.type is not DataType.STRUCTURE or not isinstance(fields, tuple) or len(fields) != 4:
            raise DecodeError("object_list entry: expected a structure of four", None)
        base, class_id, version, name = fields
        kinds = (
            (base, (DataType.LONG, DataType.LONG_UNSIGNED)),
            (class_id, (DataType.LONG_UNSIGNED,)),
            (version, (DataType.UNSIGNED,)),
            (name, (DataType.OCTET_STRING,)),
        )
        for value, allowed in kinds:
            if value.type not in allowed:
                raise DecodeError(f"object_list entry: unexpected {value.type.name.lower()}", None)
        raw = name.value
        if not isinstance(raw, bytes) or len(raw) != 6:
            raise DecodeError("object_list entry: logical name is not 6 bytes", None)
        return cls(_int(base) & _MAX_U16, _int(class_id), _int(version), Obis(*raw))


def _int(data: Data) -> int:
    if not isinstance(data.value, int) or isinstance(data.value, bool):
        raise DecodeError(f"expected an integer, got {data.value!r:.40}", None)
    return data.value


# ---------------------------------------------------------------------------------------- wire helpers


class _Reader:
    """A cursor over one APDU; every fixed-size read checks the bytes left."""

    __slots__ = ("buf", "pos", "tables")

    def __init__(self, buf: bytes, pos: int, tables: bool) -> None:
        self.buf = buf
        self.pos = pos
        self.tables = tables

    def take(self, n: int, what: str) -> bytes:
        pos = self.pos
        if pos + n > len(self.buf):
            raise DecodeError(f"truncated {what}: need {n} bytes, have {len(self.buf) - pos}", pos)
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def flag(self, what: str) -> bool:
        return self.u8(what) != 0  # A-XDR BOOLEAN: any non-zero byte is TRUE

    def octets(self, what: str) -> bytes:
        n, self.pos = decode_length(self.buf, self.pos)
        return self.take(n, what)

    def count(self, what: str) -> int:
        """A SEQUENCE OF length, refused when more elements are claimed than bytes remain."""
        n, self.pos = decode_length(self.buf, self.pos)
        if n > len(self.buf) - self.pos:
            raise DecodeError(
                f"{what} claims {n} elements, {len(self.buf) - self.pos} bytes remain", self.pos
            )
        return n

    def data(self) -> Data:
        value, self.pos = decode_data(self.buf, self.pos, tables=self.tables)
        return value


def _u16(value: object, what: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_U16:
        raise EncodeError(f"{what} must be an int 0..65535, got {value!r:.40}")
    return value.to_bytes(2, "big")


def _u8(value: object, what: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise EncodeError(f"{what} must be an int 0..255, got {value!r:.40}")
    return bytes((value,))


def _bool(value: object) -> bytes:
    if not isinstance(value, bool):
        raise EncodeError(f"last-block must be a bool, got {value!r:.40}")
    return b"\x01" if value else b"\x00"


def _octets(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise EncodeError(f"raw-data must be bytes, got {type(value).__name__}")
    return encode_length(len(value)) + value


def _data(value: object) -> bytes:
    if not isinstance(value, Data):
        raise EncodeError(f"expected Data, got {type(value).__name__}")
    return encode_data(value)


def _dar(r: _Reader) -> DataAccessResult:
    pos = r.pos
    code = r.u8("data-access-result")
    try:
        return DataAccessResult(code)
    except ValueError:
        raise DecodeError(f"unknown data-access-result {code}", pos) from None


def _encode_access(item: object) -> bytes:
    if isinstance(item, VariableName):
        return bytes((_VARIABLE_NAME,)) + _u16(item.name, "short name")
    if isinstance(item, ParameterizedAccess):
        return (
            bytes((_PARAMETERIZED,))
            + _u16(item.name, "short name")
            + _u8(item.selector, "selector")
            + _data(item.parameters)
        )
    if isinstance(item, BlockNumberAccess):
        return bytes((_BLOCK_NUMBER,)) + _u16(item.block_number, "block number")
    if isinstance(item, ReadDataBlockAccess):
        return (
            bytes((_READ_BLOCK,))
            + _bool(item.last_block)
            + _u16(item.block_number, "block number")
            + _octets(item.raw_data)
        )
    if isinstance(item, WriteDataBlockAccess):
        return bytes((_WRITE_BLOCK,)) + _bool(item.last_block) + _u16(item.block_number, "block number")
    raise EncodeError(f"not a variable-access-specification: {item!r:.40}")


def _decode_access(r: _Reader) -> VariableAccess:
    pos = r.pos
    choice = r.u8("variable-access-specification")
    if choice == _VARIABLE_NAME:
        return VariableName(r.u16("variable name"))
    if choice == _PARAMETERIZED:
        return ParameterizedAccess(r.u16("variable name"), r.u8("selector"), r.data())
    if choice == _BLOCK_NUMBER:
        return BlockNumberAccess(r.u16("block number"))
    if choice == _READ_BLOCK:
        return ReadDataBlockAccess(r.flag("last-block"), r.u16("block number"), r.octets("raw-data"))
    if choice == _WRITE_BLOCK:
        return WriteDataBlockAccess(r.flag("last-block"), r.u16("block number"))
    raise DecodeError(f"unknown variable-access-specification CHOICE {choice}", pos)


def _encode_read_result(result: object) -> bytes:
    if isinstance(result, Data):
        return bytes((_DATA,)) + encode_data(result)
    if isinstance(result, DataAccessResult):
        return bytes((_ERROR, result))
    if isinstance(result, DataBlockResult):
        return (
            bytes((_DATA_BLOCK,))
            + _bool(result.last_block)
            + _u16(result.block_number, "block number")
            + _octets(result.raw_data)
        )
    if isinstance(result, ReadBlockNumber):
        return bytes((_READ_BLOCK_NUMBER,)) + _u16(result.block_number, "block number")
    raise EncodeError(f"not a read result: {result!r:.40}")


def _decode_read_result(r: _Reader) -> ReadResult:
    pos = r.pos
    choice = r.u8("read result")
    if choice == _DATA:
        return r.data()
    if choice == _ERROR:
        return _dar(r)
    if choice == _DATA_BLOCK:
        return DataBlockResult(r.flag("last-block"), r.u16("block number"), r.octets("raw-data"))
    if choice == _READ_BLOCK_NUMBER:
        return ReadBlockNumber(r.u16("block number"))
    raise DecodeError(f"unknown read result CHOICE {choice}", pos)


def _encode_write_result(result: object) -> bytes:
    if result is DataAccessResult.SUCCESS:
        return bytes((_SUCCESS,))
    if isinstance(result, DataAccessResult):
        return bytes((_ERROR, result))
    if isinstance(result, WriteBlockNumber):
        return bytes((_WRITE_BLOCK_NUMBER,)) + _u16(result.block_number, "block number")
    raise EncodeError(f"not a write result: {result!r:.40}")


def _decode_write_result(r: _Reader) -> WriteResult:
    pos = r.pos
    choice = r.u8("write result")
    if choice == _SUCCESS:
        return DataAccessResult.SUCCESS
    if choice == _ERROR:
        return _dar(r)
    if choice == _WRITE_BLOCK_NUMBER:
        return WriteBlockNumber(r.u16("block number"))
    raise DecodeError(f"unknown write result CHOICE {choice}", pos)


def _encode_list(items: object, encode: Callable[[object], bytes], what: str) -> bytes:
    if not isinstance(items, tuple):
        raise EncodeError(f"{what} must be a tuple, got {type(items).__name__}")
    return encode_length(len(items)) + b"".join(map(encode, items))


# ----------------------------------------------------------------------------------------- APDU codecs


def _items_and_values(apdu: WriteRequest | UnconfirmedWriteRequest | InformationReportRequest) -> bytes:
    return _encode_list(apdu.items, _encode_access, "variable list") + _encode_list(
        apdu.values, _data, "list-of-data"
    )


def _encode_report(apdu: InformationReportRequest) -> bytes:
    time = b"\x00" if apdu.current_time is None else b"\x01" + _octets(apdu.current_time)
    return time + _items_and_values(apdu)


def _accesses(r: _Reader) -> tuple[VariableAccess, ...]:
    return tuple([_decode_access(r) for _ in range(r.count("variable list"))])


def _values(r: _Reader) -> tuple[Data, ...]:
    return tuple([r.data() for _ in range(r.count("list-of-data"))])


def _decode_report(r: _Reader) -> InformationReportRequest:
    pos = r.pos
    present = r.u8("current-time presence")
    if present > 1:
        raise DecodeError(f"current-time: presence flag 0x{present:02X}", pos)
    time = r.octets("current-time") if present else None
    return InformationReportRequest(time, _accesses(r), _values(r))


_DECODERS: Final[MappingProxyType[int, Callable[[_Reader], SnApdu]]] = MappingProxyType(
    {
        READ_REQUEST: lambda r: ReadRequest(_accesses(r)),
        READ_RESPONSE: lambda r: ReadResponse(
            tuple([_decode_read_result(r) for _ in range(r.count("results"))])
        ),
        WRITE_REQUEST: lambda r: WriteRequest(_accesses(r), _values(r)),
        WRITE_RESPONSE: lambda r: WriteResponse(
            tuple([_decode_write_result(r) for _ in range(r.count("results"))])
        ),
        UNCONFIRMED_WRITE_REQUEST: lambda r: UnconfirmedWriteRequest(_accesses(r), _values(r)),
        INFORMATION_REPORT_REQUEST: _decode_report,
    }
)


def encode_sn(apdu: SnApdu) -> bytes:
    """The A-XDR bytes of ``apdu``; wrong types or out-of-range numbers raise EncodeError."""
    if isinstance(apdu, ReadRequest):
        return bytes((READ_REQUEST,)) + _encode_list(apdu.items, _encode_access, "variable list")
    if isinstance(apdu, ReadResponse):
        return bytes((READ_RESPONSE,)) + _encode_list(apdu.results, _encode_read_result, "results")
    if isinstance(apdu, WriteRequest):
        return bytes((WRITE_REQUEST,)) + _items_and_values(apdu)
    if isinstance(apdu, WriteResponse):
        return bytes((WRITE_RESPONSE,)) + _encode_list(apdu.results, _encode_write_result, "results")
    if isinstance(apdu, UnconfirmedWriteRequest):
        return bytes((UNCONFIRMED_WRITE_REQUEST,)) + _items_and_values(apdu)
    if isinstance(apdu, InformationReportRequest):
        return bytes((INFORMATION_REPORT_REQUEST,)) + _encode_report(apdu)
    raise EncodeError(f"not an SN service APDU: {type(apdu).__name__}")


def decode_sn(raw: bytes | bytearray | memoryview, *, tables: bool = False) -> SnApdu:
    """Decode one unciphered SN service APDU that fills ``raw`` exactly.

    ``tables``: a uniform array at the top of a value (a profile buffer) comes back as an
    :class:`~openami.protocols.dlms.axdr.Table`.
    """
    buf = bytes(raw)
    if not buf:
        raise DecodeError("empty APDU", 0)
    decoder = _DECODERS.get(buf[0])
    if decoder is None:
        raise DecodeError(f"not an SN service tag: 0x{buf[0]:02X}", 0)
    r = _Reader(buf, 1, tables)
    apdu = decoder(r)
    if r.pos != len(buf):
        raise DecodeError(f"{len(buf) - r.pos} trailing bytes after APDU", r.pos)
    return apdu


def encode_read_results(results: Sequence[Data | DataAccessResult]) -> bytes:
    """The result list of a ReadResponse without its tag: what data-block-result blocks carry."""
    return _encode_list(tuple(results), _encode_read_result, "results")


def reassemble_read_blocks(
    blocks: Sequence[DataBlockResult], *, expected: int = 1, tables: bool = False
) -> tuple[Data | DataAccessResult, ...]:
    """Join the blocks of a long read response into its ``expected`` results.

    The blocks must number 1, 2, ... with only the last flagged ``last_block``. What the blocks carry is
    read as the encoded result list (count, then data / data-access-error per item), the form a read of
    several names needs. Some meters send just the encoded Data of a single-item read, as GET does; for a
    single item that form is accepted when the list form does not decode.
    """
    if not blocks:
        raise DecodeError("no data blocks", None)
    parts: list[bytes] = []
    for index, block in enumerate(blocks, start=1):
        if block.block_number != index:
            raise DecodeError(f"data block {block.block_number} where {index} was expected", None)
        if block.last_block != (index == len(blocks)):
            raise DecodeError(f"data block {index} has last-block={block.last_block}", None)
        parts.append(block.raw_data)
    whole = b"".join(parts)
    try:
        return _block_results(whole, expected, tables)
    except DecodeError:
        if expected != 1:
            raise
    return (decode_data_all(whole, tables=tables),)


def _block_results(whole: bytes, expected: int, tables: bool) -> tuple[Data | DataAccessResult, ...]:
    r = _Reader(whole, 0, tables)
    results: list[Data | DataAccessResult] = []
    for _ in range(r.count("results")):
        result = _decode_read_result(r)
        if not isinstance(result, Data | DataAccessResult):
            raise DecodeError("a data block inside data blocks", r.pos)
        results.append(result)
    if r.pos != len(whole):
        raise DecodeError(f"{len(whole) - r.pos} trailing bytes after the results", r.pos)
    if len(results) != expected:
        raise DecodeError(f"data blocks hold {len(results)} results, {expected} expected", None)
    return tuple(results)


# ------------------------------------------------------------------------------------ selective access

# GetRequestNormal of this attribute, encoded: C0 01 invoke class(2) obis(6) attribute, then the access:
# presence flag, selector and the parameters. Going through the public LN encoder keeps one definition of
# the descriptor shapes (xdlms owns them).
_PROBE: Final = CosemAttribute(0, Obis(0, 0, 0, 0, 0, 0), 0)
_SELECTOR_AT: Final = 13


def parameterized(name: int, access: SelectiveAccess) -> ParameterizedAccess:
    """Selective access on the attribute with short name ``name``, as SN parameterized access."""
    raw = encode_xdlms(GetRequestNormal(0, _PROBE, access))
    return ParameterizedAccess(name, raw[_SELECTOR_AT], decode_data_all(raw[_SELECTOR_AT + 1 :]))


def selective_access(item: ParameterizedAccess) -> SelectiveAccess:
    """The LN descriptor a parameterized access stands for: RangeDescriptor (1), EntryDescriptor (2) or
    RawAccess. A malformed range or entry is a DecodeError."""
    apdu = decode_xdlms(encode_xdlms(GetRequestNormal(0, _PROBE, RawAccess(item.selector, item.parameters))))
    if not isinstance(apdu, GetRequestNormal) or apdu.access is None:  # cannot happen: built with one
        raise DecodeError("parameterized access lost its selector", None)
    return apdu.access
