"""What other parts of the platform take from a telegram: a JSON view and readings for a ReadingBatch.

The JSON view is for the ``openami decode dsmr`` command and for people: everything the telegram said,
values normalised, nothing dropped. The readings are for the MDM: only measurements (energy registers,
demand, voltage, current, sub-meter volumes), keyed by the meter's equipment id and the reduced OBIS code,
because settings (thresholds), states (tariff, breaker) and logs are not time series.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from openami.bus.messages import Reading
from openami.protocols.dsmr.telegram import DsmrTelegram, DsmrValue

__all__ = ["readings", "to_json"]

#: (C, D) of objects that are not measurements: clock, ids, version, tariff, breaker, valve, messages,
#: device type, profile buffers and logs.
_NOT_MEASURED: Final = frozenset({(0, 0), (0, 2), (1, 0), (42, 0), (24, 1), (24, 4), (98, 1), (99, 97)})
#: Objects that are settings a meter reports, not something it measured (limiter and fuse thresholds).
_SETTINGS: Final = frozenset({(17, 0, 0), (31, 4, 0), (51, 4, 0), (71, 4, 0)})
_METER_ID_MAX: Final = 64


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def _value_json(v: DsmrValue) -> dict[str, Any]:
    return {
        "obis": v.obis.reduced,
        "value": v.value,
        "unit": v.unit,
        "timestamp": _iso(v.timestamp),
        "channel": v.channel,
    }


def to_json(telegram: DsmrTelegram) -> dict[str, Any]:
    """A JSON-serialisable dict: header, version, CRC, every value, the power failure log, M-Bus devices."""
    return {
        "header": telegram.header,
        "manufacturer": telegram.manufacturer,
        "identification": telegram.identification,
        "version": telegram.version,
        "crc": f"{telegram.crc:04X}" if telegram.crc is not None else None,
        "crc_ok": telegram.crc_ok,
        "timestamp": _iso(telegram.timestamp),
        "equipment_id": telegram.equipment_id,
        "values": [_value_json(v) for v in telegram.values],
        "power_failures": [{"end": _iso(p.end), "duration_s": p.duration_s} for p in telegram.power_failures],
        "mbus": [
            {"channel": d.channel, "device_type": d.device_type, "equipment_id": d.equipment_id}
            for d in telegram.mbus
        ],
        "unparsed": list(telegram.unparsed),
    }


def _measured(v: DsmrValue) -> bool:
    obis = v.obis
    if isinstance(v.value, bool) or not isinstance(v.value, int | float):
        return False
    if obis.c in (96, 97) or (obis.c, obis.d) in _NOT_MEASURED or obis[2:5] in _SETTINGS:
        return False
    return v.unit is not None or obis.a != 0


def readings(
    telegram: DsmrTelegram, *, received_at: datetime | None = None, meter: str | None = None
) -> list[Reading]:
    """The measurements as register readings, ready for ``ReadingBatch.from_readings``.

    The meter is ``meter``, else the equipment id the telegram carries, else its header; M-Bus values go
    to the sub-meter's own equipment id, else ``<meter>:<channel>`` (unitless values of a channel without
    an id are skipped: DSMR 5 meters report an empty channel with a placeholder value).
    Each reading is stamped with its own capture time (M-Bus, peak demand), else the telegram's clock,
    else ``received_at``; values with none of them (v2.2/v3 telegrams without ``received_at``) are left out.
    """
    main = (meter or telegram.equipment_id or telegram.header or "unknown")[:_METER_ID_MAX]
    sub_ids = {d.channel: d.equipment_id for d in telegram.mbus}
    fallback = telegram.timestamp or received_at
    out: list[Reading] = []
    for v in telegram.values:
        if not _measured(v):
            continue
        owner = main
        if v.channel is not None:
            sub = sub_ids.get(v.channel)
            if sub is None and v.unit is None:
                continue  # an empty channel's placeholder, e.g. 0-1:24.2.1(700101010000W)(00000000)
            owner = (sub or f"{main[: _METER_ID_MAX - 4]}:{v.channel}")[:_METER_ID_MAX]
        ts = v.timestamp or fallback
        if ts is None:
            continue
        assert isinstance(v.value, int | float)
        out.append(Reading(owner, v.obis.reduced, ts, float(v.value), v.unit or "", "register"))
    return out
