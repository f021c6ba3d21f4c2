"""The planner on SQLite and PostgreSQL: cron slots in the schedule's zone (across DST changes) become
one job per meter and slot, idempotently; meter groups select by column and by gateway ancestry;
deadlines follow the window; missed slots are not read late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select, update

from openami.hes.calendar import Cron
from openami.hes.jobstate import Lane
from openami.hes.planner import InvalidFilter, plan_schedules, validate_filter
from openami.security.errors import InvalidInput
from openami.store.schema import job, schedule
from tests.hes.planning_rows import make_devices, make_meters, make_schedule, make_tenant

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)


def _jobs(engine: Engine, schedule_id: int | None = None) -> list[dict[str, object]]:
    query = select(job).order_by(job.c.scheduled_for, job.c.target_id)
    if schedule_id is not None:
        query = query.where(job.c.schedule_id == schedule_id)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def _schedule_row(engine: Engine, schedule_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(conn.execute(select(schedule).where(schedule.c.id == schedule_id)).one()._mapping)


def _local_midnight(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=BERLIN).astimezone(UTC)


# -- meter groups --------------------------------------------------------------------------------------


def test_a_filter_is_cleaned_and_every_unknown_or_malformed_part_refused() -> None:
    assert validate_filter(None) == {}
    assert validate_filter({}) == {}
    assert validate_filter({"protocols": ["dlms", "dlms", "mbus"], "meter_ids": [3, 1, 3]}) == {
        "protocols": ["dlms", "mbus"],
        "meter_ids": [3, 1],
    }
    for bad in (
        {"region": ["north"]},
        {"protocols": "dlms"},
        {"protocols": []},
        {"media": ["steam"]},
        {"meter_ids": ["5"]},
        {"meter_ids": [0]},
        {"gateways": [""]},
        ["dlms"],
    ):
        with pytest.raises(InvalidFilter) as raised:
            validate_filter(bad)
        assert isinstance(raised.value, InvalidInput)
    with pytest.raises(InvalidFilter, match="known keys: protocols, models, media, gateways, meter_ids"):
        validate_filter({"region": ["north"]})


def test_groups_select_by_column_and_by_gateway_ancestry(engine: Engine) -> None:
    tenant = make_tenant(engine, timezone="UTC")
    other = make_tenant(engine, "other")
    ids = make_devices(
        engine,
        tenant,
        [
            ("GW-1", "gateway", None, None),
            ("C-1", "concentrator", "GW-1", None),
            ("MD-1", "modem", "C-1", None),
            ("GW-2", "gateway", None, None),
        ],
    )
    under_modem = make_meters(engine, tenant, 2, prefix="A", device=ids["MD-1"])
    under_gw1 = make_meters(
        engine, tenant, 1, prefix="B", device=ids["GW-1"], protocol="mbus", medium="water"
    )
    under_gw2 = make_meters(engine, tenant, 2, prefix="C", device=ids["GW-2"], model="E450")
    make_meters(engine, tenant, 1, prefix="R", device=ids["GW-1"], status="removed")
    make_meters(engine, other, 3, prefix="O")
    cases = {
        "all": ({}, under_modem + under_gw1 + under_gw2),
        "gw1": ({"gateways": ["GW-1"]}, under_modem + under_gw1),
        "c1": ({"gateways": ["C-1"]}, under_modem),
        "gw2-or-c1": ({"gateways": ["GW-2", "C-1"]}, under_modem + under_gw2),
        "mbus": ({"protocols": ["mbus"]}, under_gw1),
        "water": ({"media": ["water"]}, under_gw1),
        "e450": ({"models": ["E450"]}, under_gw2),
        "ids-and-gw1": ({"meter_ids": [under_modem[0], under_gw2[0]], "gateways": ["GW-1"]}, under_modem[:1]),
    }
    now = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    schedules = {
        name: make_schedule(engine, tenant, name, "registers", "0 11 * * *", target_filter=target)
        for name, (target, _) in cases.items()
    }
    report = plan_schedules(engine, now, HOUR)
    assert report.problems == []
    for name, (_, expected) in cases.items():
        planned = _jobs(engine, schedules[name])
        assert sorted(row["target_id"] for row in planned) == sorted(expected), name
    paths = {row["target_id"]: row["path"] for row in _jobs(engine, schedules["all"])}
    assert {paths[m] for m in under_modem + under_gw1} == {"gateway:GW-1"}
    assert {paths[m] for m in under_gw2} == {"gateway:GW-2"}


# -- slots, jobs and their deadlines ------------------------------------------------------------------


def test_each_slot_and_meter_becomes_one_job_with_its_window_as_deadline(engine: Engine) -> None:
    tenant = make_tenant(engine)
    meters = make_meters(engine, tenant, 3)
    sid = make_schedule(
        engine,
        tenant,
        "profiles",
        "load_profile",
        "*/15 * * * *",
        window_s=600,
        lane=int(Lane.SCHEDULED),
        max_attempts=5,
        params={"profile": "1.0.99.1.0.255", "what": "overridden"},
    )
    now = datetime(2026, 12, 1, 8, 0, 5, tzinfo=UTC)
    report = plan_schedules(engine, now, HOUR)
    slots = list(Cron.parse("*/15 * * * *").between(now, now + HOUR, BERLIN))
    assert (report.schedules, report.slots, report.meters) == (1, len(slots), 3)
    assert report.jobs == len(slots) * len(meters) and report.duplicates == 0
    planned = _jobs(engine, sid)
    assert [(row["scheduled_for"], row["target_id"]) for row in planned] == [
        (slot, meter_id) for slot in slots for meter_id in meters
    ]
    for row in planned:
        slot = row["scheduled_for"]
        assert isinstance(slot, datetime)
        assert row["not_before"] == slot
        assert row["deadline"] == slot + timedelta(seconds=600)
        assert row["kind"] == "read" and row["target_type"] == "meter" and row["state"] == "planned"
        assert row["params"] == {"profile": "1.0.99.1.0.255", "what": "load_profile"}
        assert (row["lane"], row["max_attempts"], row["path"]) == (Lane.SCHEDULED, 5, None)
        assert row["dedup_key"] == f"s{sid}:m{row['target_id']}:{slot:%Y%m%dT%H%M%SZ}"
    stored = _schedule_row(engine, sid)
    assert stored["planned_until"] == now + HOUR
    assert stored["next_run_at"] == slots[0]


def test_replanning_after_a_crash_or_by_a_second_planner_adds_nothing(engine: Engine) -> None:
    tenant = make_tenant(engine)
    make_meters(engine, tenant, 40)
    sid = make_schedule(engine, tenant, "hourly", "registers", "@hourly")
    now = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    first = plan_schedules(engine, now, 3 * HOUR)
    assert first.jobs == 3 * 40
    again = plan_schedules(engine, now, 3 * HOUR)  # planned_until moved: nothing left to plan
    assert (again.slots, again.jobs, again.duplicates) == (0, 0, 0)
    with engine.begin() as conn:  # the crash: jobs in, planned_until not moved
        conn.execute(update(schedule).where(schedule.c.id == sid).values(planned_until=None))
    replay = plan_schedules(engine, now, 3 * HOUR)
    assert (replay.jobs, replay.duplicates) == (0, 3 * 40)
    later = plan_schedules(engine, now + HOUR, 3 * HOUR)  # the horizon moves on by one slot
    assert (later.slots, later.jobs) == (1, 40)
    assert len(_jobs(engine, sid)) == 4 * 40
    with engine.begin() as conn:  # a deposed planner writing an older horizon does not move it back
        conn.execute(update(schedule).where(schedule.c.id == sid).values(planned_until=now + 4 * HOUR))
    plan_schedules(engine, now, HOUR)
    assert _schedule_row(engine, sid)["planned_until"] == now + 4 * HOUR


@pytest.mark.parametrize(
    ("day", "hours"),
    [((2026, 3, 29), 23), ((2026, 10, 25), 25), ((2026, 11, 2), 24)],
    ids=["spring", "autumn", "plain"],
)
def test_slots_follow_the_schedule_zone_across_dst_changes(
    engine: Engine, day: tuple[int, int, int], hours: int
) -> None:
    tenant = make_tenant(engine, timezone="UTC")  # the schedule's own zone wins over the tenant's
    (meter_id,) = make_meters(engine, tenant, 1)
    start = _local_midnight(*day)
    end = _local_midnight(*(datetime(*day) + timedelta(days=1)).timetuple()[:3])
    assert end - start == timedelta(hours=hours)
    hourly = make_schedule(engine, tenant, "hourly", "registers", "0 * * * *", timezone="Europe/Berlin")
    daily = make_schedule(engine, tenant, "daily", "registers", "0 0 * * *", timezone="Europe/Berlin")
    with engine.begin() as conn:
        conn.execute(update(schedule).values(planned_until=start - timedelta(seconds=1)))
    plan_schedules(engine, start, end - start - timedelta(seconds=1))  # the local day, no more
    hourly_slots = [row["scheduled_for"] for row in _jobs(engine, hourly)]
    # every local hour fires once: the skipped spring hour not at all, the repeated autumn hour once
    assert len(hourly_slots) == 24 - (hours == 23) and len(set(hourly_slots)) == len(hourly_slots)
    assert [slot.astimezone(BERLIN).hour for slot in hourly_slots] == sorted(
        {slot.astimezone(BERLIN).hour for slot in hourly_slots}
    )
    assert [row["scheduled_for"] for row in _jobs(engine, daily)] == [start]
    assert all(row["target_id"] == meter_id for row in _jobs(engine))


def test_a_null_zone_reads_the_cron_in_the_tenants_zone(engine: Engine) -> None:
    tenant = make_tenant(engine, timezone="America/New_York")
    make_meters(engine, tenant, 1)
    sid = make_schedule(engine, tenant, "billing", "registers", "@midnight")
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    plan_schedules(engine, now, timedelta(days=1))
    (row,) = _jobs(engine, sid)
    assert row["scheduled_for"] == datetime(2026, 12, 2, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)


def test_slots_missed_while_no_planner_ran_are_left_to_catch_up(engine: Engine) -> None:
    tenant = make_tenant(engine)
    make_meters(engine, tenant, 2)
    now = datetime(2026, 12, 4, 9, 40, tzinfo=UTC)
    sid = make_schedule(
        engine,
        tenant,
        "hourly",
        "load_profile",
        "@hourly",
        window_s=7200,
        planned_until=now - timedelta(days=3),
    )
    report = plan_schedules(engine, now, HOUR)
    slots = sorted({row["scheduled_for"] for row in _jobs(engine, sid)})
    assert slots == [now.replace(minute=0) - HOUR, now.replace(minute=0), now.replace(minute=0) + HOUR]
    assert all(isinstance(slot, datetime) and slot + timedelta(seconds=7200) > now for slot in slots)
    assert report.missed_slots == 3 * 24 - 2  # 72 hourly slots in three days, the last two still in time


def test_a_broken_or_disabled_schedule_does_not_stop_the_others(engine: Engine) -> None:
    tenant = make_tenant(engine)
    make_meters(engine, tenant, 2)
    broken = make_schedule(engine, tenant, "broken", "registers", "61 * * * *")
    odd = make_schedule(engine, tenant, "odd", "firmware", "@hourly")
    filtered = make_schedule(
        engine, tenant, "filtered", "registers", "@hourly", target_filter={"zone": ["x"]}
    )
    off = make_schedule(engine, tenant, "off", "registers", "@hourly", enabled=False)
    good = make_schedule(engine, tenant, "good", "registers", "@hourly")
    report = plan_schedules(engine, datetime(2026, 12, 1, 8, 30, tzinfo=UTC), HOUR)
    assert report.schedules == 1 and report.jobs == 2
    assert [problem.split(":")[0] for problem in report.problems] == [
        f"schedule {broken}",
        f"schedule {odd}",
        f"schedule {filtered}",
    ]
    assert {row["schedule_id"] for row in _jobs(engine)} == {good}
    assert _schedule_row(engine, off)["planned_until"] is None
