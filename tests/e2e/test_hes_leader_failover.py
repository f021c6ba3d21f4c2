"""The scheduler leader is killed; a standby takes over within a bounded time and plans on, with every
slot of every meter planned exactly once (acceptance of issue 6)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from openami.hes.calendar import Cron, zone
from openami.store.engine import make_engine
from openami.store.schema import job
from tests.conftest import postgres_schema_url
from tests.e2e.hes_processes import LEADER_LINE, wait_for, workers
from tests.hes.planning_rows import make_meters, make_schedule, make_tenant

pytestmark = [pytest.mark.timeout(240), pytest.mark.postgres]

METERS = 50
TAKEOVER_BOUND_S = 10.0


def _slots(url: str) -> dict[int, list[datetime]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(job.c.target_id, job.c.scheduled_for)).all()
    finally:
        engine.dispose()
    found: dict[int, list[datetime]] = defaultdict(list)
    for meter_id, slot in rows:
        found[meter_id].append(slot)
    return found


def test_a_killed_leader_is_replaced_and_no_slot_is_planned_twice(tmp_path: Path, nats_url: str) -> None:
    with postgres_schema_url() as url:
        engine = make_engine(url)
        tenant_id = make_tenant(engine, "failover", "Europe/Berlin")
        make_meters(engine, tenant_id, METERS, protocol="modbus", model="SDM630")
        make_schedule(engine, tenant_id, "every minute", "registers", "* * * * *", window_s=600)
        engine.dispose()
        started = datetime.now(UTC)
        with workers(tmp_path, url, nats_url, hes_tick_s=0.2, hes_plan_horizon_s=60) as group:
            group.start("s1", "scheduler")
            wait_for(lambda: LEADER_LINE in group.log("s1"), 30, "the first scheduler to lead")
            group.start("s2", "scheduler")
            wait_for(lambda: "scheduler stands by" in group.log("s2"), 30, "the second scheduler to stand by")
            wait_for(lambda: len(_slots(url)) == METERS, 30, "the first plan")
            group.kill("s1")
            took = wait_for(lambda: LEADER_LINE in group.log("s2"), TAKEOVER_BOUND_S, "the standby to lead")
            # the new leader plans on: a slot beyond what the old one could have planned gets its jobs
            killed_at = datetime.now(UTC)
            wait_for(
                lambda: max(max(s) for s in _slots(url).values()) > killed_at + timedelta(seconds=60),
                100,
                "the new leader to plan the next slot",
            )
        assert took < TAKEOVER_BOUND_S
        slots = _slots(url)
        cron = Cron.parse("* * * * *")
        for meter_slots in slots.values():
            assert len(meter_slots) == len(set(meter_slots)), "a slot was planned twice"
            first, last = min(meter_slots), max(meter_slots)
            expected = cron.between(first - timedelta(seconds=1), last, zone("Europe/Berlin"))
            assert sorted(meter_slots) == list(expected), "a slot is missing"
        assert len(slots) == METERS
        assert min(min(s) for s in slots.values()) >= started - timedelta(minutes=1)
