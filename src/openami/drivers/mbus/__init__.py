"""Wired M-Bus pull driver: an asynchronous master over an M-Bus-to-TCP converter or a serial level
converter (:class:`MbusClient` over a :class:`~openami.drivers.lines.Line`)."""

from openami.drivers.mbus.client import MbusClient, MbusSerialClient, MbusTcpClient
from openami.drivers.mbus.errors import (
    MbusBaudrateRefused,
    MbusCollision,
    MbusDriverError,
    MbusProtocolError,
    MbusTimeout,
    MbusUnreachable,
)

__all__ = [
    "MbusBaudrateRefused",
    "MbusClient",
    "MbusCollision",
    "MbusDriverError",
    "MbusProtocolError",
    "MbusSerialClient",
    "MbusTcpClient",
    "MbusTimeout",
    "MbusUnreachable",
]
