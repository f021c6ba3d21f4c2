"""Encrypted P1 ("E-MeterP1"): the DSMR telegram wrapped in AES-128-GCM, as Luxembourg (Smarty) and
Austrian meters send it. Sans-IO.

A frame is a DLMS general-glo-ciphering APDU around the plain telegram text::

    DB                     tag
    08 <system title>      8 bytes: the meter's identity, first half of the GCM nonce
    82 LL LL               long-form length of what follows (SC + frame counter + ciphertext + GCM tag)
    30                     security control: authenticated and encrypted, suite 0
    <frame counter>        4 bytes, big-endian: second half of the nonce, +1 every frame
    <ciphertext>           the telegram, ``/`` to the CRC line, encrypted
    <GCM tag>              12 bytes over AAD = 30 || AK

The nonce is system title || frame counter, the key the meter's 16-byte encryption key (EK, from the
grid operator), the additional authenticated data the security control byte and the authentication key
(AK). Frames follow each other on the line without separators, so the stream parser finds them by their
header and the length it declares. The short (``< 80``) and ``81 LL`` length forms of general-glo-
ciphering are read too; only ``82 LL LL`` is written, as meters do.

The AES-GCM itself is :mod:`openami.protocols.dlms.security`'s (the same envelope DLMS pushes use); this
module adds the P1 framing and tells the failures apart for whoever configures the keys: a frame that
does not decrypt to telegram text at all means the encryption key is wrong (:class:`WrongKeyError`); one
that decrypts to a telegram whose tag does not verify means the authentication key is wrong or bytes were
altered (:class:`AuthenticationError`). GCM alone cannot make that distinction; the plaintext's shape
(a ``/`` header, printable text) can, because a wrong key yields random bytes.

Some meters' AK is never handed out (it differs from the one their specification publishes), so keys may
leave it out: the frame is then decrypted without checking its tag and the telegram's own CRC-16 is the
only integrity check, as with an unencrypted port. That is a choice for the caller to make explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Final

from openami.protocols.dlms import security
from openami.protocols.dlms.errors import DecryptionError as DlmsDecryptionError
from openami.protocols.dlms.errors import DlmsError
from openami.protocols.dsmr.errors import (
    AuthenticationError,
    DsmrError,
    EncryptedFrameError,
    TruncatedFrameError,
    WrongKeyError,
)
from openami.protocols.dsmr.telegram import DEFAULT_TZ, MAX_TELEGRAM_BYTES, DsmrTelegram, parse_telegram

__all__ = [
    "FRAME_TAG",
    "MAX_FRAME_BYTES",
    "SECURITY_CONTROL",
    "DecryptedFrame",
    "EncryptedP1StreamParser",
    "FrameHeader",
    "P1Keys",
    "decrypt_frame",
    "encrypt_telegram",
    "frame_header",
    "parse_encrypted_telegram",
]

FRAME_TAG: Final = 0xDB
SYSTEM_TITLE_LENGTH: Final = 8
SECURITY_CONTROL: Final = 0x30
GCM_TAG_LENGTH: Final = 12
KEY_LENGTH: Final = 16
_SECURITY_HEADER: Final = 5  # SC + frame counter
#: The longest content a frame may declare: a maximal telegram, the security header and the tag.
MAX_CONTENT_BYTES: Final = _SECURITY_HEADER + MAX_TELEGRAM_BYTES + GCM_TAG_LENGTH
#: The longest frame: tag, title length, title, ``82 LL LL``, content.
MAX_FRAME_BYTES: Final = 2 + SYSTEM_TITLE_LENGTH + 3 + MAX_CONTENT_BYTES
_TITLE_END: Final = 2 + SYSTEM_TITLE_LENGTH
#: Share of printable bytes from which a plaintext is taken for telegram text (a wrong key gives ~37 %).
_TEXT_SHARE: Final = 0.95


@dataclass(frozen=True, slots=True)
class P1Keys:
    """One meter's keys. ``authentication_key`` None: decrypt without checking the tag (module docstring)."""

    encryption_key: bytes
    authentication_key: bytes | None

    def __post_init__(self) -> None:
        if len(self.encryption_key) != KEY_LENGTH:
            raise ValueError(f"encryption key must be {KEY_LENGTH} bytes, got {len(self.encryption_key)}")
        if self.authentication_key is not None and len(self.authentication_key) != KEY_LENGTH:
            raise ValueError(
                f"authentication key must be {KEY_LENGTH} bytes, got {len(self.authentication_key)}"
            )

    def __repr__(self) -> str:  # keys never end up in logs
        checked = self.authentication_key is not None
        return f"P1Keys(encryption_key=<{KEY_LENGTH} bytes>, authenticated={checked})"


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """What a frame says before its ciphertext; ``length`` is the whole frame's, header included."""

    system_title: bytes
    frame_counter: int
    security_control: int
    length: int


@dataclass(frozen=True, slots=True)
class DecryptedFrame:
    header: FrameHeader
    plaintext: bytes
    authenticated: bool
    """Whether the GCM tag was checked (False when the keys carry no authentication key)."""


def frame_header(data: bytes | bytearray, offset: int = 0) -> FrameHeader | None:
    """The header of the frame at ``offset``; None while ``data`` ends inside it.

    Raises :class:`EncryptedFrameError` when the bytes cannot start a frame (wrong tag, title length,
    length form, security control, or a length beyond :data:`MAX_FRAME_BYTES`).
    """
    avail = len(data) - offset
    if avail < 1:
        return None
    if data[offset] != FRAME_TAG:
        raise EncryptedFrameError(f"frame starts with 0x{data[offset]:02X}, not 0xDB", offset)
    if avail < 2:
        return None
    if data[offset + 1] != SYSTEM_TITLE_LENGTH:
        raise EncryptedFrameError(f"system title of {data[offset + 1]} bytes, expected 8", offset + 1)
    pos = offset + _TITLE_END
    if len(data) <= pos:
        return None
    form = data[pos]
    if form < 0x80:
        size, length_bytes = form, 0
    elif form in (0x81, 0x82):
        length_bytes = form & 0x7F
        if len(data) < pos + 1 + length_bytes:
            return None
        size = int.from_bytes(data[pos + 1 : pos + 1 + length_bytes], "big")
    else:
        raise EncryptedFrameError(f"length form 0x{form:02X} (expected 82 LL LL)", pos)
    if size < _SECURITY_HEADER + GCM_TAG_LENGTH:
        raise EncryptedFrameError(f"declared content of {size} bytes cannot hold counter and tag", pos)
    if size > MAX_CONTENT_BYTES:
        raise EncryptedFrameError(f"declared content of {size} bytes exceeds {MAX_CONTENT_BYTES}", pos)
    content = pos + 1 + length_bytes
    if len(data) < content + _SECURITY_HEADER:
        return None
    sc = data[content]
    if sc != SECURITY_CONTROL:
        # E-MeterP1 is always authenticated and encrypted; a frame claiming less would let anyone on the
        # line strip the authentication, so it is refused rather than deciphered.
        raise EncryptedFrameError(f"security control 0x{sc:02X}, expected 0x30", content)
    return FrameHeader(
        system_title=bytes(data[offset + 2 : offset + _TITLE_END]),
        frame_counter=int.from_bytes(data[content + 1 : content + _SECURITY_HEADER], "big"),
        security_control=sc,
        length=content - offset + size,
    )


def encrypt_telegram(telegram: bytes, *, system_title: bytes, frame_counter: int, keys: P1Keys) -> bytes:
    """The frame a meter sends for ``telegram`` (the complete text, ``/`` to the CRC line).

    The caller owns the frame counter and must never use one twice with the same key: GCM loses both
    confidentiality and integrity when a nonce repeats.
    """
    if keys.authentication_key is None:
        raise ValueError("a meter encrypting frames needs its authentication key")
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise ValueError(f"system title must be {SYSTEM_TITLE_LENGTH} bytes, got {len(system_title)}")
    if not telegram or len(telegram) > MAX_TELEGRAM_BYTES:
        raise ValueError(f"telegram of {len(telegram)} bytes (1..{MAX_TELEGRAM_BYTES})")
    apdu = security.encrypt(
        bytes(telegram),
        security_control=security.SecurityControl.from_byte(SECURITY_CONTROL),
        system_title=system_title,
        invocation_counter=frame_counter,
        encryption_key=keys.encryption_key,
        authentication_key=keys.authentication_key,
        general=True,
    )
    content = apdu[-(_SECURITY_HEADER + len(telegram) + GCM_TAG_LENGTH) :]
    return (
        bytes([FRAME_TAG, SYSTEM_TITLE_LENGTH])
        + system_title
        + b"\x82"
        + len(content).to_bytes(2, "big")
        + content
    )


def _looks_like_telegram(plaintext: bytes) -> bool:
    if plaintext[:1] != b"/":
        return False
    text = sum(1 for b in plaintext if 0x20 <= b < 0x7F or b in (0x09, 0x0A, 0x0D))
    return text >= _TEXT_SHARE * len(plaintext)


def _exact_frame(data: bytes) -> tuple[FrameHeader, bytes]:
    header = frame_header(data)
    if header is None or len(data) < header.length:
        raise TruncatedFrameError(
            f"frame of {len(data)} bytes ends before its "
            + ("header" if header is None else f"declared {header.length} bytes"),
            len(data),
        )
    return header, bytes(data[: header.length])


def decrypt_frame(data: bytes, keys: P1Keys) -> DecryptedFrame:
    """Open the frame at the start of ``data`` (bytes after it are ignored).

    Raises :class:`TruncatedFrameError`, :class:`EncryptedFrameError` (malformed header),
    :class:`WrongKeyError` or :class:`AuthenticationError`; all are :class:`DsmrError`.
    """
    header, frame = _exact_frame(bytes(data))
    try:
        if keys.authentication_key is not None:
            try:
                opened = security.decrypt(
                    frame, encryption_key=keys.encryption_key, authentication_key=keys.authentication_key
                )
                return DecryptedFrame(header, opened.plaintext, authenticated=True)
            except DlmsDecryptionError:
                pass  # tell a wrong EK from a wrong AK or altered bytes, below
        unverified = security.decrypt(frame, encryption_key=keys.encryption_key, verify_tag=False)
    except DlmsError as exc:  # the header was checked above: this is the stack refusing the content
        raise EncryptedFrameError(f"frame does not open: {exc}") from None
    if not _looks_like_telegram(unverified.plaintext):
        raise WrongKeyError(
            f"frame {header.frame_counter} from {header.system_title.hex().upper()} does not decrypt "
            "to a telegram: wrong encryption key"
        )
    if keys.authentication_key is not None:
        raise AuthenticationError(
            f"frame {header.frame_counter} from {header.system_title.hex().upper()}: GCM tag does not "
            "verify (wrong authentication key, or altered bytes)"
        )
    return DecryptedFrame(header, unverified.plaintext, authenticated=False)


def parse_encrypted_telegram(
    data: bytes, keys: P1Keys, *, check_crc: bool = True, tz: tzinfo = DEFAULT_TZ
) -> DsmrTelegram:
    """Decrypt one frame and parse the telegram inside (see :func:`decrypt_frame`,
    :func:`~openami.protocols.dsmr.telegram.parse_telegram`)."""
    return parse_telegram(decrypt_frame(data, keys).plaintext, check_crc=check_crc, tz=tz)


class EncryptedP1StreamParser:
    """Split an encrypted P1 byte stream into telegrams; frames that fail land in :attr:`errors`.

    Same contract as :class:`~openami.protocols.dsmr.stream.DsmrStreamParser`: ``feed`` never raises on
    content and the buffer never holds more than one maximal frame. After a frame fails (a wrong key, a
    cut-off frame swallowing the start of the next) the search resumes one byte after its start, so the
    frame that follows a damaged one is still found.
    """

    MAX_ERRORS = 1000

    def __init__(self, keys: P1Keys, *, check_crc: bool = True, tz: tzinfo = DEFAULT_TZ) -> None:
        self._keys = keys
        self._check_crc = check_crc
        self._tz = tz
        self._buf = bytearray()
        self.errors: list[DsmrError] = []
        self.last_header: FrameHeader | None = None
        """The header of the last frame that opened: which meter (system title) and its frame counter."""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[DsmrTelegram]:
        buf = self._buf
        buf += data
        out: list[DsmrTelegram] = []
        while buf:
            start = buf.find(FRAME_TAG)
            if start < 0:
                self.errors.append(EncryptedFrameError(f"{len(buf)} bytes outside a frame"))
                buf.clear()
                break
            if start:
                self.errors.append(EncryptedFrameError(f"{start} bytes outside a frame"))
                del buf[:start]
            try:
                header = frame_header(buf)
            except EncryptedFrameError as exc:
                self.errors.append(exc)
                del buf[:1]
                continue
            if header is None or len(buf) < header.length:
                break
            try:
                opened = decrypt_frame(bytes(buf[: header.length]), self._keys)
                out.append(parse_telegram(opened.plaintext, check_crc=self._check_crc, tz=self._tz))
            except DsmrError as exc:
                self.errors.append(exc)
                del buf[:1]
                continue
            self.last_header = header
            del buf[: header.length]
        del self.errors[: -self.MAX_ERRORS]
        return out
