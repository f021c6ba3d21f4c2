"""Remote commands (``commands:write`` to send, ``commands:read`` to look): disconnect, connect
(reconnect), time sync, configuration (load limit, push setup, tariff calendar) and key rotation; their
safety rules and the approval of bulk ones.

Configuration commands and key rotation take ``params`` (:data:`PARAMS_DOC`), checked by
:func:`openami.hes.config_commands.command_params` before anything is recorded: a bad one is a 422
problem naming the field.

``POST /meters/{id}/commands`` sends the command and answers when the meter has confirmed it (or
failed to): 201 with the command's record, whose ``state`` is ``succeeded`` or ``failed``. A failed
command is still a created record, not an HTTP error: the request was carried out, the meter did not
comply. A disconnect a protection or the no-disconnect calendar forbids is a 409 problem, nothing sent.
Every command is in the audit log under the caller's name.

``POST /command-jobs`` queues a command for one or many meters as jobs (202): the pollers carry them
out (docs/operations/commands.md). A disconnect of more meters than ``hes_bulk_approval_threshold``
(or key rotation, or load limit: ``command_jobs.APPROVAL_KINDS``)
is refused there (403) and goes through ``POST /command-requests`` instead, which a *second* user
approves (``POST /command-requests/{id}/approve``; the requester approving is 403) or rejects.
Approving takes ``commands:write`` like asking: the four-eyes rule is that the two are different people.

Protections (``PUT``/``DELETE /meters/{id}/protections/{kind}``) and the no-disconnect calendar
(``/no-disconnect-periods``) are changed with ``commands:write`` and read with ``commands:read``; every
change is audited.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId
from openami.api.deps import Context, require
from openami.api.problems import Problem
from openami.hes import command_jobs, safety
from openami.hes.commands import CommandKind, CommandService, command_record, meter_commands
from openami.security.service import Principal
from openami.store.repositories import meters

router = APIRouter(tags=["commands"], responses=AUTH_RESPONSES)
Sender = Annotated[Principal, Depends(require("commands:write"))]
Reader = Annotated[Principal, Depends(require("commands:read"))]


PARAMS_DOC = (
    "The command's parameters: none for relay and clock commands; load_limit "
    '{"threshold": W, "normal": W}; push_setup {"destination": "host:port", "transport": "tcp"|"udp", '
    '"message": "a-xdr"|"xml"}; tariff_calendar {"name", "seasons": [{"name", "start": "MM-DD", "week"}], '
    '"weeks": [{"name", "days": [7 day ids, Monday first]}], "days": [{"id", "switches": [{"time": '
    '"HH:MM", "script": N}]}], "activate_at": ISO-8601 or null}; key_rotation {"key": '
    '"encryption"|"authentication"}.'
)
Params = Annotated[dict[str, Any], Field(default_factory=dict, description=PARAMS_DOC)]
MeterIds = Annotated[
    list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=command_jobs.MAX_METERS)
]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: CommandKind
    force_calendar: bool = Field(False, description="Disconnect inside a no-disconnect period (audited).")
    params: Params


class CommandOut(BaseModel):
    id: int
    meter_id: int
    kind: str
    state: str
    result: dict[str, Any] | None
    requested_at: datetime
    finished_at: datetime | None


def _service(context: Context) -> CommandService:
    service = context.commands
    if service is None:
        raise Problem(503, "remote commands are not available in this process")
    return service


@router.post(
    "/meters/{item_id}/commands",
    response_model=CommandOut,
    status_code=201,
    responses=NOT_FOUND,
    summary="Send a command to a meter and wait for its confirmation",
)
async def send_command(context: Context, principal: Sender, item_id: ItemId, body: CommandIn) -> Any:
    service = _service(context)
    await asyncio.to_thread(_visible_meter, context, principal, item_id)
    record = await service.run(
        principal.tenant_id,
        item_id,
        body.kind,
        actor=principal.actor,
        user_id=principal.user_id,
        force_calendar=body.force_calendar,
        params=body.params,
    )
    return CommandOut.model_validate(record, from_attributes=True)


@router.get(
    "/meters/{item_id}/commands",
    response_model=list[CommandOut],
    responses=NOT_FOUND,
    summary="A meter's commands, newest first",
)
def list_commands(context: Context, principal: Reader, item_id: ItemId) -> Any:
    _visible_meter(context, principal, item_id)
    records = meter_commands(context.engine, principal.tenant_id, item_id)
    return [CommandOut.model_validate(r, from_attributes=True) for r in records]


@router.get("/commands/{item_id}", response_model=CommandOut, responses=NOT_FOUND, summary="Get a command")
def get_command(context: Context, principal: Reader, item_id: ItemId) -> Any:
    record = command_record(context.engine, principal.tenant_id, item_id)
    _visible_meter(context, principal, record.meter_id)
    return CommandOut.model_validate(record, from_attributes=True)


def _visible_meter(context: Context, principal: Principal, meter_id: int) -> None:
    """404 for a meter the caller may not see (another tenant's, or another customer's)."""
    with context.engine.connect() as conn:
        meters.get(conn, principal.scope, meter_id)


def _now() -> datetime:
    return datetime.now(UTC)


class RefusalOut(BaseModel):
    meter_id: int
    rule: str
    reason: str


class QueuedOut(BaseModel):
    meter_id: int
    command_id: int
    job_id: int


class SubmissionOut(BaseModel):
    queued: list[QueuedOut]
    refused: list[RefusalOut]


class CommandJobsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: CommandKind
    meter_ids: MeterIds
    force_calendar: bool = False
    params: Params


def _submission(submission: command_jobs.Submission) -> SubmissionOut:
    return SubmissionOut.model_validate(submission, from_attributes=True)


@router.post(
    "/command-jobs",
    response_model=SubmissionOut,
    status_code=202,
    responses=NOT_FOUND,
    summary="Queue a command for meters as jobs (a bulk disconnect needs a command request)",
)
def submit_command_jobs(context: Context, principal: Sender, body: CommandJobsIn) -> Any:
    submission = command_jobs.submit(
        context.engine,
        principal.tenant_id,
        body.kind,
        body.meter_ids,
        actor=principal.actor,
        user_id=principal.user_id,
        now=_now(),
        force_calendar=body.force_calendar,
        threshold=context.settings.hes_bulk_approval_threshold,
        audit=context.audit,
        params=body.params,
    )
    return _submission(submission)


class CommandRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: CommandKind
    meter_ids: MeterIds
    reason: str = Field("", max_length=1000)
    force_calendar: bool = False
    params: Params


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=1000)


class CommandRequestOut(BaseModel):
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
    refused: list[RefusalOut]
    finished_at: datetime | None


class ApprovalOut(BaseModel):
    request: CommandRequestOut
    submission: SubmissionOut


def _request_out(found: command_jobs.CommandRequest) -> CommandRequestOut:
    return CommandRequestOut.model_validate(found, from_attributes=True)


@router.post(
    "/command-requests",
    response_model=CommandRequestOut,
    status_code=201,
    responses=NOT_FOUND,
    summary="Ask for a bulk command; a second user approves it",
)
def create_command_request(context: Context, principal: Sender, body: CommandRequestIn) -> Any:
    created = command_jobs.request(
        context.engine,
        principal.tenant_id,
        body.kind,
        body.meter_ids,
        actor=principal.actor,
        user_id=principal.user_id,
        now=_now(),
        reason=body.reason,
        force_calendar=body.force_calendar,
        audit=context.audit,
        params=body.params,
    )
    return _request_out(created)


@router.get(
    "/command-requests", response_model=list[CommandRequestOut], summary="Command requests, newest first"
)
def list_command_requests(
    context: Context,
    principal: Reader,
    state: Annotated[Literal["requested", "approved", "rejected", "running", "done"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    found = command_jobs.list_requests(context.engine, principal.tenant_id, state=state, limit=limit)
    return [_request_out(r) for r in found]


@router.get(
    "/command-requests/{item_id}",
    response_model=CommandRequestOut,
    responses=NOT_FOUND,
    summary="A command request",
)
def get_command_request(context: Context, principal: Reader, item_id: ItemId) -> Any:
    return _request_out(command_jobs.get_request(context.engine, principal.tenant_id, item_id))


@router.post(
    "/command-requests/{item_id}/approve",
    response_model=ApprovalOut,
    responses=NOT_FOUND,
    summary="Approve a command request (not by its requester) and queue its commands",
)
def approve_command_request(
    context: Context, principal: Sender, item_id: ItemId, body: DecisionIn | None = None
) -> Any:
    approved, submission = command_jobs.approve(
        context.engine,
        principal.tenant_id,
        item_id,
        actor=principal.actor,
        user_id=principal.user_id,
        now=_now(),
        reason=body.reason if body else None,
        audit=context.audit,
    )
    return ApprovalOut(request=_request_out(approved), submission=_submission(submission))


@router.post(
    "/command-requests/{item_id}/reject",
    response_model=CommandRequestOut,
    responses=NOT_FOUND,
    summary="Reject (or, by its requester, withdraw) a command request",
)
def reject_command_request(
    context: Context, principal: Sender, item_id: ItemId, body: DecisionIn | None = None
) -> Any:
    rejected = command_jobs.reject(
        context.engine,
        principal.tenant_id,
        item_id,
        actor=principal.actor,
        user_id=principal.user_id,
        now=_now(),
        reason=body.reason if body else None,
        audit=context.audit,
    )
    return _request_out(rejected)


ProtectionKind = Literal["medical", "life_support", "vulnerable"]


class ProtectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=1000)


class ProtectionOut(BaseModel):
    meter_id: int
    kind: str
    reason: str
    created_by: str
    created_at: datetime


@router.get(
    "/meters/{item_id}/protections",
    response_model=list[ProtectionOut],
    responses=NOT_FOUND,
    summary="Why a meter must not be disconnected",
)
def list_protections(context: Context, principal: Reader, item_id: ItemId) -> Any:
    _visible_meter(context, principal, item_id)
    found = safety.protections(context.engine, principal.tenant_id, item_id)
    return [ProtectionOut.model_validate(p, from_attributes=True) for p in found]


@router.put(
    "/meters/{item_id}/protections/{kind}",
    response_model=ProtectionOut,
    responses=NOT_FOUND,
    summary="Protect a meter from remote disconnects (medical, life support, vulnerable household)",
)
def put_protection(
    context: Context, principal: Sender, item_id: ItemId, kind: ProtectionKind, body: ProtectionIn
) -> Any:
    _visible_meter(context, principal, item_id)
    found = safety.protect(
        context.engine,
        principal.tenant_id,
        item_id,
        kind,
        reason=body.reason,
        actor=principal.actor,
        audit=context.audit,
    )
    return ProtectionOut.model_validate(found, from_attributes=True)


@router.delete(
    "/meters/{item_id}/protections/{kind}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Remove a meter's protection (the reason is audited)",
)
def delete_protection(
    context: Context,
    principal: Sender,
    item_id: ItemId,
    kind: ProtectionKind,
    reason: Annotated[str, Query(min_length=1, max_length=1000)],
) -> Response:
    _visible_meter(context, principal, item_id)
    safety.unprotect(
        context.engine,
        principal.tenant_id,
        item_id,
        kind,
        reason=reason,
        actor=principal.actor,
        audit=context.audit,
    )
    return Response(status_code=204)


class PeriodIn(BaseModel):
    """Dated (``starts_at``, ``ends_at``) or weekly (``weekly_from``, ``weekly_to``: ``"fri 12:00"``,
    the tenant's local time)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    weekly_from: str | None = Field(None, max_length=20)
    weekly_to: str | None = Field(None, max_length=20)


class PeriodOut(BaseModel):
    id: int
    name: str
    kind: str
    starts_at: datetime | None
    ends_at: datetime | None
    from_minute: int | None
    to_minute: int | None
    description: str


def _period_out(period: safety.Period) -> PeriodOut:
    return PeriodOut(
        id=period.id,
        name=period.name,
        kind=period.kind,
        starts_at=period.starts_at,
        ends_at=period.ends_at,
        from_minute=period.from_minute,
        to_minute=period.to_minute,
        description=period.describe(),
    )


@router.get("/no-disconnect-periods", response_model=list[PeriodOut], summary="The no-disconnect calendar")
def list_periods(context: Context, principal: Reader) -> Any:
    return [_period_out(p) for p in safety.periods(context.engine, principal.tenant_id)]


@router.post(
    "/no-disconnect-periods", response_model=PeriodOut, status_code=201, summary="Add a no-disconnect period"
)
def create_period(context: Context, principal: Sender, body: PeriodIn) -> Any:
    weekly = None
    if body.weekly_from is not None or body.weekly_to is not None:
        if body.weekly_from is None or body.weekly_to is None:
            raise Problem(422, "a weekly period needs weekly_from and weekly_to")
        weekly = (body.weekly_from, body.weekly_to)
    period = safety.add_period(
        context.engine,
        principal.tenant_id,
        body.name,
        actor=principal.actor,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        weekly=weekly,
        audit=context.audit,
    )
    return _period_out(period)


@router.delete(
    "/no-disconnect-periods/{item_id}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Remove a no-disconnect period",
)
def delete_period(context: Context, principal: Sender, item_id: ItemId) -> Response:
    safety.remove_period(
        context.engine, principal.tenant_id, item_id, actor=principal.actor, audit=context.audit
    )
    return Response(status_code=204)
