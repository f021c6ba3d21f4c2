"""Job rows made the way workers make them (plan, claim, retry, finish through ``job_store``), for the
KPI and job query tests, on whatever database the ``engine`` fixture gives."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from openami.hes import job_store
from openami.hes.job_store import Job, NewJob
from openami.hes.jobstate import Lane, State
from openami.store.repositories import comm_devices, meters, tenants
from openami.store.schema import job

LEASE = timedelta(minutes=5)


def make_tenant(engine: Engine, slug: str = "acme", timezone: str = "Europe/Ljubljana") -> int:
    with engine.begin() as conn:
        return tenants.create(conn, {"slug": slug, "name": slug.title(), "timezone": timezone}).id


def make_meters(
    engine: Engine, tenant_id: int, count: int, *, model: str, device: int | None, prefix: str = "M"
) -> list[int]:
    with engine.begin() as conn:
        return [
            meters.create(
                conn,
                tenant_id,
                {
                    "serial": f"{prefix}-{n:04d}",
                    "model": model,
                    "medium": "electricity",
                    "protocol": "dlms",
                    "comm_device_id": device,
                },
            ).id
            for n in range(count)
        ]


def make_device(engine: Engine, tenant_id: int, ident: str, kind: str, parent: int | None = None) -> int:
    with engine.begin() as conn:
        values = {"ident": ident, "kind": kind, **({"parent_id": parent} if parent else {})}
        return comm_devices.create(conn, tenant_id, values).id


def plan_reads(
    engine: Engine,
    tenant_id: int,
    meter_ids: Sequence[int],
    slot: datetime,
    *,
    schedule_id: int | None = None,
    lane: Lane = Lane.SCHEDULED,
) -> list[int]:
    """One queued read per meter for ``slot``; their ids in meter order."""
    jobs = [
        NewJob(
            tenant_id,
            "read",
            "meter",
            meter_id,
            params={"what": "registers"},
            lane=lane,
            scheduled_for=slot,
            not_before=slot,
            dedup_key=f"s{schedule_id}:{meter_id}:{slot.isoformat()}",
            schedule_id=schedule_id,
        )
        for meter_id in meter_ids
    ]
    job_store.plan(engine, jobs, state=State.QUEUED)
    keys = [j.dedup_key for j in jobs]
    with engine.connect() as conn:
        found = dict(conn.execute(select(job.c.dedup_key, job.c.id).where(job.c.dedup_key.in_(keys))).all())
    return [found[key] for key in keys]


def claim(engine: Engine, job_id: int, now: datetime) -> Job:
    taken = job_store.claim(engine, job_id, "w1", now, LEASE)
    assert isinstance(taken, Job), taken
    return taken


def run(engine: Engine, job_id: int, start: datetime, attempts: Sequence[str | None]) -> datetime:
    """Run the job's attempts one minute apart: None is a success, a text an error (the last one fails
    the job, earlier ones are retried). Returns when it finished."""
    now = start
    for number, error in enumerate(attempts, 1):
        taken = claim(engine, job_id, now)
        now += timedelta(minutes=1)
        if error is None:
            assert job_store.finish(engine, taken, now)
        elif number == len(attempts):
            assert job_store.finish(engine, taken, now, state=State.FAILED, outcome="no_answer", error=error)
        else:
            assert job_store.retry(engine, taken, now, error)
    return now
