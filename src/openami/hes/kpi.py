"""Head-end KPIs from the job table: read success, latency and communication quality.

Utilities judge a head-end by a few figures, and contracts are written on them: "98 % of the day's
scheduled reads collected" is the classic one (:data:`CONTRACT_TARGET`). Every figure here is counted
from job rows (ADR 0013: the job row is the truth), so it is exactly what the workers did, and it is
counted *in the database* (GROUP BY, window functions): a day of 100,000 meters' reads is never
pulled into Python. The same SQL runs on SQLite and PostgreSQL; the two places where they differ (the
seconds between two instants, the position of a character) are chosen by dialect.

Periods are whole local days of the tenant's time zone (``tenant.timezone``), ``first`` to ``last``
inclusive: a day is the span between two local midnights, 23 or 25 hours long on the days clocks
change. A job belongs to the day of its slot (``scheduled_for``); an on-demand read, which has no slot,
to the moment it was asked for (``created_at``).

- :func:`read_success`: of the read jobs planned for the period (slot set: scheduled and catch-up
  reads, not on-demand ones), how many are done, failed, still open, cancelled; the success rate is
  ``done / (planned - cancelled)`` (a read an operator cancelled is not one the head-end missed, an open
  one is not collected yet), per day, schedule, gateway (the topmost comm device above the meter, so a
  concentrator's meters count for its gateway) or meter model.
- :func:`latency`: for done reads, seconds from slot (or request) to finish, p50 / p95 / max per lane
  (nearest-rank percentiles).
- :func:`communication`: attempts per successful read (1.0: every read worked first time), the retry
  rate (finished reads that needed more than one attempt), failed reads by error kind (the error text
  up to its first ``:``, e.g. ``TimeoutError``, else the outcome such as ``deadline``), and the *dead
  meters*: meters whose read jobs in the period all failed (none done, none still open).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Engine, Select, case, func, literal_column, select

from openami.hes.calendar import zone
from openami.hes.jobstate import Lane, State
from openami.security.errors import InvalidInput
from openami.store.repositories import tenants
from openami.store.schema import comm_device, job, meter, schedule

__all__ = [
    "CONTRACT_TARGET",
    "MAX_DAYS",
    "Communication",
    "DeadMeter",
    "ErrorKind",
    "LaneLatency",
    "Latency",
    "Period",
    "ReadCounts",
    "ReadSuccess",
    "communication",
    "latency",
    "period",
    "read_success",
]

CONTRACT_TARGET: Final = 0.98
"""The daily read success utility contracts usually ask for."""
MAX_DAYS: Final = 366
"""Longest period one KPI request may cover."""
Grouping = Literal["day", "schedule", "gateway", "model"]
_OPEN: Final = [State.PLANNED.value, State.QUEUED.value, State.RUNNING.value]
_KIND_LENGTH: Final = 64


@dataclass(frozen=True, slots=True)
class Period:
    """Local days ``first`` to ``last`` (inclusive) in ``timezone``."""

    first: date
    last: date
    timezone: str

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def edges(self) -> list[datetime]:
        """The local midnights starting each day, and the one ending the last, in UTC (so that their
        differences are real durations: 23 hours across a spring change)."""
        tz: ZoneInfo = zone(self.timezone)
        days = [*self.days, self.last + timedelta(days=1)]
        return [datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC) for day in days]


def period(engine: Engine, tenant_id: int, first: date | None, last: date | None, *, now: datetime) -> Period:
    """The period in the tenant's zone; by default the 7 local days up to ``now``'s (or from
    ``first``). InvalidInput for a backward or too long one."""
    with engine.connect() as conn:
        timezone = tenants.get(conn, tenant_id).timezone
    today = now.astimezone(zone(timezone)).date()
    last = last or (today if first is None else first + timedelta(days=6))
    first = first or last - timedelta(days=6)
    if last < first:
        raise InvalidInput(f"the period ends ({last}) before it starts ({first})")
    if (last - first).days >= MAX_DAYS:
        raise InvalidInput(f"a KPI period covers at most {MAX_DAYS} days")
    return Period(first, last, timezone)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


@dataclass(frozen=True, slots=True)
class ReadCounts:
    """Reads of one group: ``key`` is the day (ISO), schedule name, gateway ident or meter model
    (null: reads of no schedule, meters under no gateway)."""

    key: str | None
    planned: int
    done: int
    failed: int
    open: int
    cancelled: int
    success_rate: float | None
    """``done / (planned - cancelled)``; null without reads."""
    meets_target: bool | None

    @classmethod
    def of(cls, key: str | None, planned: int, done: int, failed: int, open_: int) -> ReadCounts:
        cancelled = planned - done - failed - open_
        rate = _rate(done, planned - cancelled)
        meets = None if rate is None else rate >= CONTRACT_TARGET
        return cls(key, planned, done, failed, open_, cancelled, rate, meets)


@dataclass(frozen=True, slots=True)
class ReadSuccess:
    by: str
    first: date
    last: date
    timezone: str
    target: float
    total: ReadCounts
    rows: list[ReadCounts]


def _is(state: State) -> ColumnElement[bool]:
    return job.c.state == state.value


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _state_counts(state: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    return [
        func.count().label("planned"),
        _count(state == State.DONE.value).label("done"),
        _count(state == State.FAILED.value).label("failed"),
        _count(state.in_(_OPEN)).label("open"),
    ]


def _reads(tenant_id: int) -> list[ColumnElement[bool]]:
    return [job.c.tenant_id == tenant_id, job.c.kind == "read"]


def _in(column: ColumnElement[Any], edges: Sequence[datetime]) -> list[ColumnElement[bool]]:
    return [column >= edges[0], column < edges[-1]]


def _gateway_roots(tenant_id: int) -> Any:
    """Every comm device of the tenant with the id of the topmost device above it (itself at the top)."""
    top = (
        select(comm_device.c.id.label("device_id"), comm_device.c.id.label("root_id"))
        .where(comm_device.c.tenant_id == tenant_id, comm_device.c.parent_id.is_(None))
        .cte("roots", recursive=True)
    )
    child = comm_device.alias("child")
    return top.union_all(select(child.c.id, top.c.root_id).where(child.c.parent_id == top.c.device_id))


def _grouped(tenant_id: int, by: Grouping, period: Period) -> Select[Any]:
    edges = period.edges()
    where = [*_reads(tenant_id), *_in(job.c.scheduled_for, edges)]
    if by == "day":
        ends = zip(period.days, edges[1:], strict=True)
        day_of = case(*[(job.c.scheduled_for < end, day.isoformat()) for day, end in ends])
        inner = select(day_of.label("key"), job.c.state).where(*where).subquery()
        return select(inner.c.key, *_state_counts(inner.c.state)).group_by(inner.c.key)
    if by == "schedule":
        key: Any = schedule.c.name
        source: Any = job.outerjoin(schedule, schedule.c.id == job.c.schedule_id)
    else:
        source = job.outerjoin(meter, (job.c.target_type == "meter") & (meter.c.id == job.c.target_id))
        key = meter.c.model
        if by == "gateway":
            roots = _gateway_roots(tenant_id)
            root = comm_device.alias("root")
            source = source.outerjoin(roots, roots.c.device_id == meter.c.comm_device_id).outerjoin(
                root, root.c.id == roots.c.root_id
            )
            key = root.c.ident
    return (
        select(key.label("key"), *_state_counts(job.c.state)).select_from(source).where(*where).group_by(key)
    )


def read_success(engine: Engine, tenant_id: int, period: Period, *, by: Grouping = "day") -> ReadSuccess:
    """Read success of the period's planned reads, grouped ``by`` day, schedule, gateway or model."""
    with engine.connect() as conn:
        found = {
            row.key: ReadCounts.of(row.key, row.planned, row.done, row.failed, row.open)
            for row in conn.execute(_grouped(tenant_id, by, period))
        }
    if by == "day":
        rows = [found.get(d.isoformat()) or ReadCounts.of(d.isoformat(), 0, 0, 0, 0) for d in period.days]
    else:
        rows = sorted(found.values(), key=lambda r: (r.key is None, r.key or ""))
    total = ReadCounts.of(
        None,
        sum(r.planned for r in rows),
        sum(r.done for r in rows),
        sum(r.failed for r in rows),
        sum(r.open for r in rows),
    )
    return ReadSuccess(by, period.first, period.last, period.timezone, CONTRACT_TARGET, total, rows)


@dataclass(frozen=True, slots=True)
class LaneLatency:
    lane: int
    lane_name: str
    reads: int
    p50_s: float
    p95_s: float
    max_s: float
    mean_s: float


@dataclass(frozen=True, slots=True)
class Latency:
    first: date
    last: date
    timezone: str
    lanes: list[LaneLatency]


def _seconds(dialect: str, later: ColumnElement[Any], earlier: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * literal_column("86400.0")


def _since_asked() -> ColumnElement[Any]:
    return func.coalesce(job.c.scheduled_for, job.c.created_at)


def latency(engine: Engine, tenant_id: int, period: Period) -> Latency:
    """Slot (or request) to finish of the period's done reads, per lane."""
    asked = _since_asked()
    seconds = _seconds(engine.dialect.name, job.c.finished_at, asked)
    ranked = (
        select(
            job.c.lane,
            seconds.label("s"),
            func.row_number().over(partition_by=job.c.lane, order_by=seconds).label("rn"),
            func.count().over(partition_by=job.c.lane).label("n"),
        )
        .where(*_reads(tenant_id), _is(State.DONE), *_in(asked, period.edges()))
        .subquery()
    )

    def rank(share: float) -> ColumnElement[Any]:
        return func.min(case((ranked.c.rn >= ranked.c.n * literal_column(str(share)), ranked.c.s)))

    query = (
        select(
            ranked.c.lane,
            func.count().label("reads"),
            rank(0.5).label("p50"),
            rank(0.95).label("p95"),
            func.max(ranked.c.s).label("max"),
            func.avg(ranked.c.s).label("mean"),
        )
        .group_by(ranked.c.lane)
        .order_by(ranked.c.lane)
    )
    with engine.connect() as conn:
        lanes = [
            LaneLatency(
                row.lane,
                Lane(row.lane).name.lower(),
                row.reads,
                *(round(float(value), 3) for value in (row.p50, row.p95, row.max, row.mean)),
            )
            for row in conn.execute(query)
        ]
    return Latency(period.first, period.last, period.timezone, lanes)


@dataclass(frozen=True, slots=True)
class ErrorKind:
    kind: str
    failed: int


@dataclass(frozen=True, slots=True)
class DeadMeter:
    """A meter none of whose reads in the period worked."""

    meter_id: int
    serial: str | None
    model: str | None
    failed: int
    last_failed_at: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Communication:
    first: date
    last: date
    timezone: str
    reads_done: int
    reads_failed: int
    attempts_per_success: float | None
    """Mean attempts of the done reads (1.0: all first time)."""
    retry_rate: float | None
    """Share of finished (done or failed) reads that took more than one attempt."""
    errors: list[ErrorKind]
    dead_meter_count: int
    dead_meters: list[DeadMeter]
    """The first ``dead_limit`` dead meters by serial; ``dead_meter_count`` counts them all."""


def _error_kind(dialect: str) -> ColumnElement[Any]:
    position = func.strpos if dialect == "postgresql" else func.instr
    colon = position(job.c.error, ":")
    prefix = func.substr(job.c.error, 1, colon - 1)
    return case((colon > 1, prefix), else_=func.coalesce(job.c.outcome, "unknown"))


def communication(engine: Engine, tenant_id: int, period: Period, *, dead_limit: int = 1000) -> Communication:
    """Attempts, retries, error kinds and dead meters of the period's reads."""
    where = [*_reads(tenant_id), *_in(_since_asked(), period.edges())]
    done, failed = _is(State.DONE), _is(State.FAILED)
    finished = job.c.state.in_([State.DONE.value, State.FAILED.value])
    totals = select(
        _count(done).label("done"),
        _count(failed).label("failed"),
        func.coalesce(func.sum(case((done, job.c.attempts), else_=0)), 0).label("done_attempts"),
        _count(finished).label("finished"),
        _count(finished & (job.c.attempts > 1)).label("retried"),
    ).where(*where)
    kinds = select(_error_kind(engine.dialect.name).label("kind")).where(*where, failed).subquery()
    errors = (
        select(kinds.c.kind, func.count().label("failed"))
        .group_by(kinds.c.kind)
        .order_by(func.count().desc(), kinds.c.kind)
    )
    per_meter = (
        select(
            job.c.target_id.label("meter_id"),
            _count(failed).label("failed"),
            func.max(case((failed, job.c.id))).label("last_job"),
        )
        .where(*where, job.c.target_type == "meter", job.c.state != State.CANCELLED.value)
        .group_by(job.c.target_id)
        .having(_count(job.c.state != State.FAILED.value) == 0)
        .subquery()
    )
    last = job.alias("last")
    dead = (
        select(
            per_meter.c.meter_id,
            meter.c.serial,
            meter.c.model,
            per_meter.c.failed,
            last.c.finished_at,
            last.c.error,
        )
        .select_from(
            per_meter.outerjoin(meter, meter.c.id == per_meter.c.meter_id).outerjoin(
                last, last.c.id == per_meter.c.last_job
            )
        )
        .order_by(meter.c.serial, per_meter.c.meter_id)
        .limit(max(0, dead_limit))
    )
    with engine.connect() as conn:
        total = conn.execute(totals).one()
        error_kinds = [ErrorKind(row.kind[:_KIND_LENGTH], row.failed) for row in conn.execute(errors)]
        dead_count = conn.scalar(select(func.count()).select_from(per_meter)) or 0
        dead_meters = [DeadMeter(*row) for row in conn.execute(dead)]
    return Communication(
        period.first,
        period.last,
        period.timezone,
        int(total.done),
        int(total.failed),
        _rate(int(total.done_attempts), int(total.done)),
        _rate(int(total.retried), int(total.finished)),
        error_kinds,
        int(dead_count),
        dead_meters,
    )
