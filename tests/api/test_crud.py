"""Create, get, list, patch of the generic resources; natural-key conflicts; audit in the same transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from openami.security.audit import verify_chain
from openami.store.schema import audit_log

from .support import World, assert_problem

# path -> (body of a new row, natural key field, a field PATCH may change and its new value)
RESOURCES: dict[str, tuple[dict[str, Any], str, tuple[str, Any]]] = {
    "/customers": (
        {"number": "C-9", "name": "Zoë Ñandú 北京 🚀", "email": "z@example.org"},
        "number",
        ("phone", "+41 44 000"),
    ),
    "/accounts": (
        {"customer_id": "custA1", "number": "ACC-9", "currency": "CHF"},
        "number",
        ("status", "closed"),
    ),
    "/service-points": (
        {"code": "SP-9", "kind": "premise", "utility": "gas", "latitude": 47.4, "longitude": 8.5},
        "code",
        ("address", "Main St 1"),
    ),
    "/gateways": (
        {"ident": "GW-9", "kind": "concentrator", "model": "DC450"},
        "ident",
        ("status", "retired"),
    ),
    "/meters": (
        {"serial": "M-9", "medium": "heat", "protocol": "wmbus", "multiplier": "2.5", "dials": 8},
        "serial",
        ("firmware", "1.2.3"),
    ),
}


def _resolve(body: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    return {k: ids[v] if k.endswith("_id") and isinstance(v, str) else v for k, v in body.items()}


def test_create_get_list_patch_and_conflict(world: World) -> None:
    for path in RESOURCES:
        _create_get_list_patch_and_conflict(world, path)
    assert verify_chain(world.context.engine) == (True, None)


def _create_get_list_patch_and_conflict(world: World, path: str) -> None:
    raw, key, (field, new_value) = RESOURCES[path]
    body = _resolve(raw, world.ids)

    created = world.post(path, body)
    assert created.status_code == 201, created.text
    row = created.json()
    assert created.headers["location"] == f"{path}/{row['id']}"
    assert row["tenant_id"] == world.ids["tenantA"]
    for name, value in body.items():
        assert str(row[name]).rstrip("0").rstrip(".") == str(value).rstrip("0").rstrip("."), name

    assert world.get(f"{path}/{row['id']}").json() == row
    listed = world.get(f"{path}?{key}={body[key]}").json()
    assert listed == {"items": [row], "next_cursor": None}

    duplicate = world.post(path, body)
    assert assert_problem(duplicate, 409)["type"].endswith("/conflict")

    patched = world.patch(f"{path}/{row['id']}", {field: new_value})
    assert patched.status_code == 200, patched.text
    assert patched.json()[field] == new_value
    assert patched.json()[key] == row[key]

    assert_problem(world.patch(f"{path}/{row['id']}", {key: None}), 422)
    assert_problem(world.patch(f"{path}/{row['id']}", {"id": 1}), 422)
    unchanged = world.patch(f"{path}/{row['id']}", {})
    assert unchanged.json() == patched.json()

    resource = path.strip("/").rstrip("s").replace("-", "_")
    with world.context.engine.connect() as conn:
        entries = conn.execute(select(audit_log).where(audit_log.c.target_id == str(row["id"]))).all()
    actions = [e.action for e in entries if e.target_type == resource]
    assert actions == [f"{resource}.create", f"{resource}.update"], path
    assert entries[-1].actor.endswith(":admin")


def test_failed_create_leaves_no_audit_entry(world: World) -> None:
    world.token("admin")  # log in first: the login is audited too
    with world.context.engine.connect() as conn:
        before = len(conn.execute(select(audit_log.c.id)).all())
    assert_problem(world.post("/meters", {"serial": "M-A1", "medium": "gas", "protocol": "x"}), 409)
    with world.context.engine.connect() as conn:
        assert len(conn.execute(select(audit_log.c.id)).all()) == before


def test_keyset_pagination_walks_every_row_once(world: World) -> None:
    for n in range(7):
        assert world.post("/customers", {"number": f"P-{n}", "name": f"P {n}"}).status_code == 201
    seen: list[int] = []
    url = "/customers?limit=3"
    pages = 0
    while True:
        page = world.get(url).json()
        pages += 1
        seen += [c["id"] for c in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/customers?limit=3&cursor={page['next_cursor']}"
    assert len(seen) == len(set(seen)) == 9  # 2 from the fixture + 7
    assert seen == sorted(seen)
    assert pages == 4  # three full pages, then an empty one: a full page always carries a cursor


def test_meter_channels_and_installation(world: World) -> None:
    ids = world.ids
    channels = world.get(f"/meters/{ids['meterA1']}/channels").json()["items"]
    assert [(c["code"], c["kind"], c["unit"], c["interval_s"]) for c in channels] == [
        ("A+", "interval", "kWh", 900)
    ]
    assert world.get(f"/channels/{ids['chA1']}").json()["meter_id"] == ids["meterA1"]

    meter = world.post("/meters", {"serial": "M-new", "medium": "water", "protocol": "wmbus"}).json()
    sp = world.post("/service-points", {"code": "SP-new"}).json()
    body = {"service_point_id": sp["id"], "installed_at": "2026-04-01T08:00:00+02:00"}
    installed = world.post(f"/meters/{meter['id']}/installations", body)
    assert installed.status_code == 201, installed.text
    assert installed.json()["installed_at"] == "2026-04-01T06:00:00Z"
    assert_problem(world.post(f"/meters/{meter['id']}/installations", body), 409)
    naive = {"service_point_id": sp["id"], "installed_at": "2026-04-01T08:00:00"}
    assert_problem(world.post(f"/meters/{meter['id']}/installations", naive), 422)


def test_event_filters(world: World) -> None:
    ids = world.ids
    everything = world.get("/events").json()["items"]
    assert {e["meter_id"] for e in everything} == {ids["meterA1"], ids["meterA2"]}
    only_a1 = world.get(f"/events?meter_id={ids['meterA1']}").json()["items"]
    assert [e["meter_id"] for e in only_a1] == [ids["meterA1"]]
    assert world.get("/events?since=2026-03-01T00:00:01Z").json()["items"] == []
    assert len(world.get("/events?until=2026-03-01T00:00:01Z").json()["items"]) == 2
    assert world.get("/events?severity=alarm").json()["items"] == []
    assert_problem(world.get("/events?since=2026-03-01T00:00:00"), 422)
    assert_problem(world.get("/events?severity=apocalyptic"), 422)
