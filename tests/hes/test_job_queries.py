"""Operators' side of the job table, on SQLite and PostgreSQL: lists newest first with filters and
cursors, one tenant only; cancel before start only; retry of failed jobs with a fresh budget; on-demand
reads made once per double click."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from openami.hes import job_queries, job_store
from openami.hes.job_queries import JobMoved, JobRunning
from openami.hes.jobstate import Lane, State
from openami.security.errors import InvalidInput
from openami.store.errors import NotFound
from openami.store.repositories import Scope

from .support_jobs import claim, make_device, make_meters, make_tenant, plan_reads, run

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def two(engine: Engine) -> tuple[int, int, list[int]]:
    """Tenants A and B; A has 5 meters under a concentrator, with one queued read each."""
    a, b = make_tenant(engine, "acme"), make_tenant(engine, "beta")
    dc = make_device(engine, a, "DC-7", "concentrator")
    meter_ids = make_meters(engine, a, 5, model="AM550", device=dc)
    return a, b, meter_ids


def test_lists_are_newest_first_filtered_paged_and_per_tenant(
    engine: Engine, two: tuple[int, int, list[int]]
) -> None:
    a, b, meter_ids = two
    reads = plan_reads(engine, a, meter_ids, T0)
    run(engine, reads[0], T0, [None])
    everything = job_queries.list_jobs(engine, a)
    assert [j.id for j in everything] == sorted(reads, reverse=True)
    first = job_queries.list_jobs(engine, a, limit=2)
    rest = job_queries.list_jobs(engine, a, limit=10, cursor=first[-1].id)
    assert [j.id for j in first + rest] == [j.id for j in everything]
    assert [j.id for j in job_queries.list_jobs(engine, a, state=State.DONE)] == [reads[0]]
    assert [j.id for j in job_queries.list_jobs(engine, a, target_id=meter_ids[2])] == [reads[2]]
    assert job_queries.list_jobs(engine, a, kind="command") == []
    assert job_queries.list_jobs(engine, a, since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert job_queries.list_jobs(engine, b) == []
    done = job_queries.get_job(engine, a, reads[0])
    assert (done.state, done.attempts, done.outcome, done.finished_at) == (
        "done",
        1,
        "done",
        T0 + timedelta(minutes=1),
    )
    with pytest.raises(NotFound):
        job_queries.get_job(engine, b, reads[0])


def test_cancel_only_before_the_job_starts(engine: Engine, two: tuple[int, int, list[int]]) -> None:
    a, b, meter_ids = two
    queued, running, finished = plan_reads(engine, a, meter_ids[:3], T0)
    cancelled = job_queries.cancel(engine, a, queued, T0)
    assert (cancelled.state, cancelled.outcome, cancelled.finished_at) == ("cancelled", "cancelled", T0)
    assert job_store.claim(engine, queued, "w1", T0, timedelta(minutes=1)) is None  # no worker takes it
    claim(engine, running, T0)
    with pytest.raises(JobRunning, match="is running"):
        job_queries.cancel(engine, a, running, T0)
    run(engine, finished, T0, [None])
    with pytest.raises(JobMoved, match="a done job cannot become cancelled"):
        job_queries.cancel(engine, a, finished, T0)
    with pytest.raises(NotFound):
        job_queries.cancel(engine, b, running, T0)
    assert job_queries.get_job(engine, a, running).state == "running"


def test_retry_requeues_a_failed_job_with_a_fresh_budget(
    engine: Engine, two: tuple[int, int, list[int]]
) -> None:
    a, _, meter_ids = two
    failed, done = plan_reads(engine, a, meter_ids[:2], T0)
    run(engine, failed, T0, ["TimeoutError: silent", "TimeoutError: silent", "TimeoutError: silent"])
    run(engine, done, T0, [None])
    later = T0 + timedelta(hours=2)
    again = job_queries.requeue(engine, a, failed, later)
    assert (again.state, again.attempts, again.max_attempts) == ("queued", 3, 3 + job_queries.RETRY_BUDGET)
    assert (again.not_before, again.finished_at, again.outcome, again.deadline) == (later, None, None, None)
    taken = claim(engine, failed, later)
    assert taken.attempt == 4  # every attempt stays counted
    with pytest.raises(JobRunning):
        job_queries.requeue(engine, a, failed, later)
    assert job_store.finish(engine, taken, later + timedelta(minutes=1))
    with pytest.raises(JobMoved, match="only a failed job"):
        job_queries.requeue(engine, a, done, later)


def test_on_demand_read_is_queued_in_its_lane_once_per_minute(
    engine: Engine, two: tuple[int, int, list[int]]
) -> None:
    a, b, meter_ids = two
    now = T0 + timedelta(seconds=10)
    first = job_queries.submit_read(engine, a, meter_ids[0], now, user_id=None)
    assert job_queries.submit_read(engine, a, meter_ids[0], now + timedelta(seconds=20)) == first
    record = job_queries.get_job(engine, a, first)
    assert (record.kind, record.state, record.lane, record.params) == (
        "read",
        "queued",
        Lane.ON_DEMAND,
        {"what": "registers"},
    )
    assert (record.target_type, record.target_id, record.path) == ("meter", meter_ids[0], "concentrator:DC-7")
    assert record.dedup_key == f"read:{meter_ids[0]}:registers:2026-12-01T06:00"
    other = job_queries.submit_read(engine, a, meter_ids[0], now, what="load_profile")
    next_minute = job_queries.submit_read(engine, a, meter_ids[0], now + timedelta(minutes=1))
    assert len({first, other, next_minute}) == 3
    assert job_store.queued(engine, now + timedelta(minutes=1))[0].lane == Lane.ON_DEMAND
    with pytest.raises(InvalidInput, match="unknown read"):
        job_queries.submit_read(engine, a, meter_ids[0], now, what="everything")
    with pytest.raises(NotFound):
        job_queries.submit_read(engine, b, meter_ids[0], now)
    with pytest.raises(NotFound):  # a customer's scope that does not hold the meter
        job_queries.submit_read(engine, a, meter_ids[0], now, scope=Scope(a, own_customer_only=True))
