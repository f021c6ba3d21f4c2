"""The gateway registry's topology: meter -> concentrator -> gateway, now and over time
(``docs/concepts/topology.md``).

Where things are *now* is the registry: ``meter.comm_device_id`` (the device a meter is read through)
and ``comm_device.parent_id`` (the device a concentrator hangs under). How that came to be is the
history in ``meter_route`` and ``device_parent`` (``openami.store.repositories.topology``):

- registration: every write of those columns through the meters and gateways repositories (the API's
  POST and PATCH) closes the open history row and opens the next in the same transaction as the
  change and its audit entry (:func:`record_registration`, :func:`record_parent`);
- gateway reports: a HEALTH envelope may carry the mesh route of each meter the gateway reaches
  (``docs/drivers/gateway-link.md``); :func:`record_routes` closes and opens a meter's route when its
  hops changed and writes nothing when they did not. A gateway does not move meters: a report for a
  meter registered outside the gateway's own tree (or unknown in the tenant) is a problem, not stored.

Reading: :func:`current_tree` (a gateway, the devices under it, recursively, and the meters on each,
with their current hops and quality), :func:`routes_of` (a meter's history), :func:`parents_of` (a
device's). All reads are confined to a :class:`~openami.store.repositories.Scope`: another tenant's
ids are :class:`~openami.store.errors.NotFound`.

Blocking (SQLAlchemy): the gateway link calls :func:`record_routes` from a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, Engine, select

from openami.security.errors import InvalidInput
from openami.store.repositories.base import Scope
from openami.store.repositories.catalog import comm_devices, meters
from openami.store.repositories.models import DeviceParent, MeterRoute
from openami.store.repositories.topology import (
    HistoryRaced,
    change_route,
    open_routes,
    parent_history,
    record_parent,
    record_registration,
    route_history,
    subtree,
)
from openami.store.schema import comm_device, device_parent, gateway_link, meter, meter_route

__all__ = [
    "MAX_HOPS",
    "GatewayTopology",
    "HistoryRaced",
    "InvalidPeriod",
    "ParentPeriod",
    "RoutePeriod",
    "RouteReport",
    "RoutesRecorded",
    "TreeDevice",
    "TreeMeter",
    "current_tree",
    "parents_of",
    "parse_routes",
    "record_parent",
    "record_registration",
    "record_reported_routes",
    "record_routes",
    "routes_of",
]

MAX_HOPS: Final = 64
"""Longest mesh route accepted in a report (hops between the meter and the gateway)."""
_RETRIES: Final = 3
_CHUNK: Final = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InvalidPeriod(InvalidInput):
    """A history query whose ``until`` is not after its ``since``."""


# -- gateway reports ---------------------------------------------------------------------------------


def _clean(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


_Ident = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_clean)]


class _Route(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the report may grow

    meter: _Ident
    via: list[_Ident] = Field(default_factory=list, max_length=MAX_HOPS)
    rssi: float | None = Field(None, ge=-200, le=50, allow_inf_nan=False)
    snr: float | None = Field(None, ge=-100, le=100, allow_inf_nan=False)
    hops: int | None = Field(None, ge=0, le=255)


@dataclass(frozen=True, slots=True)
class RouteReport:
    """One meter's route as a gateway reported it: its ``serial``, the mesh ``via`` (idents from the
    meter's radio neighbour to the gateway, empty for a direct link) and the link ``quality``
    (``rssi`` dBm, ``snr`` dB, ``hops`` when reported)."""

    meter: str
    via: tuple[str, ...] = ()
    quality: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoutesRecorded:
    """What :func:`record_routes` did: routes opened (new or changed), routes unchanged, and the
    reports it did not store, each with the reason."""

    changed: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)


def parse_routes(raw: Any) -> tuple[list[RouteReport], list[str]]:
    """The ``routes`` of a HEALTH payload as reports, and what was dropped (item by item, with the
    reason). A meter listed twice keeps its first entry."""
    if not isinstance(raw, list):
        return [], ["'routes' must be a list"]
    reports: dict[str, RouteReport] = {}
    problems: list[str] = []
    for index, item in enumerate(raw):
        try:
            route = _Route.model_validate(item)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            problems.append(f"routes[{index}] dropped: {where}: {first['msg']}")
            continue
        if route.meter in reports:
            problems.append(f"routes[{index}] dropped: meter {route.meter!r} listed twice")
            continue
        quality = {
            name: value
            for name, value in (("rssi", route.rssi), ("snr", route.snr), ("hops", route.hops))
            if value is not None
        }
        reports[route.meter] = RouteReport(route.meter, tuple(route.via), quality)
    return list(reports.values()), problems


def record_routes(
    engine: Engine, tenant_id: int, gateway_id: int, reports: Sequence[RouteReport], at: datetime
) -> RoutesRecorded:
    """Record the routes gateway ``gateway_id`` reported at ``at`` (docstring of the module).

    Per meter: unknown in the tenant, registered on no device or on one outside the gateway's tree, or
    a report older than the current route: a problem, nothing stored. Same device and hops as the
    open route: nothing written (quality alone does not make a new route). Otherwise the open route is
    closed at ``at`` and the reported one opened (source ``gateway``, on the meter's registered device).
    One transaction, retried when a concurrent writer changed one of the meters meanwhile.
    NotFound when the gateway is not a device of the tenant.
    """
    for attempt in range(_RETRIES):
        try:
            with engine.begin() as conn:
                return _record_routes(conn, tenant_id, gateway_id, reports, at)
        except HistoryRaced:
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _record_routes(
    conn: Connection, tenant_id: int, gateway_id: int, reports: Sequence[RouteReport], at: datetime
) -> RoutesRecorded:
    gateway = comm_devices.get(conn, Scope(tenant_id), gateway_id)
    tree = subtree(tenant_id, gateway.id)
    below = set(conn.execute(select(tree.c.id)).scalars())
    serials = sorted({report.meter for report in reports})
    registered: dict[str, tuple[int, int | None]] = {}
    for start in range(0, len(serials), _CHUNK):
        rows = conn.execute(
            select(meter.c.serial, meter.c.id, meter.c.comm_device_id).where(
                meter.c.tenant_id == tenant_id, meter.c.serial.in_(serials[start : start + _CHUNK])
            )
        )
        registered.update((row.serial, (row.id, row.comm_device_id)) for row in rows)
    current = open_routes(conn, tenant_id, (meter_id for meter_id, _ in registered.values()))
    changed = unchanged = 0
    problems: list[str] = []
    done: set[str] = set()
    for report in reports:
        if report.meter in done:
            problems.append(f"meter {report.meter!r} reported twice: the first report is used")
            continue
        done.add(report.meter)
        found = registered.get(report.meter)
        if found is None:
            problems.append(f"meter {report.meter!r} is unknown")
            continue
        meter_id, device_id = found
        if device_id is None or device_id not in below:
            where = "on no device" if device_id is None else f"on device {device_id}"
            problems.append(
                f"meter {report.meter!r} is registered {where}, not under gateway {gateway.ident!r}"
            )
            continue
        route = current.get(meter_id)
        hops = list(report.via)
        if route is not None and route.comm_device_id == device_id and route.hops == hops:
            unchanged += 1
            continue
        if route is not None and at < route.since:
            problems.append(f"meter {report.meter!r}: the report is older than its current route")
            continue
        change_route(
            conn,
            tenant_id,
            meter_id,
            device_id,
            at,
            expected=route,
            source="gateway",
            hops=hops,
            quality=report.quality,
        )
        changed += 1
    return RoutesRecorded(changed, unchanged, problems)


def record_reported_routes(
    engine: Engine, tenant_id: int, gateway_id: int, raw: Any, at: datetime
) -> RoutesRecorded:
    """The ``routes`` of a gateway's HEALTH payload, as received: parsed (:func:`parse_routes`) and
    recorded (:func:`record_routes`); the problems of both steps together."""
    reports, problems = parse_routes(raw)
    if not reports:
        return RoutesRecorded(problems=problems)
    recorded = record_routes(engine, tenant_id, gateway_id, reports, at)
    return RoutesRecorded(recorded.changed, recorded.unchanged, problems + recorded.problems)


# -- reading -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeMeter:
    """A meter read through a device now, with its open route (``since``, ``source``, ``hops``,
    ``quality`` as first reported on that route; None/empty when no route is recorded)."""

    id: int
    serial: str
    status: str
    since: datetime | None
    source: str | None
    hops: list[str] | None
    quality: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TreeDevice:
    """A gateway, concentrator or modem in the tree: its meters and the devices under it, now.
    ``parent_since``: since when it hangs under its parent (None for the root or when not recorded)."""

    id: int
    ident: str
    kind: str
    status: str
    last_seen_at: datetime | None
    parent_since: datetime | None
    meters: list[TreeMeter]
    devices: list[TreeDevice]


@dataclass(frozen=True, slots=True)
class GatewayTopology:
    """:func:`current_tree`: the tree under a device, with the device's last health report."""

    root: TreeDevice
    health: dict[str, Any] | None
    health_at: datetime | None
    meter_count: int
    device_count: int


def current_tree(conn: Connection, scope: Scope, gateway_id: int) -> GatewayTopology:
    """Device ``gateway_id`` (usually a gateway), every device under it (recursively) and the meters
    read through each, now. NotFound for another tenant's or no device."""
    root = comm_devices.get(conn, scope, gateway_id)
    tree = subtree(scope.tenant_id, root.id)
    devices = conn.execute(
        select(
            comm_device.c.id,
            comm_device.c.ident,
            comm_device.c.kind,
            comm_device.c.status,
            comm_device.c.parent_id,
            comm_device.c.last_seen_at,
            device_parent.c.parent_id.label("recorded_parent"),
            device_parent.c.since.label("parent_since"),
        )
        .select_from(
            comm_device.outerjoin(
                device_parent,
                (device_parent.c.comm_device_id == comm_device.c.id) & device_parent.c.until.is_(None),
            )
        )
        .where(comm_device.c.tenant_id == scope.tenant_id, comm_device.c.id.in_(select(tree.c.id)))
        .order_by(comm_device.c.ident)
    ).all()
    meter_rows = conn.execute(
        select(
            meter.c.id,
            meter.c.serial,
            meter.c.status,
            meter.c.comm_device_id,
            meter_route.c.comm_device_id.label("route_device"),
            meter_route.c.since,
            meter_route.c.source,
            meter_route.c.hops,
            meter_route.c.quality,
        )
        .select_from(
            meter.outerjoin(
                meter_route, (meter_route.c.meter_id == meter.c.id) & meter_route.c.until.is_(None)
            )
        )
        .where(meter.c.tenant_id == scope.tenant_id, meter.c.comm_device_id.in_(select(tree.c.id)))
        .order_by(meter.c.serial)
    ).all()
    on_device: dict[int, list[TreeMeter]] = {}
    for row in meter_rows:
        recorded = row.route_device == row.comm_device_id  # else written past the repositories: unknown
        on_device.setdefault(row.comm_device_id, []).append(
            TreeMeter(
                id=row.id,
                serial=row.serial,
                status=row.status,
                since=row.since if recorded else None,
                source=row.source if recorded else None,
                hops=list(row.hops) if recorded and row.hops is not None else None,
                quality=dict(row.quality) if recorded and isinstance(row.quality, dict) else {},
            )
        )
    children: dict[int, list[Any]] = {}
    by_id: dict[int, Any] = {}
    for device in devices:
        by_id[device.id] = device
        if device.id != root.id and device.parent_id is not None:
            children.setdefault(device.parent_id, []).append(device)

    def build(row: Any, seen: frozenset[int]) -> TreeDevice:
        since = row.parent_since if row.id != root.id and row.recorded_parent == row.parent_id else None
        under = [
            build(child, seen | {child.id}) for child in children.get(row.id, []) if child.id not in seen
        ]
        return TreeDevice(
            id=row.id,
            ident=row.ident,
            kind=row.kind,
            status=row.status,
            last_seen_at=row.last_seen_at,
            parent_since=since,
            meters=on_device.get(row.id, []),
            devices=under,
        )

    health = conn.execute(
        select(gateway_link.c.health, gateway_link.c.health_at).where(
            gateway_link.c.comm_device_id == root.id, gateway_link.c.tenant_id == scope.tenant_id
        )
    ).first()
    return GatewayTopology(
        root=build(by_id[root.id], frozenset({root.id})),
        health=dict(health.health) if health is not None and isinstance(health.health, dict) else None,
        health_at=None if health is None else health.health_at,
        meter_count=len(meter_rows),
        device_count=len(devices),
    )


@dataclass(frozen=True, slots=True)
class RoutePeriod:
    """One row of a meter's route history, with the device's ident and kind."""

    id: int
    meter_id: int
    comm_device_id: int
    device_ident: str
    device_kind: str
    since: datetime
    until: datetime | None
    hops: list[str] | None
    quality: dict[str, Any]
    source: str


@dataclass(frozen=True, slots=True)
class ParentPeriod:
    """One row of a device's parent history, with the parent's ident and kind."""

    id: int
    comm_device_id: int
    parent_id: int
    parent_ident: str
    parent_kind: str
    since: datetime
    until: datetime | None


def _check_period(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise InvalidPeriod("until must be after since")


def _devices(conn: Connection, tenant_id: int, ids: set[int]) -> dict[int, tuple[str, str]]:
    if not ids:
        return {}
    rows = conn.execute(
        select(comm_device.c.id, comm_device.c.ident, comm_device.c.kind).where(
            comm_device.c.tenant_id == tenant_id, comm_device.c.id.in_(sorted(ids))
        )
    )
    return {row.id: (row.ident, row.kind) for row in rows}


def routes_of(
    conn: Connection,
    scope: Scope,
    meter_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[RoutePeriod]:
    """The meter's routes overlapping ``[since, until)``, oldest first, one page (by id).

    NotFound for a meter out of scope; InvalidPeriod when ``until`` is not after ``since``."""
    _check_period(since, until)
    found = meters.get(conn, scope, meter_id)
    rows: list[MeterRoute] = route_history(
        conn, scope.tenant_id, found.id, since=since, until=until, after_id=after_id, limit=limit
    )
    names = _devices(conn, scope.tenant_id, {row.comm_device_id for row in rows})
    return [
        RoutePeriod(
            id=row.id,
            meter_id=row.meter_id,
            comm_device_id=row.comm_device_id,
            device_ident=names.get(row.comm_device_id, ("", ""))[0],
            device_kind=names.get(row.comm_device_id, ("", ""))[1],
            since=row.since,
            until=row.until,
            hops=None if row.hops is None else list(row.hops),
            quality=dict(row.quality or {}),
            source=row.source,
        )
        for row in rows
    ]


def parents_of(
    conn: Connection,
    scope: Scope,
    device_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[ParentPeriod]:
    """The device's parents overlapping ``[since, until)``, oldest first, one page (by id)."""
    _check_period(since, until)
    device = comm_devices.get(conn, scope, device_id)
    rows: list[DeviceParent] = parent_history(
        conn, scope.tenant_id, device.id, since=since, until=until, after_id=after_id, limit=limit
    )
    names = _devices(conn, scope.tenant_id, {row.parent_id for row in rows})
    return [
        ParentPeriod(
            id=row.id,
            comm_device_id=row.comm_device_id,
            parent_id=row.parent_id,
            parent_ident=names.get(row.parent_id, ("", ""))[0],
            parent_kind=names.get(row.parent_id, ("", ""))[1],
            since=row.since,
            until=row.until,
        )
        for row in rows
    ]
