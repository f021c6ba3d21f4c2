"""The role x endpoint matrix, written out by hand: a change to ``ROLES`` that alters who may call what
fails here until this table is changed too, on purpose."""

from __future__ import annotations

from typing import Any

from openami.security.roles import ROLES

from .support import World

EVERYONE = frozenset(ROLES)
ALL = EVERYONE - {"gateway"}  # every person's role; a gateway account only pushes uplinks
STAFF = ALL - {"customer"}
NETWORK = frozenset({"admin", "operator", "field_technician", "analyst", "auditor"})  # gateways:read

# (method, path, body) -> roles that succeed; every other role gets 403.
MATRIX: list[tuple[str, str, dict[str, Any] | None, frozenset[str]]] = [
    ("GET", "/tenants", None, STAFF),
    ("POST", "/tenants", {"slug": "gamma", "name": "Gamma"}, frozenset()),
    ("GET", "/customers", None, frozenset({"admin", "operator", "billing", "customer", "auditor"})),
    ("GET", "/customers/{custA1}", None, frozenset({"admin", "operator", "billing", "customer", "auditor"})),
    ("POST", "/customers", {"number": "C-{role}", "name": "New"}, frozenset({"admin", "billing"})),
    ("GET", "/accounts", None, frozenset({"admin", "operator", "billing", "customer", "auditor"})),
    (
        "POST",
        "/accounts",
        {"customer_id": "{custA1}", "number": "ACC-{role}"},
        frozenset({"admin", "billing"}),
    ),
    ("GET", "/service-points", None, ALL),
    ("POST", "/service-points", {"code": "SP-{role}"}, frozenset({"admin", "operator"})),
    ("GET", "/gateways", None, frozenset({"admin", "operator", "field_technician", "analyst", "auditor"})),
    ("POST", "/gateways", {"ident": "GW-{role}"}, frozenset({"admin", "operator", "field_technician"})),
    ("GET", "/meters", None, ALL),
    ("GET", "/meters/{meterA1}", None, ALL),
    (
        "POST",
        "/meters",
        {"serial": "M-{role}", "medium": "water", "protocol": "wmbus"},
        frozenset({"admin", "operator", "field_technician"}),
    ),
    ("PATCH", "/meters/{meterA1}", {"firmware": "2.0"}, frozenset({"admin", "operator", "field_technician"})),
    ("GET", "/meters/{meterA1}/channels", None, ALL),
    ("GET", "/meters/{meterA1}/routes", None, NETWORK),  # meters:read and gateways:read
    ("GET", "/gateways/{gwA}/topology", None, NETWORK),
    ("GET", "/gateways/{gwA}/parents", None, NETWORK),
    ("GET", "/channels/{chA1}", None, ALL),
    ("GET", "/channels/{chA1}/readings?start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z", None, ALL),
    ("GET", "/events", None, STAFF),
    ("GET", "/auth/me", None, EVERYONE),
]

SUCCESS = {"GET": 200, "POST": 201, "PATCH": 200}


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    """Replace "{name}" by the id (or role) called name; other strings get {role} formatted in."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, str):
        return value.format(role=ids["role"])
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def test_role_matrix(world: World) -> None:
    """Every role against every endpoint; all mismatches are reported at once."""
    wrong = []
    for role in sorted(ROLES):
        headers = world.headers(role)
        for method, path, body, allowed in MATRIX:
            url = path.format(**world.ids)
            payload = _fill(body, {**world.ids, "role": role})
            response = world.client.request(method, url, json=payload, headers=headers)
            expected = SUCCESS[method] if role in allowed else 403
            if response.status_code != expected:
                wrong.append(
                    f"{role} {method} {url}: {response.status_code} != {expected}: {response.text[:200]}"
                )
    assert not wrong, "\n".join(wrong)


def test_platform_admin_may_create_tenants_and_sees_all(world: World) -> None:
    response = world.post("/tenants", {"slug": "gamma", "name": "Gamma"}, as_user="root")
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/tenants/{response.json()['id']}"
    slugs = [t["slug"] for t in world.get("/tenants", as_user="root").json()["items"]]
    assert slugs == ["acme", "beta", "gamma"]
    assert "tenants:write" in world.get("/auth/me", as_user="root").json()["permissions"]
