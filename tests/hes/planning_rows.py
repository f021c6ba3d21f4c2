"""Rows for planner, path and catch-up tests: tenants, communication devices, meters, channels and
schedules written straight into the schema tables (in bulk, so large fleets stay fast)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select

from openami.store.repositories.catalog import tenants
from openami.store.schema import channel, comm_device, meter, schedule


def make_tenant(engine: Engine, slug: str = "acme", timezone: str = "Europe/Berlin") -> int:
    with engine.begin() as conn:
        return tenants.create(conn, {"slug": slug, "name": slug.title(), "timezone": timezone}).id


def make_devices(
    engine: Engine, tenant_id: int, spec: Sequence[tuple[str, str, str | None, str | None]]
) -> dict[str, int]:
    """Devices (ident, kind, parent ident, address), parents listed before their children."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for ident, kind, parent, address in spec:
            ids[ident] = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=ident,
                    kind=kind,
                    parent_id=None if parent is None else ids[parent],
                    address=address,
                )
                .returning(comm_device.c.id)
            ).scalar_one()
    return ids


def make_meters(
    engine: Engine,
    tenant_id: int,
    count: int,
    *,
    prefix: str = "M",
    device: int | None = None,
    protocol: str = "dlms",
    model: str = "AM550",
    medium: str = "electricity",
    status: str = "active",
    **values: Any,
) -> list[int]:
    """``count`` meters, serials ``<prefix>000001`` …, their ids in order."""
    rows = [
        {
            "tenant_id": tenant_id,
            "serial": f"{prefix}{number:06d}",
            "protocol": protocol,
            "model": model,
            "medium": medium,
            "status": status,
            "comm_device_id": device,
            **values,
        }
        for number in range(1, count + 1)
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(meter), rows[start : start + 5000])
        found = conn.execute(
            select(meter.c.id)
            .where(meter.c.tenant_id == tenant_id, meter.c.serial.like(f"{prefix}%"))
            .order_by(meter.c.serial)
        )
        return list(found.scalars())


def make_channel(
    engine: Engine,
    tenant_id: int,
    meter_id: int,
    created_at: datetime,
    *,
    code: str = "1.8.0",
    interval_s: int = 900,
) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(channel)
                .values(
                    tenant_id=tenant_id,
                    meter_id=meter_id,
                    code=code,
                    kind="interval",
                    unit="kWh",
                    interval_s=interval_s,
                    created_at=created_at,
                )
                .returning(channel.c.id)
            ).scalar_one()
        )


def make_schedule(engine: Engine, tenant_id: int, name: str, kind: str, cron: str, **values: Any) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(schedule)
                .values(tenant_id=tenant_id, name=name, kind=kind, cron=cron, **values)
                .returning(schedule.c.id)
            ).scalar_one()
        )
