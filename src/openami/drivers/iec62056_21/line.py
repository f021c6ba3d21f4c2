"""The byte lines an IEC 62056-21 readout runs over: a serial tty (7E1, baud switch) or TCP.

The lines themselves are :mod:`openami.drivers.lines`, shared with the wired M-Bus master; this module
gives them the IEC 62056-21 defaults: every sign-on starts at 300 baud, 7 data bits, even parity, one
stop bit. Over a TCP converter the switch is a no-op (the converter runs its serial side at one
configured rate): read such meters with ``switch_baudrate=False`` (mode C stays at the line rate), or
say that the converter follows the switch by itself.
"""

from __future__ import annotations

from typing import Final, Self

from openami.drivers import lines
from openami.drivers.lines import Framing, Line, TcpLine, configure_serial_line
from openami.protocols.iec62056_21.messages import INITIAL_BAUDRATE, SERIAL_FRAMING

__all__ = ["IEC_FRAMING", "Line", "SerialLine", "TcpLine", "configure_serial_7e1"]

IEC_FRAMING: Final = Framing.parse(SERIAL_FRAMING)


def configure_serial_7e1(fd: int, baudrate: int = INITIAL_BAUDRATE) -> None:
    """Raw 7E1 at ``baudrate`` (see :func:`openami.drivers.lines.configure_serial_line`)."""
    configure_serial_line(fd, baudrate, IEC_FRAMING)


class SerialLine(lines.SerialLine):
    """A tty at 7E1; :meth:`open` starts it at 300 baud, as every sign-on does."""

    @classmethod
    async def open(
        cls, path: str, baudrate: int = INITIAL_BAUDRATE, framing: Framing | str = IEC_FRAMING
    ) -> Self:
        return await super().open(path, baudrate, framing)
