"""Errors of the wired M-Bus driver, as the HES sees them.

The protocol stack raises :class:`~openami.protocols.mbus.errors.MbusError`; the client translates at
its edge into these kinds because the HES reacts per kind: retry later (unreachable, time-out), or
dead-letter and report (protocol, collision that narrowing could not resolve).
"""

from __future__ import annotations

from openami.drivers.errors import DriverError

__all__ = [
    "MbusBaudrateRefused",
    "MbusCollision",
    "MbusDriverError",
    "MbusProtocolError",
    "MbusTimeout",
    "MbusUnreachable",
]


class MbusDriverError(DriverError):
    """Base of M-Bus driver failures."""


class MbusUnreachable(MbusDriverError):
    """No connection to the converter, or it broke: the bus may answer later."""


class MbusTimeout(MbusUnreachable):
    """No slave answered in time (no meter at that address, or it is busy)."""


class MbusProtocolError(MbusDriverError):
    """An answer arrived but is not a usable M-Bus frame or telegram (``cause`` has the decoder error)."""


class MbusCollision(MbusProtocolError):
    """Several slaves answered at once: the bytes on the bus are garbled."""


class MbusBaudrateRefused(MbusDriverError):
    """A baud-rate switch the line cannot follow: a TCP converter runs its bus side at its own rate, so
    a switched slave would go silent. Nothing was sent; say the converter follows switches if it does."""
