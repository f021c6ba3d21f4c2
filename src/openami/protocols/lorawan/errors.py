"""One exception family for LoRaWAN integration events and device payloads.

:class:`EventFormatError`: the network server's message is not what its integration sends (drop it,
count it). :class:`CodecError`: the device's payload does not decode under its profile's codec (keep it
as a dead letter: it may be a profile mix-up). :class:`UnknownProfileError`: no codec for the profile.
"""

from __future__ import annotations

__all__ = ["CodecError", "EventFormatError", "LorawanError", "UnknownProfileError"]


class LorawanError(Exception):
    """Base of every LoRaWAN integration failure."""


class EventFormatError(LorawanError):
    """An integration event (topic or JSON) that is not well formed."""


class CodecError(LorawanError):
    """A device payload its codec cannot decode."""


class UnknownProfileError(LorawanError):
    """No codec is registered for the device profile."""
