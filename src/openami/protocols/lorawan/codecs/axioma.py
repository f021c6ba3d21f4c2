"""``axioma-qalcosonic-w1``: Axioma Metering's Qalcosonic W1 (and W2) ultrasonic water meters.

Source: Axioma Metering, "Ultrasonic water meter Qalcosonic W1 - Lora Payload (Long) Extended" (V01.8,
2020-04-06) and "W1 USA Lora Payload" (V01.1, 2019-11-14), sections "Decoding the payload" and "Device
alarms"; the frame follows the same plan as the maker's E1/E3 "Lora Payload Extended" (V2.0). All
multi-byte fields are little-endian; times are Unix seconds (UTC); volumes are litres.

- Short frame (9 bytes): current date-time (4), status code (1), current volume (4).
- Extended frame (47 bytes, or 48 with the 0x2F padding byte): current date-time (4), status (1),
  current volume (4), log date-time (4), volume at the log date-time (4), then 15 delta volumes (2
  bytes each, litres): what flowed in each log period after the log date-time, oldest first. The
  codec gives the register at the log time and after each period (``volume``, m3, each at its own
  time), the period being the meter's log interval: the device tag ``log_interval_min`` (minutes,
  default 60, as the meters ship); a period that would end after the frame's own time means the tag
  does not match the meter and the frame is refused rather than misdated.
- Alarm frame (5 bytes, port 103): date-time (4), status (1).

Status code (the "Device alarms" table): bit 2 (0x04) low battery, bit 3 (0x08) permanent error, bit 4
(0x10) temporary error, and bits 7-5 the kind of a temporary alarm: 0x10 alone dry (empty spool), 0x30
leak, 0x70 backflow, 0x90 freeze (low temperature), 0xB0 burst, 0xD0 tamper (manipulation).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from openami.protocols.lorawan.codecs import CodecContext, CodecEvent, CodecValue, DecodedUplink, register
from openami.protocols.lorawan.codecs._flags import uint
from openami.protocols.lorawan.errors import CodecError

__all__ = ["ALARM_KINDS", "INTERVAL_TAG", "NAME", "decode_axioma_w1"]

NAME: Final = "axioma-qalcosonic-w1"
INTERVAL_TAG: Final = "log_interval_min"
ALARM_PORT: Final = 103
_SHORT: Final = 9
_EXTENDED: Final = 47
_PADDING: Final = 0x2F
_DELTAS: Final = 15
_LOW_BATTERY: Final = 0x04
_PERMANENT: Final = 0x08
_TEMPORARY: Final = 0x10
#: Bits 7-5 of the status code -> (event code, severity, Axioma's name).
ALARM_KINDS: Final[dict[int, tuple[str, str, str]]] = {
    0: ("dry", "warning", "dry (empty spool)"),
    1: ("leak", "alarm", "leakage"),
    3: ("backflow", "alarm", "backflow"),
    4: ("freeze", "warning", "low temperature (freeze)"),
    5: ("burst", "alarm", "burst"),
    6: ("tamper", "alarm", "manipulation"),
}


def _time(data: bytes, pos: int) -> datetime:
    return datetime.fromtimestamp(uint(data, pos, 4), UTC)


def _status_events(status: int) -> list[CodecEvent]:
    events = []
    if status & _LOW_BATTERY:
        events.append(CodecEvent("low_battery", "warning", {"source": NAME, "status": status}))
    if status & _PERMANENT:
        events.append(
            CodecEvent("meter_error", "alarm", {"source": NAME, "status": status, "kind": "permanent"})
        )
    kind = status >> 5
    if status & _TEMPORARY or kind:
        code, severity, name = ALARM_KINDS.get(kind, ("meter_error", "warning", "temporary error"))
        events.append(CodecEvent(code, severity, {"source": NAME, "status": status, "info": name}))
    if status & 0x03:
        events.append(CodecEvent("unknown_status", "warning", {"source": NAME, "status": status}))
    return events


def _interval(context: CodecContext) -> timedelta:
    raw = context.tags.get(INTERVAL_TAG, "60")
    if not raw.isdigit() or not 1 <= int(raw) <= 24 * 60:
        raise CodecError(f"device tag {INTERVAL_TAG}={raw!r}: minutes, 1..1440")
    return timedelta(minutes=int(raw))


def decode_axioma_w1(f_port: int, data: bytes, context: CodecContext) -> DecodedUplink:
    if f_port == ALARM_PORT and len(data) == 5:
        at = _time(data, 0)
        return DecodedUplink([], _status_events(data[4]), None, at.replace(tzinfo=None))
    if len(data) == _EXTENDED + 1 and data[-1] == _PADDING:
        data = data[:-1]
    if len(data) not in (_SHORT, _EXTENDED):
        raise CodecError(
            f"Qalcosonic W1 frame of {len(data)} bytes on port {f_port}: short frames have {_SHORT},"
            f" extended {_EXTENDED} (+1 padding), alarm frames 5 on port {ALARM_PORT}"
        )
    now, status = _time(data, 0), data[4]
    values = [CodecValue("volume", uint(data, 5, 4) / 1000, "m3", now)]
    if len(data) == _EXTENDED:
        step = _interval(context)
        at, litres = _time(data, 9), uint(data, 13, 4)
        if at > now:
            raise CodecError(
                f"Qalcosonic W1 log time {at.isoformat()} is after the frame's {now.isoformat()}"
            )
        values.append(CodecValue("volume", litres / 1000, "m3", at))
        for index in range(_DELTAS):
            at += step
            if at > now:
                raise CodecError(
                    f"Qalcosonic W1 delta {index + 1} would end after the frame's time: the device tag"
                    f" {INTERVAL_TAG} does not match the meter's log interval"
                )
            litres += uint(data, 17 + 2 * index, 2)
            values.append(CodecValue("volume", litres / 1000, "m3", at))
    return DecodedUplink(values, _status_events(status), None, now.replace(tzinfo=None))


register(NAME, decode_axioma_w1)
