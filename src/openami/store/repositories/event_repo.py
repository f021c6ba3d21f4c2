"""Meter and gateway events: idempotent recording and filtered listing.

Devices and head-ends re-send events (retries, re-reads of the event log), so recording is idempotent
on ``dedup_key``: ``INSERT ... ON CONFLICT DO NOTHING`` on the (tenant_id, dedup_key) unique key, in the
dialect's own syntax. When the source has no natural id, ``event_dedup_key`` derives one from what makes
an event the same event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from openami.store.errors import InvalidReference
from openami.store.repositories.base import Repository, Scope, dialect_insert
from openami.store.repositories.catalog import meters_of
from openami.store.repositories.models import Event
from openami.store.schema import comm_device, event, meter
from openami.store.types import to_utc

#: Rows per INSERT statement: 12 bound parameters each stays far below SQLite's variable limit.
_CHUNK = 500

events: Repository[Event] = Repository(
    event,
    Event,
    name="event",
    natural_key="dedup_key",
    references={"meter_id": meter, "comm_device_id": comm_device},
    owned_by=lambda cid: event.c.meter_id.in_(meters_of(cid)),
    filterable=["meter_id", "comm_device_id", "severity", "code", "state"],
)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to record; ``dedup_key`` None derives one with ``event_dedup_key``."""

    ts: datetime
    code: str
    severity: str = "info"
    source: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    meter_id: int | None = None
    comm_device_id: int | None = None
    dedup_key: str | None = None
    state: str = "open"


def event_dedup_key(
    meter_id: int | None, comm_device_id: int | None, ts: datetime, code: str, source: str
) -> str:
    """Same device, instant, code and source: the same event (SHA-256 hex, fits the 64-char column)."""
    identity = json.dumps([meter_id, comm_device_id, to_utc(ts).isoformat(), code, source])
    return hashlib.sha256(identity.encode()).hexdigest()


def _check_devices(conn: Connection, tenant_id: int, batch: list[NewEvent]) -> None:
    """Every meter and gateway id in the batch must belong to the tenant (one query per table)."""
    for table, ids in (
        (meter, {e.meter_id for e in batch if e.meter_id is not None}),
        (comm_device, {e.comm_device_id for e in batch if e.comm_device_id is not None}),
    ):
        if not ids:
            continue
        count = conn.execute(
            select(func.count()).select_from(table).where(table.c.id.in_(ids), table.c.tenant_id == tenant_id)
        ).scalar_one()
        if count != len(ids):
            raise InvalidReference(f"events refer to {table.name} ids outside the tenant")


def record_events(
    conn: Connection, tenant_id: int, new_events: Iterable[NewEvent], *, received_at: datetime | None = None
) -> int:
    """Store the events not seen before (by dedup key) and return how many were new."""
    batch = list(new_events)
    if not batch:
        return 0
    _check_devices(conn, tenant_id, batch)
    received = received_at or datetime.now(UTC)
    rows = [
        {
            "tenant_id": tenant_id,
            "meter_id": e.meter_id,
            "comm_device_id": e.comm_device_id,
            "ts": e.ts,
            "code": e.code,
            "severity": e.severity,
            "state": e.state,
            "source": e.source,
            "detail": dict(e.detail),
            "dedup_key": e.dedup_key or event_dedup_key(e.meter_id, e.comm_device_id, e.ts, e.code, e.source),
            "received_at": received,
        }
        for e in batch
    ]
    inserted = 0
    for start in range(0, len(rows), _CHUNK):
        statement = (
            dialect_insert(conn, event)
            .values(rows[start : start + _CHUNK])
            .on_conflict_do_nothing(index_elements=["tenant_id", "dedup_key"])
            .returning(event.c.id)
        )
        inserted += len(conn.execute(statement).all())
    return inserted


def list_events(
    conn: Connection,
    scope: Scope,
    *,
    meter_id: int | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[Event]:
    """Events in scope, in id (arrival) order; ``since`` inclusive and ``until`` exclusive on ``ts``."""
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(event.c.ts >= since)
    if until is not None:
        where.append(event.c.ts < until)
    return events.list(
        conn,
        scope,
        filters={"meter_id": meter_id, "severity": severity},
        where=where,
        after_id=after_id,
        limit=limit,
    )
