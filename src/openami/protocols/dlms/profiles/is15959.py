"""IS 15959 (Bureau of Indian Standards, "Data exchange for electricity meter reading, tariff and load
control -- Companion specification"), three-phase whole-current / CT meter categories.

Source: the public descriptions of IS 15959 (Part 1 and the smart-meter Part 2) as quoted in utility
tender specifications and meter data sheets: the parameter lists per category (instantaneous, block
load, daily load, billing, events, name plate), each a Profile generic object whose capture objects
are the parameters below, with a companion "scaler profile" carrying their scaler_unit. The standard
fixes the OBIS codes; scalers are read from the scaler profiles, so no ``scaler_hint`` is given.
Comments mark codes not confirmed in more than one public source.

Duplicates across categories (the clock, cumulative energy) are listed once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import ObjectSpec, Profile, obj

__all__ = ["CATEGORIES", "PROFILE", "SCALER_PROFILES"]

_CATEGORY_PROFILES: tuple[ObjectSpec, ...] = (
    obj("1-0:94.91.0", 7, "Instantaneous parameters profile"),
    obj("1-0:94.91.3", 7, "Instantaneous parameters scaler profile"),
    obj("1-0:99.1.0", 7, "Block load profile"),
    obj("1-0:94.91.4", 7, "Block load scaler profile"),
    obj("1-0:99.2.0", 7, "Daily load profile"),
    obj("1-0:94.91.5", 7, "Daily load scaler profile"),
    obj("1-0:98.1.0", 7, "Billing profile"),
    obj("1-0:94.91.6", 7, "Billing scaler profile"),
    obj("0-0:99.98.0", 7, "Event profile: voltage related"),
    obj("0-0:99.98.1", 7, "Event profile: current related"),
    obj("0-0:99.98.2", 7, "Event profile: power related"),
    obj("0-0:99.98.3", 7, "Event profile: transaction related"),
    obj("0-0:99.98.4", 7, "Event profile: other"),
    obj("0-0:99.98.5", 7, "Event profile: non-rollover"),
    obj("0-0:99.98.6", 7, "Event profile: control"),
    obj("1-0:94.91.7", 7, "Event scaler profile"),
    obj("0-0:94.91.10", 7, "Name plate details profile"),
)

_INSTANTANEOUS: tuple[ObjectSpec, ...] = (
    obj("0-0:1.0.0", 8, "Real time clock, date and time"),
    obj("1-0:31.7.0", 3, "Current, IR", "A"),
    obj("1-0:51.7.0", 3, "Current, IY", "A"),
    obj("1-0:71.7.0", 3, "Current, IB", "A"),
    obj("1-0:32.7.0", 3, "Voltage, VRN", "V"),
    obj("1-0:52.7.0", 3, "Voltage, VYN", "V"),
    obj("1-0:72.7.0", 3, "Voltage, VBN", "V"),
    obj("1-0:33.7.0", 3, "Signed power factor, R phase", None),
    obj("1-0:53.7.0", 3, "Signed power factor, Y phase", None),
    obj("1-0:73.7.0", 3, "Signed power factor, B phase", None),
    obj("1-0:13.7.0", 3, "Three phase power factor", None),
    obj("1-0:14.7.0", 3, "Frequency", "Hz"),
    obj("1-0:9.7.0", 3, "Apparent power, kVA", "VA"),
    obj("1-0:1.7.0", 3, "Signed active power, kW (+ forward, - reverse)", "W"),
    obj("1-0:3.7.0", 3, "Signed reactive power, kvar (+ lag, - lead)", "var"),
    obj("0-0:96.7.0", 1, "Number of power failures"),
    # UNCERTAIN: power-fail duration, tamper and programming counts as publicly quoted.
    obj("0-0:94.91.8", 3, "Cumulative power failure duration", "min"),
    obj("0-0:94.91.0", 1, "Cumulative tamper count"),
    obj("0-0:0.1.0", 1, "Cumulative billing count"),
    obj("0-0:96.2.0", 1, "Cumulative programming count"),
    obj("0-0:0.1.2", 1, "Billing date"),
    obj("1-0:1.8.0", 3, "Cumulative energy, kWh", "Wh"),
    obj("1-0:5.8.0", 3, "Cumulative energy, kvarh lag (QI)", "varh"),
    obj("1-0:8.8.0", 3, "Cumulative energy, kvarh lead (QIV)", "varh"),
    obj("1-0:9.8.0", 3, "Cumulative energy, kVAh", "VAh"),
    obj("1-0:1.6.0", 4, "Maximum demand, kW (with date and time)", "W"),
    obj("1-0:9.6.0", 4, "Maximum demand, kVA (with date and time)", "VA"),
)

_BLOCK_LOAD: tuple[ObjectSpec, ...] = (
    obj("1-0:1.29.0", 3, "Block energy, kWh", "Wh"),
    obj("1-0:5.29.0", 3, "Block energy, kvarh lag (QI)", "varh"),
    obj("1-0:8.29.0", 3, "Block energy, kvarh lead (QIV)", "varh"),
    obj("1-0:9.29.0", 3, "Block energy, kVAh", "VAh"),
)

_BILLING: tuple[ObjectSpec, ...] = (
    # UNCERTAIN: average power factor for the billing period (D=0, billing period average).
    obj("1-0:13.0.0", 3, "System power factor for billing period", None),
    *(obj(f"1-0:1.8.{z}", 3, f"Cumulative energy, kWh, TOD zone {z}", "Wh") for z in range(1, 9)),
    *(obj(f"1-0:9.8.{z}", 3, f"Cumulative energy, kVAh, TOD zone {z}", "VAh") for z in range(1, 9)),
    *(obj(f"1-0:1.6.{z}", 4, f"Maximum demand, kW, TOD zone {z}", "W") for z in range(1, 9)),
    *(obj(f"1-0:9.6.{z}", 4, f"Maximum demand, kVA, TOD zone {z}", "VA") for z in range(1, 9)),
)

_EVENT_KINDS = ("voltage related", "current related", "power related", "transaction related", "other")
_EVENTS: tuple[ObjectSpec, ...] = (
    *(obj(f"0-0:96.11.{e}", 1, f"Event code, {kind} events") for e, kind in enumerate(_EVENT_KINDS)),
    obj("0-0:96.11.5", 1, "Event code, non-rollover events"),
    obj("0-0:96.11.6", 1, "Event code, control events"),
)

_NAME_PLATE: tuple[ObjectSpec, ...] = (
    obj("0-0:96.1.0", 1, "Meter serial number"),
    obj("0-0:96.1.1", 1, "Manufacturer name"),
    obj("1-0:0.2.0", 1, "Firmware version for meter"),
    # UNCERTAIN: meter type, category and current rating codes as publicly quoted.
    obj("0-0:94.91.9", 1, "Meter type"),
    obj("0-0:94.91.11", 1, "Category"),
    obj("0-0:94.91.12", 1, "Current rating"),
    obj("0-0:96.1.4", 1, "Meter year of manufacture"),
)

_CONTROL: tuple[ObjectSpec, ...] = (
    obj("0-0:40.0.0", 15, "Current association"),
    obj("0-0:44.0.0", 18, "Image transfer"),
    # UNCERTAIN: load switch per IS 15959 Part 2 (smart meters); Part 1 meters have none.
    obj("0-0:96.3.10", 70, "Disconnect control (load switch)"),
)

#: Category profile -> its scaler profile.
SCALER_PROFILES: Final[Mapping[Obis, Obis]] = MappingProxyType(
    {
        Obis.parse(profile): Obis.parse(scaler)
        for profile, scaler in (
            ("1-0:94.91.0", "1-0:94.91.3"),
            ("1-0:99.1.0", "1-0:94.91.4"),
            ("1-0:99.2.0", "1-0:94.91.5"),
            ("1-0:98.1.0", "1-0:94.91.6"),
            *((f"0-0:99.98.{e}", "1-0:94.91.7") for e in range(7)),
        )
    }
)

#: The category name of each profile object.
CATEGORIES: Final[Mapping[str, Obis]] = MappingProxyType(
    {
        "instantaneous": Obis.parse("1-0:94.91.0"),
        "block_load": Obis.parse("1-0:99.1.0"),
        "daily_load": Obis.parse("1-0:99.2.0"),
        "billing": Obis.parse("1-0:98.1.0"),
        "name_plate": Obis.parse("0-0:94.91.10"),
    }
)

#: IS 15959 three-phase meter.
PROFILE = Profile(
    name="IS15959",
    objects=(
        *_CATEGORY_PROFILES,
        *_INSTANTANEOUS,
        *_BLOCK_LOAD,
        *_BILLING,
        *_EVENTS,
        *_NAME_PLATE,
        *_CONTROL,
    ),
    load_profiles=(CATEGORIES["block_load"], CATEGORIES["daily_load"], CATEGORIES["billing"]),
    event_logs=tuple(Obis.parse(f"0-0:99.98.{e}") for e in range(7)),
    clock=Obis.parse("0-0:1.0.0"),
    disconnect_control=Obis.parse("0-0:96.3.10"),
    meter_id=Obis.parse("0-0:96.1.0"),
)
