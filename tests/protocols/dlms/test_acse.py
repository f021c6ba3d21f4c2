"""ACSE (AARQ/AARE/RLRQ/RLRE) and the xDLMS initiate PDUs: published example bytes, round trips, fuzz."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.acse import (
    Aare,
    Aarq,
    AcseServiceUserDiagnostic,
    ApplicationContext,
    AssociationResult,
    ConfirmedServiceError,
    Conformance,
    DiagnosticSource,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
    ReleaseRequestReason,
    ReleaseResponseReason,
    Rlre,
    Rlrq,
    decode_aare,
    decode_aarq,
    decode_confirmed_service_error,
    decode_initiate_request,
    decode_initiate_response,
    decode_rlre,
    decode_rlrq,
    decode_user_information,
    encode_aare,
    encode_aarq,
    encode_confirmed_service_error,
    encode_initiate_request,
    encode_initiate_response,
    encode_rlre,
    encode_rlrq,
)
from openami.protocols.dlms.errors import DecodeError, EncodeError

# The widely published LN, no-security association example ("DLMS in a nutshell" style walkthroughs).
AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
AARE = bytes.fromhex("6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007")

LN_CONFORMANCE = (
    Conformance.PRIORITY_MGMT_SUPPORTED
    | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | Conformance.BLOCK_TRANSFER_WITH_ACTION
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.EVENT_NOTIFICATION
    | Conformance.ACTION
)


def test_conformance_bits_are_the_wire_bytes() -> None:
    assert int(LN_CONFORMANCE) == 0x007E1F
    assert int(Conformance.GENERAL_PROTECTION) == 0x400000
    assert int(Conformance.ACTION) == 0x000001


def test_public_aarq_example() -> None:
    aarq = decode_aarq(AARQ)
    assert aarq == Aarq(ApplicationContext.LOGICAL_NAME, user_information=AARQ[-14:])
    assert encode_aarq(aarq) == AARQ
    initiate = decode_user_information(aarq.user_information or b"")
    assert initiate == InitiateRequest(LN_CONFORMANCE, 1200)
    assert encode_initiate_request(InitiateRequest(LN_CONFORMANCE, 0x04B0)) == AARQ[-14:]


def test_public_aare_example() -> None:
    aare = decode_aare(AARE)
    assert (aare.context, aare.result, aare.diagnostic, aare.diagnostic_source) == (
        ApplicationContext.LOGICAL_NAME,
        AssociationResult.ACCEPTED,
        AcseServiceUserDiagnostic.NULL,
        DiagnosticSource.ACSE_SERVICE_USER,
    )
    assert encode_aare(aare) == AARE
    response = decode_initiate_response(aare.user_information or b"")
    assert response == InitiateResponse(
        Conformance.PRIORITY_MGMT_SUPPORTED
        | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
        | Conformance.GET
        | Conformance.SET
        | Conformance.SELECTIVE_ACCESS
        | Conformance.EVENT_NOTIFICATION
        | Conformance.ACTION,
        server_max_receive_pdu_size=500,
    )
    assert encode_initiate_response(response) == AARE[-14:]


def test_aarq_with_low_level_security() -> None:
    """LLS: acse-requirements 8A 02 07 80, mechanism 8B 07 ...02 01, password in AC ... 80 len."""
    aarq = Aarq(
        ApplicationContext.LOGICAL_NAME,
        Mechanism.LOW,
        calling_authentication_value=b"12345678",
        user_information=AARQ[-14:],
    )
    raw = encode_aarq(aarq)
    assert raw.hex().upper() == (
        "6036A109060760857405080101"
        "8A0207808B0760857405080201"
        "AC0A80083132333435363738"
        "BE10040E01000000065F1F0400007E1F04B0"
    )
    assert decode_aarq(raw) == aarq


def test_aare_with_hls_gmac_challenge() -> None:
    aare = Aare(
        ApplicationContext.LOGICAL_NAME_CIPHERED,
        AssociationResult.ACCEPTED,
        AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
        responding_ap_title=b"MMM\x00\x00\x00\x00\x01",
        mechanism=Mechanism.HIGH_GMAC,
        responding_authentication_value=bytes(range(16)),
        user_information=b"\x28\x00",
    )
    raw = encode_aare(aare)
    assert b"\xa3\x05\xa1\x03\x02\x01\x0e" in raw
    assert b"\x89\x07\x60\x85\x74\x05\x08\x02\x05" in raw
    assert b"\xa4\x0a\x04\x08MMM" in raw
    assert decode_aare(raw) == aare


def test_rejected_aare_with_confirmed_service_error() -> None:
    error = ConfirmedServiceError(1, 6, 1)  # initiateError, initiate, dlms-version-too-low
    assert encode_confirmed_service_error(error) == bytes.fromhex("0E010601")
    aare = Aare(
        ApplicationContext.LOGICAL_NAME,
        AssociationResult.REJECTED_PERMANENT,
        AcseServiceUserDiagnostic.NO_REASON_GIVEN,
        user_information=encode_confirmed_service_error(error),
    )
    decoded = decode_aare(encode_aare(aare))
    assert decode_user_information(decoded.user_information or b"") == error
    assert decode_confirmed_service_error(bytes.fromhex("0E010601")) == error


def test_release_examples() -> None:
    assert encode_rlrq(Rlrq()) == bytes.fromhex("6203800100")
    assert decode_rlre(bytes.fromhex("6303800100")) == Rlre(ReleaseResponseReason.NORMAL)
    assert decode_rlrq(bytes.fromhex("6200")) == Rlrq(None)
    ciphered = Rlrq(ReleaseRequestReason.NORMAL, b"\x21\x05\x30\x00\x00\x00\x01")
    assert decode_rlrq(encode_rlrq(ciphered)) == ciphered


def test_initiate_request_with_dedicated_key_and_response_not_allowed() -> None:
    req = InitiateRequest(LN_CONFORMANCE, 0xFFFF, dedicated_key=bytes(16), response_allowed=False)
    raw = encode_initiate_request(req)
    assert raw[:3] == b"\x01\x01\x10"
    assert raw[19:21] == b"\x01\x00"
    assert decode_initiate_request(raw) == req


def test_skipped_components_are_tolerated() -> None:
    """protocol-version (80 02 07 80) and implementation-information are legal but unused."""
    body = bytes.fromhex("80020780") + AARQ[2:] + bytes.fromhex("9D0141")
    assert decode_aarq(bytes((0x60, len(body))) + body).context is ApplicationContext.LOGICAL_NAME


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "truncated"),
        ("6100", "not an AARQ"),
        ("601DA109", "truncated"),
        ("6000", "without application-context"),
        ("6009A10706056085740508", "object identifier"),
        ("600BA109060760857405080109", "unknown application context"),
        ("6003AD0100", "unexpected component"),
        (
            "60 1D A1 09 06 07 60 85 74 05 08 01 01 BE 10 04 0E 01 00 00 00 06 5F 1F 04 00 00 7E 1F 04 B0 00",
            "trailing",
        ),
    ],
)
def test_aarq_refusals(raw: str, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode_aarq(bytes.fromhex(raw))


def test_encode_refusals() -> None:
    with pytest.raises(EncodeError):
        encode_initiate_request(InitiateRequest(LN_CONFORMANCE, 70000))
    with pytest.raises(EncodeError):
        encode_aarq(Aarq(ApplicationContext.LOGICAL_NAME, calling_ap_title=bytes(200)))


# ------------------------------------------------------------------------------------------ properties

_conformance = st.integers(0, (1 << 24) - 1).map(Conformance)
_octets = st.binary(max_size=40)
_opt_octets = st.none() | _octets

_aarq = st.builds(
    Aarq,
    st.sampled_from(ApplicationContext),
    st.none() | st.sampled_from(Mechanism),
    st.none() | st.binary(min_size=8, max_size=8),
    _opt_octets,
    st.none() | st.binary(max_size=300),
)
_aare = st.builds(
    Aare,
    st.sampled_from(ApplicationContext),
    st.sampled_from(AssociationResult),
    st.integers(0, 255),
    st.none() | st.binary(min_size=8, max_size=8),
    st.none() | st.sampled_from(Mechanism),
    _opt_octets,
    _opt_octets,
    st.sampled_from(DiagnosticSource),
)
_initiate_request = st.builds(
    InitiateRequest,
    _conformance,
    st.integers(0, 0xFFFF),
    st.none() | st.binary(min_size=16, max_size=32),
    st.booleans(),
    st.integers(0, 255),
    st.none() | st.integers(-128, 127),
)
_initiate_response = st.builds(
    InitiateResponse,
    _conformance,
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.none() | st.integers(-128, 127),
)


@given(_aarq)
def test_aarq_round_trip(aarq: Aarq) -> None:
    assert decode_aarq(encode_aarq(aarq)) == aarq


@given(_aare)
def test_aare_round_trip(aare: Aare) -> None:
    assert decode_aare(encode_aare(aare)) == aare


@given(st.none() | st.sampled_from(ReleaseRequestReason), _opt_octets)
def test_rlrq_round_trip(reason: ReleaseRequestReason | None, info: bytes | None) -> None:
    assert decode_rlrq(encode_rlrq(Rlrq(reason, info))) == Rlrq(reason, info)


@given(st.none() | st.sampled_from(ReleaseResponseReason), _opt_octets)
def test_rlre_round_trip(reason: ReleaseResponseReason | None, info: bytes | None) -> None:
    assert decode_rlre(encode_rlre(Rlre(reason, info))) == Rlre(reason, info)


@given(_initiate_request)
def test_initiate_request_round_trip(req: InitiateRequest) -> None:
    assert decode_initiate_request(encode_initiate_request(req)) == req


@given(_initiate_response)
def test_initiate_response_round_trip(resp: InitiateResponse) -> None:
    assert decode_initiate_response(encode_initiate_response(resp)) == resp


_DECODERS = (decode_aarq, decode_aare, decode_rlrq, decode_rlre, decode_user_information)
_SAMPLES = (AARQ, AARE, bytes.fromhex("6203800100"), AARQ[-14:], AARE[-14:])


def _only_decode_error(raw: bytes) -> None:
    for decode in _DECODERS:
        with contextlib.suppress(DecodeError):
            decode(raw)


@given(st.binary(max_size=200))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _only_decode_error(raw)


@given(st.sampled_from(_SAMPLES), st.data())
def test_fuzz_truncated_and_mutated(sample: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(sample)))
    _only_decode_error(sample[:cut])
    index = data.draw(st.integers(0, len(sample) - 1))
    mutated = bytearray(sample)
    mutated[index] = data.draw(st.integers(0, 255))
    _only_decode_error(bytes(mutated))
