"""The idempotent bulk writer of meter readings and the queries over them.

Readings are never updated in place (ARCHITECTURE principle 7). For every (channel, ts) of a batch the
writer stores version 1 when nothing is stored yet, skips the row when the latest stored version has the
same value and quality, and otherwise appends version latest + 1, keeping the old versions. Re-delivering
a batch is therefore harmless, which is what lets every upstream stage retry after a crash: one
``write`` call is one transaction, so a batch is either wholly stored or not at all.

Speed comes from splitting each batch. One probe asks, per channel, for the newest stored timestamp
inside the batch's time span for that channel; rows newer than it cannot collide with anything stored and
go straight into the table (COPY on PostgreSQL, a plain multi-row INSERT on SQLite). The remaining rows,
re-deliveries and corrections, go through a staging table and a single set-based merge that compares each
with its latest stored version. Live ingest is almost all fast path; replays are almost all merge path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from math import isfinite
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy import Engine, func, select

from openami.store.engine import StoreError
from openami.store.partitions import Month, Partitions, driver_connection, month_of, months_between
from openami.store.schema import READING_TABLES
from openami.store.types import sqlite_timestamp, to_utc

Kind = Literal["interval", "register"]

#: The ``source`` column's width; checked up front because SQLite would not enforce it.
SOURCE_MAX = 32
#: Batches spanning more months than this get their partitions from the exact months of their rows, so
#: one stray timestamp (a meter clock reset to 1970) does not create decades of empty partitions.
_SPAN_MONTHS = 3


class InvalidReading(StoreError):
    """A reading the store refuses; raised before anything of the batch is written."""


class NewReading(NamedTuple):
    """One reading to store. ``ts`` must be time-zone aware; it is stored as UTC."""

    channel_id: int
    ts: datetime
    value: float
    quality: int = 0
    source: str = ""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one ``write`` did, counted per distinct (channel, ts) of the batch."""

    inserted: int  # first version of a (channel, ts)
    revised: int  # a new version because value or quality changed
    unchanged: int  # already stored identically, skipped

    @property
    def total(self) -> int:
        return self.inserted + self.revised + self.unchanged


@dataclass(frozen=True, slots=True)
class ReadingRow:
    """One stored version of a reading."""

    channel_id: int
    ts: datetime
    value: float
    quality: int
    version: int
    source: str
    received_at: datetime


def _problem(row: NewReading) -> str:
    """Why ``row`` is refused (only called once a row has failed the fast check)."""
    channel_id, ts, value, quality, source = row
    if not isinstance(channel_id, int) or channel_id <= 0:
        return f"channel_id must be a positive integer, got {channel_id!r}"
    if not isinstance(ts, datetime) or ts.utcoffset() is None:
        return f"ts must be a time-zone-aware datetime, got {ts!r}"
    if not isinstance(value, int | float) or not isfinite(value):
        return f"value must be a finite number, got {value!r}"
    if type(quality) is not int:
        return f"quality must be an integer, got {quality!r}"
    return f"source must be a string of at most {SOURCE_MAX} characters, got {source!r}"


class _Batch:
    """A validated batch collapsed to one row per (channel, ts), the last one given winning."""

    def __init__(self, rows: Sequence[NewReading]) -> None:
        latest: dict[tuple[int, datetime], NewReading] = {}
        spans: dict[int, list[datetime]] = {}
        # The hot loop of ingest: every check is inlined and the descriptive error is only built when
        # a row fails. Aware datetimes hash and compare by instant, so no UTC conversion is needed here.
        for index, row in enumerate(rows):
            channel_id, ts, value, quality, source = row
            try:
                valid = (
                    channel_id > 0
                    and ts.utcoffset() is not None
                    and isfinite(value)
                    and type(quality) is int
                    and len(source) <= SOURCE_MAX
                )
            except (TypeError, AttributeError):
                valid = False
            if not valid:
                raise InvalidReading(f"row {index}: {_problem(row)}")
            latest[channel_id, ts] = row
            span = spans.get(channel_id)
            if span is None:
                spans[channel_id] = [ts, ts]
            elif ts < span[0]:
                span[0] = ts
            elif ts > span[1]:
                span[1] = ts
        self.rows = latest
        self.spans = spans

    def months(self) -> Iterable[Month]:
        """The UTC months the batch's rows fall in (the partitions it needs)."""
        span = months_between(min(s[0] for s in self.spans.values()), max(s[1] for s in self.spans.values()))
        if len(span) <= _SPAN_MONTHS:
            return span
        return {month_of(ts) for _channel, ts in self.rows}

    def split(self, watermarks: dict[int, datetime]) -> tuple[list[NewReading], list[NewReading]]:
        """(fresh, known): fresh rows are newer than anything stored for their channel in the span."""
        if not watermarks:
            return list(self.rows.values()), []
        fresh: list[NewReading] = []
        known: list[NewReading] = []
        for row in self.rows.values():
            mark = watermarks.get(row[0])
            (fresh if mark is None or row[1] > mark else known).append(row)
        return fresh, known


class _Dialect(Protocol):
    """The database-specific steps of one write; :meth:`ReadingWriter.write` runs them in order."""

    def begin(self, connection: Any) -> None:
        """Open the write transaction (the partitions, if any, already exist)."""
        ...

    def watermarks(
        self, connection: Any, table: str, spans: dict[int, list[datetime]]
    ) -> dict[int, datetime]:
        """Per channel, the newest stored ts within the span [lo, hi] (channels with none are absent)."""
        ...

    def insert_fresh(
        self, connection: Any, table: str, rows: list[NewReading], received_at: datetime
    ) -> bool:
        """Insert ``rows`` as version 1; False, with nothing written, if a concurrent writer was first."""
        ...

    def merge(
        self, connection: Any, table: str, rows: list[NewReading], received_at: datetime
    ) -> tuple[int, int]:
        """Store the rows new or changed against their latest version; returns (inserted, revised)."""
        ...


#: The columns both the fast path and the staging tables are filled with (``version`` defaults to 1).
_COLUMNS = "channel_id, ts, value, quality, source, received_at"


class _PostgreSQL:
    """COPY (binary) for both the fast path and the staging table; the merge is one statement."""

    def begin(self, connection: Any) -> None:
        """psycopg opens the transaction implicitly with the first statement."""

    def watermarks(
        self, connection: Any, table: str, spans: dict[int, list[datetime]]
    ) -> dict[int, datetime]:
        # One round trip for the whole batch; each probe is a backward scan of the primary-key index in
        # the partitions the span touches (run-time partition pruning). The spans travel as integer
        # array literals (microseconds since the epoch): psycopg adapts list elements one by one in
        # Python, which for thousands of timestamps cost more than the probes themselves.
        sql = (
            f"SELECT u.channel_id, (SELECT max(r.ts) FROM {table} r WHERE r.channel_id = u.channel_id "
            "AND r.ts >= timestamptz 'epoch' + u.lo * interval '1 microsecond' "
            "AND r.ts <= timestamptz 'epoch' + u.hi * interval '1 microsecond') AS mark "
            "FROM unnest(%s::int8[], %s::int8[], %s::int8[]) AS u(channel_id, lo, hi)"
        )
        args = (
            _int_array(spans),
            _int_array((lo - _EPOCH) // _MICROSECOND for lo, _hi in spans.values()),
            _int_array((hi - _EPOCH) // _MICROSECOND for _lo, hi in spans.values()),
        )
        rows = connection.execute(sql, args).fetchall()
        return {channel_id: mark for channel_id, mark in rows if mark is not None}

    def insert_fresh(
        self, connection: Any, table: str, rows: list[NewReading], received_at: datetime
    ) -> bool:
        from psycopg.errors import UniqueViolation  # psycopg is an optional extra: only import it here

        # A savepoint, so losing a race to a concurrent writer costs only this step: the rows then take
        # the merge path, which sees the winner's rows once it has committed.
        with connection.cursor() as cursor:
            cursor.execute("SAVEPOINT fresh_rows")
            try:
                _copy(cursor, table, rows, received_at)
            except UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT fresh_rows")
                return False
            cursor.execute("RELEASE SAVEPOINT fresh_rows")
        return True

    def merge(
        self, connection: Any, table: str, rows: list[NewReading], received_at: datetime
    ) -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE reading_stage (channel_id int8, ts timestamptz, value float8, "
                "quality int4, source text, received_at timestamptz) ON COMMIT DROP"
            )
            _copy(cursor, "reading_stage", rows, received_at)
            inserted = revised = 0
            # ON CONFLICT DO NOTHING waits for a concurrent writer of the same (channel, ts, version) and
            # skips the row if it commits; the next pass compares against the winner's committed row, so
            # no reading is lost. Without concurrency the first pass is the only one.
            while True:
                wanted, first, later = cursor.execute(_PG_MERGE_SQL.format(t=table)).fetchone()
                inserted += first
                revised += later
                if first + later == wanted:
                    return inserted, revised


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers."""
    return "{" + ",".join(map(str, values)) + "}"


def _copy(cursor: Any, table: str, rows: list[NewReading], received_at: datetime) -> None:
    """Binary COPY: no text formatting or parsing of timestamps and floats on either side."""
    with cursor.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "timestamptz", "float8", "int4", "text", "timestamptz"])
        for row in rows:
            copy.write_row((*row, received_at))


_PG_MERGE_SQL = """
WITH candidate AS MATERIALIZED (
    SELECT s.*, COALESCE(l.version, 0) + 1 AS version
    FROM reading_stage s
    LEFT JOIN LATERAL (
        SELECT r.version, r.value, r.quality FROM {t} r
        WHERE r.channel_id = s.channel_id AND r.ts = s.ts
        ORDER BY r.version DESC LIMIT 1
    ) l ON true
    WHERE l.version IS NULL OR l.value <> s.value OR l.quality <> s.quality
), written AS (
    INSERT INTO {t} (channel_id, ts, version, value, quality, source, received_at)
    SELECT channel_id, ts, version, value, quality, source, received_at FROM candidate
    ON CONFLICT DO NOTHING
    RETURNING version
)
SELECT (SELECT count(*) FROM candidate),
       count(*) FILTER (WHERE version = 1),
       count(*) FILTER (WHERE version > 1)
FROM written
"""


class _Stamps(dict[datetime, str]):
    """``sqlite_timestamp`` memoised. Formatting a timestamp costs more than inserting the row, and a
    batch repeats each interval boundary once per channel, so each distinct instant is formatted once."""

    def __missing__(self, ts: datetime) -> str:
        text = self[ts] = sqlite_timestamp(ts)
        return text


class _SQLite:
    """One writer at a time (BEGIN IMMEDIATE takes the write lock up front), so no races to handle.

    Timestamps are bound as the exact text SQLAlchemy's DateTime stores (``sqlite_timestamp``), bypassing
    type processing for speed while staying comparable with everything written through the ORM types.
    """

    def begin(self, connection: Any) -> None:
        connection.execute("BEGIN IMMEDIATE")

    def watermarks(
        self, connection: Any, table: str, spans: dict[int, list[datetime]]
    ) -> dict[int, datetime]:
        sql = f"SELECT max(ts) FROM {table} WHERE channel_id = ? AND ts >= ? AND ts <= ?"
        stamps = _Stamps()
        marks = {}
        for channel_id, (lo, hi) in spans.items():
            (mark,) = connection.execute(sql, (channel_id, stamps[lo], stamps[hi])).fetchone()
            if mark is not None:
                marks[channel_id] = datetime.fromisoformat(mark).replace(tzinfo=UTC)
        return marks

    def insert_fresh(
        self, connection: Any, table: str, rows: list[NewReading], received_at: datetime
    ) -> bool:
        self._insert(connection, table, rows, sqlite_timestamp(received_at))
        return True

    def merge(
        self, connection: Any, table: str, rows: list[NewReading], received_at: datetime
    ) -> tuple[int, int]:
        # A temporary table is transactional in SQLite: a rollback removes it along with the batch.
        connection.execute(
            "CREATE TEMP TABLE reading_stage (channel_id INTEGER, ts TEXT, value REAL, quality INTEGER, "
            "source TEXT, received_at TEXT)"
        )
        self._insert(connection, "reading_stage", rows, sqlite_timestamp(received_at))
        versions = [version for (version,) in connection.execute(_SQLITE_MERGE_SQL.format(t=table))]
        connection.execute("DROP TABLE reading_stage")
        inserted = versions.count(1)
        return inserted, len(versions) - inserted

    @staticmethod
    def _insert(connection: Any, table: str, rows: list[NewReading], received_at: str) -> None:
        stamps = _Stamps()
        connection.executemany(
            f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (channel_id, stamps[ts], value, quality, source, received_at)
                for channel_id, ts, value, quality, source in rows
            ],
        )


_SQLITE_MERGE_SQL = """
INSERT INTO {t} (channel_id, ts, version, value, quality, source, received_at)
SELECT s.channel_id, s.ts, COALESCE(l.version, 0) + 1, s.value, s.quality, s.source, s.received_at
FROM reading_stage s
LEFT JOIN {t} l ON l.channel_id = s.channel_id AND l.ts = s.ts
    AND l.version = (SELECT max(m.version) FROM {t} m WHERE m.channel_id = s.channel_id AND m.ts = s.ts)
WHERE l.version IS NULL OR l.value <> s.value OR l.quality <> s.quality
RETURNING version
"""


class ReadingWriter:
    """Writes batches of readings idempotently; one instance per engine (it caches known partitions)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._partitions = Partitions(engine)
        self._dialect: _Dialect = _PostgreSQL() if engine.dialect.name == "postgresql" else _SQLite()

    def write(
        self, kind: Kind, rows: Sequence[NewReading], *, received_at: datetime | None = None
    ) -> WriteResult:
        """Store ``rows`` in one transaction; raises :class:`InvalidReading` before writing anything.

        Duplicates of a (channel, ts) within ``rows`` collapse to the last one. ``received_at`` (default:
        now) is stamped on every version this call stores.
        """
        table = READING_TABLES[kind].name
        batch = _Batch(rows)
        if not batch.rows:
            return WriteResult(0, 0, 0)
        received = datetime.now(UTC) if received_at is None else to_utc(received_at)
        # On any failure the connection goes back to the pool, which rolls the transaction back.
        with driver_connection(self._engine) as connection:
            if self._partitions.enabled:
                self._partitions.ensure(connection, kind, batch.months())
            self._dialect.begin(connection)
            fresh, known = batch.split(self._dialect.watermarks(connection, table, batch.spans))
            if fresh and not self._dialect.insert_fresh(connection, table, fresh, received):
                fresh, known = [], fresh + known
            inserted, revised = self._dialect.merge(connection, table, known, received) if known else (0, 0)
            connection.commit()
        return WriteResult(len(fresh) + inserted, revised, len(known) - inserted - revised)


def query_readings(
    engine: Engine,
    kind: Kind,
    channel_id: int,
    start: datetime,
    end: datetime,
    *,
    limit: int = 1000,
    after: datetime | None = None,
    all_versions: bool = False,
) -> list[ReadingRow]:
    """Readings of one channel with ``start <= ts < end``, ordered by ts (then version), at most ``limit``
    timestamps.

    By default only the latest version of each ts. ``after`` is the keyset cursor: pass the last ts of a
    page to get the next one. With ``all_versions`` every version of each ts is returned and ``limit``
    counts timestamps, so a page never splits the versions of one ts.
    """
    table = READING_TABLES[kind]
    conditions = [table.c.channel_id == channel_id, table.c.ts >= start, table.c.ts < end]
    if after is not None:
        conditions.append(table.c.ts > after)
    columns = [table.c[field.name] for field in fields(ReadingRow)]
    if all_versions:
        page = select(table.c.ts).where(*conditions).distinct().order_by(table.c.ts).limit(limit)
        statement = (
            select(*columns)
            .where(table.c.channel_id == channel_id, table.c.ts.in_(page.scalar_subquery()))
            .order_by(table.c.ts, table.c.version)
        )
    else:
        other = table.alias("other")
        latest = (
            select(func.max(other.c.version))
            .where(other.c.channel_id == table.c.channel_id, other.c.ts == table.c.ts)
            .scalar_subquery()
        )
        statement = (
            select(*columns).where(*conditions, table.c.version == latest).order_by(table.c.ts).limit(limit)
        )
    with engine.connect() as conn:
        return [ReadingRow(**row._mapping) for row in conn.execute(statement)]


def latest_reading_ts(engine: Engine, kind: Kind, channel_id: int) -> datetime | None:
    """The newest stored ts of a channel (where an incremental read resumes), or None."""
    table = READING_TABLES[kind]
    with engine.connect() as conn:
        newest: datetime | None = conn.execute(
            select(func.max(table.c.ts)).where(table.c.channel_id == channel_id)
        ).scalar_one()
        return newest


def count_readings(engine: Engine, kind: Kind, channel_ids: Sequence[int] | None = None) -> int:
    """Stored rows, every version counted (tests and summaries)."""
    table = READING_TABLES[kind]
    statement = select(func.count()).select_from(table)
    if channel_ids is not None:
        statement = statement.where(table.c.channel_id.in_(channel_ids))
    with engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())
