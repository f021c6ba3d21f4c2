"""The demo's DLMS meters end to end: ciphered pushes over TCP -> listener (keys from the vault) -> store.

Embedded stack only (SQLite, in-process bus): the push listener and key vault are the same code on the
production backends, which tests/e2e/test_meter_to_api.py already runs a push through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from openami.app import Platform
from openami.config import Settings
from openami.demo.runner import backfill, dlms_push_meters, prepare
from openami.demo.seed import DEMO_TENANT, DemoLayout
from openami.security.keyvault import KeyVault, load_master_key
from openami.simulator.dlms_push import DlmsPushMeter
from openami.store import schema

DAY_START = datetime(2026, 10, 24, 0, 0, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'e2e.sqlite3'}",
        bus_url="memory",
        mqtt_url="embedded",
        mqtt_embedded_port=0,
        ingest_flush_ms=20,
        dlms_push_port=0,
    )
    running = Platform.build(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def _meter_from_vault(platform: Platform, layout: DemoLayout, *, index: int = 0) -> DlmsPushMeter:
    """A simulator holding the keys the vault hands out (not the derivation's), as a real meter would."""
    demo = layout.dlms_meters[index]
    vault = KeyVault(platform.engine, load_master_key(platform.settings))
    keys = vault.push_keys(demo.system_title)
    assert keys is not None and keys.encryption_key is not None and keys.authentication_key is not None
    assert (keys.tenant, keys.meter_serial) == (DEMO_TENANT, demo.serial)
    return DlmsPushMeter(
        demo.serial, demo.system_title, keys.encryption_key, keys.authentication_key, seed=11
    )


async def _push_day(platform: Platform, meter: DlmsPushMeter) -> int:
    push = platform.dlms_push
    assert push is not None
    before = push.stats.received
    sent = await meter.push_span(platform.settings.dlms_push_host, push.port, DAY_START, DAY_END)
    deadline = time.monotonic() + 30
    while push.stats.received < before + sent:
        assert time.monotonic() < deadline, "listener did not handle every push"
        await asyncio.sleep(0.05)
    await platform.settle(timeout_s=30)
    return sent


def _stored(platform: Platform, serial: str) -> dict[str, int]:
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(schema.channel.c.code, func.count())
            .join(schema.register_read, schema.register_read.c.channel_id == schema.channel.c.id)
            .join(schema.meter, schema.meter.c.id == schema.channel.c.meter_id)
            .where(schema.meter.c.serial == serial)
            .group_by(schema.channel.c.code)
        ).all()
    return {code: count for code, count in rows}


def _rejected_reasons(platform: Platform) -> list[str]:
    with platform.engine.connect() as conn:
        return list(conn.execute(select(schema.rejected_message.c.reason)).scalars())


async def test_a_day_of_ciphered_pushes_is_stored_and_a_replay_is_refused(platform: Platform) -> None:
    layout = await asyncio.to_thread(prepare, platform)
    meter = await asyncio.to_thread(_meter_from_vault, platform, layout)
    push = platform.dlms_push
    assert push is not None

    assert await _push_day(platform, meter) == 96
    assert (push.stats.accepted, push.stats.rejected) == (96, 0)
    stored = await asyncio.to_thread(_stored, platform, meter.serial)
    assert stored == {"1-0:1.8.0": 96, "1-0:2.8.0": 96, "1-0:1.7.0": 96}
    inserted = platform.ingest.totals.inserted
    assert inserted == 3 * 96

    # The same meter restarted (counter from 1 again): every push is a replay and nothing is stored.
    restarted = await asyncio.to_thread(_meter_from_vault, platform, layout)
    assert await _push_day(platform, restarted) == 96
    assert (push.stats.accepted, push.stats.rejected, push.stats.replays) == (96, 96, 96)
    assert platform.ingest.totals.inserted == inserted
    assert platform.ingest.totals.unchanged == 0  # refused at the listener, never reached the store
    assert await asyncio.to_thread(_stored, platform, meter.serial) == stored
    reasons = await asyncio.to_thread(_rejected_reasons, platform)
    assert len(reasons) == 96
    assert all(reason.startswith("replay:") for reason in reasons)

    # The original object goes on counting, so its next pushes are accepted again.
    assert await _push_day(platform, meter) == 96
    assert push.stats.accepted == 2 * 96
    assert platform.ingest.totals.unchanged == 3 * 96  # same values again: stored once


async def test_the_demo_backfill_pushes_from_every_dlms_meter(platform: Platform) -> None:
    layout = await asyncio.to_thread(prepare, platform)
    dlms = dlms_push_meters(layout)
    summary = await backfill(platform, layout, days=0.25, dlms=dlms)
    assert (summary.meters, summary.gateways, summary.dlms_meters) == (345, 9, 12)
    assert (summary.edge_gateways, summary.edge_meters, summary.edge_readings) == (2, 8, 0)  # not started
    assert summary.pulled_meters == 0  # no simulator answers for the polled meters in this test
    assert summary.dlms_pushes == 12 * 24
    assert summary.dlms_rejected == 0
    assert all(meter.invocation_counter == 24 for meter in dlms)
    stored = await asyncio.to_thread(_stored, platform, "DLMS-000012")
    assert stored == {"1-0:1.8.0": 24, "1-0:2.8.0": 24, "1-0:1.7.0": 24}
