"""One exception hierarchy for IEC 62056-21; callers translate it at their edge, as for DLMS.

Separate from :mod:`openami.protocols.dlms.errors` because this protocol shares no framing with DLMS:
a caller decoding a readout catches :class:`Iec62056Error` (or :class:`DecodeError` for bad input) without
also swallowing DLMS failures from the same process.
"""

from __future__ import annotations

__all__ = ["BccError", "DecodeError", "EncodeError", "Iec62056Error", "SessionError"]


class Iec62056Error(Exception):
    """Base of every IEC 62056-21 failure."""


class DecodeError(Iec62056Error, ValueError):
    """Bytes that are not an IEC 62056-21 message. ``offset`` is where decoding gave up, when known.

    A :class:`ValueError` too, so generic input validation (CLI, API) treats it as bad input.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class BccError(DecodeError):
    """A data message whose block check character does not match: a line error, the data is not trusted."""

    def __init__(self, expected: int, received: int, offset: int | None = None) -> None:
        super().__init__(f"BCC mismatch: computed 0x{expected:02X}, received 0x{received:02X}", offset)
        self.expected = expected
        self.received = received


class EncodeError(Iec62056Error, ValueError):
    """A message that cannot be built as asked (a character the protocol forbids, an unknown baud rate)."""


class SessionError(Iec62056Error):
    """A session step out of order, or a meter answer the session cannot follow (e.g. a reserved baud
    rate character)."""
