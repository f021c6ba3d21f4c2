"""Meters (``meters:read|write``), their channels, where they are installed, and through which device
and mesh route they were reached over time (``GET /meters/{id}/routes``, ``docs/concepts/topology.md``).

The route history needs ``gateways:read`` besides ``meters:read``: it names the network's devices and,
in a mesh, neighbouring meters, which a customer login (or a billing clerk) has no business seeing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query

from openami.api.crud import NOT_FOUND, ItemId, Resource, history_page, list_page, resource_router
from openami.api.deps import Context, require
from openami.api.pagination import Page
from openami.api.routes.channels import CHANNELS
from openami.api.schemas import ChannelQuery, HistoryQuery, InstallationIn, MeterIn, MeterQuery
from openami.hes.topology import RoutePeriod, routes_of
from openami.security.service import Principal
from openami.store.repositories import (
    Channel,
    Meter,
    MeterInstallation,
    install_meter,
    meters,
)

METERS = Resource(
    path="/meters",
    name="meter",
    permission="meters",
    repository=meters,
    row_type=Meter,
    query_model=MeterQuery,
    create_model=MeterIn,
)

router = resource_router(METERS)
Reader = Annotated[Principal, Depends(require("meters:read"))]
Writer = Annotated[Principal, Depends(require("meters:write"))]


@router.get(
    "/{item_id}/channels",
    response_model=Page[Channel],
    responses=NOT_FOUND,
    summary="List a meter's channels",
)
def list_meter_channels(
    context: Context, principal: Reader, item_id: ItemId, query: Annotated[ChannelQuery, Query()]
) -> Page[Any]:
    with context.engine.connect() as conn:
        meters.get(conn, principal.scope, item_id)  # 404 for meters out of scope, even without channels
    return list_page(context, principal.scope, CHANNELS, query.model_copy(update={"meter_id": item_id}))


@router.post(
    "/{item_id}/installations",
    status_code=201,
    response_model=MeterInstallation,
    responses={**NOT_FOUND, 409: {"description": "The meter is installed elsewhere (problem+json)."}},
    summary="Record the installation of a meter at a service point",
)
def create_installation(
    context: Context, principal: Writer, item_id: ItemId, body: InstallationIn
) -> MeterInstallation:
    with context.engine.begin() as conn:
        meters.get(conn, principal.scope, item_id)
        installation = install_meter(
            conn, principal.tenant_id, item_id, body.service_point_id, body.installed_at
        )
        context.audit.append(
            conn,
            principal.tenant_id,
            principal.actor,
            "meter.install",
            "meter",
            item_id,
            {"service_point_id": body.service_point_id, "installed_at": body.installed_at.isoformat()},
        )
    return installation


@router.get(
    "/{item_id}/routes",
    response_model=Page[RoutePeriod],
    responses={**NOT_FOUND, 422: {"description": "until is not after since (problem+json)."}},
    summary="Through which device and mesh route a meter was reached, over time (oldest first)",
)
def list_meter_routes(
    context: Context, principal: Reader, item_id: ItemId, query: Annotated[HistoryQuery, Query()]
) -> Page[Any]:
    principal.require("gateways:read")
    return history_page(context, principal.scope, item_id, query, routes_of)
