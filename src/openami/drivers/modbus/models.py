"""Register maps of the device models the head-end reads over Modbus, as data.

- ``eastron-sdm630``: a common three-phase DIN-rail energy meter (sub-metering in buildings). Input
  registers, IEEE 754 float32 with the most significant word first, as the maker's public register
  table lists them (energies in kWh, scaled here to Wh).
- ``openami-heat``: the layout heat meters with a Modbus module typically expose (cumulative energy
  and volume as 32-bit integers with fixed scales, temperatures in hundredths of a degree, power and
  flow). It is an example layout used by the simulator and the tests, not one vendor's table: a real
  heat meter gets its own map from its manual.

Channel codes are OBIS codes (value group A = 1 electricity, 6 heat) so Modbus meters land on the same
channels as DLMS and M-Bus meters measuring the same quantity.
"""

from __future__ import annotations

from typing import Final, Literal

from openami.drivers.modbus.registers import Point, RegisterMap

__all__ = ["HEAT", "MODELS", "SDM630"]


def _sdm(
    channel: str,
    address: int,
    unit: str,
    scale: float = 1.0,
    kind: Literal["register", "instant"] = "instant",
) -> Point:
    return Point(channel, address, "f32", unit, scale, table="input", kind=kind)


SDM630: Final = RegisterMap(
    "eastron-sdm630",
    (
        _sdm("1-0:32.7.0", 0x0000, "V"),
        _sdm("1-0:52.7.0", 0x0002, "V"),
        _sdm("1-0:72.7.0", 0x0004, "V"),
        _sdm("1-0:31.7.0", 0x0006, "A"),
        _sdm("1-0:51.7.0", 0x0008, "A"),
        _sdm("1-0:71.7.0", 0x000A, "A"),
        _sdm("1-0:21.7.0", 0x000C, "W"),
        _sdm("1-0:41.7.0", 0x000E, "W"),
        _sdm("1-0:61.7.0", 0x0010, "W"),
        _sdm("1-0:16.7.0", 0x0034, "W"),
        _sdm("1-0:14.7.0", 0x0046, "Hz"),
        _sdm("1-0:1.8.0", 0x0048, "Wh", 1000.0, "register"),
        _sdm("1-0:2.8.0", 0x004A, "Wh", 1000.0, "register"),
    ),
)

HEAT: Final = RegisterMap(
    "openami-heat",
    (
        Point("6-0:1.0.0", 0, "u32", "Wh", 1000.0),  # energy, kWh resolution
        Point("6-0:2.0.0", 2, "u32", "m3", 0.01),  # volume, 10 l resolution
        Point("6-0:10.0.0", 4, "s16", "°C", 0.01, kind="instant"),  # flow temperature
        Point("6-0:11.0.0", 5, "s16", "°C", 0.01, kind="instant"),  # return temperature
        Point("6-0:8.0.0", 6, "s32", "W", 1.0, kind="instant"),  # power
        Point("6-0:9.0.0", 8, "u32", "m3/h", 0.001, kind="instant"),  # flow, l/h
    ),
)

MODELS: Final[dict[str, RegisterMap]] = {m.model: m for m in (SDM630, HEAT)}
"""Register maps by model name, as a meter's ``model`` field names them."""
