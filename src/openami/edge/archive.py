"""The gateway's own archive: every reading it took, kept 45 days, and the outbox of batches to forward.

A data concentrator must survive days without its uplink and restarts at any moment, and the head-end
must store each reading once. The archive is one SQLite file (WAL, synchronous=NORMAL: a power cut
loses at most the last transactions, never corrupts) with these tables:

``reading``
    what the drivers read, keyed by (meter, channel, ts): polling the same interval twice stores it
    once. ``batch`` is the outbox sequence number that carries it, NULL until a batch is cut.
``event``
    meter and gateway events, the same way.
``outbox``
    batches cut from unsent readings and events, in sequence order, with their payload as it will be
    sealed (so a resend after a restart sends the same content; dropped once acknowledged), the time
    it was acknowledged, and the head-end's reason when it refused the batch (a refused batch is not
    sent again; its payload is kept for inspection).
``state``
    small named values the agent keeps across restarts: the downlink replay window, pulse counters.
``counter``
    running totals (readings held, readings dropped unsent) and the blocks of numbers handed out
    (:meth:`Archive.reserve_block`: the DLMS invocation counters towards each meter).
``discovered``
    devices the gateway found that are not in its meter list (:mod:`openami.edge.discovery`), one row
    per protocol and id with when it was first and last seen.
``command``
    the head-end's commands by ``command_id`` (:mod:`openami.edge.commands`): when each arrived, its
    result once carried out, and when the head-end acknowledged that result. A row is written (with a
    full sync) before the meter is touched, so a resent COMMAND is never carried out twice, not even
    after a restart; acknowledged rows go with the retention period.

The forwarder cuts a batch (:meth:`Archive.cut_batch`), sends every unacknowledged batch in order
(:meth:`Archive.pending`) and marks what the head-end acknowledged (:meth:`Archive.acknowledge`).
Sequence numbers come from SQLite's AUTOINCREMENT and are never reused, not even after the rows are
purged, so the head-end's replay window never sees one twice. The same counter numbers the gateway's
other uplink envelopes (HEALTH, ALARM, TIME: :meth:`Archive.next_seq`), so a batch and a health report
never share a number; numbers are committed with a full sync (``synchronous=FULL`` for that
transaction) before the envelope carrying them is sent, so not even a power cut can reuse one.
A new archive starts counting at the time of its creation in milliseconds since the epoch, not at 1: a
gateway whose archive is lost (a new SD card, a reinstall) keeps numbering above anything the old one
sent (unless that sent over 1,000 envelopes a second on average), so the head-end's replay window never
mistakes its batches for replays. This needs the clock to be roughly right when the archive is created.

Retention (:meth:`Archive.purge`) drops readings, events and batches older than the retention period,
whether sent or not; what was never sent is counted (``dropped_unsent``) and reported in the gateway's
health rather than kept forever.

Blocking (sqlite3): the agent calls it from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

__all__ = [
    "RETENTION",
    "Archive",
    "ArchivedCommand",
    "ArchivedDevice",
    "ArchivedEvent",
    "ArchivedReading",
    "OutboxBatch",
]

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
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS discovered (
    protocol TEXT NOT NULL, id TEXT NOT NULL, address TEXT NOT NULL DEFAULT '',
    manufacturer TEXT NOT NULL DEFAULT '', medium TEXT, version INTEGER, device_type INTEGER,
    rssi INTEGER, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
    PRIMARY KEY (protocol, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS command (
    id INTEGER PRIMARY KEY, meter TEXT NOT NULL, kind TEXT NOT NULL, received INTEGER NOT NULL,
    finished INTEGER, result TEXT, acked INTEGER
);
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
class ArchivedEvent:
    meter: str
    ts: datetime
    code: str
    severity: str = "info"
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ArchivedDevice:
    """A discovered device (``discovered`` table). ``first_seen`` is kept from its first report."""

    protocol: str
    ident: str
    address: str
    manufacturer: str
    medium: str | None
    last_seen: datetime
    version: int | None = None
    device_type: int | None = None
    rssi: int | None = None
    first_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """A cut batch: its sequence number and the JSON payload to seal."""

    seq: int
    kind: str
    payload: bytes
    readings: int
    events: int
    sent_count: int


@dataclass(frozen=True, slots=True)
class ArchivedCommand:
    """One head-end command as the gateway keeps it (``command`` table); ``result`` None: not finished
    (running now, or interrupted by a restart)."""

    id: int
    meter: str
    kind: str
    received: datetime
    result: dict[str, Any] | None
    acked: bool


def _command(row: tuple[Any, ...]) -> ArchivedCommand:
    result = None if row[4] is None else json.loads(row[4])
    return ArchivedCommand(
        int(row[0]), row[1], row[2], datetime.fromtimestamp(row[3], UTC), result, row[5] is not None
    )


_COMMAND_COLUMNS: Final = "id, meter, kind, received, result, acked"


def _epoch(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError("archive timestamps must be time-zone aware")
    return int(ts.timestamp())


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class Archive:
    """One gateway's archive file (created on first use)."""

    def __init__(
        self, path: Path | str, *, retention: timedelta = RETENTION, first_seq: int | None = None
    ) -> None:
        self.path = Path(path)
        self.retention = retention
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "refused" not in columns:  # archives created before refusals were recorded
            self._db.execute("ALTER TABLE outbox ADD COLUMN refused TEXT")
        self._seed_counter(int(time.time() * 1000) if first_seq is None else first_seq)
        if self._db.execute("SELECT 1 FROM counter WHERE name = 'readings'").fetchone() is None:
            # Kept as a running total so health reports never count millions of rows; counted once here
            # for archives created before the total was kept.
            self._db.execute("INSERT INTO counter (name, value) SELECT 'readings', count(*) FROM reading")

    def _seed_counter(self, first_seq: int) -> None:
        """Start a new archive's uplink numbering at ``first_seq`` (module docstring)."""
        if not 1 <= first_seq < 2**62:
            raise ValueError("first_seq must be 1 .. 2**62-1")

        def work(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'outbox'").fetchone() is not None:
                return
            if db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None:
                return
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (first_seq - 1,))

        self._tx(work, durable=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, work: Any, *, durable: bool = False) -> Any:
        """Run ``work(db)`` in one IMMEDIATE transaction, serialised across threads.

        ``durable``: the commit is synced to disk (and with it every commit before it), for numbers
        that leave the gateway and must never be handed out twice, even after a power cut.
        """
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
            return result

    def add_readings(self, readings: Iterable[ArchivedReading]) -> int:
        """Store readings; ones already archived (same meter, channel and ts) are ignored. New rows."""
        return self.add(readings)[0]

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

    def add(
        self, readings: Iterable[ArchivedReading], events: Iterable[ArchivedEvent] = ()
    ) -> tuple[int, list[ArchivedEvent]]:
        """Store one read's readings and events in one transaction (each kept once, as
        :meth:`add_readings` and :meth:`add_event` do); the count of new readings and the new events."""
        rows = [
            (r.meter, r.channel, _epoch(r.ts), r.unit, r.kind, r.interval_s, float(r.value), r.quality)
            for r in readings
        ]
        wanted = list(events)

        def work(db: sqlite3.Connection) -> tuple[int, list[ArchivedEvent]]:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO reading (meter, channel, ts, unit, kind, interval_s, value, quality)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = db.total_changes - before
            _bump(db, "readings", added)
            new_events = []
            for e in wanted:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO event (meter, ts, code, severity, detail) VALUES (?, ?, ?, ?, ?)",
                    (e.meter, _epoch(e.ts), e.code, e.severity, json.dumps(e.detail or {}, sort_keys=True)),
                )
                if cursor.rowcount == 1:
                    new_events.append(e)
            return added, new_events

        result: tuple[int, list[ArchivedEvent]] = self._tx(work)
        return result

    def next_seq(self) -> int:
        """A new uplink sequence number for an envelope that is not a batch (HEALTH, ALARM, TIME).

        It comes from the outbox's own AUTOINCREMENT counter, so it is never a batch's number, and is
        durable before it is returned (module docstring).
        """

        def work(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            top = db.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
            seq = max(int(row[0]) if row else 0, int(top)) + 1
            if row is None:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (seq,))
            else:
                db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'", (seq,))
            return seq

        return int(self._tx(work, durable=True))

    def last_seq(self) -> int:
        """The uplink counter: the highest sequence number handed out so far (before the first, the
        number below the first)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

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

        result: OutboxBatch | None = self._tx(work, durable=True)
        return result

    def renumber(self, seq: int, now: datetime) -> OutboxBatch | None:
        """Give an unacknowledged batch a new sequence number (same content), for a batch that stayed
        unacknowledged so long that its number may have left the head-end's replay window. None when
        ``seq`` is no longer pending."""

        def work(db: sqlite3.Connection) -> OutboxBatch | None:
            row = db.execute(
                "SELECT kind, payload, readings, events, sent_count FROM outbox"
                " WHERE seq = ? AND acked IS NULL",
                (seq,),
            ).fetchone()
            if row is None:
                return None
            cursor = db.execute(
                "INSERT INTO outbox (created, kind, payload, readings, events, sent_count)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_epoch(now), row[0], row[1], row[2], row[3], row[4]),
            )
            new = int(cursor.lastrowid or 0)
            db.execute("UPDATE reading SET batch = ? WHERE batch = ?", (new, seq))
            db.execute("UPDATE event SET batch = ? WHERE batch = ?", (new, seq))
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            return OutboxBatch(new, row[0], bytes(row[1]), row[2], row[3], row[4])

        result: OutboxBatch | None = self._tx(work, durable=True)
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
        """Mark batches the head-end stored; returns how many were newly acknowledged.

        An acknowledged batch's payload is dropped (its readings stay in the archive): it was over half
        of the archive's size, and nothing sends it again.
        """

        def work(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "UPDATE outbox SET acked = ?, payload = x'' WHERE seq = ? AND acked IS NULL",
                [(_epoch(now), s) for s in seqs],
            )
            return db.total_changes - before

        return int(self._tx(work))

    def refuse(self, refusals: dict[int, str], now: datetime) -> int:
        """Record batches the head-end refused (with its reason): they leave the outbox's pending list
        and are counted in :meth:`stats`, never sent again. Returns how many were newly refused."""

        def work(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "UPDATE outbox SET acked = ?, refused = ? WHERE seq = ? AND acked IS NULL",
                [(_epoch(now), reason[:500], seq) for seq, reason in refusals.items()],
            )
            return db.total_changes - before

        return int(self._tx(work))

    def refused(self) -> dict[int, str]:
        """Sequence number -> the head-end's reason, of every refused batch still in the outbox."""
        with self._lock:
            rows = self._db.execute("SELECT seq, refused FROM outbox WHERE refused IS NOT NULL").fetchall()
        return {int(r[0]): str(r[1]) for r in rows}

    def begin_command(self, command_id: int, meter: str, kind: str, now: datetime) -> ArchivedCommand | None:
        """Record that command ``command_id`` is being carried out, durably, before the meter is touched;
        None when it is new, else what was recorded before (finished, or interrupted) and nothing changes."""

        def work(db: sqlite3.Connection) -> ArchivedCommand | None:
            row = db.execute(f"SELECT {_COMMAND_COLUMNS} FROM command WHERE id = ?", (command_id,)).fetchone()
            if row is not None:
                return _command(row)
            db.execute(
                "INSERT INTO command (id, meter, kind, received) VALUES (?, ?, ?, ?)",
                (command_id, meter, kind, _epoch(now)),
            )
            return None

        found: ArchivedCommand | None = self._tx(work, durable=True)
        return found

    def finish_command(self, command_id: int, result: dict[str, Any], now: datetime) -> None:
        """Keep the result of a command (sent to the head-end until it acknowledges it)."""
        self._tx(
            lambda db: db.execute(
                "UPDATE command SET finished = ?, result = ? WHERE id = ?",
                (_epoch(now), json.dumps(result, separators=(",", ":")), command_id),
            ),
            durable=True,
        )

    def command(self, command_id: int) -> ArchivedCommand | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM command WHERE id = ?", (command_id,)
            ).fetchone()
        return None if row is None else _command(row)

    def unacked_commands(self) -> list[ArchivedCommand]:
        """Finished commands whose result the head-end has not acknowledged, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM command"
                " WHERE result IS NOT NULL AND acked IS NULL ORDER BY id"
            ).fetchall()
        return [_command(row) for row in rows]

    def acknowledge_commands(self, command_ids: Sequence[int], now: datetime) -> int:
        """Mark these results stored by the head-end; how many were not marked before."""

        def work(db: sqlite3.Connection) -> int:
            marked = 0
            for command_id in command_ids:
                marked += db.execute(
                    "UPDATE command SET acked = ? WHERE id = ? AND result IS NOT NULL AND acked IS NULL",
                    (_epoch(now), command_id),
                ).rowcount
            return marked

        count: int = self._tx(work)
        return count

    def get_state(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, name: str, value: str) -> None:
        self._tx(
            lambda db: db.execute(
                "INSERT INTO state (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        )

    def note_devices(self, devices: Sequence[ArchivedDevice], *, limit: int) -> list[ArchivedDevice]:
        """Upsert discovered devices by protocol and id (details and ``last_seen`` refreshed, an RSSI
        only replaced by another); the ones not known before. Beyond ``limit`` rows the devices seen
        longest ago are dropped."""

        def work(db: sqlite3.Connection) -> list[ArchivedDevice]:
            new = []
            for d in devices:
                seen = _epoch(d.last_seen)
                cursor = db.execute(
                    "INSERT INTO discovered (protocol, id, address, manufacturer, medium, version,"
                    " device_type, rssi, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (protocol, id) DO NOTHING",
                    (d.protocol, d.ident, d.address, d.manufacturer, d.medium, d.version, d.device_type,
                     d.rssi, seen, seen),
                )  # fmt: skip
                if cursor.rowcount:
                    new.append(d)
                    continue
                db.execute(
                    "UPDATE discovered SET address = ?, manufacturer = ?, medium = ?, version = ?,"
                    " device_type = ?, rssi = coalesce(?, rssi), last_seen = max(last_seen, ?)"
                    " WHERE protocol = ? AND id = ?",
                    (d.address, d.manufacturer, d.medium, d.version, d.device_type, d.rssi, seen,
                     d.protocol, d.ident),
                )  # fmt: skip
            db.execute(
                "DELETE FROM discovered WHERE (protocol, id) IN (SELECT protocol, id FROM discovered"
                " ORDER BY last_seen DESC, first_seen DESC LIMIT -1 OFFSET ?)",
                (limit,),
            )
            return new

        result: list[ArchivedDevice] = self._tx(work)
        return result

    def devices(self) -> list[ArchivedDevice]:
        """Every discovered device, first found first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT protocol, id, address, manufacturer, medium, last_seen, version, device_type,"
                " rssi, first_seen FROM discovered ORDER BY first_seen, protocol, id"
            ).fetchall()
        return [
            ArchivedDevice(r[0], r[1], r[2], r[3], r[4], datetime.fromtimestamp(r[5], UTC), r[6], r[7], r[8],
                           datetime.fromtimestamp(r[9], UTC))
            for r in rows
        ]  # fmt: skip

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
            _bump(db, "readings", -readings)
            events = db.execute("DELETE FROM event WHERE ts < ?", (cutoff,)).rowcount
            batches = db.execute(
                "DELETE FROM outbox WHERE created < ? AND seq NOT IN (SELECT DISTINCT batch FROM reading"
                " WHERE batch IS NOT NULL UNION SELECT DISTINCT batch FROM event WHERE batch IS NOT NULL)",
                (cutoff,),
            ).rowcount
            _bump(db, "dropped_unsent", unsent)
            db.execute("DELETE FROM command WHERE acked IS NOT NULL AND received < ?", (cutoff,))
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

    def events(self, meter: str | None = None) -> list[ArchivedEvent]:
        """The archived events (of ``meter``), oldest first: for inspection and tests."""
        query = "SELECT meter, ts, code, severity, detail FROM event"
        params: list[Any] = []
        if meter is not None:
            query += " WHERE meter = ?"
            params.append(meter)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY ts, id", params).fetchall()
        return [
            ArchivedEvent(r[0], datetime.fromtimestamp(r[1], UTC), r[2], r[3], json.loads(r[4])) for r in rows
        ]

    def last_profile_times(self, meters: Sequence[str]) -> dict[str, datetime]:
        """Per meter: the last time held on *every* profile channel (those with an ``interval_s``), i.e.
        the earliest of the channels' latest readings, so a resumed read leaves no channel with a gap.
        Meters with no profile reading are absent."""
        if not meters:
            return {}
        marks = ",".join("?" * len(meters))
        with self._lock:
            rows = self._db.execute(
                "SELECT meter, min(last) FROM (SELECT meter, channel, max(ts) AS last FROM reading"
                f" WHERE meter IN ({marks}) AND interval_s IS NOT NULL GROUP BY meter, channel)"
                " GROUP BY meter",
                list(meters),
            ).fetchall()
        return {str(r[0]): datetime.fromtimestamp(r[1], UTC) for r in rows}

    def last_event_times(self, meters: Sequence[str], *, detail_key: str) -> dict[str, datetime]:
        """Per meter: the time of the last event whose detail holds ``detail_key`` (a collector marks
        the events it read from a meter's own logs so, not the gateway's ``comm_lost`` or a clock set).
        Meters with none are absent."""
        if not meters:
            return {}
        if not detail_key.isidentifier():
            raise ValueError(f"detail_key must be an identifier, not {detail_key!r}")
        marks = ",".join("?" * len(meters))
        with self._lock:
            rows = self._db.execute(
                f"SELECT meter, max(ts) FROM event WHERE meter IN ({marks})"
                " AND json_type(detail, ?) IS NOT NULL GROUP BY meter",
                [*meters, f"$.{detail_key}"],
            ).fetchall()
        return {str(r[0]): datetime.fromtimestamp(r[1], UTC) for r in rows}

    def reserve_block(self, name: str, block: int) -> int:
        """The first number of a new block of ``block`` numbers of the counter ``name`` (1 for a new
        counter): the archive then holds the number after the block. Durable before it returns, as
        :meth:`next_seq` is, so a number handed out is never handed out again (DLMS invocation counters:
        :mod:`openami.edge.dlms`)."""
        if block < 1:
            raise ValueError("block must be at least 1")

        def work(db: sqlite3.Connection) -> int:
            row = db.execute(
                "INSERT INTO counter (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + ? RETURNING value",
                (f"block:{name}", 1 + block, block),
            ).fetchone()
            return int(row[0]) - block

        return int(self._tx(work, durable=True))

    def release_block(self, name: str, start: int, block: int, following: int) -> bool:
        """Give back the unused end of the block reserved at ``start``: the counter then holds
        ``following``. Nothing changes when another block was reserved since (it lies above this one);
        True when the counter was lowered."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE counter SET value = ? WHERE name = ? AND value = ? AND ? <= value",
                (following, f"block:{name}", start + block, following),
            )
            return cursor.rowcount == 1

        return bool(self._tx(work, durable=True))

    def stats(self) -> dict[str, int]:
        """Backlog and totals for the gateway's health report."""
        with self._lock:
            db = self._db
            unsent = db.execute("SELECT count(*) FROM reading WHERE batch IS NULL").fetchone()[0]
            unacked = db.execute(
                "SELECT count(*), coalesce(sum(readings), 0) FROM outbox WHERE acked IS NULL"
            )
            batches, in_flight = unacked.fetchone()
            total = db.execute("SELECT value FROM counter WHERE name = 'readings'").fetchone()[0]
            dropped = db.execute("SELECT value FROM counter WHERE name = 'dropped_unsent'").fetchone()
            refused = db.execute("SELECT count(*) FROM outbox WHERE refused IS NOT NULL").fetchone()[0]
        return {
            "readings": int(total),
            "backlog_readings": int(unsent) + int(in_flight),
            "unacked_batches": int(batches),
            "dropped_unsent": int(dropped[0]) if dropped else 0,
            "refused_batches": int(refused),
        }


def _bump(db: sqlite3.Connection, name: str, delta: int) -> None:
    """Add ``delta`` to the running total ``name`` (in the caller's transaction)."""
    if delta:
        db.execute(
            "INSERT INTO counter (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, delta),
        )


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
