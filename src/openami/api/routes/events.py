"""Meter and gateway events (``events:read``), filtered by meter, severity and time, newest last."""

from __future__ import annotations

from sqlalchemy import Connection

from openami.api.crud import Resource, resource_router
from openami.api.schemas import EventQuery
from openami.store.repositories import Event, Scope, events, list_events


def _list(conn: Connection, scope: Scope, query: EventQuery, after: int | None, limit: int) -> list[Event]:
    return list_events(
        conn,
        scope,
        meter_id=query.meter_id,
        severity=query.severity,
        since=query.since,
        until=query.until,
        after_id=after,
        limit=limit,
    )


EVENTS = Resource(
    path="/events",
    name="event",
    permission="events",
    repository=events,
    row_type=Event,
    query_model=EventQuery,
    lister=_list,
)

router = resource_router(EVENTS)
