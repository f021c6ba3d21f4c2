"""Settling a delivered message by running its handler: the same rules on every bus backend.

The handler runs under the subscription's ``ack_wait``. Returning acknowledges the message (a no-op when
the handler already acked or nakked it); raising, or overrunning ``ack_wait`` (the handler is cancelled),
naks it so it is redelivered after ``retry_delay_s``, which keeps a failing database from burning through
``max_deliver`` in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging

from openami.bus.base import Handler, Message

logger = logging.getLogger("openami.bus")


async def run_handler(
    handler: Handler, msg: Message, *, durable: str, ack_wait_s: float, retry_delay_s: float
) -> None:
    try:
        async with asyncio.timeout(ack_wait_s):
            await handler(msg)
    except TimeoutError:
        logger.warning(
            "handler for %s (durable %s) exceeded ack_wait %.1fs on delivery %d; cancelled",
            msg.subject,
            durable,
            ack_wait_s,
            msg.delivery,
        )
        await msg.nak(retry_delay_s)
    except Exception:
        logger.warning(
            "handler for %s (durable %s) failed on delivery %d",
            msg.subject,
            durable,
            msg.delivery,
            exc_info=True,
        )
        await msg.nak(retry_delay_s)
    else:
        await msg.ack()
