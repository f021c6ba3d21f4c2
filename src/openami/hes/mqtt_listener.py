"""The head-end's MQTT listener: gateway uplinks in, ReadingBatch messages out on the bus.

It subscribes to every tenant's and gateway's uplink topic (``{prefix}/+/gw/+/up``, QoS 1), decodes each
message with the ``mqtt-json`` driver and publishes the batch on ``readings.<tenant>``. The bus message
id is derived from (tenant, gateway, seq), or from a hash of the payload when the gateway sends no
``seq``, so a gateway retransmitting a message (or the broker redelivering it) stores it once.

With a :class:`~openami.hes.wmbus_ingest.WmbusIngest`, it also takes gateways' forwarded wireless M-Bus
telegrams on ``{prefix}/<tenant>/gw/<gateway>/wmbus`` (receiver lines as text; decoded here with the key
vault's keys): lines that cannot be used go to ``on_rejected``, the rest to the bus like any uplink.

A message that cannot be decoded never stops the listener: it is counted and handed, with its reason
and the first 64 KiB of its payload, to ``on_rejected`` (the app stores it in a dead-letter table).
When the broker goes away the listener reconnects with capped exponential backoff and jitter.

Delivery note: the MQTT client acknowledges a QoS 1 message when it arrives, before it reaches the bus.
A message in the client's memory when the process dies is lost unless the gateway resends it, which the
de-duplication above makes safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from openami.bus.base import Bus, BusError
from openami.bus.messages import ReadingBatch
from openami.drivers.mqtt_json import (
    UPLINK_QOS,
    GatewayPayloadError,
    parse_uplink_topic,
    uplink_filter,
)
from openami.drivers.mqtt_json.topics import WMBUS_LEAF
from openami.hes.gateway_link_store import DiscoveredDevice
from openami.hes.rejected import RejectedHandler, hand_over
from openami.hes.uplinks import (
    MAX_BUS_MESSAGE_BYTES,
    decode_json_uplink,
    message_id,
    publish_parts,
    split_batch,
)
from openami.hes.wmbus_ingest import WmbusIngest
from openami.transports.mqtt_subscriber import MqttSubscriber

log = logging.getLogger(__name__)

"""How much of a rejected payload is kept for the dead-letter record."""


@dataclass
class ListenerStats:
    """Counters for /metrics: every received message ends up accepted or rejected."""

    received: int = 0
    accepted: int = 0
    rejected: int = 0
    readings: int = 0
    events: int = 0


DiscoveryHandler = Callable[[str, str, list[DiscoveredDevice], datetime], Awaitable[None]]
"""``(tenant, gateway, devices, seen_at)``: meters a gateway's receiver heard asking to be installed."""


class MqttGatewayListener:
    """Subscribes to gateway uplinks on an MQTT broker and publishes their readings on the bus.

    ``client_id`` makes the MQTT session persistent: the broker then queues uplinks while the listener
    is away (restart, network blip). Leave it None for a throw-away session, or when several listener
    processes run (MQTT 3.1.1 has no shared subscriptions, so they would each get every message).
    """

    def __init__(
        self,
        mqtt_url: str,
        topic_prefix: str,
        bus: Bus,
        on_rejected: RejectedHandler | None = None,
        *,
        client_id: str | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        max_bus_message_bytes: int = MAX_BUS_MESSAGE_BYTES,
        wmbus: WmbusIngest | None = None,
        discoveries: DiscoveryHandler | None = None,
    ) -> None:
        filters = [(uplink_filter(topic_prefix), UPLINK_QOS)]
        if wmbus is not None:
            filters.append((uplink_filter(topic_prefix, WMBUS_LEAF), UPLINK_QOS))
        self._subscriber = MqttSubscriber(
            mqtt_url,
            filters,
            self._handle,
            name="mqtt-gateway-listener",
            client_id=client_id,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            connect_timeout_s=connect_timeout_s,
        )
        self._prefix = topic_prefix
        self._bus = bus
        self._on_rejected = on_rejected
        self._max_bus_message_bytes = max_bus_message_bytes
        self._wmbus = wmbus
        self._discoveries = discoveries
        self.stats = ListenerStats()

    @property
    def connected(self) -> bool:
        """Subscribed right now (False while reconnecting)."""
        return self._subscriber.connected

    @property
    def connects(self) -> int:
        """Successful (re)connections so far."""
        return self._subscriber.connects

    async def start(self) -> None:
        """Connect and subscribe; raises :class:`ConnectError` if that fails within the connect timeout.

        Failing fast at startup surfaces a wrong URL or a missing broker; once running, losing the broker
        only means reconnecting.
        """
        await self._subscriber.start()

    async def stop(self) -> None:
        """Disconnect; a message being handled is finished (and reaches the bus) first."""
        await self._subscriber.stop()

    async def _decode_wmbus(
        self, topic: str, payload: bytes, received_at: datetime
    ) -> tuple[str, str, ReadingBatch, list[bytes]]:
        """A forwarded wM-Bus message: lines that cannot be used are reported, the rest is kept."""
        assert self._wmbus is not None  # only subscribed with an ingest
        tenant, gateway = parse_uplink_topic(self._prefix, topic, WMBUS_LEAF)
        try:
            text = payload.decode("ascii")
        except UnicodeDecodeError:
            raise GatewayPayloadError("wM-Bus forwarding carries text lines, not binary") from None
        result = await self._wmbus.handle(tenant, text, received_at)
        if result.rejected:
            reason = "; ".join(result.rejected[:10])
            await hand_over(self._on_rejected, topic, tenant, reason, payload, received_at)
        if result.discovered and self._discoveries is not None:
            await self._discoveries(tenant, gateway, result.discovered, received_at)
        if result.batch is None and not result.discovered:
            raise GatewayPayloadError("no usable wM-Bus telegram in the message")
        batch = result.batch or ReadingBatch(tenant=tenant, source="wmbus", received_at=received_at)
        parts = split_batch(batch, self._max_bus_message_bytes) if result.batch is not None else []
        return tenant, gateway, batch, parts

    async def _handle(self, topic: str, payload: bytes) -> None:
        self.stats.received += 1
        received_at = datetime.now(UTC)
        tenant: str | None = None
        try:
            if self._wmbus is not None and topic.endswith(f"/{WMBUS_LEAF}"):
                tenant, gateway, batch, parts = await self._decode_wmbus(topic, payload, received_at)
                seq = None
            else:
                tenant, gateway = parse_uplink_topic(self._prefix, topic)
                # Inflating, validating and converting cost milliseconds of CPU: not on the event loop.
                seq, batch, parts = await asyncio.to_thread(
                    decode_json_uplink, tenant, gateway, payload, received_at, self._max_bus_message_bytes
                )
            await publish_parts(self._bus, tenant, message_id(tenant, gateway, seq, payload), parts)
        except GatewayPayloadError as exc:
            reason = exc.reason
        except BusError as exc:
            reason = f"bus publish failed: {exc}"
        except Exception as exc:
            # A bug must cost one message (kept as a dead letter), never the listener.
            log.exception("failed to handle uplink on %r", topic)
            reason = f"internal error: {type(exc).__name__}"
        else:
            self.stats.accepted += 1
            self.stats.readings += batch.reading_count
            self.stats.events += len(batch.events)
            return
        self.stats.rejected += 1
        log.warning("rejected uplink on %r: %s", topic, reason)
        await hand_over(self._on_rejected, topic, tenant, reason, payload, received_at)
