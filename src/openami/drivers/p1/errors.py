"""Errors of the consumer-port (P1, SML) reader, as the HES sees them.

The protocol code raises :class:`~openami.protocols.dsmr.errors.DsmrError` and
:class:`~openami.protocols.sml.errors.SmlError` per frame; the stream parsers keep those and the reader
skips the frame. What reaches the HES is one of the kinds it reacts to, as for the other drivers: retry
later (unreachable, time-out), or report (protocol: frames arrived but none could be used, which a
retry will not fix: a wrong key, a line that corrupts every telegram).
"""

from __future__ import annotations

from openami.drivers.errors import DriverError

__all__ = ["P1DriverError", "P1ProtocolError", "P1Timeout", "P1Unreachable"]


class P1DriverError(DriverError):
    """Base of consumer-port reader failures."""


class P1Unreachable(P1DriverError):
    """No connection or serial line, or it broke (the dongle or converter closed it)."""


class P1Timeout(P1Unreachable):
    """No complete frame within the time allowed: nothing arrived, or only fragments and noise."""


class P1ProtocolError(P1DriverError):
    """Frames arrived but none was usable in time (CRC, decryption, content), or the line sent far more
    bytes than any telegram has. ``cause`` holds the last frame's error, when there was one."""

    def __init__(self, reason: str, cause: Exception | None = None) -> None:
        super().__init__(reason)
        self.cause = cause
