"""Users, logins and tokens: the services the API and the CLI call.

``AuthService.authenticate`` is written against user enumeration and brute force bookkeeping: an unknown
tenant, an unknown user, a disabled user and a wrong password all give the same ``AuthenticationFailed``
after the same amount of Argon2 work (a dummy verification when there is no hash to check), and every
failure is written to the audit log with the real reason. Password verification runs outside any
database transaction, so a slow hash never holds SQLite's write lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import Engine, select

from openami.security.audit import AuditLog
from openami.security.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from openami.security.passwords import Passwords
from openami.security.roles import get_role, permissions_for
from openami.security.tokens import (
    TOUCH_INTERVAL,
    IssuedToken,
    TokenKind,
    hash_token,
    issue_token,
    plausible_token,
    revoke_token,
    touch_token,
)
from openami.store.errors import InvalidReference, NotFound
from openami.store.repositories import Scope, customers, tenants
from openami.store.repositories.base import insert_returning
from openami.store.schema import api_token, app_user, tenant

_GENERIC_LOGIN_FAILURE = "invalid tenant, user name or password"
_GENERIC_TOKEN_FAILURE = "invalid, expired or revoked token"  # noqa: S105 (a message, not a secret)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request, as resolved from its token."""

    user_id: int
    tenant_id: int
    tenant_slug: str
    username: str
    role: str
    permissions: frozenset[str]
    customer_id: int | None
    is_platform_admin: bool
    own_customer_only: bool

    @property
    def actor(self) -> str:
        """How this principal appears in the audit log."""
        return f"user:{self.user_id}:{self.username}"

    @property
    def scope(self) -> Scope:
        """The data this principal may see: its tenant, narrowed to its customer for customer logins."""
        return Scope(self.tenant_id, self.own_customer_only, self.customer_id)

    def require(self, permission: str) -> None:
        """PermissionDenied unless the principal holds ``permission``."""
        if permission not in self.permissions:
            raise PermissionDenied(f"the {self.role} role lacks {permission}")


@dataclass(frozen=True, slots=True)
class User:
    """A user as shown to other code; the password hash never leaves this module."""

    id: int
    tenant_id: int
    username: str
    role: str
    full_name: str
    email: str | None
    customer_id: int | None
    is_active: bool
    is_platform_admin: bool
    last_login_at: datetime | None
    created_at: datetime


def user_from_row(row: dict[str, Any]) -> User:
    """A stored ``app_user`` row as a User: every column but the password hash."""
    return User(**{k: v for k, v in row.items() if k != "password_hash"})


class UserService:
    """Creates users (the CLI's bootstrap admin, the tenant admin's user management)."""

    def __init__(self, engine: Engine, *, passwords: Passwords | None = None, audit: AuditLog | None = None):
        self._engine = engine
        self._passwords = passwords or Passwords()
        self._audit = audit or AuditLog()

    def create_user(
        self,
        tenant_id: int,
        username: str,
        password: str,
        role: str,
        *,
        full_name: str = "",
        email: str | None = None,
        customer_id: int | None = None,
        is_platform_admin: bool = False,
        actor: str = "system",
    ) -> User:
        """Create a user; Conflict when the name is taken in the tenant, InvalidInput for a bad setup.

        A customer login must name a customer of the same tenant, and only customer logins may.
        """
        role_def = get_role(role)
        if not 0 < len(username) <= 120 or username != username.strip():
            raise InvalidInput("user name must be 1-120 characters without surrounding spaces")
        if role_def.own_customer_only != (customer_id is not None):
            raise InvalidInput(
                f"customer_id is {'required' if role_def.own_customer_only else 'not allowed'}"
            )
        password_hash = self._passwords.hash(password)
        values = {
            "tenant_id": tenant_id,
            "username": username,
            "password_hash": password_hash,
            "role": role,
            "full_name": full_name,
            "email": email,
            "customer_id": customer_id,
            "is_platform_admin": is_platform_admin,
        }
        with self._engine.begin() as conn:
            if customer_id is not None and customers.find(conn, Scope(tenant_id), customer_id) is None:
                raise InvalidReference(f"customer_id {customer_id} does not exist")
            user = user_from_row(insert_returning(conn, app_user, values, "user"))
            detail = {"username": username, "role": role, "is_platform_admin": is_platform_admin}
            self._audit.append(conn, tenant_id, actor, "user.create", "user", user.id, detail)
        return user


class AuthService:
    """Logins, token resolution and logout."""

    def __init__(
        self,
        engine: Engine,
        *,
        token_ttl: timedelta = timedelta(hours=12),
        passwords: Passwords | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine = engine
        self._token_ttl = token_ttl
        self._passwords = passwords or Passwords()
        self._audit = audit or AuditLog(clock)
        self._clock = clock

    def authenticate(
        self,
        tenant_slug: str,
        username: str,
        password: str,
        *,
        kind: TokenKind = "session",
        token_name: str = "",
    ) -> IssuedToken:
        """A new token for valid credentials; AuthenticationFailed (audited) otherwise."""
        with self._engine.connect() as conn:
            try:
                tenant_id: int | None = tenants.get_by_slug(conn, tenant_slug).id
            except NotFound:
                tenant_id = None
            user = None
            if tenant_id is not None:
                user = (
                    conn.execute(
                        select(app_user).where(
                            app_user.c.tenant_id == tenant_id, app_user.c.username == username
                        )
                    )
                    .mappings()
                    .first()
                )
        if user is None:
            self._passwords.verify_dummy(password)
            self._login_failed(
                tenant_id, tenant_slug, username, "unknown tenant" if tenant_id is None else "unknown user"
            )
        password_ok = self._passwords.verify(user["password_hash"], password)
        if not password_ok:
            self._login_failed(tenant_id, tenant_slug, username, "wrong password")
        if not user["is_active"]:
            self._login_failed(tenant_id, tenant_slug, username, "user disabled")
        now = self._clock()
        changes: dict[str, Any] = {"last_login_at": now}
        if self._passwords.needs_rehash(user["password_hash"]):
            changes["password_hash"] = self._passwords.hash(password)
        with self._engine.begin() as conn:
            conn.execute(app_user.update().where(app_user.c.id == user["id"]).values(**changes))
            issued = issue_token(conn, user["id"], kind, self._token_ttl, now=now, name=token_name)
            self._audit.append(
                conn,
                tenant_id,
                f"user:{user['id']}:{username}",
                "auth.login",
                "token",
                issued.token_id,
                {"kind": kind},
            )
        return issued

    def _login_failed(self, tenant_id: int | None, tenant_slug: str, username: str, reason: str) -> NoReturn:
        """Audit a failed login (in its own transaction, as nothing else commits) and refuse it."""
        detail = {"tenant": tenant_slug[:64], "username": username[:120], "reason": reason}
        with self._engine.begin() as conn:
            self._audit.append(conn, tenant_id, "anonymous", "auth.login_failed", "user", None, detail)
        raise AuthenticationFailed(_GENERIC_LOGIN_FAILURE)

    def resolve_token(self, token: str) -> Principal:
        """The principal behind a live token; AuthenticationFailed for anything else."""
        if not plausible_token(token):
            raise AuthenticationFailed(_GENERIC_TOKEN_FAILURE)
        query = (
            select(
                api_token.c.id.label("token_id"),
                api_token.c.expires_at,
                api_token.c.revoked_at,
                api_token.c.last_used_at,
                app_user.c.id.label("user_id"),
                app_user.c.tenant_id,
                app_user.c.username,
                app_user.c.role,
                app_user.c.customer_id,
                app_user.c.is_active,
                app_user.c.is_platform_admin,
                tenant.c.slug.label("tenant_slug"),
            )
            .join(app_user, app_user.c.id == api_token.c.user_id)
            .join(tenant, tenant.c.id == app_user.c.tenant_id)
            .where(api_token.c.token_hash == hash_token(token))
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        now = self._clock()
        if row is None or row.revoked_at is not None or row.expires_at <= now or not row.is_active:
            raise AuthenticationFailed(_GENERIC_TOKEN_FAILURE)
        if row.last_used_at is None or row.last_used_at < now - TOUCH_INTERVAL:
            with self._engine.begin() as conn:
                touch_token(conn, row.token_id, now=now)
        try:
            role = get_role(row.role)
        except InvalidInput:
            raise AuthenticationFailed(
                _GENERIC_TOKEN_FAILURE
            ) from None  # a role since removed from the matrix
        return Principal(
            user_id=row.user_id,
            tenant_id=row.tenant_id,
            tenant_slug=row.tenant_slug,
            username=row.username,
            role=role.name,
            permissions=permissions_for(role.name, is_platform_admin=row.is_platform_admin),
            customer_id=row.customer_id,
            is_platform_admin=row.is_platform_admin,
            own_customer_only=role.own_customer_only,
        )

    def logout(self, principal: Principal, token: str) -> None:
        """Revoke the token the principal used (audited); later requests with it get 401."""
        with self._engine.begin() as conn:
            if revoke_token(conn, token, now=self._clock()):
                self._audit.append(
                    conn, principal.tenant_id, principal.actor, "auth.logout", "user", principal.user_id
                )
