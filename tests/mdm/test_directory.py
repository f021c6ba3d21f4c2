"""The directory: batch resolution of serials and codes, its cache, and concurrent first sight (threads
of one process, and workers with connections of their own, on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, event, func, select

from openami.bus.messages import Reading, ReadingBatch
from openami.demo.seed import seed_demo
from openami.mdm.directory import Directory, Resolved
from openami.store.engine import make_engine
from openami.store.repositories import ingest as lookups
from openami.store.schema import channel
from tests.mdm.fleet import CODES, channel_count, make_fleet, read, serial

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _batch(codes: list[str], kind: str = "register") -> ReadingBatch:
    readings = [
        Reading(meter="E-000001", channel=code, ts=T0 + timedelta(hours=i), value=float(i), kind=kind)  # type: ignore[arg-type]
        for i, code in enumerate(codes)
    ]
    return ReadingBatch.from_readings(readings, tenant="demo", source="test", received_at=T0)


def test_concurrent_first_sight_creates_each_channel_once(engine: Engine) -> None:
    seed_demo(engine)
    codes = [f"1-0:{n}.8.0" for n in range(1, 6)]
    directories = [Directory(engine) for _ in range(4)]
    results: list[set[int]] = []
    errors: list[BaseException] = []

    def work(directory: Directory) -> None:
        try:
            resolved = directory.resolve(_batch(codes))
            results.append({row.channel_id for row in resolved.rows["register"]})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in directories]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    assert all(r == results[0] for r in results)
    assert len(results[0]) == 5
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(channel)).scalar_one() == 5


def test_known_channels_are_answered_from_the_cache(engine: Engine) -> None:
    seed_demo(engine)
    directory = Directory(engine)
    directory.resolve(_batch(["1-0:1.8.0"]))
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    resolved = directory.resolve(_batch(["1-0:1.8.0"]))
    assert len(resolved.rows["register"]) == 1
    assert not [s for s in statements if "channel" in s or "meter" in s]  # tenant, meter, channel cached


def test_kind_conflict_and_unknown_meter_go_to_unknown(engine: Engine) -> None:
    seed_demo(engine)
    directory = Directory(engine)
    directory.resolve(_batch(["1-0:1.8.0"]))
    clash = directory.resolve(_batch(["1-0:1.8.0"], kind="interval"))
    assert len(clash.unknown) == 1
    stranger = ReadingBatch.from_readings(
        [Reading(meter="NOPE", channel="x", ts=T0, value=1.0)], tenant="demo", source="t", received_at=T0
    )
    assert len(directory.resolve(stranger).unknown) == 1
    other_tenant = stranger.model_copy(update={"tenant": "ghost"})
    assert len(directory.resolve(other_tenant).unknown) == 1


def _statements(engine: Engine) -> list[str]:
    """Every SQL statement ``engine`` sends from now on."""
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: sent.append(statement))
    return sent


def test_a_first_day_flush_costs_a_few_statements_however_many_messages(engine: Engine) -> None:
    """Sixty meter reads with eight new channels each: one meter query, one channel query and one insert
    for all of them (before, five statements and a commit per message), and from then on no query."""
    make_fleet(engine, 60)
    directory = Directory(engine)
    batches = [read(m) for m in range(60)]
    assert all(directory.cached(b) is None for b in batches)  # new channels: the cache cannot answer
    sent = _statements(engine)
    resolved = directory.resolve_many(batches)
    channel_statements = [s for s in sent if "channel" in s]
    assert len(channel_statements) == 2, channel_statements  # one look-up, one insert
    assert len([s for s in sent if "FROM meter" in s]) == 1
    assert [len(r.rows["register"]) for r in resolved] == [8] * 60
    assert not any(r.unknown for r in resolved)
    assert channel_count(engine) == 480

    sent.clear()
    again = [directory.cached(b) for b in batches]
    assert not sent
    assert [r.rows["register"] if r else None for r in again] == [r.rows["register"] for r in resolved]


def test_the_cache_answers_unknown_meters_too_but_never_an_unknown_tenant(engine: Engine) -> None:
    make_fleet(engine, 1)
    directory = Directory(engine)
    stranger = ReadingBatch.from_readings(
        [Reading(meter="NOPE", channel="x", ts=T0, value=1.0)], tenant="fleet", source="t", received_at=T0
    )
    assert directory.cached(stranger) is None
    assert len(directory.resolve(stranger).unknown) == 1
    known_unknown = directory.cached(stranger)  # within UNKNOWN_TTL_S: no query needed
    assert known_unknown is not None and len(known_unknown.unknown) == 1
    assert directory.cached(stranger.model_copy(update={"tenant": "ghost"})) is None


def test_the_first_series_naming_a_new_channel_sets_its_kind_within_a_flush(engine: Engine) -> None:
    make_fleet(engine, 1)
    directory = Directory(engine)
    register, interval = directory.resolve_many([read(0, CODES[:1]), read(0, CODES[:1], kind="interval")])
    assert len(register.rows["register"]) == 1 and not register.unknown
    assert not interval.rows["interval"] and len(interval.unknown) == 1
    assert channel_count(engine) == 1


def test_a_channel_another_worker_is_creating_is_waited_for_and_shared(
    engine: Engine, database_url: str
) -> None:
    """The race made certain: another worker has inserted half the channels and not committed when this
    one looks them up (and misses them) and inserts. The insert skips them once the other commits, and
    the look-up that follows finds the other's ids: no error, no duplicate, no channel missing."""
    make_fleet(engine, 1)
    other = make_engine(database_url)
    directory = Directory(engine)
    inserting = threading.Event()
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_: statement.startswith("INSERT INTO channel") and inserting.set(),
    )
    sent = _statements(engine)
    results: list[Resolved] = []
    try:
        with other.connect() as conn:
            conn.begin()
            tenant_id = lookups.tenant_ids(conn, ["fleet"])["fleet"]
            meter_id = lookups.meter_ids(conn, tenant_id, [serial(0)])[serial(0)]
            theirs = lookups.create_channels(
                conn,
                [
                    {
                        "tenant_id": tenant_id,
                        "meter_id": meter_id,
                        "code": code,
                        "kind": "register",
                        "unit": "",
                        "interval_s": None,
                    }
                    for code in CODES[:4]
                ],
            )
            worker = threading.Thread(target=lambda: results.append(directory.resolve_many([read(0)])[0]))
            worker.start()
            assert inserting.wait(10)
            time.sleep(0.2)  # the worker's insert is now waiting for this transaction
            conn.commit()
        worker.join(30)
    finally:
        other.dispose()
    assert results, "the worker did not finish"
    ids = {row.channel_id for row in results[0].rows["register"]}
    assert len(ids) == 8 and {info.id for info in theirs.values()} <= ids
    assert channel_count(engine) == 8
    assert len([s for s in sent if s.startswith("SELECT channel.meter_id")]) == 2  # before and after


def _resolve_ids(
    directory: Directory,
    batches: list[ReadingBatch],
    start: threading.Barrier,
    seen: list[dict[tuple[str, str], int]],
    errors: list[BaseException],
) -> None:
    """Resolve ``batches`` in one go once both workers are ready; record (meter, code) -> channel id."""
    try:
        start.wait(10)
        ids = {}
        for batch, result in zip(batches, directory.resolve_many(batches), strict=True):
            for series, row in zip(batch.series, result.rows["register"], strict=True):
                ids[series.meter, series.channel] = row.channel_id
        seen.append(ids)
    except BaseException as exc:
        errors.append(exc)


def test_two_workers_creating_the_same_channels_at_once_neither_fails_nor_duplicates(
    engine: Engine, database_url: str
) -> None:
    """Two ingest processes (engines of their own) take the same new channels at the same moment, one in
    the other's reverse order, three times: both get the same ids and each channel is stored once."""
    make_fleet(engine, 40)
    other = make_engine(database_url)
    workers = [Directory(engine), Directory(other)]
    try:
        for round_ in range(3):
            codes = tuple(f"{code}*{round_}" for code in CODES)
            batches = [read(m, codes) for m in range(40)]
            start = threading.Barrier(2)
            seen: list[dict[tuple[str, str], int]] = []
            errors: list[BaseException] = []
            threads = [
                threading.Thread(target=_resolve_ids, args=(workers[0], batches, start, seen, errors)),
                threading.Thread(target=_resolve_ids, args=(workers[1], batches[::-1], start, seen, errors)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not errors
            assert len(seen) == 2 and seen[0] == seen[1] and len(seen[0]) == 320
        assert channel_count(engine) == 3 * 320
    finally:
        other.dispose()
