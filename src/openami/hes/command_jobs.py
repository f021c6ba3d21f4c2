"""Commands as jobs: queued with their safety checks, bulk ones approved by a second user, carried out
by the poller workers through :class:`CommandExecutor`.

A queued command is two rows written in one transaction: the ``command`` (state ``queued``, the record
people look at) and its ``job`` (kind ``command``, the command lane, queued at once, keyed
``command:<id>`` so it is never planned twice). The job row is written with
:meth:`openami.hes.job_store.NewJob.row` inside the command's own transaction rather than through
``job_store.plan`` (its own transaction): a command never exists without its job, nor a job without
its command.

Safety is checked twice, because a queued disconnect may run hours later: when the command is asked
for (refused meters get no command at all) and again when its job runs (a protection recorded, or a
no-disconnect period begun, meanwhile ends the command ``refused`` and the job without retry). See
:mod:`openami.hes.safety` for the rules and why only the calendar can be forced.

A disconnect of more than ``threshold`` meters (settings ``hes_bulk_approval_threshold``, default 1:
any bulk disconnect) is not queued at once: it becomes a ``command_request`` that a *second* user must
approve (:func:`approve`); approving queues it, rejecting ends it. The requester may reject (withdraw)
their own request. Firmware goes through campaigns (:mod:`openami.hes.campaigns`), approved the same
way. The same four-eyes rule holds for a bulk ``key_rotation`` and a bulk ``load_limit``
(:data:`APPROVAL_KINDS`): a key rotation gone wrong over many meters could lock the head-end out of a
fleet at once, and a load limit is a disconnect by other means (the limiter opens the relay above its
threshold, so a low one over a district is a bulk disconnect). Push setup and tariff calendars are
queued without approval: they cut no supply and lock nobody out, and the next command undoes them.

Configuration commands and key rotation carry parameters (:func:`openami.hes.config_commands.command_params`),
checked when the command is asked for and recorded with the command (and with a request, so what the
second user approves is exactly what is sent).

Commands are not idempotent in the field, so they are not retried blindly (ADR 0013): every attempt
after the first asks the meter first whether the command's effect is already there
(:meth:`openami.hes.commands.CommandService.execute` with ``verify``), and a command already
succeeded (a worker that died after the meter confirmed) is not sent again at all.

:func:`settle` is the scheduler's bookkeeping, called from its leader loop: commands whose job ended
without them (cancelled, deadline, lease lost on the last attempt) are closed, commands sent to a
gateway that gave no answer by their deadline are failed, and requests whose commands have all ended
are ``done``.

A meter behind an OpenAMI gateway (:func:`openami.hes.gateway_commands.route_of`) is not commanded by
the poller: after the safety checks its command is handed to the gateway (state ``at_gateway``) and
the job ends ``done`` with outcome ``sent`` at once, so no poller session waits hours for a gateway
that is offline. The command record is finished by the gateway's result, or failed at its deadline
(:mod:`openami.hes.gateway_commands`).

Blocking (SQLAlchemy) except :class:`CommandExecutor`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, exists, insert, select, update

from openami.hes import gateway_commands
from openami.hes.commands import COMMAND_KINDS, RUNNABLE_STATES, CommandRecord, CommandService
from openami.hes.config_commands import command_params
from openami.hes.executors import JobResult
from openami.hes.gateway_commands import AT_GATEWAY, DEFAULT_DEADLINE
from openami.hes.job_store import Job, NewJob
from openami.hes.jobstate import Lane, State
from openami.hes.paths import paths_for_meters
from openami.hes.safety import Refusal, check_disconnect, ensure_second_user
from openami.security.audit import AuditLog
from openami.security.errors import InvalidInput, PermissionDenied
from openami.store.errors import Conflict, NotFound
from openami.store.schema import command, command_request, firmware_campaign, job, meter

__all__ = [
    "APPROVAL_KINDS",
    "DEFAULT_APPROVAL_THRESHOLD",
    "JOB_KIND",
    "ApprovalRequired",
    "CommandExecutor",
    "CommandRequest",
    "Queued",
    "Submission",
    "approve",
    "check_meters",
    "enqueue",
    "get_request",
    "list_requests",
    "needs_approval",
    "reject",
    "request",
    "settle",
    "submit",
    "unique_meter_ids",
]

log = logging.getLogger(__name__)

JOB_KIND: Final = "command"
MAX_ATTEMPTS: Final = 3
DEFAULT_APPROVAL_THRESHOLD: Final = 1
APPROVAL_KINDS: Final = frozenset({"disconnect", "load_limit", "key_rotation"})
"""Kinds that a second user must approve for more than the threshold of meters (module docstring)."""
MAX_METERS: Final = 100_000
_OPEN: Final = ("queued", "running")
_ENDED_JOBS: Final = (State.DONE.value, State.FAILED.value, State.CANCELLED.value)


class ApprovalRequired(PermissionDenied):
    """A bulk disconnect must be requested (:func:`request`) and approved by a second user."""


@dataclass(frozen=True, slots=True)
class Queued:
    meter_id: int
    command_id: int
    job_id: int


@dataclass(frozen=True, slots=True)
class Submission:
    """What :func:`submit` (or an approval) queued, and the meters refused by a safety rule."""

    queued: list[Queued] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CommandRequest:
    id: int
    kind: str
    meter_ids: list[int]
    meter_count: int
    state: str
    reason: str
    force_calendar: bool
    requested_by: int
    requested_at: datetime
    decided_by: int | None
    decided_at: datetime | None
    decision_reason: str | None
    refused: list[dict[str, Any]]
    finished_at: datetime | None


def needs_approval(kind: str, meters: int, threshold: int = DEFAULT_APPROVAL_THRESHOLD) -> bool:
    """Whether a command of ``kind`` to ``meters`` meters must go through a second user."""
    return kind in APPROVAL_KINDS and meters > threshold


def unique_meter_ids(meter_ids: Iterable[int]) -> list[int]:
    ids = list(dict.fromkeys(meter_ids))
    if not ids:
        raise InvalidInput("a command needs at least one meter")
    if len(ids) > MAX_METERS:
        raise InvalidInput(f"at most {MAX_METERS} meters per command")
    return ids


def _kind(kind: str) -> str:
    if kind not in COMMAND_KINDS:
        raise InvalidInput(f"unknown command {kind!r} (one of {', '.join(sorted(COMMAND_KINDS))})")
    return kind


def check_meters(conn: Connection, tenant_id: int, meter_ids: Sequence[int]) -> None:
    """NotFound naming the meters of ``meter_ids`` the tenant does not have."""
    found: set[int] = set()
    for start in range(0, len(meter_ids), 1000):
        chunk = meter_ids[start : start + 1000]
        found.update(
            conn.scalars(select(meter.c.id).where(meter.c.tenant_id == tenant_id, meter.c.id.in_(chunk)))
        )
    missing = [m for m in meter_ids if m not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise NotFound(f"meters not found: {shown}")


def enqueue(
    conn: Connection,
    tenant_id: int,
    meter_id: int,
    kind: str,
    params: Mapping[str, Any],
    *,
    actor: str,
    user_id: int | None,
    now: datetime,
    audit: AuditLog,
    path: str | None = None,
) -> Queued:
    """Record one command and queue its job in the caller's transaction (no checks: the caller's);
    ``path`` is the meter's communication path (:func:`openami.hes.paths.paths_for_meters`), so a
    command counts against the same session limits as the reads of its concentrator or port."""
    command_id = conn.execute(
        insert(command)
        .values(
            tenant_id=tenant_id,
            meter_id=meter_id,
            kind=kind,
            state="queued",
            params=dict(params),
            requested_by=user_id,
            requested_at=now,
        )
        .returning(command.c.id)
    ).scalar_one()
    new = NewJob(
        tenant_id=tenant_id,
        kind=JOB_KIND,
        target_type="meter",
        target_id=meter_id,
        params={"command_id": command_id},
        lane=Lane.COMMAND,
        scheduled_for=now,
        dedup_key=f"command:{command_id}",
        path=path,
        max_attempts=MAX_ATTEMPTS,
        created_by=user_id,
    )
    job_id = conn.execute(insert(job).values(new.row(State.QUEUED)).returning(job.c.id)).scalar_one()
    conn.execute(update(command).where(command.c.id == command_id).values(job_id=job_id))
    audit.append(
        conn,
        tenant_id,
        actor,
        f"command.{kind}.requested",
        "meter",
        meter_id,
        {"command": command_id, "job": job_id, **params},
    )
    return Queued(meter_id, int(command_id), int(job_id))


def _queue(
    conn: Connection,
    tenant_id: int,
    kind: str,
    meter_ids: Sequence[int],
    *,
    actor: str,
    user_id: int | None,
    now: datetime,
    force_calendar: bool,
    params: Mapping[str, Any],
    audit: AuditLog,
) -> Submission:
    check_meters(conn, tenant_id, meter_ids)
    refused: list[Refusal] = []
    if kind == "disconnect":
        refused = check_disconnect(conn, tenant_id, meter_ids, now, force_calendar=force_calendar)
        params = {**params, "force_calendar": force_calendar} if force_calendar else params
    blocked = {r.meter_id for r in refused}
    paths = paths_for_meters(conn, meter_ids)
    for refusal in refused:
        audit.append(
            conn, tenant_id, actor, f"command.{kind}.refused", "meter", refusal.meter_id, refusal.as_dict()
        )
    queued = [
        enqueue(
            conn,
            tenant_id,
            m,
            kind,
            params,
            actor=actor,
            user_id=user_id,
            now=now,
            audit=audit,
            path=paths[m],
        )
        for m in meter_ids
        if m not in blocked
    ]
    return Submission(queued, refused)


def submit(
    engine: Engine,
    tenant_id: int,
    kind: str,
    meter_ids: Iterable[int],
    *,
    actor: str,
    user_id: int | None,
    now: datetime,
    force_calendar: bool = False,
    threshold: int = DEFAULT_APPROVAL_THRESHOLD,
    audit: AuditLog | None = None,
    params: Mapping[str, Any] | None = None,
) -> Submission:
    """Queue ``kind`` with ``params`` for each meter (one command and one job each); meters refused by
    a safety rule are left out and reported. :class:`InvalidInput` for bad parameters,
    :class:`ApprovalRequired` for a bulk command of :data:`APPROVAL_KINDS` (more than ``threshold``
    meters): use :func:`request`."""
    ids = unique_meter_ids(meter_ids)
    checked = command_params(_kind(kind), params)
    if needs_approval(kind, len(ids), threshold):
        raise ApprovalRequired(
            f"a {kind} of {len(ids)} meters needs a second user's approval (more than {threshold})"
        )
    with engine.begin() as conn:
        return _queue(
            conn,
            tenant_id,
            kind,
            ids,
            actor=actor,
            user_id=user_id,
            now=now,
            force_calendar=force_calendar,
            params=checked,
            audit=audit or AuditLog(),
        )


def request(
    engine: Engine,
    tenant_id: int,
    kind: str,
    meter_ids: Iterable[int],
    *,
    actor: str,
    user_id: int | None,
    now: datetime,
    reason: str = "",
    force_calendar: bool = False,
    audit: AuditLog | None = None,
    params: Mapping[str, Any] | None = None,
) -> CommandRequest:
    """Ask for a bulk command (with its checked ``params``); nothing is sent until a second user
    approves it."""
    ids = unique_meter_ids(meter_ids)
    checked = command_params(_kind(kind), params)
    if user_id is None:
        raise PermissionDenied("a bulk command must be requested by a named user")
    with engine.begin() as conn:
        check_meters(conn, tenant_id, ids)
        request_id = conn.execute(
            insert(command_request)
            .values(
                tenant_id=tenant_id,
                kind=kind,
                params=checked,
                meter_ids=ids,
                meter_count=len(ids),
                state="requested",
                reason=reason,
                requested_by=user_id,
                requested_at=now,
                force_calendar=force_calendar,
            )
            .returning(command_request.c.id)
        ).scalar_one()
        detail = {"kind": kind, "meters": len(ids), "reason": reason, "force_calendar": force_calendar}
        (audit or AuditLog()).append(
            conn, tenant_id, actor, "command_request.created", "command_request", request_id, detail
        )
        return _request(conn, tenant_id, request_id)


def _decide(
    conn: Connection,
    tenant_id: int,
    request_id: int,
    user_id: int | None,
    state: str,
    now: datetime,
    reason: str | None,
) -> CommandRequest:
    """Move a request out of ``requested`` (Conflict when it was decided meanwhile)."""
    moved = conn.execute(
        update(command_request)
        .where(
            command_request.c.id == request_id,
            command_request.c.tenant_id == tenant_id,
            command_request.c.state == "requested",
        )
        .values(state=state, decided_by=user_id, decided_at=now, decision_reason=reason)
    ).rowcount
    if not moved:
        current = _request(conn, tenant_id, request_id)
        raise Conflict(f"command request {request_id} is {current.state}, not requested")
    return _request(conn, tenant_id, request_id)


def approve(
    engine: Engine,
    tenant_id: int,
    request_id: int,
    *,
    actor: str,
    user_id: int | None,
    now: datetime,
    reason: str | None = None,
    audit: AuditLog | None = None,
) -> tuple[CommandRequest, Submission]:
    """A second user approves: the commands are queued (safety checked now, refused meters recorded on
    the request). :class:`~openami.hes.safety.SameApprover` for the requester."""
    audit = audit or AuditLog()
    with engine.begin() as conn:
        pending = _request(conn, tenant_id, request_id)
        ensure_second_user(pending.requested_by, user_id, f"command request {request_id}")
        asked = conn.execute(
            select(command_request.c.params).where(command_request.c.id == request_id)
        ).scalar_one()
        decided = _decide(conn, tenant_id, request_id, user_id, "approved", now, reason)
        audit.append(
            conn,
            tenant_id,
            actor,
            "command_request.approved",
            "command_request",
            request_id,
            {"kind": decided.kind, "meters": decided.meter_count, "requested_by": decided.requested_by},
        )
        submission = _queue(
            conn,
            tenant_id,
            decided.kind,
            decided.meter_ids,
            actor=actor,
            user_id=user_id,
            now=now,
            force_calendar=decided.force_calendar,
            params={**(asked or {}), "request_id": request_id},
            audit=audit,
        )
        conn.execute(
            update(command_request)
            .where(command_request.c.id == request_id)
            .values(
                state="running" if submission.queued else "done",
                refused=[r.as_dict() for r in submission.refused],
                finished_at=None if submission.queued else now,
            )
        )
        return _request(conn, tenant_id, request_id), submission


def reject(
    engine: Engine,
    tenant_id: int,
    request_id: int,
    *,
    actor: str,
    user_id: int | None,
    now: datetime,
    reason: str | None = None,
    audit: AuditLog | None = None,
) -> CommandRequest:
    """Refuse (or, by its requester, withdraw) a request; nothing is sent."""
    with engine.begin() as conn:
        decided = _decide(conn, tenant_id, request_id, user_id, "rejected", now, reason)
        conn.execute(
            update(command_request).where(command_request.c.id == request_id).values(finished_at=now)
        )
        (audit or AuditLog()).append(
            conn,
            tenant_id,
            actor,
            "command_request.rejected",
            "command_request",
            request_id,
            {"reason": reason},
        )
    return get_request(engine, tenant_id, decided.id)


def get_request(engine: Engine, tenant_id: int, request_id: int) -> CommandRequest:
    with engine.connect() as conn:
        return _request(conn, tenant_id, request_id)


def list_requests(
    engine: Engine, tenant_id: int, *, state: str | None = None, limit: int = 100
) -> list[CommandRequest]:
    """The tenant's requests, newest first, optionally in one ``state``."""
    query = select(command_request).where(command_request.c.tenant_id == tenant_id)
    if state is not None:
        query = query.where(command_request.c.state == state)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(command_request.c.id.desc()).limit(limit)).all()
    return [_request_of(row) for row in rows]


def _request(conn: Connection, tenant_id: int, request_id: int) -> CommandRequest:
    row = conn.execute(
        select(command_request).where(
            command_request.c.id == request_id, command_request.c.tenant_id == tenant_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"command request {request_id} not found")
    return _request_of(row)


def _request_of(row: Any) -> CommandRequest:
    return CommandRequest(
        id=int(row.id),
        kind=row.kind,
        meter_ids=[int(m) for m in row.meter_ids],
        meter_count=int(row.meter_count),
        state=row.state,
        reason=row.reason,
        force_calendar=bool(row.force_calendar),
        requested_by=int(row.requested_by),
        requested_at=row.requested_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
        refused=list(row.refused or []),
        finished_at=row.finished_at,
    )


def settle(engine: Engine, now: datetime) -> int:
    """Close commands whose job ended without them (cancelled, failed before or between attempts) and
    mark requests whose commands all ended ``done``. For the scheduler's leader loop; returns how many
    rows changed."""
    changed = 0
    with engine.begin() as conn:
        orphans = conn.execute(
            select(command.c.id, job.c.state, job.c.error)
            .join(job, job.c.id == command.c.job_id)
            .where(command.c.state.in_(_OPEN), job.c.state.in_(_ENDED_JOBS))
        ).all()
        for row in orphans:
            state = "cancelled" if row.state == State.CANCELLED.value else "failed"
            changed += conn.execute(
                update(command)
                .where(command.c.id == row.id, command.c.state.in_(_OPEN))
                .values(state=state, result={"error": row.error or f"job {row.state}"}, finished_at=now)
            ).rowcount
        open_command = exists().where(
            command.c.tenant_id == command_request.c.tenant_id,
            command.c.state.in_((*_OPEN, AT_GATEWAY)),  # a gateway's answer is still to come
            command.c.params["request_id"].as_integer() == command_request.c.id,
        )
        changed += conn.execute(
            update(command_request)
            .where(and_(command_request.c.state == "running", ~open_command))
            .values(state="done", finished_at=now)
        ).rowcount
        changed += gateway_commands.expire(conn, now)
    return changed


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CommandExecutor:
    """Runs ``command`` jobs (the :class:`~openami.hes.executors.Executor` of that kind).

    ``service`` talks to the meters; ``concurrency`` bounds the meter sessions one batch opens; ``now``
    is the clock the run-time safety check uses. Outcomes: ``done`` (sent and confirmed), ``verified``
    (a later attempt found the effect already there, nothing sent), ``refused`` (a safety rule, no
    retry), ``failed`` (retry while attempts last, unless the meter cannot take commands at all),
    ``cancelled`` (its command was cancelled meanwhile: no retry), ``bad_job`` (no such command, or a
    firmware image that does not match it: no retry), ``sent`` (handed to the meter's gateway, which
    answers later; ``gateway_deadline`` after the run unless the job has a deadline of its own)."""

    kinds: frozenset[str] = frozenset({JOB_KIND})

    def __init__(
        self,
        engine: Engine,
        service: CommandService,
        *,
        concurrency: int = 32,
        now: Callable[[], datetime] = _utcnow,
        gateway_deadline: timedelta = DEFAULT_DEADLINE,
    ) -> None:
        self._engine = engine
        self._service = service
        self._gateway_deadline = gateway_deadline
        self._audit = AuditLog(now)
        self._slots = asyncio.Semaphore(concurrency)
        self._now = now

    async def run(self, jobs: Sequence[Job]) -> dict[int, JobResult]:
        results = await asyncio.gather(*(self._guarded(item) for item in jobs))
        return {item.id: result for item, result in zip(jobs, results, strict=True)}

    async def _guarded(self, item: Job) -> JobResult:
        async with self._slots:
            try:
                return await self._one(item)
            except (NotFound, InvalidInput) as exc:
                return JobResult(ok=False, outcome="bad_job", error=str(exc), retry=False)
            except Exception as exc:  # every job gets a result; the worker retries within its attempts
                log.exception("command job %s failed unexpectedly", item.id)
                return JobResult(ok=False, outcome="error", error=f"{type(exc).__name__}: {exc}")

    async def _one(self, item: Job) -> JobResult:
        command_id = item.params.get("command_id")
        if not isinstance(command_id, int):
            return JobResult(ok=False, outcome="bad_job", error="job has no command_id", retry=False)
        actor = f"job:{item.id}"
        record = await asyncio.to_thread(self._service.get, item.tenant_id, command_id)
        if record.state in RUNNABLE_STATES and record.kind == "disconnect":
            force = bool(await asyncio.to_thread(self._param, item.tenant_id, command_id, "force_calendar"))
            refusals = await asyncio.to_thread(
                check_disconnect,
                self._engine,
                item.tenant_id,
                [record.meter_id],
                self._now(),
                force_calendar=force,
            )
            if refusals:
                reasons = [r.reason for r in refusals]
                await asyncio.to_thread(
                    self._service.refuse, item.tenant_id, command_id, reasons, actor=actor
                )
                return JobResult(ok=False, outcome="refused", error="; ".join(reasons), retry=False)
        if record.state in (*RUNNABLE_STATES, AT_GATEWAY):
            route = await asyncio.to_thread(
                gateway_commands.route_of, self._engine, item.tenant_id, record.meter_id
            )
            if route is not None and record.kind in gateway_commands.COMMANDS_THROUGH_GATEWAYS:
                return await self._to_gateway(item, command_id, route, actor)
            # Other kinds for a meter behind a gateway: CommandService fails them for good, with why.
        image = None
        if record.kind == "firmware":
            image = await asyncio.to_thread(self._image, item.tenant_id, command_id)
        record = await self._service.execute(
            item.tenant_id,
            command_id,
            actor=actor,
            verify=item.attempt > 1 or record.state != "queued",
            image=image,
        )
        return _result(record)

    async def _to_gateway(
        self, item: Job, command_id: int, route: gateway_commands.GatewayRoute, actor: str
    ) -> JobResult:
        """Hand the command to its gateway (after the safety checks); the job is done once it is."""
        now = self._now()
        staged = await asyncio.to_thread(
            gateway_commands.stage,
            self._engine,
            self._audit,
            item.tenant_id,
            command_id,
            route,
            deadline=item.deadline or now + self._gateway_deadline,
            now=now,
            actor=actor,
        )
        detail = {
            "command_id": command_id,
            "gateway": staged.gateway,
            "deadline": staged.deadline.isoformat(),
        }
        return JobResult(ok=True, outcome="sent", detail=detail)

    def _param(self, tenant_id: int, command_id: int, name: str) -> Any:
        with self._engine.connect() as conn:
            params = conn.execute(
                select(command.c.params).where(command.c.id == command_id, command.c.tenant_id == tenant_id)
            ).scalar_one()
        return params.get(name)

    def _image(self, tenant_id: int, command_id: int) -> bytes:
        campaign_id = self._param(tenant_id, command_id, "campaign_id")
        with self._engine.connect() as conn:
            image = conn.execute(
                select(firmware_campaign.c.image).where(
                    firmware_campaign.c.id == campaign_id, firmware_campaign.c.tenant_id == tenant_id
                )
            ).scalar_one_or_none()
        if image is None:
            raise NotFound(f"command {command_id}: its firmware campaign is gone")
        return bytes(image)


def _result(record: CommandRecord) -> JobResult:
    detail = {"command_id": record.id, **(record.result or {})}
    if record.state == "succeeded":
        return JobResult(ok=True, outcome="verified" if detail.get("verified") else "done", detail=detail)
    if record.state == "refused":
        return JobResult(
            ok=False, outcome="refused", error="refused by a safety rule", retry=False, detail=detail
        )
    error = str(detail.get("error", record.state))
    retry = record.state == "failed" and not detail.get("permanent")
    return JobResult(ok=False, outcome=record.state, error=error, retry=retry, detail=detail)
