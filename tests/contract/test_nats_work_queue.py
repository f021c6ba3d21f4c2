"""The ``jobs`` stream on NATS is a work queue: what the head-end's pollers rely on beyond the bus contract.

A dispatch acknowledged by one poller must be gone from the server (not replayed to a durable created
later, not kept until ``max_age``), a second consumer group overlapping the first must be refused, and
a ``jobs`` stream left by an older version with limits retention must be turned into a work queue.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from openami.bus.base import BusError, Message, SubscribeOptions
from openami.bus.nats import NatsBus

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def prefixes(nats_url: str) -> AsyncIterator[tuple[str, str]]:
    """A private stream and subject prefix; every stream with that prefix is deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    stream_prefix = f"W{tag}"
    yield stream_prefix, f"w{tag}."
    nc = await nats.connect(nats_url, connect_timeout=3)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(f"{stream_prefix}_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


def _bus(nats_url: str, prefixes: tuple[str, str]) -> NatsBus:
    return NatsBus(nats_url, stream_prefix=prefixes[0], subject_prefix=prefixes[1], fetch_timeout_s=0.2)


async def _stream_messages(nats_url: str, name: str) -> tuple[RetentionPolicy | None, int]:
    nc = await nats.connect(nats_url, connect_timeout=3)
    try:
        info = await nc.jetstream().stream_info(name)
        retention = info.config.retention
        return (None if retention is None else RetentionPolicy(retention)), info.state.messages
    finally:
        await nc.close()


async def test_an_acknowledged_dispatch_leaves_the_jobs_stream(
    nats_url: str, prefixes: tuple[str, str]
) -> None:
    bus = _bus(nats_url, prefixes)
    await bus.start()
    try:
        got: list[bytes] = []

        async def take(msg: Message) -> None:
            got.append(msg.data)

        await bus.subscribe("jobs.dispatch.bulk", take, SubscribeOptions(durable="pollers-bulk"))
        for number in range(5):
            await bus.publish("jobs.dispatch.bulk", str(number).encode())
        await bus.drain(5.0)
        assert sorted(got) == [str(n).encode() for n in range(5)]
        retention, left = await _stream_messages(nats_url, bus.stream_name("jobs"))
        assert retention is RetentionPolicy.WORK_QUEUE
        for _ in range(50):  # the server removes acknowledged messages right after the ack
            if left == 0:
                break
            await asyncio.sleep(0.05)
            _, left = await _stream_messages(nats_url, bus.stream_name("jobs"))
        assert left == 0
        # Other streams keep what was consumed (readings may be replayed by a new durable).
        await bus.publish("readings.acme", b"kept")
        retention, kept = await _stream_messages(nats_url, bus.stream_name("readings"))
        assert (retention, kept) == (RetentionPolicy.LIMITS, 1)
    finally:
        await bus.close()


async def test_an_overlapping_second_group_is_refused(nats_url: str, prefixes: tuple[str, str]) -> None:
    bus = _bus(nats_url, prefixes)
    await bus.start()
    try:

        async def ignore(msg: Message) -> None:
            return None

        await bus.subscribe("jobs.dispatch.bulk", ignore, SubscribeOptions(durable="pollers-bulk"))
        await bus.subscribe("jobs.dispatch.command", ignore, SubscribeOptions(durable="pollers-command"))
        with pytest.raises(BusError, match="everything"):
            await bus.subscribe("jobs.>", ignore, SubscribeOptions(durable="everything"))
    finally:
        await bus.close()


async def _existing_stream(nats_url: str, bus: NatsBus, token: str, retention: RetentionPolicy) -> str:
    """The token's stream made beforehand (as an older version or an operator would) with one message."""
    name = bus.stream_name(token)
    nc = await nats.connect(nats_url, connect_timeout=3)
    try:
        js = nc.jetstream()
        subject = f"{bus.subject_prefix}{token}"
        await js.add_stream(
            StreamConfig(name=name, subjects=[f"{subject}.>"], storage=StorageType.FILE, retention=retention)
        )
        await js.publish(f"{subject}.acme", b"old", stream=name)
    finally:
        await nc.close()
    return name


async def test_a_limits_jobs_stream_from_an_older_version_becomes_a_work_queue(
    nats_url: str, prefixes: tuple[str, str]
) -> None:
    bus = _bus(nats_url, prefixes)
    name = await _existing_stream(nats_url, bus, "jobs", RetentionPolicy.LIMITS)
    await bus.start()
    try:
        assert await _stream_messages(nats_url, name) == (RetentionPolicy.WORK_QUEUE, 0)
    finally:
        await bus.close()


async def test_a_data_stream_with_other_retention_is_left_alone(
    nats_url: str, prefixes: tuple[str, str]
) -> None:
    bus = _bus(nats_url, prefixes)
    name = await _existing_stream(nats_url, bus, "readings", RetentionPolicy.WORK_QUEUE)
    with pytest.raises(BusError, match="left alone"):
        await bus.start()
    await bus.close()
    assert await _stream_messages(nats_url, name) == (RetentionPolicy.WORK_QUEUE, 1)  # kept, message too
