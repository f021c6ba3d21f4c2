"""The ingest service: readings and events from the bus into the store, idempotently.

Drivers publish :class:`~openami.bus.messages.ReadingBatch` messages on ``readings.<tenant>``. This
service resolves meter serials and channel codes to channel ids, groups the rows of many messages into
one store write (throughput: one transaction per flush, not per message) and acknowledges each message
only after the write that holds its rows has committed. A crash before the commit means redelivery, and
the store's (channel, ts, version) identity turns the replay into a no-op, so nothing accepted is lost and
nothing is counted twice.

Readings for meters the tenant does not know are not dropped: they are kept in ``rejected_message`` with
the reason, so an operator can commission the meter and replay them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import Engine

from openami.bus.base import Bus, Message, SubscribeOptions, Subscription
from openami.bus.messages import READINGS_SUBJECT, ReadingBatch, Series
from openami.mdm.directory import Directory, EventRow, Resolved
from openami.observability.metrics import Metrics
from openami.store.readings import NewReading, ReadingWriter, WriteResult

log = logging.getLogger(__name__)

INGEST_DURABLE = "mdm-ingest"
#: Deliveries before a message is given up; with the back-off below this rides out ~45 minutes of outage.
INGEST_MAX_DELIVER = 100


@dataclass
class _Pending:
    """Rows waiting for the next flush and the futures of the messages that brought them."""

    rows: dict[str, list[NewReading]] = field(default_factory=lambda: {"interval": [], "register": []})
    events: list[EventRow] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def size(self) -> int:
        return sum(len(r) for r in self.rows.values()) + len(self.events)


@dataclass
class IngestTotals:
    """Running totals, for the demo summary and tests."""

    messages: int = 0
    inserted: int = 0
    revised: int = 0
    unchanged: int = 0
    rejected: int = 0
    events: int = 0


class IngestService:
    def __init__(
        self,
        engine: Engine,
        bus: Bus,
        metrics: Metrics,
        *,
        batch_rows: int = 5000,
        flush_ms: int = 200,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._metrics = metrics
        self._writer = ReadingWriter(engine)
        self.directory = Directory(engine)
        self._batch_rows = batch_rows
        self._flush_s = flush_ms / 1000
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._stopping = False
        self._closed = False
        self.totals = IngestTotals()
        metrics.track_queue("ingest_buffer", lambda: float(self._pending.size()))

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="ingest-flusher")
        self._subscription = await self._bus.subscribe(
            f"{READINGS_SUBJECT}.>",
            self._handle,
            SubscribeOptions(durable=INGEST_DURABLE, max_in_flight=256, max_deliver=INGEST_MAX_DELIVER),
        )

    async def stop(self) -> None:
        """Stop taking messages, then write everything already accepted (graceful shutdown).

        From here on every enqueue flushes at once, so handlers still in flight finish promptly instead
        of waiting out the flush interval.
        """
        self._stopping = True
        self._wake.set()
        if self._subscription is not None:
            await self._subscription.stop()  # in-flight handlers finish; the flusher writes their rows
            self._subscription = None
        self._closed = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher  # ends after its last flush; never cancelled (see _flush_loop)
            self._flusher = None
        await self._flush()

    async def _handle(self, message: Message) -> None:
        try:
            batch, resolved = await asyncio.to_thread(self._decode_and_resolve, message.data)
        except ValidationError as exc:
            # A message that can never decode must not be redelivered forever: keep it and ack.
            self._metrics.readings.labels(kind="unknown", outcome="rejected").inc()
            await asyncio.to_thread(
                self.directory.keep_rejected, None, "bus", f"undecodable bus message: {exc}", message.data
            )
            return
        self.totals.messages += 1
        if resolved.unknown:
            self.totals.rejected += sum(len(s.points) for s in resolved.unknown)
            await asyncio.to_thread(self._keep_unknown, batch, resolved.unknown)
        if not (resolved.rows["interval"] or resolved.rows["register"] or resolved.events):
            return
        try:
            await self._enqueue(resolved.rows, resolved.events)
        except Exception:
            # The store is failing (down, full, locked): back off and let the bus redeliver.
            await message.nak(delay_s=min(30.0, 0.5 * 2**message.delivery))

    def _decode_and_resolve(self, data: bytes) -> tuple[ReadingBatch, Resolved]:
        """Decode and resolve in a worker thread: both cost CPU the event loop should not spend."""
        batch = ReadingBatch.from_bytes(data)
        return batch, self.directory.resolve(batch)

    def _keep_unknown(self, batch: ReadingBatch, unknown: list[Series]) -> None:
        """Series of meters the tenant does not know go to rejected_message, not to the bin."""
        for kind in ("interval", "register"):
            count = sum(len(s.points) for s in unknown if s.kind == kind)
            if count:
                self._metrics.readings.labels(kind=kind, outcome="rejected").inc(count)
        meters = sorted({s.meter for s in unknown})
        reason = f"unknown meters ({len(meters)}): " + ", ".join(meters[:20])
        payload = json.dumps([s.model_dump(mode="json") for s in unknown]).encode()
        self.directory.keep_rejected(batch.tenant, batch.source, reason, payload)

    def _enqueue(self, rows: dict[str, list[NewReading]], events: list[EventRow]) -> asyncio.Future[None]:
        """Add a message's rows to the next flush; the returned future settles when they are committed."""
        for kind, kind_rows in rows.items():
            self._pending.rows[kind].extend(kind_rows)
        self._pending.events.extend(events)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.waiters.append(waiter)
        if self._stopping or self._pending.size() >= self._batch_rows:
            self._wake.set()
        return waiter

    async def _flush_loop(self) -> None:
        """Flush every ``flush_ms``, or at once when woken, until stop() closes the loop.

        Stopped by a flag rather than by cancellation: on Python 3.11 a cancellation that arrives as the
        wait completes can be lost, which would leave stop() waiting for ever.
        """
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_s):
                    await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, _Pending()
        if not pending.waiters:
            return
        started = time.perf_counter()
        try:
            results, events = await asyncio.to_thread(self._write, pending)
        except Exception as exc:
            log.exception("ingest flush failed; %d messages will be redelivered", len(pending.waiters))
            self._metrics.jobs.labels(kind="ingest_flush", outcome="error").inc()
            for waiter in pending.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        self._metrics.jobs.labels(kind="ingest_flush", outcome="ok").inc()
        for kind, result in results.items():
            self._count(kind, result)
        self.totals.events += events
        self._metrics.events.inc(events)
        for waiter in pending.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _write(self, pending: _Pending) -> tuple[dict[str, WriteResult], int]:
        """Write one flush (blocking, in a worker thread): readings per kind, then events."""
        now = datetime.now(UTC)
        results = {
            kind: self._writer.write(kind, rows, received_at=now)  # type: ignore[arg-type]
            for kind, rows in pending.rows.items()
            if rows
        }
        events = self.directory.record_events(pending.events, received_at=now) if pending.events else 0
        return results, events

    def _count(self, kind: str, result: WriteResult) -> None:
        for outcome in ("inserted", "revised", "unchanged"):
            value = getattr(result, outcome)
            setattr(self.totals, outcome, getattr(self.totals, outcome) + value)
            self._metrics.readings.labels(kind=kind, outcome=outcome).inc(value)
