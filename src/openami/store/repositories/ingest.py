"""Set-based look-ups and inserts for the ingest path.

Ingest resolves thousands of (meter serial, channel code) pairs a second; these functions answer a whole
message's worth in one query each instead of one query per reading. Channel creation is idempotent
(``ON CONFLICT DO NOTHING`` on both dialects), so two ingest workers seeing the same new channel at once
both succeed and store it once. Events go through ``event_repo.record_events``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_

from openami.store import schema
from openami.store.repositories.base import dialect_insert


@dataclass(frozen=True, slots=True)
class ChannelKey:
    meter_id: int
    code: str


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    id: int
    kind: str
    unit: str


def tenant_ids(conn: Connection, slugs: Iterable[str]) -> dict[str, int]:
    rows = conn.execute(
        select(schema.tenant.c.slug, schema.tenant.c.id).where(schema.tenant.c.slug.in_(set(slugs)))
    )
    return {r.slug: r.id for r in rows}


def meter_ids(conn: Connection, tenant_id: int, serials: Iterable[str]) -> dict[str, int]:
    m = schema.meter
    rows = conn.execute(
        select(m.c.serial, m.c.id).where(m.c.tenant_id == tenant_id, m.c.serial.in_(set(serials)))
    )
    return {r.serial: r.id for r in rows}


def channels(conn: Connection, keys: Iterable[ChannelKey]) -> dict[ChannelKey, ChannelInfo]:
    wanted = {(k.meter_id, k.code) for k in keys}
    if not wanted:
        return {}
    c = schema.channel
    rows = conn.execute(
        select(c.c.meter_id, c.c.code, c.c.id, c.c.kind, c.c.unit).where(
            tuple_(c.c.meter_id, c.c.code).in_(sorted(wanted))
        )
    )
    return {ChannelKey(r.meter_id, r.code): ChannelInfo(r.id, r.kind, r.unit) for r in rows}


def create_channels(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Create channels first seen in data; a concurrent creator wins silently (unique meter, code)."""
    if rows:
        stmt = dialect_insert(conn, schema.channel).on_conflict_do_nothing(
            index_elements=["meter_id", "code"]
        )
        conn.execute(stmt, list(rows))


def insert_rejected(
    conn: Connection,
    *,
    tenant_slug: str | None,
    source: str,
    reason: str,
    payload: bytes,
    topic: str,
    received_at: datetime,
) -> None:
    conn.execute(
        schema.rejected_message.insert().values(
            tenant_slug=tenant_slug,
            source=source,
            reason=reason[:2000],
            payload=payload,
            topic=topic[:255],
            received_at=received_at,
        )
    )
