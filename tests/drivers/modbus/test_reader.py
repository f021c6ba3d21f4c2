"""pymodbus client against our own Modbus TCP simulator over loopback: two meters behind one gateway."""

from __future__ import annotations

import struct

import pytest

from openami.drivers.modbus.models import HEAT, SDM630
from openami.drivers.modbus.reader import ModbusDeviceError, ModbusMeterReader, ModbusUnreachable
from openami.drivers.modbus.registers import Point, RegisterMap
from openami.simulator.modbus_meter import ModbusSimulator, SimulatedModbusMeter, respond

pytestmark = pytest.mark.timeout(30)

ELECTRIC = {
    "1-0:32.7.0": lambda: 231.5,
    "1-0:31.7.0": lambda: 4.25,
    "1-0:16.7.0": lambda: -1250.0,  # exporting
    "1-0:14.7.0": lambda: 49.98,
    "1-0:1.8.0": lambda: 12_345_000.0,  # 12 345 kWh
    "1-0:2.8.0": lambda: 6_000.0,
}
HEATING = {
    "6-0:1.0.0": lambda: 87_654_000.0,
    "6-0:2.0.0": lambda: 1234.56,
    "6-0:10.0.0": lambda: 70.25,
    "6-0:11.0.0": lambda: 45.5,
    "6-0:8.0.0": lambda: 12_300.0,
    "6-0:9.0.0": lambda: 0.432,
}


@pytest.fixture
async def gateway() -> ModbusSimulator:
    meters = {1: SimulatedModbusMeter(SDM630, dict(ELECTRIC)), 2: SimulatedModbusMeter(HEAT, dict(HEATING))}
    async with ModbusSimulator("127.0.0.1", 0, meters) as simulator:
        yield simulator


async def test_both_meters_read_with_units_and_scales(gateway: ModbusSimulator) -> None:
    async with ModbusMeterReader("127.0.0.1", gateway.port, 1, SDM630) as meter:
        electric = {v.point.channel: v.value for v in await meter.read()}
    async with ModbusMeterReader("127.0.0.1", gateway.port, 2, HEAT) as meter:
        heat = {v.point.channel: v.value for v in await meter.read()}
    for channel, value in ELECTRIC.items():
        assert electric[channel] == pytest.approx(value(), rel=1e-6)  # float32 on the wire
    assert electric["1-0:52.7.0"] == 0.0  # channels the device reports as zero are still read
    assert heat == pytest.approx({channel: value() for channel, value in HEATING.items()})


async def test_a_map_that_does_not_match_the_device_is_a_device_error(gateway: ModbusSimulator) -> None:
    wrong = RegisterMap("wrong", (Point("1-0:1.8.0", 500, "u32", "Wh"),))
    async with ModbusMeterReader("127.0.0.1", gateway.port, 2, wrong) as meter:
        with pytest.raises(ModbusDeviceError, match="holding registers 500"):
            await meter.read()


async def test_a_missing_device_or_gateway_is_unreachable(gateway: ModbusSimulator, free_port: int) -> None:
    async with ModbusMeterReader("127.0.0.1", gateway.port, 9, HEAT, timeout=0.5) as meter:
        with pytest.raises(ModbusUnreachable):
            await meter.read()
    with pytest.raises(ModbusUnreachable, match="cannot connect"):
        async with ModbusMeterReader("127.0.0.1", free_port, 1, HEAT, timeout=0.5):
            pass


def test_the_simulator_answers_bad_requests_with_modbus_exceptions() -> None:
    meter = SimulatedModbusMeter(HEAT, dict(HEATING))
    assert respond(meter, bytes((6, 0, 0, 0, 1))) == bytes((0x86, 1))  # write single: not supported
    assert respond(meter, bytes((3, 0, 9, 0, 2))) == bytes((0x83, 2))  # runs past the map
    assert respond(meter, bytes((3, 0, 0, 0, 0))) == bytes((0x83, 3))  # zero registers
    reply = respond(meter, bytes((3, 0, 4, 0, 1)))
    assert reply[:2] == bytes((3, 2)) and struct.unpack(">h", reply[2:])[0] == 7025
