"""``openami bench ingest --through service``: the whole ingest service, bus message to committed row.

Where ``openami.bench.ingest`` times the store writer alone, this times what a driver's readings go
through after the driver: the in-process bus, decoding of the ``ReadingBatch`` message, resolution of
meter serials and channel codes, grouping into flushes, and the writer. Messages are serialised before
the clock starts (that is the driver's cost); the clock stops when the bus has settled every message,
that is when every row is committed.

Two shapes of traffic. The default is warm, bulky traffic: one interval channel per meter, created by the
first message, then messages of ``message_rows`` readings each. ``new_channels`` is a head-end's first
day instead (what ``openami bench hes`` produces): one small message per meter read, as
:func:`openami.hes.rounds.publish_read` sends it, holding several register channels the store has never
seen, one reading each. There, resolving and creating channels is most of the work, not the writes.
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
from openami.config import Settings
from openami.mdm.ingest import IngestService
from openami.observability.metrics import Metrics
from openami.store import schema
from openami.store.engine import make_engine
from openami.store.migrate import upgrade

START = datetime(2025, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(minutes=15)
CHANNEL = "1-0:1.29.0"
#: (rows, ms) an ``openami worker --role ingest`` flushes at by default.
_WORKER_FLUSH = (
    int(Settings.model_fields["ingest_batch_rows"].default),
    int(Settings.model_fields["ingest_flush_ms"].default),
)
#: Register codes of a first-day read (an M-Bus or Modbus meter reports several registers).
REGISTERS = tuple(f"1-0:{n}.8.0" for n in range(1, 100))


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


def _first_day_messages(tenant: str, rows: int, meters: int) -> list[bytes]:
    """One message per meter with ``rows / meters`` new register channels (one reading each), as a
    poller publishes a day's register read; the meters' channel counts differ by at most one."""
    if rows > meters * len(REGISTERS):
        raise ValueError(f"at most {len(REGISTERS)} new channels per meter: use more meters")
    now = datetime.now(UTC)
    messages = []
    for m in range(min(meters, rows)):
        count = rows // meters + (m < rows % meters)
        readings = [
            Reading(meter=f"B{m:07d}", channel=code, ts=START, value=float(m % 97 + c), kind="register")
            for c, code in enumerate(REGISTERS[:count])
        ]
        batch = ReadingBatch.from_readings(readings, tenant=tenant, source="bench", received_at=now)
        messages.append(batch.to_bytes())
    return messages


def _cleanup(engine: Engine, tenant: str) -> None:
    with engine.begin() as conn:
        tenant_id = conn.execute(
            select(schema.tenant.c.id).where(schema.tenant.c.slug == tenant)
        ).scalar_one()
        channel_ids = select(schema.channel.c.id).where(schema.channel.c.tenant_id == tenant_id)
        for reads in (schema.interval_read, schema.register_read):
            conn.execute(delete(reads).where(reads.c.channel_id.in_(channel_ids)))
        for table in (schema.channel, schema.meter):
            conn.execute(delete(table).where(table.c.tenant_id == tenant_id))
        conn.execute(delete(schema.tenant).where(schema.tenant.c.id == tenant_id))


async def _run(
    engine: Engine,
    tenant: str,
    messages: list[bytes],
    rows: int,
    flush: tuple[int, int],
    progress: Progress | None,
) -> float:
    bus = MemoryBus()
    await bus.start()
    service = IngestService(engine, bus, Metrics(), batch_rows=flush[0], flush_ms=flush[1])
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
    new_channels: bool = False,
    progress: Progress | None = None,
    cleanup: bool = True,
) -> dict[str, Any]:
    """Push ``rows`` readings of ``meters`` meters through bus and ingest service; report the rate.

    With ``new_channels`` the traffic is a first day's (see the module docstring), and neither
    ``message_rows`` nor ``flush_rows`` applies: every message is one meter's read, and the service
    flushes as the ingest worker does by default.
    """
    engine = make_engine(database_url)
    tenant = f"bench-{secrets.token_hex(4)}"
    try:
        upgrade(engine)
        _create_meters(engine, tenant, meters)
        if new_channels:
            messages = _first_day_messages(tenant, rows, meters)
        else:
            messages = _messages(tenant, rows, meters, message_rows)
        # A first day runs with the ingest worker's own flush settings, the warm bulk path with its own.
        flush = _WORKER_FLUSH if new_channels else (flush_rows, 100)
        seconds = asyncio.run(_run(engine, tenant, messages, rows, flush, progress))
        return {
            "database": engine.dialect.name,
            "through": "service",
            "rows": rows,
            "meters": meters,
            "new_channels": new_channels,
            "messages": len(messages),
            "message_rows": -(-rows // len(messages)),
            "flush_rows": flush[0],
            "flush_ms": flush[1],
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
        }
    finally:
        if cleanup:
            _cleanup(engine, tenant)
        engine.dispose()
