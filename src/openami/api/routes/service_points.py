"""Service points: where a utility is delivered and a meter is installed (``service_points:read|write``)."""

from __future__ import annotations

from openami.api.crud import Resource, resource_router
from openami.api.schemas import ServicePointIn, ServicePointQuery
from openami.store.repositories import ServicePoint, service_points

SERVICE_POINTS = Resource(
    path="/service-points",
    name="service_point",
    permission="service_points",
    repository=service_points,
    row_type=ServicePoint,
    query_model=ServicePointQuery,
    create_model=ServicePointIn,
)

router = resource_router(SERVICE_POINTS)
