"""IDIS (Interoperable Device Interface Specification) package 2, poly-phase electricity meter.

Source: the public IDIS descriptions (IDIS Association package overviews and the object lists quoted
in public IDIS conformance/product documents) and the OBIS codes of the DLMS UA Blue Book that IDIS
reuses. The full IDIS object model is only in the member specification; this table keeps to objects
whose OBIS code and class are stated in public material, and comments mark what could not be
confirmed there. Single-phase IDIS meters carry the subset without the L2/L3 objects.
"""

from __future__ import annotations

from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import ObjectSpec, Profile, obj

__all__ = ["PROFILE"]

_ENERGY: tuple[ObjectSpec, ...] = (
    obj("1-0:1.8.0", 3, "Active energy import (+A), total", "Wh"),
    *(obj(f"1-0:1.8.{t}", 3, f"Active energy import (+A), tariff {t}", "Wh") for t in range(1, 5)),
    obj("1-0:2.8.0", 3, "Active energy export (-A), total", "Wh"),
    *(obj(f"1-0:2.8.{t}", 3, f"Active energy export (-A), tariff {t}", "Wh") for t in range(1, 5)),
    obj("1-0:3.8.0", 3, "Reactive energy import (+R), total", "varh"),
    obj("1-0:4.8.0", 3, "Reactive energy export (-R), total", "varh"),
    obj("1-0:5.8.0", 3, "Reactive energy QI, total", "varh"),
    obj("1-0:6.8.0", 3, "Reactive energy QII, total", "varh"),
    obj("1-0:7.8.0", 3, "Reactive energy QIII, total", "varh"),
    obj("1-0:8.8.0", 3, "Reactive energy QIV, total", "varh"),
)

_INSTANTANEOUS: tuple[ObjectSpec, ...] = (
    obj("1-0:1.7.0", 3, "Instantaneous active power import (+A)", "W"),
    obj("1-0:2.7.0", 3, "Instantaneous active power export (-A)", "W"),
    obj("1-0:21.7.0", 3, "Instantaneous active power import (+A) L1", "W"),
    obj("1-0:41.7.0", 3, "Instantaneous active power import (+A) L2", "W"),
    obj("1-0:61.7.0", 3, "Instantaneous active power import (+A) L3", "W"),
    obj("1-0:22.7.0", 3, "Instantaneous active power export (-A) L1", "W"),
    obj("1-0:42.7.0", 3, "Instantaneous active power export (-A) L2", "W"),
    obj("1-0:62.7.0", 3, "Instantaneous active power export (-A) L3", "W"),
    obj("1-0:32.7.0", 3, "Instantaneous voltage L1", "V"),
    obj("1-0:52.7.0", 3, "Instantaneous voltage L2", "V"),
    obj("1-0:72.7.0", 3, "Instantaneous voltage L3", "V"),
    obj("1-0:31.7.0", 3, "Instantaneous current L1", "A"),
    obj("1-0:51.7.0", 3, "Instantaneous current L2", "A"),
    obj("1-0:71.7.0", 3, "Instantaneous current L3", "A"),
    obj("1-0:13.7.0", 3, "Instantaneous power factor", None),
    obj("1-0:14.7.0", 3, "Supply frequency", "Hz"),
)

_PROFILES_AND_LOGS: tuple[ObjectSpec, ...] = (
    obj("1-0:99.1.0", 7, "Load profile 1 (typically 15 min: clock, status, energy registers)"),
    obj("1-0:99.2.0", 7, "Load profile 2 (daily values)"),
    # UNCERTAIN: monthly billing values; public IDIS material shows 0-0:98.1.0, confirm per meter.
    obj("0-0:98.1.0", 7, "Billing (monthly) values profile"),
    obj("0-0:99.98.0", 7, "Standard event log"),
    obj("0-0:99.98.1", 7, "Fraud detection event log"),
    obj("0-0:99.98.2", 7, "Disconnector control event log"),
    # UNCERTAIN: 99.98.3 assigned to the M-Bus event log in public IDIS object lists.
    obj("0-0:99.98.3", 7, "M-Bus event log"),
    obj("0-0:99.98.4", 7, "Power quality event log"),
    obj("1-0:99.97.0", 7, "Power failure event log"),
    obj("0-0:96.11.0", 1, "Event code, standard events"),
    obj("0-0:96.11.1", 1, "Event code, fraud detection events"),
    obj("0-0:96.11.2", 1, "Event code, disconnector control events"),
    obj("0-0:96.11.4", 1, "Event code, power quality events"),
)

_MANAGEMENT: tuple[ObjectSpec, ...] = (
    obj("0-0:1.0.0", 8, "Clock"),
    obj("0-0:42.0.0", 1, "COSEM logical device name"),
    obj("0-0:96.1.0", 1, "Device ID 1 (manufacturing serial number)"),
    obj("1-0:0.2.0", 1, "Active firmware identifier (metrology core)"),
    obj("1-0:0.2.8", 1, "Active firmware signature (metrology core)"),
    # UNCERTAIN: B=1 for the communication module's firmware, as shown in public IDIS object lists.
    obj("1-1:0.2.0", 1, "Active firmware identifier (module)"),
    obj("1-1:0.2.8", 1, "Active firmware signature (module)"),
    obj("0-0:40.0.0", 15, "Current association"),
    obj("0-0:41.0.0", 17, "SAP assignment"),
    obj("0-0:43.0.0", 64, "Security setup"),
    obj("0-0:44.0.0", 18, "Image transfer"),
    obj("0-0:13.0.0", 20, "Activity calendar"),
    obj("0-0:96.14.0", 1, "Currently active tariff"),
    obj("0-0:10.0.0", 9, "Global meter reset script table"),
    obj("0-0:10.0.1", 9, "MDI reset / end of billing period script table"),
    obj("0-0:10.0.100", 9, "Tariffication script table"),
    obj("0-0:10.0.106", 9, "Disconnect control script table"),
    obj("0-0:15.0.0", 22, "End of billing period single action schedule"),
    obj("0-0:96.3.10", 70, "Disconnect control"),
    obj("0-0:17.0.0", 71, "Limiter"),
    obj("0-0:97.97.0", 1, "Error register"),
    obj("0-0:97.98.0", 1, "Alarm register 1"),
    obj("0-0:97.98.10", 1, "Alarm filter 1"),
    *(obj(f"0-{b}:24.1.0", 72, f"M-Bus client, channel {b}") for b in range(1, 5)),
    # Push setups 0-x:25.9.0. UNCERTAIN: which trigger (interval, alarm, installation, connectivity)
    # IDIS assigns to which instance is not stated consistently in public material; only the
    # instances are listed.
    *(obj(f"0-{b}:25.9.0", 40, f"Push setup {b}") for b in range(5)),
)

#: IDIS package 2 poly-phase meter.
PROFILE = Profile(
    name="IDIS",
    objects=(*_MANAGEMENT, *_ENERGY, *_INSTANTANEOUS, *_PROFILES_AND_LOGS),
    load_profiles=(Obis.parse("1-0:99.1.0"), Obis.parse("1-0:99.2.0"), Obis.parse("0-0:98.1.0")),
    event_logs=tuple(
        Obis.parse(c)
        for c in ("0-0:99.98.0", "0-0:99.98.1", "0-0:99.98.2", "0-0:99.98.3", "0-0:99.98.4", "1-0:99.97.0")
    ),
    clock=Obis.parse("0-0:1.0.0"),
    disconnect_control=Obis.parse("0-0:96.3.10"),
    meter_id=Obis.parse("0-0:96.1.0"),
)
