"""Errors of the wireless M-Bus receiver driver, as the HES sees them.

The protocol stack raises :class:`~openami.protocols.wmbus.errors.WmbusError` for a telegram it cannot
use; the receiver reader does not raise those at all (a bad line is reported on the line and costs only
itself). What is left for the HES to react to is the receiver itself: a URL that names no receiver (fix
the configuration) and a receiver that cannot be reached (retry later; the reader already does).
"""

from __future__ import annotations

from openami.drivers.errors import DriverError

__all__ = ["WmbusDriverError", "WmbusReceiverUnreachable", "WmbusReceiverUrlError"]


class WmbusDriverError(DriverError):
    """Base of wireless M-Bus driver failures."""


class WmbusReceiverUrlError(WmbusDriverError, ValueError):
    """A receiver URL that is not ``wmbus+tcp://host:port`` or ``wmbus+serial:///dev/tty...?baud=N``."""


class WmbusReceiverUnreachable(WmbusDriverError):
    """The receiver could not be opened (no such tty, connection refused, time-out) as often as the
    caller allowed; the reader gives up only when asked to (``max_failures``)."""
