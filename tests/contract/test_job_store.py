"""The job store's promises (ADR 0013), on SQLite and PostgreSQL alike: planning is idempotent, a job
is claimed by one worker only, every move is valid only for the attempt that claimed it, dead workers'
jobs come back, deadlines are kept, and a path's limit of running jobs holds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from openami.hes import job_store
from openami.hes.job_store import BUSY, Job, NewJob, Settlement
from openami.hes.jobstate import Lane, State
from openami.store.repositories.catalog import tenants
from openami.store.schema import job

T0 = datetime(2026, 12, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def _tenant(engine: Engine) -> int:
    with engine.begin() as conn:
        return tenants.create(conn, {"slug": "acme", "name": "Acme"}).id


def _reads(
    tenant_id: int, count: int, *, slot: datetime = T0, path: str | None = None, **extra: object
) -> list[NewJob]:
    return [
        NewJob(
            tenant_id,
            "read_profile",
            "meter",
            meter,
            params={"from": slot.isoformat()},
            scheduled_for=slot,
            not_before=slot,
            dedup_key=f"s1:{meter}:{slot.isoformat()}",
            path=path,
            **extra,  # type: ignore[arg-type]
        )
        for meter in range(1, count + 1)
    ]


def _states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(job.c.state)).all()
    found: dict[str, int] = {}
    for (state,) in rows:
        found[state] = found.get(state, 0) + 1
    return found


def _claimed(result: Job | str | None) -> Job:
    assert isinstance(result, Job), result
    return result


def test_planning_the_same_slots_twice_makes_each_job_once(engine: Engine) -> None:
    tenant = _tenant(engine)
    assert job_store.plan(engine, _reads(tenant, 1200)) == 1200
    assert job_store.plan(engine, _reads(tenant, 1300)) == 100  # only the new meters
    assert _states(engine) == {"planned": 1300}


def test_due_jobs_are_released_by_lane_and_only_once(engine: Engine) -> None:
    tenant = _tenant(engine)
    job_store.plan(engine, _reads(tenant, 3, slot=T0 + timedelta(hours=1)))
    job_store.plan(
        engine, [NewJob(tenant, "read_now", "meter", 9, lane=Lane.ON_DEMAND, not_before=T0, dedup_key="od")]
    )
    assert job_store.release_due(engine, T0 - timedelta(seconds=1)) == []
    first = job_store.release_due(engine, T0 + timedelta(hours=1))
    assert [j.lane for j in first] == [Lane.ON_DEMAND, Lane.SCHEDULED, Lane.SCHEDULED, Lane.SCHEDULED]
    assert all(j.state is State.QUEUED for j in first)
    assert job_store.release_due(engine, T0 + timedelta(hours=2)) == []
    assert {j.id for j in job_store.queued(engine, T0 + timedelta(hours=1))} == {j.id for j in first}


def test_a_job_is_claimed_once_and_moves_only_under_its_claim(engine: Engine) -> None:
    tenant = _tenant(engine)
    job_store.plan(engine, _reads(tenant, 1))
    (queued,) = job_store.release_due(engine, T0)
    mine = _claimed(job_store.claim(engine, queued.id, "w1", T0, LEASE))
    assert (mine.state, mine.attempt, mine.worker) == (State.RUNNING, 1, "w1")
    assert job_store.claim(engine, queued.id, "w2", T0, LEASE) is None  # a redelivered dispatch
    assert job_store.renew(engine, mine, T0 + 2 * LEASE)
    assert job_store.finish(engine, mine, T0 + timedelta(seconds=3))
    assert not job_store.finish(engine, mine, T0 + timedelta(seconds=4))  # done is done
    assert not job_store.retry(engine, mine, T0, "late")
    assert _states(engine) == {"done": 1}


def test_concurrent_claims_give_the_job_to_exactly_one_worker(engine: Engine) -> None:
    tenant = _tenant(engine)
    job_store.plan(engine, _reads(tenant, 20))
    due = job_store.release_due(engine, T0)
    winners: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        for item in due:
            result = job_store.claim(engine, item.id, name, T0, LEASE)
            if isinstance(result, Job):
                with lock:
                    winners.append((name, result.id))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job_id for _, job_id in winners) == sorted(item.id for item in due)


def test_a_retry_waits_for_its_backoff_and_counts_attempts(engine: Engine) -> None:
    tenant = _tenant(engine)
    job_store.plan(engine, _reads(tenant, 1))
    (queued,) = job_store.release_due(engine, T0)
    first = _claimed(job_store.claim(engine, queued.id, "w1", T0, LEASE))
    assert job_store.retry(engine, first, T0 + timedelta(minutes=2), "timeout")
    assert job_store.claim(engine, queued.id, "w1", T0 + timedelta(minutes=1), LEASE) is None  # backing off
    second = _claimed(job_store.claim(engine, queued.id, "w2", T0 + timedelta(minutes=2), LEASE))
    assert second.attempt == 2
    assert not job_store.finish(engine, first, T0)  # the first attempt's claim is gone
    assert job_store.finish(engine, second, T0, state=State.FAILED, outcome="unreachable", error="no answer")
    with engine.connect() as conn:
        row = conn.execute(select(job).where(job.c.id == queued.id)).one()
    assert (row.state, row.outcome, row.attempts, row.error) == ("failed", "unreachable", 2, "no answer")


def test_a_dead_workers_job_comes_back_and_fails_when_out_of_attempts(engine: Engine) -> None:
    tenant = _tenant(engine)
    job_store.plan(engine, _reads(tenant, 1, max_attempts=2))
    (queued,) = job_store.release_due(engine, T0)
    lost = _claimed(job_store.claim(engine, queued.id, "dead", T0, LEASE))
    assert job_store.sweep(engine, T0 + LEASE - timedelta(seconds=1)) == ([], [])  # lease still running
    requeued, failed = job_store.sweep(engine, T0 + LEASE + timedelta(seconds=1))
    assert ([j.id for j in requeued], failed) == ([queued.id], [])
    assert not job_store.finish(engine, lost, T0 + LEASE)  # the dead worker's late answer changes nothing
    again = _claimed(job_store.claim(engine, queued.id, "w2", T0 + LEASE + timedelta(seconds=2), LEASE))
    assert again.attempt == 2
    _, failed = job_store.sweep(engine, T0 + 3 * LEASE)
    assert [j.id for j in failed] == [queued.id]
    assert _states(engine) == {"failed": 1}


def test_a_job_past_its_deadline_is_failed_not_run(engine: Engine) -> None:
    tenant = _tenant(engine)
    job_store.plan(engine, _reads(tenant, 1, deadline=T0 + timedelta(minutes=10)))
    (queued,) = job_store.release_due(engine, T0)
    assert job_store.claim(engine, queued.id, "w1", T0 + timedelta(minutes=11), LEASE) is None
    with engine.connect() as conn:
        row = conn.execute(select(job).where(job.c.id == queued.id)).one()
    assert (row.state, row.outcome) == ("failed", "deadline")


def test_a_path_runs_at_most_its_limit_at_once(engine: Engine) -> None:
    tenant = _tenant(engine)
    job_store.plan(engine, _reads(tenant, 3, path="concentrator:7"))
    a, b, c = job_store.release_due(engine, T0)
    first = _claimed(job_store.claim(engine, a.id, "w1", T0, LEASE, path_limit=2))
    _claimed(job_store.claim(engine, b.id, "w2", T0, LEASE, path_limit=2))
    assert job_store.claim(engine, c.id, "w3", T0, LEASE, path_limit=2) == BUSY
    job_store.finish(engine, first, T0)
    assert isinstance(job_store.claim(engine, c.id, "w3", T0, LEASE, path_limit=2), Job)


def test_only_planned_or_queued_jobs_are_planned(engine: Engine) -> None:
    tenant = _tenant(engine)
    with pytest.raises(ValueError, match="planned or queued"):
        job_store.plan(engine, _reads(tenant, 1), state=State.RUNNING)


def _queued(engine: Engine, count: int, path: str) -> list[int]:
    job_store.plan(engine, _reads(_tenant(engine), count, path=path), state=State.QUEUED)
    with engine.connect() as conn:
        return list(conn.scalars(select(job.c.id).order_by(job.c.id)))


def test_a_group_is_one_session_on_its_path_and_settles_in_one_go(engine: Engine) -> None:
    ids = _queued(engine, 6, path="concentrator:C")
    first = job_store.claim_group(engine, ids[:3], "w1#1", T0, LEASE, path_limit=1)
    assert isinstance(first, list) and [j.id for j in first] == ids[:3]
    assert job_store.claim_group(engine, ids[3:], "w2#1", T0, LEASE, path_limit=1) == BUSY
    assert job_store.claim_group(engine, ids[:3], "w2#2", T0, LEASE) == []  # a redelivery: taken already
    later = T0 + timedelta(seconds=1)
    settled = job_store.settle_group(
        engine,
        [
            Settlement(first[0], State.DONE),
            Settlement(first[1], State.QUEUED, error="TimeoutError: no answer", not_before=later),
            Settlement(first[2], State.FAILED, outcome="unreadable", error="no register map"),
        ],
        later,
    )
    assert settled == set(ids[:3])
    assert job_store.settle_group(engine, [Settlement(first[0], State.DONE)], later) == set()  # only once
    second = job_store.claim_group(engine, ids[3:], "w2#3", later, LEASE, path_limit=1)
    assert isinstance(second, list) and len(second) == 3
    assert job_store.renew_group(engine, second, later + LEASE) == 3
    due = job_store.dispatchable(engine, later, stale=timedelta(minutes=5))
    assert [job_id for job_id, _, _ in due] == [ids[1]]  # the retried one, once
    assert job_store.dispatchable(engine, later, stale=timedelta(minutes=5)) == []


def test_a_path_opens_at_most_its_rate_of_sessions_per_second(engine: Engine) -> None:
    ids = _queued(engine, 3, path="port:h:1")
    assert isinstance(job_store.claim_group(engine, ids[:1], "w#1", T0, LEASE, path_rate=2), list)
    assert isinstance(job_store.claim_group(engine, ids[1:2], "w#2", T0, LEASE, path_rate=2), list)
    assert job_store.claim_group(engine, ids[2:], "w#3", T0, LEASE, path_rate=2) == BUSY
    assert isinstance(
        job_store.claim_group(engine, ids[2:], "w#3", T0 + timedelta(seconds=2), LEASE, path_rate=2), list
    )
