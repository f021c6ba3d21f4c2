"""``openami bench ingest``: the reading writer's throughput, next to a raw COPY on PostgreSQL.

The rows go through :class:`~openami.store.readings.ReadingWriter`, the same path the ingest service
uses, batch by batch, each batch its own transaction. On PostgreSQL the same number of rows (other
channel ids) is also sent by a bare binary COPY into the same table, in batches of the same size that
alternate with the writer's, so the price of idempotence (validation, in-batch collapse, overlap probe)
is visible in one JSON line; the writer's target is at least half the raw rate. Rows are generated
before either clock starts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any

from sqlalchemy import text

from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.partitions import driver_connection, ensure_partitions
from openami.store.readings import NewReading, ReadingWriter

#: Where the synthetic readings start; any fixed instant works since channel ids keep runs apart.
START = datetime(2025, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(minutes=15)

Progress = Callable[[int, int], None]
_RAW_COPY = (
    "COPY interval_read (channel_id, ts, value, quality, source, received_at) FROM STDIN (FORMAT BINARY)"
)


def synthetic_readings(first_channel: int, rows: int, channels: int) -> list[NewReading]:
    """``rows`` 15-minute readings, interval by interval across ``channels`` consecutive channel ids.

    Time-major order is what live ingest sees: each batch is the latest intervals of many meters.
    """
    readings: list[NewReading] = []
    interval = 0
    while len(readings) < rows:
        ts = START + interval * INTERVAL
        count = min(channels, rows - len(readings))
        readings.extend(
            NewReading(first_channel + c, ts, float((c * 7 + interval) % 97) / 4, 0, "bench")
            for c in range(count)
        )
        interval += 1
    return readings


def _batches(rows: list[Any], size: int) -> list[list[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _raw_copy_seconds(connection: Any, batch: list[tuple[Any, ...]]) -> float:
    """One bare binary COPY of pre-built tuples into ``interval_read``, committed: the reference."""
    started = perf_counter()
    with connection.cursor() as cursor, cursor.copy(_RAW_COPY) as copy:
        copy.set_types(["int8", "timestamptz", "float8", "int4", "text", "timestamptz"])
        for row in batch:
            copy.write_row(row)
    connection.commit()
    return perf_counter() - started


def run_ingest_bench(
    database_url: str,
    rows: int,
    *,
    channels: int = 1000,
    batch_rows: int = 50_000,
    progress: Progress | None = None,
    cleanup: bool = True,
) -> dict[str, Any]:
    """Write ``rows`` synthetic interval readings through the writer and report the rate.

    The database is migrated first if needed. Channel ids start at a random high base, so repeated runs
    against the same database never collide and cleanup can delete exactly this run's rows (readings
    have no foreign key to ``channel``, so no meters or channels need to exist). ``progress`` is called
    after every batch with (rows done, rows total).
    """
    engine = make_engine(database_url)
    base = random.randrange(10**12, 2 * 10**12)
    try:
        upgrade(engine)
        readings = synthetic_readings(base, rows, channels)
        postgres = engine.dialect.name == "postgresql"
        result: dict[str, Any] = {
            "database": engine.dialect.name,
            "rows": rows,
            "channels": channels,
            "batch_rows": batch_rows,
        }
        batches = _batches(readings, batch_rows)
        raw_batches: list[list[Any] | None] = [None] * len(batches)
        if postgres:
            # Partitions are created up front so neither timing includes the one-off DDL.
            ensure_partitions(engine, START, readings[-1].ts)
            received = datetime.now(UTC)
            raw_rows = [(c + channels, ts, v, q, s, received) for c, ts, v, q, s in readings]
            raw_batches = list(_batches(raw_rows, batch_rows))
        writer = ReadingWriter(engine)
        done = 0
        seconds = raw_seconds = 0.0
        # Raw and writer batches alternate, so both meet the same table size and the same machine load.
        with driver_connection(engine) as raw_connection:
            for batch, raw_batch in zip(batches, raw_batches, strict=True):
                if raw_batch is not None:
                    raw_seconds += _raw_copy_seconds(raw_connection, raw_batch)
                started = perf_counter()
                writer.write("interval", batch)
                seconds += perf_counter() - started
                done += len(batch)
                if progress is not None:
                    progress(done, rows)
        result |= {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}
        if postgres:
            result |= {
                "raw_copy_rows_per_s": round(rows / raw_seconds),
                "ratio_to_raw_copy": round(raw_seconds / seconds, 3),
            }
        return result
    finally:
        if cleanup:
            with engine.begin() as conn:
                conn.execute(
                    text("DELETE FROM interval_read WHERE channel_id >= :lo AND channel_id < :hi"),
                    {"lo": base, "hi": base + 2 * channels},
                )
        engine.dispose()
