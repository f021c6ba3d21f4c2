"""IEC 62056-21 data readout driver: :func:`read_tcp` (serial-to-TCP converters) and
:func:`read_serial` (optical probe or RS-485 tty), over the sans-IO
:class:`~openami.protocols.iec62056_21.session.ModeCSession`; :func:`set_clock` writes a meter's clock in
programming mode (:mod:`.programming`)."""

from openami.drivers.iec62056_21.client import read_readout, read_serial, read_tcp
from openami.drivers.iec62056_21.errors import (
    Iec62056DriverError,
    Iec62056PasswordRejected,
    Iec62056ProtocolError,
    Iec62056Refused,
    Iec62056Timeout,
    Iec62056Unreachable,
)
from openami.drivers.iec62056_21.line import Line, SerialLine, TcpLine
from openami.drivers.iec62056_21.programming import set_clock, set_clock_on_line

__all__ = [
    "Iec62056DriverError",
    "Iec62056PasswordRejected",
    "Iec62056ProtocolError",
    "Iec62056Refused",
    "Iec62056Timeout",
    "Iec62056Unreachable",
    "Line",
    "SerialLine",
    "TcpLine",
    "read_readout",
    "read_serial",
    "read_tcp",
    "set_clock",
    "set_clock_on_line",
]
