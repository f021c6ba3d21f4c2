"""Commands through the API: queued as jobs, bulk disconnects only through a request a second user
approves (the requester approving is 403), protections and the no-disconnect calendar, campaigns, and
403 without the permission."""

from __future__ import annotations

import base64

from sqlalchemy import select

from openami.store.schema import audit_log, job

from .support import World, assert_problem


def test_a_single_command_is_queued_as_a_job(world: World) -> None:
    meter = world.ids["meterA1"]
    answer = world.post("/command-jobs", {"kind": "time_sync", "meter_ids": [meter]}, as_user="operator")
    assert answer.status_code == 202, answer.text
    [queued] = answer.json()["queued"]
    assert queued["meter_id"] == meter
    with world.context.engine.connect() as conn:
        row = conn.execute(
            select(job.c.kind, job.c.state, job.c.lane, job.c.path).where(job.c.id == queued["job_id"])
        ).one()
    assert tuple(row) == ("command", "queued", 0, "gateway:GW-A")  # throttled with its gateway's reads
    listed = world.get(f"/meters/{meter}/commands", as_user="operator").json()
    assert [(c["kind"], c["state"]) for c in listed] == [("time_sync", "queued")]


def test_a_bulk_disconnect_needs_a_second_user(world: World) -> None:
    meters = [world.ids["meterA1"], world.ids["meterA2"]]
    refused = world.post("/command-jobs", {"kind": "disconnect", "meter_ids": meters}, as_user="operator")
    assert "second user" in assert_problem(refused, 403)["detail"]

    world.client.put(
        f"/meters/{meters[0]}/protections/medical",
        json={"reason": "dialysis at home"},
        headers=world.headers("operator"),
    ).raise_for_status()
    created = world.post(
        "/command-requests",
        {"kind": "disconnect", "meter_ids": meters, "reason": "debt run"},
        as_user="operator",
    )
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert created.json()["state"] == "requested"

    same = world.post(f"/command-requests/{request_id}/approve", {}, as_user="operator")
    assert "second user" in assert_problem(same, 403)["detail"]
    assert assert_problem(world.post(f"/command-requests/{request_id}/approve", {}, as_user="analyst"), 403)

    approved = world.post(f"/command-requests/{request_id}/approve", {"reason": "checked"}, as_user="admin")
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["request"]["state"] == "running"
    assert body["request"]["decided_by"] == world.ids["user_admin"]
    assert [q["meter_id"] for q in body["submission"]["queued"]] == [meters[1]]
    assert [(r["meter_id"], r["rule"]) for r in body["submission"]["refused"]] == [(meters[0], "protection")]
    assert_problem(world.post(f"/command-requests/{request_id}/approve", {}, as_user="admin"), 409)

    listed = world.get("/command-requests?state=running", as_user="auditor").json()
    assert [r["id"] for r in listed] == [request_id]
    assert (
        world.get(f"/command-requests/{request_id}", as_user="operator").json()["refused"][0]["meter_id"]
        == meters[0]
    )
    assert_problem(world.get(f"/command-requests/{request_id}", tenant="beta"), 404)
    with world.context.engine.connect() as conn:
        actions = list(
            conn.scalars(
                select(audit_log.c.action)
                .where(audit_log.c.action.like("command_request.%"))
                .order_by(audit_log.c.id)
            )
        )
    assert actions == ["command_request.created", "command_request.approved"]


def test_a_request_can_be_rejected_and_then_not_approved(world: World) -> None:
    meters = [world.ids["meterA1"], world.ids["meterA2"]]
    request_id = world.post(
        "/command-requests", {"kind": "disconnect", "meter_ids": meters}, as_user="operator"
    ).json()["id"]
    rejected = world.post(f"/command-requests/{request_id}/reject", {"reason": "wrong list"}, as_user="admin")
    assert (rejected.json()["state"], rejected.json()["decision_reason"]) == ("rejected", "wrong list")
    assert_problem(world.post(f"/command-requests/{request_id}/approve", {}, as_user="admin"), 409)


def test_protections_and_periods_need_the_permission_and_are_validated(world: World) -> None:
    meter = world.ids["meterA1"]
    path = f"/meters/{meter}/protections/life_support"
    assert_problem(world.client.put(path, json={"reason": "x"}, headers=world.headers("analyst")), 403)
    assert_problem(
        world.client.put(f"/meters/{meter}/protections/vip", json={}, headers=world.headers("admin")), 422
    )
    assert (
        world.client.put(path, json={"reason": "ventilator"}, headers=world.headers("operator")).status_code
        == 200
    )
    assert [p["kind"] for p in world.get(f"/meters/{meter}/protections", as_user="operator").json()] == [
        "life_support"
    ]
    assert_problem(world.client.delete(path, headers=world.headers("operator")), 422)  # a reason is required
    assert world.client.delete(f"{path}?reason=moved", headers=world.headers("operator")).status_code == 204

    weekend = world.post(
        "/no-disconnect-periods",
        {"name": "weekend", "weekly_from": "sat 00:00", "weekly_to": "mon 00:00"},
        as_user="operator",
    )
    assert weekend.status_code == 201, weekend.text
    assert weekend.json()["description"] == "weekend (weekly sat 00:00 to mon 00:00 local)"
    assert_problem(
        world.post("/no-disconnect-periods", {"name": "bad", "weekly_from": "sat"}, as_user="operator"), 422
    )
    assert_problem(
        world.post(
            "/no-disconnect-periods",
            {"name": "weekend", "weekly_from": "sat 00:00", "weekly_to": "mon 00:00"},
            as_user="operator",
        ),
        409,
    )
    assert_problem(
        world.post(
            "/no-disconnect-periods",
            {"name": "x", "weekly_from": "fri 12:00", "weekly_to": "mon 08:00"},
            as_user="analyst",
        ),
        403,
    )
    assert [p["name"] for p in world.get("/no-disconnect-periods", as_user="auditor").json()] == ["weekend"]
    period_id = weekend.json()["id"]
    assert (
        world.client.delete(
            f"/no-disconnect-periods/{period_id}", headers=world.headers("operator")
        ).status_code
        == 204
    )
    assert world.get("/no-disconnect-periods", as_user="operator").json() == []


def test_campaigns_are_approved_by_a_second_user_and_show_their_waves(world: World) -> None:
    meters = [world.ids["meterA1"], world.ids["meterA2"]]
    body = {
        "name": "fw 2.0",
        "identifier": "OAM-2.0",
        "image_base64": base64.b64encode(b"\x01" * 1000).decode(),
        "meter_ids": meters,
        "waves": [1],
        "failure_threshold": 0.2,
    }
    assert_problem(world.post("/campaigns", body, as_user="analyst"), 403)
    assert_problem(world.post("/campaigns", {**body, "image_base64": "not base64!"}, as_user="operator"), 422)
    created = world.post("/campaigns", body, as_user="operator")
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert created.json()["waves"] == [1, 1]
    assert (
        "second user"
        in assert_problem(world.post(f"/campaigns/{campaign_id}/approve", {}, as_user="operator"), 403)[
            "detail"
        ]
    )
    assert world.post(f"/campaigns/{campaign_id}/approve", {}, as_user="admin").json()["state"] == "approved"
    started = world.post(f"/campaigns/{campaign_id}/start", {}, as_user="operator").json()
    assert (started["state"], started["current_wave"]) == ("running", 1)
    assert [(w["meters"], w["queued"], w["pending"]) for w in started["wave_counts"]] == [
        (1, 1, 0),
        (1, 0, 1),
    ]
    paused = world.post(f"/campaigns/{campaign_id}/pause", {}, as_user="operator").json()
    assert paused["wave_counts"][0]["pending"] == 1
    assert world.post(f"/campaigns/{campaign_id}/resume", {}, as_user="operator").json()["state"] == "running"
    aborted = world.post(f"/campaigns/{campaign_id}/abort", {"reason": "recall"}, as_user="operator").json()
    assert (aborted["state"], aborted["state_reason"]) == ("aborted", "recall")
    assert [c["id"] for c in world.get("/campaigns", as_user="auditor").json()] == [campaign_id]
    assert_problem(world.get(f"/campaigns/{campaign_id}", tenant="beta"), 404)
    assert_problem(world.post(f"/campaigns/{campaign_id}/start", {}, as_user="operator"), 409)
