"""The gateway's meter list as the head-end's collectors' targets.

The agent reads meters with the head-end's own collectors (M-Bus, Modbus, IEC 62056-21, DSMR P1 and
SML), so an address means the same at the edge as in the head-end's meter registry; this module turns
configured meters into those collectors' targets with each collector's public ``target_from_row``.

Not read at the edge (yet), each skipped with its reason rather than failing the list:

- encrypted P1 ports (``dsmr+tcp://...?encrypted=1``): their keys live in the head-end's key vault,
  and the gateway has no vault of its own yet;
- DLMS/COSEM meters: not a protocol of the gateway in this increment (``docs/operations/gateway.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from openami.drivers.pulse.counter import PulseInput
from openami.edge.config import MeterConfig
from openami.edge.pulse import PulseTarget
from openami.hes import iec_collector, mbus_collector, modbus_collector, p1_collector
from openami.hes.iec_collector import IecTarget
from openami.hes.mbus_collector import MbusTarget
from openami.hes.modbus_collector import ModbusTarget
from openami.hes.p1_collector import P1Target
from openami.hes.targets import MeterRow

__all__ = ["ENCRYPTED_P1_SKIPPED", "MeterTargets", "build_targets", "check_address"]

ENCRYPTED_P1_SKIPPED: Final = (
    "encrypted P1 ports are not read at the edge yet (their keys are in the head-end's vault)"
)


@dataclass(slots=True)
class MeterTargets:
    """The configured meters, by collector, and (serial, reason) for those that are not read."""

    mbus: list[MbusTarget] = field(default_factory=list)
    modbus: list[ModbusTarget] = field(default_factory=list)
    iec: list[IecTarget] = field(default_factory=list)
    p1: list[P1Target] = field(default_factory=list)
    pulse: list[PulseTarget] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Meters that are read."""
        return len(self.mbus) + len(self.modbus) + len(self.iec) + len(self.p1) + len(self.pulse)


def _row(tenant: str, index: int, serial: str, model: str, address: str) -> MeterRow:
    return MeterRow(
        tenant_id=0, tenant=tenant, meter_id=index + 1, serial=serial, model=model, address=address
    )


def check_address(protocol: str, address: str, model: str = "") -> None:
    """``ValueError`` naming the problem when ``protocol``'s collector cannot use ``address``."""
    row = _row("", 0, "-", model, address)
    if protocol == "mbus":
        mbus_collector.target_from_row(row)
    elif protocol == "modbus":
        modbus_collector.target_from_row(row)
    elif protocol == "iec62056-21":
        iec_collector.target_from_row(row)
    elif protocol in ("dsmr", "sml"):
        p1_collector.target_from_row(row, "dsmr" if protocol == "dsmr" else "sml")
    elif protocol != "pulse":
        raise ValueError(f"the gateway does not read {protocol!r} meters")


def build_targets(meters: Sequence[MeterConfig], tenant: str) -> MeterTargets:
    """Every meter's target (the config already checked the addresses; a meter refused here anyway is
    skipped with the reason, never the list)."""
    found = MeterTargets()
    for index, meter in enumerate(meters):
        row = _row(tenant, index, meter.serial, meter.model, meter.address)
        try:
            if meter.protocol == "mbus":
                found.mbus.append(mbus_collector.target_from_row(row))
            elif meter.protocol == "modbus":
                found.modbus.append(modbus_collector.target_from_row(row))
            elif meter.protocol == "iec62056-21":
                found.iec.append(iec_collector.target_from_row(row))
            elif meter.protocol in ("dsmr", "sml"):
                target = p1_collector.target_from_row(row, "dsmr" if meter.protocol == "dsmr" else "sml")
                if target.encrypted:
                    found.skipped.append((meter.serial, ENCRYPTED_P1_SKIPPED))
                else:
                    found.p1.append(target)
            else:
                assert meter.pulse is not None  # required for pulse meters by the config
                pulse = meter.pulse
                config = PulseInput(
                    meter.serial,
                    pulse.channel,
                    pulse.unit,
                    pulse.weight,
                    initial_value=pulse.initial_value,
                    initial_count=pulse.initial_count,
                    counter_bits=pulse.counter_bits,
                )
                found.pulse.append(PulseTarget(tenant, meter.serial, meter.pulse_path, config))
        except ValueError as exc:
            found.skipped.append((meter.serial, str(exc)))
    return found
