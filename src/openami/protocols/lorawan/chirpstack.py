"""ChirpStack v4's MQTT integration, sans-IO: events in, downlink commands out.

ChirpStack publishes one JSON document per event on ``application/<application id>/device/<dev eui>/
event/<type>`` (``up``, ``join``, ``status``, ``ack``, ``txack``, ``log``, ``location``, ``integration``),
the protobuf messages of its integration API in their JSON form (lowerCamelCase names, bytes in base64,
timestamps in RFC 3339). Downlinks are enqueued by publishing a ``DownlinkCommand`` on
``application/<application id>/device/<dev eui>/command/down``.

Only what the head-end uses is parsed, strictly: identities (application, device EUI, device profile,
tags), frame counter, port, the payload, and the radio metadata the communication-quality KPIs need
(best RSSI and SNR over the receiving gateways). Sizes are bounded before parsing; anything malformed is
an :class:`~openami.protocols.lorawan.errors.EventFormatError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from openami.protocols.lorawan.errors import EventFormatError

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "DeviceInfo",
    "JoinEvent",
    "StatusEvent",
    "UplinkEvent",
    "downlink_command",
    "event_topic_filter",
    "parse_event",
]

MAX_EVENT_BYTES: Final = 64 * 1024
"""Largest event accepted: a LoRaWAN payload is at most 242 bytes; the metadata of many gateways fits."""
EVENT_TYPES: Final = frozenset({"up", "join", "status", "ack", "txack", "log", "location", "integration"})
_TOPIC: Final = re.compile(
    r"^(?:(?P<prefix>.+)/)?application/(?P<app>[^/+#]+)/device/(?P<eui>[0-9a-fA-F]{16})/event/(?P<event>[a-z]+)$"
)
_EUI: Final = re.compile(r"^[0-9a-fA-F]{16}$")


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    application_id: str
    dev_eui: str
    """16 lower-case hex digits."""
    device_profile: str = ""
    device_name: str = ""
    tenant: str = ""
    """ChirpStack's tenant name (not ours: the device's registration decides that)."""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UplinkEvent:
    device: DeviceInfo
    time: datetime
    f_cnt: int
    f_port: int
    data: bytes
    confirmed: bool = False
    rssi: float | None = None
    snr: float | None = None
    gateways: int = 0
    deduplication_id: str = ""


@dataclass(frozen=True, slots=True)
class JoinEvent:
    device: DeviceInfo
    time: datetime
    dev_addr: str = ""


@dataclass(frozen=True, slots=True)
class StatusEvent:
    device: DeviceInfo
    time: datetime
    margin: int | None
    battery_level: float | None
    """Percent; None when the device cannot tell or runs on external power."""
    external_power: bool = False


Event = UplinkEvent | JoinEvent | StatusEvent


def event_topic_filter(prefix: str = "") -> str:
    """The MQTT filter for every device event (``prefix`` for an integration topic prefix)."""
    return (
        f"{prefix.rstrip('/')}/application/+/device/+/event/+" if prefix else "application/+/device/+/event/+"
    )


def _time(raw: object, fallback: datetime | None) -> datetime:
    if raw is None:
        if fallback is None:
            raise EventFormatError("event has no time")
        return fallback
    if not isinstance(raw, str):
        raise EventFormatError("time must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EventFormatError(f"time {raw[:40]!r}: {exc}") from None
    if parsed.tzinfo is None:
        raise EventFormatError("time without a zone")
    return parsed.astimezone(UTC)


def _device(doc: dict[str, Any], topic_app: str, topic_eui: str) -> DeviceInfo:
    info = doc.get("deviceInfo")
    if not isinstance(info, dict):
        raise EventFormatError("event has no deviceInfo")
    eui = str(info.get("devEui", topic_eui))
    if not _EUI.match(eui) or eui.lower() != topic_eui.lower():
        raise EventFormatError(f"devEui {eui[:20]!r} does not match the topic's {topic_eui}")
    tags = info.get("tags") or {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise EventFormatError("tags must map strings to strings")
    return DeviceInfo(
        application_id=str(info.get("applicationId", topic_app)),
        dev_eui=eui.lower(),
        device_profile=str(info.get("deviceProfileName", "")),
        device_name=str(info.get("deviceName", "")),
        tenant=str(info.get("tenantName", "")),
        tags=dict(tags),
    )


def _int(
    doc: dict[str, Any], name: str, default: int | None = None, *, low: int = 0, high: int = 2**32 - 1
) -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise EventFormatError(f"{name} must be an integer in 0..{high}")
    return value


def _best(rx: object, name: str) -> float | None:
    if not isinstance(rx, list):
        return None
    values = [r[name] for r in rx if isinstance(r, dict) and isinstance(r.get(name), int | float)]
    return float(max(values)) if values else None


def parse_event(topic: str, payload: bytes, *, now: datetime | None = None) -> Event | None:
    """The event on ``topic``; ``None`` for event types the head-end does not use (ack, log, ...).

    ``now`` stamps events that carry no time (ChirpStack always sends one; bridges may not).
    """
    match = _TOPIC.match(topic)
    if match is None:
        raise EventFormatError(f"not a ChirpStack device event topic: {topic[:80]!r}")
    kind = match["event"]
    if kind not in EVENT_TYPES:
        raise EventFormatError(f"unknown event type {kind!r}")
    if kind not in ("up", "join", "status"):
        return None
    if len(payload) > MAX_EVENT_BYTES:
        raise EventFormatError(f"event of {len(payload)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventFormatError(f"event is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventFormatError("event is not a JSON object")
    device = _device(doc, match["app"], match["eui"])
    time = _time(doc.get("time"), now)
    if kind == "join":
        return JoinEvent(device, time, str(doc.get("devAddr", "")))
    if kind == "status":
        level = doc.get("batteryLevel")
        unavailable = bool(doc.get("batteryLevelUnavailable")) or bool(doc.get("externalPowerSource"))
        if level is not None and (isinstance(level, bool) or not isinstance(level, int | float)):
            raise EventFormatError("batteryLevel must be a number")
        margin = doc.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int)):
            raise EventFormatError("margin must be an integer")
        return StatusEvent(
            device,
            time,
            margin,
            None if unavailable or level is None else float(level),
            bool(doc.get("externalPowerSource")),
        )
    raw = doc.get("data", "")
    if not isinstance(raw, str):
        raise EventFormatError("data must be base64 text")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EventFormatError(f"data is not base64: {exc}") from None
    rx = doc.get("rxInfo")
    return UplinkEvent(
        device,
        time,
        _int(doc, "fCnt", 0),
        _int(doc, "fPort", 0, high=255),
        data,
        bool(doc.get("confirmed", False)),
        _best(rx, "rssi"),
        _best(rx, "snr"),
        len(rx) if isinstance(rx, list) else 0,
        str(doc.get("deduplicationId", "")),
    )


def downlink_command(
    application_id: str, dev_eui: str, f_port: int, data: bytes, *, confirmed: bool = False, prefix: str = ""
) -> tuple[str, bytes]:
    """(topic, payload) that enqueues ``data`` on port ``f_port`` for the device."""
    if not _EUI.match(dev_eui):
        raise ValueError(f"{dev_eui!r} is not a 16-hex-digit device EUI")
    if not 1 <= f_port <= 223:
        raise ValueError("application ports are 1..223")
    if len(data) > 242:
        raise ValueError(f"a LoRaWAN downlink carries at most 242 bytes, not {len(data)}")
    if not application_id or "/" in application_id or "+" in application_id or "#" in application_id:
        raise ValueError(f"{application_id!r} is not an application id")
    base = f"{prefix.rstrip('/')}/" if prefix else ""
    topic = f"{base}application/{application_id}/device/{dev_eui.lower()}/command/down"
    body = {
        "devEui": dev_eui.lower(),
        "confirmed": confirmed,
        "fPort": f_port,
        "data": base64.b64encode(data).decode("ascii"),
    }
    return topic, json.dumps(body).encode()
