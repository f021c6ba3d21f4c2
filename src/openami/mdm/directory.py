"""Turning driver names (tenant slug, meter serial, channel code) into store ids, fast.

Drivers do not know database ids. The directory resolves batches in two steps. :meth:`Directory.cached`
answers a batch from memory alone, with no query, or says it cannot; that is every message once the
fleet is known. :meth:`Directory.resolve_many` resolves any number of batches together, with a handful of
set-based statements for all of them (meters, channels, the creation of new channels), which is what a
first day needs: every one of thousands of small messages brings channels never seen. The ingest service
gathers the messages that missed the cache and resolves them once per flush rather than once each, so
the store sees a few statements per flush instead of five and a commit per message.

Tenant and channel ids never change once assigned, so they are cached for the life of the process.
Unknown meters are cached only briefly (``UNKNOWN_TTL_S``) so a meter commissioned while data is flowing
is picked up within a minute.

A channel is created on first sight for a known meter, with the code, kind, unit and interval the driver
reported. A reading whose kind contradicts its existing channel (register data on an interval channel)
is refused as unknown rather than mixed in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from openami.bus.messages import ReadingBatch, Series
from openami.store.readings import NewReading
from openami.store.repositories import NewEvent, record_events
from openami.store.repositories import ingest as lookups
from openami.store.repositories.ingest import ChannelInfo, ChannelKey, Rejected

UNKNOWN_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event resolved to its tenant and meter, waiting for the next flush."""

    tenant_id: int
    event: NewEvent


@dataclass
class Resolved:
    rows: dict[str, list[NewReading]] = field(default_factory=lambda: {"interval": [], "register": []})
    events: list[EventRow] = field(default_factory=list)
    unknown: list[Series] = field(default_factory=list)


def _place(
    batch: ReadingBatch, tenant_id: int, meters: Mapping[str, int], channels: Mapping[ChannelKey, ChannelInfo]
) -> Resolved:
    """The batch's rows with channel ids, its events with meter ids, and what cannot be placed: series of
    unknown meters, and series whose kind contradicts their channel's (kept apart, never mixed in)."""
    resolved = Resolved()
    source = batch.source
    for series in batch.series:
        meter_id = meters.get(series.meter)
        info = channels.get(ChannelKey(meter_id, series.channel)) if meter_id is not None else None
        if info is None or info.kind != series.kind:
            resolved.unknown.append(series)
            continue
        channel_id = info.id
        resolved.rows[info.kind].extend(
            [NewReading(channel_id, ts, value, quality, source) for ts, value, quality in series.points]
        )
    for event in batch.events:
        meter_id = meters.get(event.meter)
        if meter_id is not None:
            new = NewEvent(
                ts=event.ts,
                code=event.code,
                severity=event.severity,
                source=source,
                detail=dict(event.detail),
                meter_id=meter_id,
            )
            resolved.events.append(EventRow(tenant_id, new))
    return resolved


class _OnDemand:
    """A transaction opened only when a look-up misses the caches."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def __call__(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            self._conn.begin()
        return self._conn

    def __enter__(self) -> _OnDemand:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self._conn is not None:
            if exc_type is None:
                self._conn.commit()
            self._conn.close()


class Directory:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._tenants: dict[str, int] = {}
        self._meters: dict[tuple[int, str], int] = {}
        self._unknown_meters: dict[tuple[int, str], float] = {}
        self._channels: dict[ChannelKey, ChannelInfo] = {}

    def resolve(self, batch: ReadingBatch) -> Resolved:
        """Map a batch to rows with channel ids; series that cannot be placed go to ``unknown``."""
        resolved = self.cached(batch)
        return self.resolve_many([batch])[0] if resolved is None else resolved

    def cached(self, batch: ReadingBatch) -> Resolved | None:
        """``batch`` resolved from the caches alone, or None when that needs the store (never queries).

        Meters still inside their unknown period count as known-unknown here, as they do in
        :meth:`resolve_many`.
        """
        tenant_id = self._tenants.get(batch.tenant)
        if tenant_id is None:
            return None
        now = time.monotonic()
        meters: dict[str, int] = {}
        for serial in {s.meter for s in batch.series} | {e.meter for e in batch.events}:
            meter_id = self._meters.get((tenant_id, serial))
            if meter_id is not None:
                meters[serial] = meter_id
            elif self._unknown_meters.get((tenant_id, serial), 0.0) < now:
                return None
        for series in batch.series:
            meter_id = meters.get(series.meter)
            if meter_id is not None and ChannelKey(meter_id, series.channel) not in self._channels:
                return None
        return _place(batch, tenant_id, meters, self._channels)

    def resolve_many(self, batches: Sequence[ReadingBatch]) -> list[Resolved]:
        """Resolve ``batches`` together, one :class:`Resolved` each, in order; creates new channels.

        One transaction for all of them, and per tenant at most one meter query, one channel query,
        one channel insert and, only if a concurrent worker created some of the same channels first, one
        more channel query (each chunked for very large flushes). A channel's kind, unit and interval come
        from the first series that names it.
        """
        by_tenant: dict[str, list[ReadingBatch]] = {}
        for batch in batches:
            by_tenant.setdefault(batch.tenant, []).append(batch)
        tenants: dict[str, int | None] = {}
        meters: dict[str, dict[str, int]] = {}
        channels: dict[ChannelKey, ChannelInfo] = {}
        with _OnDemand(self._engine) as conn:
            self._tenant_ids(conn, by_tenant, tenants)
            for slug, group in by_tenant.items():
                tenant_id = tenants[slug]
                if tenant_id is None:
                    continue
                serials = {s.meter for b in group for s in b.series} | {
                    e.meter for b in group for e in b.events
                }
                meters[slug] = known = self._meter_ids(conn, tenant_id, serials)
                channels.update(
                    self._channel_ids(conn, tenant_id, known, [s for b in group for s in b.series])
                )
        result = []
        for batch in batches:
            tenant_id = tenants[batch.tenant]
            if tenant_id is None:
                result.append(Resolved(unknown=list(batch.series)))
            else:
                result.append(_place(batch, tenant_id, meters[batch.tenant], channels))
        return result

    def _tenant_ids(self, conn: _OnDemand, slugs: Iterable[str], out: dict[str, int | None]) -> None:
        missing = [slug for slug in slugs if slug not in self._tenants]
        found = lookups.tenant_ids(conn(), missing) if missing else {}
        with self._lock:
            self._tenants.update(found)
        for slug in slugs:
            out[slug] = self._tenants.get(slug)

    def _meter_ids(self, conn: _OnDemand, tenant_id: int, serials: set[str]) -> dict[str, int]:
        now = time.monotonic()
        result: dict[str, int] = {}
        missing: set[str] = set()
        for serial in serials:
            key = (tenant_id, serial)
            if key in self._meters:
                result[serial] = self._meters[key]
            elif self._unknown_meters.get(key, 0.0) < now:
                missing.add(serial)
        if missing:
            found = lookups.meter_ids(conn(), tenant_id, missing)
            with self._lock:
                for serial in missing:
                    if serial in found:
                        self._meters[(tenant_id, serial)] = result[serial] = found[serial]
                    else:
                        self._unknown_meters[(tenant_id, serial)] = now + UNKNOWN_TTL_S
        return result

    def _channel_ids(
        self, conn: _OnDemand, tenant_id: int, meters: dict[str, int], series: list[Series]
    ) -> dict[ChannelKey, ChannelInfo]:
        firsts: dict[ChannelKey, Series] = {}
        for one in series:
            meter_id = meters.get(one.meter)
            if meter_id is not None:
                firsts.setdefault(ChannelKey(meter_id, one.channel), one)
        result = {key: self._channels[key] for key in firsts if key in self._channels}
        missing = [key for key in firsts if key not in result]
        if missing:
            found = lookups.channels(conn(), missing)
            new = [key for key in missing if key not in found]
            if new:
                found.update(
                    lookups.create_channels(
                        conn(),
                        [
                            {
                                "tenant_id": tenant_id,
                                "meter_id": key.meter_id,
                                "code": key.code,
                                "kind": firsts[key].kind,
                                "unit": firsts[key].unit,
                                "interval_s": firsts[key].interval_s,
                            }
                            for key in new
                        ],
                    )
                )
                raced = [key for key in new if key not in found]
                if raced:  # created by a concurrent worker between our look-up and our insert
                    found.update(lookups.channels(conn(), raced))
            with self._lock:
                self._channels.update(found)
            result.update(found)
        return result

    def record_events(self, events: list[EventRow], *, received_at: datetime) -> int:
        """Store events once each (idempotent on their dedup key); returns how many were new."""
        by_tenant: dict[int, list[NewEvent]] = {}
        for row in events:
            by_tenant.setdefault(row.tenant_id, []).append(row.event)
        with self._engine.begin() as conn:
            return sum(
                record_events(conn, t, batch, received_at=received_at) for t, batch in by_tenant.items()
            )

    def keep_rejected(
        self, tenant_slug: str | None, source: str, reason: str, payload: bytes, topic: str = ""
    ) -> None:
        """Keep what could not be stored, with the reason, for an operator to fix and replay."""
        self.keep_rejected_many([Rejected(tenant_slug, source, reason, payload, topic)])

    def keep_rejected_many(self, rejected: Sequence[Rejected]) -> None:
        """Keep several rejected messages in one transaction (the unplaceable parts of one flush)."""
        with self._engine.begin() as conn:
            lookups.insert_rejected_many(conn, rejected, received_at=datetime.now(UTC))
