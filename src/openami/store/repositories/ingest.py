"""Set-based look-ups and inserts for the ingest path.

Ingest resolves thousands of (meter serial, channel code) pairs a second; these functions answer a whole
flush's worth in one query per chunk instead of one query per reading or per message. Channel creation
is idempotent (``ON CONFLICT DO NOTHING`` on both dialects) and says, through ``RETURNING``, which
channels it created, so only channels a concurrent worker created first need a second look-up: two
ingest workers seeing the same new channel at once both succeed and store it once. Events go through
``event_repo.record_events``.

Look-ups go in chunks of ``_CHUNK`` keys, which keeps every statement under SQLite's limit of bound
parameters however large a flush is (SQLAlchemy sizes the inserts' batches itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text

from openami.store import schema
from openami.store.repositories.base import dialect_insert

#: Bound parameters per look-up (SQLite allows 32,766 per statement).
_CHUNK = 1000


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


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    return (items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK))


def meter_ids(conn: Connection, tenant_id: int, serials: Iterable[str]) -> dict[str, int]:
    m = schema.meter
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(set(serials))):
        rows = conn.execute(
            select(m.c.serial, m.c.id).where(m.c.tenant_id == tenant_id, m.c.serial.in_(chunk))
        )
        found.update((r.serial, r.id) for r in rows)
    return found


def channels(conn: Connection, keys: Iterable[ChannelKey]) -> dict[ChannelKey, ChannelInfo]:
    """The channels of ``keys`` that exist.

    Asked by meter (``meter_id IN (...)``) and filtered here: a flush names a few channels of each of
    many meters, and a one-column IN list is planned in no time, where PostgreSQL spent ~0.1 s planning
    a row-value ``(meter_id, code) IN (...)`` of a thousand pairs.
    """
    wanted = {(k.meter_id, k.code) for k in keys}
    c = schema.channel
    found: dict[ChannelKey, ChannelInfo] = {}
    for chunk in _chunks(sorted({meter_id for meter_id, _code in wanted})):
        rows = conn.execute(
            select(c.c.meter_id, c.c.code, c.c.id, c.c.kind, c.c.unit).where(c.c.meter_id.in_(chunk))
        )
        found.update(
            (ChannelKey(r.meter_id, r.code), ChannelInfo(r.id, r.kind, r.unit))
            for r in rows
            if (r.meter_id, r.code) in wanted
        )
    return found


def create_channels(conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[ChannelKey, ChannelInfo]:
    """Create channels first seen in data and return those this call created.

    A channel a concurrent creator stored first is skipped silently (unique meter, code) and is absent
    from the result: look it up once the call returns. On PostgreSQL the skip waits for the other
    transaction, so that look-up then finds its channel.
    """
    if not rows:
        return {}
    # One order for every worker: two inserting overlapping channels in different orders could each wait
    # for a key the other holds (a deadlock on PostgreSQL); in one order the later just waits its turn.
    rows = sorted(rows, key=lambda row: (row["meter_id"], row["code"]))
    if conn.dialect.name == "postgresql":
        result = conn.execute(_PG_CREATE_CHANNELS, {column: [r[column] for r in rows] for column in _CREATED})
    else:
        # An executemany with RETURNING: SQLAlchemy compiles the statement once and sends multi-row
        # INSERTs ("insertmanyvalues"); a multi-row .values() would be compiled afresh, row by row.
        c = schema.channel
        stmt = (
            dialect_insert(conn, c)
            .on_conflict_do_nothing(index_elements=["meter_id", "code"])
            .returning(c.c.meter_id, c.c.code, c.c.id, c.c.kind, c.c.unit)
        )
        result = conn.execute(stmt, list(rows))
    return {ChannelKey(r.meter_id, r.code): ChannelInfo(r.id, r.kind, r.unit) for r in result}


#: The columns a created channel is given (the others take their defaults).
_CREATED = ("tenant_id", "meter_id", "code", "kind", "unit", "interval_s")
#: On PostgreSQL the rows travel as one array per column and are unnested server-side: one statement and
#: six parameters however many channels, about four times faster than SQLAlchemy's multi-row VALUES.
_PG_CREATE_CHANNELS = text(
    "INSERT INTO channel (tenant_id, meter_id, code, kind, unit, interval_s) "
    "SELECT t, m, c, k, u, i FROM unnest(CAST(:tenant_id AS int8[]), CAST(:meter_id AS int8[]), "
    "CAST(:code AS text[]), CAST(:kind AS text[]), CAST(:unit AS text[]), CAST(:interval_s AS int4[])) "
    "WITH ORDINALITY AS r(t, m, c, k, u, i, n) ORDER BY n "  # in the sorted order (see above)
    "ON CONFLICT (meter_id, code) DO NOTHING RETURNING meter_id, code, id, kind, unit"
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message, or the part of one, that could not be stored, and why."""

    tenant_slug: str | None
    source: str
    reason: str
    payload: bytes
    topic: str = ""


def insert_rejected_many(conn: Connection, rejected: Sequence[Rejected], *, received_at: datetime) -> None:
    """Keep several rejected messages with one statement (a flush's worth)."""
    if rejected:
        conn.execute(
            schema.rejected_message.insert(),
            [
                {
                    "tenant_slug": r.tenant_slug,
                    "source": r.source,
                    "reason": r.reason[:2000],
                    "payload": r.payload,
                    "topic": r.topic[:255],
                    "received_at": received_at,
                }
                for r in rejected
            ],
        )


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
    insert_rejected_many(
        conn, [Rejected(tenant_slug, source, reason, payload, topic)], received_at=received_at
    )
