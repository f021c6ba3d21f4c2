"""Login, logout and "who am I".

Login answers with the token in the body (for scripts: send it as ``Authorization: Bearer``) and also
sets it as the ``openami_session`` cookie (for browsers): HttpOnly so page scripts cannot read it,
SameSite=Lax so other sites cannot make the browser send it with their POSTs, Secure when the request
came over HTTPS. The cookie holds the same opaque token, so logout revokes both at once.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from openami.api.deps import SESSION_COOKIE, Context, CurrentPrincipal, Token
from openami.api.schemas import LoginIn

router = APIRouter(prefix="/auth", tags=["auth"])


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth token type, not a secret)
    expires_at: datetime


class MeOut(BaseModel):
    user_id: int
    username: str
    tenant_id: int
    tenant_slug: str
    role: str
    permissions: list[str]
    customer_id: int | None
    is_platform_admin: bool


@router.post(
    "/login",
    response_model=LoginOut,
    responses={401: {"description": "Wrong tenant, user name or password (problem+json)."}},
)
def login(context: Context, body: LoginIn, request: Request, response: Response) -> LoginOut:
    issued = context.auth_service.authenticate(body.tenant, body.username, body.password)
    max_age = max(0, int((issued.expires_at - datetime.now(issued.expires_at.tzinfo)).total_seconds()))
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return LoginOut(access_token=issued.token, expires_at=issued.expires_at)


@router.post("/logout", status_code=204, responses={401: {"description": "No valid token."}})
def logout(context: Context, principal: CurrentPrincipal, token: Token) -> Response:
    context.auth_service.logout(principal, token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/me", response_model=MeOut, responses={401: {"description": "No valid token."}})
def me(principal: CurrentPrincipal) -> MeOut:
    return MeOut(
        user_id=principal.user_id,
        username=principal.username,
        tenant_id=principal.tenant_id,
        tenant_slug=principal.tenant_slug,
        role=principal.role,
        permissions=sorted(principal.permissions),
        customer_id=principal.customer_id,
        is_platform_admin=principal.is_platform_admin,
    )
