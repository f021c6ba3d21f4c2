"""Tenants: every user sees their own; platform administrators see and create all of them.

Tenant creation is written to the platform audit chain (``tenant_id`` NULL), since it happens above any
one tenant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from openami.api.crud import AUTH_RESPONSES, NOT_FOUND, ItemId, page_of
from openami.api.deps import Context, require
from openami.api.pagination import ListQuery, Page, after_id
from openami.api.schemas import TenantIn
from openami.security.service import Principal
from openami.store.errors import NotFound
from openami.store.repositories import Tenant, clamp_limit, tenants

router = APIRouter(prefix="/tenants", tags=["tenants"], responses=AUTH_RESPONSES)
Reader = Annotated[Principal, Depends(require("tenants:read"))]
Creator = Annotated[Principal, Depends(require("tenants:write"))]


@router.get("", response_model=Page[Tenant], summary="List tenants (your own, or all for platform admins)")
def list_tenants(context: Context, principal: Reader, query: Annotated[ListQuery, Query()]) -> Page[Any]:
    limit = clamp_limit(query.limit)
    only = None if principal.is_platform_admin else principal.tenant_id
    with context.engine.connect() as conn:
        items = tenants.list(conn, only_id=only, after_id=after_id(query.cursor), limit=limit)
    return page_of(items, limit)


@router.get("/{item_id}", response_model=Tenant, responses=NOT_FOUND, summary="Get a tenant")
def get_tenant(context: Context, principal: Reader, item_id: ItemId) -> Tenant:
    if not principal.is_platform_admin and item_id != principal.tenant_id:
        raise NotFound(f"tenant {item_id} not found")
    with context.engine.connect() as conn:
        return tenants.get(conn, item_id)


@router.post(
    "",
    status_code=201,
    response_model=Tenant,
    responses={409: {"description": "The slug is taken (problem+json)."}},
    summary="Create a tenant (platform admins only)",
)
def create_tenant(
    context: Context, principal: Creator, body: TenantIn, request: Request, response: Response
) -> Tenant:
    values = body.model_dump()
    with context.engine.begin() as conn:
        created = tenants.create(conn, values)
        context.audit.append(conn, None, principal.actor, "tenant.create", "tenant", created.id, values)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.id}"
    return created
