"""Gateways, concentrators and modems: the ``comm_device`` table (``gateways:read|write``), and the
gateway link of OpenAMI gateways (``docs/drivers/gateway-link.md``).

``GET /gateways/{id}/link`` shows a gateway's link (key present and its version, last seen, last health
with the backlog it reported, replay window, configuration version), never its key.
``POST /gateways/{id}/link/key`` generates a new link key, stores it sealed in the key vault and
returns it in this one response (``Cache-Control: no-store``); it cannot be read back later. A second
call rotates the key. Both are audited (``gateway.link_key``) without the key.

``GET /gateways/pending-devices`` lists the meters gateways discovered; ``POST
/gateways/pending-devices/{id}/approve`` and ``.../reject`` record the operator's decision (status and
audit entry only: approving does not create the meter, which is commissioned with ``POST /meters``).

The link and pending-device routes are registered before the generic ``/gateways/{id}`` ones, so
``pending-devices`` is never taken for an id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId, Resource, resource_router
from openami.api.deps import Context, require
from openami.api.pagination import Page, after_id, id_cursor
from openami.api.schemas import GatewayIn, GatewayQuery, PendingDeviceQuery
from openami.hes.gateway_link_store import (
    PendingDevice,
    decide_pending,
    link_status,
    list_pending,
    provision_key,
)
from openami.security.keyvault import KeyVault, load_master_key
from openami.security.service import Principal
from openami.store.repositories import CommDevice, clamp_limit, comm_devices

GATEWAYS = Resource(
    path="/gateways",
    name="gateway",
    permission="gateways",
    repository=comm_devices,
    row_type=CommDevice,
    query_model=GatewayQuery,
    create_model=GatewayIn,
)

Reader = Annotated[Principal, Depends(require("gateways:read"))]
Writer = Annotated[Principal, Depends(require("gateways:write"))]

link_router = APIRouter(prefix="/gateways", tags=["gateways"], responses=AUTH_RESPONSES)


class GatewayLinkOut(BaseModel):
    """A gateway's link as the head-end knows it; ``backlog_readings`` and ``unacked_batches`` come from
    its last health report."""

    gateway_id: int
    ident: str
    key_present: bool
    key_version: int | None
    key_created_at: datetime | None
    last_seen_at: datetime | None
    health: dict[str, Any] | None
    health_at: datetime | None
    backlog_readings: int | None
    unacked_batches: int | None
    window_highest: int | None
    next_downlink_seq: int | None
    config_version: int | None


class GatewayLinkKeyOut(BaseModel):
    """A new link key, shown once: configure it on the gateway (``uplink.key``) now."""

    gateway_id: int
    ident: str
    key_version: int
    key: str
    """64 hex digits (32 bytes, AES-256)."""


class PendingDeviceOut(BaseModel):
    id: int
    gateway_id: int
    protocol: str
    address: str
    ident: str
    manufacturer: str
    medium: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    status: str
    decided_at: datetime | None
    decided_by: str | None


def _pending_out(device: PendingDevice) -> PendingDeviceOut:
    return PendingDeviceOut.model_validate(device, from_attributes=True)


@link_router.get(
    "/pending-devices",
    response_model=Page[PendingDeviceOut],
    summary="List devices discovered by gateways",
)
def list_pending_devices(
    context: Context, principal: Reader, query: Annotated[PendingDeviceQuery, Query()]
) -> Any:
    limit = clamp_limit(query.limit)
    with context.engine.connect() as conn:
        items = list_pending(
            conn,
            principal.scope,
            status=query.status,
            gateway_id=query.gateway_id,
            after_id=after_id(query.cursor),
            limit=limit,
        )
    cursor = id_cursor(items[-1].id) if items and len(items) == limit else None
    return Page(items=[_pending_out(item) for item in items], next_cursor=cursor)


def _decide(
    context: Context, principal: Principal, item_id: int, status: Literal["approved", "rejected"]
) -> Any:
    device = decide_pending(context.engine, context.audit, principal.scope, item_id, status, principal.actor)
    return _pending_out(device)


@link_router.post(
    "/pending-devices/{item_id}/approve",
    response_model=PendingDeviceOut,
    responses=NOT_FOUND,
    summary="Approve a discovered device (status only: commission the meter with POST /meters)",
)
def approve_pending_device(context: Context, principal: Writer, item_id: ItemId) -> Any:
    return _decide(context, principal, item_id, "approved")


@link_router.post(
    "/pending-devices/{item_id}/reject",
    response_model=PendingDeviceOut,
    responses=NOT_FOUND,
    summary="Reject a discovered device",
)
def reject_pending_device(context: Context, principal: Writer, item_id: ItemId) -> Any:
    return _decide(context, principal, item_id, "rejected")


@link_router.get(
    "/{item_id}/link",
    response_model=GatewayLinkOut,
    responses=NOT_FOUND,
    summary="A gateway's link: key present, last seen, health, replay window",
)
def get_link(context: Context, principal: Reader, item_id: ItemId) -> Any:
    with context.engine.connect() as conn:
        status = link_status(conn, principal.scope, item_id)
    return GatewayLinkOut.model_validate(status, from_attributes=True)


@link_router.post(
    "/{item_id}/link/key",
    status_code=201,
    response_model=GatewayLinkKeyOut,
    responses={**NOT_FOUND, 422: {"description": "The device is a modem (problem+json)."}},
    summary="Generate (or rotate) a gateway's link key; the key is in this response only",
)
def create_link_key(context: Context, principal: Writer, item_id: ItemId, response: Response) -> Any:
    vault = context.vault or KeyVault(context.engine, load_master_key(context.settings))
    provisioned = provision_key(
        context.engine, vault, context.audit, principal.scope, item_id, principal.actor
    )
    response.headers["Cache-Control"] = "no-store"
    return GatewayLinkKeyOut(
        gateway_id=provisioned.gateway_id,
        ident=provisioned.ident,
        key_version=provisioned.key_version,
        key=provisioned.key.hex(),
    )


router = APIRouter()
router.include_router(link_router)  # first: /gateways/pending-devices is no /gateways/{id}
router.include_router(resource_router(GATEWAYS))
