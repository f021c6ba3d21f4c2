"""Virtual gateways against a real head-end: registered, linked, cut off and restored, and everything
they read stored exactly once (the simulator's own promise, over the embedded broker)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from openami.app import Platform
from openami.config import Settings
from openami.edge.archive import Archive
from openami.simulator.gateway_fleet import GatewayFleet, OutagePlan, register_fleet
from openami.simulator.link_proxy import LinkProxy
from openami.store import schema
from openami.store.errors import NotFound
from openami.store.repositories.catalog import tenants
from tests.edge.support import eventually

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(
        data_dir=tmp_path / "hes",
        database_url=f"sqlite:///{tmp_path / 'hes.sqlite3'}",
        mqtt_url="embedded",
        mqtt_embedded_port=0,
        dlms_push_enabled=False,
        poll_interval_s=0,
        ingest_flush_ms=20,
    )
    (tmp_path / "hes").mkdir()
    running = Platform.build(settings)
    await running.start()
    with running.engine.begin() as conn:
        tenants.create(conn, {"slug": "acme", "name": "Acme"})
    try:
        yield running
    finally:
        await running.stop()


def _stored(platform: Platform) -> int:
    with platform.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(schema.register_read)) or 0)


def _archived(path: Path) -> int:
    archive = Archive(path)
    try:
        return len(list(archive.readings()))
    finally:
        archive.close()


async def test_a_fleet_through_outages_delivers_every_reading_once(
    tmp_path: Path, platform: Platform
) -> None:
    assert platform.gateway_link is not None and platform.vault is not None
    fleet = GatewayFleet(
        tenant="acme",
        directory=tmp_path / "fleet",
        mqtt_url=platform.mqtt_url,
        count=2,
        mbus=2,
        modbus=2,
        mqtt_version="3.1.1",
        poll_interval_s=1,
        outage=OutagePlan(every_s=4.0, for_s=1.5),
    )
    await fleet.start_sites()
    try:
        created = await asyncio.to_thread(register_fleet, platform.engine, platform.vault, fleet)
        assert created == {"gateways": 2, "meters": 8, "keys": 2}
        await fleet.start_agents()
        await eventually(
            lambda: all(g.link is not None and g.link.stats.cuts >= 1 for g in fleet.gateways),
            15,
            "a cut per link",
        )
        await fleet.end_outages()
        await eventually(
            lambda: all(g.agent is not None and g.agent.forwarder.connected for g in fleet.gateways),
            15,
            "links back",
        )
        rows = await fleet.status()
        assert {row["gateway"] for row in rows} == {"SIM-GW-001", "SIM-GW-002"}
        assert all(row["meters"] == 4 and row["readings"] > 0 for row in rows)
    finally:
        for gateway in fleet.gateways:  # no new reads from here on: let the links drain
            if gateway.agent is not None:
                await gateway.agent.poller.stop()
        await fleet.end_outages()

    async def drained() -> bool:
        rows = await fleet.status()
        return all(row["backlog"] == 0 and row["unacked"] == 0 for row in rows)

    for _ in range(200):
        if await drained():
            break
        await asyncio.sleep(0.1)
    assert await drained()
    await platform.settle()
    await fleet.stop()
    archived = sum(_archived(g.directory / "archive.db") for g in fleet.gateways)
    assert archived > 0
    assert _stored(platform) == archived  # every reading the gateways took, once

    again = await asyncio.to_thread(register_fleet, platform.engine, platform.vault, fleet)
    assert again == {"gateways": 0, "meters": 0, "keys": 0}  # a second run carries on


def test_register_fleet_needs_the_tenant(tmp_path: Path, platform: Platform) -> None:
    assert platform.vault is not None
    fleet = GatewayFleet(tenant="nobody", directory=tmp_path, mqtt_url="mqtt://127.0.0.1:1", count=1)
    with pytest.raises(NotFound, match="nobody"):
        register_fleet(platform.engine, platform.vault, fleet)


def test_plans_and_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="shorter than its period"):
        OutagePlan(every_s=1.0, for_s=1.0)
    with pytest.raises(ValueError, match="1 to 999"):
        GatewayFleet(tenant="acme", directory=Path("/nonexistent"), mqtt_url="mqtt://127.0.0.1:1", count=0)


async def test_a_cut_link_drops_connections_and_turns_new_ones_away() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with LinkProxy("127.0.0.1", port) as link:
        reader, writer = await asyncio.open_connection(link.host, link.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 2) == b"ping"
        link.cut()
        assert await asyncio.wait_for(reader.read(4), 2) == b""  # dropped
        reader2, _ = await asyncio.open_connection(link.host, link.port)
        assert await asyncio.wait_for(reader2.read(4), 2) == b""  # turned away
        link.restore()
        reader3, writer3 = await asyncio.open_connection(link.host, link.port)
        writer3.write(b"back")
        assert await asyncio.wait_for(reader3.read(4), 2) == b"back"
        writer3.close()
        assert (link.stats.cuts, link.stats.refused, link.stats.connections) == (1, 1, 2)
    server.close()
    await server.wait_closed()


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openami.cli",
        "simulate",
        "gateways",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, error = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode(), error.decode()


async def test_the_command_registers_and_runs_gateways_against_a_head_end(
    tmp_path: Path, platform: Platform
) -> None:
    env = {"OPENAMI_DATA_DIR": str(platform.settings.data_dir), "COLUMNS": "200"}
    common = [
        "--tenant",
        "acme",
        "--database-url",
        platform.settings.database_url,
        "--dir",
        str(tmp_path / "g"),
    ]
    code, out, error = await _cli(
        *common,
        "--mqtt-url",
        platform.mqtt_url,
        "--mqtt-version",
        "3.1.1",
        "--count",
        "1",
        "--mbus",
        "2",
        "--modbus",
        "1",
        "--poll-interval",
        "1",
        "--duration",
        "4",
        env=env,
    )
    assert code == 0, error
    assert "registered 1 gateways, 3 meters, 1 link keys (tenant acme)" in out
    assert "SIM-GW-001" in out
    await platform.settle()
    assert _stored(platform) > 0

    code, _, error = await _cli(
        *common, "--mqtt-url", platform.mqtt_url, "--outage-every", "2", "--outage-for", "3", env=env
    )
    assert code == 2
    assert "--outage-for: an outage must be shorter than its period" in error
