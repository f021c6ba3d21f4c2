"""Which meters of one protocol the head-end reads, and where: the query every pull collector shares.

A meter is read when its ``protocol`` matches, it is active, and its communication device (modem,
converter, gateway) has an address. Each collector parses that address its own way (``mbus+tcp://…``,
``modbus+tcp://…``); a meter whose address or model the collector cannot use is reported with the reason
and skipped, so one bad row never stops a round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine, select

from openami.store.schema import comm_device, meter, tenant

__all__ = ["MeterRow", "load_targets", "meter_rows"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MeterRow:
    """What a collector needs to know of one meter to plan its read."""

    tenant_id: int
    tenant: str
    meter_id: int
    serial: str
    model: str
    address: str


def meter_rows(
    engine: Engine, protocol: str, *, tenant_id: int | None = None, meter_ids: list[int] | None = None
) -> list[MeterRow]:
    """The active meters of ``protocol`` with an addressed communication device (optionally of one
    tenant, or only ``meter_ids``), by tenant and meter id. Blocking."""
    query = (
        select(
            tenant.c.id.label("tenant_id"),
            tenant.c.slug,
            meter.c.id,
            meter.c.serial,
            meter.c.model,
            comm_device.c.address,
        )
        .join(tenant, tenant.c.id == meter.c.tenant_id)
        .join(comm_device, comm_device.c.id == meter.c.comm_device_id)
        .where(meter.c.protocol == protocol, meter.c.status == "active", comm_device.c.address.is_not(None))
        .order_by(meter.c.tenant_id, meter.c.id)
    )
    if tenant_id is not None:
        query = query.where(meter.c.tenant_id == tenant_id)
    if meter_ids is not None:
        query = query.where(meter.c.id.in_(meter_ids))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [MeterRow(r.tenant_id, r.slug, r.id, r.serial, r.model or "", r.address) for r in rows]


def load_targets(
    engine: Engine, protocol: str, build: Callable[[MeterRow], T], *, meter_ids: list[int] | None = None
) -> tuple[list[T], list[tuple[str, str]]]:
    """``build(row)`` for each of :func:`meter_rows` (optionally only ``meter_ids``), and (serial, reason)
    for the rows ``build`` refused with a ``ValueError``. Blocking: run it in a thread."""
    targets: list[T] = []
    skipped: list[tuple[str, str]] = []
    for row in meter_rows(engine, protocol, meter_ids=meter_ids):
        try:
            targets.append(build(row))
        except ValueError as exc:
            skipped.append((row.serial, str(exc)))
    return targets, skipped
