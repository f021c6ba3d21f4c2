"""The demo's OpenAMI gateways end to end, in one process: seeded gateways and meters, link keys in the
vault, the real agent polling the simulated M-Bus converter and Modbus gateway, sealed batches over the
embedded broker (MQTT 3.1.1) to the gateway link, readings in the store; and a second run on the same
data dir (a restarted demo) carrying on where the first stopped."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from openami.app import Platform
from openami.config import Settings
from openami.demo.edge import poll_now, start_gateways
from openami.demo.runner import prepare
from openami.demo.seed import DEMO_TENANT, DemoLayout
from openami.edge.archive import Archive
from openami.edge.config import load_config
from openami.store import schema

pytestmark = pytest.mark.timeout(120)

PER_ROUND = 2 * 9 + 2 * 3 + 2 * 13 + 2 * 6
"""Readings of one round: 2 heat and 2 water M-Bus meters, 2 SDM630 and 2 heat Modbus meters."""


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        mqtt_url="embedded",
        mqtt_embedded_port=0,
        dlms_push_enabled=False,
        poll_interval_s=0,
        ingest_flush_ms=20,
    )
    running = Platform.build(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def _stored(platform: Platform, layout: DemoLayout) -> list[tuple[str, str, int, float, str]]:
    """(serial, channel, epoch second, value, source) of every stored reading of the gateways' meters."""
    serials = [m.serial for m in layout.edge_meters]
    reads = schema.register_read
    query = (
        select(schema.meter.c.serial, schema.channel.c.code, reads.c.ts, reads.c.value, reads.c.source)
        .join(schema.channel, schema.channel.c.id == reads.c.channel_id)
        .join(schema.meter, schema.meter.c.id == schema.channel.c.meter_id)
        .where(schema.meter.c.serial.in_(serials))
    )
    with platform.engine.connect() as conn:
        return [(r.serial, r.code, int(r.ts.timestamp()), r.value, r.source) for r in conn.execute(query)]


def _archived(path: Path) -> list[tuple[str, str, int, float]]:
    archive = Archive(path)
    try:
        return [(r.meter, r.channel, int(r.ts.timestamp()), r.value) for r in archive.readings()]
    finally:
        archive.close()


async def _one_run(platform: Platform, layout: DemoLayout) -> int:
    async with contextlib.AsyncExitStack() as stack:
        agents = await start_gateways(stack, platform, layout)
        assert [a.config.id for a in agents] == ["GW-EDGE-1", "GW-EDGE-2"]
        assert all(a.config.uplink.mqtt_version == "3.1.1" for a in agents)  # the embedded amqtt
        readings = await poll_now(platform, agents)
        await platform.settle()
        return readings


async def test_the_demo_gateways_forward_their_meters_over_the_link(platform: Platform) -> None:
    layout = await asyncio.to_thread(prepare, platform)
    link = platform.gateway_link
    assert link is not None

    readings = await _one_run(platform, layout)
    assert readings in (PER_ROUND, 2 * PER_ROUND)  # twice if the gateways' schedule struck meanwhile
    stored = await asyncio.to_thread(_stored, platform, layout)
    assert len(stored) == readings
    assert {source for *_, source in stored} == {"gateway"}  # through the link, not read by the head-end
    assert {serial for serial, *_ in stored} == {m.serial for m in layout.edge_meters}
    archived: list[tuple[str, str, int, float]] = []
    for gateway in layout.edge_gateways:
        archived += await asyncio.to_thread(
            _archived, platform.settings.data_dir / "edge" / gateway.ident / "archive.db"
        )
    assert sorted(archived) == sorted(row[:4] for row in stored)
    assert (link.stats.rejected, link.stats.refused) == (0, 0)

    # What a gateway's directory holds: its configuration, loadable as `openami gateway` loads it, and
    # its link key, readable by its owner only and the key the vault holds for it.
    directory = platform.settings.data_dir / "edge" / "GW-EDGE-1"
    config = load_config(directory / "gateway.toml")
    assert (config.id, config.tenant, config.uplink.url) == ("GW-EDGE-1", DEMO_TENANT, platform.mqtt_url)
    assert stat.S_IMODE((directory / "link.key").stat().st_mode) == 0o600
    assert config.uplink.link_key == layout.edge_gateways[0].link_key
    with platform.engine.connect() as conn:
        health = conn.execute(
            select(schema.gateway_link.c.health).where(schema.gateway_link.c.health.is_not(None))
        ).scalars()
        meters = sorted(h["meters"] for h in health)
    assert meters == [4, 4]  # each gateway's HEALTH after connecting reached the head-end

    # The demo started again on the same data dir: the archives and the link's replay windows go on.
    # (A second later: the archive keeps one reading per meter, channel and second.)
    await asyncio.sleep(1.1)
    again = await _one_run(platform, layout)
    assert again in (PER_ROUND, 2 * PER_ROUND)
    assert len(await asyncio.to_thread(_stored, platform, layout)) == readings + again
    assert (link.stats.rejected, link.stats.refused) == (0, 0)
    with platform.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.rejected_message)).scalar_one() == 0
