"""Gateway uplinks in the JSON format v1 (``docs/drivers/mqtt-json.md``) onto the bus, whatever carried them.

Third-party gateways send that JSON over MQTT (:mod:`openami.hes.mqtt_listener`) or over HTTP
(``POST /uplinks``, :mod:`openami.api.routes.uplinks`); both hand the bytes to :func:`decode_json_uplink`
and :func:`publish_parts`, so an uplink means the same readings and gets the same bus message ids (its
gateway sequence number, else its content) by either path, and a retransmission is stored once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from openami.bus.base import Publisher
from openami.bus.messages import ReadingBatch, readings_subject
from openami.drivers.mqtt_json import DRIVER_SPEC, parse_uplink, uplink_to_batch

__all__ = ["MAX_BUS_MESSAGE_BYTES", "decode_json_uplink", "message_id", "publish_parts", "split_batch"]

MAX_BUS_MESSAGE_BYTES: Final = 1_000_000
"""Largest bus message we publish: under the 1 MiB NATS default (and MemoryBus limit), with header room."""


def message_id(tenant: str, gateway: str, seq: int | None, payload: bytes) -> str:
    """Bus de-duplication id of an uplink: its gateway sequence number, else the payload's content.

    Each bus message of the uplink appends ``#<part>`` (see :func:`split_batch`).
    """
    if seq is not None:
        return f"{DRIVER_SPEC.name}:{tenant}:{gateway}:{seq}"
    return f"{DRIVER_SPEC.name}:{tenant}:{gateway}:sha256:{hashlib.sha256(payload).hexdigest()[:32]}"


def split_batch(batch: ReadingBatch, max_bytes: int = MAX_BUS_MESSAGE_BYTES) -> list[bytes]:
    """Serialise a batch as one or more bus messages of at most ``max_bytes`` each.

    A gateway message may carry up to 200,000 readings (several MB as JSON) while bus messages are capped
    at about 1 MiB. The batch is halved until the parts fit: its items (series, then events) first, and a
    lone series by its points. Splitting is deterministic, so a retransmitted uplink gives the same parts
    and the same per-part message ids. A single point or event is returned as is, whatever its size.
    """
    data = batch.to_bytes()
    halves = _halves(batch) if len(data) > max_bytes else None
    if halves is None:
        return [data]
    return [part for half in halves for part in split_batch(half, max_bytes)]


def _halves(batch: ReadingBatch) -> tuple[ReadingBatch, ReadingBatch] | None:
    series, events = batch.series, batch.events
    items = len(series) + len(events)
    if items > 1:
        cut = items // 2  # index into series followed by events
        first = {"series": series[:cut], "events": events[: max(0, cut - len(series))]}
        second = {"series": series[cut:], "events": events[max(0, cut - len(series)) :]}
        return batch.model_copy(update=first), batch.model_copy(update=second)
    if series and len(series[0].points) > 1:
        points = series[0].points
        middle = len(points) // 2
        return (
            batch.model_copy(update={"series": [series[0].model_copy(update={"points": points[:middle]})]}),
            batch.model_copy(update={"series": [series[0].model_copy(update={"points": points[middle:]})]}),
        )
    return None


def decode_json_uplink(
    tenant: str, gateway: str, payload: bytes, received_at: datetime, max_bytes: int = MAX_BUS_MESSAGE_BYTES
) -> tuple[int | None, ReadingBatch, list[bytes]]:
    """The uplink's sequence number, its batch, and the batch as bus messages. CPU-bound (inflating,
    validating, converting): callers run it in a thread. :class:`GatewayPayloadError` for bad bytes."""
    uplink = parse_uplink(payload)
    batch = uplink_to_batch(tenant, gateway, uplink, received_at)
    return uplink.seq, batch, split_batch(batch, max_bytes)


async def publish_parts(bus: Publisher, tenant: str, base_id: str, parts: Sequence[bytes]) -> None:
    """Publish an uplink's bus messages on ``readings.<tenant>`` as ``<base_id>#<part>``."""
    for index, part in enumerate(parts):
        await bus.publish(readings_subject(tenant), part, msg_id=f"{base_id}#{index}")
