"""Disconnect safety: protections always refuse, the no-disconnect calendar (dated and weekly, in the
tenant's zone) refuses unless forced, and a second user must approve."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert, select

from openami.hes import safety
from openami.security.audit import verify_chain
from openami.security.errors import InvalidInput, PermissionDenied
from openami.store.errors import Conflict, NotFound
from openami.store.schema import audit_log, meter, tenant

# 2026-12-04 is a Friday. Europe/Ljubljana is UTC+1 in December.
FRIDAY_MORNING = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)  # 10:00 local
FRIDAY_AFTERNOON = datetime(2026, 12, 4, 11, 30, tzinfo=UTC)  # 12:30 local
MONDAY_EARLY = datetime(2026, 12, 7, 6, 30, tzinfo=UTC)  # 07:30 local
MONDAY_LATER = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)  # 08:30 local


def _tenant(engine: Engine, slug: str = "acme", zone: str = "Europe/Ljubljana") -> tuple[int, list[int]]:
    with engine.begin() as conn:
        tenant_id = conn.execute(
            insert(tenant).values(slug=slug, name=slug, timezone=zone).returning(tenant.c.id)
        ).scalar_one()
        ids = [
            conn.execute(
                insert(meter)
                .values(tenant_id=tenant_id, serial=f"{slug}-{n}", medium="electricity", protocol="dlms")
                .returning(meter.c.id)
            ).scalar_one()
            for n in range(3)
        ]
    return tenant_id, ids


def test_a_protected_meter_is_refused_at_any_time_even_when_the_calendar_is_forced(engine: Engine) -> None:
    tenant_id, (a, b, c) = _tenant(engine)
    safety.protect(engine, tenant_id, b, "medical", reason="oxygen concentrator", actor="user:1:op")
    again = safety.protect(engine, tenant_id, b, "medical", reason="other", actor="user:2:op")
    assert again.reason == "oxygen concentrator"  # idempotent: the first record stays
    for force in (False, True):
        refusals = safety.check_disconnect(engine, tenant_id, [a, b, c], FRIDAY_MORNING, force_calendar=force)
        assert [(r.meter_id, r.rule) for r in refusals] == [(b, "protection")]
        assert "medical" in refusals[0].reason
        assert "oxygen concentrator" in refusals[0].reason
    assert [p.kind for p in safety.protections(engine, tenant_id, b)] == ["medical"]
    safety.unprotect(engine, tenant_id, b, "medical", reason="moved out", actor="user:1:op")
    assert safety.check_disconnect(engine, tenant_id, [a, b, c], FRIDAY_MORNING) == []
    with pytest.raises(NotFound):
        safety.unprotect(engine, tenant_id, b, "medical", reason="again", actor="user:1:op")
    with pytest.raises(InvalidInput):
        safety.protect(engine, tenant_id, a, "vip", reason="", actor="user:1:op")
    with engine.connect() as conn:
        actions = list(conn.scalars(select(audit_log.c.action).where(audit_log.c.action.like("meter.%"))))
    assert actions == ["meter.protection.added", "meter.protection.removed"]
    assert verify_chain(engine, tenant_id) == (True, None)


def test_the_weekly_rule_is_read_in_the_tenant_zone_and_wraps_over_the_weekend(engine: Engine) -> None:
    tenant_id, (a, *_rest) = _tenant(engine)
    safety.add_period(engine, tenant_id, "weekend", actor="op", weekly=("fri 12:00", "mon 08:00"))
    assert safety.check_disconnect(engine, tenant_id, [a], FRIDAY_MORNING) == []
    for moment in (FRIDAY_AFTERNOON, datetime(2026, 12, 6, 12, tzinfo=UTC), MONDAY_EARLY):
        refusals = safety.check_disconnect(engine, tenant_id, [a], moment)
        assert [(r.meter_id, r.rule) for r in refusals] == [(a, "calendar")], moment
        assert "weekend (weekly fri 12:00 to mon 08:00 local)" in refusals[0].reason
    assert safety.check_disconnect(engine, tenant_id, [a], MONDAY_LATER) == []
    assert safety.check_disconnect(engine, tenant_id, [a], FRIDAY_AFTERNOON, force_calendar=True) == []
    # The same UTC instant in a tenant on UTC is 11:30 Friday: before the window.
    other, (x, *_more) = _tenant(engine, "utc", "UTC")
    safety.add_period(engine, other, "weekend", actor="op", weekly=("fri 12:00", "mon 08:00"))
    assert safety.check_disconnect(engine, other, [x], FRIDAY_AFTERNOON) == []


def test_dated_periods_refuse_inside_only_and_names_are_unique(engine: Engine) -> None:
    tenant_id, (a, b, _c) = _tenant(engine)
    start, end = datetime(2026, 12, 24, tzinfo=UTC), datetime(2026, 12, 27, tzinfo=UTC)
    period = safety.add_period(engine, tenant_id, "christmas", actor="op", starts_at=start, ends_at=end)
    assert (period.kind, period.starts_at, period.ends_at) == ("once", start, end)
    assert safety.check_disconnect(engine, tenant_id, [a, b], datetime(2026, 12, 23, 23, tzinfo=UTC)) == []
    inside = safety.check_disconnect(engine, tenant_id, [a, b], datetime(2026, 12, 25, tzinfo=UTC))
    assert [r.meter_id for r in inside] == [a, b]
    assert safety.check_disconnect(engine, tenant_id, [a], end) == []  # the end is exclusive
    with pytest.raises(Conflict):
        safety.add_period(engine, tenant_id, "christmas", actor="op", starts_at=start, ends_at=end)
    safety.remove_period(engine, tenant_id, period.id, actor="op")
    assert safety.check_disconnect(engine, tenant_id, [a], datetime(2026, 12, 25, tzinfo=UTC)) == []
    assert list(safety.periods(engine, tenant_id)) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"weekly": ("friday noon", "mon 08:00")}, "not a weekly time"),
        ({"weekly": ("fri 24:30", "mon 08:00")}, "not a weekly time"),
        ({"weekly": ("mon 00:00", "sun 24:00")}, "must not start where it ends"),
        (
            {"starts_at": datetime(2026, 1, 2, tzinfo=UTC), "ends_at": datetime(2026, 1, 1, tzinfo=UTC)},
            "end after",
        ),
        ({"starts_at": datetime(2026, 1, 1), "ends_at": datetime(2026, 1, 2)}, "UTC offset"),
        ({}, "needs starts_at"),
    ],
)
def test_bad_periods_are_refused_with_a_reason(
    engine: Engine, values: dict[str, object], message: str
) -> None:
    tenant_id, _ids = _tenant(engine)
    with pytest.raises(InvalidInput, match=message):
        safety.add_period(engine, tenant_id, "bad", actor="op", **values)  # type: ignore[arg-type]


def test_weekly_times_parse_to_minutes_after_monday_midnight() -> None:
    assert safety.parse_week_time("mon 00:00") == 0
    assert safety.parse_week_time("Friday 12:00") == 4 * 1440 + 720
    assert safety.parse_week_time("sun 24:00") == 7 * 1440


def test_a_second_user_must_approve() -> None:
    safety.ensure_second_user(1, 2, "request 5")
    with pytest.raises(safety.SameApprover, match="second user"):
        safety.ensure_second_user(1, 1, "request 5")
    with pytest.raises(PermissionDenied, match="named user"):
        safety.ensure_second_user(1, None, "request 5")


def test_meters_of_another_tenant_are_not_found(engine: Engine) -> None:
    _tenant_id, (a, *_rest) = _tenant(engine)
    other, _ids = _tenant(engine, "other")
    with pytest.raises(NotFound):
        safety.protect(engine, other, a, "medical", reason="", actor="op")
