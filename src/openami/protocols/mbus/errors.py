"""One exception hierarchy for the M-Bus stack; callers translate it at their edge (ARCHITECTURE §3.6).

Every parser in :mod:`openami.protocols.mbus` ends in a value or one of these, so a caller that catches
:class:`MbusError` has caught everything bad input can cause.
"""

from __future__ import annotations

__all__ = ["ApplicationError", "DecodeError", "EncodeError", "FrameError", "MbusError"]


class MbusError(Exception):
    """Base of every M-Bus failure."""


class DecodeError(MbusError):
    """Bytes that are not what they claim to be. ``offset`` is where decoding gave up, when known."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class FrameError(DecodeError):
    """A broken EN 13757-2 link-layer frame: start/stop byte, length fields, checksum."""


class ApplicationError(DecodeError):
    """The slave answered with an application error telegram (CI 0x70) instead of data.

    A typed error rather than a value because the caller asked for readings and got none; ``code`` is
    the error byte the meter sent (EN 13757-3 table of application errors), ``None`` when it sent none.
    """

    def __init__(self, reason: str, code: int | None) -> None:
        super().__init__(reason)
        self.code = code


class EncodeError(MbusError):
    """A request that cannot be encoded as asked (address out of range, bad wildcard pattern)."""
