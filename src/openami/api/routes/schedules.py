"""Schedules (``schedules:read`` to look, ``schedules:write`` to change): what the planner reads when.

``GET/POST /schedules``, ``GET/PATCH/DELETE /schedules/{id}``. A schedule is checked by
:func:`openami.hes.schedule_store.checked` whichever way it arrives: a bad cron expression, an unknown
time zone or a target filter the planner cannot use is a 422 problem whose ``detail`` is the parser's
own message (``cron: minute: '61' is outside 0-59``); a duplicate name is 409. ``PATCH`` with
``{"enabled": false}`` stops the planner from planning new slots (jobs already planned still run);
``DELETE`` removes the schedule and cancels its jobs that have not started (the answer says how many).
Every change is audited (``schedule.create``, ``schedule.update``, ``schedule.delete``).

The ``target_filter`` shape, the bounds and the API and CLI reference are in
``docs/api/jobs-and-schedules.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StringConstraints

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId, Resource, resource_router
from openami.api.deps import Context, require
from openami.api.pagination import ListQuery
from openami.api.schemas import Body, Label120
from openami.hes.planner import ScheduleKind
from openami.hes.schedule_store import BOUNDS, ScheduleRecord, schedules
from openami.security.service import Principal


def _bounded(name: str, default: int) -> Any:
    low, high = BOUNDS[name]
    return Field(default, ge=low, le=high)


class ScheduleIn(Body):
    name: Annotated[Label120, StringConstraints(min_length=1)]
    kind: ScheduleKind
    cron: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    """Five cron fields or a shortcut (``@daily``), in ``timezone``."""
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    """IANA zone; null: the tenant's."""
    target_filter: dict[str, Any] = Field(default_factory=dict)
    lane: int = _bounded("lane", 3)
    window_s: int = _bounded("window_s", 3600)
    max_attempts: int = _bounded("max_attempts", 3)
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class ScheduleQuery(ListQuery):
    kind: ScheduleKind | None = None
    enabled: bool | None = None


class ScheduleDeleted(BaseModel):
    id: int
    cancelled_jobs: int
    """Its planned and queued jobs, cancelled with it."""


SCHEDULES = Resource(
    path="/schedules",
    name="schedule",
    permission="schedules",
    repository=schedules,
    row_type=ScheduleRecord,
    query_model=ScheduleQuery,
    create_model=ScheduleIn,
)
Writer = Annotated[Principal, Depends(require("schedules:write"))]

delete_router = APIRouter(prefix="/schedules", tags=["schedules"], responses=AUTH_RESPONSES)


@delete_router.delete(
    "/{item_id}",
    response_model=ScheduleDeleted,
    responses=NOT_FOUND,
    summary="Delete a schedule and cancel its unstarted jobs",
)
def delete_schedule(context: Context, principal: Writer, item_id: ItemId) -> Any:
    with context.engine.begin() as conn:
        cancelled = schedules.delete(conn, principal.scope, item_id, datetime.now(UTC))
        context.audit.append(
            conn,
            principal.tenant_id,
            principal.actor,
            "schedule.delete",
            "schedule",
            item_id,
            {"cancelled_jobs": cancelled},
        )
    return ScheduleDeleted(id=item_id, cancelled_jobs=cancelled)


router = APIRouter()
router.include_router(resource_router(SCHEDULES))
router.include_router(delete_router)
