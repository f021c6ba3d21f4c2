"""The demo tenant: what it contains, idempotent seeding, and a simulation that ignores later additions."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine, func, select

from openami.demo.runner import virtual_gateways
from openami.demo.seed import (
    DEMO_TENANT,
    EDGE_GATEWAY_PROTOCOL,
    dlms_meters,
    edge_gateways,
    households,
    provision_dlms_keys,
    provision_edge_keys,
    provision_radio_keys,
    seed_demo,
)
from openami.security.keyvault import KeyVault
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
    assert [m.serial for m in layout.dlms_meters] == [f"DLMS-{n:06d}" for n in range(1, 13)]
    with engine.connect() as conn:
        count = lambda table: conn.execute(select(func.count()).select_from(table)).scalar_one()  # noqa: E731
        assert len(households()) == 100
        assert count(schema.customer) == count(schema.account) == 100 + 12 + 6
        kinds = dict(
            conn.execute(
                select(schema.service_point.c.kind, func.count()).group_by(schema.service_point.c.kind)
            ).all()
        )
        assert kinds == {"building": 3, "apartment": 90, "premise": 210 + 12 + 6}
        orphans = conn.execute(
            select(func.count())
            .select_from(schema.service_point)
            .where(schema.service_point.c.kind == "apartment", schema.service_point.c.parent_id.is_(None))
        ).scalar_one()
        assert orphans == 0  # every apartment belongs to its building
        assert count(schema.meter_installation) == 345
        dlms = conn.execute(
            select(schema.meter.c.protocol, schema.meter.c.comm_device_id).where(
                schema.meter.c.serial.like("DLMS-0%")
            )
        ).all()
        assert set(dlms) == {("dlms", None)}  # pushing directly, no gateway
        polled = conn.execute(
            select(schema.comm_device.c.ident, schema.comm_device.c.kind)
            .join(schema.meter, schema.meter.c.comm_device_id == schema.comm_device.c.id)
            .where(schema.meter.c.serial.like("DLMS-P%"))
            .order_by(schema.comm_device.c.ident)
        ).all()
        assert [tuple(row) for row in polled] == [(f"MODEM-DLMS-P{n:05d}", "modem") for n in range(1, 7)]


def test_seeding_twice_changes_nothing(engine: Engine) -> None:
    first = seed_demo(engine)
    second = seed_demo(engine)
    assert first == second
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.meter)).scalar_one() == 345


def test_a_demo_database_from_before_dlms_meters_gets_them(engine: Engine) -> None:
    seed_demo(engine)
    with engine.begin() as conn:  # back to what an older release seeded: no Market Street at all
        dlms = select(schema.meter.c.id).where(schema.meter.c.serial.like("DLMS-0%")).scalar_subquery()
        conn.execute(schema.meter_installation.delete().where(schema.meter_installation.c.meter_id.in_(dlms)))
        conn.execute(schema.meter.delete().where(schema.meter.c.id.in_(dlms)))
        conn.execute(schema.service_point.delete().where(schema.service_point.c.code.like("M%")))
        conn.execute(schema.account.delete().where(schema.account.c.number.like("A-M%")))
        conn.execute(schema.customer.delete().where(schema.customer.c.number.like("C-M%")))
    layout = seed_demo(engine)
    with engine.connect() as conn:
        serials = conn.execute(
            select(schema.meter.c.serial).where(schema.meter.c.protocol == "dlms")
        ).scalars()
        assert sorted(serials) == [m.serial for m in [*layout.dlms_meters, *layout.pull_meters]]


def test_the_simulation_plays_the_seeded_layout_not_whatever_users_add(engine: Engine) -> None:
    layout = seed_demo(engine)
    with engine.begin() as conn:
        gateway = comm_devices.create(conn, layout.tenant_id, {"ident": "user-added", "kind": "gateway"})
        meters.create(
            conn,
            layout.tenant_id,
            {"serial": "X 1", "medium": "water", "protocol": "wmbus", "comm_device_id": gateway.id},
        )
        assert len(meters.list(conn, Scope(layout.tenant_id), limit=1000)) == 346
    again = seed_demo(engine)
    played = {m.serial for g in virtual_gateways(again) for m in g.meters}
    assert "X 1" not in played
    assert len(played) == 300
    assert not any(serial.startswith("DLMS-") for serial in played)  # they push on their own
    assert {g.tenant for g in virtual_gateways(again)} == {DEMO_TENANT}


def test_simulated_meters_are_seeded_by_serial() -> None:
    from openami.demo.seed import DemoLayout

    full = DemoLayout(1, [m for h in households() for m in h.meters])
    partial = DemoLayout(1, full.meters[5:])
    seeds = {m.serial: m.seed for g in virtual_gateways(full) for m in g.meters}
    assert all(seeds[m.serial] == m.seed for g in virtual_gateways(partial) for m in g.meters)


def test_dlms_titles_and_keys_are_derived_from_the_serial() -> None:
    first, again = dlms_meters(), dlms_meters()
    assert first == again
    titles = {m.system_title for m in first}
    assert len(titles) == len(first) == 12
    assert all(len(t) == 8 and t.startswith(b"OAM") for t in titles)
    assert all(len(m.encryption_key) == len(m.authentication_key) == 16 for m in first)
    assert first[0].encryption_key != first[0].authentication_key != first[1].authentication_key


def test_dlms_keys_are_provisioned_once(engine: Engine) -> None:
    layout = seed_demo(engine)
    vault = KeyVault(engine, bytes(32))
    assert provision_dlms_keys(engine, vault, layout) == 2 * (12 + 6)
    assert provision_dlms_keys(engine, vault, layout) == 0  # same keys: nothing re-stored
    meter = layout.dlms_meters[3]
    keys = vault.push_keys(meter.system_title)
    assert keys is not None
    assert (keys.tenant, keys.meter_serial) == (DEMO_TENANT, meter.serial)
    assert (keys.encryption_key, keys.authentication_key) == (meter.encryption_key, meter.authentication_key)
    with engine.connect() as conn:
        versions = conn.execute(select(schema.device_key.c.key_version).distinct()).scalars().all()
    assert versions == [1]


def test_radio_meters_keys_are_filed_under_their_link_address(engine: Engine) -> None:
    from openami.demo.field import radio_receiver

    layout = seed_demo(engine)
    vault = KeyVault(engine, bytes(32))
    assert provision_radio_keys(engine, vault, layout) == 5
    assert provision_radio_keys(engine, vault, layout) == 0
    heard = {m.link_address: m.key for m in radio_receiver(layout).meters}
    for radio in layout.radio_meters:
        keys = vault.push_keys(radio.link_address)
        assert keys is not None and keys.meter_serial == radio.serial
        assert heard[radio.link_address] == keys.encryption_key  # the simulator sends what the vault opens


def test_openami_gateways_are_seeded_with_their_meters_and_no_address(engine: Engine) -> None:
    from openami.hes.targets import meter_rows

    layout = seed_demo(engine)
    assert [g.ident for g in layout.edge_gateways] == ["GW-EDGE-1", "GW-EDGE-2"]
    assert layout.gateways == sorted({m.gateway for m in layout.meters})  # the JSON ones only
    assert Counter((m.protocol, m.medium) for m in layout.edge_meters) == {
        ("mbus", "heat"): 2,
        ("mbus", "water"): 2,
        ("modbus", "electricity"): 2,
        ("modbus", "heat"): 2,
    }
    with engine.connect() as conn:
        devices = conn.execute(
            select(
                schema.comm_device.c.ident,
                schema.comm_device.c.kind,
                schema.comm_device.c.protocol,
                schema.comm_device.c.address,
            ).where(schema.comm_device.c.ident.like("GW-EDGE-%"))
        ).all()
        assert sorted(tuple(d) for d in devices) == [
            ("GW-EDGE-1", "gateway", EDGE_GATEWAY_PROTOCOL, None),
            ("GW-EDGE-2", "gateway", EDGE_GATEWAY_PROTOCOL, None),
        ]
        behind = conn.execute(
            select(schema.meter.c.serial, schema.comm_device.c.ident)
            .join(schema.comm_device, schema.comm_device.c.id == schema.meter.c.comm_device_id)
            .where(schema.comm_device.c.ident.like("GW-EDGE-%"))
        ).all()
    assert {(serial, ident) for serial, ident in behind} == {
        (m.serial, g.ident) for g in layout.edge_gateways for m in g.meters
    }
    # The head-end does not read them itself (their gateway has no address): the gateways forward them.
    polled = {row.serial for protocol in ("mbus", "modbus") for row in meter_rows(engine, protocol)}
    assert polled.isdisjoint(m.serial for m in layout.edge_meters)


def test_a_demo_database_from_before_the_openami_gateways_gets_them(engine: Engine) -> None:
    seed_demo(engine)
    with engine.begin() as conn:  # back to what an older release seeded
        devices = select(schema.comm_device.c.id).where(schema.comm_device.c.ident.like("GW-EDGE-%"))
        edge = select(schema.meter.c.id).where(schema.meter.c.comm_device_id.in_(devices)).scalar_subquery()
        conn.execute(schema.meter_installation.delete().where(schema.meter_installation.c.meter_id.in_(edge)))
        conn.execute(schema.meter.delete().where(schema.meter.c.id.in_(edge)))
        conn.execute(schema.comm_device.delete().where(schema.comm_device.c.ident.like("GW-EDGE-%")))
        assert conn.execute(select(func.count()).select_from(schema.meter)).scalar_one() == 337
    seed_demo(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.meter)).scalar_one() == 345
        assert conn.execute(select(func.count()).select_from(schema.meter_installation)).scalar_one() == 345


def test_openami_gateway_link_keys_are_derived_and_provisioned_once(engine: Engine) -> None:
    first, again = edge_gateways(), edge_gateways()
    assert [g.link_key for g in first] == [g.link_key for g in again]
    assert len({g.link_key for g in first}) == 2 and all(len(g.link_key) == 32 for g in first)
    layout = seed_demo(engine)
    vault = KeyVault(engine, bytes(32))
    assert provision_edge_keys(engine, vault, layout) == 2
    assert provision_edge_keys(engine, vault, layout) == 0  # same keys: no rotation, window kept
    with engine.connect() as conn:
        ids = dict(
            conn.execute(
                select(schema.comm_device.c.ident, schema.comm_device.c.id).where(
                    schema.comm_device.c.ident.like("GW-EDGE-%")
                )
            ).all()
        )
        versions = conn.execute(select(schema.gateway_link.c.key_version).distinct()).scalars().all()
    assert versions == [1]
    for gateway in layout.edge_gateways:
        assert vault.gateway_key(layout.tenant_id, ids[gateway.ident]) == gateway.link_key
