"""The DSMR P1 failures, one hierarchy, so callers translate bad input at their edge with one ``except``."""

from __future__ import annotations


class DsmrError(Exception):
    """Base of every DSMR failure: the bytes are not a usable P1 telegram."""


class TelegramError(DsmrError):
    """Broken framing: no ``/`` header, no ``!`` end, a telegram over the size bound.

    ``offset`` is where in the input the problem was found, when known.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class CrcError(TelegramError):
    """The CRC-16 after ``!`` does not match the telegram (or a v4+ telegram carries none).

    A P1 port is a plain serial line without retransmission, so a mismatch means bytes were lost or
    flipped on the wire: the telegram must not be trusted, however plausible its values look.
    """

    def __init__(self, reason: str, *, expected: int | None, received: int | None) -> None:
        super().__init__(reason)
        self.expected = expected
        self.received = received


class EncryptedFrameError(DsmrError):
    """An encrypted P1 frame (E-MeterP1: Luxembourg, Austria) that cannot be opened: malformed header,
    unsupported security control, or one of the subclasses below.

    ``offset`` is where in the frame the problem was found, when known.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class TruncatedFrameError(EncryptedFrameError):
    """The frame ends before its header, or before the length its header declares."""


class DecryptionError(EncryptedFrameError):
    """The keys given do not open the frame (see the two subclasses for which one is wrong)."""


class WrongKeyError(DecryptionError):
    """The frame does not decrypt to a telegram: the encryption key is not this meter's."""


class AuthenticationError(DecryptionError):
    """The frame decrypts to a telegram but its GCM tag does not verify: a wrong authentication key, or
    bytes altered on the way. Its content must not be trusted."""
