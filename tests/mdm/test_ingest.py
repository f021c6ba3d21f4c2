"""The ingest service against a real store (SQLite and PostgreSQL) and the in-process bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, func, select

from openami.bus.memory import MemoryBus
from openami.bus.messages import MeterEvent, Reading, ReadingBatch, readings_subject
from openami.demo.seed import seed_demo
from openami.mdm.ingest import IngestService
from openami.observability.metrics import Metrics
from openami.store import schema
from openami.store.readings import count_readings, query_readings
from tests.mdm.fleet import TENANT, channel_count, make_fleet, read

T0 = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # spans the EU DST change and a month boundary below


@pytest.fixture
async def ingest(engine: Engine) -> AsyncIterator[tuple[IngestService, MemoryBus]]:
    await asyncio.to_thread(seed_demo, engine)
    bus = MemoryBus()
    await bus.start()
    service = IngestService(engine, bus, Metrics(), batch_rows=500, flush_ms=20)
    await service.start()
    yield service, bus
    await service.stop()
    await bus.close()


def _batch(values: list[float], *, meter: str = "E-000001", start: datetime = T0) -> ReadingBatch:
    readings = [
        Reading(
            meter=meter,
            channel="1-0:1.29.0",
            ts=start + timedelta(minutes=15 * (i + 1)),
            value=v,
            unit="kWh",
            interval_s=900,
        )
        for i, v in enumerate(values)
    ]
    return ReadingBatch.from_readings(readings, tenant="demo", source="test", received_at=datetime.now(UTC))


async def _send(bus: MemoryBus, batch: ReadingBatch) -> None:
    await bus.publish(readings_subject(batch.tenant), batch.to_bytes())
    await bus.drain(timeout_s=10)


def _channel_id(engine: Engine, serial: str, code: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(schema.channel.c.id)
            .join(schema.meter, schema.meter.c.id == schema.channel.c.meter_id)
            .where(schema.meter.c.serial == serial, schema.channel.c.code == code)
        ).scalar_one()


async def test_batch_is_stored_once_and_changes_become_versions(
    engine: Engine, ingest: tuple[IngestService, MemoryBus]
) -> None:
    service, bus = ingest
    values = [0.1 * i for i in range(1, 200)]
    await _send(bus, _batch(values))
    await _send(bus, _batch(values))  # a gateway retransmitting its buffer
    assert (service.totals.inserted, service.totals.unchanged, service.totals.revised) == (199, 199, 0)

    changed = list(values)
    changed[5] = 42.0
    await _send(bus, _batch(changed))
    assert service.totals.revised == 1

    channel = _channel_id(engine, "E-000001", "1-0:1.29.0")
    end = T0 + timedelta(days=3)
    latest = query_readings(engine, "interval", channel, T0, end, limit=1000)
    assert [r.value for r in latest] == pytest.approx(changed)
    every = query_readings(engine, "interval", channel, T0, end, limit=1000, all_versions=True)
    sixth = [r for r in every if r.ts == T0 + timedelta(minutes=90)]
    assert sorted((r.version, r.value) for r in sixth) == [(1, pytest.approx(0.6)), (2, 42.0)]


async def test_unknown_meter_is_kept_not_lost_and_known_rows_still_stored(
    engine: Engine, ingest: tuple[IngestService, MemoryBus]
) -> None:
    service, bus = ingest
    batch = _batch([1.0, 2.0])
    stranger = _batch([5.0], meter="X-999999")
    mixed = ReadingBatch.from_readings(
        batch.readings + stranger.readings, tenant="demo", source="test", received_at=datetime.now(UTC)
    )
    await _send(bus, mixed)
    assert service.totals.inserted == 2
    assert service.totals.rejected == 1
    with engine.connect() as conn:
        row = conn.execute(select(schema.rejected_message)).one()
    assert "X-999999" in row.reason
    assert b",5.0,0]" in row.payload.replace(b" ", b"")  # the rejected point, kept


async def test_register_data_on_an_interval_channel_is_refused(
    engine: Engine, ingest: tuple[IngestService, MemoryBus]
) -> None:
    service, bus = ingest
    await _send(bus, _batch([1.0]))
    wrong = Reading(meter="E-000001", channel="1-0:1.29.0", ts=T0, value=1.0, kind="register")
    await _send(bus, ReadingBatch.from_readings([wrong], tenant="demo", source="t", received_at=T0))
    assert service.totals.rejected == 1
    assert service.totals.inserted == 1


async def test_events_are_stored_once(engine: Engine, ingest: tuple[IngestService, MemoryBus]) -> None:
    service, bus = ingest
    event = MeterEvent(meter="W-000001", ts=T0, code="cover_open", severity="alarm", detail={"n": 1})
    batch = ReadingBatch(tenant="demo", source="t", received_at=T0, events=[event])
    await _send(bus, batch)
    await _send(bus, batch)
    with engine.connect() as conn:
        rows = conn.execute(select(schema.event.c.code, schema.event.c.severity)).all()
    assert rows == [("cover_open", "alarm")]
    assert service.totals.events == 1


async def test_undecodable_message_is_kept_and_acknowledged(
    engine: Engine, ingest: tuple[IngestService, MemoryBus]
) -> None:
    _, bus = ingest
    await bus.publish(readings_subject("demo"), b'{"tenant": "demo", "readings": "nope"}')
    await bus.drain(timeout_s=10)
    assert bus.stats().dead == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.rejected_message)).scalar_one() == 1


async def test_stop_writes_what_was_accepted(engine: Engine) -> None:
    """Graceful shutdown: rows waiting for a (long) flush interval are written by stop()."""
    await asyncio.to_thread(seed_demo, engine)
    bus = MemoryBus()
    await bus.start()
    service = IngestService(engine, bus, Metrics(), batch_rows=10**6, flush_ms=60_000)
    await service.start()
    await bus.publish(readings_subject("demo"), _batch([1.0, 2.0, 3.0]).to_bytes())
    while service.totals.messages == 0:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(service.stop(), timeout=10)
    await bus.close()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.interval_read)).scalar_one() == 3


async def test_a_first_day_is_resolved_per_flush_not_per_message(engine: Engine) -> None:
    """Two hundred meter reads, eight new channels each, as separate messages: all stored, every channel
    once, with a handful of channel inserts for the lot (it was one look-up, insert and commit each)."""
    await asyncio.to_thread(make_fleet, engine, 200)
    inserts: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_: (
            statement.startswith("INSERT INTO channel") and inserts.append(statement)
        ),
    )
    bus = MemoryBus()
    await bus.start()
    service = IngestService(engine, bus, Metrics(), batch_rows=5000, flush_ms=50)
    await service.start()
    try:
        for m in range(200):
            await bus.publish(readings_subject(TENANT), read(m).to_bytes())
        await bus.drain(timeout_s=20)
    finally:
        await service.stop()
        await bus.close()
    assert (service.totals.messages, service.totals.inserted, service.totals.rejected) == (200, 1600, 0)
    assert channel_count(engine) == 1600
    assert count_readings(engine, "register") == 1600
    assert 1 <= len(inserts) <= 20, len(inserts)


async def test_small_messages_are_flushed_without_waiting_out_the_interval(engine: Engine) -> None:
    """Once half the messages the bus may hand over at once are waiting, they are written: otherwise
    small messages would stall the bus until ``flush_ms`` (a minute here) has passed."""
    await asyncio.to_thread(make_fleet, engine, 4)
    bus = MemoryBus()
    await bus.start()
    service = IngestService(engine, bus, Metrics(), batch_rows=10**6, flush_ms=60_000, max_in_flight=8)
    await service.start()
    try:
        for m in range(4):
            await bus.publish(readings_subject(TENANT), read(m).to_bytes())
        await asyncio.wait_for(_stored(engine, 32), timeout=20)
        await bus.drain(timeout_s=10)
        assert bus.stats().acked == 4
    finally:
        await service.stop()
        await bus.close()


async def _stored(engine: Engine, rows: int) -> None:
    while await asyncio.to_thread(count_readings, engine, "register") < rows:
        await asyncio.sleep(0.05)


async def test_a_meter_known_to_be_unknown_is_kept_every_time(
    engine: Engine, ingest: tuple[IngestService, MemoryBus]
) -> None:
    """The second message of an unknown meter is answered from the cache, and still kept, not lost."""
    service, bus = ingest
    stranger = _batch([5.0], meter="X-999999")
    await _send(bus, stranger)
    await _send(bus, stranger)
    assert service.totals.rejected == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.rejected_message)).scalar_one() == 2
