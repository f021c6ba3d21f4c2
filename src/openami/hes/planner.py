"""The planner: schedules become jobs, one per meter and slot, a horizon ahead.

A schedule (table ``schedule``) says what to read (``kind``), when (``cron``, read in ``timezone`` or
the tenant's), from which meters (``target_filter``: a meter group) and how patiently (``lane``,
``window_s``, ``max_attempts``). :func:`plan_schedules` turns the slots of every enabled schedule in
``(planned_until, now + horizon]`` into planned jobs and moves ``planned_until`` on. The leader
scheduler calls it every few seconds; everything it does is safe to repeat:

- every job's ``dedup_key`` names the schedule, the meter and the slot, and the job store inserts with
  "on conflict do nothing", so a re-plan after a crash (jobs in, ``planned_until`` not yet moved) or
  by a deposed leader that has not noticed adds nothing;
- ``planned_until`` only moves forward.

Missed slots: a schedule whose ``planned_until`` lies in the past (no planner ran for a while, or the
schedule was enabled again) gets jobs only for the slots whose deadline (slot + ``window_s``) is still
ahead. Older slots are not read late in a burst: the intervals they would have brought are found
missing in the store and re-read by the gap-driven catch-up (:mod:`openami.hes.catch_up`), in its own
lane. A schedule seen for the first time starts at ``now``.

Meter groups (``target_filter``, checked by :func:`validate_filter`): ``protocols``, ``models``,
``media`` and ``meter_ids`` match those meter columns; ``gateways`` matches meters whose communication
device, or any device above it, has one of the idents. Keys combine with AND, values of one key with
OR; the empty filter is every active meter of the tenant. Only ``active`` meters are planned. The group
is evaluated when a slot is planned: a meter added later gets jobs from the next slot planned.

Each job records its communication path (:mod:`openami.hes.paths`) for throttling at claim time.

Blocking (SQLAlchemy): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from sqlalchemy import Connection, Engine, or_, select, update

from openami.hes import job_store
from openami.hes.calendar import Cron, CronError, zone
from openami.hes.job_store import NewJob
from openami.hes.jobstate import Lane
from openami.hes.paths import DeviceTree
from openami.security.errors import InvalidInput
from openami.store.schema import UTILITIES, meter, schedule, tenant

__all__ = [
    "SCHEDULE_KINDS",
    "InvalidFilter",
    "InvalidSchedule",
    "PlanReport",
    "Schedule",
    "ScheduleKind",
    "load_schedules",
    "plan_schedules",
    "validate_filter",
]

ScheduleKind = Literal["registers", "load_profile", "events", "clock_check"]
SCHEDULE_KINDS: Final = frozenset(get_args(ScheduleKind))
_BATCH: Final = 5000
"""Jobs handed to the job store per transaction."""
_CHUNK: Final = 500
_MAX_VALUES: Final = 10_000
_COUNT_LIMIT: Final = timedelta(days=31)
"""How far back missed slots are counted for the report (a long-stopped planner's every-minute
schedule would otherwise be walked slot by slot)."""


class InvalidFilter(InvalidInput):
    """A ``target_filter`` the planner cannot use: an unknown key, a wrong type, an empty list."""


class InvalidSchedule(InvalidInput):
    """A schedule row that cannot be planned: unknown kind or lane, bad cron or time zone, bad filter."""


def _medium(value: str) -> str:
    if value not in UTILITIES:
        raise ValueError(f"must be one of {', '.join(UTILITIES)}")
    return value


_Name = Annotated[StrictStr, Field(min_length=1, max_length=120)]
_Values = Field(None, min_length=1, max_length=_MAX_VALUES)


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protocols: list[_Name] | None = _Values
    models: list[_Name] | None = _Values
    media: list[Annotated[StrictStr, AfterValidator(_medium)]] | None = _Values
    gateways: list[Annotated[StrictStr, Field(min_length=1, max_length=64)]] | None = _Values
    meter_ids: list[Annotated[StrictInt, Field(ge=1)]] | None = _Values


def validate_filter(raw: Any) -> dict[str, Any]:
    """``raw`` as a clean target filter (only the keys given, each value's duplicates dropped);
    :class:`InvalidFilter` naming the first problem. None is the empty filter (every meter)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidFilter("target_filter must be an object")
    try:
        parsed = _Filter.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        allowed = ", ".join(_Filter.model_fields)
        hint = f" (known keys: {allowed})" if first["type"] == "extra_forbidden" else ""
        raise InvalidFilter(f"target_filter.{where}: {first['msg']}{hint}") from None
    return {key: list(dict.fromkeys(value)) for key, value in parsed.model_dump(exclude_none=True).items()}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule row, checked: its cron parsed, its zone resolved (the tenant's when the row has none)."""

    id: int
    tenant_id: int
    name: str
    kind: ScheduleKind
    cron: Cron
    timezone: str
    target_filter: dict[str, Any]
    lane: Lane
    window: timedelta
    max_attempts: int
    params: dict[str, Any]
    enabled: bool
    next_run_at: datetime | None
    planned_until: datetime | None

    @classmethod
    def of(cls, row: Any, tenant_timezone: str) -> Schedule:
        """The schedule ``row`` (a ``schedule`` table row); :class:`InvalidSchedule` when it cannot be
        planned."""
        name = row.timezone or tenant_timezone
        try:
            cron = Cron.parse(row.cron)
            zone(name)
        except CronError as exc:
            raise InvalidSchedule(f"schedule {row.id}: {exc}") from None
        if row.kind not in SCHEDULE_KINDS:
            raise InvalidSchedule(
                f"schedule {row.id}: kind {row.kind!r} is not one of {', '.join(sorted(SCHEDULE_KINDS))}"
            )
        try:
            lane = Lane(row.lane)
        except ValueError:
            raise InvalidSchedule(f"schedule {row.id}: lane {row.lane} is not a lane") from None
        if row.window_s < 1 or row.max_attempts < 1:
            raise InvalidSchedule(f"schedule {row.id}: window_s and max_attempts must be at least 1")
        if not isinstance(row.params, dict):
            raise InvalidSchedule(f"schedule {row.id}: params must be an object")
        try:
            target_filter = validate_filter(row.target_filter)
        except InvalidFilter as exc:
            raise InvalidSchedule(f"schedule {row.id}: {exc}") from None
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            kind=row.kind,
            cron=cron,
            timezone=name,
            target_filter=target_filter,
            lane=lane,
            window=timedelta(seconds=row.window_s),
            max_attempts=row.max_attempts,
            params=dict(row.params),
            enabled=row.enabled,
            next_run_at=row.next_run_at,
            planned_until=row.planned_until,
        )

    def slots(self, now: datetime, horizon: timedelta) -> tuple[list[datetime], int]:
        """(slots to plan now, slots missed): the firings in ``(planned_until or now, now + horizon]``
        whose deadline is still ahead, and how many earlier ones were past theirs (counted over at most
        :data:`_COUNT_LIMIT` back)."""
        tz = zone(self.timezone)
        start = self.planned_until or now
        # A slot at or before now - window has its deadline behind it: skip those without planning them.
        earliest = now - self.window
        missed = 0
        if start < earliest:
            missed = sum(1 for _ in self.cron.between(max(start, earliest - _COUNT_LIMIT), earliest, tz))
            start = earliest
        return list(self.cron.between(start, now + horizon, tz)), missed

    def job(self, meter_id: int, slot: datetime, path: str | None) -> NewJob:
        return NewJob(
            tenant_id=self.tenant_id,
            kind="read",
            target_type="meter",
            target_id=meter_id,
            params={**self.params, "what": self.kind},
            lane=self.lane,
            scheduled_for=slot,
            not_before=slot,
            deadline=slot + self.window,
            dedup_key=f"s{self.id}:m{meter_id}:{slot:%Y%m%dT%H%M%SZ}",
            path=path,
            schedule_id=self.id,
            max_attempts=self.max_attempts,
        )


def load_schedules(conn: Connection, *, enabled_only: bool = True) -> tuple[list[Schedule], list[str]]:
    """The schedules (enabled ones by default) and, for each row that cannot be planned, the reason."""
    query = (
        select(schedule, tenant.c.timezone.label("tenant_timezone"))
        .join(tenant, tenant.c.id == schedule.c.tenant_id)
        .order_by(schedule.c.id)
    )
    if enabled_only:
        query = query.where(schedule.c.enabled.is_(True))
    found: list[Schedule] = []
    problems: list[str] = []
    for row in conn.execute(query):
        try:
            found.append(Schedule.of(row, row.tenant_timezone))
        except InvalidSchedule as exc:
            problems.append(str(exc))
    return found, problems


@dataclass(slots=True)
class PlanReport:
    """What one :func:`plan_schedules` did: schedules planned, slots, jobs new and already there
    (``duplicates``: a re-plan), slots skipped because their deadline had passed (counted over at most
    a month back), and the schedules that could not be planned, with the reason."""

    schedules: int = 0
    slots: int = 0
    meters: int = 0
    jobs: int = 0
    duplicates: int = 0
    missed_slots: int = 0
    problems: list[str] = field(default_factory=list)


def _members(conn: Connection, item: Schedule, tree: DeviceTree) -> list[tuple[int, str | None]]:
    """(meter id, path) of every active meter in the schedule's group, by meter id."""
    group = item.target_filter
    query = select(meter.c.id, meter.c.comm_device_id).where(
        meter.c.tenant_id == item.tenant_id, meter.c.status == "active"
    )
    for key, column in (
        ("protocols", meter.c.protocol),
        ("models", meter.c.model),
        ("media", meter.c.medium),
    ):
        if key in group:
            query = query.where(column.in_(group[key]))
    ids: list[int] | None = group.get("meter_ids")
    rows: list[Any] = []
    if ids is None:
        rows = list(conn.execute(query))
    else:
        for start in range(0, len(ids), _CHUNK):
            rows.extend(conn.execute(query.where(meter.c.id.in_(ids[start : start + _CHUNK]))))
    tree.load(conn, {row.comm_device_id for row in rows if row.comm_device_id is not None})
    gateways = set(group.get("gateways", ()))
    if gateways:
        rows = [
            row for row in rows if any(device.ident in gateways for device in tree.chain(row.comm_device_id))
        ]
    return sorted((row.id, tree.path(row.comm_device_id)) for row in rows)


def _batches(jobs: Iterator[NewJob]) -> Iterator[list[NewJob]]:
    batch: list[NewJob] = []
    for item in jobs:
        batch.append(item)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def plan_schedules(engine: Engine, now: datetime, horizon: timedelta) -> PlanReport:
    """Plan every enabled schedule's slots up to ``now + horizon`` (module docstring)."""
    if now.tzinfo is None:
        raise ValueError("now must be time-zone aware")
    report = PlanReport()
    trees: dict[int, DeviceTree] = {}
    with engine.connect() as conn:
        schedules, report.problems = load_schedules(conn)
    until = now + horizon
    for item in schedules:
        slots, missed = item.slots(now, horizon)
        report.missed_slots += missed
        if slots:
            with engine.connect() as conn:
                members = _members(conn, item, trees.setdefault(item.tenant_id, DeviceTree()))
            jobs = (item.job(meter_id, slot, path) for slot in slots for meter_id, path in members)
            for batch in _batches(jobs):
                new = job_store.plan(engine, batch)
                report.jobs += new
                report.duplicates += len(batch) - new
            report.slots += len(slots)
            report.meters += len(members)
        with engine.begin() as conn:
            conn.execute(
                update(schedule)
                .where(
                    schedule.c.id == item.id,
                    or_(schedule.c.planned_until.is_(None), schedule.c.planned_until < until),
                )
                .values(planned_until=until, next_run_at=item.cron.next_after(now, zone(item.timezone)))
            )
        report.schedules += 1
    return report
