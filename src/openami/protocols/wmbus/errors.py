"""One exception hierarchy for the wireless M-Bus stack, so a caller fed radio noise has one thing to catch.

Everything a hostile or merely damaged telegram can cause is a :class:`WmbusError`. The split below is what a
head-end acts on: :class:`DecodeError` means the bytes are broken (drop them, count a reception error),
:class:`KeyRequiredError` means the telegram is fine but we lack the meter's key (ask the operator for it),
:class:`DecryptionError` means the key we have does not fit (wrong key, or a forged/corrupted telegram).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "DecodeError",
    "DecryptionError",
    "EncodeError",
    "FormatUnknownError",
    "FrameError",
    "KeyRequiredError",
    "SecurityError",
    "UnsupportedCIError",
    "UnsupportedSecurityModeError",
    "WmbusError",
]


class WmbusError(Exception):
    """Base of every wireless M-Bus failure."""


class DecodeError(WmbusError):
    """Bytes that are not what they claim to be. ``offset`` is where decoding gave up, when known."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class EncodeError(WmbusError, ValueError):
    """A telegram the encoder was asked to build cannot exist: a value too large for its data field, too
    many encrypted blocks, a key of the wrong length. A caller's mistake, hence also a ``ValueError``."""


class FrameError(DecodeError):
    """A broken link-layer frame: length field disagreeing with the data, or a block CRC mismatch."""


class UnsupportedCIError(DecodeError):
    """A CI field this stack recognises as valid but does not decode (or one that is not assigned at all).

    Kept apart from other decode errors because it is not a reception fault: the meter speaks a layer
    (SML, DLMS, wired-only headers, manufacturer-specific) we do not handle, so counting it as noise would
    hide a whole meter population.
    """

    def __init__(self, ci: int, offset: int | None = None, what: str = "unsupported") -> None:
        super().__init__(f"{what} CI field 0x{ci:02X}", offset)
        self.ci = ci


class FormatUnknownError(UnsupportedCIError):
    """A compact frame whose format (named by its signature) has not been seen in a full frame of this
    meter model yet, or whose rebuilt frame fails the full-frame CRC. Not a reception fault either: the
    next full frame teaches the format."""

    def __init__(self, ci: int, signature: int, what: str = "format not seen in a full frame yet") -> None:
        DecodeError.__init__(self, f"compact frame (CI 0x{ci:02X}, signature 0x{signature:04X}): {what}")
        self.ci = ci
        self.signature = signature


class SecurityError(WmbusError):
    """Base of security failures (missing key, wrong key, unsupported protection)."""


class UnsupportedSecurityModeError(SecurityError):
    """A security mode that is not implemented (DES modes 2-4, reserved values, ...)."""

    def __init__(self, mode: int) -> None:
        super().__init__(f"unsupported security mode {mode}")
        self.mode = mode


class DecryptionError(SecurityError):
    """Ciphertext that does not decrypt to a plausible plaintext with the key given.

    Raised instead of handing out garbage records: the 2F 2F filler check (modes 5 and 7), the ELL payload
    CRC, or the AFL MAC failed.
    """


class AuthenticationError(DecryptionError):
    """An AFL MAC that does not verify: wrong key, or a tampered telegram."""


class KeyRequiredError(SecurityError):
    """The telegram is encrypted and no key was passed for it."""
