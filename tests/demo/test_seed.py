"""The demo tenant: what it contains, idempotent seeding, and a simulation that ignores later additions."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine, func, select

from openami.demo.runner import virtual_gateways
from openami.demo.seed import DEMO_TENANT, households, seed_demo
from openami.store import schema
from openami.store.repositories import Scope, comm_devices, meters


def test_demo_utility_has_every_medium_and_buildings_with_apartments(engine: Engine) -> None:
    layout = seed_demo(engine)
    assert len(layout.meters) == 300
    assert Counter(m.medium for m in layout.meters) == {
        "electricity": 100,
        "water": 100,
        "gas": 70,
        "heat": 30,
    }
    assert len(layout.gateways) == 7
    with engine.connect() as conn:
        count = lambda table: conn.execute(select(func.count()).select_from(table)).scalar_one()  # noqa: E731
        assert count(schema.customer) == count(schema.account) == len(households()) == 100
        kinds = dict(
            conn.execute(
                select(schema.service_point.c.kind, func.count()).group_by(schema.service_point.c.kind)
            ).all()
        )
        assert kinds == {"building": 3, "apartment": 90, "premise": 210}
        orphans = conn.execute(
            select(func.count())
            .select_from(schema.service_point)
            .where(schema.service_point.c.kind == "apartment", schema.service_point.c.parent_id.is_(None))
        ).scalar_one()
        assert orphans == 0  # every apartment belongs to its building
        assert count(schema.meter_installation) == 300


def test_seeding_twice_changes_nothing(engine: Engine) -> None:
    first = seed_demo(engine)
    second = seed_demo(engine)
    assert first == second
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.meter)).scalar_one() == 300


def test_the_simulation_plays_the_seeded_layout_not_whatever_users_add(engine: Engine) -> None:
    layout = seed_demo(engine)
    with engine.begin() as conn:
        gateway = comm_devices.create(conn, layout.tenant_id, {"ident": "user-added", "kind": "gateway"})
        meters.create(
            conn,
            layout.tenant_id,
            {"serial": "X 1", "medium": "water", "protocol": "wmbus", "comm_device_id": gateway.id},
        )
        assert len(meters.list(conn, Scope(layout.tenant_id), limit=1000)) == 301
    again = seed_demo(engine)
    played = {m.serial for g in virtual_gateways(again) for m in g.meters}
    assert "X 1" not in played
    assert len(played) == 300
    assert {g.tenant for g in virtual_gateways(again)} == {DEMO_TENANT}


def test_simulated_meters_are_seeded_by_serial() -> None:
    from openami.demo.seed import DemoLayout

    full = DemoLayout(1, [m for h in households() for m in h.meters])
    partial = DemoLayout(1, full.meters[5:])
    seeds = {m.serial: m.seed for g in virtual_gateways(full) for m in g.meters}
    assert all(seeds[m.serial] == m.seed for g in virtual_gateways(partial) for m in g.meters)
