"""``kamstrup-lorawan``: Kamstrup's LoRaWAN meters: flowIQ 2200 and MULTICAL 21 (water), and MULTICAL
403/603 heat meters with the HC-003-55 LoRaWAN module.

Source: Kamstrup's published payload description, its entry in The Things Network device repository
(``vendor/kamstrup``: ``flowiq2200-02k73a``, ``hc-003-55-multical``, with the uplink decoder and worked
examples, one of them "Example from Integration Guide"). Every uplink is an EN 13757-7 transport layer
without the link layer: a CI field (0x78 no header; 0x7A short header: access number, status,
configuration word; 0x72 long header: meter id as BCD, manufacturer, version, device type, then the
short header's fields) and EN 13757-3 records, unencrypted (a configuration word naming a security mode
is refused). The records are Kamstrup's choice per meter type and configuration:

- a date-time (VIF 0x6D) in storage 1: the log time the other storage-1 values belong to, in the
  meter's local time (no zone is sent: the ChirpStack device tag ``timezone`` names it, default UTC);
- the register values at that time (volume in m3, energy, flow, temperatures ... in base units as the
  VIF gives them), named as on every M-Bus bearer (``volume``, ``energy``, ``volume_flow:maximum``);
- an inverse compact profile (VIFE 0x13, EN 13757-3 annex F) of the same quantity: increments going
  back in time from the register value at the spacing the profile gives (hourly: 1 h); the codec turns
  them into the register's earlier values, stamped each at its own time. A profile without its register
  value cannot be anchored and is refused (as Kamstrup's decoder does);
- manufacturer records (VIF 0xFF + VIFE): 0x25 the water meters' info code (bits: 0 dry, 1 reverse
  flow, 2 leak, 3 burst, 4 tamper, 5 low battery, 6 low / 7 high ambient temperature), 0x22 the
  MULTICAL info code of the heat meters (32 bits, table :data:`HEAT_INFO`), both as events; 0x1C the
  acoustic leak detection level of the last day (``ald_last_day``, Kamstrup's 0-based noise class);
  0x16 the module's configuration number (not a reading: left out);
- values the meter marks invalid (the type B minimum, e.g. 0x80 for one byte) are left out.

A long header names the meter (``meter_id``); the installation frame Kamstrup sends after joining
(long header, configuration number) carries no readings.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Final

from openami.protocols.lorawan.codecs import (
    CodecContext,
    CodecEvent,
    CodecValue,
    DecodedUplink,
    register,
)
from openami.protocols.lorawan.codecs._flags import Flag, flag_events, local_to_aware, meter_zone, need, uint
from openami.protocols.lorawan.errors import CodecError
from openami.protocols.mbus import DataRecord, MbusError, decode_records

__all__ = ["HEAT_INFO", "NAME", "WATER_INFO", "decode_kamstrup"]

NAME: Final = "kamstrup-lorawan"
_CI_NO_HEADER: Final = 0x78
_CI_SHORT: Final = 0x7A
_CI_LONG: Final = 0x72
_SECURITY_MODE_BITS: Final = 0x1F00
_VIFE_WATER_INFO: Final = 0x25
_VIFE_HEAT_INFO: Final = 0x22
_VIFE_ALD_LAST_DAY: Final = 0x1C

#: Info code of flowIQ 2200 / MULTICAL 21, bit -> event.
WATER_INFO: Final[dict[int, Flag]] = {
    0: ("dry", "warning", "dry"),
    1: ("backflow", "alarm", "reverse flow"),
    2: ("leak", "alarm", "leak"),
    3: ("burst", "alarm", "burst"),
    4: ("tamper", "alarm", "tamper"),
    5: ("low_battery", "warning", "low battery"),
    6: ("ambient_temperature_low", "warning", "low ambient temperature"),
    7: ("ambient_temperature_high", "warning", "high ambient temperature"),
}
#: Info code of MULTICAL 403/603 ("MC type 4"), bit -> event.
HEAT_INFO: Final[dict[int, Flag]] = {
    0: ("power_off", "warning", "power off"),
    1: ("low_battery", "warning", "low battery"),
    2: ("external_alarm", "alarm", "external alarm"),
    3: ("temperature_sensor_error", "warning", "t1 above range or disconnected"),
    4: ("temperature_sensor_error", "warning", "t2 above range or disconnected"),
    5: ("temperature_sensor_error", "warning", "t1 below range or short circuited"),
    6: ("temperature_sensor_error", "warning", "t2 below range or short circuited"),
    7: ("temperature_sensor_error", "warning", "wrong dt (t1-t2)"),
    8: ("dry", "warning", "V1 air"),
    9: ("backflow", "alarm", "V1 reverse"),
    10: ("flow_sensor_error", "warning", "V1 low signal"),
    11: ("flow_above_qs", "warning", "V1 > qs for more than 1 hour"),
    12: ("leak", "alarm", "InA1 water system leak"),
    13: ("leak", "alarm", "InB1 water system leak"),
    14: ("external_alarm", "alarm", "InA external alarm"),
    15: ("external_alarm", "alarm", "InB external alarm"),
    16: ("flow_sensor_error", "warning", "V1 communication error"),
    17: ("flow_sensor_error", "warning", "V1 pulse error"),
    18: ("leak", "alarm", "InA2 water system leak"),
    19: ("leak", "alarm", "InB2 water system leak"),
    20: ("temperature_sensor_error", "warning", "t3 above range or disconnected"),
    21: ("temperature_sensor_error", "warning", "t3 below range or short circuited"),
    22: ("flow_sensor_error", "warning", "V2 communication error"),
    23: ("flow_sensor_error", "warning", "V2 pulse error"),
    24: ("dry", "warning", "V2 air"),
    25: ("backflow", "alarm", "V2 reverse"),
    26: ("flow_sensor_error", "warning", "V2 low signal"),
    27: ("flow_above_qs", "warning", "V2 > qs for more than 1 hour"),
    28: ("burst", "alarm", "V1V2 burst out"),
    29: ("burst", "alarm", "V1V2 burst in"),
    30: ("leak", "alarm", "V1V2 leak out"),
    31: ("leak", "alarm", "V1V2 leak in"),
}
_STEPS: Final = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days"}


def _transport(data: bytes) -> tuple[int, str | None]:
    """Where the records start, and the meter id of a long header."""
    ci = data[0]
    if ci == _CI_NO_HEADER:
        return 1, None
    if ci == _CI_SHORT:
        need(data, 5, "Kamstrup short header")
        config, pos, meter_id = uint(data, 3, 2), 5, None
    elif ci == _CI_LONG:
        need(data, 13, "Kamstrup long header")
        config, pos, meter_id = uint(data, 11, 2), 13, data[4:0:-1].hex().upper()
    else:
        raise CodecError(f"unknown Kamstrup transport header CI {ci:#04x} (0x78, 0x7A or 0x72)")
    if config & _SECURITY_MODE_BITS:
        raise CodecError("Kamstrup payload is encrypted (security mode set): turn payload encryption off")
    return pos, meter_id


def _invalid(record: DataRecord) -> bool:
    """Type B's "no value": only the sign bit of the data field set."""
    raw = record.raw
    return isinstance(record.value, int) and bool(raw) and raw[-1] == 0x80 and not any(raw[:-1])


def _channel(record: DataRecord) -> str:
    return record.quantity if record.function == "instantaneous" else f"{record.quantity}:{record.function}"


def _step_back(ts: datetime, spacing: str, steps: int) -> datetime:
    """``ts`` moved back ``steps`` profile spacings (``1h``, ``15min``, ``1month`` ...)."""
    if spacing == "1month":
        month = ts.month - 1 - steps
        year, month = ts.year + month // 12, month % 12 + 1
        return ts.replace(year=year, month=month, day=min(ts.day, calendar.monthrange(year, month)[1]))
    for suffix, unit in _STEPS.items():
        number = spacing.removesuffix(suffix)
        if number != spacing and number.isdigit() and int(number) > 0:
            return ts - steps * timedelta(**{unit: int(number)})
    raise CodecError(f"Kamstrup profile spacing {spacing!r} cannot be dated")


def _note(record: DataRecord, prefix: str) -> str:
    return next((n.removeprefix(prefix) for n in record.annotations if n.startswith(prefix)), "")


def _profile(
    records: Sequence[DataRecord], base: dict[str, tuple[float, str]], at: datetime | None
) -> list[CodecValue]:
    """The earlier register values an inverse compact profile gives, oldest last."""
    out: list[CodecValue] = []
    running: dict[str, float] = {}
    for record in records:
        channel = _channel(record)
        if channel not in base or at is None:
            raise CodecError(f"Kamstrup profile of {channel} without its register value and log time")
        if not isinstance(record.value, int | float):
            raise CodecError(f"Kamstrup profile of {channel}: element {_note(record, 'element=')} invalid")
        if "positive_increment" in record.annotations or "signed_difference" in record.annotations:
            sign = -1.0  # the register grew by the element into the later slot: go back by subtracting it
        elif "negative_increment" in record.annotations:
            sign = 1.0
        else:
            raise CodecError(f"Kamstrup profile of {channel}: absolute profiles are not sent by these meters")
        value, unit = base[channel]
        running[channel] = running.get(channel, value) + sign * float(record.value)
        index = int(_note(record, "element=") or 0)
        when = _step_back(at, _note(record, "spacing="), index)
        out.append(CodecValue(channel, round(running[channel], 9), unit, when))
    return out


def decode_kamstrup(f_port: int, data: bytes, context: CodecContext) -> DecodedUplink:
    if not data:
        raise CodecError("empty payload")
    pos, meter_id = _transport(data)
    try:
        records = decode_records(data, pos)
    except MbusError as exc:
        raise CodecError(f"Kamstrup records: {exc}") from exc
    zone: tzinfo = meter_zone(context)
    at: datetime | None = None
    values: list[CodecValue] = []
    events: list[CodecEvent] = []
    base: dict[str, tuple[float, str]] = {}
    profiles: list[DataRecord] = []
    for record in records:
        if record.quantity == "date_time" and isinstance(record.value, str):
            at = at or local_to_aware(record.value, zone)
        elif "inverse_compact_profile" in record.annotations:
            profiles.append(record)
        elif record.quantity == "manufacturer_specific" and isinstance(record.value, int):
            code = record.vife[0] if record.vife else None
            if code == _VIFE_WATER_INFO:
                events += flag_events(record.value, WATER_INFO, source=NAME)
            elif code == _VIFE_HEAT_INFO:
                events += flag_events(record.value, HEAT_INFO, source=NAME)
            elif code == _VIFE_ALD_LAST_DAY:
                values.append(CodecValue("ald_last_day", float(record.value), ""))
        elif isinstance(record.value, int | float) and record.unit and not _invalid(record):
            channel = _channel(record)
            base.setdefault(channel, (float(record.value), record.unit))
            values.append(CodecValue(channel, float(record.value), record.unit))
    values = [CodecValue(v.channel, v.value, v.unit, at) for v in values]
    values += _profile(profiles, base, at)
    meter_time = at.replace(tzinfo=None) if at else None
    return DecodedUplink(values, events, meter_id, meter_time)


register(NAME, decode_kamstrup)
