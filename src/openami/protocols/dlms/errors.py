"""One exception hierarchy for the DLMS stack; callers translate it at their edge (ARCHITECTURE §3.6)."""

from __future__ import annotations


class DlmsError(Exception):
    """Base of every DLMS failure."""


class DecodeError(DlmsError):
    """Bytes that are not what they claim to be. ``offset`` is where decoding gave up, when known."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class FrameError(DecodeError):
    """A broken HDLC or wrapper frame (bad flag, length, HCS/FCS, address)."""


class EncodeError(DlmsError):
    """A value that cannot be encoded as asked (out of range, wrong type)."""


class SecurityError(DlmsError):
    """Base of security suite failures."""


class DecryptionError(SecurityError):
    """Ciphertext that does not decrypt or authenticate with the keys given (or no key for it)."""


class ReplayError(SecurityError):
    """An invocation counter not above the last one accepted from that system title."""
