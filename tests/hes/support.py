"""Helpers shared by the listener tests: a bus collector, a dead-letter recorder and a bounded wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from openami.bus.base import Message
from openami.bus.messages import Reading, ReadingBatch
from openami.hes.rejected import RejectedMessage


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
