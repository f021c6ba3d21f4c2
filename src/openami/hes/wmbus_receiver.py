"""A wireless M-Bus receiver as a head-end input: one stick (tty or ser2net TCP), one tenant, forever.

Where a gateway forwards receiver lines over MQTT (:mod:`openami.hes.mqtt_listener`), a receiver can
also sit at the head-end itself: a USB stick on the server, or several sticks in the field behind
ser2net. :class:`WmbusReceiverInput` reads one such receiver with the driver's
:class:`~openami.drivers.wmbus.receiver.WmbusReceiver` (bounded lines, reconnect with backoff) and hands
each line to :class:`~openami.hes.wmbus_ingest.WmbusIngest`, exactly as the MQTT path does, so keys,
tenant checks and channel names are the same on both paths. Readings go on the bus as
``readings.<tenant>``; the tenant is the input's, because a receiver's URL is configured per tenant the
way a gateway's MQTT credentials are.

A line is handled to completion even when :meth:`WmbusReceiverInput.stop` comes in the middle of it, and
one that fails (undecodable, no key, another tenant's meter, a bus error, even a bug) costs only itself:
it is counted and handed to ``on_rejected`` (the dead-letter store). A receiver hears every meter in
range, the neighbours' included, and each of those is a line without a key; so the dead letters are
rate-limited (``dead_letters_per_minute``), and past the limit rejects are only counted.

Bus message ids hash the receiver, the reception time and the line: a line is read once and never
redelivered, so the id only has to be unique; repeated telegrams are separate readings with their own
reception time, as on the MQTT path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass

from openami.bus.base import Bus, BusError
from openami.bus.messages import TENANT_SLUG_PATTERN, readings_subject
from openami.drivers.wmbus.receiver import ReceivedLine, ReceiverEndpoint, WmbusReceiver
from openami.hes.rejected import RejectedHandler, hand_over
from openami.hes.uplinks import MAX_BUS_MESSAGE_BYTES, split_batch
from openami.hes.wmbus_ingest import WmbusIngest

__all__ = ["ReceiverInputStats", "WmbusReceiverInput"]

log = logging.getLogger(__name__)

_TENANT = re.compile(TENANT_SLUG_PATTERN)
_LINE_PREFIX = re.compile(r"^line \d+: ")


@dataclass
class ReceiverInputStats:
    """Counters for /metrics: every line ends up a telegram or a reject."""

    lines: int = 0
    telegrams: int = 0
    """Lines decoded and accepted (published, or carrying no current values)."""
    rejected: int = 0
    readings: int = 0
    dead_letters_suppressed: int = 0
    """Rejects over the dead-letter rate limit: counted here, not stored."""


class WmbusReceiverInput:
    """Reads the receiver at ``url`` (``wmbus+tcp://host:port``, ``wmbus+serial:///dev/ttyX?baud=N``)
    for ``tenant`` and publishes its readings on ``bus``.

    :meth:`start` returns at once: a receiver that is not there yet is retried in the background (an
    unplugged stick must not stop the head-end); :meth:`wait_connected` waits for it when that matters.
    """

    def __init__(
        self,
        url: str | ReceiverEndpoint,
        tenant: str,
        bus: Bus,
        ingest: WmbusIngest,
        *,
        on_rejected: RejectedHandler | None = None,
        dead_letters_per_minute: int = 60,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        max_bus_message_bytes: int = MAX_BUS_MESSAGE_BYTES,
    ) -> None:
        if not _TENANT.match(tenant):
            raise ValueError(f"tenant {tenant!r} must match {TENANT_SLUG_PATTERN}")
        self.receiver = WmbusReceiver(
            url,
            connect_timeout_s=connect_timeout_s,
            idle_timeout_s=idle_timeout_s,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
        )
        self.tenant = tenant
        self._bus = bus
        self._ingest = ingest
        self._on_rejected = on_rejected
        self._dead_letters_per_minute = dead_letters_per_minute
        self._budget = float(dead_letters_per_minute)
        self._budget_at: float | None = None
        self._max_bus_message_bytes = max_bus_message_bytes
        self._task: asyncio.Task[None] | None = None
        self.stats = ReceiverInputStats()

    @property
    def origin(self) -> str:
        """The receiver as a URL: the ``topic`` of its dead letters, and its label in metrics."""
        return self.receiver.peer

    @property
    def connected(self) -> bool:
        return self.receiver.connected

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"wmbus-receiver {self.origin}")

    async def wait_connected(self, timeout_s: float) -> None:
        """Until the receiver's line is open; ``TimeoutError`` after ``timeout_s``."""
        await self.receiver.wait_connected(timeout_s)

    async def stop(self) -> None:
        """Close the line; a line being handled is finished (and reaches the bus) first."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            try:
                async with contextlib.aclosing(self.receiver.lines()) as lines:
                    async for line in lines:
                        await self._handle_to_completion(line)
            except Exception:
                # The reader handles every line and connection failure itself; this is a bug. Keep the
                # input alive, but slowly, so a bug that repeats does not spin.
                log.exception("wM-Bus receiver %s failed; restarting", self.origin)
                await asyncio.sleep(self.receiver.reconnect_max_s)

    async def _handle_to_completion(self, line: ReceivedLine) -> None:
        handling = asyncio.ensure_future(self._handle(line))
        try:
            await asyncio.shield(handling)
        except asyncio.CancelledError:
            await handling
            raise

    async def _handle(self, line: ReceivedLine) -> None:
        self.stats.lines += 1
        try:
            if line.error is not None:
                await self._reject(line, line.error)
                return
            result = await self._ingest.handle(self.tenant, line.text, line.received_at)
            if result.rejected:
                await self._reject(line, _LINE_PREFIX.sub("", result.rejected[0]))
                return
            self.stats.telegrams += 1
            if result.batch is None:
                return
            digest = hashlib.sha256(
                f"{self.origin}|{line.received_at.isoformat()}|{line.text}".encode()
            ).hexdigest()[:32]
            subject = readings_subject(self.tenant)
            for index, part in enumerate(split_batch(result.batch, self._max_bus_message_bytes)):
                await self._bus.publish(subject, part, msg_id=f"wmbus-rx:{self.tenant}:{digest}#{index}")
            self.stats.readings += result.batch.reading_count
        except BusError as exc:
            await self._reject(line, f"bus publish failed: {exc}")
        except Exception as exc:
            # A bug must cost one line (kept as a dead letter), never the input.
            log.exception("failed to handle a line from %s", self.origin)
            await self._reject(line, f"internal error: {type(exc).__name__}")

    async def _reject(self, line: ReceivedLine, reason: str) -> None:
        self.stats.rejected += 1
        log.debug("rejected line from %s: %s", self.origin, reason)
        if not self._take_budget():
            self.stats.dead_letters_suppressed += 1
            return
        payload = line.text.encode("ascii", errors="replace")
        await hand_over(self._on_rejected, self.origin, self.tenant, reason, payload, line.received_at)

    def _take_budget(self) -> bool:
        """Token bucket: ``dead_letters_per_minute`` tokens, refilled continuously."""
        now = asyncio.get_running_loop().time()
        limit = float(self._dead_letters_per_minute)
        if self._budget_at is not None:
            self._budget = min(limit, self._budget + (now - self._budget_at) * limit / 60.0)
        self._budget_at = now
        if self._budget < 1.0:
            return False
        self._budget -= 1.0
        return True
