"""Helpers shared by the API tests: the two-tenant world, and the problem+json assertion.

Tenant "acme" (A) has two customers, each with an account, a service point and an installed meter with
one channel and one event, plus a gateway; tenant "beta" (B) has the same shape for one customer. Every
role has a user in A (named after the role); B has an admin; "root" in A is a platform admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from openami.api.deps import ApiContext
from openami.security.roles import ROLES
from openami.security.service import AuthService, UserService
from openami.store import repositories as repo
from openami.store.repositories import NewEvent

PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Clock:
    """A clock tests can move forward."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class World:
    client: TestClient
    context: ApiContext
    auth: AuthService
    users: UserService
    clock: Clock
    ids: dict[str, int] = field(default_factory=dict)
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, username: str, tenant: str = "acme") -> str:
        key = (tenant, username)
        if key not in self._tokens:
            self._tokens[key] = self.auth.authenticate(tenant, username, PASSWORD).token
        return self._tokens[key]

    def headers(self, username: str, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username, tenant)}"}

    def get(self, path: str, as_user: str = "admin", tenant: str = "acme", **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers(as_user, tenant), **kwargs)

    def post(self, path: str, body: Any, as_user: str = "admin", tenant: str = "acme") -> Any:
        return self.client.post(path, json=body, headers=self.headers(as_user, tenant))

    def patch(self, path: str, body: Any, as_user: str = "admin", tenant: str = "acme") -> Any:
        return self.client.patch(path, json=body, headers=self.headers(as_user, tenant))


def populate(engine: Engine, users: UserService) -> dict[str, int]:
    """Build both tenants; returns the ids the tests refer to, by short name."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for key, slug in (("A", "acme"), ("B", "beta")):
            tenant_id = repo.tenants.create(conn, {"slug": slug, "name": slug.title()}).id
            ids[f"tenant{key}"] = tenant_id
            ids[f"gw{key}"] = repo.comm_devices.create(
                conn, tenant_id, {"ident": f"GW-{key}", "kind": "gateway"}
            ).id
            for n in (1, 2) if key == "A" else (1,):
                name = f"{key}{n}"
                cid = repo.customers.create(
                    conn, tenant_id, {"number": f"C-{name}", "name": f"Customer {name}"}
                ).id
                aid = repo.accounts.create(conn, tenant_id, {"customer_id": cid, "number": f"ACC-{name}"}).id
                sp = repo.service_points.create(
                    conn, tenant_id, {"code": f"SP-{name}", "account_id": aid, "utility": "electricity"}
                ).id
                mid = repo.meters.create(
                    conn,
                    tenant_id,
                    {
                        "serial": f"M-{name}",
                        "medium": "electricity",
                        "protocol": "mqtt-json",
                        "comm_device_id": ids[f"gw{key}"],
                    },
                ).id
                repo.install_meter(conn, tenant_id, mid, sp, T0)
                ch = repo.resolve_channel(conn, tenant_id, f"M-{name}", "A+", "interval", "kWh", 900)
                repo.record_events(conn, tenant_id, [NewEvent(ts=T0, code="power.fail", meter_id=mid)])
                ids.update(
                    {
                        f"cust{name}": cid,
                        f"acc{name}": aid,
                        f"sp{name}": sp,
                        f"meter{name}": mid,
                        f"ch{name}": ch,
                    }
                )
    a, b = ids["tenantA"], ids["tenantB"]
    for role in ROLES:
        customer_id = ids["custA1"] if ROLES[role].own_customer_only else None
        ids[f"user_{role}"] = users.create_user(a, role, PASSWORD, role, customer_id=customer_id).id
    users.create_user(a, "root", PASSWORD, "admin", is_platform_admin=True)
    users.create_user(b, "admin", PASSWORD, "admin")
    return ids


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    assert body["type"].startswith("https://openami.org/problems/")
    return body  # type: ignore[no-any-return]
