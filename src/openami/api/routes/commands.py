"""Remote commands (``commands:write`` to send, ``commands:read`` to look): disconnect, connect, time sync.

``POST /meters/{id}/commands`` sends the command and answers when the meter has confirmed it (or
failed to): 201 with the command's record, whose ``state`` is ``succeeded`` or ``failed``. A failed
command is still a created record, not an HTTP error: the request was carried out, the meter did not
comply. Every command is in the audit log under the caller's name.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId
from openami.api.deps import Context, require
from openami.api.problems import Problem
from openami.hes.commands import CommandService
from openami.security.service import Principal
from openami.store.repositories import meters

router = APIRouter(tags=["commands"], responses=AUTH_RESPONSES)
Sender = Annotated[Principal, Depends(require("commands:write"))]
Reader = Annotated[Principal, Depends(require("commands:read"))]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["disconnect", "connect", "time_sync"]


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
        principal.tenant_id, item_id, body.kind, actor=principal.actor, user_id=principal.user_id
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
    records = _service(context).list_for_meter(principal.tenant_id, item_id)
    return [CommandOut.model_validate(r, from_attributes=True) for r in records]


@router.get("/commands/{item_id}", response_model=CommandOut, responses=NOT_FOUND, summary="Get a command")
def get_command(context: Context, principal: Reader, item_id: ItemId) -> Any:
    record = _service(context).get(principal.tenant_id, item_id)
    _visible_meter(context, principal, record.meter_id)
    return CommandOut.model_validate(record, from_attributes=True)


def _visible_meter(context: Context, principal: Principal, meter_id: int) -> None:
    """404 for a meter the caller may not see (another tenant's, or another customer's)."""
    with context.engine.connect() as conn:
        meters.get(conn, principal.scope, meter_id)
