"""Helpers shared by the listener tests: a bus collector, a dead-letter recorder and a bounded wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openami.bus.base import Message
from openami.bus.messages import Reading, ReadingBatch
from openami.config import Settings
from openami.hes.rejected import RejectedMessage


def platform_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """A platform on embedded defaults for tests: SQLite in ``tmp_path``, free ports, no polling and no
    job scheduler (tests run collection rounds and jobs themselves), quick ingest flushes; ``overrides``
    on top."""
    base: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'hes.sqlite3'}",
        "mqtt_embedded_port": 0,
        "dlms_push_port": 0,
        "poll_interval_s": 0,
        "hes_jobs": False,
        "ingest_flush_ms": 20,
    }
    return Settings(**{**base, **overrides})


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``condition()`` holds; TimeoutError after ``timeout_s`` (tests never hang)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


class Collector:
    """A bus subscriber keeping every ReadingBatch delivered on ``readings.>``."""

    def __init__(self) -> None:
        self.batches: list[ReadingBatch] = []
        self.msg_ids: list[str] = []

    async def handle(self, message: Message) -> None:
        self.batches.append(ReadingBatch.from_bytes(message.data))
        self.msg_ids.append(message.headers["Nats-Msg-Id"])

    @property
    def readings(self) -> list[Reading]:
        return [reading for batch in self.batches for reading in batch.readings]


class Rejections:
    """A dead-letter handler that records what a listener rejected."""

    def __init__(self) -> None:
        self.items: list[RejectedMessage] = []

    async def __call__(self, rejected: RejectedMessage) -> None:
        self.items.append(rejected)
