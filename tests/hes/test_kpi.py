"""KPIs counted from job rows the workers' moves made, on SQLite and PostgreSQL: read success per day
(local days, a daylight-saving day included), schedule, gateway and model; latency percentiles per
lane; communication quality with the dead meters."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from openami.hes import job_queries, kpi
from openami.hes.jobstate import Lane
from openami.hes.schedule_store import schedules
from openami.security.errors import InvalidInput

from .support_jobs import make_device, make_meters, make_tenant, plan_reads, run

LJ = ZoneInfo("Europe/Ljubljana")
DAY = date(2026, 3, 28)  # the next day, 29 March, has 23 hours in Ljubljana
SLOT = datetime(2026, 3, 28, 0, 15, tzinfo=LJ)
TIMEOUT = "TimeoutError: no answer from the meter in 10 s"


def _schedule(engine: Engine, tenant_id: int, name: str) -> int:
    with engine.begin() as conn:
        return schedules.create(conn, tenant_id, {"name": name, "kind": "registers", "cron": "15 0 * * *"}).id


@pytest.fixture
def fleet(engine: Engine) -> dict[str, object]:
    """100 meters under a concentrator under GW-1 (model AM550), 10 straight under GW-2 (model E450)."""
    tenant = make_tenant(engine)
    gw1 = make_device(engine, tenant, "GW-1", "gateway")
    dc = make_device(engine, tenant, "DC-1", "concentrator", gw1)
    gw2 = make_device(engine, tenant, "GW-2", "gateway")
    return {
        "tenant": tenant,
        "am550": make_meters(engine, tenant, 100, model="AM550", device=dc),
        "e450": make_meters(engine, tenant, 10, model="E450", device=gw2, prefix="E"),
        "daily": _schedule(engine, tenant, "daily"),
        "evening": _schedule(engine, tenant, "evening"),
    }


def _ids(fleet: dict[str, object], name: str) -> list[int]:
    value = fleet[name]
    assert isinstance(value, list)
    return value


def _int(fleet: dict[str, object], name: str) -> int:
    value = fleet[name]
    assert isinstance(value, int)
    return value


def test_100_reads_with_3_failed_are_97_percent_under_the_98_percent_target(
    engine: Engine, fleet: dict[str, object]
) -> None:
    tenant = _int(fleet, "tenant")
    jobs = plan_reads(engine, tenant, _ids(fleet, "am550"), SLOT, schedule_id=_int(fleet, "daily"))
    for n, job_id in enumerate(jobs):
        attempts: list[str | None] = [TIMEOUT] * 3 if n < 3 else [None]
        run(engine, job_id, SLOT, attempts)
    result = kpi.read_success(engine, tenant, kpi.Period(DAY, DAY, "Europe/Ljubljana"))
    assert result.target == kpi.CONTRACT_TARGET == 0.98
    assert [(r.key, r.planned, r.done, r.failed, r.open) for r in result.rows] == [
        ("2026-03-28", 100, 97, 3, 0)
    ]
    assert result.total.success_rate == pytest.approx(0.97)
    assert result.total.meets_target is False


def test_days_are_local_days_also_the_23_hour_one(engine: Engine, fleet: dict[str, object]) -> None:
    tenant, meters = _int(fleet, "tenant"), _ids(fleet, "e450")
    # 23:30 local on the 28th is 22:30 UTC; on the 29th (summer time from 02:00) 21:30 UTC.
    late_28 = datetime(2026, 3, 28, 23, 30, tzinfo=LJ)
    late_29 = datetime(2026, 3, 29, 23, 30, tzinfo=LJ)
    early_30 = datetime(2026, 3, 30, 0, 0, tzinfo=LJ)
    for job_id in plan_reads(engine, tenant, meters[:4], late_28):
        run(engine, job_id, late_28, [None])
    for job_id in plan_reads(engine, tenant, meters[:6], late_29)[:5]:
        run(engine, job_id, late_29, [None])  # one left open
    plan_reads(engine, tenant, meters[:2], early_30)
    result = kpi.read_success(engine, tenant, kpi.Period(DAY, date(2026, 3, 30), "Europe/Ljubljana"))
    by_day = {r.key: (r.planned, r.done, r.open) for r in result.rows}
    assert by_day == {"2026-03-28": (4, 4, 0), "2026-03-29": (6, 5, 1), "2026-03-30": (2, 0, 2)}
    assert result.total.planned == 12 and result.total.done == 9
    in_utc = kpi.read_success(engine, tenant, kpi.Period(DAY, DAY, "UTC"))
    assert in_utc.total.planned == 4  # 22:30 UTC on the 28th; 21:30 UTC on the 29th is not in it


def test_cancelled_reads_leave_the_rate_and_empty_days_are_shown(
    engine: Engine, fleet: dict[str, object]
) -> None:
    tenant = _int(fleet, "tenant")
    jobs = plan_reads(engine, tenant, _ids(fleet, "e450"), SLOT)
    for job_id in jobs[:8]:
        run(engine, job_id, SLOT, [None])
    for job_id in jobs[8:]:
        job_queries.cancel(engine, tenant, job_id, SLOT)
    result = kpi.read_success(engine, tenant, kpi.Period(DAY - timedelta(days=1), DAY, "Europe/Ljubljana"))
    empty, day = result.rows
    assert (empty.key, empty.planned, empty.success_rate, empty.meets_target) == ("2026-03-27", 0, None, None)
    assert (day.planned, day.done, day.cancelled, day.success_rate, day.meets_target) == (10, 8, 2, 1.0, True)


def test_success_by_schedule_gateway_and_model(engine: Engine, fleet: dict[str, object]) -> None:
    tenant, am550, e450 = _int(fleet, "tenant"), _ids(fleet, "am550"), _ids(fleet, "e450")
    for n, job_id in enumerate(plan_reads(engine, tenant, am550, SLOT, schedule_id=_int(fleet, "daily"))):
        run(engine, job_id, SLOT, [TIMEOUT] if n % 25 == 0 else [None])  # 4 of 100 fail
    for n, job_id in enumerate(plan_reads(engine, tenant, e450, SLOT, schedule_id=_int(fleet, "evening"))):
        run(engine, job_id, SLOT, [TIMEOUT] if n < 5 else [None])  # 5 of 10 fail
    catch_up = plan_reads(engine, tenant, e450[:1], SLOT + timedelta(hours=1), lane=Lane.CATCH_UP)
    run(engine, catch_up[0], SLOT + timedelta(hours=1), [None])
    period = kpi.Period(DAY, DAY, "Europe/Ljubljana")

    def table(by: kpi.Grouping) -> dict[str | None, tuple[int, int, int]]:
        rows = kpi.read_success(engine, tenant, period, by=by).rows
        return {r.key: (r.planned, r.done, r.failed) for r in rows}

    assert table("schedule") == {"daily": (100, 96, 4), "evening": (10, 5, 5), None: (1, 1, 0)}
    assert table("gateway") == {"GW-1": (100, 96, 4), "GW-2": (11, 6, 5)}  # GW-1 through DC-1
    assert table("model") == {"AM550": (100, 96, 4), "E450": (11, 6, 5)}
    rows = kpi.read_success(engine, tenant, period, by="gateway").rows
    assert [(r.success_rate, r.meets_target) for r in rows] == [(0.96, False), (pytest.approx(6 / 11), False)]


def test_latency_percentiles_per_lane(engine: Engine, fleet: dict[str, object]) -> None:
    tenant, am550 = _int(fleet, "tenant"), _ids(fleet, "am550")
    for n, job_id in enumerate(plan_reads(engine, tenant, am550, SLOT)):
        run(engine, job_id, SLOT + timedelta(minutes=n), [None])  # finished n + 1 minutes after the slot
    now = datetime.now(UTC).replace(microsecond=0)
    asked = job_queries.submit_read(engine, tenant, am550[0], now)
    run(engine, asked, now + timedelta(seconds=30), [None])  # about 90 s after the request
    today = now.astimezone(LJ).date()
    scheduled = kpi.latency(engine, tenant, kpi.Period(DAY, DAY, "Europe/Ljubljana")).lanes
    assert [(lane.lane_name, lane.reads) for lane in scheduled] == [("scheduled", 100)]
    (lane,) = scheduled
    # 100 reads finished 1 to 100 minutes after the slot: nearest-rank p50 is the 50th, p95 the 95th.
    assert [lane.p50_s, lane.p95_s, lane.max_s] == pytest.approx([3000, 5700, 6000], abs=0.1)
    assert lane.mean_s == pytest.approx(60 * 50.5, abs=0.1)
    (on_demand,) = kpi.latency(
        engine, tenant, kpi.Period(today - timedelta(days=1), today + timedelta(days=1), "Europe/Ljubljana")
    ).lanes
    assert on_demand.lane == Lane.ON_DEMAND and on_demand.reads == 1
    assert 89 <= on_demand.max_s <= 92  # created_at is the database's clock, to the second on SQLite


def test_communication_quality_and_dead_meters(engine: Engine, fleet: dict[str, object]) -> None:
    tenant, am550, e450 = _int(fleet, "tenant"), _ids(fleet, "am550"), _ids(fleet, "e450")
    for n, job_id in enumerate(plan_reads(engine, tenant, am550, SLOT)):
        if n < 10:
            attempts: list[str | None] = [TIMEOUT, None]  # worked on the second attempt
        elif n < 12:
            attempts = [TIMEOUT, "ConnectionRefusedError: [Errno 111] refused"]
        else:
            attempts = [None]
        run(engine, job_id, SLOT, attempts)
    # E-0000 fails both days (dead); E-0001 fails one day and works the other (not dead).
    later = SLOT + timedelta(hours=12)
    for slot in (SLOT, later):
        first, second = plan_reads(engine, tenant, e450[:2], slot)
        run(engine, first, slot, [TIMEOUT, TIMEOUT])
        run(engine, second, slot, [None] if slot == later else [TIMEOUT])
    result = kpi.communication(engine, tenant, kpi.Period(DAY, DAY, "Europe/Ljubljana"))
    assert (result.reads_done, result.reads_failed) == (99, 5)
    assert result.attempts_per_success == pytest.approx((88 + 10 * 2 + 1) / 99, abs=1e-6)
    assert result.retry_rate == pytest.approx((10 + 2 + 2) / 104, abs=1e-6)
    kinds = {e.kind: e.failed for e in result.errors}
    assert kinds == {"TimeoutError": 3, "ConnectionRefusedError": 2}
    dead = {m.serial: m for m in result.dead_meters}
    assert result.dead_meter_count == 3 and set(dead) == {"E-0000", "M-0010", "M-0011"}
    assert dead["E-0000"].failed == 2 and dead["E-0000"].model == "E450"
    assert dead["E-0000"].last_error == TIMEOUT
    assert (
        kpi.communication(engine, tenant, kpi.Period(DAY, DAY, "UTC"), dead_limit=1).dead_meters[0].serial
        == "E-0000"
    )


def test_periods_are_checked_and_default_to_the_last_week(engine: Engine) -> None:
    tenant = make_tenant(engine)
    sunday = DAY + timedelta(days=1)
    now = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # still Saturday in UTC, Sunday in Ljubljana
    week = kpi.period(engine, tenant, None, None, now=now)
    assert (week.first, week.last, week.timezone) == (DAY - timedelta(days=5), sunday, "Europe/Ljubljana")
    edges = week.edges()
    assert len(edges) == 8 and edges[7] - edges[6] == timedelta(hours=23)
    assert kpi.period(engine, tenant, DAY, None, now=now).last == DAY + timedelta(days=6)
    with pytest.raises(InvalidInput, match="before it starts"):
        kpi.period(engine, tenant, DAY, DAY - timedelta(days=1), now=now)
    with pytest.raises(InvalidInput, match="at most 366 days"):
        kpi.period(engine, tenant, DAY - timedelta(days=400), DAY, now=now)
