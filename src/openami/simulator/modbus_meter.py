"""Simulated Modbus TCP meters: our own small server, so the pymodbus client is tested against a
second implementation of the protocol rather than against itself.

Each :class:`ModbusSimulator` listens on one loopback port and answers, for every device id it holds,
Read Holding Registers (3) and Read Input Registers (4) from the device's register map, with values
computed when asked (:class:`SimulatedModbusMeter` takes a callable per channel). Anything else gets the
Modbus exception a real device sends: illegal function (1), illegal data address (2) for registers
outside the map, and no answer at all for an unknown device id (as a gateway without that device).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from openami.drivers.modbus.registers import RegisterMap, encode_point
from openami.simulator.tcp_server import LoopbackServer
from openami.transports.ports import probe_port

__all__ = ["ModbusSimulator", "SimulatedModbusMeter", "consumption_meter"]

_MBAP: Final = struct.Struct(">HHHB")  # transaction, protocol (0), length, unit id
_READ_HOLDING, _READ_INPUT = 3, 4
_ILLEGAL_FUNCTION, _ILLEGAL_ADDRESS, _ILLEGAL_VALUE = 1, 2, 3
_MAX_FRAME: Final = 260


@dataclass
class SimulatedModbusMeter:
    """One device: its map and, per channel, what it currently reads (in the point's unit)."""

    register_map: RegisterMap
    values: dict[str, Callable[[], float]] = field(default_factory=dict)

    def registers(self, table: str) -> dict[int, int]:
        """The device's registers of ``table`` right now, address -> value."""
        found: dict[int, int] = {}
        for point in self.register_map.points:
            if point.table != table:
                continue
            read = self.values.get(point.channel)
            words = encode_point(point, read() if read is not None else 0.0)
            found.update(zip(range(point.address, point.address + point.size), words, strict=True))
        return found


def _exception(function: int, code: int) -> bytes:
    return bytes((function | 0x80, code))


def respond(meter: SimulatedModbusMeter, pdu: bytes) -> bytes:
    """The response PDU to a request PDU (sans-IO; the server adds the MBAP header)."""
    function = pdu[0] if pdu else 0
    if function not in (_READ_HOLDING, _READ_INPUT):
        return _exception(function, _ILLEGAL_FUNCTION)
    if len(pdu) != 5:
        return _exception(function, _ILLEGAL_VALUE)
    start, count = struct.unpack(">HH", pdu[1:5])
    if not 1 <= count <= 125:
        return _exception(function, _ILLEGAL_VALUE)
    registers = meter.registers("holding" if function == _READ_HOLDING else "input")
    wanted = range(start, start + count)
    if any(address not in registers for address in wanted):
        return _exception(function, _ILLEGAL_ADDRESS)
    return bytes((function, 2 * count)) + struct.pack(f">{count}H", *(registers[a] for a in wanted))


class ModbusSimulator(LoopbackServer):
    """Serves ``meters`` (device id -> meter) on ``host:port`` (0: a free port, in :attr:`port`)."""

    def __init__(self, host: str, port: int, meters: dict[int, SimulatedModbusMeter]) -> None:
        super().__init__(host, port)
        self.meters = meters

    async def start(self) -> None:
        if self._wanted_port:
            probe_port(self.host, self._wanted_port, "--port")
        await super().start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await reader.readexactly(_MBAP.size)
            transaction, protocol, length, unit = _MBAP.unpack(header)
            if protocol != 0 or not 2 <= length <= _MAX_FRAME:
                return  # not Modbus TCP: drop the connection, as devices do
            pdu = await reader.readexactly(length - 1)
            meter = self.meters.get(unit)
            if meter is None:
                continue  # no such device behind this gateway: no answer
            reply = respond(meter, pdu)
            writer.write(_MBAP.pack(transaction, 0, len(reply) + 1, unit) + reply)
            await writer.drain()


def consumption_meter(register_map: RegisterMap, seed: int) -> SimulatedModbusMeter:
    """An energy meter (Eastron SDM630 map) or heat meter (the example heat map) whose energy register
    follows the consumption model of ``seed``, with plausible constant voltages, frequency and
    temperatures: what the demo's buildings and ``openami simulate modbus`` serve."""
    from datetime import UTC, datetime, timedelta

    from openami.simulator.consumption import INTERVAL_S, ConsumptionModel

    electricity = any(point.channel == "1-0:1.8.0" for point in register_map.points)
    model = ConsumptionModel("electricity" if electricity else "heat", seed)
    step = timedelta(seconds=INTERVAL_S)

    def energy() -> float:
        now = datetime.now(UTC)
        return model.register_value(now - (now - datetime(2000, 1, 1, tzinfo=UTC)) % step) * 1000.0  # Wh

    values: dict[str, Callable[[], float]] = (
        {"1-0:1.8.0": energy, "1-0:32.7.0": lambda: 230.4, "1-0:14.7.0": lambda: 50.01}
        if electricity
        else {"6-0:1.0.0": energy, "6-0:10.0.0": lambda: 68.5, "6-0:11.0.0": lambda: 44.0}
    )
    return SimulatedModbusMeter(register_map, values)
