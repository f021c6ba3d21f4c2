"""The gateway's own archive: every reading it took, kept 45 days, and the outbox of batches to forward.

A data concentrator must survive days without its uplink and restarts at any moment, and the head-end
must store each reading once. The archive is one SQLite file (WAL, synchronous=NORMAL: a power cut
loses at most the last transaction, never corrupts) with three tables:

``reading``
    what the drivers read, keyed by (meter, channel, ts): polling the same interval twice stores it
    once. ``batch`` is the outbox sequence number that carries it, NULL until a batch is cut.
``event``
    meter and gateway events, the same way.
``outbox``
    batches cut from unsent readings and events, in sequence order, with their payload as it will be
    sealed (so a resend after a restart sends the same content) and the time it was acknowledged.

The forwarder cuts a batch (:meth:`Archive.cut_batch`), sends every unacknowledged batch in order
(:meth:`Archive.pending`) and marks what the head-end acknowledged (:meth:`Archive.acknowledge`).
Sequence numbers come from SQLite's AUTOINCREMENT and are never reused, not even after the rows are
purged, so the head-end's replay window never sees one twice. Retention (:meth:`Archive.purge`) drops
readings, events and batches older than the retention period, whether sent or not; what was never sent
is counted (``dropped_unsent``) and reported in the gateway's health rather than kept forever.

Blocking (sqlite3): the agent calls it from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

__all__ = ["RETENTION", "Archive", "ArchivedReading", "OutboxBatch"]

RETENTION: Final = timedelta(days=45)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS reading (
    meter TEXT NOT NULL, channel TEXT NOT NULL, ts INTEGER NOT NULL,
    unit TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL DEFAULT 'register', interval_s INTEGER,
    value REAL NOT NULL, quality INTEGER NOT NULL DEFAULT 0, batch INTEGER,
    PRIMARY KEY (meter, channel, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_unsent ON reading (batch) WHERE batch IS NULL;
CREATE INDEX IF NOT EXISTS reading_ts ON reading (ts);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY, meter TEXT NOT NULL, ts INTEGER NOT NULL, code TEXT NOT NULL,
    severity TEXT NOT NULL DEFAULT 'info', detail TEXT NOT NULL DEFAULT '{}', batch INTEGER,
    UNIQUE (meter, ts, code)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, created INTEGER NOT NULL, kind TEXT NOT NULL,
    payload BLOB NOT NULL, readings INTEGER NOT NULL, events INTEGER NOT NULL,
    sent_count INTEGER NOT NULL DEFAULT 0, acked INTEGER
);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ArchivedReading:
    meter: str
    channel: str
    ts: datetime
    value: float
    unit: str = ""
    kind: str = "register"
    interval_s: int | None = None
    quality: int = 0


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """A cut batch: its sequence number and the JSON payload to seal."""

    seq: int
    kind: str
    payload: bytes
    readings: int
    events: int
    sent_count: int


def _epoch(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError("archive timestamps must be time-zone aware")
    return int(ts.timestamp())


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class Archive:
    """One gateway's archive file (created on first use)."""

    def __init__(self, path: Path | str, *, retention: timedelta = RETENTION) -> None:
        self.path = Path(path)
        self.retention = retention
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, work: Any) -> Any:
        """Run ``work(db)`` in one IMMEDIATE transaction, serialised across threads."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def add_readings(self, readings: Iterable[ArchivedReading]) -> int:
        """Store readings; ones already archived (same meter, channel and ts) are ignored. New rows."""
        rows = [
            (r.meter, r.channel, _epoch(r.ts), r.unit, r.kind, r.interval_s, float(r.value), r.quality)
            for r in readings
        ]

        def work(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO reading (meter, channel, ts, unit, kind, interval_s, value, quality)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return db.total_changes - before

        return int(self._tx(work))

    def add_event(
        self,
        meter: str,
        ts: datetime,
        code: str,
        *,
        severity: str = "info",
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Store one event (once per meter, ts and code); True when it was new."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO event (meter, ts, code, severity, detail) VALUES (?, ?, ?, ?, ?)",
                (meter, _epoch(ts), code, severity, json.dumps(detail or {}, sort_keys=True)),
            )
            return cursor.rowcount == 1

        return bool(self._tx(work))

    def cut_batch(self, now: datetime, *, max_readings: int = 50_000) -> OutboxBatch | None:
        """Move up to ``max_readings`` unsent readings (and the unsent events) into a new batch."""

        def work(db: sqlite3.Connection) -> OutboxBatch | None:
            rows = db.execute(
                "SELECT meter, channel, ts, unit, kind, interval_s, value, quality FROM reading"
                " WHERE batch IS NULL ORDER BY meter, channel, ts LIMIT ?",
                (max_readings,),
            ).fetchall()
            events = db.execute(
                "SELECT id, meter, ts, code, severity, detail FROM event"
                " WHERE batch IS NULL ORDER BY id LIMIT 10000"
            ).fetchall()
            if not rows and not events:
                return None
            payload = _payload(rows, events)
            cursor = db.execute(
                "INSERT INTO outbox (created, kind, payload, readings, events) VALUES (?, 'batch', ?, ?, ?)",
                (_epoch(now), payload, len(rows), len(events)),
            )
            seq = int(cursor.lastrowid or 0)
            db.executemany(
                "UPDATE reading SET batch = ? WHERE meter = ? AND channel = ? AND ts = ?",
                [(seq, r[0], r[1], r[2]) for r in rows],
            )
            db.executemany("UPDATE event SET batch = ? WHERE id = ?", [(seq, e[0]) for e in events])
            return OutboxBatch(seq, "batch", payload, len(rows), len(events), 0)

        result: OutboxBatch | None = self._tx(work)
        return result

    def pending(self, limit: int = 100) -> list[OutboxBatch]:
        """Unacknowledged batches, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, payload, readings, events, sent_count FROM outbox"
                " WHERE acked IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxBatch(int(r[0]), r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    def mark_sent(self, seq: int) -> None:
        self._tx(lambda db: db.execute("UPDATE outbox SET sent_count = sent_count + 1 WHERE seq = ?", (seq,)))

    def acknowledge(self, seqs: Sequence[int], now: datetime) -> int:
        """Mark batches the head-end stored; returns how many were newly acknowledged."""

        def work(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "UPDATE outbox SET acked = ? WHERE seq = ? AND acked IS NULL",
                [(_epoch(now), s) for s in seqs],
            )
            return db.total_changes - before

        return int(self._tx(work))

    def purge(self, now: datetime) -> dict[str, int]:
        """Drop everything older than the retention period; counts of what went, unsent included."""
        cutoff = _epoch(now - self.retention)

        def work(db: sqlite3.Connection) -> dict[str, int]:
            unsent = db.execute(
                "SELECT count(*) FROM reading r WHERE ts < ? AND (batch IS NULL OR batch IN"
                " (SELECT seq FROM outbox WHERE acked IS NULL))",
                (cutoff,),
            ).fetchone()[0]
            readings = db.execute("DELETE FROM reading WHERE ts < ?", (cutoff,)).rowcount
            events = db.execute("DELETE FROM event WHERE ts < ?", (cutoff,)).rowcount
            batches = db.execute(
                "DELETE FROM outbox WHERE created < ? AND seq NOT IN (SELECT DISTINCT batch FROM reading"
                " WHERE batch IS NOT NULL UNION SELECT DISTINCT batch FROM event WHERE batch IS NOT NULL)",
                (cutoff,),
            ).rowcount
            db.execute(
                "INSERT INTO counter (name, value) VALUES ('dropped_unsent', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (unsent,),
            )
            return {"readings": readings, "events": events, "batches": batches, "dropped_unsent": unsent}

        result: dict[str, int] = self._tx(work)
        return result

    def readings(self, meter: str | None = None, *, since: datetime | None = None) -> list[ArchivedReading]:
        """What the archive holds (for the head-end's back-fill requests and for tests)."""
        query = "SELECT meter, channel, ts, value, unit, kind, interval_s, quality FROM reading WHERE ts >= ?"
        params: list[Any] = [_epoch(since) if since else 0]
        if meter is not None:
            query += " AND meter = ?"
            params.append(meter)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY meter, channel, ts", params).fetchall()
        return [
            ArchivedReading(r[0], r[1], datetime.fromtimestamp(r[2], UTC), r[3], r[4], r[5], r[6], r[7])
            for r in rows
        ]

    def stats(self) -> dict[str, int]:
        """Backlog and totals for the gateway's health report."""
        with self._lock:
            db = self._db
            unsent = db.execute("SELECT count(*) FROM reading WHERE batch IS NULL").fetchone()[0]
            unacked = db.execute(
                "SELECT count(*), coalesce(sum(readings), 0) FROM outbox WHERE acked IS NULL"
            )
            batches, in_flight = unacked.fetchone()
            total = db.execute("SELECT count(*) FROM reading").fetchone()[0]
            dropped = db.execute("SELECT value FROM counter WHERE name = 'dropped_unsent'").fetchone()
        return {
            "readings": int(total),
            "backlog_readings": int(unsent) + int(in_flight),
            "unacked_batches": int(batches),
            "dropped_unsent": int(dropped[0]) if dropped else 0,
        }


def _payload(rows: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> bytes:
    """The batch content: readings grouped into series (meter, channel, unit, kind) with [ts, value,
    quality] points, and events; the head-end turns it into a bus ReadingBatch."""
    series: dict[tuple[str, str, str, str, int | None], list[list[Any]]] = {}
    for meter, channel, ts, unit, kind, interval_s, value, quality in rows:
        series.setdefault((meter, channel, unit, kind, interval_s), []).append([_iso(ts), value, quality])
    body = {
        "series": [
            {"meter": m, "channel": c, "unit": u, "kind": k, "interval_s": i, "points": points}
            for (m, c, u, k, i), points in series.items()
        ],
        "events": [
            {"meter": e[1], "ts": _iso(e[2]), "code": e[3], "severity": e[4], "detail": json.loads(e[5])}
            for e in events
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()
