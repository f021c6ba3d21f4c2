"""Jobs in the API on both databases: on-demand reads (202, one job per double click), lists and
details per tenant, cancel and retry with their 409s and audit entries, and who may do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from openami.hes.jobstate import Lane
from openami.security.roles import ROLES
from openami.store.schema import audit_log
from tests.hes.support_jobs import claim, plan_reads, run

from .support import World, assert_problem

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
READERS = {"admin", "operator", "field_technician", "analyst", "auditor"}
WRITERS = {"admin", "operator", "field_technician"}


def _actions(world: World, job_id: int) -> list[str]:
    with world.context.engine.connect() as conn:
        query = select(audit_log.c.action).where(
            audit_log.c.target_type == "job", audit_log.c.target_id == str(job_id)
        )
        return list(conn.scalars(query.order_by(audit_log.c.id)))


def test_on_demand_read_is_accepted_once_and_shown(world: World) -> None:
    meter = world.ids["meterA1"]
    response = world.post(f"/meters/{meter}/reads", {"what": "load_profile"}, as_user="operator")
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/jobs/{body['id']}"
    assert (body["kind"], body["state"], body["lane"], body["target_id"]) == (
        "read",
        "queued",
        Lane.ON_DEMAND,
        meter,
    )
    assert body["params"] == {"what": "load_profile"} and body["created_by"] == world.ids["user_operator"]
    again = world.post(f"/meters/{meter}/reads", {"what": "load_profile"}).json()
    # The same minute (the usual case) gives the same job; a click just after the minute turned, a new one.
    assert (again["id"] == body["id"]) == (again["dedup_key"] == body["dedup_key"])
    default = world.client.post(f"/meters/{meter}/reads", headers=world.headers("admin"))
    assert default.status_code == 202 and default.json()["params"] == {"what": "registers"}
    assert world.get(f"/jobs/{body['id']}", as_user="analyst").json()["id"] == body["id"]
    assert_problem(world.post(f"/meters/{meter}/reads", {"what": "everything"}), 422)
    assert_problem(world.post(f"/meters/{world.ids['meterB1']}/reads", {}), 404)
    assert_problem(world.get(f"/jobs/{body['id']}", tenant="beta"), 404)


def test_permissions(world: World) -> None:
    meter = world.ids["meterA1"]
    for role in sorted(ROLES):
        listed = world.get("/jobs", as_user=role)
        assert listed.status_code == (200 if role in READERS else 403), (role, listed.text)
        asked = world.post(f"/meters/{meter}/reads", {}, as_user=role)
        assert asked.status_code == (202 if role in WRITERS else 403), (role, asked.text)


def test_list_filters_and_pages_newest_first(world: World) -> None:
    engine, tenant = world.context.engine, world.ids["tenantA"]
    ids = plan_reads(engine, tenant, [world.ids["meterA1"], world.ids["meterA2"]], T0)
    run(engine, ids[0], T0, [None])
    everything = world.get("/jobs").json()
    assert [j["id"] for j in everything["items"]] == sorted(ids, reverse=True) and everything[
        "next_cursor"
    ] is None
    first = world.get("/jobs", params={"limit": 1}).json()
    second = world.get("/jobs", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [first["items"][0]["id"], second["items"][0]["id"]] == sorted(ids, reverse=True)
    done = world.get("/jobs", params={"state": "done"}).json()["items"]
    assert [(j["id"], j["attempts"], j["outcome"]) for j in done] == [(ids[0], 1, "done")]
    assert world.get("/jobs", params={"target_id": world.ids["meterA2"]}).json()["items"][0]["id"] == ids[1]
    assert world.get("/jobs", params={"since": "2999-01-01T00:00:00Z"}).json()["items"] == []
    assert world.get("/jobs", tenant="beta").json()["items"] == []
    assert_problem(world.get("/jobs", params={"state": "sleeping"}), 422)
    assert_problem(world.get("/jobs", params={"since": "2026-01-01T00:00:00"}), 422)  # naive time


def test_cancel_and_retry_move_jobs_audited_or_say_why_not(world: World) -> None:
    engine, tenant = world.context.engine, world.ids["tenantA"]
    queued, running = plan_reads(engine, tenant, [world.ids["meterA1"], world.ids["meterA2"]], T0)
    (failed,) = plan_reads(engine, tenant, [world.ids["meterA1"]], T0 + timedelta(hours=1))
    claim(engine, running, T0)
    run(engine, failed, T0 + timedelta(hours=1), ["TimeoutError: silent"])
    cancelled = world.post(f"/jobs/{queued}/cancel", {}, as_user="operator")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert (
        "cannot become cancelled" in assert_problem(world.post(f"/jobs/{queued}/cancel", {}), 409)["detail"]
    )
    assert "is running" in assert_problem(world.post(f"/jobs/{running}/cancel", {}), 409)["detail"]
    assert "only a failed job" in assert_problem(world.post(f"/jobs/{queued}/retry", {}), 409)["detail"]
    retried = world.post(f"/jobs/{failed}/retry", {}, as_user="field_technician")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["state"], retried.json()["attempts"], retried.json()["max_attempts"]) == (
        "queued",
        1,
        4,
    )
    assert _actions(world, queued) == ["job.cancel"] and _actions(world, failed) == ["job.retry"]
    assert _actions(world, running) == []
    assert_problem(world.post(f"/jobs/{failed}/retry", {}, tenant="beta"), 404)
    assert_problem(world.post(f"/jobs/{failed}/cancel", {}, as_user="analyst"), 403)
