"""Gateways, concentrators and modems: the ``comm_device`` table (``gateways:read|write``)."""

from __future__ import annotations

from openami.api.crud import Resource, resource_router
from openami.api.schemas import GatewayIn, GatewayQuery
from openami.store.repositories import CommDevice, comm_devices

GATEWAYS = Resource(
    path="/gateways",
    name="gateway",
    permission="gateways",
    repository=comm_devices,
    row_type=CommDevice,
    query_model=GatewayQuery,
    create_model=GatewayIn,
)

router = resource_router(GATEWAYS)
