"""The demo's field devices: the simulated gateways, converters and receivers the head-end reads, built
from the layout so every meter's values follow its own consumption model (seeded by its serial).

Each builder returns an async context manager that serves on a free loopback port; the runner points
the seeded device entries (or a head-end receiver input) at the ports of this run.
"""

from __future__ import annotations

import zlib
from typing import cast

from openami.demo.seed import IEC_PROTOCOL, DemoLayout, EdgeDemoGateway
from openami.drivers.modbus.models import MODELS
from openami.simulator.iec62056_21_meter import IecMeterServer, SimulatedIecMeter
from openami.simulator.mbus_meter import MbusBusSimulator, heat_meter, water_meter
from openami.simulator.modbus_meter import ModbusSimulator, consumption_meter
from openami.simulator.p1_meter import SimulatedP1Meter
from openami.simulator.push_port import PushPortServer
from openami.simulator.sml_meter import SimulatedSmlMeter
from openami.simulator.wmbus_meter import SimulatedReceiver, SimulatedWmbusMeter, WmbusMedium

__all__ = [
    "RADIO_INTERVAL_S",
    "consumer_ports",
    "edge_bus",
    "iec_converter",
    "modbus_gateway",
    "radio_receiver",
]

RADIO_INTERVAL_S = 2.0
"""How often the demo's radio meters transmit: real OMS meters send every 8-16 s (T1) or every few
minutes; the demo shortens it so a run hears every meter within seconds."""


def _seed(serial: str) -> int:
    return zlib.crc32(serial.encode())


def modbus_gateway(layout: DemoLayout) -> ModbusSimulator:
    """One simulated Modbus gateway holding every building's sub-meters, driven by the consumption model."""
    devices = {
        meter.unit: consumption_meter(MODELS[meter.model], _seed(meter.serial))
        for meter in layout.building_meters
        if meter.protocol == "modbus"
    }
    return ModbusSimulator("127.0.0.1", 0, devices)


def iec_converter(layout: DemoLayout) -> IecMeterServer:
    """The RS-485 line of building B02's legacy meters behind one converter, each addressed by serial."""
    meters = [
        SimulatedIecMeter(m.serial, address=m.serial, seed=_seed(m.serial))
        for m in layout.building_meters
        if m.protocol == IEC_PROTOCOL
    ]
    return IecMeterServer(meters)


def radio_receiver(layout: DemoLayout) -> SimulatedReceiver:
    """The receiver stick in building B03's stairwell, hearing its wireless meters."""
    meters = [
        SimulatedWmbusMeter(
            m.ident,
            cast(WmbusMedium, m.medium),
            key=m.key,
            security_mode=m.security_mode,  # type: ignore[arg-type]  # 5 or 7, from the seed
            interval_s=RADIO_INTERVAL_S,
            jitter_s=RADIO_INTERVAL_S / 4,
        )
        for m in layout.radio_meters
    ]
    return SimulatedReceiver(meters)


def consumer_ports(layout: DemoLayout) -> dict[str, PushPortServer]:
    """One pushing port per consumer-port meter (DSMR P1 or SML), by serial: a dongle each."""
    ports: dict[str, PushPortServer] = {}
    for m in layout.building_meters:
        if m.protocol == "dsmr":
            ports[m.serial] = PushPortServer(SimulatedP1Meter(m.unit, equipment_id=f"E0099{_seed(m.serial)}"))
        elif m.protocol == "sml":
            ports[m.serial] = PushPortServer(SimulatedSmlMeter(m.unit))
    return ports


def edge_bus(gateway: EdgeDemoGateway) -> MbusBusSimulator | ModbusSimulator:
    """The field bus an OpenAMI gateway reads: an M-Bus-to-TCP converter with its wired meters (heat
    and water meters whose registers start from a value seeded by the serial), or a Modbus TCP gateway
    with its sub-meters on the consumption model. One protocol per demo gateway."""
    protocols = {m.protocol for m in gateway.meters}
    if protocols == {"mbus"}:
        meters = [
            heat_meter(m.unit, m.serial[-8:], energy_kwh=100_000 + _seed(m.serial) % 50_000)
            if m.medium == "heat"
            else water_meter(m.unit, m.serial[-8:], volume_l=50_000 + _seed(m.serial) % 50_000)
            for m in gateway.meters
        ]
        return MbusBusSimulator(meters)
    if protocols == {"modbus"}:
        devices = {m.unit: consumption_meter(MODELS[m.model], _seed(m.serial)) for m in gateway.meters}
        return ModbusSimulator("127.0.0.1", 0, devices)
    raise ValueError(f"{gateway.ident}: the demo serves one field bus per gateway, not {sorted(protocols)}")
