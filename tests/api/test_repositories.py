"""The repositories under the API: row types match the schema, channel resolution, idempotent events.

(They live with the API tests because the API is their main client; ingest uses the same functions.)
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from openami.store import repositories as repo
from openami.store.errors import Conflict, InvalidReference, NotFound
from openami.store.repositories import NewEvent, Scope
from openami.store.schema import tenant

TS = datetime(2026, 3, 1, tzinfo=UTC)


def _tenant_with_meter(engine: Engine, slug: str) -> tuple[int, int]:
    with engine.begin() as conn:
        tenant_id = repo.tenants.create(conn, {"slug": slug, "name": slug}).id
        meter = repo.meters.create(conn, tenant_id, {"serial": "S-1", "medium": "water", "protocol": "wmbus"})
    return tenant_id, meter.id


def test_row_types_have_exactly_the_tables_columns() -> None:
    resources = [
        repo.customers,
        repo.accounts,
        repo.service_points,
        repo.comm_devices,
        repo.meters,
        repo.channels,
        repo.installations,
        repo.events,
    ]
    for resource in resources:
        fields = [f.name for f in dataclasses.fields(resource.row_type)]  # type: ignore[arg-type]
        assert fields == list(resource.table.c.keys()), resource.name
    assert [f.name for f in dataclasses.fields(repo.Tenant)] == list(tenant.c.keys())


def test_resolve_channel_creates_once_and_checks_kind_and_tenant(engine: Engine) -> None:
    a, _ = _tenant_with_meter(engine, "a")
    b, _ = _tenant_with_meter(engine, "b")
    with engine.begin() as conn:
        first = repo.resolve_channel(conn, a, "S-1", "A+", "interval", "kWh", 900)
        assert repo.resolve_channel(conn, a, "S-1", "A+", "interval") == first
        assert repo.resolve_channel(conn, b, "S-1", "A+", "interval") != first  # same serial, other tenant
        with pytest.raises(Conflict):
            repo.resolve_channel(conn, a, "S-1", "A+", "register")
        with pytest.raises(NotFound):
            repo.resolve_channel(conn, a, "S-unknown", "A+", "interval")
        stored = repo.channels.get(conn, Scope(a), first)
    assert (stored.unit, stored.interval_s, stored.kind) == ("kWh", 900, "interval")


def test_record_events_is_idempotent(engine: Engine) -> None:
    a, meter_id = _tenant_with_meter(engine, "a")
    b, foreign_meter = _tenant_with_meter(engine, "b")
    batch = [
        NewEvent(ts=TS, code="tamper", severity="alarm", meter_id=meter_id, detail={"n": 1}),
        NewEvent(ts=TS, code="tamper", severity="alarm", meter_id=meter_id, detail={"n": 1}),  # same event
        NewEvent(ts=TS, code="cover.open", meter_id=meter_id, dedup_key="device-seq-42"),
    ]
    with engine.begin() as conn:
        assert repo.record_events(conn, a, batch) == 2
        assert repo.record_events(conn, a, batch) == 0
        assert repo.record_events(conn, a, []) == 0
        with pytest.raises(InvalidReference):
            repo.record_events(conn, a, [NewEvent(ts=TS, code="x", meter_id=foreign_meter)])
        stored = repo.list_events(conn, Scope(a))
        assert repo.list_events(conn, Scope(b)) == []
    assert [(e.code, e.severity, e.detail) for e in stored] == [
        ("tamper", "alarm", {"n": 1}),
        ("cover.open", "info", {}),
    ]
    assert stored[1].dedup_key == "device-seq-42"


def test_repository_guards(engine: Engine) -> None:
    a, meter_id = _tenant_with_meter(engine, "a")
    with engine.begin() as conn:
        other = repo.meters.create(conn, a, {"serial": "S-2", "medium": "gas", "protocol": "wmbus"})
        with pytest.raises(ValueError, match="filtered"):
            repo.meters.list(conn, Scope(a), filters={"firmware": "x"})
        with pytest.raises(ValueError, match="assigned by the store"):
            repo.meters.create(
                conn, a, {"tenant_id": a + 1, "serial": "S-3", "medium": "gas", "protocol": "x"}
            )
        with pytest.raises(ValueError, match="cannot change"):
            repo.meters.update(conn, Scope(a), meter_id, {"tenant_id": a + 1})
        assert repo.meters.update(conn, Scope(a), meter_id, {}).serial == "S-1"
        assert len(repo.meters.list(conn, Scope(a), limit=10**9)) == 2
        assert repo.clamp_limit(10**9) == repo.MAX_LIMIT
        assert repo.clamp_limit(-3) == 1
        assert repo.meters.get_by_key(conn, Scope(a), "S-2") == other
        with pytest.raises(NotFound):
            repo.meters.get_by_key(conn, Scope(a + 1000), "S-2")
        with pytest.raises(Conflict):
            repo.meters.update(conn, Scope(a), other.id, {"serial": "S-1"})
