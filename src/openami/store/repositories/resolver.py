"""Channel resolution for ingest: (tenant, meter serial, channel code) -> channel id.

Meters report readings by serial and channel code (OBIS code, "A+", ...); the reading tables want a
channel id. A known meter's channel is created the first time it is seen, so commissioning a meter does
not require declaring every register up front. An unknown meter is refused (NotFound): readings for
meters nobody registered are rejected messages, not new meters.

Channel ids never change once assigned (channels are neither deleted nor re-keyed), so callers may
cache them without invalidation (``openami.mdm.directory`` does).
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Connection

from openami.store.errors import Conflict
from openami.store.repositories import ingest
from openami.store.repositories.base import Scope
from openami.store.repositories.catalog import meters
from openami.store.repositories.ingest import ChannelKey

ChannelKind = Literal["interval", "register"]


def resolve_channel(
    conn: Connection,
    tenant_id: int,
    meter_serial: str,
    code: str,
    kind: ChannelKind,
    unit: str = "",
    interval_s: int | None = None,
) -> int:
    """The id of the meter's channel ``code``, created on first sight; safe against concurrent creators.

    Raises NotFound for an unknown meter and Conflict when the channel exists with the other kind
    (its readings live in the other table, so mixing them would split one series in two). The ingest
    hot path does the same for whole batches with ``openami.mdm.directory``.
    """
    meter_id = meters.get_by_key(conn, Scope(tenant_id), meter_serial).id
    key = ChannelKey(meter_id, code)
    found = ingest.channels(conn, [key])
    if key not in found:
        row = {
            "tenant_id": tenant_id,
            "meter_id": meter_id,
            "code": code,
            "kind": kind,
            "unit": unit,
            "interval_s": interval_s,
        }
        ingest.create_channels(conn, [row])
        found = ingest.channels(conn, [key])
    if found[key].kind != kind:
        raise Conflict(
            f"channel {code!r} of meter {meter_serial!r} is a {found[key].kind} channel, not {kind}"
        )
    return found[key].id
