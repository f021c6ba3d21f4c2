"""Third-party gateways pushing over HTTP: ``POST /uplinks`` with the JSON format v1 uplink.

Some gateways cannot keep an MQTT session (firewalled sites, vendors' cloud bridges, scripts) but can
POST. The body is exactly what they would publish on MQTT (``docs/drivers/mqtt-json.md``, gzip allowed
with ``Content-Encoding: gzip``), the tenant is the calling account's, and the ``gateway`` named in the
body must be one of the tenant's registered gateways or concentrators, so one tenant's account cannot
push readings under another tenant's gateway, and a typo is a clear 422 instead of silent data under a
new name. The decoding, the bus message ids and the idempotency are those of the MQTT path
(:mod:`openami.hes.uplinks`): a retried POST (same sequence number, or same content) is stored once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from openami.bus.base import Publisher
from openami.drivers.mqtt_json import parse_uplink
from openami.hes.uplinks import MAX_BUS_MESSAGE_BYTES, decode_json_uplink, message_id, publish_parts
from openami.store.schema import comm_device

__all__ = ["PushResult", "UnknownGatewayError", "UplinkPushService"]

_GATEWAY_KINDS = ("gateway", "concentrator")


class UnknownGatewayError(Exception):
    """The uplink names a gateway that is not registered (active) in the caller's tenant."""


@dataclass(frozen=True, slots=True)
class PushResult:
    gateway: str
    seq: int | None
    readings: int
    events: int
    message_id: str


class UplinkPushService:
    def __init__(self, engine: Engine, bus: Publisher, *, max_bus_message_bytes: int = MAX_BUS_MESSAGE_BYTES):
        self._engine, self._bus = engine, bus
        self._max_bus_message_bytes = max_bus_message_bytes

    def _registered(self, tenant_id: int, gateway: str) -> bool:
        query = select(comm_device.c.id).where(
            comm_device.c.tenant_id == tenant_id,
            comm_device.c.ident == gateway,
            comm_device.c.kind.in_(_GATEWAY_KINDS),
            comm_device.c.status == "active",
        )
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    async def push(self, tenant_id: int, tenant: str, payload: bytes) -> PushResult:
        """Decode, check the gateway, publish. ``GatewayPayloadError`` (mqtt_json) for a bad body,
        :class:`UnknownGatewayError` for a gateway the tenant does not have."""
        received_at = datetime.now(UTC)
        gateway = (await asyncio.to_thread(parse_uplink, payload)).gateway
        if not await asyncio.to_thread(self._registered, tenant_id, gateway):
            raise UnknownGatewayError(f"gateway {gateway!r} is not a registered gateway of this tenant")
        seq, batch, parts = await asyncio.to_thread(
            decode_json_uplink, tenant, gateway, payload, received_at, self._max_bus_message_bytes
        )
        base_id = message_id(tenant, gateway, seq, payload)
        await publish_parts(self._bus, tenant, base_id, parts)
        return PushResult(gateway, seq, batch.reading_count, len(batch.events), base_id)
