"""A platform on embedded defaults for head-end tests: SQLite, in-process bus, free ports, no polling
(tests run collection rounds themselves)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openami.app import Platform
from openami.config import Settings


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'hes.sqlite3'}",
        mqtt_embedded_port=0,
        dlms_push_port=0,
        poll_interval_s=0,
        ingest_flush_ms=20,
    )
    running = Platform.build(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
