"""DLMS/COSEM security suite 0 (AES-GCM-128) for xDLMS APDUs, written from the public Green Book summaries.

A ciphered APDU carries a *security header* (security control byte SC and a 4-byte invocation counter IC)
followed by the protected information. The GCM initialisation vector is the sender's 8-byte system title
followed by the IC, so the same (key, title, IC) must never protect two messages: that is why receivers
keep an :class:`InvocationCounterGuard`. Depending on SC the information is

* authenticated and encrypted: AES-GCM, AAD = SC || AK, 12-byte tag after the ciphertext;
* authenticated only: the plaintext followed by a 12-byte GMAC tag over SC || AK || plaintext;
* encrypted only: the GCM keystream (AES-CTR from counter block IV || 00000002) with no tag.

Three envelopes are handled. *glo*/*ded* APDUs (one tag per service, e.g. 0xC8 glo-get-request) carry no
system title: the caller knows it from the association. *general-glo-ciphering* (0xDB) and
*general-ded-ciphering* (0xDC) carry the sender's system title inside, which is what push messages use.
*general-ciphering* (0xDD) carries a transaction id, the originator's and recipient's system titles, a
date-time, other information and optionally which key was used (key-info) before the same ciphered
content; with suite 0 the IV is the originator's title and the counter, and the additional authenticated
data is SC || AK as for the other envelopes (the extra fields enter the AAD only with suites 1 and 2, which
are not supported). Key-info naming a wrapped or agreed key (key transport / key agreement) is refused with
:class:`KeyInfoNotSupported`.
Everything here is pure computation on bytes; every failure is a
:class:`~openami.protocols.dlms.errors.DlmsError` so a parser fed hostile bytes has one thing to catch.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openami.protocols.dlms.errors import (
    DecodeError,
    DecryptionError,
    EncodeError,
    ReplayError,
    SecurityError,
)

__all__ = [
    "DED_TAGS",
    "GENERAL_CIPHERING",
    "GENERAL_DED_CIPHERING",
    "GENERAL_GLO_CIPHERING",
    "GLO_TAGS",
    "PLAIN_TAGS",
    "Deciphered",
    "GeneralCipheringError",
    "GeneralCipheringHeader",
    "InvocationCounterGuard",
    "KeyId",
    "KeyInfoNotSupported",
    "SecurityControl",
    "decrypt",
    "encrypt",
    "encrypt_general_ciphering",
    "general_ciphering_header",
    "hls_gmac",
    "lls_matches",
    "verify_hls_gmac",
]

GENERAL_GLO_CIPHERING: Final = 0xDB
GENERAL_DED_CIPHERING: Final = 0xDC
#: general-ciphering (0xDD): see :class:`GeneralCipheringHeader` and :func:`encrypt_general_ciphering`.
GENERAL_CIPHERING: Final = 0xDD

SYSTEM_TITLE_LENGTH: Final = 8
TAG_LENGTH: Final = 12
_FULL_TAG: Final = 16
KEY_LENGTH_SUITE_0: Final = 16
MAX_INVOCATION_COUNTER: Final = 0xFFFF_FFFF
_HEADER_LENGTH: Final = 5  # SC + IC

#: Plaintext xDLMS tag -> global-key ciphered tag (Green Book xDLMS-APDU CHOICE). Initiate request/response
#: and the short-name services exist only in glo form: a dedicated key is not yet agreed when they are sent.
GLO_TAGS: Final = MappingProxyType(
    {
        0x01: 0x21,  # initiate-request
        0x05: 0x25,  # read-request (SN)
        0x06: 0x26,  # write-request (SN)
        0x08: 0x28,  # initiate-response
        0x0C: 0x2C,  # read-response (SN)
        0x0D: 0x2D,  # write-response (SN)
        0x0E: 0x2E,  # confirmed-service-error
        0x16: 0x36,  # unconfirmed-write-request (SN)
        0x18: 0x38,  # information-report-request (SN)
        0xC0: 0xC8,  # get-request
        0xC1: 0xC9,  # set-request
        0xC2: 0xCA,  # event-notification-request
        0xC3: 0xCB,  # action-request
        0xC4: 0xCC,  # get-response
        0xC5: 0xCD,  # set-response
        0xC7: 0xCF,  # action-response
    }
)
#: Plaintext xDLMS tag -> dedicated-key ciphered tag (LN services only).
DED_TAGS: Final = MappingProxyType(
    {
        0xC0: 0xD0,  # get-request
        0xC1: 0xD1,  # set-request
        0xC2: 0xD2,  # event-notification-request
        0xC3: 0xD3,  # action-request
        0xC4: 0xD4,  # get-response
        0xC5: 0xD5,  # set-response
        0xC7: 0xD7,  # action-response
    }
)
#: Ciphered tag (glo or ded) -> the plaintext tag it protects, for callers dispatching on a ciphered APDU.
PLAIN_TAGS: Final = MappingProxyType(
    {ciphered: plain for table in (GLO_TAGS, DED_TAGS) for plain, ciphered in table.items()}
)


@dataclass(frozen=True, slots=True)
class SecurityControl:
    """The security control byte: suite id (bits 0-3), A (bit 4), E (bit 5), key set (bit 6), compression (7).

    ``broadcast_key`` only tells which key the sender used (the caller picks it); ``compressed`` is decoded
    so it can be reported, but compressed APDUs are refused because no supported meter uses V.44.
    """

    suite: int
    authenticated: bool
    encrypted: bool
    broadcast_key: bool = False
    compressed: bool = False

    @classmethod
    def from_byte(cls, b: int) -> SecurityControl:
        if not 0 <= b <= 0xFF:
            raise DecodeError(f"security control byte out of range: {b}")
        return cls(
            suite=b & 0x0F,
            authenticated=bool(b & 0x10),
            encrypted=bool(b & 0x20),
            broadcast_key=bool(b & 0x40),
            compressed=bool(b & 0x80),
        )

    def to_byte(self) -> int:
        if not 0 <= self.suite <= 0x0F:
            raise EncodeError(f"security suite out of range: {self.suite}")
        return (
            self.suite
            | (0x10 if self.authenticated else 0)
            | (0x20 if self.encrypted else 0)
            | (0x40 if self.broadcast_key else 0)
            | (0x80 if self.compressed else 0)
        )


class KeyId(IntEnum):
    """key-info identified-key of general-ciphering: which global key protects the content."""

    GLOBAL_UNICAST_ENCRYPTION_KEY = 0
    GLOBAL_BROADCAST_ENCRYPTION_KEY = 1


class KeyInfoNotSupported(SecurityError):
    """general-ciphering whose key-info transports or agrees a key (wrapped-key, agreed-key): the content
    key is not one the caller holds, and key transport/agreement is not implemented."""


class GeneralCipheringError(DecodeError, SecurityError):
    """A general-ciphering APDU whose fields do not parse.

    Both a DecodeError (the bytes are malformed) and a SecurityError, because callers written when 0xDD
    could not be deciphered at all treat any failure to open one as a security refusal.
    """


@dataclass(frozen=True, slots=True)
class GeneralCipheringHeader:
    """What general-ciphering carries before its ciphered content.

    ``originator_system_title`` (8 bytes) is the sender's and goes into the IV; ``recipient_system_title``
    may be empty (broadcast); ``date_time`` is empty or a 12-byte COSEM date-time; ``key_id`` is the
    identified key of key-info, None when key-info is absent.
    """

    transaction_id: bytes
    originator_system_title: bytes
    recipient_system_title: bytes = b""
    date_time: bytes = b""
    other_information: bytes = b""
    key_id: KeyId | None = None


@dataclass(frozen=True, slots=True)
class Deciphered:
    """A deciphered APDU; ``system_title`` is the sender's (from the APDU, or as the caller gave it).
    ``general`` holds the header of a general-ciphering APDU, None for the other envelopes."""

    plaintext: bytes
    security_control: SecurityControl
    invocation_counter: int
    system_title: bytes | None
    general: GeneralCipheringHeader | None = None


def _check_suite(sc: SecurityControl) -> None:
    """Refuse what this module cannot protect correctly rather than mis-handle it."""
    if sc.suite != 0:
        raise SecurityError(f"security suite {sc.suite} not supported (only suite 0, AES-GCM-128)")
    if sc.compressed:
        raise SecurityError("compressed ciphered APDUs are not supported")
    if not (sc.authenticated or sc.encrypted):
        # A "ciphered" APDU with no protection would let a downgrade pass as deciphered: refuse it.
        raise SecurityError("security control asks for neither authentication nor encryption")


def _check_key(name: str, key: bytes) -> None:
    if len(key) != KEY_LENGTH_SUITE_0:
        raise SecurityError(f"{name} must be {KEY_LENGTH_SUITE_0} bytes for suite 0, got {len(key)}")


def _check_title(title: bytes) -> None:
    if len(title) != SYSTEM_TITLE_LENGTH:
        raise SecurityError(f"system title must be {SYSTEM_TITLE_LENGTH} bytes, got {len(title)}")


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    return system_title + invocation_counter.to_bytes(4, "big")


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """The GCM keystream applied to ``data``: GCM encrypts from counter block IV || 00000002."""
    ctx = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
    return ctx.update(data) + ctx.finalize()


def _gcm_seal(key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """AES-GCM encryption with the tag truncated to the 12 bytes DLMS carries.

    The one-shot AEAD call costs a quarter of a cipher context (every APDU of a session is sealed).
    """
    sealed = AESGCM(key).encrypt(iv, plaintext, aad)
    return sealed[:-_FULL_TAG], sealed[-_FULL_TAG:][:TAG_LENGTH]


def _gcm_open(key: bytes, iv: bytes, aad: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """Decrypt and check a 12-byte tag.

    The one-shot AEAD API only checks full 16-byte tags, so the plaintext is recovered with GCM's own
    keystream (encrypting the ciphertext under the same IV undoes the encryption: GCM is a counter
    mode) and the tag recomputed over it and compared in constant time: two one-shot calls, still
    cheaper than one cipher context.
    """
    if len(tag) != TAG_LENGTH:
        raise DecryptionError(f"authentication tag must be {TAG_LENGTH} bytes, got {len(tag)}")
    aead = AESGCM(key)
    plaintext = aead.encrypt(iv, ciphertext, None)[:-_FULL_TAG]
    expected = aead.encrypt(iv, plaintext, aad)[-_FULL_TAG:][:TAG_LENGTH]
    if not hmac.compare_digest(expected, tag):
        raise DecryptionError("authentication tag does not verify (wrong key or altered data)")
    return plaintext


def _encode_length(n: int) -> bytes:
    """A-XDR length: one byte below 128, else 0x80 | count followed by the big-endian length."""
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def _decode_length(data: bytes, offset: int) -> tuple[int, int]:
    """Returns (length, offset after it)."""
    if offset >= len(data):
        raise DecodeError("truncated: length missing", offset)
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    size = first & 0x7F
    if not 1 <= size <= 4:
        raise DecodeError(f"unsupported A-XDR length form 0x{first:02X}", offset)
    end = offset + 1 + size
    if end > len(data):
        raise DecodeError("truncated: length bytes missing", offset)
    return int.from_bytes(data[offset + 1 : end], "big"), end


def _take(data: bytes, offset: int, length: int, what: str) -> tuple[bytes, int]:
    end = offset + length
    if end > len(data):
        raise DecodeError(f"truncated: {what} needs {length} bytes, {len(data) - offset} left", offset)
    return data[offset:end], end


_KEY_INFO_IDENTIFIED, _KEY_INFO_WRAPPED, _KEY_INFO_AGREED = 0, 1, 2


def _parse_general_header(apdu: bytes) -> tuple[GeneralCipheringHeader, int]:
    """The header of a general-ciphering APDU and the offset of its ciphered-content length."""
    try:
        offset = 1
        fields: list[bytes] = []
        for what in ("transaction-id", "originator-system-title", "recipient-system-title", "date-time"):
            length, offset = _decode_length(apdu, offset)
            field, offset = _take(apdu, offset, length, what)
            fields.append(field)
        length, offset = _decode_length(apdu, offset)
        other, offset = _take(apdu, offset, length, "other-information")
        present, offset = _take(apdu, offset, 1, "key-info presence")
        key_id = None
        if present[0] > 1:
            raise DecodeError(f"key-info: presence flag 0x{present[0]:02X}", offset - 1)
        if present[0]:
            key_id, offset = _parse_key_info(apdu, offset)
    except DecodeError as exc:
        raise GeneralCipheringError(f"general-ciphering: {exc.reason}", exc.offset) from None
    transaction, originator, recipient, date_time = fields
    if len(originator) != SYSTEM_TITLE_LENGTH:
        raise GeneralCipheringError(
            f"general-ciphering: originator system title of {len(originator)} bytes, "
            f"expected {SYSTEM_TITLE_LENGTH}"
        )
    return GeneralCipheringHeader(transaction, originator, recipient, date_time, other, key_id), offset


def _parse_key_info(apdu: bytes, offset: int) -> tuple[KeyId, int]:
    choice, offset = _take(apdu, offset, 1, "key-info")
    if choice[0] in (_KEY_INFO_WRAPPED, _KEY_INFO_AGREED):
        kind = "wrapped-key" if choice[0] == _KEY_INFO_WRAPPED else "agreed-key"
        raise KeyInfoNotSupported(
            f"general-ciphering key-info {kind} is not supported (identified keys only)"
        )
    if choice[0] != _KEY_INFO_IDENTIFIED:
        raise DecodeError(f"unknown key-info CHOICE {choice[0]}", offset - 1)
    key, offset = _take(apdu, offset, 1, "key-id")
    try:
        return KeyId(key[0]), offset
    except ValueError:
        raise DecodeError(f"unknown key-id {key[0]}", offset - 1) from None


def general_ciphering_header(apdu: bytes) -> GeneralCipheringHeader:
    """The header of a general-ciphering APDU, without deciphering it: the originator's system title is
    what a receiver looks its keys up by. Raises :class:`GeneralCipheringError` or
    :class:`KeyInfoNotSupported`."""
    apdu = bytes(apdu)
    if apdu[:1] != bytes([GENERAL_CIPHERING]):
        raise GeneralCipheringError("not a general-ciphering APDU (tag 0xDD)", 0)
    return _parse_general_header(apdu)[0]


def decrypt(
    apdu: bytes,
    *,
    encryption_key: bytes,
    authentication_key: bytes | None = None,
    system_title: bytes | None = None,
    verify_tag: bool = True,
) -> Deciphered:
    """Decipher a glo-, ded-, general-glo-, general-ded- or general-ciphered APDU.

    ``system_title`` is required for glo/ded APDUs (it is not in them) and ignored for the general ones.
    For general-ciphering the caller gives the key its key-info names (``Deciphered.general.key_id``; see
    :func:`general_ciphering_header` to read it first).
    ``verify_tag=False`` skips the tag check of authenticated APDUs; it exists because utilities often
    receive push data from meters whose authentication key they were never given. It forfeits integrity,
    so use it only where the data is trusted by other means. The invocation counter is returned, not
    checked: replay protection is the caller's, through :class:`InvocationCounterGuard`. So is the
    security policy: the SC byte is only authenticated when it asks for authentication, so an attacker
    can rewrite an APDU as encryption-only; compare ``security_control`` with what the association requires.
    """
    _check_key("encryption key", encryption_key)
    if not apdu:
        raise DecodeError("empty APDU", 0)
    tag = apdu[0]
    offset = 1
    general = None
    if tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
        title_length, offset = _decode_length(apdu, offset)
        if title_length != SYSTEM_TITLE_LENGTH:
            raise DecodeError(f"system title of {title_length} bytes, expected {SYSTEM_TITLE_LENGTH}", offset)
        title, offset = _take(apdu, offset, title_length, "system title")
    elif tag in PLAIN_TAGS:
        if system_title is None:
            raise SecurityError(f"APDU tag 0x{tag:02X} carries no system title: the caller must give it")
        _check_title(system_title)
        title = system_title
    elif tag == GENERAL_CIPHERING:
        general, offset = _parse_general_header(apdu)
        title = general.originator_system_title
    else:
        raise DecodeError(f"not a ciphered APDU tag: 0x{tag:02X}", 0)

    content_length, offset = _decode_length(apdu, offset)
    content, end = _take(apdu, offset, content_length, "ciphered content")
    if end != len(apdu):
        raise DecodeError(f"{len(apdu) - end} bytes after the ciphered content", end)
    if len(content) < _HEADER_LENGTH:
        raise DecodeError("truncated: security header needs 5 bytes", offset)
    sc = SecurityControl.from_byte(content[0])
    _check_suite(sc)
    ic = int.from_bytes(content[1:_HEADER_LENGTH], "big")
    body = content[_HEADER_LENGTH:]
    iv = _iv(title, ic)

    if sc.authenticated:
        if len(body) < TAG_LENGTH:
            raise DecodeError("truncated: authentication tag missing", offset + _HEADER_LENGTH)
        information, received_tag = body[:-TAG_LENGTH], body[-TAG_LENGTH:]
        if not verify_tag:
            plaintext = _ctr(encryption_key, iv, information) if sc.encrypted else information
        else:
            if authentication_key is None:
                raise DecryptionError("APDU is authenticated but no authentication key was given")
            _check_key("authentication key", authentication_key)
            aad = bytes([content[0]]) + authentication_key
            if sc.encrypted:
                plaintext = _gcm_open(encryption_key, iv, aad, information, received_tag)
            else:
                _, expected = _gcm_seal(encryption_key, iv, aad + information, b"")
                if not hmac.compare_digest(expected, received_tag):
                    raise DecryptionError("authentication tag does not verify (wrong key or altered data)")
                plaintext = information
    else:
        plaintext = _ctr(encryption_key, iv, body)
    return Deciphered(
        plaintext=plaintext, security_control=sc, invocation_counter=ic, system_title=title, general=general
    )


def encrypt(
    plaintext: bytes,
    *,
    security_control: SecurityControl,
    system_title: bytes,
    invocation_counter: int,
    encryption_key: bytes,
    authentication_key: bytes | None,
    ciphered_tag: int | None = None,
    general: bool = False,
) -> bytes:
    """Protect ``plaintext`` (a complete xDLMS APDU) as :func:`decrypt` reads it.

    With ``general=True`` the result is general-glo-ciphering (or general-ded-ciphering when
    ``ciphered_tag`` is 0xDC) with ``system_title`` inside; otherwise the envelope is ``ciphered_tag``,
    by default the glo tag of the plaintext's service. The caller owns the invocation counter and must
    never reuse one with the same key and title: GCM loses confidentiality and integrity when it does.
    """
    sc = security_control
    _check_suite(sc)
    _check_key("encryption key", encryption_key)
    _check_title(system_title)
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise EncodeError(f"invocation counter out of range: {invocation_counter}")
    if general:
        tag = GENERAL_GLO_CIPHERING if ciphered_tag is None else ciphered_tag
        if tag not in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
            raise EncodeError(f"0x{tag:02X} is not a general-ciphering tag")
    elif ciphered_tag is None:
        if not plaintext or plaintext[0] not in GLO_TAGS:
            first = f"0x{plaintext[0]:02X}" if plaintext else "nothing"
            raise EncodeError(f"no glo-ciphered tag for plaintext tag {first}; use general=True")
        tag = GLO_TAGS[plaintext[0]]
    else:
        if ciphered_tag not in PLAIN_TAGS:
            raise EncodeError(f"0x{ciphered_tag:02X} is not a glo/ded-ciphered tag")
        tag = ciphered_tag

    content = _seal_content(
        plaintext, sc, system_title, invocation_counter, encryption_key, authentication_key
    )
    prefix = bytes([tag])
    if general:
        prefix += _encode_length(len(system_title)) + system_title
    return prefix + _encode_length(len(content)) + content


def _seal_content(
    plaintext: bytes,
    sc: SecurityControl,
    system_title: bytes,
    invocation_counter: int,
    encryption_key: bytes,
    authentication_key: bytes | None,
) -> bytes:
    """SC || IC || protected information: the ciphered content every envelope carries."""
    sc_byte = sc.to_byte()
    iv = _iv(system_title, invocation_counter)
    if sc.authenticated:
        if authentication_key is None:
            raise SecurityError("authenticated security control needs an authentication key")
        _check_key("authentication key", authentication_key)
        aad = bytes([sc_byte]) + authentication_key
        if sc.encrypted:
            ciphertext, auth_tag = _gcm_seal(encryption_key, iv, aad, plaintext)
            body = ciphertext + auth_tag
        else:
            _, auth_tag = _gcm_seal(encryption_key, iv, aad + plaintext, b"")
            body = plaintext + auth_tag
    else:
        body = _ctr(encryption_key, iv, plaintext)
    return bytes([sc_byte]) + invocation_counter.to_bytes(4, "big") + body


def encrypt_general_ciphering(
    plaintext: bytes,
    *,
    header: GeneralCipheringHeader,
    security_control: SecurityControl,
    invocation_counter: int,
    encryption_key: bytes,
    authentication_key: bytes | None,
) -> bytes:
    """Protect ``plaintext`` as a general-ciphering (0xDD) APDU, which :func:`decrypt` reads.

    The IV is the header's originator system title and ``invocation_counter``; the caller owns the
    counter exactly as for :func:`encrypt`. ``header.key_id`` None sends no key-info.
    """
    sc = security_control
    _check_suite(sc)
    _check_key("encryption key", encryption_key)
    _check_title(header.originator_system_title)
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise EncodeError(f"invocation counter out of range: {invocation_counter}")
    out = bytearray([GENERAL_CIPHERING])
    for field in (
        header.transaction_id,
        header.originator_system_title,
        header.recipient_system_title,
        header.date_time,
        header.other_information,
    ):
        out += _encode_length(len(field)) + field
    if header.key_id is None:
        out.append(0)
    else:
        try:
            key_id = KeyId(header.key_id)
        except ValueError:
            raise EncodeError(f"unknown key-id {header.key_id!r}") from None
        out += bytes([1, _KEY_INFO_IDENTIFIED, key_id])
    content = _seal_content(
        plaintext, sc, header.originator_system_title, invocation_counter, encryption_key, authentication_key
    )
    return bytes(out) + _encode_length(len(content)) + content


def hls_gmac(
    *,
    system_title: bytes,
    invocation_counter: int,
    challenge: bytes,
    encryption_key: bytes,
    authentication_key: bytes,
    security_control: int = 0x10,
) -> bytes:
    """f(challenge) for HLS mechanism 5: SC || IC || GMAC(SC || AK || challenge), 17 bytes.

    ``system_title`` and ``invocation_counter`` are those of the party computing the reply (the client
    answers the server's challenge with its own title), which is what makes the proof unforgeable by a
    peer reflecting it back.
    """
    sc = SecurityControl.from_byte(security_control)
    if sc.suite != 0:
        raise SecurityError(f"security suite {sc.suite} not supported (only suite 0)")
    _check_key("encryption key", encryption_key)
    _check_key("authentication key", authentication_key)
    _check_title(system_title)
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise EncodeError(f"invocation counter out of range: {invocation_counter}")
    aad = bytes([security_control]) + authentication_key + challenge
    _, tag = _gcm_seal(encryption_key, _iv(system_title, invocation_counter), aad, b"")
    return bytes([security_control]) + invocation_counter.to_bytes(4, "big") + tag


def verify_hls_gmac(
    reply: bytes,
    *,
    system_title: bytes,
    challenge: bytes,
    encryption_key: bytes,
    authentication_key: bytes,
) -> int:
    """Check a peer's f(challenge) against the challenge we sent; returns its invocation counter.

    ``system_title`` is the peer's. The counter is returned so the caller can feed it to an
    :class:`InvocationCounterGuard`; a mismatch raises :class:`DecryptionError`.
    """
    if len(reply) != _HEADER_LENGTH + TAG_LENGTH:
        raise DecodeError(f"HLS-GMAC reply must be {_HEADER_LENGTH + TAG_LENGTH} bytes, got {len(reply)}")
    sc = SecurityControl.from_byte(reply[0])
    if sc.suite != 0 or not sc.authenticated:
        raise DecryptionError(f"HLS-GMAC reply has unexpected security control 0x{reply[0]:02X}")
    ic = int.from_bytes(reply[1:_HEADER_LENGTH], "big")
    expected = hls_gmac(
        system_title=system_title,
        invocation_counter=ic,
        challenge=challenge,
        encryption_key=encryption_key,
        authentication_key=authentication_key,
        security_control=reply[0],
    )
    if not hmac.compare_digest(expected, reply):
        raise DecryptionError("HLS-GMAC reply does not verify")
    return ic


def lls_matches(expected: bytes, given: bytes) -> bool:
    """LLS (mechanism 1) password check in constant time, so timing does not leak a matching prefix."""
    return hmac.compare_digest(expected, given)


class InvocationCounterGuard:
    """Replay protection: the last accepted invocation counter per sender system title.

    Memory is bounded by keeping the ``max_titles`` most recently used titles (LRU). A title pushed out
    starts afresh, so a replay of its old messages would be accepted: size the bound above the number of
    meters a process talks to, and persist :meth:`last` across restarts for the same reason. Not
    thread-safe: the sans-IO stack runs one decoder per connection or task; share one across threads
    only behind a lock.
    """

    def __init__(self, max_titles: int = 100_000) -> None:
        if max_titles < 1:
            raise ValueError("max_titles must be at least 1")
        self._max_titles = max_titles
        self._last: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last(self, system_title: bytes) -> int | None:
        """The last accepted counter for ``system_title``, or None when none is remembered."""
        return self._last.get(bytes(system_title))

    def accept(self, system_title: bytes, counter: int) -> None:
        """Record ``counter`` or raise :class:`ReplayError` if it is not above the last one accepted."""
        if not 0 <= counter <= MAX_INVOCATION_COUNTER:
            raise ReplayError(f"invocation counter out of range: {counter}")
        title = bytes(system_title)
        last = self._last.get(title)
        if last is not None and counter <= last:
            raise ReplayError(f"invocation counter {counter} not above {last} for system title {title.hex()}")
        self._last[title] = counter
        self._last.move_to_end(title)
        if len(self._last) > self._max_titles:
            self._last.popitem(last=False)
