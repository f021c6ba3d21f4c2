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
/gateways/pending-devices/{id}/approve`` commissions one (the meter, validated as ``POST /meters``
validates it, on a device entry carrying its address under the gateway, the audit entry, and the
gateway's next CONFIG with the meter added, in one transaction; the CONFIG goes out after the commit,
or is pending); ``.../reject`` records the refusal.

``POST /gateways/{id}/link/config`` answers 202 with ``delivered``: false when the broker is away or
the link does not run in this process; the configuration is then pending and sent at the gateway's
next HEALTH.

The link and pending-device routes are registered before the generic ``/gateways/{id}`` ones, so
``pending-devices`` is never taken for an id.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
from openami.api.schemas import (
    Address,
    GatewayIn,
    GatewayQuery,
    HistoryQuery,
    Key64,
    Label120,
    MeterIn,
    PendingDeviceQuery,
    Slug32,
    Utility,
)
from openami.hes.gateway_link_store import (
    LinkStatus,
    PendingDevice,
    PushedConfig,
    UnknownGateway,
    approve_pending,
    decide_pending,
    get_pending,
    link_status,
    list_pending,
    provision_key,
    push_config,
)
from openami.hes.topology import ParentPeriod, current_tree, parents_of
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


class MeterKeysIn(BaseModel):
    """A meter's own keys, as hex (wM-Bus and P1: AES-128; DLMS: AES-128 or -256), or the DLMS LLS
    password; checked as the gateway checks them. They travel only inside the sealed CONFIG."""

    model_config = ConfigDict(extra="forbid")
    encryption: Annotated[str, Field(max_length=128)] | None = None
    authentication: Annotated[str, Field(max_length=128)] | None = None
    password: Annotated[str, Field(max_length=128)] | None = None


class ApproveIn(BaseModel):
    """What to commission a discovered device as; each field defaults to what the gateway reported
    (``serial``: the device's id). The meter fields are those of ``POST /meters``."""

    model_config = ConfigDict(extra="forbid")
    serial: Key64 | None = None
    manufacturer: Label120 | None = None
    model: Label120 | None = None
    medium: Utility | None = None
    protocol: Slug32 | None = None
    address: Annotated[Address, Field(max_length=255)] | None = None
    """Overrides the address the gateway reported (``mbus+serial:///dev/ttyUSB0?secondary=...``)."""
    keys: MeterKeysIn | None = None


class ApprovalOut(BaseModel):
    pending: PendingDevice
    meter_id: int
    serial: str
    device_id: int
    """The device entry under the gateway that carries the meter's address."""
    config_version: int | None
    """The gateway's new configuration version (null: the gateway has no link key)."""
    delivered: bool
    """The CONFIG went to the broker now (false: pending, sent at the gateway's next HEALTH)."""


@link_router.post(
    "/pending-devices/{item_id}/approve",
    response_model=ApprovalOut,
    responses={
        **NOT_FOUND,
        409: {"description": "Approved already, or the serial exists (problem+json)."},
        422: {"description": "Invalid meter fields, keys or address (problem+json)."},
    },
    summary="Approve a discovered device: create its meter and add it to the gateway's configuration",
)
async def approve_pending_device(
    context: Context, principal: Writer, item_id: ItemId, body: ApproveIn | None = None
) -> Any:
    wanted = body or ApproveIn()

    def approve() -> Any:
        with context.engine.connect() as conn:
            found = get_pending(conn, principal.scope, item_id)
        defaults = {
            "serial": found.ident,
            "manufacturer": found.manufacturer,
            "medium": found.medium,
            "protocol": found.protocol,
        }
        given = wanted.model_dump(exclude_none=True, exclude={"address", "keys"})
        try:  # POST /meters' own model: the same rules, one place
            meter_in = MeterIn.model_validate({**defaults, **given})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise Problem(422, f"{where}: {first['msg']} (give it in the body)") from None
        keys = None if wanted.keys is None else wanted.keys.model_dump(exclude_none=True)
        return approve_pending(
            context.engine,
            _vault(context),
            context.audit,
            principal.scope,
            item_id,
            principal.actor,
            meter_values=meter_in.model_dump(exclude_none=True),
            address=wanted.address,
            keys=keys,
        )

    approval = await asyncio.to_thread(approve)
    delivered = False
    link = context.gateway_link
    if approval.config is not None and link is not None:
        ident = await asyncio.to_thread(_gateway_ident, context, principal, approval.pending.gateway_id)
        with contextlib.suppress(UnknownGateway):  # a key rotated away meanwhile: stays pending
            delivered = await link.deliver_pending_config(principal.tenant_slug, ident)
    return ApprovalOut(
        pending=approval.pending,
        meter_id=approval.meter.id,
        serial=approval.meter.serial,
        device_id=approval.device_id,
        config_version=None if approval.config is None else approval.config.version,
        delivered=delivered,
    )


def _gateway_ident(context: Any, principal: Principal, gateway_id: int) -> str:
    with context.engine.connect() as conn:
        return comm_devices.get(conn, principal.scope, gateway_id).ident


def _vault(context: Any) -> KeyVault:
    return context.vault or KeyVault(context.engine, load_master_key(context.settings))


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
    delivered: bool
    """It went to the broker now; false: pending (broker away, or no link in this process), sent at
    the gateway's next HEALTH. Either way the head-end sends it until HEALTH reports the version."""


@link_router.post(
    "/{item_id}/link/config",
    status_code=202,
    response_model=GatewayConfigOut,
    responses={**NOT_FOUND, 409: {"description": "The gateway has no link key yet (problem+json)."}},
    summary="Push the registry's meter list (and poll interval) to a gateway as a CONFIG envelope",
)
async def push_gateway_config(
    context: Context, principal: Writer, item_id: ItemId, body: GatewayConfigIn
) -> Any:
    vault = _vault(context)

    def stage() -> PushedConfig:
        with context.engine.begin() as conn:
            try:
                return push_config(
                    conn, vault, context.audit, principal.scope, item_id, principal.actor,
                    poll_interval_s=body.poll_interval_s,
                )  # fmt: skip
            except UnknownGateway:
                ident = comm_devices.get(conn, principal.scope, item_id).ident
                raise Problem(409, f"gateway {ident!r} has no link key yet") from None

    pushed = await asyncio.to_thread(stage)
    delivered = False
    if context.gateway_link is not None:
        with contextlib.suppress(UnknownGateway):
            delivered = await context.gateway_link.deliver_pending_config(principal.tenant_slug, pushed.ident)
    return GatewayConfigOut(
        gateway_id=pushed.gateway_id,
        ident=pushed.ident,
        version=pushed.version,
        meters=pushed.meters,
        skipped=pushed.skipped,
        delivered=delivered,
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
    vault = _vault(context)
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
