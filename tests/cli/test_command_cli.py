"""`openami command ...` on a real SQLite head-end database: commands queued as jobs, a bulk
disconnect turned into a request a second user approves, protections and the calendar refusing a
disconnect, and a campaign's life from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from openami.cli import app
from openami.security.bootstrap import create_tenant_with_admin, ensure_user
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.schema import audit_log, job, meter

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'hes.sqlite3'}"
    monkeypatch.setenv("OPENAMI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAMI_DATABASE_URL", url)
    engine = make_engine(url)
    upgrade(engine)
    admin = create_tenant_with_admin(engine, "acme", "Acme", "UTC", "admin", "pw-pw-pw-1")
    ensure_user(engine, "acme", "olga", "pw-pw-pw-2", role="operator")
    ensure_user(engine, "acme", "sam", "pw-pw-pw-3", role="operator")
    with engine.begin() as conn:
        for serial in ("M1", "M2", "M3"):
            conn.execute(
                insert(meter).values(
                    tenant_id=admin.tenant_id, serial=serial, medium="electricity", protocol="dlms"
                )
            )
    return engine


def _ok(*args: str) -> str:
    result = runner.invoke(app, ["command", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_command_is_queued_and_a_bulk_disconnect_waits_for_a_second_user(engine: Engine) -> None:
    queued = json.loads(_ok("time-sync", "M1", "-t", "acme", "--as", "olga", "--json"))
    [one] = queued["queued"]
    with engine.connect() as conn:
        assert conn.execute(select(job.c.kind, job.c.state).where(job.c.id == one["job_id"])).one() == (
            "command",
            "queued",
        )

    asked = _ok("disconnect", "M1", "M2", "-t", "acme", "--as", "olga", "--reason", "debt run")
    assert "needs a second user: request 1 waits" in asked
    same = runner.invoke(app, ["command", "approve", "1", "-t", "acme", "--as", "olga"])
    assert same.exit_code == 1
    assert "second user" in same.output
    listed = json.loads(_ok("requests", "-t", "acme", "--json"))
    assert [(r["id"], r["state"], r["meter_count"]) for r in listed] == [(1, "requested", 2)]
    assert "2 commands queued, 0 meters refused" in _ok("approve", "1", "-t", "acme", "--as", "sam")
    with engine.connect() as conn:
        actors = list(
            conn.scalars(select(audit_log.c.actor).where(audit_log.c.action == "command_request.approved"))
        )
    assert len(actors) == 1
    assert actors[0].endswith(":sam")
    assert actors[0].startswith("cli:")


def test_protections_and_the_calendar_refuse_a_disconnect(engine: Engine) -> None:
    _ok("protect", "M1", "-t", "acme", "--medical", "--reason", "oxygen")
    refused = json.loads(_ok("disconnect", "M1", "-t", "acme", "--json"))
    assert refused["queued"] == []
    assert refused["refused"][0]["rule"] == "protection"
    _ok("protect", "M1", "-t", "acme", "--medical", "--reason", "moved out", "--remove")

    added = _ok(
        "no-disconnect",
        "add",
        "always",
        "-t",
        "acme",
        "--start",
        "2000-01-01T00:00+00:00",
        "--end",
        "2100-01-01T00:00+00:00",
    )
    assert "period 1: always" in added
    refused = json.loads(_ok("disconnect", "M2", "-t", "acme", "--json"))
    assert refused["refused"][0]["rule"] == "calendar"
    forced = json.loads(_ok("disconnect", "M2", "-t", "acme", "--force-calendar", "--json"))
    assert len(forced["queued"]) == 1
    assert [p["name"] for p in json.loads(_ok("no-disconnect", "list", "-t", "acme", "--json"))] == ["always"]
    _ok("no-disconnect", "remove", "1", "-t", "acme")
    bad = runner.invoke(app, ["command", "no-disconnect", "add", "x", "-t", "acme", "--from", "fri 12:00"])
    assert bad.exit_code == 2
    assert "needs --from and --to" in bad.output


def test_waiting_for_commands_no_poller_runs_ends_in_an_error(engine: Engine) -> None:
    result = runner.invoke(app, ["command", "connect", "M3", "-t", "acme", "--wait", "0.3"])
    assert result.exit_code == 1
    assert "1 commands had not ended after 0.3 s" in result.output


def test_a_campaign_from_the_command_line(engine: Engine, tmp_path: Path) -> None:
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\x00\x01" * 500)
    created = json.loads(
        _ok(
            "campaign",
            "create",
            "fw 2",
            "-t",
            "acme",
            "--image",
            str(image),
            "--identifier",
            "OAM-2",
            "--meters",
            "M1,M2,M3",
            "--waves",
            "1,50%",
            "--threshold",
            "0.1",
            "--as",
            "olga",
            "--json",
        )
    )
    assert (created["state"], created["waves"], created["image_size"]) == ("draft", [1, 2], 1000)
    refused = runner.invoke(
        app, ["command", "campaign", "approve", str(created["id"]), "-t", "acme", "--as", "olga"]
    )
    assert refused.exit_code == 1
    _ok("campaign", "approve", str(created["id"]), "-t", "acme", "--as", "sam")
    started = json.loads(_ok("campaign", "start", str(created["id"]), "-t", "acme", "--json"))
    assert [(w["meters"], w["queued"]) for w in started["wave_counts"]] == [(1, 1), (2, 0)]
    assert "running" in _ok("campaign", "show", str(created["id"]), "-t", "acme")
    aborted = json.loads(_ok("campaign", "abort", str(created["id"]), "-t", "acme", "--json"))
    assert aborted["state"] == "aborted"
    assert [w["cancelled"] for w in aborted["wave_counts"]] == [1, 2]
    bad = runner.invoke(
        app,
        [
            "command",
            "campaign",
            "create",
            "x",
            "-t",
            "acme",
            "--image",
            str(image),
            "--identifier",
            "I",
            "--meters",
            "M1",
            "--waves",
            "ten",
            "--as",
            "olga",
        ],
    )
    assert bad.exit_code == 2
