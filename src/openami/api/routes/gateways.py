"""Gateways, concentrators and modems: the ``comm_device`` table (``gateways:read|write``), and the
gateway link of OpenAMI gateways (``docs/drivers/gateway-link.md``).

``GET /gateways/{id}/link`` shows a gateway's link (key present and its version, last seen, last health
with the backlog it reported, replay window, configuration version), never its key.
``POST /gateways/{id}/link/key`` generates a new link key, stores it sealed in the key vault and
returns it in this one response (``Cache-Control: no-store``); it cannot be read back later. A second
call rotates the key. Both are audited (``gateway.link_key``) without the key.

``GET /gateways/{id}/topology`` shows the tree under a gateway now (its concentrators, recursively, and
the meters read through each, with their mesh route and link quality) with the gateway's last health
and last seen; ``GET /gateways/{id}/parents`` the history of the device's parent
(``docs/concepts/topology.md``).

``GET /gateways/pending-devices`` lists the meters gateways discovered; ``POST
/gateways/pending-devices/{id}/approve`` and ``.../reject`` record the operator's decision (status and
audit entry only: approving does not create the meter, which is commissioned with ``POST /meters``).

The link and pending-device routes are registered before the generic ``/gateways/{id}`` ones, so
``pending-devices`` is never taken for an id.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from openami.api.crud import (
    AUTH_RESPONSES,
    NOT_FOUND,
    ItemId,
    Resource,
    history_page,
    page_of,
    resource_router,
)
from openami.api.deps import Context, require
from openami.api.pagination import Page, after_id
from openami.api.problems import Problem
from openami.api.schemas import GatewayIn, GatewayQuery, HistoryQuery, PendingDeviceQuery
from openami.hes.gateway_link_store import (
    GatewayConfig,
    LinkStatus,
    PendingDevice,
    UnknownGateway,
    decide_pending,
    gateway_config,
    link_status,
    list_pending,
    provision_key,
)
from openami.hes.topology import ParentPeriod, current_tree, parents_of
from openami.security.keyvault import KeyVault, load_master_key
from openami.security.service import Principal
from openami.store.repositories import CommDevice, clamp_limit, comm_devices
from openami.transports.errors import ConnectError

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


class GatewayLinkKeyOut(BaseModel):
    """A new link key, shown once: configure it on the gateway (``uplink.key``) now."""

    gateway_id: int
    ident: str
    key_version: int
    key: str
    """64 hex digits (32 bytes, AES-256)."""


class TopologyMeterOut(BaseModel):
    """A meter read through a device now; ``since``, ``source``, ``hops`` and ``quality`` are those of
    its current route (``hops``: the mesh idents from the meter's neighbour to the gateway, ``[]`` for a
    direct link, null when no gateway reported one; ``quality`` as reported when the route began)."""

    id: int
    serial: str
    status: str
    since: datetime | None
    source: str | None
    hops: list[str] | None
    quality: dict[str, Any]


class TopologyDeviceOut(BaseModel):
    """A gateway, concentrator or modem with its meters and the devices under it;
    ``parent_since``: since when it hangs under its parent."""

    id: int
    ident: str
    kind: str
    status: str
    last_seen_at: datetime | None
    parent_since: datetime | None
    meters: list[TopologyMeterOut]
    devices: list[TopologyDeviceOut]


class GatewayTopologyOut(BaseModel):
    """The tree under a gateway now, with its last health report (as in ``GET /gateways/{id}/link``)."""

    gateway_id: int
    ident: str
    kind: str
    last_seen_at: datetime | None
    health: dict[str, Any] | None
    health_at: datetime | None
    meter_count: int
    device_count: int
    """Devices in the tree, the gateway included."""
    tree: TopologyDeviceOut


@link_router.get(
    "/pending-devices",
    response_model=Page[PendingDevice],
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
    return page_of(items, limit)


def _decide(
    context: Context, principal: Principal, item_id: int, status: Literal["approved", "rejected"]
) -> Any:
    return decide_pending(context.engine, context.audit, principal.scope, item_id, status, principal.actor)


@link_router.post(
    "/pending-devices/{item_id}/approve",
    response_model=PendingDevice,
    responses=NOT_FOUND,
    summary="Approve a discovered device (status only: commission the meter with POST /meters)",
)
def approve_pending_device(context: Context, principal: Writer, item_id: ItemId) -> Any:
    return _decide(context, principal, item_id, "approved")


@link_router.post(
    "/pending-devices/{item_id}/reject",
    response_model=PendingDevice,
    responses=NOT_FOUND,
    summary="Reject a discovered device",
)
def reject_pending_device(context: Context, principal: Writer, item_id: ItemId) -> Any:
    return _decide(context, principal, item_id, "rejected")


@link_router.get(
    "/{item_id}/link",
    response_model=LinkStatus,  # the store's dataclass: the API shows it as it is, never the key
    responses=NOT_FOUND,
    summary="A gateway's link: key present, last seen, health, replay window",
)
def get_link(context: Context, principal: Reader, item_id: ItemId) -> Any:
    with context.engine.connect() as conn:
        status = link_status(conn, principal.scope, item_id)
    return status


class GatewayConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    poll_interval_s: int | None = Field(None, ge=60, le=86400)


class GatewayConfigOut(BaseModel):
    gateway_id: int
    ident: str
    version: int
    meters: int
    skipped: list[str]
    """Meters under the gateway without an address on their device: not sent."""


@link_router.post(
    "/{item_id}/link/config",
    status_code=202,
    response_model=GatewayConfigOut,
    responses={**NOT_FOUND, 503: {"description": "No gateway link, or the broker cannot be reached."}},
    summary="Push the registry's meter list (and poll interval) to a gateway as a CONFIG envelope",
)
async def push_gateway_config(
    context: Context, principal: Writer, item_id: ItemId, body: GatewayConfigIn
) -> Any:
    link = context.gateway_link
    if link is None:
        raise Problem(503, "the gateway link does not run in this process")

    def plan() -> GatewayConfig:
        with context.engine.connect() as conn:
            return gateway_config(conn, principal.scope, item_id)

    config = await asyncio.to_thread(plan)
    payload: dict[str, Any] = {"meters": config.meters}
    if body.poll_interval_s is not None:
        payload["poll_interval_s"] = body.poll_interval_s
    try:
        version = await link.push_config(principal.tenant_slug, config.ident, payload)
    except UnknownGateway:
        raise Problem(409, f"gateway {config.ident!r} has no link key yet") from None
    except ConnectError as exc:
        raise Problem(503, str(exc)) from None

    def audit() -> None:
        with context.engine.begin() as conn:
            detail = {"ident": config.ident, "version": version, "meters": len(config.meters)}
            context.audit.append(
                conn, principal.tenant_id, principal.actor, "gateway.config_pushed", "gateway",
                config.gateway_id, detail,
            )  # fmt: skip

    await asyncio.to_thread(audit)
    return GatewayConfigOut(
        gateway_id=config.gateway_id,
        ident=config.ident,
        version=version,
        meters=len(config.meters),
        skipped=config.skipped,
    )


@link_router.get(
    "/{item_id}/topology",
    response_model=GatewayTopologyOut,
    responses=NOT_FOUND,
    summary="The devices and meters under a gateway now, with its last health",
)
def get_topology(context: Context, principal: Reader, item_id: ItemId) -> Any:
    with context.engine.connect() as conn:
        topology = current_tree(conn, principal.scope, item_id)
    root = topology.root
    return GatewayTopologyOut(
        gateway_id=root.id,
        ident=root.ident,
        kind=root.kind,
        last_seen_at=root.last_seen_at,
        health=topology.health,
        health_at=topology.health_at,
        meter_count=topology.meter_count,
        device_count=topology.device_count,
        tree=TopologyDeviceOut.model_validate(root, from_attributes=True),
    )


@link_router.get(
    "/{item_id}/parents",
    response_model=Page[ParentPeriod],
    responses={**NOT_FOUND, 422: {"description": "until is not after since (problem+json)."}},
    summary="The history of a device's parent (a concentrator moved between gateways)",
)
def list_parents(
    context: Context, principal: Reader, item_id: ItemId, query: Annotated[HistoryQuery, Query()]
) -> Any:
    return history_page(context, principal.scope, item_id, query, parents_of)


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
