"""Errors of the DLMS pull driver, as the HES sees them.

The protocol stack raises its own :class:`~openami.protocols.dlms.errors.DlmsError` family; the client
translates at its edge into these few kinds because the HES reacts per kind, not per cause: retry later
(unreachable), alert security operations and stop retrying (authentication), or dead-letter and report
(protocol).
"""

from __future__ import annotations

from openami.drivers.errors import DriverError

__all__ = [
    "DlmsAccessError",
    "DlmsAuthFailed",
    "DlmsDriverError",
    "DlmsProtocolError",
    "DlmsTimeout",
    "DlmsUnreachable",
    "FirmwareUpgradeError",
]


class DlmsDriverError(DriverError):
    """Base of DLMS driver failures."""


class DlmsUnreachable(DlmsDriverError):
    """No connection, or it broke: the meter may answer later."""


class DlmsTimeout(DlmsUnreachable):
    """The meter did not answer in time; the connection was dropped because its state is unknown."""


class DlmsAuthFailed(DlmsDriverError):
    """The meter refused our credentials or could not prove its own: retrying will not help."""


class DlmsProtocolError(DlmsDriverError):
    """The meter answered something we cannot use (malformed, refused, out of sequence)."""


class DlmsAccessError(DlmsProtocolError):
    """The meter understood the request and refused it; ``result`` names its DataAccessResult/ActionResult."""

    def __init__(self, reason: str, result: str) -> None:
        super().__init__(reason)
        self.result = result


class FirmwareUpgradeError(DlmsDriverError):
    """A firmware upgrade (image transfer) stopped: the meter refused a step, lost blocks for good, or
    reported an image that is not the one sent. Before the ``activate`` stage the meter still runs its
    old firmware.

    ``stage`` names the step (``prepare``, ``initiate``, ``transfer``, ``verify``, ``check``,
    ``activate``); ``result`` the meter's DataAccessResult/ActionResult name when it refused one.
    """

    def __init__(self, reason: str, stage: str, result: str | None = None) -> None:
        super().__init__(reason)
        self.stage = stage
        self.result = result
