"""Consumer-port readers: DSMR P1 (plain and encrypted) and SML, over TCP or a serial line.

See :mod:`openami.drivers.p1.reader` for the bounds and :mod:`openami.drivers.p1.errors` for what the
head-end sees when a read fails.
"""

from openami.drivers.p1.errors import P1DriverError, P1ProtocolError, P1Timeout, P1Unreachable
from openami.drivers.p1.reader import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TELEGRAM_S,
    SML,
    P1Reader,
    PortKind,
    dsmr,
    open_serial,
    open_tcp,
    read_dsmr_serial,
    read_dsmr_tcp,
    read_sml_serial,
    read_sml_tcp,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TELEGRAM_S",
    "SML",
    "P1DriverError",
    "P1ProtocolError",
    "P1Reader",
    "P1Timeout",
    "P1Unreachable",
    "PortKind",
    "dsmr",
    "open_serial",
    "open_tcp",
    "read_dsmr_serial",
    "read_dsmr_tcp",
    "read_sml_serial",
    "read_sml_tcp",
]
