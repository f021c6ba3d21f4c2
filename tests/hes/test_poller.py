"""The DLMS poller inside the platform: rounds on the wall-clock grid, counted in /metrics and /health."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from openami.app import Platform
from openami.config import Settings
from openami.hes.poller import Poller
from openami.security.bootstrap import create_tenant_with_admin
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from tests.hes.dlms_support import register_dlms_meters

pytestmark = pytest.mark.timeout(60)


def test_rounds_start_just_after_each_interval_boundary() -> None:
    now = [1_000_000.0 + 7.5]  # 7.5 s into an interval of 900 s (1_000_000 is 100 s past a boundary)
    poller = Poller([], 900, clock=lambda: now[0])
    assert poller.delay_to_next_round() == pytest.approx(900 - (1_000_007.5 % 900) + 5)
    with pytest.raises(ValueError, match="positive"):
        Poller([], 0)


async def test_the_platform_polls_registered_meters_on_its_own(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'poll.sqlite3'}",
        mqtt_embedded_port=0,
        dlms_push_port=0,
        poll_interval_s=1,
        dlms_backfill_days=1,
        ingest_flush_ms=20,
    )
    platform = Platform.build(settings)
    await platform.start()
    try:
        async with DlmsSimulator("127.0.0.1", build_meters(3), 0) as simulator:
            admin = await asyncio.to_thread(
                create_tenant_with_admin, platform.engine, "poll", "Poll", "UTC", "admin", "pw-pw-pw-1"
            )
            assert platform.vault is not None and platform.poller is not None
            await asyncio.to_thread(
                register_dlms_meters, platform.engine, platform.vault, admin.tenant_id, simulator
            )
            deadline = time.monotonic() + 20
            while platform.poller.meters_read < 3:
                assert time.monotonic() < deadline, "no round read the meters"
                await asyncio.sleep(0.1)
            await platform.settle()
            assert platform.ingest.totals.inserted >= 3 * 96
            assert platform.health()["poller"] == "ok"
            text = platform.metrics.exposition()[0].decode()
            assert 'openami_collection_rounds_total{outcome="meter_reads_ok"}' in text
    finally:
        await platform.stop()
    assert platform.health()["poller"] == "stopped"
