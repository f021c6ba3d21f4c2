"""Schedules as operators define them: what to read, when, from which meters, how hard to try.

A schedule row is read by the planner (:mod:`openami.hes.planner`), which turns its cron into jobs;
this module is the one place that decides what a *valid* schedule is, so the API and the CLI accept
and refuse exactly the same things, each with a message that says what to change:

- ``kind``: what its jobs read, one of :data:`openami.hes.planner.SCHEDULE_KINDS`;
- ``cron``: five fields or a shortcut (:class:`openami.hes.calendar.Cron`), read in ``timezone`` (an
  IANA name; null: the tenant's zone);
- ``target_filter``: which meters, checked (and cleaned of duplicates) by the planner's own
  :func:`openami.hes.planner.validate_filter`; all keys optional, AND between keys, OR within one;
  ``{}`` is every active meter of the tenant::

      {"protocols": ["dlms"], "models": ["AM550"], "media": ["electricity"],
       "gateways": ["GW-0001"], "meter_ids": [17, 18]}

  ``gateways`` names comm devices by ident: meters under them, at any depth;
- ``lane`` (:class:`openami.hes.jobstate.Lane`, not the command lane), ``window_s`` (how long after
  its slot a job may still start: its deadline) and ``max_attempts``, each within :data:`BOUNDS`.

Deleting a schedule cancels its jobs that have not started (planned or queued) in the same
transaction, so no orphaned read runs after its schedule is gone; running and finished jobs stay (with
``schedule_id`` null) for the record and the KPIs. Disabling one only stops the planner from planning
new slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, update

from openami.hes.calendar import Cron, CronError
from openami.hes.jobstate import Lane, State
from openami.hes.planner import SCHEDULE_KINDS, validate_filter
from openami.security.errors import InvalidInput
from openami.store.repositories import Repository, Scope
from openami.store.schema import job, schedule
from openami.tz import check_timezone

__all__ = ["BOUNDS", "ScheduleRecord", "ScheduleRepository", "checked", "schedules"]

BOUNDS: Final = {
    "lane": (int(Lane.ON_DEMAND), int(Lane.SCHEDULED)),
    "window_s": (60, 7 * 86400),
    "max_attempts": (1, 10),
}
"""Inclusive (low, high) of the numeric fields."""


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    id: int
    tenant_id: int
    name: str
    kind: str
    cron: str
    timezone: str | None
    target_filter: dict[str, Any]
    lane: int
    window_s: int
    max_attempts: int
    params: dict[str, Any]
    enabled: bool
    next_run_at: datetime | None
    planned_until: datetime | None
    created_at: datetime


def checked(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a whole schedule or a change) with its target filter cleaned; InvalidInput naming
    the first field that is wrong."""
    if "kind" in values and values["kind"] not in SCHEDULE_KINDS:
        kinds = ", ".join(sorted(SCHEDULE_KINDS))
        raise InvalidInput(f"kind must be one of {kinds}, not {values['kind']!r}")
    if "cron" in values:
        try:
            Cron.parse(values["cron"])
        except CronError as exc:
            raise InvalidInput(f"cron: {exc}") from None
    if values.get("timezone") is not None:
        try:
            check_timezone(values["timezone"])
        except ValueError as exc:
            raise InvalidInput(f"timezone: {exc}") from None
    for name, (low, high) in BOUNDS.items():
        number = values.get(name)
        if name in values and (not isinstance(number, int) or not low <= number <= high):
            raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    if "params" in values and not isinstance(values["params"], Mapping):
        raise InvalidInput("params must be an object")
    if "target_filter" not in values:
        return dict(values)
    return {**values, "target_filter": validate_filter(values["target_filter"])}


class ScheduleRepository(Repository[ScheduleRecord]):
    """Schedules of a tenant: validated on create and update, deleted with their unstarted jobs."""

    def create(self, conn: Connection, tenant_id: int, values: Mapping[str, Any]) -> ScheduleRecord:
        return super().create(conn, tenant_id, checked(values))

    def update(
        self, conn: Connection, scope: Scope, row_id: int, values: Mapping[str, Any]
    ) -> ScheduleRecord:
        return super().update(conn, scope, row_id, checked(values))

    def delete(self, conn: Connection, scope: Scope, row_id: int, now: datetime) -> int:
        """Delete the schedule (NotFound outside ``scope``); returns how many jobs were cancelled."""
        self.get(conn, scope, row_id)
        cancelled = conn.execute(
            update(job)
            .where(
                job.c.tenant_id == scope.tenant_id,
                job.c.schedule_id == row_id,
                job.c.state.in_([State.PLANNED.value, State.QUEUED.value]),
            )
            .values(state=State.CANCELLED.value, outcome="schedule_deleted", finished_at=now)
        ).rowcount
        conn.execute(schedule.delete().where(schedule.c.id == row_id, self.scope_condition(scope)))
        return int(cancelled)


schedules = ScheduleRepository(
    schedule, ScheduleRecord, name="schedule", natural_key="name", filterable=["kind", "enabled"]
)
