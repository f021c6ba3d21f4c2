"""The gateway's meter list as the head-end's collectors' targets.

The agent reads meters with the head-end's own collectors (M-Bus, Modbus, IEC 62056-21, DSMR P1, SML
and DLMS/COSEM), so an address means the same at the edge as in the head-end's meter registry; this
module turns configured meters into those collectors' targets with each collector's public
``target_from_row`` (DLMS: :func:`openami.edge.dlms.dlms_target`).
Radio (``wmbus``) meters are not polled: they become the receivers' meter list
(:mod:`openami.edge.wmbus`).

Where the head-end takes a meter's secrets from its key vault, the gateway takes them from the meter's
``keys``: an encrypted P1 port (``dsmr+tcp://...?encrypted=1``) is read with ``keys.encryption`` (and
``keys.authentication`` where the meter authenticates its frames), a DLMS meter with its keys or LLS
password, which also imply its security level (:mod:`openami.edge.dlms`). A meter that cannot be read
(an encrypted port without ``keys.encryption``, a DLMS meter whose keys do not fit its address) is
skipped with its reason rather than failing the list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from openami.drivers.pulse.counter import PulseInput
from openami.edge.config import MeterConfig
from openami.edge.dlms import check_dlms_address, dlms_target
from openami.edge.pulse import PulseTarget
from openami.edge.wmbus import RadioMeter, add_radio_meter, parse_radio_address
from openami.hes import iec_collector, mbus_collector, modbus_collector, p1_collector
from openami.hes.dlms_targets import DlmsTarget
from openami.hes.iec_collector import IecTarget
from openami.hes.mbus_collector import MbusTarget
from openami.hes.modbus_collector import ModbusTarget
from openami.hes.p1_collector import P1Target
from openami.hes.targets import MeterRow
from openami.protocols.dsmr import P1Keys

__all__ = ["ENCRYPTED_P1_SKIPPED", "MeterTargets", "build_targets", "check_address"]

ENCRYPTED_P1_SKIPPED: Final = (
    "an encrypted P1 port is read with the meter's keys.encryption (and keys.authentication where the"
    " meter authenticates its frames): none is configured"
)


@dataclass(slots=True)
class MeterTargets:
    """The configured meters, by collector, and (serial, reason) for those that are not read."""

    mbus: list[MbusTarget] = field(default_factory=list)
    modbus: list[ModbusTarget] = field(default_factory=list)
    iec: list[IecTarget] = field(default_factory=list)
    p1: list[P1Target] = field(default_factory=list)
    pulse: list[PulseTarget] = field(default_factory=list)
    dlms: list[DlmsTarget] = field(default_factory=list)
    wmbus: list[RadioMeter] = field(default_factory=list)
    """Radio meters: listened to on the gateway's receivers (:mod:`openami.edge.wmbus`), not polled."""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Meters that are read (radio meters included)."""
        polled = len(self.mbus) + len(self.modbus) + len(self.iec) + len(self.p1) + len(self.pulse)
        return polled + len(self.dlms) + len(self.wmbus)


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
    elif protocol == "dlms":
        check_dlms_address(address)
    elif protocol == "wmbus":
        parse_radio_address(address)
    elif protocol != "pulse":
        raise ValueError(f"the gateway does not read {protocol!r} meters")


def _with_p1_keys(target: P1Target, meter: MeterConfig) -> P1Target | None:
    """An encrypted port's target with the meter's configured keys (None: it has no encryption key);
    ``ValueError`` naming the field when a key does not fit (E-MeterP1 takes AES-128 keys)."""
    keys = meter.keys
    if keys is None or keys.encryption_key is None:
        return None
    try:
        p1_keys = P1Keys(keys.encryption_key, keys.authentication_key)
    except ValueError as exc:
        raise ValueError(f"keys: {exc} (an encrypted P1 port takes AES-128 keys, 32 hex digits)") from None
    return dataclasses.replace(target, keys=p1_keys)


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
                port = p1_collector.target_from_row(row, "dsmr" if meter.protocol == "dsmr" else "sml")
                target = _with_p1_keys(port, meter) if port.encrypted else port
                if target is None:
                    found.skipped.append((meter.serial, ENCRYPTED_P1_SKIPPED))
                else:
                    found.p1.append(target)
            elif meter.protocol == "dlms":
                found.dlms.append(dlms_target(row, meter.keys))
            elif meter.protocol == "wmbus":
                add_radio_meter(found.wmbus, meter)
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
