"""Tenant isolation (other tenants' ids are 404, their rows never listed) and the customer scope."""

from __future__ import annotations

from .support import World, assert_problem

RANGE = "start=2026-01-01T00:00:00Z&end=2026-12-01T00:00:00Z"


FOREIGN_PATHS = [
    "/customers/{custB1}",
    "/accounts/{accB1}",
    "/service-points/{spB1}",
    "/gateways/{gwB}",
    "/meters/{meterB1}",
    "/meters/{meterB1}/channels",
    "/channels/{chB1}",
    "/channels/{chB1}/readings?" + RANGE,
    "/tenants/{tenantB}",
]


def test_other_tenants_ids_are_404_not_403(world: World) -> None:
    for path in FOREIGN_PATHS:
        url = path.format(**world.ids)
        body = assert_problem(world.get(url), 404)
        assert body["type"] == "https://openami.org/problems/not-found"
        assert world.get(url, tenant="beta").status_code == 200  # the row exists, in B


def test_lists_never_show_other_tenants_rows(world: World) -> None:
    for path in (
        "/customers",
        "/accounts",
        "/service-points",
        "/gateways",
        "/meters",
        "/channels",
        "/events",
    ):
        for tenant, foreign in (("acme", world.ids["tenantB"]), ("beta", world.ids["tenantA"])):
            items = world.get(path + "?limit=1000", tenant=tenant).json()["items"]
            assert items, path
            assert all(item["tenant_id"] != foreign for item in items), (tenant, path)
    assert [t["slug"] for t in world.get("/tenants").json()["items"]] == ["acme"]
    assert world.get(f"/events?meter_id={world.ids['meterB1']}").json()["items"] == []


def test_writes_cannot_reach_into_another_tenant(world: World) -> None:
    ids = world.ids
    foreign_customer = world.post("/accounts", {"customer_id": ids["custB1"], "number": "ACC-x"})
    assert assert_problem(foreign_customer, 422)["type"].endswith("/invalid-reference")
    foreign_gateway = world.post(
        "/meters", {"serial": "M-x", "medium": "gas", "protocol": "wmbus", "comm_device_id": ids["gwB"]}
    )
    assert_problem(foreign_gateway, 422)
    patched = world.patch(f"/meters/{ids['meterB1']}", {"firmware": "evil"})
    assert_problem(patched, 404)
    assert world.get(f"/meters/{ids['meterB1']}", tenant="beta").json()["firmware"] is None
    install = world.post(
        f"/meters/{ids['meterA1']}/installations",
        {"service_point_id": ids["spB1"], "installed_at": "2026-05-01T00:00:00Z"},
    )
    assert_problem(install, 409)  # A1 is installed already; and below, a free meter into B's point:
    free = world.post("/meters", {"serial": "M-free", "medium": "gas", "protocol": "wmbus"}).json()
    install = world.post(
        f"/meters/{free['id']}/installations",
        {"service_point_id": ids["spB1"], "installed_at": "2026-05-01T00:00:00Z"},
    )
    assert_problem(install, 422)
    # Same natural keys in two tenants are fine: uniqueness is per tenant.
    assert world.post("/meters", {"serial": "M-B1", "medium": "gas", "protocol": "wmbus"}).status_code == 201


def test_customer_sees_only_their_own_data(world: World) -> None:
    ids = world.ids

    def listed(path: str) -> list[int]:
        return [item["id"] for item in world.get(path, as_user="customer").json()["items"]]

    assert listed("/customers") == [ids["custA1"]]
    assert listed("/accounts") == [ids["accA1"]]
    assert listed("/service-points") == [ids["spA1"]]
    assert listed("/meters") == [ids["meterA1"]]
    assert listed("/channels") == [ids["chA1"]]
    for path in (
        "/customers/{custA2}",
        "/accounts/{accA2}",
        "/service-points/{spA2}",
        "/meters/{meterA2}",
        "/meters/{meterA2}/channels",
        "/channels/{chA2}",
        "/channels/{chA2}/readings?" + RANGE,
    ):
        assert_problem(world.get(path.format(**ids), as_user="customer"), 404)
    assert world.get(f"/channels/{ids['chA1']}/readings?{RANGE}", as_user="customer").status_code == 200
    # Filters cannot widen the scope.
    assert listed(f"/accounts?customer_id={ids['custA2']}") == []
    assert listed("/meters?serial=M-A2") == []


def test_customer_loses_a_meter_when_it_is_removed(world: World) -> None:
    from openami.store.schema import meter_installation

    with world.context.engine.begin() as conn:
        conn.execute(
            meter_installation.update()
            .where(meter_installation.c.meter_id == world.ids["meterA1"])
            .values(removed_at=meter_installation.c.installed_at)
        )
    assert world.get("/meters", as_user="customer").json()["items"] == []
    assert_problem(world.get(f"/meters/{world.ids['meterA1']}", as_user="customer"), 404)
