"""The SML failures, one hierarchy, so callers translate bad input at their edge with one ``except``."""

from __future__ import annotations


class SmlError(Exception):
    """Base of every SML failure: the bytes are not a usable SML file."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class SmlFrameError(SmlError):
    """Broken transport: no start or end escape sequence, bad padding, an unknown escape, too long."""


class SmlCrcError(SmlFrameError):
    """A CRC-16/X-25 (of the file, or of one message) that does not match: bytes were lost or flipped."""


class SmlDecodeError(SmlError):
    """A file whose transport is sound but whose content is not SML: bad TL field, wrong list shape."""


class SmlEncodeError(SmlError, ValueError):
    """A value the encoder cannot write: an integer too wide for its field, a length no TL field holds."""
