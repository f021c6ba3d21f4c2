"""A simulated field site behind one gateway, and the virtual gateway that polls it.

:class:`SimulatedSite` serves wired M-Bus meters behind M-Bus-to-TCP converters
(:class:`~openami.simulator.mbus_meter.MbusBusSimulator`, up to 250 primary addresses each) and Modbus
meters behind Modbus TCP gateways (:class:`~openami.simulator.modbus_meter.ModbusSimulator`, up to 247
unit ids each), all on loopback ports, and lists the meters as gateway configuration entries with their
real addresses (``mbus+tcp://127.0.0.1:PORT?primary=N``, ``modbus+tcp://127.0.0.1:PORT?unit=N``).

A *virtual gateway* is the real agent (:class:`openami.edge.agent.GatewayAgent`, or ``openami gateway``
in its own process) configured against such a site: :func:`gateway_toml` writes its configuration
file. Nothing in the agent knows it is simulated.

M-Bus meters alternate heat (two telegrams) and water meters; Modbus meters alternate the Eastron
SDM630 and the example heat-meter map. Modbus energy registers grow with the wall clock, so successive
polls read rising values; M-Bus meters answer the same telegram every time (the agent stamps readings
with the time of the read either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openami.drivers.modbus.models import HEAT, SDM630
from openami.simulator.mbus_meter import MbusBusSimulator, VirtualMbusMeter, heat_meter, water_meter
from openami.simulator.modbus_meter import ModbusSimulator, SimulatedModbusMeter

__all__ = ["MBUS_PER_CONVERTER", "MODBUS_PER_GATEWAY", "SimulatedSite", "gateway_toml", "serve_site"]

MBUS_PER_CONVERTER = 250
MODBUS_PER_GATEWAY = 247


def _spread(total: int, parts: int, limit: int) -> list[int]:
    """``total`` meters over ``parts`` devices as evenly as possible (more devices if one would hold
    more than ``limit``)."""
    if total <= 0:
        return []
    parts = max(parts, -(-total // limit))
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _rising(start: float, per_second: float) -> Callable[[], float]:
    origin = time.time()
    return lambda: start + (time.time() - origin) * per_second


@dataclass
class SimulatedSite:
    """M-Bus converters and Modbus gateways with ``mbus`` and ``modbus`` meters behind them."""

    mbus: int = 4
    modbus: int = 4
    mbus_converters: int = 1
    modbus_gateways: int = 1
    host: str = "127.0.0.1"
    id_base: int = 70_000_000
    """M-Bus meters' identification numbers start above this (serial ``MB-<id>``)."""
    modbus_prefix: str = "MOD"
    """Modbus meters' serials: ``<prefix>-<gateway>-<unit>``. Sites sharing one head-end need their own
    ``id_base`` and ``modbus_prefix``, so their meters' serials differ."""
    meters: list[dict[str, str]] = field(default_factory=list)
    """Gateway configuration entries (serial, protocol, address, model) once started."""
    media: dict[str, str] = field(default_factory=dict)
    """Each meter's medium by serial (heat, water, electricity), for registering it at a head-end."""
    converters: list[MbusBusSimulator] = field(default_factory=list)
    gateways: list[ModbusSimulator] = field(default_factory=list)

    async def start(self) -> None:
        number = 0
        for index, size in enumerate(_spread(self.mbus, self.mbus_converters, MBUS_PER_CONVERTER)):
            bus: list[VirtualMbusMeter] = []
            for primary in range(1, size + 1):
                number += 1
                ident = f"{self.id_base + index * 1000 + primary:08d}"
                bus.append(heat_meter(primary, ident) if primary % 2 else water_meter(primary, ident))
            converter = MbusBusSimulator(bus, self.host, 0)
            await converter.__aenter__()
            self.converters.append(converter)
            self.meters += [
                {
                    "serial": f"MB-{m.id}",
                    "protocol": "mbus",
                    "address": f"mbus+tcp://{self.host}:{converter.port}?primary={m.primary}",
                }
                for m in bus
            ]
            self.media.update({f"MB-{m.id}": "heat" if m.primary % 2 else "water" for m in bus})
        for index, size in enumerate(_spread(self.modbus, self.modbus_gateways, MODBUS_PER_GATEWAY)):
            devices: dict[int, SimulatedModbusMeter] = {}
            for unit in range(1, size + 1):
                if unit % 2:
                    values = {
                        "1-0:1.8.0": _rising(5_000_000.0 + unit * 1000, 2.5),
                        "1-0:32.7.0": lambda: 230.1,
                        "1-0:14.7.0": lambda: 50.0,
                    }
                    devices[unit] = SimulatedModbusMeter(SDM630, values)
                else:
                    values = {
                        "6-0:1.0.0": _rising(9_000_000.0 + unit * 1000, 4.0),
                        "6-0:10.0.0": lambda: 65.5,
                    }
                    devices[unit] = SimulatedModbusMeter(HEAT, values)
            gateway = ModbusSimulator(self.host, 0, devices)
            await gateway.start()
            self.gateways.append(gateway)
            self.meters += [
                {
                    "serial": f"{self.modbus_prefix}-{index + 1}-{unit:03d}",
                    "protocol": "modbus",
                    "model": device.register_map.model,
                    "address": f"modbus+tcp://{self.host}:{gateway.port}?unit={unit}",
                }
                for unit, device in devices.items()
            ]
            self.media.update(
                {
                    f"{self.modbus_prefix}-{index + 1}-{unit:03d}": "electricity" if unit % 2 else "heat"
                    for unit in devices
                }
            )

    async def stop(self) -> None:
        for converter in self.converters:
            await converter.__aexit__(None, None, None)
        for gateway in self.gateways:
            await gateway.stop()
        self.converters.clear()
        self.gateways.clear()

    async def __aenter__(self) -> SimulatedSite:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_site(site: SimulatedSite, on_ready: Callable[[list[dict[str, str]]], None]) -> None:
    """Serve ``site`` until cancelled, calling ``on_ready(meters)`` once it listens (the bench runs it
    in a child process)."""
    async with site:
        on_ready(site.meters)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def gateway_toml(
    *,
    id: str,
    tenant: str,
    archive: str,
    uplink: Mapping[str, Any],
    meters: Sequence[Mapping[str, Any]],
    **settings: Any,
) -> str:
    """The configuration file of a virtual gateway (see :mod:`openami.edge.config`)."""
    lines = [
        f"id = {_toml_value(id)}",
        f"tenant = {_toml_value(tenant)}",
        f"archive = {_toml_value(archive)}",
    ]
    lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    lines += ["", "[uplink]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in uplink.items()]
    for meter in meters:
        lines += ["", "[[meters]]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in meter.items() if value not in ("", None)]
    return "\n".join(lines) + "\n"
