"""`openami gateways push-config` and `openami gateways link` on a real SQLite head-end database: the
configuration is staged sealed and audited, shown as pending, and bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from openami.cli import app
from openami.config import Settings
from openami.hes.gateway_link_store import last_config
from openami.security.keyvault import KeyVault, load_master_key
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.repositories import comm_devices, tenants
from openami.store.schema import audit_log

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()
METER_KEY = "0f" * 16

METERS = """
poll_interval_s = 600

[[meters]]
serial = "MB-1"
protocol = "mbus"
address = "mbus+tcp://10.0.0.5:10001?primary=1"

[[meters]]
serial = "WM-1"
protocol = "wmbus"
address = "wmbus://KAM/12345678"
keys = { encryption_file = "wm1.key" }
"""


@pytest.fixture
def head_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, KeyVault, str]:
    url = f"sqlite:///{tmp_path / 'hes.sqlite3'}"
    monkeypatch.setenv("OPENAMI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAMI_DATABASE_URL", url)
    engine = make_engine(url)
    upgrade(engine)
    vault = KeyVault(engine, load_master_key(Settings(data_dir=tmp_path)))
    with engine.begin() as conn:
        tenant_id = tenants.create(conn, {"slug": "acme", "name": "Acme"}).id
        linked = comm_devices.create(conn, tenant_id, {"ident": "GW-1", "kind": "gateway"}).id
        comm_devices.create(conn, tenant_id, {"ident": "GW-2", "kind": "gateway"})
    vault.store_gateway_key(tenant_id, linked, KeyVault.new_gateway_key())
    return engine, vault, url


def test_push_config_stages_the_file_sealed_and_audited(
    tmp_path: Path, head_end: tuple[Engine, KeyVault, str]
) -> None:
    engine, vault, _ = head_end
    (tmp_path / "meters.toml").write_text(METERS)
    (tmp_path / "wm1.key").write_text(METER_KEY + "\n")
    result = runner.invoke(
        app, ["gateways", "push-config", "GW-1", "-t", "acme", "--file", str(tmp_path / "meters.toml")]
    )
    assert result.exit_code == 0, result.output
    assert "configuration version 1 staged (2 meters)" in result.output
    with engine.connect() as conn:
        gateway = conn.execute(
            select(comm_devices.table.c.id, comm_devices.table.c.tenant_id).where(
                comm_devices.table.c.ident == "GW-1"
            )
        ).one()
        body = last_config(conn, vault, gateway.tenant_id, gateway.id)
        actions = [row.action for row in conn.execute(select(audit_log))]
    assert body is not None
    assert body["version"] == 1 and body["poll_interval_s"] == 600
    assert [m["serial"] for m in body["meters"]] == ["MB-1", "WM-1"]
    assert body["meters"][1]["keys"] == {"encryption": METER_KEY}  # read from its file, sent inline
    assert "gateway.config_pushed" in actions

    shown = runner.invoke(app, ["gateways", "link", "GW-1", "-t", "acme"])
    assert shown.exit_code == 0, shown.output
    assert "configuration pushed 1, reported None (pending)" in shown.output
    as_json = runner.invoke(app, ["gateways", "link", "GW-1", "-t", "acme", "--json"])
    status = json.loads(as_json.output)
    assert status["config_pending"] is True and status["key_present"] is True
    assert METER_KEY not in as_json.output

    again = runner.invoke(app, ["gateways", "push-config", "GW-1", "-t", "acme", "--poll-interval", "300"])
    assert again.exit_code == 0, again.output
    assert "configuration version 2 staged (0 meters)" in again.output  # the registry's list: none yet


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[meters]]\nserial = 'X'\nprotocol = 'mbus'\naddress = 'ftp://x'\n", "--file: meter X: "),
        ("meters = 'no'\n", "--file: expected a list of meters"),
        ("[[meters\n", "--file: meters.toml is not valid TOML"),
        ("poll_interval_s = 0\nmeters = []\n", "--file: poll_interval_s must be"),
    ],
)
def test_a_bad_meter_file_is_one_line_and_exit_2(
    tmp_path: Path, head_end: tuple[Engine, KeyVault, str], text: str, message: str
) -> None:
    (tmp_path / "meters.toml").write_text(text)
    result = runner.invoke(
        app, ["gateways", "push-config", "GW-1", "-t", "acme", "-f", str(tmp_path / "meters.toml")]
    )
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert message in result.output


def test_unknown_or_unlinked_gateways_are_clear_errors(head_end: tuple[Engine, KeyVault, str]) -> None:
    unknown = runner.invoke(app, ["gateways", "push-config", "GW-9", "-t", "acme"])
    assert unknown.exit_code == 1 and "gateway 'GW-9' not found" in unknown.output
    unlinked = runner.invoke(app, ["gateways", "push-config", "GW-2", "-t", "acme"])
    assert unlinked.exit_code == 1 and "has no link key yet" in unlinked.output
    shown = runner.invoke(app, ["gateways", "link", "GW-2", "-t", "acme"])
    assert shown.exit_code == 0 and "no link key" in shown.output
