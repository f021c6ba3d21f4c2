"""Engines for the two supported databases, configured for their roles.

SQLite is the embedded default: WAL so the API can read while ingest writes, ``synchronous=NORMAL``
(durable at each checkpoint, safe against application crashes, which is the kill -9 promise), foreign
keys on, and a busy timeout so concurrent writers wait instead of failing. PostgreSQL needs psycopg 3
(``postgresql+psycopg://``) for COPY.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


class StoreError(Exception):
    """Base of every store failure."""


class UnsupportedDatabase(StoreError):
    """The URL names a database OpenAMI does not support."""


def normalise_url(url: str) -> str:
    """Accept the common spellings of a PostgreSQL URL and use psycopg 3 for all of them."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "busy_timeout=30000",
        "temp_store=MEMORY",
        "cache_size=-65536",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Build the engine for ``url``; SQLite file paths get their folder created."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise UnsupportedDatabase("PostgreSQL needs psycopg 3: use postgresql+psycopg://")
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)
    raise UnsupportedDatabase(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
