"""Jobs (``jobs:read`` to look, ``jobs:write`` to act): the head-end's reads and commands as rows.

``GET /jobs`` lists the tenant's jobs newest first, filtered by state, kind, target, schedule and
creation time; ``GET /jobs/{id}`` shows one with its result. ``POST /jobs/{id}/cancel`` stops a job
that has not started (409 for a running or finished one); ``POST /jobs/{id}/retry`` queues a failed one
again, due now, with a fresh attempt budget (:func:`openami.hes.job_queries.requeue`). Both are
audited (``job.cancel``, ``job.retry``) in the transaction that moves the job.

``POST /meters/{id}/reads`` asks for an on-demand read: 202 with the queued job (``Location``:
``/jobs/{id}``); the worker pool takes it ahead of the scheduled reads. The same request within the
same minute answers the same job, so a double click reads the meter once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId, page_of
from openami.api.deps import ApiContext, Context, require
from openami.api.pagination import ListQuery, Page, after_id
from openami.api.schemas import Id, Instant, Slug32
from openami.hes import job_queries
from openami.hes.job_queries import JobRecord
from openami.hes.jobstate import State
from openami.hes.planner import ScheduleKind
from openami.security.service import Principal
from openami.store.repositories import clamp_limit

router = APIRouter(tags=["jobs"], responses=AUTH_RESPONSES)
Reader = Annotated[Principal, Depends(require("jobs:read"))]
Writer = Annotated[Principal, Depends(require("jobs:write"))]
MOVED: dict[int | str, dict[str, Any]] = {
    409: {"description": "The job is running or finished: the move does not apply (problem+json)."}
}


class JobQuery(ListQuery):
    state: State | None = None
    kind: Slug32 | None = None
    target_id: Id | None = None
    schedule_id: Id | None = None
    since: Instant | None = None
    """Jobs created at or after this instant."""


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    what: ScheduleKind = "registers"


@router.get("/jobs", response_model=Page[JobRecord], summary="List jobs, newest first")
def list_jobs(context: Context, principal: Reader, query: Annotated[JobQuery, Query()]) -> Any:
    limit = clamp_limit(query.limit)
    items = job_queries.list_jobs(
        context.engine,
        principal.tenant_id,
        state=query.state,
        kind=query.kind,
        target_id=query.target_id,
        schedule_id=query.schedule_id,
        since=query.since,
        limit=limit,
        cursor=after_id(query.cursor),
    )
    return page_of(items, limit)


@router.get("/jobs/{item_id}", response_model=JobRecord, responses=NOT_FOUND, summary="Get a job")
def get_job(context: Context, principal: Reader, item_id: ItemId) -> Any:
    return job_queries.get_job(context.engine, principal.tenant_id, item_id)


def _audit(context: ApiContext, principal: Principal, action: str) -> job_queries.Then:
    def write(conn: Connection, record: JobRecord) -> None:
        detail = {"kind": record.kind, "target_id": record.target_id, "attempts": record.attempts}
        context.audit.append(conn, principal.tenant_id, principal.actor, action, "job", record.id, detail)

    return write


@router.post(
    "/jobs/{item_id}/cancel",
    response_model=JobRecord,
    responses={**NOT_FOUND, **MOVED},
    summary="Cancel a job that has not started",
)
def cancel_job(context: Context, principal: Writer, item_id: ItemId) -> Any:
    return job_queries.cancel(
        context.engine,
        principal.tenant_id,
        item_id,
        datetime.now(UTC),
        then=_audit(context, principal, "job.cancel"),
    )


@router.post(
    "/jobs/{item_id}/retry",
    response_model=JobRecord,
    responses={**NOT_FOUND, **MOVED},
    summary="Queue a failed job again",
)
def retry_job(context: Context, principal: Writer, item_id: ItemId) -> Any:
    return job_queries.requeue(
        context.engine,
        principal.tenant_id,
        item_id,
        datetime.now(UTC),
        then=_audit(context, principal, "job.retry"),
    )


@router.post(
    "/meters/{item_id}/reads",
    response_model=JobRecord,
    status_code=202,
    responses=NOT_FOUND,
    summary="Read a meter now (on demand)",
)
async def read_meter(
    context: Context,
    principal: Writer,
    item_id: ItemId,
    response: Response,
    body: ReadIn | None = None,
) -> Any:
    what: ScheduleKind = (body or ReadIn()).what

    def submit() -> JobRecord:
        job_id = job_queries.submit_read(
            context.engine,
            principal.tenant_id,
            item_id,
            datetime.now(UTC),
            what,
            principal.user_id,
            scope=principal.scope,
        )
        return job_queries.get_job(context.engine, principal.tenant_id, job_id)

    record = await asyncio.to_thread(submit)
    response.headers["Location"] = f"/jobs/{record.id}"
    return record
