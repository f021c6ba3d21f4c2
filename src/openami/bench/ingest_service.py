"""``openami bench ingest --through service``: the whole ingest service, bus message to committed row.

Where ``openami.bench.ingest`` times the store writer alone, this times what a driver's readings go
through after the driver: the in-process bus, decoding of the ``ReadingBatch`` message, resolution of
meter serials and channel codes, grouping into flushes, and the writer. Messages are serialised before
the clock starts (that is the driver's cost); the clock stops when the bus has settled every message,
that is when every row is committed.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from openami.bench.ingest import Progress
from openami.bus.memory import MemoryBus
from openami.bus.messages import Reading, ReadingBatch, readings_subject
from openami.mdm.ingest import IngestService
from openami.observability.metrics import Metrics
from openami.store import schema
from openami.store.engine import make_engine
from openami.store.migrate import upgrade

START = datetime(2025, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(minutes=15)
CHANNEL = "1-0:1.29.0"


def _create_meters(engine: Engine, tenant: str, meters: int) -> None:
    with engine.begin() as conn:
        tenant_id = conn.execute(
            insert(schema.tenant).values(slug=tenant, name="ingest benchmark").returning(schema.tenant.c.id)
        ).scalar_one()
        conn.execute(
            insert(schema.meter),
            [
                {"tenant_id": tenant_id, "serial": f"B{m:07d}", "medium": "electricity", "protocol": "bench"}
                for m in range(meters)
            ],
        )


def _messages(tenant: str, rows: int, meters: int, per_message: int) -> list[bytes]:
    """Time-major readings (each interval of every meter, then the next), ``per_message`` per batch."""
    readings = [
        Reading(
            meter=f"B{i % meters:07d}",
            channel=CHANNEL,
            ts=START + (i // meters + 1) * INTERVAL,
            value=float(i % 97) / 4,
            unit="kWh",
            interval_s=900,
        )
        for i in range(rows)
    ]
    now = datetime.now(UTC)
    return [
        ReadingBatch.from_readings(
            readings[i : i + per_message], tenant=tenant, source="bench", received_at=now
        ).to_bytes()
        for i in range(0, rows, per_message)
    ]


def _cleanup(engine: Engine, tenant: str) -> None:
    with engine.begin() as conn:
        tenant_id = conn.execute(
            select(schema.tenant.c.id).where(schema.tenant.c.slug == tenant)
        ).scalar_one()
        channel_ids = select(schema.channel.c.id).where(schema.channel.c.tenant_id == tenant_id)
        conn.execute(delete(schema.interval_read).where(schema.interval_read.c.channel_id.in_(channel_ids)))
        for table in (schema.channel, schema.meter):
            conn.execute(delete(table).where(table.c.tenant_id == tenant_id))
        conn.execute(delete(schema.tenant).where(schema.tenant.c.id == tenant_id))


async def _run(
    engine: Engine, tenant: str, messages: list[bytes], rows: int, flush_rows: int, progress: Progress | None
) -> float:
    bus = MemoryBus()
    await bus.start()
    service = IngestService(engine, bus, Metrics(), batch_rows=flush_rows, flush_ms=100)
    await service.start()
    try:
        started = perf_counter()
        per_message = -(-rows // len(messages))
        for index, message in enumerate(messages, start=1):
            await bus.publish(readings_subject(tenant), message)
            if progress is not None:
                progress(min(rows, index * per_message), rows)
        await bus.drain(timeout_s=3600)
        seconds = perf_counter() - started
    finally:
        await service.stop()
        await bus.close()
    if service.totals.inserted != rows:
        raise RuntimeError(f"benchmark stored {service.totals.inserted} of {rows} rows")
    return seconds


def run_service_bench(
    database_url: str,
    rows: int,
    *,
    meters: int = 1000,
    message_rows: int = 5000,
    flush_rows: int = 20_000,
    progress: Progress | None = None,
    cleanup: bool = True,
) -> dict[str, Any]:
    """Push ``rows`` readings of ``meters`` meters through bus and ingest service; report the rate."""
    engine = make_engine(database_url)
    tenant = f"bench-{secrets.token_hex(4)}"
    try:
        upgrade(engine)
        _create_meters(engine, tenant, meters)
        messages = _messages(tenant, rows, meters, message_rows)
        seconds = asyncio.run(_run(engine, tenant, messages, rows, flush_rows, progress))
        return {
            "database": engine.dialect.name,
            "through": "service",
            "rows": rows,
            "meters": meters,
            "message_rows": message_rows,
            "flush_rows": flush_rows,
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
        }
    finally:
        if cleanup:
            _cleanup(engine, tenant)
        engine.dispose()
