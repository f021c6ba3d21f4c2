"""Login, bearer and cookie authentication, logout, expiry, and the audit trail of failures."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from openami.security.audit import verify_chain
from openami.security.tokens import hash_token
from openami.store.schema import api_token, app_user, audit_log

from .support import PASSWORD, World, assert_problem


def login(world: World, username: str = "admin", password: str = PASSWORD, tenant: str = "acme"):
    return world.client.post(
        "/auth/login", json={"tenant": tenant, "username": username, "password": password}
    )


def test_login_returns_bearer_token_and_session_cookie(world: World) -> None:
    response = login(world)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_at"].endswith("Z")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"openami_session={body['access_token']};")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain-HTTP test client; set on HTTPS requests

    # Only the SHA-256 of the token is stored.
    with world.context.engine.connect() as conn:
        stored = conn.execute(select(api_token.c.token_hash)).scalars().all()
    assert hash_token(body["access_token"]) in stored
    assert body["access_token"] not in stored


def test_bearer_and_cookie_both_authenticate(world: World) -> None:
    token = login(world).json()["access_token"]
    world.client.cookies.clear()
    by_bearer = world.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert by_bearer.status_code == 200
    assert by_bearer.json()["username"] == "admin"
    assert by_bearer.json()["tenant_slug"] == "acme"

    world.client.cookies.set("openami_session", token)
    by_cookie = world.client.get("/auth/me")
    assert by_cookie.status_code == 200
    assert by_cookie.json()["user_id"] == by_bearer.json()["user_id"]


FAILED_LOGINS = [
    ("acme", "admin", "wrong password!", "wrong password"),
    ("acme", "nobody", PASSWORD, "unknown user"),
    ("no-such-tenant", "admin", PASSWORD, "unknown tenant"),
    ("beta", "operator", PASSWORD, "unknown user"),  # users are per tenant
]


def test_failed_logins_are_a_uniform_401_and_audited(world: World) -> None:
    for tenant, username, password, _ in FAILED_LOGINS:
        response = login(world, username, password, tenant)
        body = assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert body["detail"] == "invalid tenant, user name or password"
        assert "set-cookie" not in response.headers
    with world.context.engine.connect() as conn:
        query = select(audit_log).where(audit_log.c.action == "auth.login_failed").order_by(audit_log.c.id)
        failures = conn.execute(query).all()
    assert [(f.detail["username"], f.detail["reason"]) for f in failures] == [
        (username, reason) for _, username, _, reason in FAILED_LOGINS
    ]
    assert [f.tenant_id for f in failures] == [
        world.ids["tenantA"],
        world.ids["tenantA"],
        None,
        world.ids["tenantB"],
    ]
    assert verify_chain(world.context.engine) == (True, None)


def test_disabled_user_cannot_log_in_or_use_old_tokens(world: World) -> None:
    token = world.token("operator")
    with world.context.engine.begin() as conn:
        conn.execute(app_user.update().where(app_user.c.username == "operator").values(is_active=False))
    assert_problem(login(world, "operator"), 401)
    assert_problem(world.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}), 401)


def test_logout_revokes_the_token_and_clears_the_cookie(world: World) -> None:
    token = login(world).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    response = world.client.post("/auth/logout", headers=headers)
    assert response.status_code == 204
    assert (
        'openami_session=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    assert_problem(world.client.get("/auth/me", headers=headers), 401)
    world.client.cookies.set("openami_session", token)
    assert_problem(world.client.get("/auth/me"), 401)
    with world.context.engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.action)).scalars().all()
    assert "auth.logout" in actions


def test_logout_by_cookie(world: World) -> None:
    login(world)  # the client keeps the cookie
    assert world.client.get("/auth/me").status_code == 200
    assert world.client.post("/auth/logout").status_code == 204
    assert_problem(world.client.get("/auth/me"), 401)


def test_expired_token_is_refused(world: World) -> None:
    headers = world.headers("operator")
    assert world.client.get("/auth/me", headers=headers).status_code == 200
    world.clock.advance(timedelta(hours=12, seconds=1))
    assert_problem(world.client.get("/auth/me", headers=headers), 401)


BOGUS_AUTHORIZATION: list[str | bytes | None] = [
    None,
    "Bearer",
    "Bearer not-a-token",
    "Basic YWRtaW46cGFzc3dvcmQ=",
    "Bearer " + "x" * 5000,
    "Bearer \u00e9t\u00e9".encode(),
    b"Bearer abc\x01def",
]


def test_missing_or_bogus_credentials_are_401(world: World) -> None:
    for authorization in BOGUS_AUTHORIZATION:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = world.client.get("/meters", headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"


def test_last_used_is_recorded(world: World) -> None:
    headers = world.headers("analyst")
    world.client.get("/auth/me", headers=headers)
    with world.context.engine.connect() as conn:
        used = conn.execute(
            select(api_token.c.last_used_at).where(api_token.c.last_used_at.is_not(None))
        ).all()
    assert len(used) == 1
