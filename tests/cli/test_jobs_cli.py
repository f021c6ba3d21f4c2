"""`openami jobs|schedules|kpis` on a real SQLite head-end database: tables and --json of the same
rows the API shows, moves audited as the OS user, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from openami.cli import app
from openami.hes.job_queries import get_job, submit_read
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.schema import audit_log
from tests.hes.support_jobs import make_device, make_meters, make_tenant, plan_reads, run

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()
SLOT = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


@pytest.fixture
def head_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, int, list[int]]:
    url = f"sqlite:///{tmp_path / 'hes.sqlite3'}"
    monkeypatch.setenv("OPENAMI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAMI_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")  # whole tables, not cells cut to 80 columns
    engine = make_engine(url)
    upgrade(engine)
    tenant = make_tenant(engine, timezone="UTC")
    meters = make_meters(
        engine, tenant, 3, model="AM550", device=make_device(engine, tenant, "GW-1", "gateway")
    )
    return engine, tenant, meters


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _audited(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(select(audit_log.c.actor, audit_log.c.action).order_by(audit_log.c.id))
        ]


def test_jobs_list_show_cancel_retry(head_end: tuple[Engine, int, list[int]]) -> None:
    engine, tenant, meters = head_end
    waiting, failed, done = plan_reads(engine, tenant, meters, SLOT)
    run(engine, failed, SLOT, ["TimeoutError: silent"])
    run(engine, done, SLOT, [None])
    listed = json.loads(_ok("jobs", "list", "-t", "acme", "--json"))
    assert [j["id"] for j in listed] == [done, failed, waiting]
    only = json.loads(_ok("jobs", "list", "-t", "acme", "--state", "failed", "--meter", "M-0001", "--json"))
    assert [(j["id"], j["error"]) for j in only] == [(failed, "TimeoutError: silent")]
    table = _ok("jobs", "list", "-t", "acme")
    assert "failed" in table and "no_answer" in table
    assert json.loads(_ok("jobs", "show", "-t", "acme", str(done), "--json"))["outcome"] == "done"
    assert "TimeoutError: silent" in _ok("jobs", "show", "-t", "acme", str(failed))

    assert "cancelled" in _ok("jobs", "cancel", "-t", "acme", str(waiting))
    assert get_job(engine, tenant, waiting).state == "cancelled"
    assert "queued (1/4 attempts)" in _ok("jobs", "retry", "-t", "acme", str(failed))
    again = runner.invoke(app, ["jobs", "retry", "-t", "acme", str(done)])
    assert again.exit_code == 1 and "only a failed job can be retried" in again.output
    missing = runner.invoke(app, ["jobs", "show", "-t", "acme", "999"])
    assert missing.exit_code == 1 and "job 999 not found" in missing.output
    bad = runner.invoke(app, ["jobs", "list", "-t", "acme", "--state", "asleep"])
    assert bad.exit_code == 2 and "--state" in bad.output
    assert [action for actor, action in _audited(engine) if actor.startswith("cli:")] == [
        "job.cancel",
        "job.retry",
    ]


def test_schedules_add_enable_disable_remove(head_end: tuple[Engine, int, list[int]]) -> None:
    engine, tenant, meters = head_end
    added = _ok(
        "schedules", "add", "-t", "acme", "daily", "--kind", "registers", "--cron", "0 0 * * *",
        "--timezone", "Europe/Ljubljana", "--filter", '{"gateways": ["GW-1"]}',
    )  # fmt: skip
    assert "schedule 'daily'" in added
    (row,) = json.loads(_ok("schedules", "list", "-t", "acme", "--json"))
    assert (row["cron"], row["target_filter"], row["enabled"]) == ("0 0 * * *", {"gateways": ["GW-1"]}, True)
    assert "disabled" in _ok("schedules", "disable", "-t", "acme", "daily")
    assert json.loads(_ok("schedules", "list", "-t", "acme", "--json"))[0]["enabled"] is False
    assert "enabled" in _ok("schedules", "enable", "-t", "acme", "daily")
    assert "daily" in _ok("schedules", "list", "-t", "acme")
    plan_reads(engine, tenant, meters[:2], SLOT, schedule_id=row["id"])
    assert "2 unstarted jobs cancelled" in _ok("schedules", "remove", "-t", "acme", "daily")
    assert json.loads(_ok("schedules", "list", "-t", "acme", "--json")) == []
    actions = [action for _, action in _audited(engine)]
    assert actions == ["schedule.create", "schedule.update", "schedule.update", "schedule.delete"]

    for extra, needle in (
        (["--cron", "61 * * * *"], "cron: minute"),
        (["--cron", "@daily", "--filter", "{nope"], "--filter is not JSON"),
        (["--cron", "@daily", "--filter", '{"colour": []}'], "target_filter.colour"),
        (["--cron", "@daily", "--timezone", "Mars/Olympus"], "timezone: unknown time zone"),
        (["--cron", "@daily", "--lane", "0"], "lane must be a whole number from 1 to 3"),
    ):
        result = runner.invoke(app, ["schedules", "add", "-t", "acme", "x", "--kind", "events", *extra])
        assert result.exit_code == 2 and needle in result.output, (extra, result.output)
    assert runner.invoke(app, ["schedules", "remove", "-t", "acme", "ghost"]).exit_code == 1


def test_kpis_tables_and_json(head_end: tuple[Engine, int, list[int]]) -> None:
    engine, tenant, meters = head_end
    for hour in range(4):
        slot = SLOT + timedelta(hours=hour)
        good, flaky, dead = plan_reads(engine, tenant, meters, slot)
        run(engine, good, slot, [None])
        run(engine, flaky, slot, ["TimeoutError: late", None])
        run(engine, dead, slot, ["ConnectionRefusedError: refused"])
    submit_read(engine, tenant, meters[0], datetime.now(UTC))
    day = ["-t", "acme", "--from", "2026-03-02", "--to", "2026-03-02"]
    reads = json.loads(_ok("kpis", "reads", *day, "--json"))
    assert (reads["total"]["planned"], reads["total"]["done"], reads["total"]["failed"]) == (12, 8, 4)
    table = _ok("kpis", "reads", *day, "--by", "gateway")
    assert "GW-1" in table and "66.67 %" in table and "NO" in table and "98.00 %" in table
    latency = json.loads(_ok("kpis", "latency", *day, "--json"))
    assert [(lane["lane_name"], lane["reads"], lane["max_s"]) for lane in latency["lanes"]] == [
        ("scheduled", 8, 120.0)
    ]
    assert "scheduled" in _ok("kpis", "latency", *day)
    quality = json.loads(_ok("kpis", "communication", *day, "--json"))
    assert quality["dead_meter_count"] == 1 and quality["dead_meters"][0]["serial"] == "M-0002"
    assert quality["errors"] == [{"kind": "ConnectionRefusedError", "failed": 4}]
    text = _ok("kpis", "communication", *day)
    assert (
        "M-0002" in text and "ConnectionRefusedError" in text and "1.500 attempts per successful read" in text
    )
    wrong = runner.invoke(app, ["kpis", "reads", "-t", "acme", "--by", "colour"])
    assert wrong.exit_code == 2 and "--by" in wrong.output
    backwards = runner.invoke(
        app, ["kpis", "reads", "-t", "acme", "--from", "2026-03-02", "--to", "2026-03-01"]
    )
    assert backwards.exit_code == 2 and "before it starts" in backwards.output
