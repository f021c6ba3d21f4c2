"""Whether a meter may be disconnected now, and the four-eyes rule of bulk commands.

A remote disconnect cuts a household's supply, so before one is sent (when it is asked for, and again
when its job runs, which may be hours later) :func:`check_disconnect` says why a meter must not be cut
now. Connect and reconnect restore supply and are never refused here.

Two kinds of rule, with different answers to "may an operator override it?":

- **Protections** (``meter_protection``: medical equipment, life support, a vulnerable household) are
  never overridden by a command. The protection exists for the moment someone is in a hurry (a bulk
  debt run, a night shift clearing a backlog), and an override flag on the command would be used in
  exactly that moment. Disconnecting a protected meter takes two separate, audited acts: remove the
  protection (with its own reason), then disconnect.
- **The no-disconnect calendar** (``no_disconnect_period``: dated periods such as holidays or a heat
  wave, and weekly windows in the tenant's local time such as Friday 12:00 to Monday 08:00, when nobody
  could reconnect a household cut by mistake) is policy with legitimate exceptions: a safety disconnect
  of a damaged installation, a customer moving out. A command may carry ``force_calendar=True``; the
  refusal is then waived and the waiver is in the audit log with the command, under the caller's name.

Weekly windows are minutes since Monday 00:00 in the tenant's zone (:func:`openami.hes.calendar.zone`),
so "Friday 12:00" is local noon in summer and in winter; a window whose end is before its start wraps
over Sunday night.

Bulk commands and firmware campaigns also need a second person: :func:`ensure_second_user` refuses an
approval by the user who asked (:class:`SameApprover`).

Blocking (SQLAlchemy): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from openami.hes.calendar import zone
from openami.security.audit import AuditLog
from openami.security.errors import InvalidInput, PermissionDenied
from openami.store.errors import Conflict, NotFound
from openami.store.schema import PROTECTION_KINDS, meter, meter_protection, no_disconnect_period, tenant

__all__ = [
    "PROTECTION_KINDS",
    "DisconnectRefused",
    "Period",
    "Protection",
    "Refusal",
    "SameApprover",
    "add_period",
    "check_disconnect",
    "ensure_second_user",
    "parse_week_time",
    "periods",
    "protect",
    "protections",
    "remove_period",
    "unprotect",
]

_WEEK: Final = 7 * 24 * 60
_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK_TIME: Final = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+([01]?\d|2[0-4]):([0-5]\d)$")
_MAX_NAME: Final = 120

Bind = Engine | Connection


class SameApprover(PermissionDenied):
    """The user who asked for a bulk command or a campaign may not approve it."""


class DisconnectRefused(Conflict):
    """A disconnect sent at once (not queued) that a safety rule forbids; ``refusals`` say why."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        super().__init__("disconnect refused: " + "; ".join(r.reason for r in refusals))
        self.refusals = list(refusals)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why ``meter_id`` may not be disconnected now: ``rule`` is ``protection`` (never overridden) or
    ``calendar`` (waived by ``force_calendar``)."""

    meter_id: int
    rule: Literal["protection", "calendar"]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"meter_id": self.meter_id, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Protection:
    meter_id: int
    kind: str
    reason: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Period:
    """A no-disconnect period: ``once`` (``starts_at`` to ``ends_at``) or ``weekly`` (``from_minute`` to
    ``to_minute`` after Monday 00:00 local)."""

    id: int
    name: str
    kind: Literal["once", "weekly"]
    starts_at: datetime | None
    ends_at: datetime | None
    from_minute: int | None
    to_minute: int | None

    def covers(self, moment: datetime, tz_name: str) -> bool:
        if self.kind == "once":
            assert self.starts_at is not None
            assert self.ends_at is not None
            return self.starts_at <= moment < self.ends_at
        assert self.from_minute is not None
        assert self.to_minute is not None
        local = moment.astimezone(zone(tz_name))
        minute = local.weekday() * 24 * 60 + local.hour * 60 + local.minute
        if self.from_minute < self.to_minute:
            return self.from_minute <= minute < self.to_minute
        return minute >= self.from_minute or minute < self.to_minute

    def describe(self) -> str:
        if self.kind == "once":
            assert self.starts_at is not None
            assert self.ends_at is not None
            return f"{self.name} ({self.starts_at:%Y-%m-%d %H:%M} to {self.ends_at:%Y-%m-%d %H:%M} UTC)"
        assert self.from_minute is not None
        assert self.to_minute is not None
        return f"{self.name} (weekly {_week_time(self.from_minute)} to {_week_time(self.to_minute)} local)"


def parse_week_time(text: str) -> int:
    """Minutes after Monday 00:00 of ``"fri 12:00"`` (day name, 24-hour time; ``"mon 24:00"`` is Tuesday
    00:00, and ``"sun 24:00"`` the end of the week, 10080)."""
    found = _WEEK_TIME.match(text.strip().lower())
    if found is None or (found.group(2) == "24" and found.group(3) != "00"):
        raise InvalidInput(f"not a weekly time: {text!r} (expected a day and a time, e.g. 'fri 12:00')")
    day, hour, minute = _DAYS.index(found.group(1)), int(found.group(2)), int(found.group(3))
    return day * 24 * 60 + hour * 60 + minute


def _week_time(minute: int) -> str:
    day, rest = divmod(minute, 24 * 60)
    if day == 7:
        return "sun 24:00"
    return f"{_DAYS[day]} {rest // 60:02d}:{rest % 60:02d}"


def ensure_second_user(requested_by: int, approver: int | None, what: str) -> None:
    """:class:`SameApprover` when ``approver`` asked for ``what`` itself; PermissionDenied when the
    approver is no user at all (a script's token): an approval is a person's decision."""
    if approver is None:
        raise PermissionDenied(f"{what} must be approved by a named user")
    if approver == requested_by:
        raise SameApprover(f"{what} must be approved by a second user, not the one who asked for it")


def _connection(bind: Bind) -> contextlib.AbstractContextManager[Connection]:
    """A connection of the engine, or the caller's own connection (left open)."""
    return bind.connect() if isinstance(bind, Engine) else contextlib.nullcontext(bind)


def check_disconnect(
    bind: Bind,
    tenant_id: int,
    meter_ids: Iterable[int],
    now: datetime,
    *,
    force_calendar: bool = False,
) -> list[Refusal]:
    """Why each of ``meter_ids`` may not be disconnected at ``now``, in meter order (empty: all may be).

    Protections always refuse; the calendar refuses unless ``force_calendar``. A meter may appear
    twice (protected and in a no-disconnect period)."""
    wanted = sorted(set(meter_ids))
    if not wanted:
        return []
    with _connection(bind) as conn:
        protected = conn.execute(
            select(meter_protection.c.meter_id, meter_protection.c.kind, meter_protection.c.reason)
            .where(meter_protection.c.tenant_id == tenant_id, meter_protection.c.meter_id.in_(wanted))
            .order_by(meter_protection.c.meter_id, meter_protection.c.kind)
        ).all()
        active = [] if force_calendar else _active_periods(conn, tenant_id, now)
    refusals = [
        Refusal(
            row.meter_id, "protection", f"{row.kind} protection" + (f": {row.reason}" if row.reason else "")
        )
        for row in protected
    ]
    if active:
        reason = "no-disconnect period " + "; ".join(period.describe() for period in active)
        refusals.extend(Refusal(meter_id, "calendar", reason) for meter_id in wanted)
    return sorted(refusals, key=lambda r: (r.meter_id, r.rule != "protection"))


def _active_periods(conn: Connection, tenant_id: int, now: datetime) -> list[Period]:
    tz_name = conn.execute(select(tenant.c.timezone).where(tenant.c.id == tenant_id)).scalar_one_or_none()
    if tz_name is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return [period for period in _periods(conn, tenant_id) if period.covers(now, tz_name)]


def _periods(conn: Connection, tenant_id: int) -> list[Period]:
    rows = conn.execute(
        select(no_disconnect_period)
        .where(no_disconnect_period.c.tenant_id == tenant_id)
        .order_by(no_disconnect_period.c.id)
    ).all()
    return [
        Period(
            id=int(row.id),
            name=row.name,
            kind=row.kind,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            from_minute=row.from_minute,
            to_minute=row.to_minute,
        )
        for row in rows
    ]


def _tenant_meter(conn: Connection, tenant_id: int, meter_id: int) -> None:
    owner = conn.execute(select(meter.c.tenant_id).where(meter.c.id == meter_id)).scalar_one_or_none()
    if owner != tenant_id:
        raise NotFound(f"meter {meter_id} not found")


def protect(
    engine: Engine,
    tenant_id: int,
    meter_id: int,
    kind: str,
    *,
    reason: str,
    actor: str,
    audit: AuditLog | None = None,
) -> Protection:
    """Record that ``meter_id`` must not be disconnected (``kind``: medical, life_support, vulnerable);
    recording it again keeps the first record (idempotent)."""
    if kind not in PROTECTION_KINDS:
        raise InvalidInput(f"unknown protection {kind!r} (one of {', '.join(PROTECTION_KINDS)})")
    with engine.begin() as conn:
        _tenant_meter(conn, tenant_id, meter_id)
        existing = _protection(conn, tenant_id, meter_id, kind)
        if existing is not None:
            return existing
        conn.execute(
            insert(meter_protection).values(
                tenant_id=tenant_id, meter_id=meter_id, kind=kind, reason=reason, created_by=actor
            )
        )
        (audit or AuditLog()).append(
            conn,
            tenant_id,
            actor,
            "meter.protection.added",
            "meter",
            meter_id,
            {"kind": kind, "reason": reason},
        )
        created = _protection(conn, tenant_id, meter_id, kind)
    assert created is not None
    return created


def unprotect(
    engine: Engine,
    tenant_id: int,
    meter_id: int,
    kind: str,
    *,
    reason: str,
    actor: str,
    audit: AuditLog | None = None,
) -> None:
    """Remove a protection (NotFound when the meter has none of ``kind``); the reason is audited."""
    with engine.begin() as conn:
        _tenant_meter(conn, tenant_id, meter_id)
        removed = conn.execute(
            delete(meter_protection).where(
                meter_protection.c.tenant_id == tenant_id,
                meter_protection.c.meter_id == meter_id,
                meter_protection.c.kind == kind,
            )
        ).rowcount
        if not removed:
            raise NotFound(f"meter {meter_id} has no {kind} protection")
        (audit or AuditLog()).append(
            conn,
            tenant_id,
            actor,
            "meter.protection.removed",
            "meter",
            meter_id,
            {"kind": kind, "reason": reason},
        )


def protections(engine: Engine, tenant_id: int, meter_id: int) -> list[Protection]:
    """The protections of one meter of the tenant."""
    with engine.connect() as conn:
        _tenant_meter(conn, tenant_id, meter_id)
        rows = conn.execute(
            select(meter_protection)
            .where(meter_protection.c.tenant_id == tenant_id, meter_protection.c.meter_id == meter_id)
            .order_by(meter_protection.c.kind)
        ).all()
    return [_protection_of(row) for row in rows]


def _protection(conn: Connection, tenant_id: int, meter_id: int, kind: str) -> Protection | None:
    row = conn.execute(
        select(meter_protection).where(
            meter_protection.c.tenant_id == tenant_id,
            meter_protection.c.meter_id == meter_id,
            meter_protection.c.kind == kind,
        )
    ).one_or_none()
    return None if row is None else _protection_of(row)


def _protection_of(row: Any) -> Protection:
    return Protection(
        meter_id=int(row.meter_id),
        kind=row.kind,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def add_period(
    engine: Engine,
    tenant_id: int,
    name: str,
    *,
    actor: str,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    weekly: tuple[str, str] | None = None,
    audit: AuditLog | None = None,
) -> Period:
    """A no-disconnect period: dated (``starts_at``/``ends_at``, aware times) or ``weekly`` (from, to:
    ``("fri 12:00", "mon 08:00")`` in the tenant's local time). :class:`Conflict` for a name in use."""
    name = name.strip()
    if not 0 < len(name) <= _MAX_NAME:
        raise InvalidInput(f"a period needs a name of 1..{_MAX_NAME} characters")
    values: dict[str, Any] = {"tenant_id": tenant_id, "name": name, "created_by": actor}
    if weekly is not None:
        if starts_at is not None or ends_at is not None:
            raise InvalidInput("a period is either dated or weekly, not both")
        start, end = parse_week_time(weekly[0]), parse_week_time(weekly[1])
        if start == end % _WEEK:
            raise InvalidInput("a weekly period must not start where it ends")
        values |= {"kind": "weekly", "from_minute": start % _WEEK, "to_minute": end}
    else:
        if starts_at is None or ends_at is None:
            raise InvalidInput("a dated period needs starts_at and ends_at")
        if starts_at.tzinfo is None or ends_at.tzinfo is None:
            raise InvalidInput("period times need a UTC offset")
        if ends_at <= starts_at:
            raise InvalidInput("a period must end after it starts")
        values |= {"kind": "once", "starts_at": starts_at, "ends_at": ends_at}
    try:
        with engine.begin() as conn:
            period_id = conn.execute(
                insert(no_disconnect_period).values(**values).returning(no_disconnect_period.c.id)
            ).scalar_one()
            detail = {k: v for k, v in values.items() if k not in ("tenant_id", "created_by")}
            (audit or AuditLog()).append(
                conn, tenant_id, actor, "no_disconnect.added", "no_disconnect_period", period_id, detail
            )
    except IntegrityError:
        raise Conflict(f"a no-disconnect period named {name!r} exists") from None
    return next(p for p in periods(engine, tenant_id) if p.id == period_id)


def remove_period(
    engine: Engine, tenant_id: int, period_id: int, *, actor: str, audit: AuditLog | None = None
) -> None:
    """Delete a no-disconnect period (NotFound when the tenant has none with that id)."""
    with engine.begin() as conn:
        removed = conn.execute(
            delete(no_disconnect_period).where(
                no_disconnect_period.c.tenant_id == tenant_id, no_disconnect_period.c.id == period_id
            )
        ).rowcount
        if not removed:
            raise NotFound(f"no-disconnect period {period_id} not found")
        (audit or AuditLog()).append(
            conn, tenant_id, actor, "no_disconnect.removed", "no_disconnect_period", period_id, {}
        )


def periods(engine: Engine, tenant_id: int) -> Sequence[Period]:
    """The tenant's no-disconnect periods, oldest first."""
    with engine.connect() as conn:
        return _periods(conn, tenant_id)
