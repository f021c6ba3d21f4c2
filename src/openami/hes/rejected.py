"""What a listener could not accept, on its way to the dead-letter store (``rejected_message``).

Every listener (MQTT gateways, DLMS push, ...) hands its rejects over the same way: a bounded copy of
the payload with the reason, to a handler the composition root provides, so nothing that arrives is
silently dropped and an operator can fix and replay it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

log = logging.getLogger(__name__)

#: Bytes of a rejected payload that are kept; ``RejectedMessage.size`` has the full length.
MAX_REJECTED_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class RejectedMessage:
    """Input a listener could not turn into readings (or could not hand to the bus)."""

    topic: str
    """Where it came from: an MQTT topic, or ``tcp://ip:port`` / ``udp://ip:port``."""
    tenant: str | None
    """When known; None when the origin itself is what is wrong."""
    reason: str
    payload: bytes
    """The first :data:`MAX_REJECTED_PAYLOAD` bytes; ``size`` is the full length."""
    size: int
    received_at: datetime


RejectedHandler = Callable[[RejectedMessage], Awaitable[None]]


async def hand_over(
    handler: RejectedHandler | None,
    origin: str,
    tenant: str | None,
    reason: str,
    payload: bytes,
    received_at: datetime,
) -> None:
    """Give a reject to the handler; a failing dead-letter store must not take the listener down."""
    if handler is None:
        return
    rejected = RejectedMessage(
        origin, tenant, reason, payload[:MAX_REJECTED_PAYLOAD], len(payload), received_at
    )
    try:
        await handler(rejected)
    except Exception:
        log.exception("dead-letter handler failed for %s", origin)
