"""Turning driver names (tenant slug, meter serial, channel code) into store ids, fast.

Drivers do not know database ids. The directory resolves a whole :class:`ReadingBatch` with a handful
of set-based queries and caches what it learnt: tenant and channel ids never change once assigned, so
they are cached for the life of the process. Unknown meters are cached only briefly (``UNKNOWN_TTL_S``)
so a meter commissioned while data is flowing is picked up within a minute.

A channel is created on first sight for a known meter, with the code, kind, unit and interval the driver
reported. A reading whose kind contradicts its existing channel (register data on an interval channel)
is refused as unknown rather than mixed in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from openami.bus.messages import ReadingBatch, Series
from openami.store.readings import NewReading
from openami.store.repositories import NewEvent, record_events
from openami.store.repositories import ingest as lookups
from openami.store.repositories.ingest import ChannelInfo, ChannelKey

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


class _OnDemand:
    """A transaction opened only when a look-up misses the caches (most batches need no query at all)."""

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
        resolved = Resolved()
        with _OnDemand(self._engine) as conn:
            tenant_id = self._tenant_id(conn, batch.tenant)
            if tenant_id is None:
                resolved.unknown.extend(batch.series)
                return resolved
            serials = {s.meter for s in batch.series} | {e.meter for e in batch.events}
            meters = self._meter_ids(conn, tenant_id, serials)
            channels = self._channel_ids(conn, tenant_id, meters, batch.series)
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

    def _tenant_id(self, conn: _OnDemand, slug: str) -> int | None:
        if slug not in self._tenants:
            found = lookups.tenant_ids(conn(), [slug])
            if slug not in found:
                return None
            with self._lock:
                self._tenants[slug] = found[slug]
        return self._tenants[slug]

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
                found.update(lookups.channels(conn(), new))
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
        with self._engine.begin() as conn:
            lookups.insert_rejected(
                conn,
                tenant_slug=tenant_slug,
                source=source,
                reason=reason,
                payload=payload,
                topic=topic,
                received_at=datetime.now(UTC),
            )
