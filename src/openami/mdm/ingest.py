"""The ingest service: readings and events from the bus into the store, idempotently.

Drivers publish :class:`~openami.bus.messages.ReadingBatch` messages on ``readings.<tenant>``. This
service resolves meter serials and channel codes to channel ids, groups the rows of many messages into
one store write (throughput: one transaction per flush, not per message) and acknowledges each message
only after the write that holds its rows has committed. A crash before the commit means redelivery, and
the store's (channel, ts, version) identity turns the replay into a no-op, so nothing accepted is lost and
nothing is counted twice.

A message is decoded, and resolved from the directory's caches when it can be, as it arrives; a message
that needs the store (a new meter or channel: every message of a head-end's first day) is resolved at the
flush, together with every other such message of the flush, in one set-based pass that also creates the
new channels (:meth:`~openami.mdm.directory.Directory.resolve_many`). A flush starts when ``batch_rows``
rows are waiting, when half of the ``max_in_flight`` messages the bus hands over at once are waiting
(small messages would otherwise wait out ``flush_ms`` with the bus stalled), or after ``flush_ms``.

Readings for meters the tenant does not know are not dropped: they are kept in ``rejected_message`` with
the reason, so an operator can commission the meter and replay them. So are series whose kind
contradicts their channel's. Both are written in the flush, after the readings, and the message is
acknowledged once both have committed.
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
from openami.store.repositories.ingest import Rejected

log = logging.getLogger(__name__)

INGEST_DURABLE = "mdm-ingest"
#: Deliveries before a message is given up; with the back-off below this rides out ~45 minutes of outage.
INGEST_MAX_DELIVER = 100
#: Messages the subscription works on at once; below NATS JetStream's default ``max_ack_pending`` (1000).
MAX_IN_FLIGHT = 512


@dataclass(slots=True)
class _Entry:
    """One accepted message waiting for a flush: decoded, resolved if the caches could, and its waiter."""

    batch: ReadingBatch
    resolved: Resolved | None  # None: needs the store, resolved in the flush with the others
    waiter: asyncio.Future[None]


@dataclass
class _Pending:
    """The messages waiting for the next flush."""

    entries: list[_Entry] = field(default_factory=list)
    rows: int = 0  # readings and events of the entries: what the flush will write

    def size(self) -> int:
        return self.rows


@dataclass(frozen=True, slots=True)
class _Flushed:
    """What one flush stored and kept."""

    results: dict[str, WriteResult]
    events: int
    rejected: dict[str, int]  # points kept in rejected_message, per kind


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
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._metrics = metrics
        self._writer = ReadingWriter(engine)
        self.directory = Directory(engine)
        self._batch_rows = batch_rows
        self._flush_s = flush_ms / 1000
        self._max_in_flight = max_in_flight
        self._flush_messages = max(1, max_in_flight // 2)
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
            SubscribeOptions(
                durable=INGEST_DURABLE, max_in_flight=self._max_in_flight, max_deliver=INGEST_MAX_DELIVER
            ),
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
            batch, resolved = await asyncio.to_thread(self._decode, message.data)
        except ValidationError as exc:
            # A message that can never decode must not be redelivered forever: keep it and ack.
            self._metrics.readings.labels(kind="unknown", outcome="rejected").inc()
            await asyncio.to_thread(
                self.directory.keep_rejected, None, "bus", f"undecodable bus message: {exc}", message.data
            )
            return
        self.totals.messages += 1
        if not (batch.series or batch.events):
            return
        try:
            await self._enqueue(batch, resolved)
        except Exception:
            # The store is failing (down, full, locked): back off and let the bus redeliver.
            await message.nak(delay_s=min(30.0, 0.5 * 2**message.delivery))

    def _decode(self, data: bytes) -> tuple[ReadingBatch, Resolved | None]:
        """Decode, and resolve from the caches, in a worker thread: both cost CPU the event loop should
        not spend. Never queries the store; what the caches cannot answer waits for the flush."""
        batch = ReadingBatch.from_bytes(data)
        return batch, self.directory.cached(batch)

    def _enqueue(self, batch: ReadingBatch, resolved: Resolved | None) -> asyncio.Future[None]:
        """Add a message to the next flush; the returned future settles when its rows are committed."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = self._pending
        pending.entries.append(_Entry(batch, resolved, waiter))
        pending.rows += batch.reading_count + len(batch.events)
        if self._stopping or pending.rows >= self._batch_rows or len(pending.entries) >= self._flush_messages:
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
        if not pending.entries:
            return
        started = time.perf_counter()
        try:
            flushed = await asyncio.to_thread(self._write, pending.entries)
        except Exception as exc:
            log.exception("ingest flush failed; %d messages will be redelivered", len(pending.entries))
            self._metrics.jobs.labels(kind="ingest_flush", outcome="error").inc()
            for entry in pending.entries:
                if not entry.waiter.done():
                    entry.waiter.set_exception(exc)
            return
        self._metrics.write_seconds.observe(time.perf_counter() - started)
        self._metrics.jobs.labels(kind="ingest_flush", outcome="ok").inc()
        for kind, result in flushed.results.items():
            self._count(kind, result)
        for kind, count in flushed.rejected.items():
            self.totals.rejected += count
            self._metrics.readings.labels(kind=kind, outcome="rejected").inc(count)
        self.totals.events += flushed.events
        self._metrics.events.inc(flushed.events)
        for entry in pending.entries:
            if not entry.waiter.done():
                entry.waiter.set_result(None)

    def _write(self, entries: list[_Entry]) -> _Flushed:
        """Write one flush (blocking, in a worker thread).

        First the messages the caches could not answer are resolved together (creating their new
        channels), then the readings are written per kind, then the events, then what could not be
        placed is kept. Rejections go last so that a failed flush, which the bus redelivers, has not
        kept them already: a redelivered message is kept once more only if its acknowledgement is lost.
        """
        deferred = [entry.batch for entry in entries if entry.resolved is None]
        late = iter(self.directory.resolve_many(deferred) if deferred else [])
        rows: dict[str, list[NewReading]] = {"interval": [], "register": []}
        events: list[EventRow] = []
        rejected: list[Rejected] = []
        rejected_points: dict[str, int] = {}
        for entry in entries:
            resolved = next(late) if entry.resolved is None else entry.resolved
            for kind, kind_rows in resolved.rows.items():
                rows[kind].extend(kind_rows)
            events.extend(resolved.events)
            if resolved.unknown:
                rejected.append(_rejection(entry.batch, resolved.unknown))
                for series in resolved.unknown:
                    rejected_points[series.kind] = rejected_points.get(series.kind, 0) + len(series.points)
        now = datetime.now(UTC)
        results = {
            kind: self._writer.write(kind, kind_rows, received_at=now)  # type: ignore[arg-type]
            for kind, kind_rows in rows.items()
            if kind_rows
        }
        stored_events = self.directory.record_events(events, received_at=now) if events else 0
        if rejected:
            self.directory.keep_rejected_many(rejected)
        return _Flushed(results, stored_events, rejected_points)

    def _count(self, kind: str, result: WriteResult) -> None:
        for outcome in ("inserted", "revised", "unchanged"):
            value = getattr(result, outcome)
            setattr(self.totals, outcome, getattr(self.totals, outcome) + value)
            self._metrics.readings.labels(kind=kind, outcome=outcome).inc(value)


def _rejection(batch: ReadingBatch, unknown: list[Series]) -> Rejected:
    """The series of a message that cannot be stored (unknown meter, or a kind contradicting the
    channel's), as one rejected message an operator can fix and replay."""
    meters = sorted({s.meter for s in unknown})
    reason = f"unknown meters ({len(meters)}): " + ", ".join(meters[:20])
    payload = json.dumps([s.model_dump(mode="json") for s in unknown]).encode()
    return Rejected(batch.tenant, batch.source, reason, payload)
