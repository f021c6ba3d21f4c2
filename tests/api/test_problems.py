"""Every error is RFC 9457 problem+json, and hostile input gets a clean 4xx, never a 500."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from openami.api.app import MAX_BODY_BYTES

from .support import World, assert_problem

HOSTILE_STRINGS = [
    "' OR 1=1 --",
    "Robert'); DROP TABLE meter;--",
    '"; SELECT pg_sleep(10); --',
    "%' UNION SELECT password_hash FROM app_user --",
    "Zoë Ñandú 北京 🚀 \u202e",
    "a" * 64,
]


def test_security_headers_on_success_and_error(world: World) -> None:
    for response in (world.client.get("/health"), world.client.get("/meters"), world.get("/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_problem_shapes(world: World) -> None:
    assert_problem(world.client.get("/meters"), 401)
    assert_problem(world.get("/gateways", as_user="customer"), 403)
    not_found = assert_problem(world.get("/meters/424242"), 404)
    assert not_found["instance"] == "/meters/424242"
    assert_problem(world.get("/no/such/route"), 404)
    assert_problem(world.client.delete("/meters/1", headers=world.headers("admin")), 405)
    assert_problem(world.post("/meters", {"serial": "M-A1", "medium": "gas", "protocol": "x"}), 409)
    invalid = assert_problem(world.post("/meters", {"serial": "", "medium": "plasma"}), 422)
    assert {tuple(e["loc"]) for e in invalid["errors"]} == {
        ("body", "serial"),
        ("body", "medium"),
        ("body", "protocol"),
    }
    assert all(set(e) == {"loc", "msg", "type"} for e in invalid["errors"])  # the input is not echoed


def test_body_over_the_limit_is_413(world: World) -> None:
    huge = {"number": "C-big", "name": "x", "address": "a" * (MAX_BODY_BYTES + 1)}
    assert_problem(world.post("/customers", huge), 413)
    chunked = world.client.post(
        "/customers",
        content=(b"x" * 65536 for _ in range(20)),
        headers={**world.headers("admin"), "content-type": "application/json"},
    )
    assert_problem(chunked, 413)


def test_malformed_bodies_are_422(world: World) -> None:
    headers = {**world.headers("admin"), "content-type": "application/json"}
    for content in (
        b"{not json",
        b"[]",
        b"null",
        b'{"number": 1, "name": {"$gt": ""}}',
        "\ud800".encode("utf-8", "surrogatepass"),
    ):
        assert_problem(world.client.post("/customers", content=content, headers=headers), 422)
    unknown_field = {"number": "C-x", "name": "x", "tenant_id": world.ids["tenantB"]}
    assert_problem(world.post("/customers", unknown_field), 422)
    form = world.client.post(
        "/customers",
        content=b"number=1&name=x",
        headers={**world.headers("admin"), "content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 422


def test_hostile_strings_are_just_data(world: World) -> None:
    for value in HOSTILE_STRINGS:
        found = world.get("/meters", params={"serial": value})
        assert found.status_code == 200
        assert found.json()["items"] == []
        created = world.post("/customers", {"number": value[:64], "name": value})
        assert created.status_code == 201, created.text
        assert world.get(f"/customers/{created.json()['id']}").json()["name"] == value
    assert len(world.get("/meters").json()["items"]) == 2  # the table is still there


def test_control_characters_and_nul_are_refused(world: World) -> None:
    for value in ("M\x00-1", "M\x1b[31m", "line\x07bell"):
        assert_problem(world.get("/meters", params={"serial": value}), 422)
        assert_problem(world.post("/meters", {"serial": value, "medium": "gas", "protocol": "x"}), 422)
    login = world.client.post(
        "/auth/login", json={"tenant": "acme\x00", "username": "admin", "password": "x"}
    )
    assert_problem(login, 422)


HOSTILE_PARAMETERS = [
    ("/meters/-1", 422),
    ("/meters/0", 422),
    ("/meters/99999999999999999999999999", 422),
    ("/meters/1e3", 422),
    ("/meters/abc", 422),
    ("/meters?limit=-5", 422),
    ("/meters?limit=abc", 422),
    ("/meters?comm_device_id=-1", 422),
    ("/meters?comm_device_id=99999999999999999999999", 422),
    ("/meters?cursor=" + "A" * 500, 422),
    ("/meters?cursor=not*base64", 422),
    ("/meters?medium=plasma", 422),
    ("/meters?sort=serial;DROP", 422),
    ("/meters?limit=1000000000000", 200),
    ("/events?since=9999-12-31T23:59:59Z", 200),
    ("/events?since=0001-01-01T00:00:00%2B14:00", 422),
    ("/events?until=9999-12-31T23:59:59-14:00", 422),
    ("/channels/1/readings?start=0001-01-01T00:00:00%2B01:00&end=2026-01-01T00:00:00Z", 422),
]


def test_hostile_parameters_give_clean_4xx(world: World) -> None:
    for path, status in HOSTILE_PARAMETERS:
        response = world.get(path)
        assert response.status_code == status, (path, response.text)
        if status >= 400:
            assert_problem(response, status)


def test_huge_limit_is_capped(world: World) -> None:
    from openami.store import repositories as repo

    with world.context.engine.begin() as conn:
        for n in range(1005):
            repo.customers.create(conn, world.ids["tenantA"], {"number": f"BULK-{n}", "name": "bulk"})
    page = world.get("/customers?limit=1000000").json()
    assert len(page["items"]) == 1000
    assert page["next_cursor"] is not None


def test_unexpected_errors_are_500_without_internals(world: World) -> None:
    app = world.client.app

    def explode() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret.py line 42")

    app.add_api_route("/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/explode")
    body = assert_problem(response, 500)
    assert "hunter2" not in response.text
    assert "secret" not in json.dumps(body)
