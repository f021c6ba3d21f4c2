"""Application associations, client and server side, without IO.

An association is the stateful part of a DLMS session: the AARQ/AARE exchange that agrees conformance,
PDU sizes and authentication, the HLS passes 3 and 4 when the mechanism needs them, the ciphering of
every later APDU with the global keys and a fresh invocation counter, replay protection on what comes
back, and GET datablock transfers. Each side is a plain object fed bytes and returning bytes, so the same
code runs under the asyncio driver, the simulator and in-memory tests, and nothing here waits, reads a
socket or draws random numbers: challenges are passed in by the caller.

Why the policy is fixed per association: :func:`~openami.protocols.dlms.security.decrypt` accepts any
security control byte, and an attacker can rewrite an authenticated APDU as encryption-only. The
association therefore refuses a received APDU that is plain where ciphering was agreed, or weaker than
the agreed security control, before anything is decoded.

Invocation counters of HLS proofs f(StoC) and f(CtoS) are not fed to the replay guards: each side seals
the ACTION carrying the proof with the next counter, which the guard does check, and the proof's own
freshness comes from the random challenge it answers.

Short-name referencing (``short_names=True`` on either side) proposes or accepts the SN application
contexts instead of the LN ones and carries the SN services of :mod:`.sn_services` through
``request_sn``/``handle_sn`` and ``receive_sn``/``respond_sn``; association, LLS, ciphering and replay
checks are the same code. HLS is refused with SN: its pass 3 and 4 go through a method of the Association
SN object whose short-name offset we have not confirmed from a public description.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import count
from typing import Final

from openami.protocols.dlms.acse import (
    CONFIRMED_SERVICE_ERROR_TAG,
    RLRQ_TAG,
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
    Rlre,
    Rlrq,
    decode_aare,
    decode_aarq,
    decode_confirmed_service_error,
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
from openami.protocols.dlms.axdr import Data, DataType
from openami.protocols.dlms.errors import DecodeError, DlmsError, EncodeError, ReplayError, SecurityError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.security import (
    MAX_INVOCATION_COUNTER,
    PLAIN_TAGS,
    SYSTEM_TITLE_LENGTH,
    InvocationCounterGuard,
    SecurityControl,
    decrypt,
    encrypt,
    hls_gmac,
    lls_matches,
    verify_hls_gmac,
)
from openami.protocols.dlms.sn_services import (
    BlockNumberAccess,
    DataBlockResult,
    ReadRequest,
    ReadResponse,
    SnApdu,
    UnconfirmedWriteRequest,
    WriteRequest,
    WriteResponse,
    decode_sn,
    encode_sn,
    reassemble_read_blocks,
)
from openami.protocols.dlms.xdlms import (
    EXCEPTION_RESPONSE,
    ActionRequestNormal,
    ActionResponseNormal,
    ActionResult,
    CosemMethod,
    DataAccessResult,
    ExceptionResponse,
    ExceptionServiceError,
    ExceptionStateError,
    GetRequestNext,
    GetResponseNormal,
    GetResponseWithDatablock,
    XdlmsApdu,
    decode_xdlms,
    encode_xdlms,
    reassemble_datablocks,
)

__all__ = [
    "ASSOCIATION_LN",
    "ASSOCIATION_SN_BASE_NAME",
    "CLIENT_CONFORMANCE",
    "MANAGEMENT_CLIENT",
    "MANAGEMENT_SERVER",
    "MIN_PDU_SIZE",
    "PUBLIC_CLIENT",
    "REPLY_TO_HLS_AUTHENTICATION",
    "SERVER_CONFORMANCE",
    "SN_CLIENT_CONFORMANCE",
    "SN_SERVER_CONFORMANCE",
    "AssociationError",
    "AuthenticationFailed",
    "ClientAssociation",
    "NextRequest",
    "Reply",
    "Request",
    "Result",
    "ServerAssociation",
    "SnRequest",
    "SnResult",
]

PUBLIC_CLIENT: Final = 16
"""Client SAP of the public client: lowest security, read-only (IEC 62056-5-3 / IDIS)."""
MANAGEMENT_CLIENT: Final = 1
"""Client SAP of the management client: LLS or HLS, full access."""
MANAGEMENT_SERVER: Final = 1
"""Server SAP (wPort) of the management logical device."""

ASSOCIATION_LN: Final = Obis(0, 0, 40, 0, 0, 255)
"""The current association object (class 15)."""
REPLY_TO_HLS_AUTHENTICATION: Final = CosemMethod(15, ASSOCIATION_LN, 1)
"""HLS pass 3 and 4: the client sends f(StoC) as the parameter, the server returns f(CtoS)."""

CLIENT_CONFORMANCE: Final = (
    Conformance.GET
    | Conformance.SET
    | Conformance.ACTION
    | Conformance.SELECTIVE_ACCESS
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | Conformance.MULTIPLE_REFERENCES
)
"""What a client proposes by default: the services the pull path uses."""
SERVER_CONFORMANCE: Final = CLIENT_CONFORMANCE | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET
"""What the server side grants at most; the negotiated block is the intersection with the proposal."""
SN_CLIENT_CONFORMANCE: Final = (
    Conformance.READ
    | Conformance.WRITE
    | Conformance.UNCONFIRMED_WRITE
    | Conformance.PARAMETERIZED_ACCESS
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.INFORMATION_REPORT
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
)
"""What a short-name client proposes by default: the SN services and parameterized (selective) access."""
SN_SERVER_CONFORMANCE: Final = SN_CLIENT_CONFORMANCE
"""What a short-name server grants at most."""
ASSOCIATION_SN_BASE_NAME: Final = 0xFA00
"""Base name of the current Association SN object; an SN server's InitiateResponse names it (vaa-name)."""
_LN_VAA_NAME: Final = 0x0007

MIN_PDU_SIZE: Final = 64
"""Smallest max-receive-PDU-size either side accepts: below it a ciphered datablock has no room for data."""
MIN_CHALLENGE: Final = 8
MAX_CHALLENGE: Final = 64
_HLS_SECURITY_CONTROL: Final = 0x10  # suite 0, authentication only: what f(challenge) is computed with
_MIN_DLMS_VERSION: Final = 6
# GetResponseWithDatablock framing (tag, choice, invoke, last-block, block-number, choice, length) and
# the glo-ciphering envelope (tag, length, SC, IC, GMAC tag) a block must leave room for.
_BLOCK_OVERHEAD: Final = 12
_CIPHER_OVERHEAD: Final = 21
# A GetResponseNormal carrying data starts tag C4, choice 01, invoke byte, result choice 00.
_GET_NORMAL_HEADER: Final = 4
# ReadResponse with one data-block-result: tag, count, choice, last-block, block number (2), length (<= 3).
_SN_BLOCK_OVERHEAD: Final = 9


def _context(short_names: bool, ciphered: bool) -> ApplicationContext:
    if short_names:
        return ApplicationContext.SHORT_NAME_CIPHERED if ciphered else ApplicationContext.SHORT_NAME
    return ApplicationContext.LOGICAL_NAME_CIPHERED if ciphered else ApplicationContext.LOGICAL_NAME


class AssociationError(DlmsError):
    """The association was refused, broke its protocol, or is not in a state for the call."""


class AuthenticationFailed(AssociationError):
    """The peer did not prove knowledge of the password or keys (or we did not convince it)."""


@dataclass(frozen=True, slots=True)
class Result:
    """A finished exchange. A long GET is returned as a :class:`GetResponseNormal` with the whole value."""

    apdu: XdlmsApdu


@dataclass(frozen=True, slots=True)
class SnResult:
    """A finished SN exchange; a long read comes back as one :class:`ReadResponse` with every value.

    A meter may also answer with a ConfirmedServiceError (the classic DLMS refusal) or an
    ExceptionResponse; both are returned for the caller to report.
    """

    apdu: SnApdu | ConfirmedServiceError | ExceptionResponse


@dataclass(frozen=True, slots=True)
class NextRequest:
    """The exchange continues: send ``raw`` and feed the answer to ``handle`` again."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """Server side: a service request for the application, to be answered through ``respond``."""

    apdu: XdlmsApdu


@dataclass(frozen=True, slots=True)
class SnRequest:
    """Server side, short names: a Read or Write for the application, answered through ``respond_sn``
    (an UnconfirmedWrite is not answered)."""

    apdu: ReadRequest | WriteRequest | UnconfirmedWriteRequest


@dataclass(frozen=True, slots=True)
class Reply:
    """Server side: the association answered by itself (HLS, next block, release, refusal); send ``raw``."""

    raw: bytes


class _Phase(Enum):
    IDLE = "idle"
    AWAITING_AARE = "awaiting AARE"
    AWAITING_HLS = "awaiting HLS pass 4"
    ASSOCIATED = "associated"
    RELEASED = "released"
    FAILED = "failed"


class _Protection:
    """Glo-ciphering of one side of an association under a fixed policy, and replay checks on the other.

    ``security`` None means the association is not ciphered; then a ciphered APDU is refused too,
    because accepting it would mean deciphering with keys nobody agreed to use here. Titles and keys a
    side does not have are empty, which the security functions refuse should they ever be reached.
    """

    __slots__ = (
        "authentication_key",
        "counter",
        "encryption_key",
        "guard",
        "last_counter",
        "own_title",
        "security",
    )

    def __init__(
        self,
        security: SecurityControl | None,
        own_title: bytes,
        encryption_key: bytes,
        authentication_key: bytes,
        counter: Iterator[int],
        guard: InvocationCounterGuard,
    ) -> None:
        self.security = security
        self.own_title = own_title
        self.encryption_key = encryption_key
        self.authentication_key = authentication_key
        self.counter = counter
        self.guard = guard
        self.last_counter: int | None = None

    def next_counter(self) -> int:
        ic = next(self.counter)
        if ic > MAX_INVOCATION_COUNTER:
            raise SecurityError("invocation counter exhausted: the keys must be renewed")
        self.last_counter = ic
        return ic

    def seal(self, plain: bytes) -> bytes:
        sc = self.security
        if sc is None:
            return plain
        return encrypt(
            plain,
            security_control=sc,
            system_title=self.own_title,
            invocation_counter=self.next_counter(),
            encryption_key=self.encryption_key,
            authentication_key=self.authentication_key,
        )

    def open(self, raw: bytes, peer_title: bytes) -> bytes:
        """The plaintext of a received APDU, after the policy and replay checks."""
        if not raw:
            raise DecodeError("empty APDU", 0)
        ciphered = raw[0] in PLAIN_TAGS
        sc = self.security
        if sc is None:
            if ciphered:
                raise SecurityError(f"ciphered APDU 0x{raw[0]:02X} on an association without ciphering")
            return raw
        if not ciphered:
            if raw[0] == EXCEPTION_RESPONSE:
                # Meters answer undecipherable requests with a plain ExceptionResponse; it can only
                # report an error, never carry data, so letting it through costs nothing.
                return raw
            raise SecurityError(f"plain APDU 0x{raw[0]:02X} where the association requires ciphering")
        deciphered = decrypt(
            raw,
            encryption_key=self.encryption_key,
            authentication_key=self.authentication_key,
            system_title=peer_title,
        )
        got = deciphered.security_control
        if (sc.authenticated and not got.authenticated) or (sc.encrypted and not got.encrypted):
            raise SecurityError(
                f"APDU protected with 0x{got.to_byte():02X}, weaker than 0x{sc.to_byte():02X}"
            )
        self.guard.accept(peer_title, deciphered.invocation_counter)
        return deciphered.plaintext


def _check_title(title: bytes | None, what: str) -> bytes:
    if title is None or len(title) != SYSTEM_TITLE_LENGTH:
        raise AssociationError(f"{what} must be {SYSTEM_TITLE_LENGTH} bytes")
    return bytes(title)


def _check_challenge(challenge: bytes | None, what: str) -> bytes:
    if challenge is None or not MIN_CHALLENGE <= len(challenge) <= MAX_CHALLENGE:
        raise AssociationError(f"{what} must be {MIN_CHALLENGE}..{MAX_CHALLENGE} bytes")
    return bytes(challenge)


def _octets(result: object, what: str) -> bytes:
    if (
        not isinstance(result, Data)
        or result.type != DataType.OCTET_STRING
        or not isinstance(result.value, bytes)
    ):
        raise AuthenticationFailed(f"{what}: no octet-string in the answer")
    return result.value


class ClientAssociation:
    """The client side of one association.

    Sequence: :meth:`aarq` -> send, :meth:`handle_aare` on the answer (returns the HLS pass-3 request to
    send, or None), :meth:`handle` on the pass-4 answer; then :meth:`request` / :meth:`handle` per
    service, and :meth:`release` / :meth:`handle_rlre` at the end. ``security`` None means no ciphering
    (lowest security, or LLS/HLS-GMAC authentication with plain APDUs). ``guard`` may be shared between
    sessions so that a replay across connections is caught too; by default each association has its own.
    ``short_names`` proposes the SN context; services then go through :meth:`request_sn` /
    :meth:`handle_sn`, and ``conformance`` defaults to :data:`SN_CLIENT_CONFORMANCE`.
    """

    def __init__(
        self,
        client_sap: int,
        server_sap: int,
        *,
        mechanism: Mechanism = Mechanism.LOWEST,
        password: bytes | None = None,
        system_title: bytes | None = None,
        encryption_key: bytes | None = None,
        authentication_key: bytes | None = None,
        security: SecurityControl | None = None,
        max_pdu: int = 0xFFFF,
        invocation_counter_start: int = 1,
        conformance: Conformance | None = None,
        guard: InvocationCounterGuard | None = None,
        short_names: bool = False,
    ) -> None:
        if short_names and mechanism == Mechanism.HIGH_GMAC:
            raise ValueError("HLS-GMAC is not supported with short-name referencing (use LLS)")
        if mechanism not in (Mechanism.LOWEST, Mechanism.LOW, Mechanism.HIGH_GMAC):
            raise ValueError(f"mechanism {mechanism.name} is not supported (LOWEST, LOW or HIGH_GMAC)")
        if mechanism == Mechanism.LOW and not password:
            raise ValueError("LLS needs a password")
        needs_keys = security is not None or mechanism == Mechanism.HIGH_GMAC
        if needs_keys and (encryption_key is None or authentication_key is None or system_title is None):
            raise ValueError("HLS-GMAC and ciphering need a system title and both keys")
        if security is not None and not security.authenticated:
            raise ValueError("a ciphered association must authenticate its APDUs (security control bit 4)")
        if not MIN_PDU_SIZE <= max_pdu <= 0xFFFF:
            raise ValueError(f"max_pdu must be {MIN_PDU_SIZE}..65535")
        self.client_sap = client_sap
        self.server_sap = server_sap
        self.mechanism = mechanism
        self.max_pdu = max_pdu
        self.short_names = short_names
        if conformance is None:
            conformance = SN_CLIENT_CONFORMANCE if short_names else CLIENT_CONFORMANCE
        self.conformance = conformance
        self._password = password
        self._titled = needs_keys
        self._prot = _Protection(
            security,
            system_title or b"",
            encryption_key or b"",
            authentication_key or b"",
            count(invocation_counter_start),
            guard or InvocationCounterGuard(),
        )
        self._phase = _Phase.IDLE
        self._challenge = b""
        self._invoke_id = 0
        self._blocks: list[GetResponseWithDatablock] = []
        self._read_blocks: list[DataBlockResult] = []
        self._read_items = 1
        self.server_system_title = b""
        """The meter's system title from the AARE; empty when neither ciphering nor HLS asked for it."""
        self.negotiated: InitiateResponse | None = None

    @property
    def associated(self) -> bool:
        return self._phase is _Phase.ASSOCIATED

    @property
    def last_invocation_counter(self) -> int | None:
        """The highest invocation counter this association has used (None: none yet).

        A meter refuses a counter it has seen before, so the head-end persists this between sessions and
        starts the next one above it (``invocation_counter_start``).
        """
        return self._prot.last_counter

    def next_invoke_id(self) -> int:
        """Invoke ids cycle through 0..15 so a late answer to an earlier request is recognisable."""
        self._invoke_id = (self._invoke_id + 1) & 0x0F
        return self._invoke_id

    def _expect(self, phase: _Phase, what: str) -> None:
        if self._phase is not phase:
            raise AssociationError(f"{what} while {self._phase.value}")

    def aarq(self, challenge: bytes | None = None) -> bytes:
        """The AARQ to send; HLS needs ``challenge`` (CtoS, 8..64 random bytes from the caller)."""
        self._expect(_Phase.IDLE, "AARQ")
        auth_value = None
        if self.mechanism == Mechanism.LOW:
            auth_value = self._password
        elif self.mechanism == Mechanism.HIGH_GMAC:
            self._challenge = auth_value = _check_challenge(challenge, "HLS challenge")
        initiate = encode_initiate_request(InitiateRequest(self.conformance, self.max_pdu))
        ciphered = self._prot.security is not None
        aarq = Aarq(
            context=_context(self.short_names, ciphered),
            mechanism=None if self.mechanism == Mechanism.LOWEST else self.mechanism,
            calling_ap_title=self._prot.own_title if self._titled else None,
            calling_authentication_value=auth_value,
            user_information=self._prot.seal(initiate),
        )
        self._phase = _Phase.AWAITING_AARE
        return encode_aarq(aarq)

    def handle_aare(self, raw: bytes) -> bytes | None:
        """Check the AARE; returns the HLS pass-3 ACTION to send, or None when already associated."""
        self._expect(_Phase.AWAITING_AARE, "AARE")
        self._phase = _Phase.FAILED
        aare = decode_aare(raw)
        if aare.result != AssociationResult.ACCEPTED:
            reason = f"association {aare.result.name.lower()}, diagnostic {aare.diagnostic}"
            if (
                aare.diagnostic_source == DiagnosticSource.ACSE_SERVICE_USER
                and aare.diagnostic == AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE
            ):
                raise AuthenticationFailed(reason)
            raise AssociationError(reason)
        if self._titled:
            self.server_system_title = _check_title(aare.responding_ap_title, "responding-AP-title")
        if aare.user_information is None:
            raise AssociationError("AARE without an InitiateResponse")
        try:
            info = decode_user_information(self._prot.open(aare.user_information, self.server_system_title))
        except SecurityError as exc:
            raise AuthenticationFailed(f"InitiateResponse does not decipher: {exc}") from exc
        if isinstance(info, ConfirmedServiceError):
            raise AssociationError(f"initiate refused: {info}")
        if not isinstance(info, InitiateResponse):
            raise AssociationError("AARE carries an InitiateRequest")
        self._check_initiate(info)
        self.negotiated = info
        if self.mechanism != Mechanism.HIGH_GMAC:
            self._phase = _Phase.ASSOCIATED
            return None
        if aare.diagnostic != AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED:
            raise AssociationError(
                f"HLS: AARE diagnostic {aare.diagnostic}, expected authentication-required"
            )
        server_challenge = _check_challenge(aare.responding_authentication_value, "server challenge")
        prot = self._prot
        proof = hls_gmac(
            system_title=prot.own_title,
            invocation_counter=prot.next_counter(),
            challenge=server_challenge,
            encryption_key=prot.encryption_key,
            authentication_key=prot.authentication_key,
            security_control=_HLS_SECURITY_CONTROL,
        )
        self._phase = _Phase.AWAITING_HLS
        action = ActionRequestNormal(
            self.next_invoke_id(), REPLY_TO_HLS_AUTHENTICATION, Data.octet_string(proof)
        )
        return self._seal(action)

    def _check_initiate(self, info: InitiateResponse) -> None:
        extra = info.negotiated_conformance & ~self.conformance
        if extra:
            raise AssociationError(f"server granted conformance 0x{int(extra):06X} that was not proposed")
        required = Conformance.READ if self.short_names else Conformance.GET
        if not info.negotiated_conformance & required:
            raise AssociationError(f"server did not grant {required.name}")
        if info.server_max_receive_pdu_size < MIN_PDU_SIZE:
            raise AssociationError(
                f"server max receive PDU size {info.server_max_receive_pdu_size} too small"
            )
        if info.negotiated_dlms_version < _MIN_DLMS_VERSION:
            raise AssociationError(f"DLMS version {info.negotiated_dlms_version}")

    def _seal(self, apdu: XdlmsApdu) -> bytes:
        return self._seal_plain(encode_xdlms(apdu))

    def _seal_plain(self, plain: bytes) -> bytes:
        raw = self._prot.seal(plain)
        if self.negotiated is None or len(raw) > self.negotiated.server_max_receive_pdu_size:
            raise EncodeError(f"request of {len(raw)} bytes above the server's PDU size")
        return raw

    def request(self, apdu: XdlmsApdu) -> bytes:
        """The bytes of a service request: encoded and, when the policy says so, glo-ciphered."""
        self._expect(_Phase.ASSOCIATED, "request")
        if self.short_names:
            raise AssociationError("LN service on a short-name association: use request_sn")
        self._blocks.clear()
        return self._seal(apdu)

    def request_sn(self, apdu: SnApdu) -> bytes:
        """The bytes of an SN service request (Read, Write, UnconfirmedWrite), glo-ciphered by policy."""
        self._expect(_Phase.ASSOCIATED, "request")
        if not self.short_names:
            raise AssociationError("SN service on a logical-name association: use request")
        self._read_blocks.clear()
        self._read_items = len(apdu.items) if isinstance(apdu, ReadRequest) else 1
        return self._seal_plain(encode_sn(apdu))

    def handle_sn(self, raw: bytes, *, tables: bool = False) -> SnResult | NextRequest:
        """Decipher, check and decode an SN response; a data block that is not the last asks for the next
        with block-number-access, and the last one returns the reassembled :class:`ReadResponse`."""
        self._expect(_Phase.ASSOCIATED, "response")
        if not self.short_names:
            raise AssociationError("SN response on a logical-name association: use handle")
        plain = self._prot.open(raw, self.server_system_title)
        if plain[:1] == bytes((EXCEPTION_RESPONSE,)):
            self._read_blocks.clear()
            exception = decode_xdlms(plain)
            if not isinstance(exception, ExceptionResponse):  # cannot happen: the tag is the exception's
                raise DecodeError("not an ExceptionResponse", 0)
            return SnResult(exception)
        if plain[:1] == bytes((CONFIRMED_SERVICE_ERROR_TAG,)):
            self._read_blocks.clear()
            return SnResult(decode_confirmed_service_error(plain))
        apdu = decode_sn(plain, tables=tables)
        if not (
            isinstance(apdu, ReadResponse)
            and len(apdu.results) == 1
            and isinstance(apdu.results[0], DataBlockResult)
        ):
            self._read_blocks.clear()
            return SnResult(apdu)
        block = apdu.results[0]
        self._read_blocks.append(block)
        if not block.last_block:
            return NextRequest(
                self._seal_plain(encode_sn(ReadRequest((BlockNumberAccess(block.block_number),))))
            )
        blocks, self._read_blocks = self._read_blocks, []
        return SnResult(
            ReadResponse(reassemble_read_blocks(blocks, expected=self._read_items, tables=tables))
        )

    def handle(self, raw: bytes, *, tables: bool = False) -> Result | NextRequest:
        """Decipher, check and decode a response; a datablock that is not the last asks for the next.

        ``tables``: a uniform array (a profile buffer) comes back as a
        :class:`~openami.protocols.dlms.axdr.Table`, the cheap form for bulk reads.
        """
        if self._phase is _Phase.AWAITING_HLS:
            return self._handle_hls(raw)
        self._expect(_Phase.ASSOCIATED, "response")
        apdu = decode_xdlms(self._prot.open(raw, self.server_system_title), tables=tables)
        if not isinstance(apdu, GetResponseWithDatablock):
            return Result(apdu)
        if isinstance(apdu.raw_data, DataAccessResult):
            # The server aborted the transfer: report its reason as the outcome of the GET.
            self._blocks.clear()
            return Result(GetResponseNormal(apdu.invoke_id, apdu.raw_data))
        self._blocks.append(apdu)
        if not apdu.last_block:
            return NextRequest(self._seal(GetRequestNext(apdu.invoke_id, apdu.block_number)))
        blocks, self._blocks = self._blocks, []
        return Result(GetResponseNormal(apdu.invoke_id, reassemble_datablocks(blocks, tables=tables)))

    def _handle_hls(self, raw: bytes) -> Result:
        self._phase = _Phase.FAILED
        try:
            apdu = decode_xdlms(self._prot.open(raw, self.server_system_title))
        except SecurityError as exc:
            raise AuthenticationFailed(f"HLS pass 4 does not decipher: {exc}") from exc
        if not isinstance(apdu, ActionResponseNormal) or apdu.result != ActionResult.SUCCESS:
            raise AuthenticationFailed(f"server refused our HLS proof: {apdu}")
        prot = self._prot
        try:
            verify_hls_gmac(
                _octets(apdu.return_data, "HLS pass 4"),
                system_title=self.server_system_title,
                challenge=self._challenge,
                encryption_key=prot.encryption_key,
                authentication_key=prot.authentication_key,
            )
        except (SecurityError, DecodeError) as exc:
            raise AuthenticationFailed(f"server's HLS proof does not verify: {exc}") from exc
        self._phase = _Phase.ASSOCIATED
        return Result(apdu)

    def release(self) -> bytes:
        """The RLRQ closing the association; no further requests may be made."""
        self._expect(_Phase.ASSOCIATED, "release")
        self._phase = _Phase.RELEASED
        return encode_rlrq(Rlrq())

    def handle_rlre(self, raw: bytes) -> Rlre:
        """Decode the release response (the association is released whatever it says)."""
        return decode_rlre(raw)


class ServerAssociation:
    """The server (meter) side of one association, opened by a client at ``client_sap``.

    Policy, as IDIS meters have it: the public client (16) associates with lowest security and no
    ciphering; the management client (1) must authenticate with the LLS ``password`` or with HLS-GMAC
    under the meter's keys, and may cipher. A ciphered AARQ fixes the security control for the whole
    association. ``invocation_counter`` is the meter's single counter, shared by all its associations so
    that no two APDUs it sends ever use the same IV. ``short_names`` makes it an SN server: it accepts the
    SN contexts only (LLS or lowest security), names :data:`ASSOCIATION_SN_BASE_NAME` as vaa-name and
    serves through :meth:`receive_sn` / :meth:`respond_sn`.
    ``guard`` remembers the clients' invocation counters; a meter shares one across its
    associations (and keeps it over power cycles) so a client can never reuse a counter.
    """

    def __init__(
        self,
        client_sap: int,
        *,
        system_title: bytes,
        password: bytes | None,
        encryption_key: bytes,
        authentication_key: bytes,
        invocation_counter: Iterator[int],
        max_pdu: int = 0xFFFF,
        conformance: Conformance | None = None,
        short_names: bool = False,
        guard: InvocationCounterGuard | None = None,
    ) -> None:
        self.client_sap = client_sap
        self.max_pdu = max_pdu
        self.short_names = short_names
        if conformance is None:
            conformance = SN_SERVER_CONFORMANCE if short_names else SERVER_CONFORMANCE
        self.conformance = conformance
        self.client_max_pdu = MIN_PDU_SIZE
        self.mechanism = Mechanism.LOWEST
        self.negotiated = Conformance(0)
        self._password = password
        self._prot = _Protection(
            None,
            _check_title(system_title, "system title"),
            encryption_key,
            authentication_key,
            invocation_counter,
            InvocationCounterGuard() if guard is None else guard,
        )
        self._client_title = b""
        self._phase = _Phase.IDLE
        self._server_challenge = b""
        self._client_challenge = b""
        self._blocks: list[bytes] = []
        self._block_invoke = 0
        self._block_sent = 0

    @property
    def associated(self) -> bool:
        return self._phase is _Phase.ASSOCIATED

    @property
    def released(self) -> bool:
        return self._phase is _Phase.RELEASED

    def _reject(
        self, context: ApplicationContext, diagnostic: AcseServiceUserDiagnostic, error: bytes | None = None
    ) -> bytes:
        self._phase = _Phase.FAILED
        return encode_aare(
            Aare(context, AssociationResult.REJECTED_PERMANENT, diagnostic, user_information=error)
        )

    def handle_aarq(self, raw: bytes, challenge: bytes) -> bytes:
        """The AARE for an AARQ; ``challenge`` (StoC, random bytes from the caller) is used for HLS only."""
        if self._phase is not _Phase.IDLE:
            raise AssociationError(f"AARQ while {self._phase.value}")
        aarq = decode_aarq(raw)
        context = aarq.context
        diag = AcseServiceUserDiagnostic
        if context not in (_context(self.short_names, False), _context(self.short_names, True)):
            return self._reject(context, diag.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        ciphered = context == _context(self.short_names, True)
        mechanism = aarq.mechanism or Mechanism.LOWEST
        if self.short_names and mechanism == Mechanism.HIGH_GMAC:
            return self._reject(context, diag.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        if self.client_sap == PUBLIC_CLIENT:
            if mechanism != Mechanism.LOWEST or ciphered:
                return self._reject(context, diag.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        elif self.client_sap == MANAGEMENT_CLIENT:
            if mechanism == Mechanism.LOWEST:
                return self._reject(context, diag.AUTHENTICATION_MECHANISM_NAME_REQUIRED)
            if mechanism not in (Mechanism.LOW, Mechanism.HIGH_GMAC):
                return self._reject(context, diag.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        else:
            return self._reject(context, diag.NO_REASON_GIVEN)
        if mechanism == Mechanism.LOW and not (
            self._password
            and aarq.calling_authentication_value is not None
            and lls_matches(self._password, aarq.calling_authentication_value)
        ):
            return self._reject(context, diag.AUTHENTICATION_FAILURE)
        titled = ciphered or mechanism == Mechanism.HIGH_GMAC
        if titled:
            if aarq.calling_ap_title is None or len(aarq.calling_ap_title) != SYSTEM_TITLE_LENGTH:
                return self._reject(context, diag.CALLING_AP_TITLE_NOT_RECOGNIZED)
            self._client_title = aarq.calling_ap_title
        if mechanism == Mechanism.HIGH_GMAC:
            client_challenge = aarq.calling_authentication_value
            if client_challenge is None or not MIN_CHALLENGE <= len(client_challenge) <= MAX_CHALLENGE:
                return self._reject(context, diag.AUTHENTICATION_FAILURE)
            self._client_challenge = client_challenge
            self._server_challenge = _check_challenge(challenge, "server challenge")
        if aarq.user_information is None:
            return self._reject(context, diag.NO_REASON_GIVEN)
        plain = aarq.user_information
        if ciphered:
            try:
                deciphered = decrypt(
                    plain,
                    encryption_key=self._prot.encryption_key,
                    authentication_key=self._prot.authentication_key,
                    system_title=self._client_title,
                )
                if not deciphered.security_control.authenticated:
                    raise SecurityError("unauthenticated ciphering refused")
                self._prot.guard.accept(self._client_title, deciphered.invocation_counter)
            except (SecurityError, DecodeError):
                return self._reject(context, diag.AUTHENTICATION_FAILURE)
            self._prot.security = deciphered.security_control
            plain = deciphered.plaintext
        return self._accept(context, mechanism, plain)

    def _accept(self, context: ApplicationContext, mechanism: Mechanism, initiate: bytes) -> bytes:
        try:
            request = decode_user_information(initiate)
        except DecodeError:
            return self._reject(context, AcseServiceUserDiagnostic.NO_REASON_GIVEN)
        if not isinstance(request, InitiateRequest):
            return self._reject(context, AcseServiceUserDiagnostic.NO_REASON_GIVEN)
        # ConfirmedServiceError(initiateError, initiate, reason): 1 DLMS version too low, 3 PDU too short.
        refusal = None
        if request.proposed_dlms_version < _MIN_DLMS_VERSION:
            refusal = ConfirmedServiceError(1, 6, 1)
        elif request.client_max_receive_pdu_size < MIN_PDU_SIZE:
            refusal = ConfirmedServiceError(1, 6, 3)
        if refusal is not None:
            error = self._prot.seal(encode_confirmed_service_error(refusal))
            return self._reject(context, AcseServiceUserDiagnostic.NO_REASON_GIVEN, error)
        self.negotiated = request.proposed_conformance & self.conformance
        self.client_max_pdu = request.client_max_receive_pdu_size
        self.mechanism = mechanism
        hls = mechanism == Mechanism.HIGH_GMAC
        vaa_name = ASSOCIATION_SN_BASE_NAME if self.short_names else _LN_VAA_NAME
        response = InitiateResponse(self.negotiated, self.max_pdu, vaa_name=vaa_name)
        aare = Aare(
            context,
            AssociationResult.ACCEPTED,
            AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED if hls else AcseServiceUserDiagnostic.NULL,
            responding_ap_title=self._prot.own_title if self._client_title else None,
            mechanism=None if mechanism == Mechanism.LOWEST else mechanism,
            responding_authentication_value=self._server_challenge if hls else None,
            user_information=self._prot.seal(encode_initiate_response(response)),
        )
        self._phase = _Phase.AWAITING_HLS if hls else _Phase.ASSOCIATED
        return encode_aare(aare)

    def _exception(self, service_error: ExceptionServiceError, counter: int | None = None) -> Reply:
        return Reply(
            encode_xdlms(ExceptionResponse(ExceptionStateError.SERVICE_NOT_ALLOWED, service_error, counter))
        )

    def _open_request(self, raw: bytes) -> bytes | Reply:
        """The plaintext of a request, or the Reply that ends it (release, refusal, failed checks)."""
        if raw[:1] == bytes((RLRQ_TAG,)):
            decode_rlrq(raw)
            self._phase = _Phase.RELEASED
            return Reply(encode_rlre(Rlre()))
        if self._phase not in (_Phase.ASSOCIATED, _Phase.AWAITING_HLS):
            return self._exception(ExceptionServiceError.OPERATION_NOT_POSSIBLE)
        try:
            return self._prot.open(raw, self._client_title)
        except ReplayError:
            last = self._prot.guard.last(self._client_title)
            return self._exception(ExceptionServiceError.INVOCATION_COUNTER_ERROR, (last or 0) + 1)
        except (SecurityError, DecodeError):
            return self._exception(ExceptionServiceError.DECIPHERING_ERROR)

    @staticmethod
    def _unknown_service() -> Reply:
        return Reply(
            encode_xdlms(
                ExceptionResponse(ExceptionStateError.SERVICE_UNKNOWN, ExceptionServiceError.OTHER_REASON)
            )
        )

    def receive(self, raw: bytes) -> Request | Reply:
        """Handle one request: a :class:`Request` for the application or a :class:`Reply` to send as is."""
        plain = self._open_request(raw)
        if isinstance(plain, Reply):
            return plain
        try:
            apdu = decode_xdlms(plain)
        except DecodeError:
            return self._unknown_service()
        if self._phase is _Phase.AWAITING_HLS:
            return self._hls(apdu)
        if isinstance(apdu, GetRequestNext):
            return Reply(self._next_block(apdu))
        return Request(apdu)

    def receive_sn(self, raw: bytes) -> SnRequest | Reply:
        """Short names: an :class:`SnRequest` for the application or a :class:`Reply` to send as is (the
        next block of a long read, a release, a refusal)."""
        plain = self._open_request(raw)
        if isinstance(plain, Reply):
            return plain
        if not self.short_names:
            return self._exception(ExceptionServiceError.SERVICE_NOT_SUPPORTED)
        try:
            apdu = decode_sn(plain)
        except DecodeError:
            return self._unknown_service()
        if (
            isinstance(apdu, ReadRequest)
            and len(apdu.items) == 1
            and isinstance(apdu.items[0], BlockNumberAccess)
        ):
            return Reply(self._next_read_block(apdu.items[0]))
        if not isinstance(apdu, ReadRequest | WriteRequest | UnconfirmedWriteRequest):
            return self._exception(ExceptionServiceError.SERVICE_NOT_SUPPORTED)
        return SnRequest(apdu)

    def respond_sn(self, apdu: ReadResponse | WriteResponse) -> bytes:
        """The bytes answering an :class:`SnRequest`; a read response too long for the client goes out in
        data blocks, each a slice of the encoded result list."""
        plain = encode_sn(apdu)
        room = self.client_max_pdu - (_CIPHER_OVERHEAD if self._prot.security is not None else 0)
        if len(plain) <= room or not isinstance(apdu, ReadResponse):
            return self._prot.seal(plain)
        size = room - _SN_BLOCK_OVERHEAD
        results = plain[1:]  # the tag off: count and results, what the blocks carry
        self._blocks = [results[i : i + size] for i in range(0, len(results), size)]
        self._block_sent = 0
        return self._send_read_block()

    def _send_read_block(self) -> bytes:
        self._block_sent += 1
        last = self._block_sent == len(self._blocks)
        block = DataBlockResult(last, self._block_sent, self._blocks[self._block_sent - 1])
        if last:
            self._blocks = []
        return self._prot.seal(encode_sn(ReadResponse((block,))))

    def _next_read_block(self, access: BlockNumberAccess) -> bytes:
        if not self._blocks:
            reason = DataAccessResult.NO_LONG_GET_IN_PROGRESS
        elif access.block_number != self._block_sent:
            reason = DataAccessResult.DATA_BLOCK_NUMBER_INVALID
            self._blocks = []
        else:
            return self._send_read_block()
        return self._prot.seal(encode_sn(ReadResponse((reason,))))

    def _hls(self, apdu: XdlmsApdu) -> Reply:
        if not isinstance(apdu, ActionRequestNormal) or apdu.method != REPLY_TO_HLS_AUTHENTICATION:
            return self._exception(ExceptionServiceError.OPERATION_NOT_POSSIBLE)
        prot = self._prot
        try:
            verify_hls_gmac(
                _octets(apdu.parameters, "HLS pass 3"),
                system_title=self._client_title,
                challenge=self._server_challenge,
                encryption_key=prot.encryption_key,
                authentication_key=prot.authentication_key,
            )
        except DlmsError:
            self._phase = _Phase.FAILED
            return Reply(
                prot.seal(encode_xdlms(ActionResponseNormal(apdu.invoke_id, ActionResult.READ_WRITE_DENIED)))
            )
        proof = hls_gmac(
            system_title=prot.own_title,
            invocation_counter=prot.next_counter(),
            challenge=self._client_challenge,
            encryption_key=prot.encryption_key,
            authentication_key=prot.authentication_key,
            security_control=_HLS_SECURITY_CONTROL,
        )
        self._phase = _Phase.ASSOCIATED
        response = ActionResponseNormal(apdu.invoke_id, ActionResult.SUCCESS, Data.octet_string(proof))
        return Reply(prot.seal(encode_xdlms(response)))

    def respond(self, apdu: XdlmsApdu) -> bytes:
        """The bytes answering a :class:`Request`; a GET value too long for the client goes out in blocks."""
        plain = encode_xdlms(apdu)
        room = self.client_max_pdu - (_CIPHER_OVERHEAD if self._prot.security is not None else 0)
        if (
            len(plain) <= room
            or not isinstance(apdu, GetResponseNormal)
            or isinstance(apdu.result, DataAccessResult)
        ):
            return self._prot.seal(plain)
        size = room - _BLOCK_OVERHEAD
        value = plain[_GET_NORMAL_HEADER:]
        self._blocks = [value[i : i + size] for i in range(0, len(value), size)]
        self._block_invoke = apdu.invoke_id
        self._block_sent = 0
        return self._send_block()

    def _send_block(self) -> bytes:
        self._block_sent += 1
        last = self._block_sent == len(self._blocks)
        block = GetResponseWithDatablock(
            self._block_invoke, last, self._block_sent, self._blocks[self._block_sent - 1]
        )
        if last:
            self._blocks = []
        return self._prot.seal(encode_xdlms(block))

    def _next_block(self, apdu: GetRequestNext) -> bytes:
        if not self._blocks:
            reason: bytes | DataAccessResult = DataAccessResult.NO_LONG_GET_IN_PROGRESS
        elif apdu.block_number != self._block_sent:
            reason = DataAccessResult.DATA_BLOCK_NUMBER_INVALID
            self._blocks = []
        else:
            return self._send_block()
        return self._prot.seal(
            encode_xdlms(GetResponseWithDatablock(apdu.invoke_id, True, apdu.block_number + 1, reason))
        )
