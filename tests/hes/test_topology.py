"""The topology's history on both databases: migration 0005, registration history written by the meters
and gateways repositories, concentrators' parents, gateway-reported mesh routes, the close-only rule and
concurrent writers."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError

from openami.hes.topology import (
    HistoryRaced,
    InvalidPeriod,
    RouteReport,
    current_tree,
    parents_of,
    parse_routes,
    record_reported_routes,
    record_routes,
    routes_of,
)
from openami.store.errors import InvalidReference, NotFound
from openami.store.migrate import alembic_config, current_revision
from openami.store.repositories import MeterRoute, Scope, comm_devices, meters, tenants
from openami.store.schema import comm_device, device_parent, meter, meter_route, tenant

LATER = timedelta(minutes=5)


def _world(engine: Engine) -> dict[str, int]:
    """acme: gateways GW-A and GW-B, concentrator C-1 under GW-A, meters M-1 (on C-1) and M-2 (on
    GW-A), M-3 on GW-B; beta: gateway GW-X with meter X-1."""
    with engine.begin() as conn:
        acme = tenants.create(conn, {"slug": "acme", "name": "Acme"}).id
        beta = tenants.create(conn, {"slug": "beta", "name": "Beta"}).id
        ids = {"acme": acme, "beta": beta}
        for key, tenant_id, ident in (("gwA", acme, "GW-A"), ("gwB", acme, "GW-B"), ("gwX", beta, "GW-X")):
            ids[key] = comm_devices.create(conn, tenant_id, {"ident": ident, "kind": "gateway"}).id
        ids["c1"] = comm_devices.create(
            conn, acme, {"ident": "C-1", "kind": "concentrator", "parent_id": ids["gwA"]}
        ).id
        for key, tenant_id, serial, device in (
            ("m1", acme, "M-1", ids["c1"]),
            ("m2", acme, "M-2", ids["gwA"]),
            ("m3", acme, "M-3", ids["gwB"]),
            ("x1", beta, "X-1", ids["gwX"]),
        ):
            values = {"serial": serial, "medium": "water", "protocol": "wmbus", "comm_device_id": device}
            ids[key] = meters.create(conn, tenant_id, values).id
    return ids


def _routes(engine: Engine, meter_id: int) -> list[MeterRoute]:
    with engine.connect() as conn:
        rows = conn.execute(select(meter_route).where(meter_route.c.meter_id == meter_id).order_by("id"))
        return [MeterRoute(**row._mapping) for row in rows]


def _chained(routes: list[MeterRoute]) -> bool:
    """Each period ends where the next begins, and only the last is open."""
    closed, last = routes[:-1], routes[-1]
    return (
        all(a.until == b.since for a, b in itertools.pairwise(routes))
        and all(r.until is not None for r in closed)
        and last.until is None
    )


def test_migration_0005_carries_the_registry_over_and_downgrades(engine: Engine) -> None:
    config = alembic_config(engine)
    assert int(current_revision(engine) or 0) >= 5  # at head, 0005 or later
    command.downgrade(config, "0004")
    assert {"meter_route", "device_parent"}.isdisjoint(inspect(engine).get_table_names())
    with engine.begin() as conn:
        tenant_id = conn.execute(
            tenant.insert().values(slug="old", name="Old").returning(tenant.c.id)
        ).scalar()
        gw = conn.execute(
            comm_device.insert()
            .values(tenant_id=tenant_id, ident="GW", kind="gateway")
            .returning(comm_device.c.id)
        ).scalar()
        conc = conn.execute(
            comm_device.insert()
            .values(tenant_id=tenant_id, ident="C", kind="concentrator", parent_id=gw)
            .returning(comm_device.c.id)
        ).scalar()
        for serial, device in (("on-c", conc), ("nowhere", None)):
            conn.execute(
                meter.insert().values(
                    tenant_id=tenant_id, serial=serial, medium="heat", protocol="mbus", comm_device_id=device
                )
            )
    before = datetime.now(UTC) - timedelta(seconds=2)
    command.upgrade(config, "head")
    command.check(config)
    with engine.connect() as conn:
        routes = conn.execute(select(meter_route)).all()
        parents = conn.execute(select(device_parent)).all()
    assert [(r.comm_device_id, r.until, r.hops, r.quality, r.source) for r in routes] == [
        (conc, None, None, {}, "registration")
    ]
    assert [(p.comm_device_id, p.parent_id, p.until) for p in parents] == [(conc, gw, None)]
    assert routes[0].since >= before and parents[0].since >= before
    command.downgrade(config, "0004")
    command.upgrade(config, "head")
    assert {"meter_route", "device_parent"} <= set(inspect(engine).get_table_names())


def test_meter_writes_record_the_registration_history(engine: Engine) -> None:
    ids = _world(engine)
    acme = Scope(ids["acme"])
    (first,) = _routes(engine, ids["m2"])
    assert (first.comm_device_id, first.until, first.hops, first.source) == (
        ids["gwA"],
        None,
        None,
        "registration",
    )

    with engine.begin() as conn:
        meters.update(conn, acme, ids["m2"], {"firmware": "2.0"})  # not a registration change
        meters.update(conn, acme, ids["m2"], {"comm_device_id": ids["gwA"]})  # the same device: nothing
    assert len(_routes(engine, ids["m2"])) == 1

    with engine.begin() as conn:
        meters.update(conn, acme, ids["m2"], {"comm_device_id": ids["c1"]})
    old, new = _routes(engine, ids["m2"])
    assert old.id == first.id and old.since == first.since  # closed, nothing else touched
    assert old.until == new.since and new.until is None
    assert (new.comm_device_id, new.source) == (ids["c1"], "registration")

    with engine.begin() as conn:
        meters.update(conn, acme, ids["m2"], {"comm_device_id": None})  # taken off the network
    history = _routes(engine, ids["m2"])
    assert len(history) == 2 and all(r.until is not None for r in history)
    with engine.begin() as conn:
        meters.update(conn, acme, ids["m2"], {"comm_device_id": ids["gwB"]})
        unregistered = meters.create(
            conn, ids["acme"], {"serial": "M-9", "medium": "gas", "protocol": "mbus"}
        )
    history = _routes(engine, ids["m2"])
    assert [r.comm_device_id for r in history] == [ids["gwA"], ids["c1"], ids["gwB"]]
    assert history[1].until is not None and history[1].until <= history[2].since  # a gap: on nothing
    assert _routes(engine, unregistered.id) == []

    # A rolled-back change leaves no history behind.
    def move_and_fail() -> None:
        with engine.begin() as conn:
            meters.update(conn, acme, ids["m2"], {"comm_device_id": ids["gwA"]})
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        move_and_fail()
    assert len(_routes(engine, ids["m2"])) == 3


def test_device_parents_have_a_history_and_no_cycles(engine: Engine) -> None:
    ids = _world(engine)
    acme = Scope(ids["acme"])
    with engine.begin() as conn:
        comm_devices.update(conn, acme, ids["c1"], {"model": "DC450"})  # no parent change
        comm_devices.update(conn, acme, ids["c1"], {"parent_id": ids["gwB"]})
        sub = comm_devices.create(
            conn, ids["acme"], {"ident": "C-2", "kind": "concentrator", "parent_id": ids["c1"]}
        )
    with engine.connect() as conn:
        history = parents_of(conn, acme, ids["c1"])
        assert [(p.parent_id, p.parent_ident, p.parent_kind) for p in history] == [
            (ids["gwA"], "GW-A", "gateway"),
            (ids["gwB"], "GW-B", "gateway"),
        ]
        assert history[0].until == history[1].since and history[1].until is None
        assert len(parents_of(conn, acme, sub.id)) == 1
        assert parents_of(conn, acme, ids["gwA"]) == []  # a gateway at the top has none
        with pytest.raises(NotFound):
            parents_of(conn, Scope(ids["beta"]), ids["c1"])
    for device, parent in ((ids["c1"], ids["c1"]), (ids["gwB"], sub.id), (ids["gwB"], ids["c1"])):
        with pytest.raises(InvalidReference, match="itself or below it"), engine.begin() as conn:
            comm_devices.update(conn, acme, device, {"parent_id": parent})
    with pytest.raises(InvalidReference), engine.begin() as conn:  # another tenant's device
        comm_devices.update(conn, acme, ids["c1"], {"parent_id": ids["gwX"]})
    with engine.begin() as conn:
        comm_devices.update(conn, acme, ids["c1"], {"parent_id": None})
    with engine.connect() as conn:
        assert all(p.until is not None for p in parents_of(conn, acme, ids["c1"]))
    # The meters stay on the concentrator: its move does not touch their routes.
    assert [r.comm_device_id for r in _routes(engine, ids["m1"])] == [ids["c1"]]


def test_gateway_routes_open_only_when_they_change(engine: Engine) -> None:
    ids = _world(engine)
    t1 = datetime.now(UTC) + LATER
    reports = [
        RouteReport("M-1", ("M-2", "R-7"), {"rssi": -71.0, "snr": 7.5}),
        RouteReport("M-2", (), {"rssi": -60.0}),
    ]
    done = record_routes(engine, ids["acme"], ids["gwA"], reports, t1)
    assert (done.changed, done.unchanged, done.problems) == (2, 0, [])
    registration, reported = _routes(engine, ids["m1"])
    assert (registration.source, registration.until) == ("registration", t1)
    assert (reported.comm_device_id, reported.since, reported.until) == (ids["c1"], t1, None)
    assert (reported.hops, reported.quality, reported.source) == (
        ["M-2", "R-7"],
        {"rssi": -71.0, "snr": 7.5},
        "gateway",
    )
    assert _routes(engine, ids["m2"])[-1].hops == []  # direct: known to be direct, not "not reported"

    # The same route again, with another quality: nothing is written.
    again = [RouteReport("M-1", ("M-2", "R-7"), {"rssi": -90.0}), RouteReport("M-2", (), {})]
    done = record_routes(engine, ids["acme"], ids["gwA"], again, t1 + LATER)
    assert (done.changed, done.unchanged) == (0, 2)
    assert len(_routes(engine, ids["m1"])) == 2 and _routes(engine, ids["m1"])[-1].quality["rssi"] == -71.0

    # A changed route closes the open one at the report's time and opens the next.
    t3 = t1 + 2 * LATER
    done = record_routes(engine, ids["acme"], ids["gwA"], [RouteReport("M-1", ("R-9",), {"rssi": -80.0})], t3)
    assert done.changed == 1
    history = _routes(engine, ids["m1"])
    assert [r.hops for r in history] == [None, ["M-2", "R-7"], ["R-9"]]
    assert history[1].until == t3 == history[2].since and _chained(history)

    # Unknown meters, meters registered elsewhere (also in another tenant), late reports: problems only.
    problems = [
        RouteReport("NOBODY", ("R-1",)),
        RouteReport("M-3", ()),  # on GW-B
        RouteReport("X-1", ()),  # beta's
        RouteReport("M-1", ("R-1",)),  # older than its current route
        RouteReport("M-1", ("R-2",)),  # twice
    ]
    done = record_routes(engine, ids["acme"], ids["gwA"], problems, t1)
    assert (done.changed, done.unchanged) == (0, 0)
    assert done.problems == [
        "meter 'NOBODY' is unknown",
        f"meter 'M-3' is registered on device {ids['gwB']}, not under gateway 'GW-A'",
        "meter 'X-1' is unknown",
        "meter 'M-1': the report is older than its current route",
        "meter 'M-1' reported twice: the first report is used",
    ]
    assert len(_routes(engine, ids["m1"])) == 3 and len(_routes(engine, ids["m3"])) == 1
    assert len(_routes(engine, ids["x1"])) == 1
    with pytest.raises(NotFound):
        record_routes(engine, ids["beta"], ids["gwA"], reports, t3)

    # The concentrator reports for its own meters too; its parent gateway's tree has them as well.
    done = record_routes(
        engine, ids["acme"], ids["c1"], [RouteReport("M-1", ("R-9",)), RouteReport("M-2", ())], t3
    )
    assert done.unchanged == 1 and "not under gateway 'C-1'" in done.problems[0]


def test_reported_routes_are_parsed_item_by_item() -> None:
    raw = [
        {"meter": "M-1", "via": ["R-1", "R-2"], "rssi": -71, "snr": 7.5, "future": "ignored"},
        {"meter": "M-2"},
        {"meter": "M-3", "via": [], "hops": 0},
        {"meter": "M-1", "via": []},
        {"meter": "", "via": []},
        {"meter": "M-4", "via": ["R\x00"]},
        {"meter": "M-5", "via": [f"R-{i}" for i in range(100)]},
        {"meter": "M-6", "rssi": "loud"},
        "M-7",
    ]
    reports, problems = parse_routes(raw)
    assert reports == [
        RouteReport("M-1", ("R-1", "R-2"), {"rssi": -71.0, "snr": 7.5}),
        RouteReport("M-2", (), {}),
        RouteReport("M-3", (), {"hops": 0}),
    ]
    assert len(problems) == 6
    assert problems[0] == "routes[3] dropped: meter 'M-1' listed twice"
    assert all(p.startswith(f"routes[{i}] dropped") for p, i in zip(problems[1:], range(4, 9), strict=True))
    assert parse_routes({"M-1": []}) == ([], ["'routes' must be a list"])


def test_reported_routes_with_nothing_usable_store_nothing(engine: Engine) -> None:
    ids = _world(engine)
    done = record_reported_routes(engine, ids["acme"], ids["gwA"], "nonsense", datetime.now(UTC))
    assert (done.changed, done.problems) == (0, ["'routes' must be a list"])
    done = record_reported_routes(
        engine,
        ids["acme"],
        ids["gwA"],
        [{"meter": "M-2", "via": ["R-1"]}, {"meter": 5}],
        datetime.now(UTC) + LATER,
    )
    assert done.changed == 1 and len(done.problems) == 1


def test_history_is_never_edited_only_closed(engine: Engine) -> None:
    ids = _world(engine)
    with engine.begin() as conn:
        meters.update(conn, Scope(ids["acme"]), ids["m2"], {"comm_device_id": ids["c1"]})
        comm_devices.update(conn, Scope(ids["acme"]), ids["c1"], {"parent_id": ids["gwB"]})
    closed, current = _routes(engine, ids["m2"])
    edits = [
        f"UPDATE meter_route SET comm_device_id = {ids['gwB']} WHERE id = {closed.id}",
        f"UPDATE meter_route SET until = NULL WHERE id = {closed.id}",
        f"UPDATE meter_route SET source = 'gateway' WHERE id = {current.id}",
        f"UPDATE meter_route SET hops = '[\"R-1\"]' WHERE id = {current.id}",
        "UPDATE device_parent SET parent_id = parent_id WHERE until IS NOT NULL",
        "UPDATE device_parent SET since = CURRENT_TIMESTAMP WHERE until IS NULL",
    ]
    for statement in edits:
        with (
            pytest.raises(DBAPIError, match="is history: only an open row may be closed"),
            engine.begin() as conn,
        ):
            conn.execute(text(statement))
    with pytest.raises(DBAPIError), engine.begin() as conn:  # a second open row: the unique index
        conn.execute(
            meter_route.insert().values(
                tenant_id=ids["acme"],
                meter_id=ids["m2"],
                comm_device_id=ids["gwA"],
                since=datetime.now(UTC),
                source="gateway",
            )
        )
    with pytest.raises(DBAPIError), engine.begin() as conn:  # ending before it began
        conn.execute(
            meter_route.update()
            .where(meter_route.c.id == current.id)
            .values(until=current.since - timedelta(seconds=1))
        )
    assert _routes(engine, ids["m2"]) == [closed, current]


def test_history_queries_take_overlapping_periods(engine: Engine) -> None:
    ids = _world(engine)
    acme = Scope(ids["acme"])
    t1 = datetime.now(UTC) + LATER
    for i, hops in enumerate((("R-1",), ("R-2",), ("R-3",))):
        record_routes(engine, ids["acme"], ids["gwA"], [RouteReport("M-2", hops)], t1 + i * LATER)
    with engine.connect() as conn:
        everything = routes_of(conn, acme, ids["m2"])
        assert [r.hops for r in everything] == [None, ["R-1"], ["R-2"], ["R-3"]]
        assert {(r.device_ident, r.device_kind) for r in everything} == {("GW-A", "gateway")}
        window = routes_of(conn, acme, ids["m2"], since=t1 + LATER, until=t1 + 2 * LATER)
        assert [r.hops for r in window] == [["R-2"]]  # [since, until) half-open on both ends
        assert [r.hops for r in routes_of(conn, acme, ids["m2"], since=t1 + 3 * LATER)] == [["R-3"]]
        assert [r.hops for r in routes_of(conn, acme, ids["m2"], until=t1)] == [None]
        first, second = routes_of(conn, acme, ids["m2"], limit=2)
        assert [r.hops for r in routes_of(conn, acme, ids["m2"], after_id=second.id)] == [["R-2"], ["R-3"]]
        with pytest.raises(InvalidPeriod):
            routes_of(conn, acme, ids["m2"], since=t1, until=t1)
        with pytest.raises(NotFound):
            routes_of(conn, Scope(ids["beta"]), ids["m2"])
        customer = Scope(ids["acme"], own_customer_only=True, customer_id=None)
        with pytest.raises(NotFound):
            routes_of(conn, customer, ids["m2"])
    assert first.since < second.since


def test_the_current_tree(engine: Engine) -> None:
    ids = _world(engine)
    acme = Scope(ids["acme"])
    record_routes(
        engine,
        ids["acme"],
        ids["gwA"],
        [RouteReport("M-1", ("R-1",), {"rssi": -70.0})],
        datetime.now(UTC) + LATER,
    )
    with engine.connect() as conn:
        tree = current_tree(conn, acme, ids["gwA"])
        (c1,) = tree.root.devices
        assert (tree.root.ident, tree.meter_count, tree.device_count, tree.health) == ("GW-A", 2, 2, None)
        assert [m.serial for m in tree.root.meters] == ["M-2"] and tree.root.parent_since is None
        (m1,) = c1.meters
        assert (c1.ident, c1.kind, m1.serial, m1.hops, m1.quality, m1.source) == (
            "C-1",
            "concentrator",
            "M-1",
            ["R-1"],
            {"rssi": -70.0},
            "gateway",
        )
        assert c1.parent_since is not None
        assert current_tree(conn, acme, ids["c1"]).root.meters[0].serial == "M-1"  # any device's subtree
        with pytest.raises(NotFound):
            current_tree(conn, Scope(ids["beta"]), ids["gwA"])


def test_concurrent_reports_keep_one_open_route(engine: Engine) -> None:
    """Writers racing on the same meters (a shared subscription splits a gateway's reports between
    workers; an operator moves a meter meanwhile) never leave two open rows or a broken chain."""
    ids = _world(engine)
    start = datetime.now(UTC) + LATER
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def report(worker: int) -> None:
        barrier.wait()
        for round_ in range(5):
            hops = (f"R-{worker}-{round_}",)
            at = start + timedelta(seconds=worker + 10 * round_)
            try:
                record_routes(
                    engine, ids["acme"], ids["gwA"], [RouteReport("M-1", hops), RouteReport("M-2", hops)], at
                )
                outcomes.append("ok")
            except HistoryRaced:
                outcomes.append("raced")

    def move() -> None:
        barrier.wait()
        for device in (ids["c1"], ids["gwA"], ids["c1"]):
            try:
                with engine.begin() as conn:
                    meters.update(conn, Scope(ids["acme"]), ids["m2"], {"comm_device_id": device})
                outcomes.append("moved")
            except HistoryRaced:
                outcomes.append("move raced")

    threads = [threading.Thread(target=report, args=(n,)) for n in range(3)] + [threading.Thread(target=move)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert "ok" in outcomes
    for meter_id in (ids["m1"], ids["m2"]):
        history = _routes(engine, meter_id)
        assert sum(r.until is None for r in history) == 1
        assert all(r.until is None or r.until >= r.since for r in history)
        assert all(a.until is not None and a.until <= b.since for a, b in itertools.pairwise(history))
