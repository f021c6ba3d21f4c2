"""Jobs as operators see them: lists and details, cancel, retry, and on-demand reads.

:mod:`openami.hes.job_store` holds the workers' side of the job table (plan, claim, finish, sweep);
this module is the people's side, for the API and the CLI. Every function is confined to one tenant: a
job id of another tenant is :class:`~openami.store.errors.NotFound`, exactly like a missing one.

The two operator moves follow the same rule as the workers' moves (ADR 0013): one conditional
``UPDATE ... WHERE id = ? AND state = ?``, so an operator racing a worker either wins or is told the
job moved meanwhile, never half-changes it.

- :func:`cancel` stops a job that has not started (planned or queued). A running job is left alone
  (:class:`JobRunning`): its worker is talking to the meter, and for a command the meter may already
  have acted; the operator waits for it to end.
- :func:`requeue` gives a failed job a new chance ("retry" in the API). It is deliberately outside the
  worker life cycle of :mod:`openami.hes.jobstate` (a failed job is final for workers): the job goes
  back to ``queued`` due now, without its old deadline (that is what failed it, often), with a fresh
  budget of :data:`RETRY_BUDGET` attempts *on top of* the attempts already made. ``attempts`` keeps
  counting every attempt ever made, so the communication KPIs still see the whole cost of the read.
- :func:`submit_read` plans an on-demand read in the on-demand lane, queued at once, on the meter's
  communication path (:mod:`openami.hes.paths`, so it is throttled with the scheduled reads). Its
  idempotency key holds the meter, what is read and the minute, so a double click (or a retried HTTP
  request) within the same minute makes one job and both callers get its id.

Blocking (SQLAlchemy): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, select, update

from openami.hes import job_store
from openami.hes.jobstate import IllegalMove, Lane, State, check_move
from openami.hes.paths import paths_for_meters
from openami.hes.planner import SCHEDULE_KINDS
from openami.security.errors import InvalidInput
from openami.store.errors import Conflict, NotFound
from openami.store.repositories import Scope, clamp_limit, meters
from openami.store.schema import job

__all__ = [
    "OPEN",
    "RETRY_BUDGET",
    "JobMoved",
    "JobRecord",
    "JobRunning",
    "cancel",
    "get_job",
    "list_jobs",
    "requeue",
    "submit_read",
]

RETRY_BUDGET: Final = 3
"""Attempts an operator's retry grants a failed job (the job table's default budget)."""
OPEN: Final = frozenset({State.PLANNED, State.QUEUED, State.RUNNING})
"""States of a job not finished yet."""


class JobMoved(Conflict):
    """The job is not in a state that allows the move (409 in the API)."""


class JobRunning(JobMoved):
    """The job runs now: a worker holds it, so it cannot be cancelled or retried until it ends."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job row with everything an operator may want to see (the workers' :class:`job_store.Job`
    leaves out the result and the bookkeeping)."""

    id: int
    tenant_id: int
    kind: str
    state: str
    lane: int
    target_type: str | None
    target_id: int | None
    params: dict[str, Any]
    scheduled_for: datetime | None
    not_before: datetime | None
    deadline: datetime | None
    dedup_key: str | None
    path: str | None
    schedule_id: int | None
    worker: str | None
    lease_until: datetime | None
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    max_attempts: int
    outcome: str | None
    error: str | None
    created_by: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> JobRecord:
        values = dict(row._mapping)
        values["params"] = dict(values["params"] or {})
        return cls(**values)


def list_jobs(
    engine: Engine,
    tenant_id: int,
    *,
    state: State | None = None,
    kind: str | None = None,
    target_id: int | None = None,
    schedule_id: int | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    cursor: int | None = None,
) -> list[JobRecord]:
    """One page of the tenant's jobs, newest first; ``cursor`` is the last id of the previous page,
    ``since`` keeps jobs created at or after it."""
    query = select(job).where(job.c.tenant_id == tenant_id)
    for column, value in (
        (job.c.state, None if state is None else state.value),
        (job.c.kind, kind),
        (job.c.target_id, target_id),
        (job.c.schedule_id, schedule_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(job.c.created_at >= since)
    if cursor is not None:
        query = query.where(job.c.id < cursor)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(job.c.id.desc()).limit(clamp_limit(limit))).all()
    return [JobRecord.of(row) for row in rows]


def get_job(engine: Engine, tenant_id: int, job_id: int) -> JobRecord:
    """The tenant's job ``job_id``; NotFound otherwise (also for another tenant's job)."""
    with engine.connect() as conn:
        row = conn.execute(select(job).where(job.c.id == job_id, job.c.tenant_id == tenant_id)).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return JobRecord.of(row)


Then = Callable[[Connection, JobRecord], None]
"""Called with the moved job inside the move's transaction (the API writes its audit entry there)."""


def _moved(
    engine: Engine, tenant_id: int, job_id: int, was: State, values: dict[str, Any], then: Then | None
) -> JobRecord:
    """Apply ``values`` if the job is still ``was``; JobMoved when a worker moved it meanwhile."""
    with engine.begin() as conn:
        row = conn.execute(
            update(job)
            .where(job.c.id == job_id, job.c.tenant_id == tenant_id, job.c.state == was.value)
            .values(**values)
            .returning(*job.c)
        ).first()
        if row is not None:
            record = JobRecord.of(row)
            if then is not None:
                then(conn, record)
            return record
    now = get_job(engine, tenant_id, job_id).state
    raise JobMoved(f"job {job_id} became {now} meanwhile; nothing was changed")


def cancel(
    engine: Engine, tenant_id: int, job_id: int, now: datetime, *, then: Then | None = None
) -> JobRecord:
    """Cancel a planned or queued job; :class:`JobRunning` for a running one, :class:`JobMoved` for a
    finished one."""
    current = State(get_job(engine, tenant_id, job_id).state)
    if current is State.RUNNING:
        raise JobRunning(f"job {job_id} is running; it can be cancelled only before it starts")
    try:
        check_move(current, State.CANCELLED)
    except IllegalMove as exc:
        raise JobMoved(f"job {job_id}: {exc}") from None
    values = {
        "state": State.CANCELLED.value,
        "outcome": "cancelled",
        "finished_at": now,
    }
    return _moved(engine, tenant_id, job_id, current, values, then)


def requeue(
    engine: Engine, tenant_id: int, job_id: int, now: datetime, *, then: Then | None = None
) -> JobRecord:
    """Queue a failed job again, due now, with :data:`RETRY_BUDGET` more attempts and no deadline;
    :class:`JobMoved` for a job that did not fail."""
    current = State(get_job(engine, tenant_id, job_id).state)
    if current is State.RUNNING:
        raise JobRunning(f"job {job_id} is running; only a failed job can be retried")
    if current is not State.FAILED:
        raise JobMoved(f"job {job_id} is {current}; only a failed job can be retried")
    values = {
        "state": State.QUEUED.value,
        "max_attempts": job.c.attempts + RETRY_BUDGET,
        "not_before": now,
        "deadline": None,
        "outcome": None,
        "finished_at": None,
        "dispatched_at": None,
    }
    return _moved(engine, tenant_id, job_id, current, values, then)


def read_key(meter_id: int, what: str, now: datetime) -> str:
    """The idempotency key of an on-demand read: one job per meter, register set and minute."""
    return f"read:{meter_id}:{what}:{now.strftime('%Y-%m-%dT%H:%M')}"


def submit_read(
    engine: Engine,
    tenant_id: int,
    meter_id: int,
    now: datetime,
    what: str = "registers",
    user_id: int | None = None,
    *,
    scope: Scope | None = None,
) -> int:
    """Queue an on-demand read of ``meter_id`` (NotFound outside ``scope``, the tenant by default) and
    return its job id; the same request within the same minute returns the same job."""
    if what not in SCHEDULE_KINDS:
        raise InvalidInput(f"unknown read {what!r}; one of {', '.join(sorted(SCHEDULE_KINDS))}")
    with engine.connect() as conn:
        meters.get(conn, scope or Scope(tenant_id), meter_id)
        path = paths_for_meters(conn, [meter_id]).get(meter_id)
    key = read_key(meter_id, what, now)
    new = job_store.NewJob(
        tenant_id,
        "read",
        "meter",
        meter_id,
        params={"what": what},
        lane=Lane.ON_DEMAND,
        not_before=now,
        dedup_key=key,
        path=path,
        created_by=user_id,
    )
    job_store.plan(engine, [new], state=State.QUEUED)
    with engine.connect() as conn:
        found = conn.scalar(select(job.c.id).where(job.c.tenant_id == tenant_id, job.c.dedup_key == key))
    if found is None:  # pragma: no cover - plan() inserted it or it was there
        raise NotFound(f"on-demand read {key} vanished")
    return int(found)
