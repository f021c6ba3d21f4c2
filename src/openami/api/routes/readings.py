"""Readings of one channel (``readings:read``), a time range at a time, keyset-paginated by timestamp.

The table (interval or register) follows from the channel's kind, so clients never name it. ``start``
and ``end`` must carry a UTC offset: a naive time is ambiguous around DST changes and is refused (422)
rather than guessed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId
from openami.api.deps import Context, require
from openami.api.pagination import Page, after_ts, ts_cursor
from openami.api.problems import Problem
from openami.api.schemas import ReadingsQuery
from openami.security.service import Principal
from openami.store.readings import ReadingRow, query_readings
from openami.store.repositories import channels, clamp_limit

router = APIRouter(tags=["readings"], responses=AUTH_RESPONSES)
Reader = Annotated[Principal, Depends(require("readings:read"))]


@router.get(
    "/channels/{item_id}/readings",
    response_model=Page[ReadingRow],
    responses=NOT_FOUND,
    summary="Readings of a channel in [start, end)",
)
def list_readings(
    context: Context, principal: Reader, item_id: ItemId, query: Annotated[ReadingsQuery, Query()]
) -> Page[Any]:
    if query.end <= query.start:
        raise Problem(422, "end must be after start")
    with context.engine.connect() as conn:
        channel = channels.get(conn, principal.scope, item_id)
    limit = clamp_limit(query.limit)
    rows = query_readings(
        context.engine,
        channel.kind,
        channel.id,
        query.start,
        query.end,
        limit=limit,
        after=after_ts(query.cursor),
        all_versions=query.all_versions,
    )
    full = len({row.ts for row in rows}) == limit
    return Page(items=rows, next_cursor=ts_cursor(rows[-1].ts) if rows and full else None)
