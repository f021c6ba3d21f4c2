"""Channels: one measured quantity of a meter; part of the meter, so guarded by ``meters:read``.

Channels are created by ingest on first sight (``resolve_channel``), hence no POST here.
"""

from __future__ import annotations

from openami.api.crud import Resource, resource_router
from openami.api.schemas import ChannelQuery
from openami.store.repositories import Channel, channels

CHANNELS = Resource(
    path="/channels",
    name="channel",
    permission="meters",
    repository=channels,
    row_type=Channel,
    query_model=ChannelQuery,
)

router = resource_router(CHANNELS)
