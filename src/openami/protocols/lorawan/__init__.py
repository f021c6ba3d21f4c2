"""LoRaWAN, sans-IO: network-server integration events (ChirpStack v4) and device payload codecs.

The head-end never speaks LoRaWAN's radio or MAC layers: a network server (ChirpStack) terminates them
and hands over each device's decrypted FRMPayload with its metadata. :mod:`~openami.protocols.lorawan
.chirpstack` reads those events and writes downlink commands; :mod:`~openami.protocols.lorawan.codecs`
turns a payload into readings by the device profile's codec.
"""

from openami.protocols.lorawan.chirpstack import (
    DeviceInfo,
    JoinEvent,
    StatusEvent,
    UplinkEvent,
    downlink_command,
    event_topic_filter,
    parse_event,
)
from openami.protocols.lorawan.codecs import CodecContext, CodecEvent, CodecValue, DecodedUplink, codec
from openami.protocols.lorawan.errors import CodecError, EventFormatError, LorawanError, UnknownProfileError

__all__ = [
    "CodecContext",
    "CodecError",
    "CodecEvent",
    "CodecValue",
    "DecodedUplink",
    "DeviceInfo",
    "EventFormatError",
    "JoinEvent",
    "LorawanError",
    "StatusEvent",
    "UnknownProfileError",
    "UplinkEvent",
    "codec",
    "downlink_command",
    "event_topic_filter",
    "parse_event",
]
