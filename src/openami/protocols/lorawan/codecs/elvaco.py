"""``elvaco-cmi41xx``: Elvaco's CMi41xx LoRaWAN modules for heat and cooling meters (CMi4110 for
Landis+Gyr UH50/T550, CMi4111 for Kamstrup MULTICAL, CMi4130, CMi4140, CMi4160 for Diehl Sharky ...).

From the modules' published user manuals: every uplink starts with one byte naming the message format,
then EN 13757-3 data records (energy, volume, power, flow, temperatures, meter id as an enhanced
identification record, error flags, meter date-time), except the JSON format, which is text. Each
module family numbers its formats from its own base (CMi4110/4111: 0x00-0x04, CMi4130: 0x0F-0x14,
CMi4140: 0x15-0x1B, CMi4160: 0x1E-0x23); 0xFA is the daily clock message of the scheduled formats, whose
only record is the meter's date-time. Values the module could not read are sent "during error state"
and become a ``meter_read_error`` event instead of readings.

Downlinks (port 2, the manuals' command table): a 0x00 header, then parameter id, length and value
(least significant byte first): transmit interval (0x06, minutes), message format (0x07), relative time
change (0x13, seconds, sign in the top bit), UTC offset (0x17, minutes, sign in the top bit), reboot (0x22
with 0x759E).
"""

from __future__ import annotations

from typing import Final

from openami.protocols.lorawan.codecs import CodecContext, DecodedUplink, register
from openami.protocols.lorawan.codecs.mbus_records import from_records
from openami.protocols.lorawan.errors import CodecError
from openami.protocols.mbus import MbusError, decode_records

__all__ = [
    "CLOCK_MESSAGE",
    "DOWNLINK_PORT",
    "MESSAGE_FORMATS",
    "decode_elvaco",
    "downlink",
    "reboot",
    "set_message_format",
    "set_transmit_interval",
    "set_utc_offset",
    "shift_clock",
]

CLOCK_MESSAGE: Final = 0xFA
DOWNLINK_PORT: Final = 2
#: Message format byte -> (module family, format) from the manuals' tables.
MESSAGE_FORMATS: Final[dict[int, tuple[str, str]]] = {
    **{b: ("CMi4110", f) for b, f in enumerate(
        ("standard", "compact", "json", "daily_redundant", "extended"))},
    **{0x0F + i: ("CMi4130", f) for i, f in enumerate(
        ("standard", "compact", "json", "daily_redundant", "extended", "heat_cooling"))},
    **{0x15 + i: ("CMi4140", f) for i, f in enumerate(
        ("standard", "compact", "json", "daily_redundant", "extended", "heat_cooling", "heat_intelligence"))},
    **{0x1E + i: ("CMi4160", f) for i, f in enumerate(
        ("standard", "compact", "json", "daily_redundant", "extended", "heat_cooling"))},
}  # fmt: skip
_PARAM_TRANSMIT_INTERVAL: Final = 0x06
_PARAM_MESSAGE_FORMAT: Final = 0x07
_PARAM_TIME_RELATIVE: Final = 0x13
_PARAM_UTC_OFFSET: Final = 0x17
_PARAM_REBOOT: Final = 0x22
_REBOOT_CODE: Final = 0x759E


def decode_elvaco(f_port: int, data: bytes, context: CodecContext) -> DecodedUplink:
    if not data:
        raise CodecError("empty payload")
    head = data[0]
    if head != CLOCK_MESSAGE and head not in MESSAGE_FORMATS:
        raise CodecError(f"unknown Elvaco message format {head:#04x}")
    if head in MESSAGE_FORMATS and MESSAGE_FORMATS[head][1] == "json":
        raise CodecError("the JSON message format is not decoded: configure an M-Bus message format")
    try:
        records = decode_records(data[1:])
    except MbusError as exc:
        raise CodecError(f"Elvaco message {head:#04x}: {exc}") from exc
    decoded = from_records(records)
    if head == CLOCK_MESSAGE:
        return DecodedUplink([], decoded.events, decoded.meter_id, decoded.meter_time)
    return decoded


def _signed_magnitude(value: int, size: int) -> bytes:
    top = 1 << (8 * size - 1)
    if abs(value) >= top:
        raise ValueError(f"{value} does not fit {size} bytes with a sign bit")
    return (abs(value) | (top if value < 0 else 0)).to_bytes(size, "little")


def downlink(*parameters: tuple[int, bytes]) -> bytes:
    """A configuration downlink of (parameter id, value) pairs."""
    out = bytearray(b"\x00")
    for parameter, value in parameters:
        if not 0 <= parameter <= 0xFF or len(value) > 0xFF:
            raise ValueError("parameter ids and lengths are single bytes")
        out += bytes((parameter, len(value))) + value
    return bytes(out)


def set_transmit_interval(minutes: int) -> bytes:
    if not 1 <= minutes <= 0xFFFF:
        raise ValueError("transmit interval is 1..65535 minutes")
    return downlink((_PARAM_TRANSMIT_INTERVAL, minutes.to_bytes(2, "little")))


def set_message_format(code: int) -> bytes:
    if code not in MESSAGE_FORMATS:
        raise ValueError(f"unknown message format {code:#04x}")
    return downlink((_PARAM_MESSAGE_FORMAT, bytes((code,))))


def shift_clock(seconds: int) -> bytes:
    """Move the meter clock by ``seconds`` (negative: back), as the head-end's time sync does."""
    return downlink((_PARAM_TIME_RELATIVE, _signed_magnitude(seconds, 4)))


def set_utc_offset(minutes: int) -> bytes:
    return downlink((_PARAM_UTC_OFFSET, _signed_magnitude(minutes, 2)))


def reboot() -> bytes:
    return downlink((_PARAM_REBOOT, _REBOOT_CODE.to_bytes(2, "little")))


register("elvaco-cmi41xx", decode_elvaco)
