"""`openami meters command`: a remote command from the shell, against a simulated meter over TCP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from openami.cli import app
from openami.config import Settings
from openami.security.bootstrap import create_tenant_with_admin
from openami.security.keyvault import KeyVault, load_master_key
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.schema import audit_log
from tests.hes.dlms_support import register_dlms_meters

pytestmark = pytest.mark.timeout(60)


async def test_disconnect_from_the_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cmd.sqlite3'}"
    for name, value in {"DATABASE_URL": url, "DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}.items():
        monkeypatch.setenv(f"OPENAMI_{name}", value)
    engine = make_engine(url)
    upgrade(engine)
    tenant_id = create_tenant_with_admin(engine, "cmd", "Cmd", "UTC", "admin", "pw-pw-pw-1").tenant_id
    vault = KeyVault(engine, load_master_key(Settings(data_dir=tmp_path)))
    async with DlmsSimulator("127.0.0.1", build_meters(2), 0) as simulator:
        register_dlms_meters(engine, vault, tenant_id, simulator)
        runner = CliRunner()

        def run(*args: str) -> tuple[int, str]:
            result = runner.invoke(app, ["meters", "command", "--tenant", "cmd", *args])
            return result.exit_code, result.output

        code, output = await asyncio.to_thread(run, "SIM00000002", "disconnect")
        assert code == 0, output
        assert json.loads(output)["state"] == "succeeded"
        assert not simulator.meters[1].relay_connected
        assert simulator.meters[0].relay_connected

        code, output = await asyncio.to_thread(run, "NOPE", "disconnect")
        assert code == 1
        assert "error:" in output
        code, output = await asyncio.to_thread(run, "SIM00000001", "explode")
        assert code == 2
    with engine.connect() as conn:
        actors = set(
            conn.execute(select(audit_log.c.actor).where(audit_log.c.action.like("command.%"))).scalars()
        )
    assert len(actors) == 1
    assert next(iter(actors)).startswith("cli:")
