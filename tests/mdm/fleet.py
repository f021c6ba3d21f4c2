"""A head-end's first day in miniature, for the directory and ingest tests: a tenant with many meters whose
channels the store has never seen, and one small message per meter read as a poller publishes it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, insert, select

from openami.bus.messages import Reading, ReadingBatch
from openami.store import schema

TENANT = "fleet"
T0 = datetime(2026, 5, 1, tzinfo=UTC)
CODES = tuple(f"1-0:{n}.8.0" for n in range(1, 9))


def serial(m: int) -> str:
    return f"F{m:06d}"


def make_fleet(engine: Engine, meters: int) -> None:
    """Tenant ``fleet`` with ``meters`` meters and no channel at all."""
    with engine.begin() as conn:
        tenant_id = conn.execute(
            insert(schema.tenant).values(slug=TENANT, name="first day").returning(schema.tenant.c.id)
        ).scalar_one()
        conn.execute(
            insert(schema.meter),
            [
                {"tenant_id": tenant_id, "serial": serial(m), "medium": "electricity", "protocol": "test"}
                for m in range(meters)
            ],
        )


def read(m: int, codes: tuple[str, ...] = CODES, *, kind: str = "register") -> ReadingBatch:
    """Meter ``m``'s read: one reading of each of ``codes``."""
    readings = [
        Reading(meter=serial(m), channel=code, ts=T0, value=float(m + c), kind=kind)  # type: ignore[arg-type]
        for c, code in enumerate(codes)
    ]
    return ReadingBatch.from_readings(readings, tenant=TENANT, source="test", received_at=T0)


def channel_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.channel)).scalar_one())
