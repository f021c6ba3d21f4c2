"""Schedules in the API on both databases: create, list, change, disable and delete (which cancels
the schedule's unstarted jobs), every bad field a 422 saying what is wrong, audited, per tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from openami.hes.calendar import Cron, CronError
from openami.hes.job_queries import get_job
from openami.security.roles import ROLES
from openami.store.schema import audit_log
from openami.tz import check_timezone
from tests.hes.support_jobs import plan_reads, run

from .support import World, assert_problem

DAILY = {
    "name": "daily billing",
    "kind": "registers",
    "cron": "0 0 * * *",
    "timezone": "Europe/Ljubljana",
    "target_filter": {"protocols": ["dlms", "dlms"], "gateways": ["GW-A"]},
}


def test_create_list_change_and_delete(world: World) -> None:
    created = world.post("/schedules", DAILY, as_user="operator")
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"] == f"/schedules/{body['id']}"
    assert body["target_filter"] == {
        "protocols": ["dlms"],
        "gateways": ["GW-A"],
    }  # cleaned by the planner's check
    assert (body["lane"], body["window_s"], body["max_attempts"], body["enabled"]) == (3, 3600, 3, True)
    sid = body["id"]
    assert [s["id"] for s in world.get("/schedules", as_user="analyst").json()["items"]] == [sid]
    assert world.get("/schedules", params={"kind": "events"}).json()["items"] == []
    off = world.patch(f"/schedules/{sid}", {"enabled": False, "cron": "*/15 * * * *"})
    assert off.status_code == 200 and (off.json()["enabled"], off.json()["cron"]) == (False, "*/15 * * * *")
    assert [s["id"] for s in world.get("/schedules", params={"enabled": "false"}).json()["items"]] == [sid]

    engine, tenant = world.context.engine, world.ids["tenantA"]
    slot = datetime(2026, 3, 2, tzinfo=UTC)
    waiting, finished = plan_reads(
        engine, tenant, [world.ids["meterA1"], world.ids["meterA2"]], slot, schedule_id=sid
    )
    run(engine, finished, slot, [None])
    deleted = world.client.delete(f"/schedules/{sid}", headers=world.headers("operator"))
    assert deleted.status_code == 200 and deleted.json() == {"id": sid, "cancelled_jobs": 1}
    assert get_job(engine, tenant, waiting).state == "cancelled"
    kept = get_job(engine, tenant, finished)
    assert (kept.state, kept.schedule_id) == ("done", None)
    assert_problem(world.get(f"/schedules/{sid}"), 404)
    with engine.connect() as conn:
        actions = conn.scalars(
            select(audit_log.c.action).where(audit_log.c.target_type == "schedule").order_by(audit_log.c.id)
        ).all()
    assert actions == ["schedule.create", "schedule.update", "schedule.delete"]


def _refusal(value: str, parse: Callable[[str], object]) -> str:
    """What the checker itself says about ``value``."""
    with pytest.raises((CronError, ValueError)) as caught:
        parse(value)
    return str(caught.value)


def test_bad_fields_are_422_with_the_reason(world: World) -> None:
    cron_message = _refusal("61 * * * *", Cron.parse)
    detail = assert_problem(world.post("/schedules", {**DAILY, "cron": "61 * * * *"}), 422)["detail"]
    assert detail == f"cron: {cron_message}"
    zone_message = _refusal("Mars/Olympus", check_timezone)
    assert assert_problem(world.post("/schedules", {**DAILY, "timezone": "Mars/Olympus"}), 422)["detail"] == (
        f"timezone: {zone_message}"
    )
    unknown = assert_problem(world.post("/schedules", {**DAILY, "target_filter": {"colour": ["red"]}}), 422)
    assert "target_filter.colour" in unknown["detail"] and "known keys" in unknown["detail"]
    media = assert_problem(world.post("/schedules", {**DAILY, "target_filter": {"media": ["plasma"]}}), 422)
    assert "target_filter.media" in media["detail"]
    for field, value in (
        ("kind", "everything"),
        ("lane", 0),
        ("window_s", 10),
        ("max_attempts", 11),
        ("name", ""),
    ):
        problem = assert_problem(world.post("/schedules", {**DAILY, field: value}), 422)
        assert [e["loc"][-1] for e in problem["errors"]] == [field], problem
    assert_problem(world.post("/schedules", {**DAILY, "tenant_id": 2}), 422)
    sid = world.post("/schedules", DAILY).json()["id"]
    assert_problem(world.post("/schedules", DAILY), 409)
    assert world.patch(f"/schedules/{sid}", {"cron": "@hourly"}).status_code == 200
    assert assert_problem(world.patch(f"/schedules/{sid}", {"cron": "* * *"}), 422)["detail"].startswith(
        "cron: "
    )
    assert_problem(world.patch(f"/schedules/{sid}", {"enabled": None}), 422)


def test_permissions_and_tenants(world: World) -> None:
    sid = world.post("/schedules", DAILY).json()["id"]
    readers = {"admin", "operator", "analyst", "auditor"}
    for role in sorted(ROLES):
        assert world.get("/schedules", as_user=role).status_code == (200 if role in readers else 403), role
        changed = world.patch(f"/schedules/{sid}", {"window_s": 7200}, as_user=role)
        assert changed.status_code == (200 if role in {"admin", "operator"} else 403), role
    assert_problem(world.get(f"/schedules/{sid}", tenant="beta"), 404)
    assert_problem(world.client.delete(f"/schedules/{sid}", headers=world.headers("admin", "beta")), 404)
    assert_problem(world.client.delete(f"/schedules/{sid}", headers=world.headers("analyst")), 403)
    assert world.get(f"/schedules/{sid}").json()["window_s"] == 7200
