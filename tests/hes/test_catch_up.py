"""Gap-driven catch-up on SQLite and PostgreSQL: readings written through the real store writer with
holes at the start, in the middle and at the end become one catch-up read per meter from its earliest
missing interval; complete, corrected, jittered and not-yet-installed data make none."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update

from openami.hes import job_store
from openami.hes.catch_up import plan_catch_up
from openami.hes.job_store import NewJob
from openami.hes.jobstate import Lane, State
from openami.store.readings import NewReading, ReadingWriter
from openami.store.schema import job
from tests.hes.planning_rows import make_channel, make_devices, make_meters, make_tenant

NOW = datetime(2026, 12, 3, 10, 7, tzinfo=UTC)
STEP = timedelta(minutes=15)
WINDOW_START = NOW - timedelta(days=7)  # the window crosses a month, so two partitions on PostgreSQL
CREATED = datetime(2026, 11, 1, tzinfo=UTC)
LAST = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)  # the last complete interval's end before NOW
FIRST = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)  # the first interval's end inside the window


def _ends(start: datetime, end: datetime, skip: Iterable[tuple[datetime, datetime]] = ()) -> list[datetime]:
    """Interval ends in ``[start, end]`` on the 15-minute grid, without those in the ``skip`` ranges."""
    holes = list(skip)
    found: list[datetime] = []
    moment = start
    while moment <= end:
        if not any(lo <= moment <= hi for lo, hi in holes):
            found.append(moment)
        moment += STEP
    return found


def _write(engine: Engine, channel_id: int, stamps: Iterable[datetime], value: float = 1.0) -> None:
    rows = [NewReading(channel_id, ts, value + index) for index, ts in enumerate(stamps)]
    ReadingWriter(engine).write("interval", rows, received_at=NOW)


def _catch_ups(engine: Engine) -> dict[int, dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(select(job).where(job.c.lane == int(Lane.CATCH_UP)))
        return {row.target_id: dict(row._mapping) for row in rows}


def _meter(engine: Engine, tenant: int, name: str, **values: object) -> tuple[int, int]:
    (meter_id,) = make_meters(engine, tenant, 1, prefix=name, **values)
    return meter_id, make_channel(engine, tenant, meter_id, CREATED)


def test_each_meter_with_gaps_gets_one_read_from_its_earliest_missing_interval(engine: Engine) -> None:
    tenant = make_tenant(engine)
    ids = make_devices(engine, tenant, [("C-1", "concentrator", None, None)])
    early = datetime(2026, 11, 20, tzinfo=UTC)  # readings from before the window do not matter
    complete, channel = _meter(engine, tenant, "FULL")
    _write(engine, channel, _ends(early, LAST))
    corrected, channel = _meter(engine, tenant, "CORR")
    _write(engine, channel, _ends(FIRST, LAST))
    _write(engine, channel, _ends(FIRST, FIRST + 4 * STEP), value=50.0)  # second versions: not extra
    jittered, channel = _meter(engine, tenant, "JIT")
    _write(engine, channel, [ts + timedelta(seconds=3) for ts in _ends(FIRST, LAST)])
    middle, channel = _meter(engine, tenant, "MID", device=ids["C-1"])
    hole = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    _write(engine, channel, _ends(early, LAST, [(hole, hole + 8 * STEP), (LAST - 8 * STEP, LAST - 6 * STEP)]))
    tail, channel = _meter(engine, tenant, "TAIL")
    _write(engine, channel, _ends(FIRST, datetime(2026, 12, 3, 6, 0, tzinfo=UTC)))
    head, channel = _meter(engine, tenant, "HEAD")
    _write(engine, channel, _ends(datetime(2026, 11, 28, tzinfo=UTC), LAST))
    silent, _ = _meter(engine, tenant, "NONE")
    installed_at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    new_complete, channel = _meter(engine, tenant, "NEWOK", installed_at=installed_at)
    _write(engine, channel, _ends(installed_at + STEP, LAST))
    new_late, channel = _meter(engine, tenant, "NEWLATE", installed_at=installed_at)
    _write(engine, channel, _ends(installed_at + 4 * STEP, LAST))
    both, first_channel = _meter(engine, tenant, "TWO")
    second_channel = make_channel(engine, tenant, both, CREATED, code="2.8.0")
    _write(engine, first_channel, _ends(FIRST, LAST, [(datetime(2026, 12, 1, tzinfo=UTC),) * 2]))
    _write(engine, second_channel, _ends(FIRST, LAST, [(datetime(2026, 11, 29, tzinfo=UTC),) * 2]))
    _meter(engine, tenant, "GONE", status="removed")

    report = plan_catch_up(engine, NOW, days=7, window=timedelta(minutes=30))

    since = {
        middle: hole - STEP,
        tail: datetime(2026, 12, 3, 6, 0, tzinfo=UTC),
        head: FIRST - STEP,
        silent: FIRST - STEP,
        new_late: installed_at,
        both: datetime(2026, 11, 29, tzinfo=UTC) - STEP,
    }
    planned = _catch_ups(engine)
    assert {meter_id: row["params"] for meter_id, row in planned.items()} == {
        meter_id: {"what": "load_profile", "since": moment.isoformat()} for meter_id, moment in since.items()
    }
    assert not {complete, corrected, jittered, new_complete} & set(planned)
    for meter_id, row in planned.items():
        assert row["kind"] == "read" and row["target_type"] == "meter" and row["state"] == "planned"
        assert row["deadline"] == NOW + timedelta(minutes=30) and row["not_before"] == NOW
        assert row["dedup_key"] == f"gap:m{meter_id}:{since[meter_id]:%Y%m%dT%H%M%SZ}"
    assert planned[middle]["path"] == "concentrator:C-1"
    assert report.channels == 11  # the removed meter's channel is not looked at
    assert (report.meters_with_gaps, report.jobs, report.open_skipped, report.deferred) == (6, 6, 0, 0)
    assert report.intervals_missing == (
        (9 + 3)  # middle
        + 16  # tail: 06:15 to 10:00
        + len(_ends(FIRST, datetime(2026, 11, 28, tzinfo=UTC) - STEP))  # head: before its first reading
        + len(_ends(FIRST, LAST))  # silent: every interval of the window
        + 3  # new_late: 12:15, 12:30, 12:45
        + 2  # both: one per channel
    )


def test_open_catch_ups_are_left_alone_and_a_gap_is_asked_for_once(engine: Engine) -> None:
    tenant = make_tenant(engine)
    first, channel = _meter(engine, tenant, "A")
    hole = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    _write(engine, channel, _ends(FIRST, LAST, [(hole, hole + STEP)]))
    second, _ = _meter(engine, tenant, "B")
    busy = NewJob(tenant, "read", "meter", second, lane=Lane.CATCH_UP, not_before=NOW, dedup_key="manual")
    job_store.plan(engine, [busy])

    report = plan_catch_up(engine, NOW, days=7)
    assert (report.meters_with_gaps, report.jobs, report.open_skipped) == (2, 1, 1)
    assert set(_catch_ups(engine)) == {first, second}
    again = plan_catch_up(engine, NOW + timedelta(hours=1), days=7)  # both have open catch-ups now
    assert (again.jobs, again.open_skipped) == (0, 2)

    with engine.begin() as conn:  # the reads ran, yet the meters did not have the intervals
        conn.execute(update(job).values(state=State.DONE.value))
    unchanged = plan_catch_up(engine, NOW + timedelta(hours=2), days=7)
    assert (unchanged.jobs, unchanged.open_skipped) == (1, 0)  # only B's own first gap key is new
    _write(engine, channel, [hole, hole + STEP])  # A's hole filled: its later, new gap is asked for
    _write(engine, channel, _ends(LAST + STEP, LAST + 4 * STEP, [(LAST + 2 * STEP,) * 2]))
    later = plan_catch_up(engine, LAST + 5 * STEP, days=7)
    assert later.jobs == 1
    assert _catch_ups(engine)[first]["params"] == {"what": "load_profile", "since": (LAST + STEP).isoformat()}


def test_a_round_plans_at_most_max_jobs_oldest_gaps_first(engine: Engine) -> None:
    tenant = make_tenant(engine)
    starts = [datetime(2026, 11, 30, tzinfo=UTC) + timedelta(hours=hours) for hours in (5, 1, 3)]
    meters = []
    for name, start in zip("XYZ", starts, strict=True):
        meter_id, channel = _meter(engine, tenant, name)
        _write(engine, channel, _ends(FIRST, LAST, [(start, start)]))
        meters.append(meter_id)
    report = plan_catch_up(engine, NOW, days=7, max_jobs=2)
    assert (report.meters_with_gaps, report.jobs, report.deferred) == (3, 2, 1)
    assert set(_catch_ups(engine)) == {meters[1], meters[2]}
