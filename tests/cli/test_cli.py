"""The `openami` command line on a real SQLite database: results, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openami.cli import app
from openami.demo.seed import seed_demo
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.readings import ReadingWriter

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("OPENAMI_DATABASE_URL", url)
    monkeypatch.setenv("OPENAMI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAMI_LOG_LEVEL", "WARNING")
    return url


@pytest.fixture
def seeded(db: str) -> str:
    engine = make_engine(db)
    upgrade(engine)
    seed_demo(engine)
    # channel 2 is E-000001's interval channel once created; create it through the ingest directory
    from openami.bus.messages import Reading, ReadingBatch
    from openami.mdm.directory import Directory

    readings = [
        Reading(
            meter="E-000001",
            channel="1-0:1.29.0",
            ts=T0 + timedelta(minutes=15 * i),
            value=i / 10,
            unit="kWh",
            interval_s=900,
        )
        for i in range(1, 9)
    ]
    resolved = Directory(engine).resolve(
        ReadingBatch.from_readings(readings, tenant="demo", source="test", received_at=T0)
    )
    ReadingWriter(engine).write("interval", resolved.rows["interval"])
    engine.dispose()
    return db


runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.startswith("openami ")


def test_db_upgrade_and_init_then_duplicate_init_fails_cleanly(db: str) -> None:
    from alembic.script import ScriptDirectory

    from openami.store.migrate import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert f"revision {head}" in runner.invoke(app, ["db", "upgrade"]).output
    args = ["init", "--tenant", "acme", "--name", "Acme", "--admin", "root", "--password", "s3cret-passw0rd"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    from sqlalchemy import select

    from openami.store.schema import audit_log

    engine = make_engine(db)
    with engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit_log.c.action).order_by(audit_log.c.id))]
    engine.dispose()
    assert actions == ["tenant.create", "user.create"]
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert again.output.count("\n") == 1 and "error:" in again.output and "acme" in again.output


def test_init_refuses_an_unknown_time_zone(db: str) -> None:
    args = ["init", "--tenant", "x", "--timezone", "Mars/Olympus", "--password", "s3cret-passw0rd"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "Mars/Olympus" in result.output


def test_users_create_and_list(seeded: str) -> None:
    created = runner.invoke(
        app, ["users", "create", "-t", "demo", "olga", "--role", "operator", "--password", "pw-1234567890"]
    )
    assert created.exit_code == 0, created.output
    duplicate = runner.invoke(
        app, ["users", "create", "-t", "demo", "olga", "--role", "operator", "--password", "pw-1234567890"]
    )
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    bad_role = runner.invoke(
        app, ["users", "create", "-t", "demo", "ivan", "--role", "wizard", "--password", "pw-1234567890"]
    )
    assert bad_role.exit_code in (1, 2) and "wizard" in bad_role.output
    listed = runner.invoke(app, ["users", "list", "-t", "demo"])
    assert "olga" in listed.output and "operator" in listed.output


def test_meters_list_and_show(seeded: str) -> None:
    listed = runner.invoke(app, ["meters", "list", "-t", "demo", "--limit", "5"])
    assert listed.exit_code == 0
    assert listed.output.count("mqtt-json") == 5
    shown = runner.invoke(app, ["meters", "show", "-t", "demo", "E-000001"])
    assert shown.exit_code == 0
    assert "1-0:1.29.0" in shown.output and "2026-11-01 02:00 UTC" in shown.output


def test_readings_export_csv_and_json(seeded: str, tmp_path: Path) -> None:
    window = ["--start", "2026-11-01T00:00:00+00:00", "--end", "2026-11-02T00:00:00+00:00"]
    out = tmp_path / "e1.csv"
    result = runner.invoke(
        app, ["readings", "-t", "demo", "E-000001", "1-0:1.29.0", *window, "-f", "csv", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [float(r["value"]) for r in rows] == pytest.approx([i / 10 for i in range(1, 9)])
    assert rows[0]["ts"] == "2026-11-01T00:15:00+00:00" and rows[0]["unit"] == "kWh"
    as_json = runner.invoke(app, ["readings", "-t", "demo", "E-000001", "1-0:1.29.0", *window, "-f", "json"])
    assert len(json.loads(as_json.output)) == 8


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["readings", "-t", "demo", "E-000001", "1-0:1.29.0", "--start", "yesterday"], 2, "ISO-8601"),
        (["readings", "-t", "demo", "E-000001", "1-0:1.29.0", "--start", "2026-11-01T00:00:00"], 2, "offset"),
        (
            [
                "readings",
                "-t",
                "demo",
                "E-000001",
                "1-0:1.29.0",
                "--start",
                "2026-11-02T00:00:00+00:00",
                "--end",
                "2026-11-01T00:00:00+00:00",
            ],
            2,
            "before",
        ),
        (["readings", "-t", "demo", "E-000001", "9-9:9.9.9"], 1, "no channel"),
        (["meters", "show", "-t", "demo", "NOPE"], 1, "not found"),
        (["meters", "list", "-t", "ghost"], 1, "ghost"),
    ],
)
def test_bad_input_gives_one_clear_line(seeded: str, args: list[str], code: int, needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.output.startswith("error:") and needle in result.output
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_bad_settings_and_databases(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAMI_BUS_URL", "kafka://broker")
    result = runner.invoke(app, ["meters", "list", "-t", "demo"])
    assert result.exit_code == 2 and "bus_url" in result.output
    monkeypatch.delenv("OPENAMI_BUS_URL")
    result = runner.invoke(app, ["db", "upgrade", "--database-url", "mysql://root@127.0.0.1/test"])
    assert result.exit_code == 1 and "unsupported database" in result.output


def test_bench_ingest_json_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    result = runner.invoke(
        app,
        [
            "bench",
            "ingest",
            "--database-url",
            url,
            "--rows",
            "3000",
            "--channels",
            "10",
            "--batch-rows",
            "1000",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["rows"] == 3000 and figures["rows_per_s"] > 0 and figures["seconds"] > 0


def test_bench_ingest_through_the_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    args = [
        "bench",
        "ingest",
        "--database-url",
        url,
        "--rows",
        "2000",
        "--channels",
        "50",
        "--batch-rows",
        "500",
        "--through",
        "service",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["through"], figures["rows"], figures["meters"]) == ("service", 2000, 50)
    assert figures["rows_per_s"] > 0


def test_bench_ingest_first_day_sends_one_message_per_meter_with_new_channels(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    args = ["bench", "ingest", "--database-url", url, "--rows", "400", "--channels", "50", "--json"]
    result = runner.invoke(app, [*args, "--through", "service", "--new-channels"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["new_channels"], figures["messages"], figures["message_rows"]) == (True, 50, 8)
    assert figures["rows_per_s"] > 0
    refused = runner.invoke(app, [*args, "--new-channels"])
    assert refused.exit_code == 2 and "--through service" in refused.output


def test_bench_dlms_reads_every_meter_over_tcp() -> None:
    result = runner.invoke(app, ["bench", "dlms", "--meters", "5", "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["meters"], figures["reads"], figures["rows"]) == (5, 5, 5 * 96)  # one day each, no gaps
    assert figures["reads_per_s"] > 0
    assert figures["client_cpu_ms_per_read"] > 0
