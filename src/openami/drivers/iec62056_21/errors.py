"""Errors of the IEC 62056-21 readout driver, as the HES sees them.

The protocol code raises :class:`~openami.protocols.iec62056_21.errors.Iec62056Error`; the driver
translates at its edge into the kinds the HES reacts to, as the DLMS driver does: retry later
(unreachable, time-out) or dead-letter and report (protocol: malformed answer, wrong BCC).
"""

from __future__ import annotations

from openami.drivers.errors import DriverError

__all__ = [
    "Iec62056DriverError",
    "Iec62056PasswordRejected",
    "Iec62056ProtocolError",
    "Iec62056Refused",
    "Iec62056Timeout",
    "Iec62056Unreachable",
]


class Iec62056DriverError(DriverError):
    """Base of IEC 62056-21 driver failures."""


class Iec62056Unreachable(Iec62056DriverError):
    """No connection or serial line, or it broke: the meter may answer later."""


class Iec62056Timeout(Iec62056Unreachable):
    """The meter did not answer (or stopped sending) in time; the line was closed."""


class Iec62056ProtocolError(Iec62056DriverError):
    """The meter answered something we cannot use: malformed, wrong BCC, a reserved baud rate."""


class Iec62056Refused(Iec62056ProtocolError):
    """The meter refused a programming-mode step (NAK or an error message): nothing was changed by it."""


class Iec62056PasswordRejected(Iec62056Refused):
    """The meter refused the programming password (or programming mode itself): check ``keys.password``."""
