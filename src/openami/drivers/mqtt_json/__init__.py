"""JSON-over-MQTT gateway driver: format v1 codec, topic layout and driver description.

The transport side lives in :mod:`openami.hes.mqtt_listener`; this package is pure and has no IO.
"""

from openami.drivers.mqtt_json.codec import (
    MAX_EVENTS,
    MAX_PAYLOAD_BYTES,
    MAX_READINGS,
    CompactSeries,
    EventV1,
    GatewayPayloadError,
    MeterV1,
    TimedSeries,
    UplinkV1,
    decode_uplink,
    encode_uplink,
    parse_uplink,
    uplink_to_batch,
)
from openami.drivers.mqtt_json.spec import DRIVER_SPEC, DriverSpec
from openami.drivers.mqtt_json.topics import UPLINK_QOS, parse_uplink_topic, uplink_filter, uplink_topic

__all__ = [
    "DRIVER_SPEC",
    "MAX_EVENTS",
    "MAX_PAYLOAD_BYTES",
    "MAX_READINGS",
    "UPLINK_QOS",
    "CompactSeries",
    "DriverSpec",
    "EventV1",
    "GatewayPayloadError",
    "MeterV1",
    "TimedSeries",
    "UplinkV1",
    "decode_uplink",
    "encode_uplink",
    "parse_uplink",
    "parse_uplink_topic",
    "uplink_filter",
    "uplink_to_batch",
    "uplink_topic",
]
