"""A platform on embedded defaults for head-end tests: SQLite, in-process bus, free ports, no polling and
no scheduler of its own (tests run collection rounds and jobs themselves, on their clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openami.app import Platform
from tests.hes.support import platform_settings


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    running = Platform.build(platform_settings(tmp_path))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
