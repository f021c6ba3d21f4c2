"""KPIs in the API on both databases: the figures of job rows made for the test, per day and per
gateway, latency per lane, dead meters; periods checked; only roles with ``kpis:read``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from openami.security.roles import ROLES
from tests.hes.support_jobs import plan_reads, run

from .support import World, assert_problem

SLOT = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # acme keeps UTC
DAY = {"from": "2026-03-02", "to": "2026-03-02"}


def _day_of_reads(world: World) -> None:
    """Six hourly slots for both meters of acme: M-A1 always answers (after a retry in the first slot),
    M-A2 never does."""
    engine, tenant = world.context.engine, world.ids["tenantA"]
    for hour in range(6):
        slot = SLOT + timedelta(hours=hour)
        good, dead = plan_reads(engine, tenant, [world.ids["meterA1"], world.ids["meterA2"]], slot)
        run(engine, good, slot, ["TimeoutError: late", None] if hour == 0 else [None])
        run(engine, dead, slot, ["TimeoutError: silent", "TimeoutError: silent"])


def test_reads_latency_and_communication(world: World) -> None:
    _day_of_reads(world)
    reads = world.get("/kpis/reads", as_user="analyst", params=DAY).json()
    assert (reads["by"], reads["timezone"], reads["target"]) == ("day", "UTC", 0.98)
    assert reads["rows"] == [reads["total"] | {"key": "2026-03-02"}]
    total = reads["total"]
    figures = ("planned", "done", "failed", "open", "success_rate", "meets_target")
    assert [total[name] for name in figures] == [12, 6, 6, 0, 0.5, False]
    by_gateway = world.get("/kpis/reads", params={**DAY, "by": "gateway"}).json()["rows"]
    assert [(r["key"], r["planned"]) for r in by_gateway] == [("GW-A", 12)]
    week = world.get("/kpis/reads", params={"to": "2026-03-02"}).json()
    assert [r["key"] for r in week["rows"]] == [f"2026-02-{d}" for d in (24, 25, 26, 27, 28)] + [
        "2026-03-01",
        "2026-03-02",
    ]
    assert week["total"]["planned"] == 12

    (lane,) = world.get("/kpis/latency", params=DAY).json()["lanes"]
    assert (lane["lane_name"], lane["reads"]) == ("scheduled", 6)
    assert (lane["p50_s"], lane["max_s"]) == (60.0, 120.0)  # one minute a try; the first slot took two

    quality = world.get("/kpis/communication", params=DAY).json()
    assert (quality["reads_done"], quality["reads_failed"]) == (6, 6)
    assert quality["attempts_per_success"] == round(7 / 6, 6)
    assert quality["retry_rate"] == round(7 / 12, 6)
    assert quality["errors"] == [{"kind": "TimeoutError", "failed": 6}]
    assert quality["dead_meter_count"] == 1
    (dead,) = quality["dead_meters"]
    assert (dead["serial"], dead["failed"], dead["last_error"]) == ("M-A2", 6, "TimeoutError: silent")
    assert world.get("/kpis/communication", params={**DAY, "dead_limit": 0}).json()["dead_meters"] == []
    assert world.get("/kpis/reads", params=DAY, tenant="beta").json()["total"]["planned"] == 0


def test_bad_periods_and_groupings_are_422(world: World) -> None:
    backwards = assert_problem(
        world.get("/kpis/reads", params={"from": "2026-03-02", "to": "2026-03-01"}), 422
    )
    assert "before it starts" in backwards["detail"]
    assert (
        "366"
        in assert_problem(world.get("/kpis/latency", params={"from": "2020-01-01", "to": "2026-01-01"}), 422)[
            "detail"
        ]
    )
    assert_problem(world.get("/kpis/reads", params={"by": "colour"}), 422)
    assert_problem(world.get("/kpis/communication", params={"from": "yesterday"}), 422)


def test_who_may_read_kpis(world: World) -> None:
    allowed = {"admin", "operator", "analyst", "auditor"}
    for role in sorted(ROLES):
        for path in ("/kpis/reads", "/kpis/latency", "/kpis/communication"):
            assert world.get(path, as_user=role).status_code == (200 if role in allowed else 403), (
                role,
                path,
            )
