"""The topology's history: ``meter_route`` (through which device, and which mesh route, a meter was
reached) and ``device_parent`` (under which device a concentrator hung), both as periods
``[since, until)`` with ``until`` NULL for the current one.

Invariant: at most one open row per meter (per device), held by a partial unique index. A change closes
the open row at the change time and opens the next; nothing else is ever updated (a trigger refuses it).

Concurrency: a change first closes the row it read (``UPDATE ... WHERE id = :id AND until IS NULL``),
which on PostgreSQL waits for a concurrent writer of that row and then finds it closed, and on SQLite
runs under the database's single write lock. Closing nothing therefore means someone else changed the
route meanwhile: :func:`record_registration` reads again and retries; a caller running its own
transaction (``openami.hes.topology.record_routes``) gets :class:`HistoryRaced` and retries the whole
transaction. Opening a row where another writer opened one first breaks the unique index: also
:class:`HistoryRaced` (on PostgreSQL the transaction is then lost, so only a new one can retry).

The registry itself (``meter.comm_device_id``, ``comm_device.parent_id``) says where things are now;
the meters and gateways repositories call :func:`record_registration` and :func:`record_parent` on every
write that sets those columns, in the writer's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import CTE, ColumnElement, Connection, Table, select, update
from sqlalchemy.exc import IntegrityError

from openami.store.errors import Conflict, InvalidReference
from openami.store.repositories.base import clamp_limit, is_unique_violation
from openami.store.repositories.models import DeviceParent, MeterRoute
from openami.store.schema import comm_device, device_parent, meter_route

__all__ = [
    "HistoryRaced",
    "change_route",
    "check_parent",
    "open_routes",
    "parent_history",
    "record_parent",
    "record_registration",
    "route_history",
    "subtree",
]

_RETRIES: Final = 3
_CHUNK: Final = 500
"""Ids per IN list: far below SQLite's bound-parameter limit."""


class HistoryRaced(Conflict):
    """The open row changed under the writer (a concurrent change of the same meter or device)."""


def _close(conn: Connection, table: Table, row_id: int, since: datetime, at: datetime) -> bool:
    """Close the open row ``row_id`` at ``at`` (never before its start); False if it is no longer open."""
    closed = conn.execute(
        update(table).where(table.c.id == row_id, table.c.until.is_(None)).values(until=max(at, since))
    ).rowcount
    return closed == 1


def _open(conn: Connection, table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        row = conn.execute(table.insert().values(**values).returning(*table.c)).one()
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise HistoryRaced(f"{table.name}: another writer opened a row meanwhile; try again") from exc
        raise InvalidReference(f"{table.name} violates a constraint") from exc
    return dict(row._mapping)


def _route(row: Any) -> MeterRoute:
    return MeterRoute(**row._mapping)


# -- meter routes ------------------------------------------------------------------------------------


def open_routes(conn: Connection, tenant_id: int, meter_ids: Iterable[int]) -> dict[int, MeterRoute]:
    """The current (open) route of each meter that has one."""
    ids = sorted(set(meter_ids))
    found: dict[int, MeterRoute] = {}
    for start in range(0, len(ids), _CHUNK):
        query = select(meter_route).where(
            meter_route.c.tenant_id == tenant_id,
            meter_route.c.meter_id.in_(ids[start : start + _CHUNK]),
            meter_route.c.until.is_(None),
        )
        found.update((row.meter_id, _route(row)) for row in conn.execute(query))
    return found


def change_route(
    conn: Connection,
    tenant_id: int,
    meter_id: int,
    comm_device_id: int | None,
    at: datetime,
    *,
    expected: MeterRoute | None,
    source: str = "registration",
    hops: Sequence[str] | None = None,
    quality: Mapping[str, Any] | None = None,
) -> MeterRoute | None:
    """Close ``expected`` (the open row the caller read, None: there was none) at ``at`` and open the
    route through ``comm_device_id`` (None: the meter is reached through nothing now, no row opens).

    :class:`HistoryRaced` when ``expected`` is no longer the open row, or another row was opened.
    """
    start = at
    if expected is not None:
        if not _close(conn, meter_route, expected.id, expected.since, at):
            raise HistoryRaced(f"the route of meter {meter_id} changed meanwhile")
        start = max(at, expected.since)
    if comm_device_id is None:
        return None
    values = {
        "tenant_id": tenant_id,
        "meter_id": meter_id,
        "comm_device_id": comm_device_id,
        "since": start,
        "quality": dict(quality or {}),
        "source": source,
    }
    if hops is not None:  # left out, not JSON null: NULL means "not reported"
        values["hops"] = list(hops)
    return MeterRoute(**_open(conn, meter_route, values))


def record_registration(
    conn: Connection, tenant_id: int, meter_id: int, comm_device_id: int | None, at: datetime
) -> bool:
    """The meter is now registered on ``comm_device_id`` (None: on nothing): if that is not the device
    of its open route, close that route at ``at`` and open one (source ``registration``, hops not known
    yet). False when nothing changed. Runs in the caller's transaction, after the meter row was written.
    """
    for _ in range(_RETRIES):
        current = open_routes(conn, tenant_id, [meter_id]).get(meter_id)
        if (current.comm_device_id if current else None) == comm_device_id:
            return False
        if current is not None and not _close(conn, meter_route, current.id, current.since, at):
            continue  # a concurrent writer closed it: read its row and decide again
        if comm_device_id is not None:
            since = at if current is None else max(at, current.since)
            values = {
                "tenant_id": tenant_id,
                "meter_id": meter_id,
                "comm_device_id": comm_device_id,
                "since": since,
                "source": "registration",
            }
            _open(conn, meter_route, values)  # HistoryRaced: this transaction cannot go on
        return True
    raise HistoryRaced(f"the route of meter {meter_id} keeps changing; try again")


def _period(table: Table, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    """Rows whose period overlaps ``[since, until)``."""
    where: list[ColumnElement[bool]] = []
    if until is not None:
        where.append(table.c.since < until)
    if since is not None:
        where.append(table.c.until.is_(None) | (table.c.until > since))
    return where


def route_history(
    conn: Connection,
    tenant_id: int,
    meter_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[MeterRoute]:
    """The meter's routes overlapping ``[since, until)``, oldest first (id order is time order: a
    meter's rows are only ever appended after its open one)."""
    query = select(meter_route).where(
        meter_route.c.tenant_id == tenant_id,
        meter_route.c.meter_id == meter_id,
        *_period(meter_route, since, until),
    )
    if after_id is not None:
        query = query.where(meter_route.c.id > after_id)
    rows = conn.execute(query.order_by(meter_route.c.id).limit(clamp_limit(limit)))
    return [_route(row) for row in rows]


# -- device parents ----------------------------------------------------------------------------------


def subtree(tenant_id: int, root_id: int) -> CTE:
    """A recursive CTE of the ids (column ``id``) of ``root_id`` and every device below it, now.

    UNION (not UNION ALL): a cycle written behind the repositories' back ends instead of looping."""
    top = select(comm_device.c.id).where(comm_device.c.id == root_id, comm_device.c.tenant_id == tenant_id)
    tree = top.cte("subtree", recursive=True)
    child = comm_device.alias("child")
    return tree.union(
        select(child.c.id).where(child.c.parent_id == tree.c.id, child.c.tenant_id == tenant_id)
    )


def check_parent(conn: Connection, tenant_id: int, device_id: int, parent_id: int) -> None:
    """InvalidReference when ``parent_id`` is ``device_id`` itself or below it (a cycle)."""
    tree = subtree(tenant_id, device_id)
    below = conn.execute(select(tree.c.id).where(tree.c.id == parent_id)).first()
    if below is not None:
        raise InvalidReference(f"parent_id {parent_id} is device {device_id} itself or below it")


def record_parent(
    conn: Connection, tenant_id: int, device_id: int, parent_id: int | None, at: datetime
) -> bool:
    """The device now hangs under ``parent_id`` (None: under nothing): close its open row at ``at`` and
    open the next when that changed. False when nothing changed. Runs in the caller's transaction."""
    for _ in range(_RETRIES):
        row = conn.execute(
            select(device_parent).where(
                device_parent.c.tenant_id == tenant_id,
                device_parent.c.comm_device_id == device_id,
                device_parent.c.until.is_(None),
            )
        ).first()
        current = None if row is None else DeviceParent(**row._mapping)
        if (current.parent_id if current else None) == parent_id:
            return False
        start = at
        if current is not None:
            if not _close(conn, device_parent, current.id, current.since, at):
                continue  # changed meanwhile: read again
            start = max(at, current.since)
        if parent_id is not None:
            values = {
                "tenant_id": tenant_id,
                "comm_device_id": device_id,
                "parent_id": parent_id,
                "since": start,
            }
            _open(conn, device_parent, values)
        return True
    raise HistoryRaced(f"the parent of device {device_id} keeps changing; try again")


def parent_history(
    conn: Connection,
    tenant_id: int,
    device_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[DeviceParent]:
    """The device's parents overlapping ``[since, until)``, oldest first."""
    query = select(device_parent).where(
        device_parent.c.tenant_id == tenant_id,
        device_parent.c.comm_device_id == device_id,
        *_period(device_parent, since, until),
    )
    if after_id is not None:
        query = query.where(device_parent.c.id > after_id)
    rows = conn.execute(query.order_by(device_parent.c.id).limit(clamp_limit(limit)))
    return [DeviceParent(**row._mapping) for row in rows]
