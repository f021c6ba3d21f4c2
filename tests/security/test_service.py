"""UserService and AuthService without HTTP: user setup rules, tokens, rehash on login."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, select

from openami.security.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from openami.security.passwords import Passwords
from openami.security.service import AuthService, UserService
from openami.security.tokens import hash_token
from openami.store import repositories as repo
from openami.store.errors import Conflict, InvalidReference
from openami.store.schema import api_token, app_user

CHEAP = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
PASSWORD = "a long enough password"


def _setup(engine: Engine) -> tuple[int, int, int]:
    with engine.begin() as conn:
        a = repo.tenants.create(conn, {"slug": "a", "name": "A"}).id
        b = repo.tenants.create(conn, {"slug": "b", "name": "B"}).id
        foreign_customer = repo.customers.create(conn, b, {"number": "1", "name": "x"}).id
    return a, b, foreign_customer


def test_user_setup_rules(engine: Engine) -> None:
    a, _, foreign_customer = _setup(engine)
    users = UserService(engine, passwords=CHEAP)
    user = users.create_user(a, "alice", PASSWORD, "operator", full_name="Alice")
    assert (user.username, user.role, user.is_active) == ("alice", "operator", True)
    assert not hasattr(user, "password_hash")
    with pytest.raises(Conflict):
        users.create_user(a, "alice", PASSWORD, "analyst")
    with pytest.raises(InvalidInput, match="unknown role"):
        users.create_user(a, "bob", PASSWORD, "superuser")
    with pytest.raises(InvalidInput, match="at least"):
        users.create_user(a, "bob", "short", "analyst")
    with pytest.raises(InvalidInput, match="required"):
        users.create_user(a, "carol", PASSWORD, "customer")
    with pytest.raises(InvalidInput, match="not allowed"):
        users.create_user(a, "carol", PASSWORD, "operator", customer_id=foreign_customer)
    with pytest.raises(InvalidReference):
        users.create_user(a, "carol", PASSWORD, "customer", customer_id=foreign_customer)
    with pytest.raises(InvalidInput):
        users.create_user(a, " padded ", PASSWORD, "analyst")


def test_tokens_resolve_expire_and_revoke(engine: Engine) -> None:
    a, _, _ = _setup(engine)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    auth = AuthService(engine, token_ttl=timedelta(hours=2), passwords=CHEAP, clock=lambda: now[0])
    UserService(engine, passwords=CHEAP).create_user(a, "alice", PASSWORD, "analyst")

    issued = auth.authenticate("a", "alice", PASSWORD, kind="api", token_name="grafana")
    assert issued.expires_at == now[0] + timedelta(hours=2)
    principal = auth.resolve_token(issued.token)
    assert (principal.username, principal.tenant_slug, principal.role) == ("alice", "a", "analyst")
    assert principal.scope.tenant_id == a
    principal.require("readings:read")
    with pytest.raises(PermissionDenied):
        principal.require("meters:write")
    with engine.connect() as conn:
        row = conn.execute(select(api_token)).one()
    assert (row.kind, row.name, row.token_hash) == ("api", "grafana", hash_token(issued.token))

    now[0] += timedelta(hours=2)
    with pytest.raises(AuthenticationFailed):
        auth.resolve_token(issued.token)

    now[0] = datetime(2026, 1, 1, tzinfo=UTC)
    auth.logout(principal, issued.token)
    with pytest.raises(AuthenticationFailed):
        auth.resolve_token(issued.token)
    for bogus in ("", "x" * 300, "bad\x00token"):
        with pytest.raises(AuthenticationFailed):
            auth.resolve_token(bogus)


def test_login_upgrades_outdated_hashes(engine: Engine) -> None:
    a, _, _ = _setup(engine)
    UserService(engine, passwords=CHEAP).create_user(a, "alice", PASSWORD, "analyst")
    stronger = Passwords(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    auth = AuthService(engine, passwords=stronger)
    auth.authenticate("a", "alice", PASSWORD)
    with engine.connect() as conn:
        stored, last_login = conn.execute(select(app_user.c.password_hash, app_user.c.last_login_at)).one()
    assert "m=2048,t=2" in stored
    assert last_login is not None
    assert auth.resolve_token(auth.authenticate("a", "alice", PASSWORD).token).username == "alice"
