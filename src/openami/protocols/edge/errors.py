"""What can be wrong with an envelope, as the receiver acts on it.

:class:`EnvelopeFormatError`: not an envelope of ours (drop, count as noise). :class:`TamperedEnvelopeError`:
the tag does not verify under the sender's key (wrong key, altered bytes, another gateway's envelope on
this gateway's topic): reject and log as a security event. :class:`ReplayError`: a valid envelope whose
sequence number was already accepted (a lost acknowledgement makes the gateway resend; an attacker may
replay): never stored twice, acknowledged again. :class:`EnvelopeTooLargeError`: a payload that inflates
past the limit (a decompression bomb).
"""

from __future__ import annotations

__all__ = [
    "EdgeLinkError",
    "EnvelopeFormatError",
    "EnvelopeTooLargeError",
    "ReplayError",
    "TamperedEnvelopeError",
]


class EdgeLinkError(Exception):
    """Base of every gateway-link envelope failure."""


class EnvelopeFormatError(EdgeLinkError):
    """Bytes that are not an envelope: too short, wrong magic or version, unknown kind or compression."""


class TamperedEnvelopeError(EdgeLinkError):
    """The authentication tag does not verify: wrong key, altered bytes, or a header moved elsewhere."""


class EnvelopeTooLargeError(EdgeLinkError):
    """The payload inflates beyond the receiver's limit."""


class ReplayError(EdgeLinkError):
    """An authentic envelope whose sequence number the receiver has already accepted."""

    def __init__(self, seq: int, highest: int) -> None:
        super().__init__(f"sequence {seq} already accepted (highest {highest})")
        self.seq = seq
        self.highest = highest
