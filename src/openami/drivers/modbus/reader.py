"""Reading a Modbus meter over TCP (or RTU behind a serial gateway) with pymodbus.

One :class:`ModbusMeterReader` per connection: :meth:`read` sends the requests :func:`plan_reads`
planned for the meter's map and decodes every point. Failures are typed so the head-end can count
them like DLMS ones: :class:`ModbusUnreachable` (no connection, no answer in time) and
:class:`ModbusDeviceError` (the device answered with an exception code, for example a register map that
does not match the device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from openami.drivers.errors import DriverError
from openami.drivers.modbus.registers import Point, ReadBlock, RegisterMap, decode_point, plan_reads

__all__ = ["ModbusDeviceError", "ModbusDriverError", "ModbusMeterReader", "ModbusUnreachable", "PointValue"]


class ModbusDriverError(DriverError):
    """Base of the Modbus driver's failures."""


class ModbusUnreachable(ModbusDriverError):
    """No connection to the device or gateway, or no answer within the time-out."""


class ModbusDeviceError(ModbusDriverError):
    """The device answered a request with a Modbus exception (illegal address, device busy, ...)."""


@dataclass(frozen=True, slots=True)
class PointValue:
    point: Point
    value: float


class ModbusMeterReader:
    """``async with ModbusMeterReader(host, port, device_id, register_map) as meter: await meter.read()``."""

    def __init__(
        self, host: str, port: int, device_id: int, register_map: RegisterMap, *, timeout: float = 3.0
    ) -> None:
        self.register_map = register_map
        self.device_id = device_id
        self.peer = f"{host}:{port}"
        self._client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=0, reconnect_delay=0)
        self._blocks = plan_reads(register_map.points)

    async def __aenter__(self) -> ModbusMeterReader:
        if not await self._client.connect():
            raise ModbusUnreachable(f"cannot connect to {self.peer}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    async def read(self) -> list[PointValue]:
        """Every point of the map, finite values only (meters send NaN for "not available")."""
        values: list[PointValue] = []
        for block in self._blocks:
            registers = await self._read_block(block)
            for point in block.points:
                offset = point.address - block.start
                value = decode_point(point, registers[offset : offset + point.size])
                if math.isfinite(value):
                    values.append(PointValue(point, value))
        return values

    async def _read_block(self, block: ReadBlock) -> list[int]:
        client = self._client
        reader = client.read_input_registers if block.table == "input" else client.read_holding_registers
        try:
            response = await reader(block.start, count=block.count, device_id=self.device_id)
        except ModbusException as exc:
            raise ModbusUnreachable(f"{self.peer}: {block.table} {block.start}+{block.count}: {exc}") from exc
        if response.isError():
            raise ModbusDeviceError(
                f"{self.peer}: {block.table} registers {block.start}+{block.count}: exception {response}"
            )
        registers = list(response.registers)
        if len(registers) < block.count:
            raise ModbusDeviceError(f"{self.peer}: asked {block.count} registers, got {len(registers)}")
        return registers
