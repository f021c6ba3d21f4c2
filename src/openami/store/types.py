"""Column types that keep the store's promises on every dialect.

``UTCDateTime`` refuses naive datetimes and always returns aware UTC values, so SQLite (which has no
time-zone type) and PostgreSQL (``timestamptz``) behave the same to the code above the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Text form of datetimes in SQLite, identical to what SQLAlchemy's own DateTime writes, so the bulk
#: writer (which bypasses type processing for speed) and the ORM paths compare equal.
SQLITE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class NaiveDatetimeError(ValueError):
    """A datetime without a time zone reached the store."""


def to_utc(value: datetime) -> datetime:
    """Convert an aware datetime to UTC; a naive one is a programming error."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"naive datetime {value.isoformat()} (time-zone-aware values only)")
    return value.astimezone(UTC)


def sqlite_timestamp(value: datetime) -> str:
    """The SQLite storage text of an aware datetime."""
    return to_utc(value).strftime(SQLITE_DATETIME_FORMAT)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every dialect."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = to_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def json_type() -> TypeEngine[Any]:
    """JSON on SQLite, JSONB on PostgreSQL (indexable, compact)."""
    return JSON().with_variant(JSONB(), "postgresql")
