"""One generic set of list / get / create / patch routes for the resources that are alike.

Customers, accounts, service points, gateways and meters differ only in table, models and permission
name, so ``resource_router`` builds their routes from a ``Resource`` description instead of five copies.
Every route: authenticate, check ``<permission>:read|write``, run one repository call inside the
principal's ``Scope`` (other tenants' ids are 404, customer logins see only their own rows), render.
Mutations write their audit entry in the same transaction as the change.

No ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations at run
time, and they name models that exist only inside ``resource_router``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeAlias, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, create_model
from sqlalchemy import Connection

from openami.api.deps import ApiContext, Context, require
from openami.api.pagination import ListQuery, Page, after_id, id_cursor
from openami.security.service import Principal
from openami.store.repositories import Repository, Scope, clamp_limit

ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The resource's id.")]

#: Error responses every authenticated route may give, for the OpenAPI document.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid token (problem+json)."},
    403: {"description": "The role lacks the permission (problem+json)."},
}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "Duplicate natural key (problem+json)."}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such id in your tenant (problem+json)."}
}


class HasId(Protocol):
    @property
    def id(self) -> int: ...


T = TypeVar("T", bound=HasId)

#: A custom list query: (connection, scope, parsed query, after id, limit) -> rows.
Lister = Callable[[Connection, Scope, Any, int | None, int], list[Any]]


@dataclass(frozen=True)
class Resource(Generic[T]):
    """How one resource is exposed: under ``path``, guarded by ``<permission>:read|write``."""

    path: str
    name: str
    permission: str
    repository: Repository[T]
    row_type: type[T]
    query_model: type[ListQuery]
    create_model: type[BaseModel] | None = None
    lister: Lister | None = None

    def __post_init__(self) -> None:
        if self.lister is None:
            unknown = set(self.filters_of_model()) - self.repository.filterable
            if unknown:
                raise ValueError(f"{self.name}: query fields {sorted(unknown)} are not filterable")

    def filters_of_model(self) -> list[str]:
        return [name for name in self.query_model.model_fields if name not in ListQuery.model_fields]

    def list(
        self, conn: Connection, scope: Scope, query: ListQuery, after: int | None, limit: int
    ) -> list[T]:
        if self.lister is not None:
            return self.lister(conn, scope, query, after, limit)
        filters = {name: getattr(query, name) for name in self.filters_of_model()}
        return self.repository.list(conn, scope, filters=filters, after_id=after, limit=limit)


def page_of(items: list[T], limit: int) -> Page[Any]:
    """A page with a cursor when it is full (a full last page costs the client one empty request)."""
    cursor = id_cursor(items[-1].id) if items and len(items) == limit else None
    return Page(items=items, next_cursor=cursor)


class HistoryFetch(Protocol):
    """A history read of one item: ``fetch(conn, scope, item_id, since=, until=, after_id=, limit=)``."""

    def __call__(
        self, conn: Connection, scope: Scope, item_id: int, /, *, since: Any, until: Any,
        after_id: int | None, limit: int,
    ) -> list[Any]: ...  # fmt: skip


def history_page(
    context: ApiContext, scope: Scope, item_id: int, query: Any, fetch: HistoryFetch
) -> Page[Any]:
    """One page of an item's history (``query``: a ``HistoryQuery``, periods overlapping [since, until))."""
    limit = clamp_limit(query.limit)
    with context.engine.connect() as conn:
        items = fetch(
            conn, scope, item_id, since=query.since, until=query.until, after_id=after_id(query.cursor),
            limit=limit,
        )  # fmt: skip
    return page_of(items, limit)


def list_page(context: ApiContext, scope: Scope, resource: Resource[T], query: ListQuery) -> Page[Any]:
    limit = clamp_limit(query.limit)
    with context.engine.connect() as conn:
        items = resource.list(conn, scope, query, after_id(query.cursor), limit)
    return page_of(items, limit)


def create_audited(
    context: ApiContext, principal: Principal, resource: Resource[T], values: dict[str, Any]
) -> T:
    """Create a row in the principal's tenant and audit it, in one transaction."""
    with context.engine.begin() as conn:
        row = resource.repository.create(conn, principal.tenant_id, values)
        context.audit.append(
            conn,
            principal.tenant_id,
            principal.actor,
            f"{resource.name}.create",
            resource.name,
            row.id,
            values,
        )
    return row


def update_audited(
    context: ApiContext, principal: Principal, resource: Resource[T], row_id: int, values: dict[str, Any]
) -> T:
    """Change a row in the principal's scope and audit the change, in one transaction (no-ops: no entry)."""
    with context.engine.begin() as conn:
        if not values:
            return resource.repository.get(conn, principal.scope, row_id)
        row = resource.repository.update(conn, principal.scope, row_id, values)
        context.audit.append(
            conn,
            principal.tenant_id,
            principal.actor,
            f"{resource.name}.update",
            resource.name,
            row_id,
            values,
        )
    return row


def partial_model(model: type[BaseModel]) -> type[BaseModel]:
    """The PATCH body of ``model``: the same fields and rules, each optional, unknown fields refused.

    A field may be left out (the None default is never validated nor sent on, thanks to
    ``exclude_unset``), but a value sent must pass the field's own rules, so ``null`` is refused where
    the column is NOT NULL.
    """
    fields: dict[str, Any] = {
        name: (field.rebuild_annotation(), None) for name, field in model.model_fields.items()
    }
    return create_model(
        f"{model.__name__.removesuffix('In')}Patch", __config__=ConfigDict(extra="forbid"), **fields
    )


def resource_router(resource: Resource[Any]) -> APIRouter:
    """GET list, GET one and, when the resource has a create model, POST and PATCH."""
    router = APIRouter(prefix=resource.path, tags=[resource.path.strip("/")], responses=AUTH_RESPONSES)
    Reader = Annotated[Principal, Depends(require(f"{resource.permission}:read"))]
    Writer = Annotated[Principal, Depends(require(f"{resource.permission}:write"))]
    # The models are known only at run time; mypy checks the routes against their base classes.
    if TYPE_CHECKING:
        QueryModel: TypeAlias = ListQuery
        Row: TypeAlias = HasId
    else:
        QueryModel = resource.query_model
        Row = resource.row_type

    @router.get("", response_model=Page[Row], summary=f"List {resource.name}s")
    def list_items(context: Context, principal: Reader, query: Annotated[QueryModel, Query()]) -> Any:
        return list_page(context, principal.scope, resource, query)

    @router.get("/{item_id}", response_model=Row, responses=NOT_FOUND, summary=f"Get a {resource.name}")
    def get_item(context: Context, principal: Reader, item_id: ItemId) -> Any:
        with context.engine.connect() as conn:
            return resource.repository.get(conn, principal.scope, item_id)

    if resource.create_model is None:
        return router
    if TYPE_CHECKING:
        CreateModel: TypeAlias = BaseModel
        PatchModel: TypeAlias = BaseModel
    else:
        CreateModel = resource.create_model
        PatchModel = partial_model(CreateModel)

    @router.post(
        "",
        status_code=201,
        response_model=Row,
        summary=f"Create a {resource.name}",
        responses=CONFLICT,
    )
    def create_item(
        context: Context,
        principal: Writer,
        body: CreateModel,
        request: Request,
        response: Response,
    ) -> Any:
        row = create_audited(context, principal, resource, body.model_dump(exclude_none=True))
        response.headers["Location"] = f"{request.url.path.rstrip('/')}/{row.id}"
        return row

    @router.patch(
        "/{item_id}",
        response_model=Row,
        responses={**NOT_FOUND, **CONFLICT},
        summary=f"Change a {resource.name}",
    )
    def patch_item(
        context: Context,
        principal: Writer,
        item_id: ItemId,
        body: PatchModel,
    ) -> Any:
        return update_audited(context, principal, resource, item_id, body.model_dump(exclude_unset=True))

    return router
