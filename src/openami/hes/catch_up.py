"""Gap-driven catch-up: intervals missing in the store are re-read, without anyone asking.

A scheduled load-profile read that failed past its retries, a gateway that was down for a night, a
meter that was unreachable for a day: each leaves intervals missing in ``interval_read``. Meters keep
their load profile for weeks, so the missing intervals can still be fetched. :func:`plan_catch_up`
finds them and plans one read per meter from the start of its earliest missing interval, in the
catch-up lane (after commands and on-demand reads, before bulk schedules).

What counts as missing: every interval channel (``channel.kind = 'interval'`` with an ``interval_s``)
of an active meter expects one reading per interval whose end (readings are stamped with the interval's
end) lies after the window's start and at or before the last complete interval before ``now``. The
window starts ``days`` back, or later when the meter was installed or the channel created later (no
reading is expected from before either). Timestamps are compared on the interval grid with half an
interval of tolerance, so a meter clock a few seconds off does not make gaps.

The search is set-based, in two queries a chunk: one counts each channel's distinct stored timestamps
in its window (an index range scan per channel) and keeps the channels with fewer than expected; the
second, only for those, finds the first hole with ``LAG`` over their timestamps. Both run on SQLite and
PostgreSQL (where the constant lower bound on ``ts`` prunes the monthly partitions).

A meter with an open (planned, queued or running) catch-up job is left alone. The job's
``dedup_key`` names the meter and its ``since``, so a gap that a finished catch-up could not fill (the
meter no longer has those intervals) is not asked for again; a new, later gap is.

Blocking (SQLAlchemy): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, Engine, Integer, case, cast, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from openami.hes import job_store
from openami.hes.job_store import NewJob
from openami.hes.jobstate import Lane, State
from openami.hes.paths import DeviceTree
from openami.store.schema import channel, interval_read, job, meter
from openami.store.types import UTCDateTime

__all__ = ["CatchUpReport", "Gap", "find_gaps", "plan_catch_up"]

_CHUNK: Final = 500
_OPEN: Final = (State.PLANNED.value, State.QUEUED.value, State.RUNNING.value)


@dataclass(frozen=True, slots=True)
class Gap:
    """A meter's missing intervals: ``since``, the start of the earliest missing one (over all its
    interval channels), and how many are missing in all."""

    tenant_id: int
    meter_id: int
    comm_device_id: int | None
    since: datetime
    missing: int


@dataclass(frozen=True, slots=True)
class CatchUpReport:
    """What one :func:`plan_catch_up` did: interval channels checked, meters with gaps and intervals
    missing in all, catch-up jobs planned, meters skipped for an open catch-up job, and meters left
    for the next round by ``max_jobs``."""

    channels: int
    meters_with_gaps: int
    intervals_missing: int
    jobs: int
    open_skipped: int
    deferred: int


def _seconds(conn: Connection, column: Any) -> ColumnElement[Any]:
    """A timestamp column as whole seconds since the epoch, in the dialect's SQL."""
    if conn.dialect.name == "postgresql":
        return cast(func.extract("epoch", column), Integer)
    return cast(func.strftime("%s", column), Integer)


def _later(first: Any, second: Any) -> ColumnElement[Any]:
    """The later of two timestamps (``greatest`` is not SQLite's); a NULL ``first`` gives ``second``."""
    return case((first > second, first), else_=second)


def _window(start: datetime) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """(the common window start, a channel's own: the latest of it, the channel's creation and its
    meter's installation), for queries joining ``channel`` and ``meter``."""
    since = literal(start, UTCDateTime())
    return since, _later(meter.c.installed_at, _later(channel.c.created_at, since))


@dataclass(frozen=True, slots=True)
class _Channel:
    id: int
    tenant_id: int
    meter_id: int
    comm_device_id: int | None
    interval: int
    lower: int
    upper: int

    @property
    def first(self) -> int:
        """The end of the first interval expected: the grid point after the window's start."""
        return (self.lower // self.interval + 1) * self.interval

    @property
    def expected(self) -> int:
        return max(0, self.upper // self.interval - self.lower // self.interval)

    def earliest_missing(self, first: int | None, last: int | None, hole_after: int | None) -> int | None:
        """The end (epoch seconds) of the earliest missing interval, from the channel's first and last
        stored timestamps and the one before its first hole; None when none is missing after all."""
        step = self.interval
        if first is None or last is None or first > self.first + step // 2:
            found: int | None = self.first
        elif hole_after is not None:
            found = round(hole_after / step) * step + step
        elif last < self.upper - step // 2:
            found = round(last / step) * step + step
        else:
            found = None
        return found if found is not None and found <= self.upper else None


def _channels(conn: Connection, start: datetime, now: datetime) -> tuple[list[_Channel], dict[int, int]]:
    """The interval channels of active meters, and the distinct readings each has in its window."""
    since, lower = _window(start)
    present = (
        select(func.count(func.distinct(interval_read.c.ts)))
        .where(
            interval_read.c.channel_id == channel.c.id,
            interval_read.c.ts > since,
            interval_read.c.ts > lower,
            interval_read.c.ts <= now,
        )
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            channel.c.id,
            meter.c.tenant_id,
            channel.c.meter_id,
            meter.c.comm_device_id,
            channel.c.interval_s,
            _seconds(conn, lower).label("lower"),
            present.label("present"),
        )
        .join(meter, meter.c.id == channel.c.meter_id)
        .where(channel.c.kind == "interval", channel.c.interval_s > 0, meter.c.status == "active")
        .order_by(channel.c.id)
    ).all()
    end = int(now.timestamp())
    found = [
        _Channel(
            row.id,
            row.tenant_id,
            row.meter_id,
            row.comm_device_id,
            row.interval_s,
            int(row.lower),
            end // row.interval_s * row.interval_s,
        )
        for row in rows
    ]
    return found, {row.id: int(row.present) for row in rows}


def _holes(
    conn: Connection, ids: Sequence[int], start: datetime, now: datetime
) -> dict[int, tuple[int, int, int | None]]:
    """Per channel of ``ids`` with readings in its window: (first, last, the timestamp before its
    first hole or None), all epoch seconds."""
    since, lower = _window(start)
    stamps = (
        select(interval_read.c.channel_id, _seconds(conn, interval_read.c.ts).label("t"))
        .join(channel, channel.c.id == interval_read.c.channel_id)
        .join(meter, meter.c.id == channel.c.meter_id)
        .where(
            interval_read.c.channel_id.in_(ids),
            interval_read.c.ts > since,
            interval_read.c.ts > lower,
            interval_read.c.ts <= now,
        )
        .group_by(interval_read.c.channel_id, interval_read.c.ts)  # one row per ts, whatever its versions
        .subquery()
    )
    ordered = select(
        stamps.c.channel_id,
        stamps.c.t,
        func.lag(stamps.c.t).over(partition_by=stamps.c.channel_id, order_by=stamps.c.t).label("prev"),
    ).subquery()
    # More than one and a half intervals since the previous reading: at least one is missing.
    hole = case(((ordered.c.t - ordered.c.prev) * 2 > channel.c.interval_s * 3, ordered.c.prev))
    rows = conn.execute(
        select(ordered.c.channel_id, func.min(ordered.c.t), func.max(ordered.c.t), func.min(hole))
        .join(channel, channel.c.id == ordered.c.channel_id)
        .group_by(ordered.c.channel_id)
    ).all()
    return {row[0]: (int(row[1]), int(row[2]), None if row[3] is None else int(row[3])) for row in rows}


def find_gaps(conn: Connection, now: datetime, *, days: int) -> tuple[int, list[Gap]]:
    """(interval channels checked, the meters with missing intervals in the last ``days``), by meter
    id."""
    start = now - timedelta(days=days)
    channels, present = _channels(conn, start, now)
    short = [item for item in channels if present[item.id] < item.expected]
    gaps: dict[int, Gap] = {}
    for offset in range(0, len(short), _CHUNK):
        chunk = short[offset : offset + _CHUNK]
        holes = _holes(conn, [item.id for item in chunk], start, now)
        for item in chunk:
            end = item.earliest_missing(*holes.get(item.id, (None, None, None)))
            if end is None:
                continue
            since = datetime.fromtimestamp(end - item.interval, UTC)
            missing = item.expected - present[item.id]
            known = gaps.get(item.meter_id)
            if known is not None:
                since, missing = min(since, known.since), missing + known.missing
            gaps[item.meter_id] = Gap(item.tenant_id, item.meter_id, item.comm_device_id, since, missing)
    return len(channels), [gaps[meter_id] for meter_id in sorted(gaps)]


def _open_catch_ups(conn: Connection) -> set[int]:
    rows = conn.execute(
        select(job.c.target_id)
        .where(
            job.c.state.in_(_OPEN),
            job.c.lane == int(Lane.CATCH_UP),
            job.c.kind == "read",
            job.c.target_type == "meter",
        )
        .distinct()
    )
    return {target for (target,) in rows if target is not None}


def plan_catch_up(
    engine: Engine,
    now: datetime,
    *,
    days: int = 7,
    window: timedelta = timedelta(hours=1),
    max_attempts: int = 3,
    max_jobs: int = 10_000,
) -> CatchUpReport:
    """Find the gaps of the last ``days`` (settings ``hes_catch_up_days``) and plan a catch-up read per
    meter with gaps and no open catch-up job: due now, deadline ``now + window`` (settings
    ``hes_catch_up_interval_s``). At most ``max_jobs`` are planned a round, the oldest gaps first, so a
    fleet-wide outage is caught up over several rounds instead of flooding its lane."""
    if now.tzinfo is None:
        raise ValueError("now must be time-zone aware")
    with engine.connect() as conn:
        channels, gaps = find_gaps(conn, now, days=days)
        busy = _open_catch_ups(conn)
        wanted = sorted(
            (gap for gap in gaps if gap.meter_id not in busy), key=lambda g: (g.since, g.meter_id)
        )
        chosen = wanted[:max_jobs]
        tree = DeviceTree()
        tree.load(conn, {gap.comm_device_id for gap in chosen if gap.comm_device_id is not None})
    jobs = [_job(gap, now, window, max_attempts, tree.path(gap.comm_device_id)) for gap in chosen]
    planned = job_store.plan(engine, jobs) if jobs else 0
    return CatchUpReport(
        channels=channels,
        meters_with_gaps=len(gaps),
        intervals_missing=sum(gap.missing for gap in gaps),
        jobs=planned,
        open_skipped=len(gaps) - len(wanted),
        deferred=len(wanted) - len(chosen),
    )


def _job(gap: Gap, now: datetime, window: timedelta, max_attempts: int, path: str | None) -> NewJob:
    params: Mapping[str, Any] = {"what": "load_profile", "since": gap.since.isoformat()}
    return NewJob(
        tenant_id=gap.tenant_id,
        kind="read",
        target_type="meter",
        target_id=gap.meter_id,
        params=params,
        lane=Lane.CATCH_UP,
        scheduled_for=now,
        not_before=now,
        deadline=now + window,
        dedup_key=f"gap:m{gap.meter_id}:{gap.since:%Y%m%dT%H%M%SZ}",
        path=path,
        max_attempts=max_attempts,
    )
