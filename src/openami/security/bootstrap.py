"""Operator-side set-up: the first tenant and its administrator, users from the CLI, the demo's login.

These run with the operator's own authority (shell access to the installation), not through the API,
so they take tenant slugs and are audited as ``cli``.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from openami.security.audit import AuditLog
from openami.security.errors import InvalidInput
from openami.security.service import User, UserService, user_from_row
from openami.store import schema
from openami.store.errors import Conflict
from openami.store.repositories import tenants
from openami.tz import check_timezone

ACTOR = "cli"


def _tenant_id(engine: Engine, slug: str) -> int:
    with engine.connect() as conn:
        return tenants.get_by_slug(conn, slug).id


def create_tenant_with_admin(
    engine: Engine, slug: str, name: str, timezone: str, admin: str, password: str
) -> User:
    """A new tenant with one platform administrator; Conflict if the tenant exists already."""
    try:
        check_timezone(timezone)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    try:
        with engine.begin() as conn:
            tenant = tenants.create(conn, {"slug": slug, "name": name, "timezone": timezone})
            AuditLog().append(conn, tenant.id, ACTOR, "tenant.create", "tenant", tenant.id, {"slug": slug})
    except Conflict:
        raise Conflict(f"tenant {slug!r} already exists") from None
    return UserService(engine).create_user(
        tenant.id, admin, password, "admin", is_platform_admin=True, actor=ACTOR
    )


def ensure_user(
    engine: Engine, tenant: str, username: str, password: str, *, role: str, must_be_new: bool = False
) -> User:
    """Create the user unless it exists (then return it as it is, or Conflict with ``must_be_new``)."""
    tenant_id = _tenant_id(engine, tenant)
    existing = _find(engine, tenant_id, username)
    if existing is not None:
        if must_be_new:
            raise Conflict(f"user {username!r} already exists in tenant {tenant!r}")
        return existing
    return UserService(engine).create_user(tenant_id, username, password, role, actor=ACTOR)


def list_users(engine: Engine, tenant: str) -> list[User]:
    tenant_id = _tenant_id(engine, tenant)
    with engine.connect() as conn:
        rows = conn.execute(
            select(schema.app_user)
            .where(schema.app_user.c.tenant_id == tenant_id)
            .order_by(schema.app_user.c.username)
        ).mappings()
        return [user_from_row(dict(row)) for row in rows]


def _find(engine: Engine, tenant_id: int, username: str) -> User | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(schema.app_user).where(
                    schema.app_user.c.tenant_id == tenant_id, schema.app_user.c.username == username
                )
            )
            .mappings()
            .first()
        )
    return user_from_row(dict(row)) if row else None
