"""The topology through the API on both databases: registration history written by POST and PATCH
(with their audit entries), concentrators moved between gateways, the tree under a gateway with its
health, route history queries, permissions and tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from openami.hes.gateway_link_store import GatewayLinkStore
from openami.hes.topology import RouteReport, record_routes
from openami.security.audit import verify_chain
from openami.security.keyvault import KeyVault, load_master_key
from openami.store.schema import audit_log

from .support import World, assert_problem

METER = {"medium": "water", "protocol": "wmbus"}


def _created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _audit(world: World, action: str, target_id: int) -> list[dict[str, Any]]:
    with world.context.engine.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.actor, audit_log.c.detail)
            .where(audit_log.c.action == action, audit_log.c.target_id == str(target_id))
            .order_by(audit_log.c.id)
        )
        return [{"actor": row.actor, **row.detail} for row in rows]


def _network(world: World) -> dict[str, int]:
    """GW-A (the world's gwA), GW-B, concentrator C-1 under GW-B, meter M-NEW created on GW-A."""
    gw_b = _created(world.post("/gateways", {"ident": "GW-B"}, as_user="operator"))["id"]
    c1 = _created(
        world.post(
            "/gateways", {"ident": "C-1", "kind": "concentrator", "parent_id": gw_b}, as_user="operator"
        )
    )["id"]
    body = {"serial": "M-NEW", **METER, "comm_device_id": world.ids["gwA"]}
    meter = _created(world.post("/meters", body, as_user="field_technician"))["id"]
    return {"gwA": world.ids["gwA"], "gwB": gw_b, "c1": c1, "meter": meter}


def test_a_meter_moved_by_patch_has_two_routes_and_audit_entries(world: World) -> None:
    ids = _network(world)
    before = datetime.now(UTC)
    moved = world.patch(f"/meters/{ids['meter']}", {"comm_device_id": ids["c1"]}, as_user="operator")
    after = datetime.now(UTC)
    assert moved.status_code == 200 and moved.json()["comm_device_id"] == ids["c1"]

    response = world.get(f"/meters/{ids['meter']}/routes", as_user="analyst")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    first, second = page["items"]
    assert (first["comm_device_id"], first["device_ident"], first["device_kind"]) == (
        ids["gwA"],
        "GW-A",
        "gateway",
    )
    assert (second["comm_device_id"], second["device_ident"], second["device_kind"]) == (
        ids["c1"],
        "C-1",
        "concentrator",
    )
    assert first["until"] == second["since"] and second["until"] is None
    assert before <= datetime.fromisoformat(second["since"]) <= after  # closed at the change
    assert second["since"].endswith("Z")
    assert {first["source"], second["source"]} == {"registration"}
    assert (first["hops"], first["quality"]) == (None, {})

    # The change and its audit entries, in the same transactions.
    assert _audit(world, "meter.create", ids["meter"])[0]["comm_device_id"] == ids["gwA"]
    (update,) = _audit(world, "meter.update", ids["meter"])
    assert update == {"actor": update["actor"], "comm_device_id": ids["c1"]} and "operator" in update["actor"]
    assert verify_chain(world.context.engine, world.ids["tenantA"]) == (True, None)

    # A PATCH that leaves the device alone adds no route; the tree follows the registry.
    world.patch(f"/meters/{ids['meter']}", {"firmware": "2.1"}, as_user="operator")
    assert len(world.get(f"/meters/{ids['meter']}/routes").json()["items"]) == 2
    tree_b = world.get(f"/gateways/{ids['gwB']}/topology", as_user="operator").json()
    assert [m["serial"] for m in tree_b["tree"]["devices"][0]["meters"]] == ["M-NEW"]
    tree_a = world.get(f"/gateways/{ids['gwA']}/topology", as_user="operator").json()
    assert "M-NEW" not in [m["serial"] for m in tree_a["tree"]["meters"]]


def test_a_concentrator_moved_between_gateways(world: World) -> None:
    ids = _network(world)
    world.patch(f"/meters/{ids['meter']}", {"comm_device_id": ids["c1"]}, as_user="operator")
    response = world.patch(f"/gateways/{ids['c1']}", {"parent_id": ids["gwA"]}, as_user="field_technician")
    assert response.status_code == 200, response.text

    parents = world.get(f"/gateways/{ids['c1']}/parents", as_user="analyst").json()["items"]
    assert [(p["parent_id"], p["parent_ident"], p["parent_kind"]) for p in parents] == [
        (ids["gwB"], "GW-B", "gateway"),
        (ids["gwA"], "GW-A", "gateway"),
    ]
    assert parents[0]["until"] == parents[1]["since"] and parents[1]["until"] is None
    (entry,) = _audit(world, "gateway.update", ids["c1"])
    assert entry["parent_id"] == ids["gwA"]

    tree_a = world.get(f"/gateways/{ids['gwA']}/topology").json()
    (c1,) = tree_a["tree"]["devices"]
    assert (c1["ident"], c1["parent_since"], [m["serial"] for m in c1["meters"]]) == (
        "C-1",
        parents[1]["since"],
        ["M-NEW"],
    )
    assert world.get(f"/gateways/{ids['gwB']}/topology").json()["tree"]["devices"] == []
    # The meter's own route is unchanged (still through C-1): only the concentrator moved.
    assert len(world.get(f"/meters/{ids['meter']}/routes").json()["items"]) == 2

    # A device cannot be put under itself or its own concentrator.
    for device, parent in ((ids["c1"], ids["c1"]), (ids["gwA"], ids["c1"])):
        problem = assert_problem(world.patch(f"/gateways/{device}", {"parent_id": parent}), 422)
        assert problem["type"].endswith("/invalid-reference")
    assert len(world.get(f"/gateways/{ids['c1']}/parents").json()["items"]) == 2


def test_the_tree_shows_routes_quality_health_and_last_seen(world: World) -> None:
    ids = _network(world)
    world.patch(f"/meters/{ids['meter']}", {"comm_device_id": ids["c1"]})
    world.patch(f"/gateways/{ids['c1']}", {"parent_id": ids["gwA"]})
    engine = world.context.engine
    vault = KeyVault(engine, load_master_key(world.context.settings))
    vault.store_gateway_key(world.ids["tenantA"], ids["gwA"], KeyVault.new_gateway_key())
    store = GatewayLinkStore(engine, vault)
    seen = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    assert store.accept(store.load("acme", "GW-A"), 7, seen, health={"uptime_s": 60, "meters": 3})
    reports = [
        RouteReport("M-NEW", ("M-A1", "R-7"), {"rssi": -71.0, "snr": 7.5}),
        RouteReport("M-A1", (), {"rssi": -55.0}),
    ]
    assert record_routes(engine, world.ids["tenantA"], ids["gwA"], reports, seen).changed == 2

    response = world.get(f"/gateways/{ids['gwA']}/topology", as_user="field_technician")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["gateway_id"], body["ident"], body["kind"]) == (ids["gwA"], "GW-A", "gateway")
    assert body["health"] == {"uptime_s": 60, "meters": 3}
    assert body["health_at"] == body["last_seen_at"] == seen.isoformat().replace("+00:00", "Z")
    assert (body["meter_count"], body["device_count"]) == (3, 2)
    root = body["tree"]
    assert (root["id"], root["ident"], root["parent_since"]) == (ids["gwA"], "GW-A", None)
    by_serial = {m["serial"]: m for m in root["meters"]}
    assert list(by_serial) == ["M-A1", "M-A2"]  # by serial
    assert (by_serial["M-A1"]["hops"], by_serial["M-A1"]["quality"], by_serial["M-A1"]["source"]) == (
        [],
        {"rssi": -55.0},
        "gateway",
    )
    assert (by_serial["M-A2"]["hops"], by_serial["M-A2"]["source"]) == (None, "registration")
    (c1,) = root["devices"]
    (moved,) = c1["meters"]
    assert (moved["id"], moved["hops"], moved["quality"]) == (
        ids["meter"],
        ["M-A1", "R-7"],
        {"rssi": -71.0, "snr": 7.5},
    )
    assert moved["since"] == seen.isoformat().replace("+00:00", "Z") and c1["devices"] == []

    # The link view shows the same health (GET /gateways/{id}/link).
    link = world.get(f"/gateways/{ids['gwA']}/link").json()
    assert link["health"] == body["health"] and link["last_seen_at"] == body["last_seen_at"]

    routes = world.get(f"/meters/{ids['meter']}/routes").json()["items"]
    assert [r["hops"] for r in routes] == [None, None, ["M-A1", "R-7"]]
    assert routes[-1]["source"] == "gateway"


def test_route_history_filters_and_pages(world: World) -> None:
    ids = _network(world)
    for device in (ids["c1"], ids["gwB"], ids["gwA"]):
        world.patch(f"/meters/{ids['meter']}", {"comm_device_id": device})
    path = f"/meters/{ids['meter']}/routes"
    items = world.get(path).json()["items"]
    assert [r["device_ident"] for r in items] == ["GW-A", "C-1", "GW-B", "GW-A"]

    page = world.get(path, params={"limit": 3}).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = world.get(path, params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [r["id"] for r in rest["items"]] == [items[3]["id"]] and rest["next_cursor"] is None

    since = items[2]["since"]
    assert [r["device_ident"] for r in world.get(path, params={"since": since}).json()["items"]] == [
        "GW-B",
        "GW-A",
    ]
    assert [
        r["device_ident"] for r in world.get(path, params={"until": items[1]["since"]}).json()["items"]
    ] == ["GW-A"]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert [r["until"] for r in world.get(path, params={"since": future}).json()["items"]] == [None]

    for params in (
        {"since": since, "until": since},  # empty range
        {"since": "2026-03-01T00:00:00"},  # naive time
        {"since": "yesterday"},
        {"sort": "since"},  # unknown parameter
    ):
        assert_problem(world.get(path, params=params), 422)
    assert_problem(world.get(f"/gateways/{ids['c1']}/parents", params={"until": "2026-03-01T00:00:00"}), 422)


def test_topology_needs_a_token_and_gateways_read(world: World) -> None:
    """Who may call what is in ``test_permissions.MATRIX``; here the reasons."""
    meter, gateway = world.ids["meterA1"], world.ids["gwA"]
    for path in (f"/meters/{meter}/routes", f"/gateways/{gateway}/topology", f"/gateways/{gateway}/parents"):
        assert_problem(world.client.get(path), 401)
    # Billing and customer logins read meters, but a route names network devices and mesh neighbours.
    for role in ("billing", "customer"):
        assert_problem(world.get(f"/meters/{meter}/routes", as_user=role), 403)
        assert world.get(f"/meters/{meter}", as_user=role).status_code == 200


def test_other_tenants_ids_are_404(world: World) -> None:
    ids = _network(world)
    for path in (
        f"/gateways/{ids['gwA']}/topology",
        f"/gateways/{ids['c1']}/topology",
        f"/gateways/{ids['c1']}/parents",
        f"/meters/{ids['meter']}/routes",
        f"/meters/{world.ids['meterA1']}/routes",
        "/gateways/999999/topology",
        "/meters/999999/routes",
    ):
        problem = assert_problem(world.get(path, tenant="beta"), 404)
        assert problem["type"].endswith("/not-found")
    # Nor can beta register its meter on acme's devices, so acme's tree never shows beta's meters.
    body = {"serial": "M-B9", **METER, "comm_device_id": ids["c1"]}
    assert_problem(world.post("/meters", body, tenant="beta"), 422)
    beta_tree = world.get(f"/gateways/{world.ids['gwB']}/topology", tenant="beta").json()
    assert [m["serial"] for m in beta_tree["tree"]["meters"]] == ["M-B1"]
    acme_tree = world.get(f"/gateways/{ids['gwA']}/topology").json()
    assert {m["serial"] for m in acme_tree["tree"]["meters"]} == {"M-A1", "M-A2", "M-NEW"}
