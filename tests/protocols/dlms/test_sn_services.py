"""Short-name services and SN associations: example bytes, round trips, fuzz, in-memory associations.

The example bytes follow the public ASN.1 of the SN APDUs (IEC 62056-5-3 / Green Book): a Read of the
Association SN object_list is ``05 01 02 FA 08`` (one variable-name, short name 0xFA08), the form quoted in
public DLMS tutorials; the rest are built field by field from the same definitions.
"""

from __future__ import annotations

import time
from itertools import count
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.acse import ConfirmedServiceError, Mechanism, encode_confirmed_service_error
from openami.protocols.dlms.association import (
    ASSOCIATION_SN_BASE_NAME,
    MANAGEMENT_CLIENT,
    MANAGEMENT_SERVER,
    PUBLIC_CLIENT,
    SN_CLIENT_CONFORMANCE,
    AssociationError,
    AuthenticationFailed,
    ClientAssociation,
    NextRequest,
    Reply,
    ServerAssociation,
    SnRequest,
    SnResult,
)
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
from openami.protocols.dlms.security import SecurityControl
from openami.protocols.dlms.sn_services import (
    BlockNumberAccess,
    DataBlockResult,
    InformationReportRequest,
    ObjectListEntry,
    ParameterizedAccess,
    ReadBlockNumber,
    ReadDataBlockAccess,
    ReadRequest,
    ReadResponse,
    UnconfirmedWriteRequest,
    VariableName,
    WriteBlockNumber,
    WriteDataBlockAccess,
    WriteRequest,
    WriteResponse,
    decode_sn,
    encode_read_results,
    encode_sn,
    parameterized,
    reassemble_read_blocks,
    selective_access,
)
from openami.protocols.dlms.xdlms import (
    CaptureObject,
    CosemAttribute,
    DataAccessResult,
    EntryDescriptor,
    ExceptionResponse,
    GetRequestNormal,
    RangeDescriptor,
    RawAccess,
)
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S, assert_value_or_error, truncated_and_mutated


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


START = encode_datetime(CosemDateTime(CosemDate(2024, 1, 1, None), CosemTime(0, 0, 0, None), None, 0))
END = encode_datetime(CosemDateTime(CosemDate(2024, 1, 2, None), CosemTime(0, 0, 0, None), None, 0))
CLOCK_COLUMN = CaptureObject(8, Obis(0, 0, 1, 0, 0, 255), 2, 0)
CLOCK_TIME = CosemAttribute(8, Obis(0, 0, 1, 0, 0, 255), 2)
RANGE = RangeDescriptor(CLOCK_COLUMN, Data.octet_string(START), Data.octet_string(END))
# The range descriptor exactly as LN carries it after the selector (see test_xdlms): SN carries the same.
RANGE_BYTES = (
    "02 04 02 04 12 00 08 09 06 00 00 01 00 00 FF 0F 02 12 00 00 09 0C"
    + START.hex()
    + "09 0C"
    + END.hex()
    + "01 00"
)


# --------------------------------------------------------------------------------------- example bytes


@pytest.mark.parametrize(
    ("raw", "apdu"),
    [
        ("05 01 02 FA 08", ReadRequest((VariableName(0xFA08),))),
        ("05 02 02 12 08 02 12 10", ReadRequest((VariableName(0x1208), VariableName(0x1210)))),
        ("0C 01 00 06 00 00 30 39", ReadResponse((Data.uint32(12345),))),
        ("0C 01 01 04", ReadResponse((DataAccessResult.OBJECT_UNDEFINED,))),
        (
            "0C 02 00 06 00 00 30 39 00 02 02 0F FD 16 1E",
            ReadResponse((Data.uint32(12345), Data.structure(Data.int8(-3), Data.enum(30)))),
        ),
        ("0C 01 02 00 00 01 03 AA BB CC", ReadResponse((DataBlockResult(False, 1, _hex("AABBCC")),))),
        ("05 01 05 00 01", ReadRequest((BlockNumberAccess(1),))),
        ("0C 01 03 00 02", ReadResponse((ReadBlockNumber(2),))),
        ("05 01 06 01 00 02 02 0F 00", ReadRequest((ReadDataBlockAccess(True, 2, _hex("0F00")),))),
        (
            "06 01 02 11 08 01 09 0C" + START.hex(),
            WriteRequest((VariableName(0x1108),), (Data.octet_string(START),)),
        ),
        (
            "06 01 07 00 00 03 01 09 00",
            WriteRequest((WriteDataBlockAccess(False, 3),), (Data.octet_string(b""),)),
        ),
        ("0D 01 00", WriteResponse((DataAccessResult.SUCCESS,))),
        ("0D 02 01 03 02 00 04", WriteResponse((DataAccessResult.READ_WRITE_DENIED, WriteBlockNumber(4)))),
        ("16 01 02 17 20 01 0F 00", UnconfirmedWriteRequest((VariableName(0x1720),), (Data.int8(0),))),
        (
            "18 00 01 02 12 08 01 06 00 00 30 39",
            InformationReportRequest(None, (VariableName(0x1208),), (Data.uint32(12345),)),
        ),
        (
            "18 01 0C" + START.hex() + "01 02 12 08 01 06 00 00 30 39",
            InformationReportRequest(START, (VariableName(0x1208),), (Data.uint32(12345),)),
        ),
    ],
)
def test_example_bytes(raw: str, apdu: Any) -> None:
    assert encode_sn(apdu) == _hex(raw)
    assert decode_sn(_hex(raw)) == apdu


def test_profile_read_by_range_is_parameterized_access_with_selector_1() -> None:
    raw = _hex("05 01 04 16 08 01" + RANGE_BYTES)
    item = parameterized(0x1608, RANGE)
    assert item == ParameterizedAccess(0x1608, 1, item.parameters)
    assert encode_sn(ReadRequest((item,))) == raw
    decoded = decode_sn(raw)
    assert isinstance(decoded, ReadRequest)
    assert isinstance(decoded.items[0], ParameterizedAccess)
    assert selective_access(decoded.items[0]) == RANGE


def test_selective_access_translations() -> None:
    entry = parameterized(0x1608, EntryDescriptor(1, 10))
    assert entry.selector == 2
    assert encode_data(entry.parameters) == _hex("02 04 06 00 00 00 01 06 00 00 00 0A 12 00 01 12 00 00")
    assert selective_access(entry) == EntryDescriptor(1, 10)
    raw = ParameterizedAccess(0x1608, 9, Data.uint8(5))
    assert selective_access(raw) == RawAccess(9, Data.uint8(5))
    assert parameterized(0x1608, RawAccess(9, Data.uint8(5))) == raw
    with pytest.raises(DecodeError):
        selective_access(ParameterizedAccess(0x1608, 1, Data.uint8(5)))  # not a range descriptor


def test_method_invocation_by_read_is_selector_0() -> None:
    raw = _hex("05 01 04 17 20 00 0F 00")
    assert decode_sn(raw) == ReadRequest((ParameterizedAccess(0x1720, 0, Data.int8(0)),))


def test_object_list_entry_keeps_base_names_unsigned() -> None:
    entry = ObjectListEntry(ASSOCIATION_SN_BASE_NAME, 12, 4, Obis(0, 0, 40, 0, 0, 255))
    data = entry.to_data()
    assert encode_data(data) == _hex("02 04 10 FA 00 12 00 0C 11 04 09 06 00 00 28 00 00 FF")
    assert data.value[0] == Data.int16(-0x600)  # type: ignore[index]
    assert ObjectListEntry.from_data(data) == entry
    assert (
        ObjectListEntry.from_data(ObjectListEntry(0x1100, 8, 0, Obis(0, 0, 1, 0, 0, 255)).to_data()).base_name
        == 0x1100
    )
    with pytest.raises(DecodeError):
        ObjectListEntry.from_data(Data.structure(Data.int16(1), Data.uint16(1), Data.uint8(0)))
    with pytest.raises(DecodeError):
        ObjectListEntry.from_data(
            Data.structure(Data.int16(1), Data.uint16(1), Data.uint8(0), Data.octet_string(b"\x00"))
        )
    with pytest.raises(EncodeError):
        ObjectListEntry(0x10000, 1, 0, Obis(0, 0, 1, 0, 0, 255)).to_data()


# ------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("C0 01", "not an SN service"),
        ("05 01 03 FA 08", "CHOICE 3"),
        ("05 02 02 FA 08", "truncated"),
        ("05 05 02 FA", "claims 5 elements"),
        ("05 01 02 FA 08 00", "trailing"),
        ("0C 01 04 00", "CHOICE 4"),
        ("0C 01 01 05", "data-access-result 5"),
        ("0D 01 03", "CHOICE 3"),
        ("18 02 00 00", "presence flag"),
        ("05 01 06 01 00 01 05 AA", "truncated raw-data"),
    ],
)
def test_refusals(raw: str, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode_sn(_hex(raw))


def test_encode_refusals() -> None:
    bad: list[Any] = [
        ReadRequest((VariableName(0x10000),)),
        ReadRequest((VariableName(-1),)),
        ReadRequest([VariableName(1)]),  # type: ignore[arg-type]
        ReadRequest(("x",)),  # type: ignore[arg-type]
        ReadRequest((ParameterizedAccess(1, 256, Data.null()),)),
        ReadRequest((ReadDataBlockAccess(1, 1, b""),)),  # type: ignore[arg-type]
        ReadResponse((DataBlockResult(True, 1, "x"),)),  # type: ignore[arg-type]
        ReadResponse((42,)),  # type: ignore[arg-type]
        WriteRequest((VariableName(1),), (b"x",)),  # type: ignore[arg-type]
        WriteResponse((Data.null(),)),  # type: ignore[arg-type]
        "not an apdu",
    ]
    for apdu in bad:
        with pytest.raises(EncodeError):
            encode_sn(apdu)


# ------------------------------------------------------------------------------------------ data blocks


def test_read_blocks_reassemble_the_result_list() -> None:
    whole = encode_read_results([Data.uint32(7), DataAccessResult.OBJECT_UNDEFINED])
    blocks = [DataBlockResult(False, 1, whole[:3]), DataBlockResult(True, 2, whole[3:])]
    assert reassemble_read_blocks(blocks, expected=2) == (Data.uint32(7), DataAccessResult.OBJECT_UNDEFINED)
    # Some meters block just the encoded Data of a one-item read, as GET does.
    assert reassemble_read_blocks([DataBlockResult(True, 1, encode_data(Data.array()))]) == (Data.array(),)


@pytest.mark.parametrize(
    ("blocks", "why"),
    [
        ([], "no data blocks"),
        ([DataBlockResult(True, 2, b"\x01\x00\x00")], "where 1"),
        ([DataBlockResult(False, 1, b"\x01\x00\x00")], "last-block"),
        ([DataBlockResult(True, 1, b"\x01\x00\x00"), DataBlockResult(True, 2, b"")], "last-block"),
    ],
)
def test_read_block_refusals(blocks: list[DataBlockResult], why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        reassemble_read_blocks(blocks)


def test_read_blocks_with_the_wrong_number_of_results() -> None:
    whole = encode_read_results([Data.uint8(1)])
    with pytest.raises(DecodeError, match="2 expected"):
        reassemble_read_blocks([DataBlockResult(True, 1, whole)], expected=2)


# ------------------------------------------------------------------------------ round trips and fuzz

_leaf = st.one_of(
    st.builds(Data.null),
    st.booleans().map(Data.boolean),
    st.integers(-(2**31), 2**31 - 1).map(Data.int32),
    st.integers(0, 0xFFFF).map(Data.uint16),
    st.binary(max_size=20).map(Data.octet_string),
)
_data = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: Data.array(*xs))
        | st.lists(inner, max_size=4).map(lambda xs: Data.structure(*xs))
    ),
    max_leaves=10,
)
_u16 = st.integers(0, 0xFFFF)
_raw = st.binary(max_size=40)
_access = st.one_of(
    st.builds(VariableName, _u16),
    st.builds(ParameterizedAccess, _u16, st.integers(0, 255), _data),
    st.builds(BlockNumberAccess, _u16),
    st.builds(ReadDataBlockAccess, st.booleans(), _u16, _raw),
    st.builds(WriteDataBlockAccess, st.booleans(), _u16),
)
_items = st.lists(_access, max_size=4).map(tuple)
_values = st.lists(_data, max_size=4).map(tuple)
_dar = st.sampled_from(DataAccessResult)
_APDUS = st.one_of(
    st.builds(ReadRequest, _items),
    st.builds(
        ReadResponse,
        st.lists(
            _data
            | _dar
            | st.builds(DataBlockResult, st.booleans(), _u16, _raw)
            | st.builds(ReadBlockNumber, _u16),
            max_size=4,
        ).map(tuple),
    ),
    st.builds(WriteRequest, _items, _values),
    st.builds(WriteResponse, st.lists(_dar | st.builds(WriteBlockNumber, _u16), max_size=4).map(tuple)),
    st.builds(UnconfirmedWriteRequest, _items, _values),
    st.builds(InformationReportRequest, st.none() | st.binary(max_size=12), _items, _values),
)


@given(_APDUS)
def test_round_trip(apdu: Any) -> None:
    raw = encode_sn(apdu)
    assert decode_sn(raw) == apdu
    assert encode_sn(decode_sn(raw)) == raw


def _only_decode_error(raw: bytes) -> None:
    assert_value_or_error(decode_sn, DecodeError, raw)


@given(st.sampled_from([0x05, 0x06, 0x0C, 0x0D, 0x16, 0x18]), st.binary(max_size=120))
def test_fuzz_random_bodies(tag: int, body: bytes) -> None:
    _only_decode_error(bytes((tag,)) + body)


@given(_APDUS, st.data())
def test_fuzz_truncated_and_mutated(apdu: Any, data: st.DataObject) -> None:
    for raw in truncated_and_mutated(encode_sn(apdu), data):
        _only_decode_error(raw)


def test_huge_claimed_counts_are_refused_fast() -> None:
    started = time.perf_counter()
    for tag in (0x05, 0x0C, 0x0D):
        with pytest.raises(DecodeError):
            decode_sn(bytes((tag,)) + _hex("84 FF FF FF FF") + b"\x02" * 64)
    assert time.perf_counter() - started < FUZZ_TIME_LIMIT_S


# ---------------------------------------------------------------------------- associations with SN

EK = bytes(range(16))
AK = bytes(range(16, 32))
CLIENT_TITLE = b"OPENAMI1"
SERVER_TITLE = b"OAM\x00\x00\x00\x00\x01"
PASSWORD = b"12345678"
SC = SecurityControl(suite=0, authenticated=True, encrypted=True)
CHALLENGE = b"S" * 16


def sn_server(
    client_sap: int = MANAGEMENT_CLIENT, *, short_names: bool = True, max_pdu: int = 0xFFFF
) -> ServerAssociation:
    return ServerAssociation(
        client_sap,
        system_title=SERVER_TITLE,
        password=PASSWORD,
        encryption_key=EK,
        authentication_key=AK,
        invocation_counter=count(100),
        max_pdu=max_pdu,
        short_names=short_names,
    )


def sn_client(
    *, password: bytes = PASSWORD, security: SecurityControl | None = None, max_pdu: int = 0xFFFF
) -> ClientAssociation:
    return ClientAssociation(
        MANAGEMENT_CLIENT,
        MANAGEMENT_SERVER,
        mechanism=Mechanism.LOW,
        password=password,
        system_title=CLIENT_TITLE if security else None,
        encryption_key=EK if security else None,
        authentication_key=AK if security else None,
        security=security,
        max_pdu=max_pdu,
        short_names=True,
    )


def associate(client: ClientAssociation, srv: ServerAssociation) -> None:
    assert client.handle_aare(srv.handle_aarq(client.aarq(), CHALLENGE)) is None
    assert client.associated
    assert srv.associated


def exchange(
    client: ClientAssociation, srv: ServerAssociation, request: ReadRequest | WriteRequest, answer: Any
) -> tuple[SnResult, int]:
    """The outcome of one request answered with ``answer``, and how many further blocks it took."""
    received = srv.receive_sn(client.request_sn(request))
    assert isinstance(received, SnRequest)
    assert received.apdu == request
    outcome = client.handle_sn(srv.respond_sn(answer))
    blocks = 0
    while isinstance(outcome, NextRequest):
        blocks += 1
        reply = srv.receive_sn(outcome.raw)
        assert isinstance(reply, Reply)
        outcome = client.handle_sn(reply.raw)
    return outcome, blocks


def test_lls_sn_association_negotiates_sn_services_and_names_the_association() -> None:
    client, srv = sn_client(), sn_server()
    associate(client, srv)
    assert client.negotiated is not None
    assert client.negotiated.vaa_name == ASSOCIATION_SN_BASE_NAME
    assert client.negotiated.negotiated_conformance == SN_CLIENT_CONFORMANCE
    read = ReadRequest((VariableName(0x1208),))
    answer = ReadResponse((Data.uint32(5),))
    assert exchange(client, srv, read, answer) == (SnResult(answer), 0)
    write = WriteRequest((VariableName(0x1108),), (Data.octet_string(START),))
    outcome, _ = exchange(client, srv, write, WriteResponse((DataAccessResult.SUCCESS,)))
    assert outcome.apdu == WriteResponse((DataAccessResult.SUCCESS,))


def test_public_client_lowest_security_on_sn() -> None:
    client = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER, short_names=True)
    associate(client, sn_server(PUBLIC_CLIENT))


def test_wrong_password_is_an_authentication_failure() -> None:
    client = sn_client(password=b"wrong")
    with pytest.raises(AuthenticationFailed):
        client.handle_aare(sn_server().handle_aarq(client.aarq(), CHALLENGE))


def test_contexts_must_match_the_referencing() -> None:
    ln_server = sn_server(short_names=False)
    client = sn_client()
    with pytest.raises(AssociationError, match="rejected"):
        client.handle_aare(ln_server.handle_aarq(client.aarq(), CHALLENGE))
    ln_client = ClientAssociation(
        MANAGEMENT_CLIENT, MANAGEMENT_SERVER, mechanism=Mechanism.LOW, password=PASSWORD
    )
    with pytest.raises(AssociationError, match="rejected"):
        ln_client.handle_aare(sn_server().handle_aarq(ln_client.aarq(), CHALLENGE))


def test_hls_is_refused_with_short_names() -> None:
    with pytest.raises(ValueError, match="short-name"):
        ClientAssociation(
            MANAGEMENT_CLIENT,
            MANAGEMENT_SERVER,
            mechanism=Mechanism.HIGH_GMAC,
            system_title=CLIENT_TITLE,
            encryption_key=EK,
            authentication_key=AK,
            short_names=True,
        )
    hls = ClientAssociation(
        MANAGEMENT_CLIENT,
        MANAGEMENT_SERVER,
        mechanism=Mechanism.HIGH_GMAC,
        system_title=CLIENT_TITLE,
        encryption_key=EK,
        authentication_key=AK,
    )
    aarq = hls.aarq(b"C" * 16).replace(bytes((0x05, 0x08, 0x01, 0x01)), bytes((0x05, 0x08, 0x01, 0x02)))
    aare = sn_server().handle_aarq(aarq, CHALLENGE)  # the same AARQ with the SN context
    with pytest.raises(AssociationError, match="rejected"):
        hls.handle_aare(aare)


def test_ciphered_sn_uses_glo_read_tags() -> None:
    client, srv = sn_client(security=SC), sn_server()
    associate(client, srv)
    raw = client.request_sn(ReadRequest((VariableName(0x1208),)))
    assert raw[0] == 0x25  # glo-read-request
    received = srv.receive_sn(raw)
    assert isinstance(received, SnRequest)
    response = srv.respond_sn(ReadResponse((Data.uint32(9),)))
    assert response[0] == 0x2C  # glo-read-response
    assert client.handle_sn(response) == SnResult(ReadResponse((Data.uint32(9),)))
    # A plain answer on a ciphered association is refused before decoding.
    with pytest.raises(Exception, match="requires ciphering"):
        client.handle_sn(encode_sn(ReadResponse((Data.uint32(9),))))


@pytest.mark.parametrize("security", [None, SC])
def test_long_read_goes_out_in_data_blocks(security: SecurityControl | None) -> None:
    client, srv = sn_client(security=security, max_pdu=64), sn_server()
    associate(client, srv)
    big = Data.array(*(Data.uint32(i) for i in range(60)))
    read = ReadRequest((VariableName(0x1610), VariableName(0x1618)))
    answer = ReadResponse((big, DataAccessResult.OBJECT_UNDEFINED))
    outcome, blocks = exchange(client, srv, read, answer)
    assert outcome == SnResult(answer)
    assert blocks >= 4


def test_long_read_blocks_as_tables() -> None:
    client, srv = sn_client(max_pdu=64), sn_server()
    associate(client, srv)
    rows = Data.array(*(Data.structure(Data.uint32(i), Data.uint8(0)) for i in range(20)))
    srv.receive_sn(client.request_sn(ReadRequest((VariableName(0x1608),))))
    outcome = client.handle_sn(srv.respond_sn(ReadResponse((rows,))), tables=True)
    while isinstance(outcome, NextRequest):
        reply = srv.receive_sn(outcome.raw)
        assert isinstance(reply, Reply)
        outcome = client.handle_sn(reply.raw, tables=True)
    assert isinstance(outcome.apdu, ReadResponse)
    (value,) = outcome.apdu.results
    assert isinstance(value, Data)
    assert value.type == DataType.ARRAY
    assert value.to_python() == rows.to_python()


def test_next_block_refusals() -> None:
    client, srv = sn_client(), sn_server()
    associate(client, srv)
    reply = srv.receive_sn(client.request_sn(ReadRequest((BlockNumberAccess(1),))))
    assert isinstance(reply, Reply)
    assert client.handle_sn(reply.raw) == SnResult(ReadResponse((DataAccessResult.NO_LONG_GET_IN_PROGRESS,)))
    small = sn_client(max_pdu=64)
    srv2 = sn_server()
    associate(small, srv2)
    srv2.receive_sn(small.request_sn(ReadRequest((VariableName(0x1608),))))
    srv2.respond_sn(ReadResponse((Data.octet_string(bytes(200)),)))
    reply = srv2.receive_sn(small.request_sn(ReadRequest((BlockNumberAccess(7),))))
    assert isinstance(reply, Reply)
    assert small.handle_sn(reply.raw) == SnResult(ReadResponse((DataAccessResult.DATA_BLOCK_NUMBER_INVALID,)))


def test_services_must_match_the_referencing() -> None:
    client, srv = sn_client(), sn_server()
    associate(client, srv)
    with pytest.raises(AssociationError, match="request_sn"):
        client.request(GetRequestNormal(1, CLOCK_TIME))
    ln = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER)
    ln_srv = sn_server(PUBLIC_CLIENT, short_names=False)
    ln.handle_aare(ln_srv.handle_aarq(ln.aarq(), CHALLENGE))
    with pytest.raises(AssociationError, match="use request"):
        ln.request_sn(ReadRequest((VariableName(1),)))
    with pytest.raises(AssociationError, match="use handle"):
        ln.handle_sn(b"\x0c\x00")
    # An LN server does not take SN services.
    reply = ln_srv.receive_sn(encode_sn(ReadRequest((VariableName(1),))))
    assert isinstance(reply, Reply)
    assert reply.raw[0] == 0xD8


def test_server_answers_what_it_cannot_take() -> None:
    client, srv = sn_client(), sn_server()
    associate(client, srv)
    for raw in (_hex("05 01 09"), encode_sn(ReadResponse((Data.null(),)))):
        reply = srv.receive_sn(raw)
        assert isinstance(reply, Reply)
        outcome = client.handle_sn(reply.raw)
        assert isinstance(outcome, SnResult)
        assert isinstance(outcome.apdu, ExceptionResponse)
    unconfirmed = UnconfirmedWriteRequest((VariableName(0x1108),), (Data.null(),))
    received = srv.receive_sn(client.request_sn(unconfirmed))
    assert isinstance(received, SnRequest)
    assert received.apdu == unconfirmed


def test_confirmed_service_error_is_passed_on() -> None:
    client, srv = sn_client(), sn_server()
    associate(client, srv)
    client.request_sn(ReadRequest((VariableName(0x1208),)))
    error = ConfirmedServiceError(5, 3, 2)
    assert client.handle_sn(encode_confirmed_service_error(error)) == SnResult(error)
