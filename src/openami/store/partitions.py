"""Monthly range partitions of the reading tables on PostgreSQL, created on demand.

The migration creates ``interval_read`` and ``register_read`` as ``PARTITION BY RANGE (ts)`` parents
with no partitions and no default partition, so a row whose month has no partition is refused rather
than silently landing in a catch-all that later blocks new partitions. The writer therefore calls
:meth:`Partitions.ensure` for the months a batch touches before it writes, and operators pre-create the
coming months with :func:`ensure_partitions` (``CREATE TABLE ... PARTITION OF`` locks the parent, so
doing it ahead of time keeps that lock out of the ingest path).

Partitions live in the parent's schema (``current_schema()``, which follows ``search_path``), so
per-test schemas and multi-schema deployments each get their own. Creation runs in its own short
transaction under ``pg_advisory_xact_lock``: two writers that need the same month serialise instead of
one failing on the catalog's unique index. On SQLite everything here is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from openami.store.schema import READING_TABLES
from openami.store.types import to_utc

Month = tuple[int, int]

# Only existing partitions are looked up in the catalog, missing ones are created, both qualified by the
# schema the parent resolves to through search_path.
_MISSING_SQL = (
    "SELECT m.name FROM unnest(%s::text[]) AS m(name) "
    "WHERE to_regclass(format('%%I.%%I', current_schema(), m.name)) IS NULL"
)
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.openami.partitions'))"
# format() quotes the identifiers server-side, so any schema name (and no client library) will do.
_CREATE_SQL = (
    "SELECT format('CREATE TABLE IF NOT EXISTS %%I.%%I PARTITION OF %%I.%%I FOR VALUES FROM (%%L) TO (%%L)', "
    "current_schema(), %s::text, current_schema(), %s::text, %s::text, %s::text)"
)


@dataclass(frozen=True, slots=True)
class _Partition:
    table: str
    month: Month

    @property
    def name(self) -> str:
        year, month = self.month
        return f"{self.table}_p{year:04d}{month:02d}"

    def create_params(self) -> tuple[str, str, str, str]:
        """(partition, parent, lower bound, upper bound) for ``_CREATE_SQL``; bounds are UTC midnights."""
        year, month = self.month
        next_year, next_month = _next(self.month)
        lower = f"{year:04d}-{month:02d}-01 00:00+00"
        upper = f"{next_year:04d}-{next_month:02d}-01 00:00+00"
        return (self.name, self.table, lower, upper)


def _next(month: Month) -> Month:
    year, number = month
    return (year + 1, 1) if number == 12 else (year, number + 1)


def month_of(ts: datetime) -> Month:
    """The UTC calendar month a timestamp belongs to, which is the partition it is stored in."""
    utc = to_utc(ts)
    return (utc.year, utc.month)


def months_between(start: datetime, end: datetime) -> list[Month]:
    """Every month from ``start``'s to ``end``'s, both included."""
    month, last = month_of(start), month_of(end)
    months = []
    while month <= last:
        months.append(month)
        month = _next(month)
    return months


class Partitions:
    """The partitions known to exist for one engine, and the creation of the missing ones.

    The cache belongs to this object (one per engine, held by the writer), not to the module: a process
    may talk to several databases or schemas. A month enters the cache only once it is known to exist,
    so after the first batch of a month the check costs a set lookup and no round trip.
    """

    def __init__(self, engine: Engine) -> None:
        self.enabled = engine.dialect.name == "postgresql"
        self._known: set[_Partition] = set()

    def ensure(self, dbapi_connection: Any, kind: str, months: Iterable[Month]) -> list[str]:
        """Create the missing partitions of ``kind``'s table for ``months``; returns the names created.

        ``dbapi_connection`` is a psycopg connection outside any transaction: creation is committed
        here, before the caller's write transaction starts, so the parent's exclusive lock is held for
        milliseconds and never while a batch is written.
        """
        if not self.enabled:
            return []
        table = READING_TABLES[kind].name
        wanted = {_Partition(table, month) for month in months} - self._known
        if not wanted:
            return []
        by_name = {partition.name: partition for partition in wanted}
        created: list[str] = []
        with dbapi_connection.cursor() as cursor:
            missing = [row[0] for row in cursor.execute(_MISSING_SQL, (sorted(by_name),))]
            if missing:
                cursor.execute(_LOCK_SQL)
                # Re-check under the lock: another writer may have created them while we waited.
                missing = [row[0] for row in cursor.execute(_MISSING_SQL, (missing,))]
                for name in missing:
                    statement = cursor.execute(_CREATE_SQL, by_name[name].create_params()).fetchone()[0]
                    cursor.execute(statement)
                    created.append(name)
        dbapi_connection.commit()
        self._known |= wanted
        return created


@contextmanager
def driver_connection(engine: Engine) -> Iterator[Any]:
    """A pooled connection's driver object (psycopg or sqlite3), for COPY and hand-run transactions.

    SQLAlchemy's type processing and statement caching are bypassed on purpose: the bulk paths do their
    own binding. The connection goes back to the pool (rolled back) on exit.
    """
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        if connection is None:
            raise RuntimeError("pool returned a closed connection")
        yield connection
    finally:
        raw.close()


def ensure_partitions(engine: Engine, start: datetime, end: datetime) -> list[str]:
    """Pre-create the partitions of both reading tables for every month from ``start``'s to ``end``'s.

    Meant for maintenance (a daily job creating next month's partitions), so the first batch of a new
    month does not have to take the parent's lock. Returns the partitions created (empty on SQLite).
    """
    partitions = Partitions(engine)
    if not partitions.enabled:
        return []
    months = months_between(start, end)
    raw = engine.raw_connection()
    try:
        return [
            name for kind in READING_TABLES for name in partitions.ensure(raw.driver_connection, kind, months)
        ]
    finally:
        raw.close()
