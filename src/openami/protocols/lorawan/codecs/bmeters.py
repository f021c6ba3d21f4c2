"""``bmeters-hydrodigit``: B METERS' HYDRODIGIT digital single-jet water meter, LoRaWAN output.

Source: B METERS, "HYDRODIGIT - Operating instructions", User Manual v1.4.3, section "Payload LoRaWAN"
(periodic uplink, every 6 or 12 hours). 9 bytes, 11 with the temperature sending enabled:

====  ==========================================================================================
byte  field
====  ==========================================================================================
0     application code 0x45
1-3   absolute meter count, least significant byte first (litres, VIF constant)
4     high nibble: bits 27-24 of the absolute count; low nibble: bits 27-24 of the reverse count
5-7   reverse flow count, least significant byte first (litres)
8     alarms, bits 0-5: water leak, wrong installation, overflow, burst, reverse flow, low battery;
      bit 6 diameter and bit 7 medium (meter configuration, not decoded)
9-10  temperature (optional), most significant byte first, two's complement, tenths of a °C
      (the manual's example: FF 33 = -20.5 °C)
====  ==========================================================================================

The absolute count is forward minus reverse flow ("ABS [positive - negative flow counting]"), the
meter's register: ``volume`` (m3); the reverse count is ``reverse_volume`` (m3); the temperature is
``temperature`` (°C). The frame has no time: the uplink's applies.
"""

from __future__ import annotations

from typing import Final

from openami.protocols.lorawan.codecs import CodecContext, CodecValue, DecodedUplink, register
from openami.protocols.lorawan.codecs._flags import Flag, flag_events, uint
from openami.protocols.lorawan.errors import CodecError

__all__ = ["ALARMS", "APPLICATION_CODE", "NAME", "decode_hydrodigit"]

NAME: Final = "bmeters-hydrodigit"
APPLICATION_CODE: Final = 0x45
_ALARM_BITS: Final = 0x3F
ALARMS: Final[dict[int, Flag]] = {
    0: ("leak", "alarm", "water leak"),
    1: ("wrong_installation", "warning", "wrong installation"),
    2: ("overflow", "warning", "overflow"),
    3: ("burst", "alarm", "burst"),
    4: ("backflow", "alarm", "reverse flow"),
    5: ("low_battery", "warning", "low battery"),
}


def decode_hydrodigit(f_port: int, data: bytes, context: CodecContext) -> DecodedUplink:
    if len(data) not in (9, 11):
        raise CodecError(f"HYDRODIGIT frame of {len(data)} bytes: the periodic uplink has 9 or 11")
    if data[0] != APPLICATION_CODE:
        raise CodecError(f"HYDRODIGIT application code {data[0]:#04x}, expected {APPLICATION_CODE:#04x}")
    forward = uint(data, 1, 3) | (data[4] >> 4) << 24
    reverse = uint(data, 5, 3) | (data[4] & 0x0F) << 24
    values = [CodecValue("volume", forward / 1000, "m3"), CodecValue("reverse_volume", reverse / 1000, "m3")]
    if len(data) == 11:
        values.append(CodecValue("temperature", int.from_bytes(data[9:11], "big", signed=True) / 10, "°C"))
    return DecodedUplink(values, flag_events(data[8] & _ALARM_BITS, ALARMS, source=NAME))


register(NAME, decode_hydrodigit)
