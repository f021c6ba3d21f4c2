"""Firmware campaigns (``commands:write`` to change, ``commands:read`` to look): create a draft with
its image and meters, have a *second* user approve it, start, pause, resume or abort it, and watch its
waves (:mod:`openami.hes.campaigns`, docs/operations/commands.md).

The image travels base64-encoded in the JSON body, so through the API it is bounded by the request
size limit (1 MiB, about 750 KiB of image); larger images are loaded with ``openami command campaign
create --image FILE``.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId
from openami.api.deps import Context, require
from openami.hes import campaigns
from openami.hes.command_jobs import MAX_METERS
from openami.security.errors import InvalidInput
from openami.security.service import Principal

router = APIRouter(tags=["campaigns"], responses=AUTH_RESPONSES)
Writer = Annotated[Principal, Depends(require("commands:write"))]
Reader = Annotated[Principal, Depends(require("commands:read"))]


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    identifier: str = Field(min_length=1, max_length=64, description="What the meters must report after.")
    image_base64: str = Field(min_length=1, description="The firmware image, base64.")
    meter_ids: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=MAX_METERS)
    waves: list[int | str] = Field(
        default_factory=list,
        max_length=100,
        description='Sizes or percentages: [10, "10%"]; the rest is last.',
    )
    failure_threshold: float = Field(0.05, ge=0, le=1, description="Stop when a wave fails more than this.")


class AbortIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=1000)


class WaveOut(BaseModel):
    wave: int
    meters: int
    pending: int
    queued: int
    succeeded: int
    failed: int
    cancelled: int


class CampaignOut(BaseModel):
    id: int
    name: str
    identifier: str
    image_size: int
    image_sha256: str
    waves: list[int]
    failure_threshold: float
    state: str
    current_wave: int
    meter_count: int
    state_reason: str | None
    created_by: int
    approved_by: int | None
    created_at: datetime
    approved_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    wave_counts: list[WaveOut]


def _out(found: campaigns.Campaign) -> CampaignOut:
    return CampaignOut.model_validate(found, from_attributes=True)


def _now() -> datetime:
    return datetime.now(UTC)


@router.post(
    "/campaigns", response_model=CampaignOut, status_code=201, responses=NOT_FOUND, summary="Create a draft"
)
def create_campaign(context: Context, principal: Writer, body: CampaignIn) -> Any:
    try:
        image = base64.b64decode(body.image_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_base64 is not base64") from None
    created = campaigns.create(
        context.engine,
        principal.tenant_id,
        name=body.name,
        identifier=body.identifier,
        image=image,
        meter_ids=body.meter_ids,
        waves=body.waves,
        failure_threshold=body.failure_threshold,
        actor=principal.actor,
        user_id=principal.user_id,
        audit=context.audit,
    )
    return _out(created)


@router.get("/campaigns", response_model=list[CampaignOut], summary="Campaigns, newest first")
def list_campaigns(
    context: Context, principal: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Any:
    return [_out(c) for c in campaigns.list_campaigns(context.engine, principal.tenant_id, limit=limit)]


@router.get(
    "/campaigns/{item_id}", response_model=CampaignOut, responses=NOT_FOUND, summary="A campaign by wave"
)
def get_campaign(context: Context, principal: Reader, item_id: ItemId) -> Any:
    return _out(campaigns.get(context.engine, principal.tenant_id, item_id))


@router.post(
    "/campaigns/{item_id}/approve",
    response_model=CampaignOut,
    responses=NOT_FOUND,
    summary="Approve a draft (not by its creator)",
)
def approve_campaign(context: Context, principal: Writer, item_id: ItemId) -> Any:
    approved = campaigns.approve(
        context.engine,
        principal.tenant_id,
        item_id,
        actor=principal.actor,
        user_id=principal.user_id,
        now=_now(),
        audit=context.audit,
    )
    return _out(approved)


@router.post("/campaigns/{item_id}/start", response_model=CampaignOut, responses=NOT_FOUND, summary="Start")
def start_campaign(context: Context, principal: Writer, item_id: ItemId) -> Any:
    started = campaigns.start(
        context.engine, principal.tenant_id, item_id, actor=principal.actor, now=_now(), audit=context.audit
    )
    return _out(started)


@router.post("/campaigns/{item_id}/pause", response_model=CampaignOut, responses=NOT_FOUND, summary="Pause")
def pause_campaign(context: Context, principal: Writer, item_id: ItemId) -> Any:
    paused = campaigns.pause(
        context.engine, principal.tenant_id, item_id, actor=principal.actor, now=_now(), audit=context.audit
    )
    return _out(paused)


@router.post("/campaigns/{item_id}/resume", response_model=CampaignOut, responses=NOT_FOUND, summary="Resume")
def resume_campaign(context: Context, principal: Writer, item_id: ItemId) -> Any:
    resumed = campaigns.resume(
        context.engine, principal.tenant_id, item_id, actor=principal.actor, now=_now(), audit=context.audit
    )
    return _out(resumed)


@router.post("/campaigns/{item_id}/abort", response_model=CampaignOut, responses=NOT_FOUND, summary="Abort")
def abort_campaign(context: Context, principal: Writer, item_id: ItemId, body: AbortIn | None = None) -> Any:
    aborted = campaigns.abort(
        context.engine,
        principal.tenant_id,
        item_id,
        actor=principal.actor,
        now=_now(),
        reason=body.reason if body else None,
        audit=context.audit,
    )
    return _out(aborted)
