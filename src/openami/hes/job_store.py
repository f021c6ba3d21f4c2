"""Jobs in the store: planning, dispatch, claims under a lease, results, and the sweep of the dead.

This is ADR 0013 in SQL. Every function is one short transaction and every state change is a
conditional update on ``(id, state, attempts)``, so whoever loses a race changes nothing and learns it
from the return value (False or None), never from a constraint error:

- :func:`plan` inserts jobs with "on conflict do nothing" on ``(tenant_id, dedup_key)``: planning the
  same slot twice (a restarted planner, two planners during a leader change) makes one job.
- :func:`release_due` moves planned jobs whose ``not_before`` has come to ``queued`` and returns them
  for dispatch; :func:`queued` lists queued jobs again (a dispatcher that died between the two).
- :func:`claim` takes a queued job for one worker: ``running``, ``attempts + 1``, a lease. It refuses
  (:data:`BUSY`) while the job's communication path already has its limit of running jobs, and fails a
  job whose deadline has passed rather than run it late.
- :func:`renew`, :func:`finish` and :func:`retry` are the running worker's moves, each only valid for
  the attempt it claimed.
- :func:`sweep` returns jobs whose lease ran out (a worker that died) to ``queued``, or fails them when
  no attempt is left.
- :func:`dispatchable` marks queued jobs that are due and not on the bus (never dispatched, or their
  dispatch went stale) as dispatched now, and returns them for the dispatcher.
- :func:`claim_group`, :func:`renew_group` and :func:`settle_group` do the same moves for the jobs of
  one dispatch (up to a few hundred jobs of one path) in one transaction each: at 100,000 reads a day
  the database sees a few thousand transactions, not a few hundred thousand.

Throttling counts sessions on a path at claim time: a group claimed together is one session (its
meters are read one after another over one connection), so the limit is on distinct claimers of running
jobs. On PostgreSQL the claim takes a transaction-level advisory lock on the path first, so concurrent
claims on one path are serialised; on SQLite the database's single writer does the same.

Blocking (SQLAlchemy): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import Connection, Engine, and_, func, or_, select, text, tuple_, update

from openami.hes.jobstate import Lane, State
from openami.store.repositories.base import dialect_insert
from openami.store.schema import job

__all__ = [
    "BUSY",
    "Job",
    "NewJob",
    "Settlement",
    "claim",
    "claim_group",
    "dispatchable",
    "finish",
    "plan",
    "queued",
    "release_due",
    "renew",
    "renew_group",
    "retry",
    "settle_group",
    "sweep",
]

BUSY: Final = "busy"
""":func:`claim`'s answer when the job's path is at its limit: try again later."""
_CHUNK: Final = 500
_PLAN_CHUNK: Final = 5000


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to plan: what (``kind``, target, ``params``), when (``not_before``, ``deadline``), how
    urgent (``lane``), through which path, and its idempotency key (planned jobs must have one)."""

    tenant_id: int
    kind: str
    target_type: str | None = None
    target_id: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    lane: Lane = Lane.SCHEDULED
    scheduled_for: datetime | None = None
    not_before: datetime | None = None
    deadline: datetime | None = None
    dedup_key: str | None = None
    path: str | None = None
    schedule_id: int | None = None
    max_attempts: int = 3
    created_by: int | None = None

    def row(self, state: State) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "kind": self.kind,
            "state": state.value,
            "lane": int(self.lane),
            "target_type": self.target_type,
            "target_id": self.target_id,
            "params": dict(self.params),
            "scheduled_for": self.scheduled_for,
            "not_before": self.not_before,
            "deadline": self.deadline,
            "dedup_key": self.dedup_key,
            "path": self.path,
            "schedule_id": self.schedule_id,
            "max_attempts": self.max_attempts,
            "created_by": self.created_by,
        }


@dataclass(frozen=True, slots=True)
class Job:
    """A job row as a worker sees it (``attempt``: the attempt this claim is, counting from 1)."""

    id: int
    tenant_id: int
    kind: str
    state: State
    lane: Lane
    target_type: str | None
    target_id: int | None
    params: dict[str, Any]
    scheduled_for: datetime | None
    not_before: datetime | None
    deadline: datetime | None
    path: str | None
    attempt: int
    max_attempts: int
    worker: str | None
    lease_until: datetime | None

    @classmethod
    def of(cls, row: Any) -> Job:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            kind=row.kind,
            state=State(row.state),
            lane=Lane(row.lane),
            target_type=row.target_type,
            target_id=row.target_id,
            params=dict(row.params or {}),
            scheduled_for=row.scheduled_for,
            not_before=row.not_before,
            deadline=row.deadline,
            path=row.path,
            attempt=row.attempts,
            max_attempts=row.max_attempts,
            worker=row.worker,
            lease_until=row.lease_until,
        )


def plan(engine: Engine, jobs: Sequence[NewJob], *, state: State = State.PLANNED) -> int:
    """Insert ``jobs`` (``planned``, or ``queued`` for on-demand work); a job whose ``dedup_key`` its
    tenant already has is left out. Returns how many were new."""
    if state not in (State.PLANNED, State.QUEUED):
        raise ValueError(f"jobs are planned or queued, not {state}")
    if not jobs:
        return 0
    inserted = 0
    with engine.begin() as conn:
        # One statement, executed for many rows: SQLAlchemy batches it ("insertmanyvalues") without
        # compiling a new multi-row statement per chunk, which dominated planning 100,000 jobs.
        statement = (
            dialect_insert(conn, job)
            .on_conflict_do_nothing(index_elements=["tenant_id", "dedup_key"])
            .returning(job.c.id)
        )
        for start in range(0, len(jobs), _PLAN_CHUNK):
            rows = [item.row(state) for item in jobs[start : start + _PLAN_CHUNK]]
            inserted += len(conn.execute(statement, rows).all())
    return inserted


def release_due(engine: Engine, now: datetime, *, limit: int = 10_000) -> list[Job]:
    """Planned jobs due by ``now`` become queued (most urgent lane and oldest first); returned for
    dispatch."""
    with engine.begin() as conn:
        ids = list(
            conn.scalars(
                select(job.c.id)
                .where(
                    job.c.state == State.PLANNED.value,
                    or_(job.c.not_before.is_(None), job.c.not_before <= now),
                )
                .order_by(job.c.lane, job.c.not_before, job.c.id)
                .limit(limit)
            )
        )
        if not ids:
            return []
        rows = conn.execute(
            update(job)
            .where(job.c.id.in_(ids), job.c.state == State.PLANNED.value)
            .values(state=State.QUEUED.value)
            .returning(*job.c)
        ).all()
    return sorted((Job.of(row) for row in rows), key=lambda j: (j.lane, j.id))


def queued(engine: Engine, now: datetime, *, limit: int = 10_000) -> list[Job]:
    """Queued jobs that may start by ``now`` (for a dispatcher catching up after a restart)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(job)
            .where(
                job.c.state == State.QUEUED.value, or_(job.c.not_before.is_(None), job.c.not_before <= now)
            )
            .order_by(job.c.lane, job.c.id)
            .limit(limit)
        ).all()
    return [Job.of(row) for row in rows]


def _lock_path(conn: Connection, path: str) -> None:
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def claim(
    engine: Engine,
    job_id: int,
    worker: str,
    now: datetime,
    lease: timedelta,
    *,
    path_limit: int | None = None,
) -> Job | Literal["busy"] | None:
    """Take job ``job_id`` for ``worker`` until ``now + lease``: the running :class:`Job`; :data:`BUSY`
    when its path already has ``path_limit`` sessions; None when it is not queued (taken, cancelled,
    finished: a redelivered dispatch), not due yet, or past its deadline (then failed)."""
    taken = claim_group(engine, [job_id], worker, now, lease, path_limit=path_limit)
    if taken == BUSY:
        return BUSY
    return taken[0] if taken else None


def claim_group(
    engine: Engine,
    job_ids: Sequence[int],
    worker: str,
    now: datetime,
    lease: timedelta,
    *,
    path_limit: int | None = None,
    path_rate: float | None = None,
) -> list[Job] | Literal["busy"]:
    """Take the jobs of one dispatch (one path) as one session of ``worker``: those still queued and due
    become running under a lease; those past their deadline fail. :data:`BUSY` (nothing taken) when the
    path already has ``path_limit`` sessions, or opened ``path_rate`` sessions in the last second.

    ``worker`` names the session and must be unique to this claim (the worker's name and a sequence
    number): it is what the limit counts, and what the later moves check."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(job.c.id, job.c.path, job.c.deadline).where(
                job.c.id.in_(job_ids),
                job.c.state == State.QUEUED.value,
                or_(job.c.not_before.is_(None), job.c.not_before <= now),
            )
        ).all()
        late = [row.id for row in rows if row.deadline is not None and row.deadline < now]
        if late:
            conn.execute(
                update(job)
                .where(job.c.id.in_(late), job.c.state == State.QUEUED.value)
                .values(
                    state=State.FAILED.value,
                    outcome="deadline",
                    error="not started before its deadline",
                    finished_at=now,
                )
            )
        ready = [row for row in rows if row.id not in set(late)]
        if not ready:
            return []
        for path in sorted({row.path for row in ready if row.path is not None}):
            if _path_full(conn, path, now, path_limit, path_rate):
                return BUSY
        taken = conn.execute(
            update(job)
            .where(job.c.id.in_([row.id for row in ready]), job.c.state == State.QUEUED.value)
            .values(
                state=State.RUNNING.value,
                attempts=job.c.attempts + 1,
                worker=worker,
                lease_until=now + lease,
                started_at=now,
            )
            .returning(*job.c)
        ).all()
    return sorted((Job.of(row) for row in taken), key=lambda j: j.id)


def _path_full(conn: Connection, path: str, now: datetime, limit: int | None, rate: float | None) -> bool:
    """Whether ``path`` has no room for one more session (the caller holds the path's lock)."""
    if limit is None and rate is None:
        return False
    _lock_path(conn, path)
    if limit is not None:
        sessions = conn.scalar(
            select(func.count(func.distinct(job.c.worker))).where(
                job.c.path == path, job.c.state == State.RUNNING.value
            )
        )
        if (sessions or 0) >= limit:
            return True
    if rate is not None:
        opened = conn.scalar(
            select(func.count(func.distinct(job.c.worker))).where(
                job.c.path == path, job.c.started_at > now - timedelta(seconds=1)
            )
        )
        if (opened or 0) >= rate:
            return True
    return False


def _running(item: Job) -> Any:
    return and_(
        job.c.id == item.id,
        job.c.state == State.RUNNING.value,
        job.c.attempts == item.attempt,
    )


def renew(engine: Engine, item: Job, until: datetime) -> bool:
    """Extend the lease of a job still running under this claim; False when it is no longer ours."""
    with engine.begin() as conn:
        return conn.execute(update(job).where(_running(item)).values(lease_until=until)).rowcount == 1


def finish(
    engine: Engine,
    item: Job,
    now: datetime,
    *,
    state: Literal[State.DONE, State.FAILED, State.CANCELLED] = State.DONE,
    outcome: str | None = None,
    error: str | None = None,
) -> bool:
    """End the attempt ``item`` claimed: done, failed or cancelled. False (nothing changed) when the
    claim was lost meanwhile (its lease ran out and the job went to another worker)."""
    values = {
        "state": state.value,
        "outcome": outcome or state.value,
        "error": error,
        "finished_at": now,
        "lease_until": None,
    }
    with engine.begin() as conn:
        return conn.execute(update(job).where(_running(item)).values(**values)).rowcount == 1


def retry(engine: Engine, item: Job, not_before: datetime, error: str) -> bool:
    """The attempt failed and another is worth it: back to queued, not to be taken before
    ``not_before``. False when the claim was lost meanwhile."""
    with engine.begin() as conn:
        result = conn.execute(
            update(job)
            .where(_running(item))
            .values(
                state=State.QUEUED.value,
                not_before=not_before,
                error=error,
                worker=None,
                lease_until=None,
                dispatched_at=None,
            )
        )
        return result.rowcount == 1


def _claimed(items: Sequence[Job]) -> Any:
    """Rows still running under the attempts ``items`` claimed (row values: (id, attempts) pairs)."""
    return and_(
        tuple_(job.c.id, job.c.attempts).in_([(item.id, item.attempt) for item in items]),
        job.c.state == State.RUNNING.value,
    )


def renew_group(engine: Engine, items: Sequence[Job], until: datetime) -> int:
    """Extend the leases of the jobs of ``items`` still running under their claims; how many were."""
    if not items:
        return 0
    with engine.begin() as conn:
        return conn.execute(update(job).where(_claimed(items)).values(lease_until=until)).rowcount


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one claimed attempt ends: ``state`` done, failed or cancelled; or queued again (a retry) not
    before ``not_before``."""

    item: Job
    state: State
    outcome: str | None = None
    error: str | None = None
    not_before: datetime | None = None


def settle_group(engine: Engine, settlements: Sequence[Settlement], now: datetime) -> set[int]:
    """End or requeue the attempts of one claim in one transaction; the ids of the jobs that were still
    this claim's (a job whose lease ran out and went elsewhere is left alone)."""
    settled: set[int] = set()
    done = [s.item for s in settlements if s.state is State.DONE and s.outcome is None]
    with engine.begin() as conn:
        if done:
            rows = conn.execute(
                update(job)
                .where(_claimed(done))
                .values(
                    state=State.DONE.value,
                    outcome=State.DONE.value,
                    error=None,
                    finished_at=now,
                    lease_until=None,
                )
                .returning(job.c.id)
            ).all()
            settled.update(row.id for row in rows)
        for entry in settlements:
            if entry.state is State.DONE and entry.outcome is None:
                continue
            if entry.state is State.QUEUED:
                values: dict[str, Any] = {
                    "state": State.QUEUED.value,
                    "not_before": entry.not_before or now,
                    "error": entry.error,
                    "worker": None,
                    "lease_until": None,
                    "dispatched_at": None,
                }
            elif entry.state in (State.DONE, State.FAILED, State.CANCELLED):
                values = {
                    "state": entry.state.value,
                    "outcome": entry.outcome or entry.state.value,
                    "error": entry.error,
                    "finished_at": now,
                    "lease_until": None,
                }
            else:
                raise ValueError(f"a claimed job ends done, failed, cancelled or queued, not {entry.state}")
            if conn.execute(update(job).where(_running(entry.item)).values(**values)).rowcount == 1:
                settled.add(entry.item.id)
    return settled


def dispatchable(
    engine: Engine, now: datetime, *, stale: timedelta, limit: int = 10_000
) -> list[tuple[int, Lane, str | None]]:
    """Queued jobs due by ``now`` that are not on the bus (never dispatched, or dispatched more than
    ``stale`` ago and still not taken): marked dispatched now and returned as (id, lane, path), most
    urgent lane first. ``stale`` must be longer than a dispatch can wait in the bus unseen."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(job.c.id, job.c.lane, job.c.path)
            .where(
                job.c.state == State.QUEUED.value,
                or_(job.c.not_before.is_(None), job.c.not_before <= now),
                or_(job.c.dispatched_at.is_(None), job.c.dispatched_at < now - stale),
            )
            .order_by(job.c.lane, job.c.id)
            .limit(limit)
        ).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        for start in range(0, len(ids), _CHUNK):
            conn.execute(
                update(job).where(job.c.id.in_(ids[start : start + _CHUNK])).values(dispatched_at=now)
            )
    return [(row.id, Lane(row.lane), row.path) for row in rows]


def sweep(engine: Engine, now: datetime, *, limit: int = 10_000) -> tuple[list[Job], list[Job]]:
    """Running jobs whose lease ran out by ``now``: (requeued, failed). A job with attempts left goes
    back to queued at once; one without is failed (outcome ``lease_expired``)."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(job.c.id, job.c.attempts, job.c.max_attempts)
            .where(job.c.state == State.RUNNING.value, job.c.lease_until < now)
            .order_by(job.c.id)
            .limit(limit)
        ).all()
        requeued: list[Job] = []
        failed: list[Job] = []
        for row in rows:
            expired = and_(
                job.c.id == row.id,
                job.c.state == State.RUNNING.value,
                job.c.attempts == row.attempts,
                job.c.lease_until < now,
            )
            error = f"worker lost (lease expired) in attempt {row.attempts}"
            if row.attempts < row.max_attempts:
                values: dict[str, Any] = {
                    "state": State.QUEUED.value,
                    "not_before": now,
                    "dispatched_at": None,
                }
                target = requeued
            else:
                values = {"state": State.FAILED.value, "outcome": "lease_expired", "finished_at": now}
                target = failed
            moved = conn.execute(
                update(job)
                .where(expired)
                .values(**values, error=error, worker=None, lease_until=None)
                .returning(*job.c)
            ).first()
            if moved is not None:
                target.append(Job.of(moved))
    return requeued, failed
