"""Decode a captured push stream end to end: framing, segments, blocks, ciphering, APDUs, values.

This is the one-call entry point for tools and tests that hold the bytes of a capture (a serial
dump from a HAN/P1 port, a TCP payload, a logged APDU). The framing is recognised from the first
bytes: ``7E`` is HDLC (IEC 62056-46, with LLC header, possibly segmented), ``00 01`` is the
IEC 62056-47 wrapper (its version field), anything else is taken as one bare APDU (with or without
the LLC header). Decoding goes on past a broken frame or message: every failure becomes one line in
:attr:`DecodeResult.errors` and the next message is tried, because a capture of a real line is
expected to hold some garbage. Nothing but :class:`~openami.protocols.dlms.errors.DlmsError` is
caught, so a bug still surfaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from openami.protocols.dlms.apdu import DataNotification, decode_apdu
from openami.protocols.dlms.errors import DecodeError, DecryptionError, DlmsError
from openami.protocols.dlms.gbt import GBT_TAG, GbtReassembler, decode_gbt
from openami.protocols.dlms.hdlc import (
    FLAG,
    LLC_COMMAND,
    LLC_RESPONSE,
    HdlcStreamParser,
    SegmentReassembler,
)
from openami.protocols.dlms.notification import Notification, interpret, interpret_event
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.security import (
    GENERAL_CIPHERING,
    GENERAL_DED_CIPHERING,
    GENERAL_GLO_CIPHERING,
    PLAIN_TAGS,
    decrypt,
)
from openami.protocols.dlms.units import ScalerUnit
from openami.protocols.dlms.wrapper import WrapperStreamParser

__all__ = ["DecodeResult", "decode_stream", "parse_hex_text"]

_WRAPPER_VERSION: Final = b"\x00\x01"
_WRAPPER_HEADER: Final = 8
_CIPHERED_TAGS: Final = frozenset(
    {GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING, GENERAL_CIPHERING, *PLAIN_TAGS}
)
#: A ciphered APDU may hold a GBT stream and the reverse; two rounds of unwrapping cover every real case
#: and keep a crafted nesting from looping.
_MAX_UNWRAP: Final = 4


@dataclass(frozen=True)
class DecodeResult:
    """What a capture held: the notifications decoded and one line per thing that could not be."""

    notifications: list[Notification] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ hex text

_COMMENT: Final = re.compile(r"(#|//|;).*$", re.MULTILINE)
_SEPARATORS: Final = re.compile(r"[\s,:]+")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def parse_hex_text(text: str) -> bytes:
    """Bytes from hex as people paste it: whitespace, newlines, ``,``/``:`` separators, ``0x`` prefixes
    and ``#``, ``//`` or ``;`` comments are ignored. An odd number of digits or a non-hex character is a
    :class:`DecodeError`, since silently dropping a nibble would shift every later byte."""
    digits: list[str] = []
    for token in _SEPARATORS.split(_COMMENT.sub("", text)):
        body = token[2:] if token[:2] in ("0x", "0X") else token
        bad = next((c for c in body if c not in _HEX_DIGITS), None)
        if bad is not None:
            raise DecodeError(f"not a hex digit: {bad!r} in {token[:20]!r}")
        digits.append(body)
    joined = "".join(digits)
    if len(joined) % 2:
        raise DecodeError(f"odd number of hex digits ({len(joined)})")
    return bytes.fromhex(joined)


# ----------------------------------------------------------------------------------------- framing


def _hdlc_apdus(data: bytes, errors: list[str]) -> Iterator[bytes]:
    parser = HdlcStreamParser()
    frames = parser.feed(data)
    errors.extend(f"HDLC: {exc}" for exc in parser.errors)
    segments = SegmentReassembler()
    for frame in frames:
        try:
            info = segments.add(frame)
            if info is None:
                continue
            if not info:
                continue  # supervisory frames carry no APDU
            # The LLC header opens a message; GBT blocks after the first come without one.
            yield info[len(LLC_RESPONSE) :] if info[:3] in (LLC_COMMAND, LLC_RESPONSE) else info
        except DlmsError as exc:
            errors.append(f"HDLC: {exc}")
    if parser.buffered > 1:  # one byte is the closing flag the parser keeps for a following frame
        errors.append(f"HDLC: {parser.buffered} bytes of an incomplete frame at the end")


def _wrapper_apdus(data: bytes, errors: list[str]) -> Iterator[bytes]:
    parser = WrapperStreamParser()
    try:
        frames = parser.feed(data)
    except DlmsError as exc:
        errors.append(f"wrapper: {exc}")
        return
    yield from (frame.apdu for frame in frames)
    leftover = len(data) - sum(_WRAPPER_HEADER + len(frame.apdu) for frame in frames)
    if leftover:
        errors.append(f"wrapper: {leftover} bytes of an incomplete frame at the end")


def _bare_apdus(data: bytes, errors: list[str]) -> Iterator[bytes]:
    if data[:3] in (LLC_COMMAND, LLC_RESPONSE):
        data = data[3:]
    if data:
        yield data
    else:
        errors.append("empty input")


def _apdus(data: bytes, errors: list[str]) -> Iterator[bytes]:
    if data[:1] == bytes([FLAG]):
        return _hdlc_apdus(data, errors)
    if data[:2] == _WRAPPER_VERSION:
        return _wrapper_apdus(data, errors)
    return _bare_apdus(data, errors)


# ------------------------------------------------------------------------------------------ APDUs


class _Unwrapper:
    """Reassembles GBT blocks and deciphers APDUs, in whatever order the meter nested them."""

    def __init__(self, encryption_key: bytes | None, authentication_key: bytes | None) -> None:
        self.encryption_key = encryption_key
        self.authentication_key = authentication_key
        self.blocks = GbtReassembler()

    def unwrap(self, apdu: bytes) -> bytes | None:
        """The plain APDU, or None while blocks are still missing. Raises DlmsError."""
        for _ in range(_MAX_UNWRAP):
            if not apdu:
                raise DecodeError("empty APDU", 0)
            tag = apdu[0]
            if tag == GBT_TAG:
                whole = self.blocks.add(decode_gbt(apdu))
                if whole is None:
                    return None
                apdu = whole
            elif tag in _CIPHERED_TAGS:
                apdu = self._decipher(apdu)
            else:
                return apdu
        raise DecodeError(f"APDU nested more than {_MAX_UNWRAP} levels deep", 0)

    def _decipher(self, apdu: bytes) -> bytes:
        if self.encryption_key is None:
            raise DecryptionError(f"ciphered APDU (tag 0x{apdu[0]:02X}) but no encryption key given")
        deciphered = decrypt(
            apdu,
            encryption_key=self.encryption_key,
            authentication_key=self.authentication_key,
            verify_tag=self.authentication_key is not None,
        )
        if self.authentication_key is not None and not deciphered.security_control.authenticated:
            # The security control byte is only protected when it asks for authentication: with an
            # authentication key in hand, an APDU that claims to need none is refused, not trusted.
            raise DecryptionError("unauthenticated ciphered APDU refused: an authentication key was given")
        return deciphered.plaintext


def decode_stream(
    data: bytes,
    *,
    encryption_key: bytes | None = None,
    authentication_key: bytes | None = None,
    scalers: Mapping[Obis, ScalerUnit] | None = None,
) -> DecodeResult:
    """Decode every push message in ``data`` (see the module docstring for what is recognised).

    Without ``authentication_key`` the GCM tag of authenticated APDUs is not checked (meters' push
    data is often received by parties that only hold the encryption key); with it, it must verify.
    ``scalers`` is passed on to :func:`~openami.protocols.dlms.notification.interpret`.
    """
    result = DecodeResult()
    if not data:
        result.errors.append("empty input")
        return result
    unwrapper = _Unwrapper(encryption_key, authentication_key)
    seen = 0
    for apdu in _apdus(bytes(data), result.errors):
        seen += 1
        try:
            plain = unwrapper.unwrap(apdu)
            if plain is None:
                continue
            message = decode_apdu(plain)
        except DlmsError as exc:
            result.errors.append(f"APDU: {exc}")
            continue
        if isinstance(message, DataNotification):
            result.notifications.append(interpret(message, scalers=scalers))
        else:
            result.notifications.append(interpret_event(message, scalers=scalers))
    if not seen and not result.errors:
        result.errors.append("no APDU found in the input")
    return result
