"""MQTT topic layout of the gateway format: ``{prefix}/{tenant}/gw/{gateway}/up``.

The tenant comes from the topic, not the body, so the broker's ACLs (which bind a gateway's credentials
to its tenant's topics) are what decide which tenant a message belongs to.
"""

from __future__ import annotations

import re

from openami.bus.messages import TENANT_SLUG_PATTERN
from openami.drivers.mqtt_json.codec import ID_PATTERN, GatewayPayloadError

UPLINK_QOS = 1
#: Tenants are bus subject tokens (no dots); gateway ids may carry dots (``GW.roof.1``).
_PATTERNS = {"tenant": TENANT_SLUG_PATTERN, "gateway": ID_PATTERN}
_COMPILED = {what: re.compile(pattern) for what, pattern in _PATTERNS.items()}


def _check_id(what: str, value: str) -> str:
    if not _COMPILED[what].match(value):
        raise ValueError(f"{what} id {value!r} must match {_PATTERNS[what]}")
    return value


def uplink_topic(prefix: str, tenant: str, gateway: str, leaf: str = "up") -> str:
    """The topic a gateway publishes its uplinks (or ``leaf`` messages, e.g. :data:`WMBUS_LEAF`) on."""
    return f"{prefix}/{_check_id('tenant', tenant)}/gw/{_check_id('gateway', gateway)}/{leaf}"


WMBUS_LEAF = "wmbus"
"""Gateways forward raw wireless M-Bus telegrams (receiver lines) on ``.../gw/<gateway>/wmbus``."""


def uplink_filter(prefix: str, leaf: str = "up") -> str:
    """The subscription that receives every tenant's and gateway's uplinks (or ``leaf`` messages)."""
    return f"{prefix}/+/gw/+/{leaf}"


def parse_uplink_topic(prefix: str, topic: str, leaf: str = "up") -> tuple[str, str]:
    """``(tenant, gateway)`` from an uplink topic; ids outside the allowed pattern are rejected."""
    rest = topic.removeprefix(f"{prefix}/")
    parts = rest.split("/")
    if rest == topic or len(parts) != 4 or parts[1] != "gw" or parts[3] != leaf:
        raise GatewayPayloadError(f"topic {topic[:200]!r} is not {prefix}/<tenant>/gw/<gateway>/{leaf}")
    tenant, gateway = parts[0], parts[2]
    for what, value in (("tenant", tenant), ("gateway", gateway)):
        if not _COMPILED[what].match(value):
            raise GatewayPayloadError(f"{what} id {value[:80]!r} in the topic must match {_PATTERNS[what]}")
    return tenant, gateway
