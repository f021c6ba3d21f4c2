"""What the API needs from the platform (``ApiContext``) and the per-request dependencies built on it.

The API never builds engines or services itself: the composition root hands it an ``ApiContext``, so
tests can build one around a test database and a fake clock. Authentication accepts the same opaque
token from either ``Authorization: Bearer`` (scripts, other services) or the ``openami_session``
cookie (browsers); authorisation is per route through ``require("<resource>:<read|write>")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from openami.config import Settings
from openami.hes.commands import CommandService
from openami.hes.gateway_link import GatewayLinkListener
from openami.hes.http_push import UplinkPushService
from openami.security.audit import AuditLog
from openami.security.errors import AuthenticationFailed
from openami.security.keyvault import KeyVault
from openami.security.service import AuthService, Principal

SESSION_COOKIE = "openami_session"


def _no_components() -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class ApiContext:
    """Everything the API uses, built by the composition root.

    ``metrics_text`` returns the Prometheus exposition and its content type (None: no /metrics route);
    ``health`` reports the platform's parts for GET /health (its keys are added to the answer).
    """

    engine: Engine
    settings: Settings
    auth_service: AuthService
    metrics_text: Callable[[], tuple[bytes, str]] | None = None
    health: Callable[[], dict[str, Any]] = _no_components
    audit: AuditLog = field(default_factory=AuditLog)
    commands: CommandService | None = None
    gateway_link: GatewayLinkListener | None = None
    """Pushes configuration to OpenAMI gateways (None: the endpoint answers 503)."""
    uplinks: UplinkPushService | None = None
    """Takes gateways' HTTP uplinks onto the bus (None: POST /uplinks answers 503)."""
    vault: KeyVault | None = None
    """The platform's key vault (None: routes that need one open it from the settings' master key)."""


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]

_bearer = HTTPBearer(auto_error=False, description="A token from POST /auth/login (or an API token).")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Set by POST /auth/login.")


def request_token(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> str:
    """The token of the request; the Authorization header wins over the cookie."""
    token = bearer.credentials if bearer is not None else cookie
    if not token:
        raise AuthenticationFailed("authentication required")
    return token


Token = Annotated[str, Depends(request_token)]


def current_principal(context: Context, token: Token) -> Principal:
    """The authenticated caller; 401 (problem+json, ``WWW-Authenticate: Bearer``) without a live token."""
    return context.auth_service.resolve_token(token)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(permission: str) -> Callable[[Principal], Principal]:
    """A dependency that yields the principal when it holds ``permission`` and answers 403 otherwise."""

    def dependency(principal: CurrentPrincipal) -> Principal:
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency
