"""The reading store's promises, on SQLite and PostgreSQL alike.

Idempotence (a batch written twice is stored once), versioning (a change appends a version and keeps the
old ones), all-or-nothing validation, monthly partitions on PostgreSQL, UTC round trips and keyset
pagination. The hypothesis test checks the versioning rule against a model over random batch sequences.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from openami.store.partitions import ensure_partitions
from openami.store.readings import (
    InvalidReading,
    NewReading,
    ReadingWriter,
    WriteResult,
    count_readings,
    latest_reading_ts,
    query_readings,
)

T0 = datetime(2025, 3, 10, tzinfo=UTC)
STEP = timedelta(minutes=15)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
EPOCH = datetime(1971, 1, 1, tzinfo=UTC)


def series(channel_id: int, count: int, start: datetime = T0, value: float = 1.0) -> list[NewReading]:
    return [NewReading(channel_id, start + i * STEP, value + i) for i in range(count)]


def versions(engine: Engine, channel_id: int, ts: datetime) -> list[tuple[int, float, int]]:
    rows = query_readings(engine, "interval", channel_id, ts, ts + STEP, all_versions=True)
    return [(row.version, row.value, row.quality) for row in rows]


def partitions(engine: Engine, parent: str) -> set[str]:
    """Partitions of ``parent`` in the connection's own schema (pg_inherits)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:parent AS regclass) "
                "AND c.relnamespace = CAST(current_schema() AS regnamespace)"
            ),
            {"parent": parent},
        )
        return {name for (name,) in rows}


def test_the_same_batch_twice_is_stored_once(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    batch = series(1, 50) + series(2, 50)
    assert writer.write("interval", batch) == WriteResult(inserted=100, revised=0, unchanged=0)
    second = writer.write("interval", batch)
    assert second == WriteResult(inserted=0, revised=0, unchanged=100)
    assert second.total == 100
    assert count_readings(engine, "interval") == 100
    assert count_readings(engine, "interval", [2]) == 50
    assert count_readings(engine, "register") == 0


def test_a_changed_value_adds_version_2_and_keeps_version_1(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    writer.write("interval", series(1, 10))
    changed = series(1, 10)
    changed[4] = changed[4]._replace(value=99.5)
    assert writer.write("interval", changed) == WriteResult(inserted=0, revised=1, unchanged=9)
    assert versions(engine, 1, T0 + 4 * STEP) == [(1, 5.0, 0), (2, 99.5, 0)]
    [latest] = query_readings(engine, "interval", 1, T0 + 4 * STEP, T0 + 5 * STEP)
    assert (latest.value, latest.version) == (99.5, 2)
    # Going back to the old value is a change too: version 3, nothing overwritten.
    assert writer.write("interval", series(1, 10)).revised == 1
    assert versions(engine, 1, T0 + 4 * STEP) == [(1, 5.0, 0), (2, 99.5, 0), (3, 5.0, 0)]
    assert count_readings(engine, "interval") == 12


def test_a_quality_change_adds_a_version(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    writer.write("register", [NewReading(7, T0, 1234.5, quality=0)])
    result = writer.write("register", [NewReading(7, T0, 1234.5, quality=4, source="manual")])
    assert result == WriteResult(inserted=0, revised=1, unchanged=0)
    rows = query_readings(engine, "register", 7, T0, T0 + STEP, all_versions=True)
    assert [(r.version, r.quality, r.source) for r in rows] == [(1, 0, ""), (2, 4, "manual")]
    # Same value and quality from another source is the same reading.
    assert writer.write("register", [NewReading(7, T0, 1234.5, quality=4)]).unchanged == 1


def test_duplicates_inside_one_batch_collapse_to_the_last(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    batch = [NewReading(1, T0, 1.0), NewReading(1, T0 + STEP, 2.0), NewReading(1, T0, 3.0)]
    assert writer.write("interval", batch) == WriteResult(inserted=2, revised=0, unchanged=0)
    assert versions(engine, 1, T0) == [(1, 3.0, 0)]
    # On the merge path too: the last duplicate equals what is stored, so nothing changes.
    again = [NewReading(1, T0, 8.0), NewReading(1, T0, 3.0), NewReading(1, T0 + 2 * STEP, 4.0)]
    assert writer.write("interval", again) == WriteResult(inserted=1, revised=0, unchanged=1)
    assert versions(engine, 1, T0) == [(1, 3.0, 0)]


def test_fresh_rows_after_stored_ones_and_gaps_are_told_apart(engine: Engine) -> None:
    """A batch that extends a channel, fills a gap and re-sends old rows is classified exactly."""
    writer = ReadingWriter(engine)
    stored = [r for i, r in enumerate(series(1, 20)) if i != 5]  # a gap at i=5
    writer.write("interval", stored)
    batch = series(1, 30)  # re-sends 0..19 (fills the gap), adds 20..29
    batch[3] = batch[3]._replace(value=-1.0)
    assert writer.write("interval", batch) == WriteResult(inserted=11, revised=1, unchanged=18)
    assert count_readings(engine, "interval") == 31
    assert latest_reading_ts(engine, "interval", 1) == T0 + 29 * STEP
    assert latest_reading_ts(engine, "interval", 2) is None


def test_partitions_across_a_month_and_a_year_boundary(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    start = datetime(2024, 12, 31, 23, 0, tzinfo=UTC)
    batch = series(1, 8, start)  # 23:00 on 31 Dec .. 00:45 on 1 Jan
    batch.append(NewReading(1, datetime(2025, 2, 1, 0, 0, tzinfo=UTC), 9.0))  # first instant of Feb
    assert writer.write("interval", batch).inserted == 9
    rows = query_readings(engine, "interval", 1, start, datetime(2025, 3, 1, tzinfo=UTC))
    assert [r.ts for r in rows] == [r.ts for r in batch]
    if engine.dialect.name == "postgresql":
        assert partitions(engine, "interval_read") == {
            "interval_read_p202412",
            "interval_read_p202501",
            "interval_read_p202502",
        }
        assert partitions(engine, "register_read") == set()
        # A second writer (cold cache) finds them instead of failing to create them again.
        assert ReadingWriter(engine).write("interval", batch).unchanged == 9


def test_a_stray_timestamp_does_not_create_the_months_in_between(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    batch = [NewReading(1, EPOCH, 1.0), NewReading(1, T0, 2.0)]
    assert writer.write("interval", batch).inserted == 2
    if engine.dialect.name == "postgresql":
        assert partitions(engine, "interval_read") == {"interval_read_p197101", "interval_read_p202503"}


def test_writers_creating_the_same_partitions_at_once_both_succeed(engine: Engine) -> None:
    start = datetime(2031, 6, 30, 22, 0, tzinfo=UTC)  # June and July, created by both writers at once
    barrier = threading.Barrier(4)
    results: list[WriteResult] = []

    def write(channel_id: int) -> None:
        writer = ReadingWriter(engine)  # each with a cold partition cache
        barrier.wait(timeout=10)
        results.append(writer.write("interval", series(channel_id, 16, start)))

    threads = [threading.Thread(target=write, args=(channel_id,)) for channel_id in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [WriteResult(inserted=16, revised=0, unchanged=0)] * 4
    assert count_readings(engine, "interval") == 64
    if engine.dialect.name == "postgresql":
        assert partitions(engine, "interval_read") == {"interval_read_p203106", "interval_read_p203107"}


def test_ensure_partitions_precreates_both_tables_and_is_idempotent(engine: Engine) -> None:
    created = ensure_partitions(engine, datetime(2026, 11, 15, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC))
    if engine.dialect.name != "postgresql":
        assert created == []
        return
    expected = {
        f"{t}_p{m}" for t in ("interval_read", "register_read") for m in ("202611", "202612", "202701")
    }
    assert set(created) == expected
    assert (
        ensure_partitions(engine, datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)) == []
    )
    assert partitions(engine, "register_read") == {n for n in expected if n.startswith("register")}


def test_query_by_range_and_keyset_pagination_cover_every_row_once(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    writer.write("interval", series(1, 250) + series(2, 250))
    writer.write("interval", [NewReading(1, T0 + i * STEP, -float(i)) for i in range(0, 250, 7)])
    start, end = T0 + 10 * STEP, T0 + 240 * STEP
    pages, after = [], None
    while True:
        page = query_readings(engine, "interval", 1, start, end, limit=37, after=after)
        if not page:
            break
        pages.append(page)
        after = page[-1].ts
    rows = [row for page in pages for row in page]
    assert [r.ts for r in rows] == [T0 + i * STEP for i in range(10, 240)]  # start inclusive, end exclusive
    assert all(len(page) == 37 for page in pages[:-1])
    assert {r.channel_id for r in rows} == {1}
    for row in rows:
        i = (row.ts - T0) // STEP
        assert (row.value, row.version) == ((-float(i), 2) if i % 7 == 0 else (1.0 + i, 1))
    # all_versions: the limit counts timestamps, so the versions of one ts stay on one page.
    page = query_readings(engine, "interval", 1, T0, end, limit=8, all_versions=True)
    assert [(r.ts, r.version) for r in page][:3] == [(T0, 1), (T0, 2), (T0 + STEP, 1)]
    assert len({r.ts for r in page}) == 8
    assert len(page) == 8 + 2  # ts 0 and 7 have two versions
    assert len(query_readings(engine, "interval", 1, end, FAR)) == 10


def test_non_utc_input_comes_back_as_the_same_instant_in_utc(engine: Engine) -> None:
    writer = ReadingWriter(engine)
    berlin = datetime(2025, 3, 30, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # just after the DST switch
    minus5 = datetime(2025, 3, 29, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    writer.write("interval", [NewReading(1, berlin, 1.0), NewReading(1, minus5, 2.0)])
    rows = query_readings(engine, "interval", 1, EPOCH, FAR)
    assert [r.ts for r in rows] == [minus5, berlin]  # equal instants, in time order
    assert all(r.ts.tzinfo is UTC for r in rows)
    assert [r.ts.hour for r in rows] == [1, 1]  # 20:00-05:00 and 03:30+02:00 are 01:xx UTC
    assert rows[1].received_at.tzinfo is UTC
    # The same instant written in UTC is the same reading.
    assert writer.write("interval", [NewReading(1, berlin.astimezone(UTC), 1.0)]).unchanged == 1
    assert latest_reading_ts(engine, "interval", 1) == berlin


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (NewReading(1, datetime(2025, 3, 10, 12, 0), 1.0), "time-zone-aware"),
        (NewReading(1, T0, float("nan")), "finite"),
        (NewReading(1, T0, float("inf")), "finite"),
        (NewReading(0, T0, 1.0), "positive"),
        (NewReading(-3, T0, 1.0), "positive"),
        (NewReading(1, T0, 1.0, source="x" * 33), "source"),
        (NewReading(1, T0, 1.0, quality=1.5), "quality"),  # type: ignore[arg-type]
        (NewReading(1, "2025-03-10", 1.0), "time-zone-aware"),  # type: ignore[arg-type]
    ],
)
def test_invalid_rows_raise_and_nothing_of_the_batch_is_stored(
    engine: Engine, bad: NewReading, reason: str
) -> None:
    batch = [*series(1, 3), bad, *series(2, 3)]
    with pytest.raises(InvalidReading, match=rf"row 3: .*{reason}"):
        ReadingWriter(engine).write("interval", batch)
    assert count_readings(engine, "interval") == 0


def blocked_by(engine: Engine, pid: int) -> bool:
    """Whether some backend waits for a lock ``pid`` holds (a new transaction per call: PostgreSQL keeps
    one snapshot of pg_stat_activity per transaction)."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                {"pid": pid},
            ).scalar_one()
        )


@pytest.mark.parametrize("path", ["fast", "merge"])
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_concurrent_writer_of_the_same_reading_is_merged_not_lost(engine: Engine, path: str) -> None:
    """Another transaction stores one of the batch's readings while the batch is being written.

    The writer blocks on that row's key, then finds it committed: on the fast path the COPY fails and
    the savepoint sends the rows to the merge; on the merge path ON CONFLICT skips it and a second pass
    compares against it. Either way the other writer's value becomes version 1 and ours version 2.
    """
    ensure_partitions(engine, T0, T0)  # the other transaction inserts directly, not through a writer
    writer = ReadingWriter(engine)
    batch = series(1, 20)
    if path == "merge":
        writer.write("interval", batch[-1:])  # stored at the batch's end: every row takes the merge path
    contested = batch[10]
    results: list[WriteResult] = []
    with engine.connect() as other:
        other.execute(
            text(
                "INSERT INTO interval_read (channel_id, ts, value, received_at) VALUES (1, :ts, 777, now())"
            ),
            {"ts": contested.ts},
        )
        other_pid = other.execute(text("SELECT pg_backend_pid()")).scalar_one()
        thread = threading.Thread(target=lambda: results.append(writer.write("interval", batch)))
        thread.start()
        deadline = time.monotonic() + 10
        while not blocked_by(engine, other_pid):
            assert time.monotonic() < deadline, "the writer never waited for the other transaction"
            time.sleep(0.02)
        other.commit()
        thread.join(timeout=10)
    expected_new = 19 if path == "fast" else 18
    assert results == [WriteResult(inserted=expected_new, revised=1, unchanged=20 - expected_new - 1)]
    assert versions(engine, 1, contested.ts) == [(1, 777.0, 0), (2, contested.value, 0)]
    assert count_readings(engine, "interval") == 21


# Hypothesis: random sequences of batches against a model of the versioning rule.
keys = st.tuples(st.integers(1, 3), st.integers(0, 5))
readings = st.tuples(keys, st.sampled_from([0.0, 1.5, -2.25, 1e12]), st.integers(0, 1))
batches = st.lists(st.lists(readings, max_size=12), min_size=1, max_size=6)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_list=batches)
def test_random_batches_end_with_the_last_written_values_and_contiguous_versions(
    engine: Engine, batch_list: list[list[tuple[tuple[int, int], float, int]]]
) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM interval_read"))
    writer = ReadingWriter(engine)
    model: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for spec in batch_list:
        last = {key: (value, quality) for key, value, quality in spec}
        expected = WriteResult(
            inserted=sum(key not in model for key in last),
            revised=sum(key in model and model[key][-1] != vq for key, vq in last.items()),
            unchanged=sum(key in model and model[key][-1] == vq for key, vq in last.items()),
        )
        rows = [NewReading(c, T0 + i * STEP, value, quality) for (c, i), value, quality in spec]
        assert writer.write("interval", rows) == expected
        for key, vq in last.items():
            history = model.setdefault(key, [])
            if not history or history[-1] != vq:
                history.append(vq)
    stored: dict[tuple[int, int], list[tuple[int, float, int]]] = {}
    for channel in (1, 2, 3):
        for row in query_readings(engine, "interval", channel, T0, FAR, all_versions=True):
            stored.setdefault((channel, (row.ts - T0) // STEP), []).append(
                (row.version, row.value, row.quality)
            )
    assert stored == {
        key: [(n, value, quality) for n, (value, quality) in enumerate(history, 1)]
        for key, history in model.items()
    }
    for channel in (1, 2, 3):
        latest = {
            (channel, (r.ts - T0) // STEP): (r.value, r.quality)
            for r in query_readings(engine, "interval", channel, T0, FAR)
        }
        assert latest == {key: history[-1] for key, history in model.items() if key[0] == channel}
