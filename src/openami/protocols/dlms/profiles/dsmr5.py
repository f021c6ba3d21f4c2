"""DSMR 5.0.2 P1 companion standard (Netbeheer Nederland, public): the objects of the P1 telegram.

Source: the public "Dutch Smart Meter Requirements, P1 Companion Standard" version 5.0.2, whose data
table gives per object the OBIS reduced ID, the COSEM class it is modelled on, and the unit written in
the telegram. Units here are exactly as the telegram writes them ("kWh", "kW", "V", "A", "m3"), because
the P1 parser checks them literally; they are deliberately not the DLMS symbols of the other profiles.

M-Bus devices (gas, water, heat, slave electricity) appear on channels n = 1..4 (OBIS group B).
The P1 port carries no load profile and no disconnect control (the breaker is reached over P3 only),
so those roles are empty here.
"""

from __future__ import annotations

from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import ObjectSpec, Profile, obj

__all__ = ["MBUS_CHANNELS", "PROFILE"]

#: M-Bus channels a DSMR 5 meter supports.
MBUS_CHANNELS = (1, 2, 3, 4)

_ELECTRICITY: tuple[ObjectSpec, ...] = (
    obj("1-3:0.2.8", 1, "Version information for P1 output"),
    obj("0-0:1.0.0", 8, "Date-time stamp of the P1 message (clock attribute 2)"),
    obj("0-0:96.1.1", 1, "Equipment identifier"),
    obj("1-0:1.8.1", 3, "Electricity delivered to client, tariff 1", "kWh", -3),
    obj("1-0:1.8.2", 3, "Electricity delivered to client, tariff 2", "kWh", -3),
    obj("1-0:2.8.1", 3, "Electricity delivered by client, tariff 1", "kWh", -3),
    obj("1-0:2.8.2", 3, "Electricity delivered by client, tariff 2", "kWh", -3),
    obj("0-0:96.14.0", 1, "Tariff indicator electricity"),
    obj("1-0:1.7.0", 3, "Actual electricity power delivered (+P)", "kW", -3),
    obj("1-0:2.7.0", 3, "Actual electricity power received (-P)", "kW", -3),
    obj("0-0:96.7.21", 1, "Number of power failures in any phase"),
    obj("0-0:96.7.9", 1, "Number of long power failures in any phase"),
    obj("1-0:99.97.0", 7, "Power failure event log (long power failures)"),
    obj("1-0:32.32.0", 1, "Number of voltage sags in phase L1"),
    obj("1-0:52.32.0", 1, "Number of voltage sags in phase L2"),
    obj("1-0:72.32.0", 1, "Number of voltage sags in phase L3"),
    obj("1-0:32.36.0", 1, "Number of voltage swells in phase L1"),
    obj("1-0:52.36.0", 1, "Number of voltage swells in phase L2"),
    obj("1-0:72.36.0", 1, "Number of voltage swells in phase L3"),
    obj("0-0:96.13.0", 1, "Text message (max 1024 characters)"),
    obj("1-0:32.7.0", 3, "Instantaneous voltage L1", "V", -1),
    obj("1-0:52.7.0", 3, "Instantaneous voltage L2", "V", -1),
    obj("1-0:72.7.0", 3, "Instantaneous voltage L3", "V", -1),
    obj("1-0:31.7.0", 3, "Instantaneous current L1", "A", 0),
    obj("1-0:51.7.0", 3, "Instantaneous current L2", "A", 0),
    obj("1-0:71.7.0", 3, "Instantaneous current L3", "A", 0),
    obj("1-0:21.7.0", 3, "Instantaneous active power L1 (+P)", "kW", -3),
    obj("1-0:41.7.0", 3, "Instantaneous active power L2 (+P)", "kW", -3),
    obj("1-0:61.7.0", 3, "Instantaneous active power L3 (+P)", "kW", -3),
    obj("1-0:22.7.0", 3, "Instantaneous active power L1 (-P)", "kW", -3),
    obj("1-0:42.7.0", 3, "Instantaneous active power L2 (-P)", "kW", -3),
    obj("1-0:62.7.0", 3, "Instantaneous active power L3 (-P)", "kW", -3),
)


def _mbus(n: int) -> tuple[ObjectSpec, ...]:
    return (
        obj(f"0-{n}:24.1.0", 72, f"M-Bus device type, channel {n} (M-Bus client attribute 9)"),
        obj(f"0-{n}:96.1.0", 1, f"M-Bus equipment identifier, channel {n}"),
        # Gas in m3 with 3 decimals; water uses the same code and unit, heat (GJ) likewise on 24.2.1.
        obj(
            f"0-{n}:24.2.1",
            4,
            f"Last 5-minute value delivered (gas, temperature corrected), channel {n}",
            "m3",
            -3,
        ),
    )


#: DSMR 5.0.2 P1 telegram.
PROFILE = Profile(
    name="DSMR5",
    objects=(*_ELECTRICITY, *(s for n in MBUS_CHANNELS for s in _mbus(n))),
    load_profiles=(),
    event_logs=(Obis.parse("1-0:99.97.0"),),
    clock=Obis.parse("0-0:1.0.0"),
    disconnect_control=None,
    meter_id=Obis.parse("0-0:96.1.1"),
)
