"""Which scheduler plans: the one holding the installation's leader lock (ADR 0013).

On PostgreSQL the lock is a session-level advisory lock taken on a connection kept for the purpose:
when the leader's process dies, its session ends and PostgreSQL releases the lock, so a standby's next
try (every ``retry_s``) takes over. A leader checks its connection on every tick; a leader that lost its
connection (a network cut, a restarted database) steps down at once, because the database may already
have given the lock to another.

On SQLite the same guarantee comes from an exclusive ``flock`` on a file beside the database, held by
the process; the kernel releases it when the process dies. An in-memory database is one process's own,
which is always its leader.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
from pathlib import Path
from typing import IO, Final

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

__all__ = ["LeaderLock", "lock_key"]

log = logging.getLogger(__name__)

DEFAULT_NAME: Final = "openami-scheduler"


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for ``name`` (signed, as PostgreSQL wants it)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class LeaderLock:
    """Try to become (and stay) the leader; :meth:`held` says whether this process is it now.

    Blocking (it talks to the database): async callers use ``asyncio.to_thread``.
    """

    def __init__(self, engine: Engine, name: str = DEFAULT_NAME) -> None:
        self._engine = engine
        self.name = name
        self._conn: Connection | None = None
        self._file: IO[bytes] | None = None

    def held(self) -> bool:
        """Whether this process leads now: checks a held lock is still ours, or tries to take it."""
        if self._engine.dialect.name == "postgresql":
            return self._postgres()
        return self._sqlite()

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(self.name)})
                self._conn.commit()
            self._drop()
        if self._file is not None:
            self._file.close()  # closing the file releases its flock
            self._file = None

    def _postgres(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except DBAPIError:
                log.warning("scheduler leader lost its database session: stepping down")
                self._drop()
                return False
        conn = self._engine.connect()
        try:
            taken = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": lock_key(self.name)}))
            conn.commit()
        except DBAPIError:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        log.info("this process is now the scheduler leader (%s)", self.name)
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(DBAPIError):
                conn.invalidate()
                conn.close()

    def _sqlite(self) -> bool:
        if self._file is not None:
            return True
        database = self._engine.url.database
        if not database or database == ":memory:":
            return True
        path = Path(f"{database}.{self.name}.lock")
        handle = path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        log.info("this process is now the scheduler leader (%s)", path)
        return True
