"""Association control (ACSE, ISO 8650 as profiled by IEC 62056-5-3) and the xDLMS initiate exchange.

A DLMS client opens an application association with an AARQ and the meter answers with an AARE; both
are BER-encoded ACSE APDUs whose ``user-information`` field carries an A-XDR ``InitiateRequest`` (0x01)
or ``InitiateResponse`` (0x08) / ``ConfirmedServiceError`` (0x0E), possibly ciphered (glo-/ded-initiate
APDUs built by :mod:`~openami.protocols.dlms.security`). This module keeps those two encodings apart:
the ACSE dataclasses hold ``user_information`` as opaque bytes so ciphering stays a separate, explicit
step, and the initiate PDUs have their own encoders and decoders.

Only the ACSE fields DLMS uses are modelled. Components that DLMS never sends but ISO 8650 allows
(called-AP-title, AE qualifiers, invocation ids, implementation-information, protocol-version) are
accepted and skipped on decoding so that a meter that sends them still associates; they are never
encoded. Decoding is bounded by the outer length and every failure is a
:class:`~openami.protocols.dlms.errors.DecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from types import MappingProxyType
from typing import Final, TypeVar

from openami.protocols.dlms.axdr import decode_length, encode_length
from openami.protocols.dlms.errors import DecodeError, EncodeError

__all__ = [
    "AARE_TAG",
    "AARQ_TAG",
    "RLRE_TAG",
    "RLRQ_TAG",
    "Aare",
    "Aarq",
    "AcseServiceProviderDiagnostic",
    "AcseServiceUserDiagnostic",
    "ApplicationContext",
    "AssociationResult",
    "ConfirmedServiceError",
    "Conformance",
    "DiagnosticSource",
    "InitiateRequest",
    "InitiateResponse",
    "Mechanism",
    "ReleaseRequestReason",
    "ReleaseResponseReason",
    "Rlre",
    "Rlrq",
    "decode_aare",
    "decode_aarq",
    "decode_confirmed_service_error",
    "decode_initiate_request",
    "decode_initiate_response",
    "decode_rlre",
    "decode_rlrq",
    "decode_user_information",
    "encode_aare",
    "encode_aarq",
    "encode_confirmed_service_error",
    "encode_initiate_request",
    "encode_initiate_response",
    "encode_rlre",
    "encode_rlrq",
]

AARQ_TAG: Final = 0x60
AARE_TAG: Final = 0x61
RLRQ_TAG: Final = 0x62
RLRE_TAG: Final = 0x63

INITIATE_REQUEST_TAG: Final = 0x01
INITIATE_RESPONSE_TAG: Final = 0x08
CONFIRMED_SERVICE_ERROR_TAG: Final = 0x0E

# Object identifier arcs 2.16.756.5.8 (joint-iso-ccitt country ch organization dlms-ua), BER-encoded:
# 2*40+16 = 0x60, 756 in base-128 = 0x85 0x74. Then 1.x names an application context, 2.x a mechanism.
_DLMS_UA_ARC: Final = bytes((0x60, 0x85, 0x74, 0x05, 0x08))
_CONTEXT_ARC: Final = _DLMS_UA_ARC + b"\x01"
_MECHANISM_ARC: Final = _DLMS_UA_ARC + b"\x02"

_E = TypeVar("_E", bound=IntEnum)

_OID: Final = 0x06
_INTEGER: Final = 0x02
_OCTET_STRING: Final = 0x04
_GRAPHIC_STRING_CHOICE: Final = 0x80  # Authentication-value charstring [0] IMPLICIT GraphicString
_BIT_STRING_CHOICE: Final = 0x81  # Authentication-value bitstring [1] IMPLICIT BIT STRING
# ACSE-requirements ::= BIT STRING { authentication(0) }: one bit set, seven unused.
_AUTHENTICATION_REQUIRED: Final = bytes((0x07, 0x80))
_CONFORMANCE_TAG: Final = bytes((0x5F, 0x1F))  # [APPLICATION 31] IMPLICIT BIT STRING (SIZE(24))
_CONFORMANCE_LENGTH: Final = 4  # unused-bits byte + 3 bytes


class Conformance(IntFlag):
    """The 24-bit xDLMS conformance block.

    Bit *n* of the ASN.1 BIT STRING is the *n*-th bit from the most significant end of the three
    bytes on the wire, so bit 0 is ``0x800000`` and bit 23 (action) is ``0x000001``; an int of this
    flag is therefore exactly the three wire bytes read big-endian. Bits 0, 6 and 7 are reserved
    (newer editions name 6 ``delta-value-encoding``); they are kept when decoding.
    """

    GENERAL_PROTECTION = 1 << (23 - 1)
    GENERAL_BLOCK_TRANSFER = 1 << (23 - 2)
    READ = 1 << (23 - 3)
    WRITE = 1 << (23 - 4)
    UNCONFIRMED_WRITE = 1 << (23 - 5)
    ATTRIBUTE0_SUPPORTED_WITH_SET = 1 << (23 - 8)
    PRIORITY_MGMT_SUPPORTED = 1 << (23 - 9)
    ATTRIBUTE0_SUPPORTED_WITH_GET = 1 << (23 - 10)
    BLOCK_TRANSFER_WITH_GET_OR_READ = 1 << (23 - 11)
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = 1 << (23 - 12)
    BLOCK_TRANSFER_WITH_ACTION = 1 << (23 - 13)
    MULTIPLE_REFERENCES = 1 << (23 - 14)
    INFORMATION_REPORT = 1 << (23 - 15)
    DATA_NOTIFICATION = 1 << (23 - 16)
    ACCESS = 1 << (23 - 17)
    PARAMETERIZED_ACCESS = 1 << (23 - 18)
    GET = 1 << (23 - 19)
    SET = 1 << (23 - 20)
    SELECTIVE_ACCESS = 1 << (23 - 21)
    EVENT_NOTIFICATION = 1 << (23 - 22)
    ACTION = 1 << (23 - 23)


class ApplicationContext(IntEnum):
    """Application context names 2.16.756.5.8.1.x: referencing (logical or short names) and ciphering."""

    LOGICAL_NAME = 1
    SHORT_NAME = 2
    LOGICAL_NAME_CIPHERED = 3
    SHORT_NAME_CIPHERED = 4


class Mechanism(IntEnum):
    """Authentication mechanism names 2.16.756.5.8.2.x."""

    LOWEST = 0
    LOW = 1
    HIGH = 2
    HIGH_MD5 = 3
    HIGH_SHA1 = 4
    HIGH_GMAC = 5
    HIGH_SHA256 = 6
    HIGH_ECDSA = 7


class AssociationResult(IntEnum):
    """AARE ``result``."""

    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class DiagnosticSource(IntEnum):
    """Which side of ACSE produced ``result-source-diagnostic`` (its CHOICE tag)."""

    ACSE_SERVICE_USER = 1
    ACSE_SERVICE_PROVIDER = 2


class AcseServiceUserDiagnostic(IntEnum):
    """Diagnostics a meter gives as ACSE service user; 14 means "send the HLS challenge reply"."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    CALLING_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 4
    CALLING_AE_QUALIFIER_NOT_RECOGNIZED = 5
    CALLING_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 6
    CALLED_AP_TITLE_NOT_RECOGNIZED = 7
    CALLED_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 8
    CALLED_AE_QUALIFIER_NOT_RECOGNIZED = 9
    CALLED_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 10
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class AcseServiceProviderDiagnostic(IntEnum):
    """Diagnostics given as ACSE service provider."""

    NULL = 0
    NO_REASON_GIVEN = 1
    NO_COMMON_ACSE_VERSION = 2


class ReleaseRequestReason(IntEnum):
    """RLRQ ``reason``."""

    NORMAL = 0
    URGENT = 1
    USER_DEFINED = 30


class ReleaseResponseReason(IntEnum):
    """RLRE ``reason``."""

    NORMAL = 0
    NOT_FINISHED = 1
    USER_DEFINED = 30


# ------------------------------------------------------------------------------------------ dataclasses


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    """xDLMS InitiateRequest: what the client proposes inside the AARQ user-information.

    ``dedicated_key`` is only ever sent inside a ciphered (glo-)InitiateRequest; putting it in a plain
    one would disclose it, which this layer does not police (the association layer does).
    """

    proposed_conformance: Conformance
    client_max_receive_pdu_size: int
    dedicated_key: bytes | None = None
    response_allowed: bool = True
    proposed_dlms_version: int = 6
    proposed_quality_of_service: int | None = None


@dataclass(frozen=True, slots=True)
class InitiateResponse:
    """xDLMS InitiateResponse: what the meter accepted. ``vaa_name`` is 0x0007 for LN referencing,
    the base short name of the current association object for SN referencing."""

    negotiated_conformance: Conformance
    server_max_receive_pdu_size: int
    negotiated_dlms_version: int = 6
    vaa_name: int = 0x0007
    negotiated_quality_of_service: int | None = None


@dataclass(frozen=True, slots=True)
class ConfirmedServiceError:
    """A refused initiate (or other DLMS service): ``service`` is the CHOICE that failed (1 =
    initiateError), ``error`` the ServiceError CHOICE (6 = initiate, 3 = service, ...) and ``value``
    its enumerated reason, e.g. (1, 6, 1): initiate refused, DLMS version too low."""

    service: int
    error: int
    value: int


@dataclass(frozen=True, slots=True)
class Aarq:
    """An association request. ``user_information`` is the encoded (possibly ciphered) InitiateRequest."""

    context: ApplicationContext
    mechanism: Mechanism | None = None
    calling_ap_title: bytes | None = None
    calling_authentication_value: bytes | None = None
    user_information: bytes | None = None


@dataclass(frozen=True, slots=True)
class Aare:
    """An association response. ``diagnostic`` is read against ``diagnostic_source``
    (:class:`AcseServiceUserDiagnostic` or :class:`AcseServiceProviderDiagnostic`); an int is kept
    so that codes from newer editions still decode. ``responding_authentication_value`` is the
    server-to-client challenge of HLS."""

    context: ApplicationContext
    result: AssociationResult
    diagnostic: int
    responding_ap_title: bytes | None = None
    mechanism: Mechanism | None = None
    responding_authentication_value: bytes | None = None
    user_information: bytes | None = None
    diagnostic_source: DiagnosticSource = DiagnosticSource.ACSE_SERVICE_USER


@dataclass(frozen=True, slots=True)
class Rlrq:
    """A release request; ``user_information`` carries an (often ciphered) InitiateRequest when the
    association was opened with ciphering, so the meter can check it is really its client."""

    reason: ReleaseRequestReason | None = ReleaseRequestReason.NORMAL
    user_information: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rlre:
    """A release response."""

    reason: ReleaseResponseReason | None = ReleaseResponseReason.NORMAL
    user_information: bytes | None = None


# ----------------------------------------------------------------------------------------- BER helpers


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(content)) + content


def _read_tlv(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``; refuses to run past ``end``.

    Multi-byte (high-tag-number) tags are refused: none of the ACSE fields DLMS uses need them.
    """
    if pos >= end:
        raise DecodeError(f"truncated {what}: missing tag", pos)
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DecodeError(f"unsupported multi-byte BER tag 0x{tag:02X} in {what}", pos)
    length, start = decode_length(buf, pos + 1)
    if start + length > end:
        raise DecodeError(f"truncated {what}: element 0x{tag:02X} needs {length} bytes", pos)
    return tag, start, start + length


def _inner(buf: bytes, start: int, end: int, tag: int, what: str) -> bytes:
    """The content of the single element ``tag`` that must fill ``buf[start:end]`` exactly."""
    got, s, e = _read_tlv(buf, start, end, what)
    if got != tag:
        raise DecodeError(f"{what}: expected tag 0x{tag:02X}, got 0x{got:02X}", start)
    if e != end:
        raise DecodeError(f"{what}: {end - e} trailing bytes", e)
    return buf[s:e]


def _encode_integer(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return _tlv(_INTEGER, value.to_bytes(size, "big", signed=True))


def _decode_integer(buf: bytes, start: int, end: int, what: str) -> int:
    raw = _inner(buf, start, end, _INTEGER, what)
    if not 1 <= len(raw) <= 4:
        raise DecodeError(f"{what}: INTEGER of {len(raw)} bytes", start)
    return int.from_bytes(raw, "big", signed=True)


def _oid_enum(arc: bytes, raw: bytes, enum: type[_E], what: str, pos: int) -> _E:
    if len(raw) != len(arc) + 1 or not raw.startswith(arc):
        raise DecodeError(f"unknown {what} object identifier {raw.hex(' ')}", pos)
    try:
        return enum(raw[-1])
    except ValueError:
        raise DecodeError(f"unknown {what} {raw[-1]}", pos) from None


def _encode_context(context: ApplicationContext) -> bytes:
    return _tlv(0xA1, _tlv(_OID, _CONTEXT_ARC + bytes((context,))))


def _encode_auth_value(tag: int, value: bytes) -> bytes:
    return _tlv(tag, _tlv(_GRAPHIC_STRING_CHOICE, value))


def _decode_auth_value(buf: bytes, start: int, end: int) -> bytes:
    tag, s, e = _read_tlv(buf, start, end, "authentication-value")
    if tag not in (_GRAPHIC_STRING_CHOICE, _BIT_STRING_CHOICE) or e != end:
        raise DecodeError(f"authentication-value: unsupported CHOICE 0x{tag:02X}", start)
    return buf[s:e]


def _encode_user_information(raw: bytes) -> bytes:
    return _tlv(0xBE, _tlv(_OCTET_STRING, raw))


def _check_title(title: bytes | None, what: str) -> None:
    if title is not None and len(title) > 0x7F:
        raise EncodeError(f"{what} of {len(title)} bytes is not a system title")


# Field decoders: (buffer, content start, content end) -> value. One table per APDU maps the
# context-specific tag to (field name, decoder); tags in the skip set are legal but unused by DLMS.
_FieldDecoder = Callable[[bytes, int, int], object]


def _context_field(buf: bytes, s: int, e: int) -> object:
    return _oid_enum(
        _CONTEXT_ARC,
        _inner(buf, s, e, _OID, "application-context-name"),
        ApplicationContext,
        "application context",
        s,
    )


def _mechanism_field(buf: bytes, s: int, e: int) -> object:
    return _oid_enum(_MECHANISM_ARC, buf[s:e], Mechanism, "mechanism", s)


def _title_field(buf: bytes, s: int, e: int) -> object:
    return _inner(buf, s, e, _OCTET_STRING, "AP-title")


def _user_information_field(buf: bytes, s: int, e: int) -> object:
    return _inner(buf, s, e, _OCTET_STRING, "user-information")


def _requirements_field(buf: bytes, s: int, e: int) -> object:
    if e - s < 1:
        raise DecodeError("empty acse-requirements", s)
    return None  # implied by the mechanism name; only validated for shape


def _result_field(buf: bytes, s: int, e: int) -> object:
    value = _decode_integer(buf, s, e, "result")
    try:
        return AssociationResult(value)
    except ValueError:
        raise DecodeError(f"unknown association result {value}", s) from None


def _diagnostic_field(buf: bytes, s: int, e: int) -> object:
    tag, cs, ce = _read_tlv(buf, s, e, "result-source-diagnostic")
    if ce != e:
        raise DecodeError("result-source-diagnostic: trailing bytes", ce)
    try:
        source = DiagnosticSource(tag - 0xA0)
    except ValueError:
        raise DecodeError(f"result-source-diagnostic: unknown source 0x{tag:02X}", s) from None
    return source, _decode_integer(buf, cs, ce, "diagnostic")


def _reason_field(buf: bytes, s: int, e: int) -> object:
    if e - s != 1:
        raise DecodeError(f"release reason of {e - s} bytes", s)
    return buf[s]


_AARQ_FIELDS: Final = MappingProxyType(
    {
        0xA1: ("context", _context_field),
        0xA6: ("calling_ap_title", _title_field),
        0x8A: ("requirements", _requirements_field),
        0x8B: ("mechanism", _mechanism_field),
        0xAC: ("calling_authentication_value", _decode_auth_value),
        0xBE: ("user_information", _user_information_field),
    }
)
_AARQ_SKIPPED: Final = frozenset({0x80, 0xA2, 0xA3, 0xA4, 0xA5, 0xA7, 0xA8, 0xA9, 0x9D})

_AARE_FIELDS: Final = MappingProxyType(
    {
        0xA1: ("context", _context_field),
        0xA2: ("result", _result_field),
        0xA3: ("diagnostic", _diagnostic_field),
        0xA4: ("responding_ap_title", _title_field),
        0x88: ("requirements", _requirements_field),
        0x89: ("mechanism", _mechanism_field),
        0xAA: ("responding_authentication_value", _decode_auth_value),
        0xBE: ("user_information", _user_information_field),
    }
)
_AARE_SKIPPED: Final = frozenset({0x80, 0xA5, 0xA6, 0xA7, 0x9D})

_RELEASE_FIELDS: Final = MappingProxyType(
    {0x80: ("reason", _reason_field), 0xBE: ("user_information", _user_information_field)}
)


def _decode_fields(
    raw: bytes,
    apdu_tag: int,
    name: str,
    fields: MappingProxyType[int, tuple[str, _FieldDecoder]],
    skipped: frozenset[int] = frozenset(),
) -> dict[str, object]:
    """Walk the components of one ACSE APDU into a name -> value dict via ``fields``."""
    raw = bytes(raw)
    tag, pos, end = _read_tlv(raw, 0, len(raw), name)
    if tag != apdu_tag:
        raise DecodeError(f"not an {name}: tag 0x{tag:02X}, expected 0x{apdu_tag:02X}", 0)
    if end != len(raw):
        raise DecodeError(f"{len(raw) - end} trailing bytes after {name}", end)
    found: dict[str, object] = {}
    while pos < end:
        field_tag, s, e = _read_tlv(raw, pos, end, name)
        entry = fields.get(field_tag)
        if entry is not None:
            field_name, decoder = entry
            if field_name in found:
                raise DecodeError(f"{name}: component 0x{field_tag:02X} repeated", pos)
            found[field_name] = decoder(raw, s, e)
        elif field_tag not in skipped:
            raise DecodeError(f"{name}: unexpected component 0x{field_tag:02X}", pos)
        pos = e
    return found


def _opt_bytes(found: dict[str, object], key: str) -> bytes | None:
    value = found.get(key)
    return value if isinstance(value, bytes) else None


def _opt_mechanism(found: dict[str, object]) -> Mechanism | None:
    value = found.get("mechanism")
    return value if isinstance(value, Mechanism) else None


def _required_context(found: dict[str, object], name: str) -> ApplicationContext:
    context = found.get("context")
    if not isinstance(context, ApplicationContext):
        raise DecodeError(f"{name} without application-context-name", 0)
    return context


# ----------------------------------------------------------------------------------------- AARQ / AARE


def encode_aarq(aarq: Aarq) -> bytes:
    """The BER bytes of ``aarq``; sender-acse-requirements is sent exactly when a mechanism is named."""
    _check_title(aarq.calling_ap_title, "calling-AP-title")
    body = bytearray(_encode_context(aarq.context))
    if aarq.calling_ap_title is not None:
        body += _tlv(0xA6, _tlv(_OCTET_STRING, aarq.calling_ap_title))
    if aarq.mechanism is not None:
        body += _tlv(0x8A, _AUTHENTICATION_REQUIRED)
        body += _tlv(0x8B, _MECHANISM_ARC + bytes((aarq.mechanism,)))
    if aarq.calling_authentication_value is not None:
        body += _encode_auth_value(0xAC, aarq.calling_authentication_value)
    if aarq.user_information is not None:
        body += _encode_user_information(aarq.user_information)
    return _tlv(AARQ_TAG, bytes(body))


def decode_aarq(raw: bytes) -> Aarq:
    """Parse an AARQ (tag 0x60)."""
    found = _decode_fields(raw, AARQ_TAG, "AARQ", _AARQ_FIELDS, _AARQ_SKIPPED)
    return Aarq(
        context=_required_context(found, "AARQ"),
        mechanism=_opt_mechanism(found),
        calling_ap_title=_opt_bytes(found, "calling_ap_title"),
        calling_authentication_value=_opt_bytes(found, "calling_authentication_value"),
        user_information=_opt_bytes(found, "user_information"),
    )


def encode_aare(aare: Aare) -> bytes:
    """The BER bytes of ``aare``."""
    _check_title(aare.responding_ap_title, "responding-AP-title")
    body = bytearray(_encode_context(aare.context))
    body += _tlv(0xA2, _encode_integer(aare.result))
    body += _tlv(0xA3, _tlv(0xA0 + aare.diagnostic_source, _encode_integer(aare.diagnostic)))
    if aare.responding_ap_title is not None:
        body += _tlv(0xA4, _tlv(_OCTET_STRING, aare.responding_ap_title))
    if aare.mechanism is not None:
        body += _tlv(0x88, _AUTHENTICATION_REQUIRED)
        body += _tlv(0x89, _MECHANISM_ARC + bytes((aare.mechanism,)))
    if aare.responding_authentication_value is not None:
        body += _encode_auth_value(0xAA, aare.responding_authentication_value)
    if aare.user_information is not None:
        body += _encode_user_information(aare.user_information)
    return _tlv(AARE_TAG, bytes(body))


def decode_aare(raw: bytes) -> Aare:
    """Parse an AARE (tag 0x61); ``result`` and ``result-source-diagnostic`` are mandatory."""
    found = _decode_fields(raw, AARE_TAG, "AARE", _AARE_FIELDS, _AARE_SKIPPED)
    result = found.get("result")
    diagnostic = found.get("diagnostic")
    if not isinstance(result, AssociationResult) or not isinstance(diagnostic, tuple):
        raise DecodeError("AARE without result or result-source-diagnostic", 0)
    source, code = diagnostic
    return Aare(
        context=_required_context(found, "AARE"),
        result=result,
        diagnostic=code,
        responding_ap_title=_opt_bytes(found, "responding_ap_title"),
        mechanism=_opt_mechanism(found),
        responding_authentication_value=_opt_bytes(found, "responding_authentication_value"),
        user_information=_opt_bytes(found, "user_information"),
        diagnostic_source=source,
    )


# ----------------------------------------------------------------------------------------- RLRQ / RLRE


def _encode_release(tag: int, reason: int | None, user_information: bytes | None) -> bytes:
    body = b""
    if reason is not None:
        body += _tlv(0x80, bytes((reason,)))
    if user_information is not None:
        body += _encode_user_information(user_information)
    return _tlv(tag, body)


def _release_reason(found: dict[str, object], enum: type[_E]) -> _E | None:
    value = found.get("reason")
    if not isinstance(value, int):
        return None
    try:
        return enum(value)
    except ValueError:
        raise DecodeError(f"unknown release reason {value}", 0) from None


def encode_rlrq(rlrq: Rlrq) -> bytes:
    """The BER bytes of ``rlrq``, e.g. ``62 03 80 01 00`` for a plain normal release."""
    return _encode_release(RLRQ_TAG, rlrq.reason, rlrq.user_information)


def decode_rlrq(raw: bytes) -> Rlrq:
    """Parse an RLRQ (tag 0x62)."""
    found = _decode_fields(raw, RLRQ_TAG, "RLRQ", _RELEASE_FIELDS)
    return Rlrq(_release_reason(found, ReleaseRequestReason), _opt_bytes(found, "user_information"))


def encode_rlre(rlre: Rlre) -> bytes:
    """The BER bytes of ``rlre``."""
    return _encode_release(RLRE_TAG, rlre.reason, rlre.user_information)


def decode_rlre(raw: bytes) -> Rlre:
    """Parse an RLRE (tag 0x63)."""
    found = _decode_fields(raw, RLRE_TAG, "RLRE", _RELEASE_FIELDS)
    return Rlre(_release_reason(found, ReleaseResponseReason), _opt_bytes(found, "user_information"))


# ------------------------------------------------------------------------------- xDLMS initiate (A-XDR)


class _Cursor:
    """Reads the A-XDR initiate PDUs; refuses to run past the end."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.buf):
            raise DecodeError(f"truncated {what}", self.pos)
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def optional(self, what: str) -> bool:
        """An A-XDR OPTIONAL/DEFAULT presence flag (00 absent, 01 present)."""
        flag = self.uint(1, what)
        if flag > 1:
            raise DecodeError(f"{what}: presence flag 0x{flag:02X}", self.pos - 1)
        return flag == 1

    def end(self, what: str) -> None:
        if self.pos != len(self.buf):
            raise DecodeError(f"{len(self.buf) - self.pos} trailing bytes after {what}", self.pos)


def _encode_conformance(conformance: Conformance) -> bytes:
    if not 0 <= conformance < 1 << 24:
        raise EncodeError(f"conformance 0x{int(conformance):X} does not fit 24 bits")
    return _CONFORMANCE_TAG + bytes((_CONFORMANCE_LENGTH, 0)) + int(conformance).to_bytes(3, "big")


def _decode_conformance(c: _Cursor) -> Conformance:
    start = c.pos
    header = c.take(4, "conformance")
    if header != _CONFORMANCE_TAG + bytes((_CONFORMANCE_LENGTH, 0)):
        raise DecodeError(f"conformance block header {header.hex(' ')}, expected 5F 1F 04 00", start)
    return Conformance(c.uint(3, "conformance"))


def _u8(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise EncodeError(f"{what} {value} out of range 0..255")
    return bytes((value,))


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise EncodeError(f"{what} {value} out of range 0..65535")
    return value.to_bytes(2, "big")


def _optional_qos(value: int | None) -> bytes:
    if value is None:
        return b"\x00"
    if not -128 <= value <= 127:
        raise EncodeError(f"quality-of-service {value} out of range -128..127")
    return b"\x01" + value.to_bytes(1, "big", signed=True)


def encode_initiate_request(req: InitiateRequest) -> bytes:
    """A-XDR InitiateRequest (tag 0x01); ``response-allowed`` TRUE is the DEFAULT and sent as absent."""
    out = bytearray((INITIATE_REQUEST_TAG,))
    if req.dedicated_key is None:
        out.append(0)
    else:
        out.append(1)
        out += encode_length(len(req.dedicated_key)) + req.dedicated_key
    out += b"\x00" if req.response_allowed else b"\x01\x00"
    out += _optional_qos(req.proposed_quality_of_service)
    out += _u8(req.proposed_dlms_version, "DLMS version")
    out += _encode_conformance(req.proposed_conformance)
    out += _u16(req.client_max_receive_pdu_size, "client max receive PDU size")
    return bytes(out)


def _decode_qos(c: _Cursor) -> int | None:
    if not c.optional("quality-of-service"):
        return None
    return int.from_bytes(c.take(1, "quality-of-service"), "big", signed=True)


def decode_initiate_request(raw: bytes) -> InitiateRequest:
    """Parse an unciphered InitiateRequest (tag 0x01)."""
    raw = bytes(raw)
    if not raw or raw[0] != INITIATE_REQUEST_TAG:
        raise DecodeError("not an InitiateRequest (tag 0x01)", 0)
    c = _Cursor(raw, 1)
    key = None
    if c.optional("dedicated-key"):
        length, c.pos = decode_length(raw, c.pos)
        key = c.take(length, "dedicated-key")
    allowed = True
    if c.optional("response-allowed"):
        allowed = c.uint(1, "response-allowed") != 0
    qos = _decode_qos(c)
    version = c.uint(1, "DLMS version")
    conformance = _decode_conformance(c)
    size = c.uint(2, "client max receive PDU size")
    c.end("InitiateRequest")
    return InitiateRequest(conformance, size, key, allowed, version, qos)


def encode_initiate_response(resp: InitiateResponse) -> bytes:
    """A-XDR InitiateResponse (tag 0x08)."""
    return (
        bytes((INITIATE_RESPONSE_TAG,))
        + _optional_qos(resp.negotiated_quality_of_service)
        + _u8(resp.negotiated_dlms_version, "DLMS version")
        + _encode_conformance(resp.negotiated_conformance)
        + _u16(resp.server_max_receive_pdu_size, "server max receive PDU size")
        + _u16(resp.vaa_name, "vaa-name")
    )


def decode_initiate_response(raw: bytes) -> InitiateResponse:
    """Parse an unciphered InitiateResponse (tag 0x08)."""
    raw = bytes(raw)
    if not raw or raw[0] != INITIATE_RESPONSE_TAG:
        raise DecodeError("not an InitiateResponse (tag 0x08)", 0)
    c = _Cursor(raw, 1)
    qos = _decode_qos(c)
    version = c.uint(1, "DLMS version")
    conformance = _decode_conformance(c)
    size = c.uint(2, "server max receive PDU size")
    vaa = c.uint(2, "vaa-name")
    c.end("InitiateResponse")
    return InitiateResponse(conformance, size, version, vaa, qos)


def encode_confirmed_service_error(err: ConfirmedServiceError) -> bytes:
    """``0E`` service error-kind value, e.g. ``0E 01 06 01``."""
    return bytes((CONFIRMED_SERVICE_ERROR_TAG,)) + b"".join(
        _u8(v, "confirmed-service-error field") for v in (err.service, err.error, err.value)
    )


def decode_confirmed_service_error(raw: bytes) -> ConfirmedServiceError:
    """Parse a ConfirmedServiceError (tag 0x0E); the codes are kept as ints (see the dataclass)."""
    raw = bytes(raw)
    if len(raw) != 4 or raw[0] != CONFIRMED_SERVICE_ERROR_TAG:
        raise DecodeError("not a ConfirmedServiceError (0E + 3 bytes)", 0)
    return ConfirmedServiceError(raw[1], raw[2], raw[3])


_USER_INFORMATION_DECODERS: Final[
    MappingProxyType[int, Callable[[bytes], InitiateRequest | InitiateResponse | ConfirmedServiceError]]
] = MappingProxyType(
    {
        INITIATE_REQUEST_TAG: decode_initiate_request,
        INITIATE_RESPONSE_TAG: decode_initiate_response,
        CONFIRMED_SERVICE_ERROR_TAG: decode_confirmed_service_error,
    }
)


def decode_user_information(raw: bytes) -> InitiateRequest | InitiateResponse | ConfirmedServiceError:
    """Decode an unciphered user-information payload by its tag (decipher glo-/ded- ones first)."""
    if not raw:
        raise DecodeError("empty user-information", 0)
    decoder = _USER_INFORMATION_DECODERS.get(raw[0])
    if decoder is None:
        raise DecodeError(f"user-information tag 0x{raw[0]:02X} is not 01, 08 or 0E (ciphered?)", 0)
    return decoder(raw)
