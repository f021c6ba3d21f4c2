"""The one generic repository every tenant-owned table goes through.

Tenant isolation is enforced structurally: every read starts from ``Repository.select`` and every
update is filtered by the same ``Repository.scope_condition``, which always holds
``tenant_id = :scope.tenant_id`` (plus the customer restriction for customer principals). Another
tenant's ids therefore look exactly like missing rows (``NotFound``, 404 in the API): no id leaks.
Writes check that every referenced id (``account.customer_id``, ``meter.comm_device_id``, ...) belongs to
the same tenant before inserting, because foreign keys alone would happily link two tenants' rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Connection, Select, Table, false, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from openami.store.errors import Conflict, InvalidReference, NotFound

#: Upper bound of any page, whatever the caller asks for: one request must not be able to pull a table.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

T = TypeVar("T")

#: Builds the "belongs to this customer" condition of a table for a customer id.
OwnerCondition = Callable[[int], ColumnElement[bool]]


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose data a query may see: always one tenant, and for customer principals one customer in it.

    ``own_customer_only`` with ``customer_id`` None (a customer login whose customer was deleted) sees
    nothing rather than everything.
    """

    tenant_id: int
    own_customer_only: bool = False
    customer_id: int | None = None


def clamp_limit(limit: int | None) -> int:
    """A page size between 1 and ``MAX_LIMIT``; None means the default."""
    if limit is None:
        return DEFAULT_LIMIT
    return max(1, min(int(limit), MAX_LIMIT))


def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's own INSERT, which has ``on_conflict_do_nothing`` on both supported databases."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def is_unique_violation(exc: IntegrityError) -> bool:
    """True when the integrity error is a duplicate key (not a foreign key or check failure)."""
    if getattr(exc.orig, "sqlstate", None) == "23505":  # psycopg: unique_violation
        return True
    return "UNIQUE constraint failed" in str(exc.orig)


@contextmanager
def integrity_errors(what: str) -> Iterator[None]:
    """Translate the driver's integrity errors into Conflict (duplicate key) or InvalidReference."""
    try:
        yield
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise Conflict(f"{what} already exists") from exc
        raise InvalidReference(f"{what} violates a constraint") from exc


def insert_returning(conn: Connection, table: Table, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Insert one row and return it as stored (server defaults included); duplicates become Conflict."""
    with integrity_errors(what):
        row = conn.execute(table.insert().values(**values).returning(*table.c)).one()
    return dict(row._mapping)


class Repository(Generic[T]):
    """List, get and create for one tenant-owned table, mapped to the row type ``T``.

    ``references`` names the columns that point at other tenant-owned tables, checked on create;
    ``owned_by`` says how a row belongs to a customer (None: customers never see this table);
    ``filterable`` lists the columns list() accepts equality filters on.
    """

    def __init__(
        self,
        table: Table,
        row_type: Callable[..., T],
        *,
        name: str,
        natural_key: str | None = None,
        references: Mapping[str, Table] | None = None,
        owned_by: OwnerCondition | None = None,
        filterable: Iterable[str] = (),
    ) -> None:
        self.table = table
        self.row_type = row_type
        self.name = name
        self.natural_key = natural_key
        self.references = dict(references or {})
        self.owned_by = owned_by
        self.filterable = frozenset(filterable)
        unknown = (self.filterable | set(self.references)) - set(table.c.keys())
        if unknown:
            raise ValueError(f"{name}: unknown columns {sorted(unknown)}")

    def scope_condition(self, scope: Scope) -> ColumnElement[bool]:
        """The WHERE clause confining a query to ``scope`` (tenant, and customer when restricted)."""
        condition: ColumnElement[bool] = self.table.c.tenant_id == scope.tenant_id
        if scope.own_customer_only:
            if scope.customer_id is None or self.owned_by is None:
                return false()
            condition = condition & self.owned_by(scope.customer_id)
        return condition

    def select(self, scope: Scope) -> Select[Any]:
        """``SELECT * FROM table`` already confined to ``scope``: the start of every read."""
        return select(self.table).where(self.scope_condition(scope))

    def _map(self, row: Any) -> T:
        return self.row_type(**row._mapping)

    def find(self, conn: Connection, scope: Scope, row_id: int) -> T | None:
        """The row with ``row_id`` in scope, or None (also for other tenants' ids)."""
        row = conn.execute(self.select(scope).where(self.table.c.id == row_id)).first()
        return None if row is None else self._map(row)

    def get(self, conn: Connection, scope: Scope, row_id: int) -> T:
        """The row with ``row_id`` in scope; NotFound otherwise."""
        found = self.find(conn, scope, row_id)
        if found is None:
            raise NotFound(f"{self.name} {row_id} not found")
        return found

    def get_by_key(self, conn: Connection, scope: Scope, key: str) -> T:
        """The row whose natural key (serial, number, code, ident) is ``key``; NotFound otherwise."""
        if self.natural_key is None:
            raise TypeError(f"{self.name} has no natural key")
        row = conn.execute(self.select(scope).where(self.table.c[self.natural_key] == key)).first()
        if row is None:
            raise NotFound(f"{self.name} {key!r} not found")
        return self._map(row)

    def list(
        self,
        conn: Connection,
        scope: Scope,
        *,
        after_id: int | None = None,
        limit: int | None = None,
        filters: Mapping[str, Any] | None = None,
        where: Iterable[ColumnElement[bool]] = (),
    ) -> list[T]:
        """One page in id order (keyset: pass the last id seen as ``after_id``), at most MAX_LIMIT rows.

        ``filters`` are equality filters on ``filterable`` columns (None values are ignored);
        ``where`` takes extra conditions from the resource's own query functions (time ranges).
        """
        query = self.select(scope)
        for column, value in (filters or {}).items():
            if column not in self.filterable:
                raise ValueError(f"{self.name} cannot be filtered on {column!r}")
            if value is not None:
                query = query.where(self.table.c[column] == value)
        for condition in where:
            query = query.where(condition)
        if after_id is not None:
            query = query.where(self.table.c.id > after_id)
        query = query.order_by(self.table.c.id).limit(clamp_limit(limit))
        return [self._map(row) for row in conn.execute(query)]

    def check_references(self, conn: Connection, tenant_id: int, values: Mapping[str, Any]) -> None:
        """Refuse ids of rows that are missing or belong to another tenant."""
        for column, target in self.references.items():
            ref = values.get(column)
            if ref is None:
                continue
            exists = conn.execute(
                select(target.c.id).where(target.c.id == ref, target.c.tenant_id == tenant_id)
            ).first()
            if exists is None:
                raise InvalidReference(f"{column} {ref} does not exist")

    def create(self, conn: Connection, tenant_id: int, values: Mapping[str, Any]) -> T:
        """Insert a row into ``tenant_id``; Conflict on a duplicate natural key."""
        if "id" in values or "tenant_id" in values:
            raise ValueError("id and tenant_id are assigned by the store")
        self.check_references(conn, tenant_id, values)
        stored = insert_returning(conn, self.table, {**values, "tenant_id": tenant_id}, self.name)
        return self.row_type(**stored)

    def update(self, conn: Connection, scope: Scope, row_id: int, values: Mapping[str, Any]) -> T:
        """Change some columns of a row in scope and return the new row; NotFound/Conflict as usual."""
        if {"id", "tenant_id", "created_at"} & set(values):
            raise ValueError("id, tenant_id and created_at cannot change")
        current = self.get(conn, scope, row_id)
        if not values:
            return current
        self.check_references(conn, scope.tenant_id, values)
        statement = (
            self.table.update()
            .where(self.table.c.id == row_id, self.scope_condition(scope))
            .values(**values)
            .returning(*self.table.c)
        )
        with integrity_errors(self.name):
            row = conn.execute(statement).one()
        return self._map(row)
