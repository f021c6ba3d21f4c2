"""Wired M-Bus pull driver: an asynchronous master over an M-Bus-to-TCP converter."""

from openami.drivers.mbus.client import MbusTcpClient
from openami.drivers.mbus.errors import (
    MbusCollision,
    MbusDriverError,
    MbusProtocolError,
    MbusTimeout,
    MbusUnreachable,
)

__all__ = [
    "MbusCollision",
    "MbusDriverError",
    "MbusProtocolError",
    "MbusTcpClient",
    "MbusTimeout",
    "MbusUnreachable",
]
