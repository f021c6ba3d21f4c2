"""The bus contract, run against both implementations: what services may rely on whichever bus they get.

The NATS leg needs a JetStream server (``nats_url``); each test uses its own stream and subject prefixes
and deletes its streams afterwards, so runs can share the server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest

from openami.bus.base import Bus, BusError, Message, SubscribeOptions
from openami.bus.memory import MSG_ID_HEADER, MemoryBus
from openami.bus.nats import NatsBus

WAIT_S = 5.0
RETRY_DELAY_S = 0.05


async def _delete_streams(url: str, prefix: str) -> None:
    nc = await nats.connect(url, connect_timeout=3)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@pytest.fixture(params=["memory", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """A started bus of each kind, closed (and, on NATS, its streams deleted) afterwards."""
    if request.param == "memory":
        memory = MemoryBus(retry_delay_s=RETRY_DELAY_S)
        await memory.start()
        yield memory
        await memory.close()
        return
    url = request.getfixturevalue("nats_url")
    tag = uuid.uuid4().hex[:10]
    stream_prefix = f"T{tag}"
    nats_bus = NatsBus(
        url,
        stream_prefix=stream_prefix,
        subject_prefix=f"t{tag}.",
        retry_delay_s=RETRY_DELAY_S,
        fetch_timeout_s=0.2,
    )
    try:
        await nats_bus.start()
        yield nats_bus
        await nats_bus.close()
    finally:
        await _delete_streams(url, f"{stream_prefix}_")


class Recorder:
    """A handler that records deliveries and can be told how to behave on each one."""

    def __init__(self, behaviour: Callable[[Message], Awaitable[None]] | None = None) -> None:
        self.messages: list[Message] = []
        self.times: list[float] = []
        self._behaviour = behaviour
        self._changed = asyncio.Event()

    async def __call__(self, msg: Message) -> None:
        self.messages.append(msg)
        self.times.append(time.monotonic())
        self._changed.set()
        if self._behaviour is not None:
            await self._behaviour(msg)

    @property
    def payloads(self) -> list[bytes]:
        return [m.data for m in self.messages]

    async def wait_for(self, count: int, timeout_s: float = WAIT_S) -> None:
        async def enough() -> None:
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout_s)


async def _eventually(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


async def test_roundtrip_keeps_data_headers_and_subject(bus: Bus) -> None:
    rec = Recorder()
    await bus.subscribe("readings.acme", rec, SubscribeOptions(durable="rt"))
    await bus.publish(
        "readings.acme", b"\x00binary\xff", headers={"X-Tenant": "acme", "Content-Type": "json"}
    )
    await rec.wait_for(1)
    msg = rec.messages[0]
    assert msg.subject == "readings.acme"
    assert msg.data == b"\x00binary\xff"
    assert msg.headers["X-Tenant"] == "acme"
    assert msg.headers["Content-Type"] == "json"
    assert msg.delivery == 1


async def test_msg_id_travels_in_header(bus: Bus) -> None:
    rec = Recorder()
    await bus.subscribe("events.>", rec, SubscribeOptions(durable="hdr"))
    await bus.publish("events.acme", b"x", msg_id="batch-1")
    await rec.wait_for(1)
    assert rec.messages[0].headers[MSG_ID_HEADER] == "batch-1"


async def test_wildcards(bus: Bus) -> None:
    one, rest, exact = Recorder(), Recorder(), Recorder()
    await bus.subscribe("readings.*", one, SubscribeOptions(durable="one"))
    await bus.subscribe("readings.>", rest, SubscribeOptions(durable="rest"))
    await bus.subscribe("readings.acme.m1", exact, SubscribeOptions(durable="exact"))
    for subject in ("readings.acme", "readings.acme.m1", "readings.acme.m1.ch", "events.acme"):
        await bus.publish(subject, subject.encode())
    await bus.drain(WAIT_S)
    assert [m.subject for m in one.messages] == ["readings.acme"]
    assert sorted(m.subject for m in rest.messages) == [
        "readings.acme",
        "readings.acme.m1",
        "readings.acme.m1.ch",
    ]
    assert [m.subject for m in exact.messages] == ["readings.acme.m1"]


async def test_consumer_group_shares_work(bus: Bus) -> None:
    async def slow(_: Message) -> None:
        await asyncio.sleep(0.005)

    first, second = Recorder(slow), Recorder(slow)
    options = SubscribeOptions(durable="group", max_in_flight=1)
    await bus.subscribe("jobs.>", first, options)
    await bus.subscribe("jobs.>", second, options)
    for i in range(40):
        await bus.publish(f"jobs.j{i % 3}", str(i).encode())
    await _eventually(lambda: len(first.messages) + len(second.messages) >= 40)
    await bus.drain(WAIT_S)
    everything = sorted(int(p) for p in first.payloads + second.payloads)
    assert everything == list(range(40))  # each message exactly once over the group
    assert first.messages, "both members should do some of the work"
    assert second.messages, "both members should do some of the work"


async def test_separate_durables_each_get_everything(bus: Bus) -> None:
    a, b = Recorder(), Recorder()
    await bus.subscribe("events.>", a, SubscribeOptions(durable="a"))
    await bus.subscribe("events.>", b, SubscribeOptions(durable="b"))
    for i in range(10):
        await bus.publish("events.acme", str(i).encode())
    await a.wait_for(10)
    await b.wait_for(10)
    await bus.drain(WAIT_S)
    assert sorted(a.payloads) == sorted(b.payloads) == sorted(str(i).encode() for i in range(10))


async def test_normal_return_acks(bus: Bus) -> None:
    rec = Recorder()
    await bus.subscribe("readings.>", rec, SubscribeOptions(durable="acker"))
    await bus.publish("readings.acme", b"once")
    await rec.wait_for(1)
    await bus.drain(WAIT_S)
    await asyncio.sleep(0.3)
    assert len(rec.messages) == 1
    stats = bus.stats()
    assert stats.acked == 1
    assert stats.redelivered == 0
    assert stats.pending["acker"] == 0


async def test_exception_redelivers_with_counter(bus: Bus) -> None:
    async def fail_first(msg: Message) -> None:
        if msg.delivery < 3:
            raise RuntimeError("store down")

    rec = Recorder(fail_first)
    await bus.subscribe("readings.>", rec, SubscribeOptions(durable="retry", max_deliver=5))
    await bus.publish("readings.acme", b"r")
    await rec.wait_for(3)
    await bus.drain(WAIT_S)
    assert [m.delivery for m in rec.messages] == [1, 2, 3]
    assert all(m.data == b"r" for m in rec.messages)
    stats = bus.stats()
    assert stats.redelivered == 2
    assert stats.acked == 1
    assert stats.dead == 0


async def test_nak_with_delay(bus: Bus) -> None:
    async def nak_first(msg: Message) -> None:
        if msg.delivery == 1:
            await msg.nak(delay_s=0.5)

    rec = Recorder(nak_first)
    await bus.subscribe("commands.>", rec, SubscribeOptions(durable="later"))
    await bus.publish("commands.m1", b"disconnect")
    await rec.wait_for(2)
    assert [m.delivery for m in rec.messages] == [1, 2]
    gap = rec.times[1] - rec.times[0]
    assert 0.4 <= gap < 3.0
    await bus.drain(WAIT_S)
    assert bus.stats().acked == 1


async def test_dead_after_max_deliver(bus: Bus) -> None:
    async def always_fail(_: Message) -> None:
        raise ValueError("poison")

    rec = Recorder(always_fail)
    await bus.subscribe("readings.>", rec, SubscribeOptions(durable="poison", max_deliver=3))
    await bus.publish("readings.acme", b"poison")
    await _eventually(lambda: bus.stats().dead == 1)
    await asyncio.sleep(0.3)  # no further delivery after it is dead
    assert [m.delivery for m in rec.messages] == [1, 2, 3]
    await bus.drain(WAIT_S)
    stats = bus.stats()
    assert stats.dead == 1
    assert stats.acked == 0
    assert stats.pending["poison"] == 0


async def test_nak_on_last_delivery_is_dead(bus: Bus) -> None:
    async def nak(msg: Message) -> None:
        await msg.nak()

    rec = Recorder(nak)
    await bus.subscribe("jobs.>", rec, SubscribeOptions(durable="naker", max_deliver=2))
    await bus.publish("jobs.read", b"j")
    await _eventually(lambda: bus.stats().dead == 1)
    assert [m.delivery for m in rec.messages] == [1, 2]


async def test_handler_exceeding_ack_wait_is_redelivered(bus: Bus) -> None:
    async def hang_first(msg: Message) -> None:
        if msg.delivery == 1:
            await asyncio.sleep(10)

    rec = Recorder(hang_first)
    await bus.subscribe("jobs.>", rec, SubscribeOptions(durable="hang", ack_wait_s=0.3))
    await bus.publish("jobs.read", b"j")
    await rec.wait_for(2)
    assert [m.delivery for m in rec.messages] == [1, 2]
    await bus.drain(WAIT_S)
    assert bus.stats().acked == 1


async def test_explicit_ack_then_return_acks_once(bus: Bus) -> None:
    async def ack(msg: Message) -> None:
        await msg.ack()
        await msg.ack()

    rec = Recorder(ack)
    await bus.subscribe("jobs.>", rec, SubscribeOptions(durable="early"))
    await bus.publish("jobs.read", b"j")
    await rec.wait_for(1)
    await bus.drain(WAIT_S)
    assert bus.stats().acked == 1


async def test_msg_id_deduplicates(bus: Bus) -> None:
    rec = Recorder()
    await bus.subscribe("readings.>", rec, SubscribeOptions(durable="dedup"))
    await bus.publish("readings.acme", b"first", msg_id="gw1-42")
    await bus.publish("readings.acme", b"retry of first", msg_id="gw1-42")
    await bus.publish("readings.other", b"same id, same stream", msg_id="gw1-42")
    await bus.publish("readings.acme", b"second", msg_id="gw1-43")
    await bus.drain(WAIT_S)
    await asyncio.sleep(0.2)
    assert rec.payloads == [b"first", b"second"]
    assert bus.stats().published == 2


async def test_published_before_subscribe_is_delivered(bus: Bus) -> None:
    for i in range(3):
        await bus.publish("readings.acme", str(i).encode())
    rec = Recorder()
    await bus.subscribe("readings.>", rec, SubscribeOptions(durable="late", max_in_flight=1))
    await rec.wait_for(3)
    assert rec.payloads == [b"0", b"1", b"2"]


async def test_durable_resumes_after_stop(bus: Bus) -> None:
    first = Recorder()
    sub = await bus.subscribe("events.>", first, SubscribeOptions(durable="resume"))
    await bus.publish("events.acme", b"before")
    await first.wait_for(1)
    await sub.stop()
    await bus.publish("events.acme", b"while stopped")
    await asyncio.sleep(0.2)
    second = Recorder()
    await bus.subscribe("events.>", second, SubscribeOptions(durable="resume"))
    await second.wait_for(1)
    await bus.drain(WAIT_S)
    assert first.payloads == [b"before"]
    assert second.payloads == [b"while stopped"]


async def test_drain_waits_for_settlement(bus: Bus) -> None:
    done: list[bytes] = []

    async def slow(msg: Message) -> None:
        await asyncio.sleep(0.05)
        done.append(msg.data)

    await bus.subscribe("jobs.>", Recorder(slow), SubscribeOptions(durable="slow", max_in_flight=4))
    for i in range(20):
        await bus.publish("jobs.read", str(i).encode())
    await asyncio.wait_for(bus.drain(WAIT_S), WAIT_S + 1)
    assert len(done) == 20
    assert bus.stats().pending["slow"] == 0


async def test_close_finishes_in_flight_handler(bus: Bus) -> None:
    started = asyncio.Event()
    finished: list[bytes] = []

    async def slow(msg: Message) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(msg.data)

    await bus.subscribe("jobs.>", slow, SubscribeOptions(durable="closing"))
    await bus.publish("jobs.read", b"in flight")
    await asyncio.wait_for(started.wait(), WAIT_S)
    await asyncio.wait_for(bus.close(), WAIT_S)
    assert finished == [b"in flight"]
    assert bus.stats().acked == 1
    with pytest.raises(BusError):
        await bus.publish("jobs.read", b"after close")


async def test_order_within_subject_with_single_flight(bus: Bus) -> None:
    rec = Recorder()
    await bus.subscribe("readings.acme", rec, SubscribeOptions(durable="ordered", max_in_flight=1))
    expected = [str(i).encode() for i in range(100)]
    for payload in expected:
        await bus.publish("readings.acme", payload)
    await rec.wait_for(100)
    assert rec.payloads == expected


async def test_throughput_smoke(bus: Bus) -> None:
    count = 2000
    rec = Recorder()
    await bus.subscribe("readings.>", rec, SubscribeOptions(durable="bulk"))
    started = time.monotonic()
    for i in range(count):
        await bus.publish(f"readings.t{i % 5}", i.to_bytes(4, "big"), msg_id=f"m{i}")
    await rec.wait_for(count, timeout_s=30)
    await bus.drain(WAIT_S)
    elapsed = time.monotonic() - started
    assert sorted(int.from_bytes(p, "big") for p in rec.payloads) == list(range(count))
    assert bus.stats().published == count
    assert elapsed < 20


async def test_subscription_stop_stops_delivery(bus: Bus) -> None:
    rec = Recorder()
    sub = await bus.subscribe("events.>", rec, SubscribeOptions(durable="stopper"))
    await sub.stop()
    await sub.stop()  # idempotent
    await bus.publish("events.acme", b"nobody listens")
    await asyncio.sleep(0.3)
    assert rec.messages == []


@pytest.mark.parametrize(
    "subject", ["", "readings..acme", "readings.*", "readings.>", "*.acme", "Readings.acme", "readings.a b"]
)
async def test_invalid_publish_subject_is_refused(bus: Bus, subject: str) -> None:
    with pytest.raises(BusError):
        await bus.publish(subject, b"x")


@pytest.mark.parametrize("pattern", ["", ">", "*.acme", "readings.>.x", "readings.a*", "readings..x"])
async def test_invalid_pattern_is_refused(bus: Bus, pattern: str) -> None:
    with pytest.raises(BusError):
        await bus.subscribe(pattern, Recorder(), SubscribeOptions(durable="bad"))


@pytest.mark.parametrize(
    "options",
    [
        SubscribeOptions(durable="has.dot"),
        SubscribeOptions(durable=""),
        SubscribeOptions(durable="ok", max_deliver=0),
        SubscribeOptions(durable="ok", max_in_flight=0),
    ],
)
async def test_invalid_options_are_refused(bus: Bus, options: SubscribeOptions) -> None:
    with pytest.raises(BusError):
        await bus.subscribe("readings.>", Recorder(), options)


async def test_durable_cannot_change_filter_while_subscribed(bus: Bus) -> None:
    await bus.subscribe("readings.>", Recorder(), SubscribeOptions(durable="fixed"))
    with pytest.raises(BusError, match="fixed"):
        await bus.subscribe("readings.acme", Recorder(), SubscribeOptions(durable="fixed"))


async def test_durable_keeps_its_filter_across_restarts(bus: Bus) -> None:
    sub = await bus.subscribe("readings.>", Recorder(), SubscribeOptions(durable="kept"))
    await sub.stop()
    with pytest.raises(BusError, match="kept"):
        await bus.subscribe("readings.acme", Recorder(), SubscribeOptions(durable="kept"))
    rec = Recorder()
    await bus.subscribe("readings.>", rec, SubscribeOptions(durable="kept", max_deliver=2, ack_wait_s=5))
    await bus.publish("readings.acme", b"still works")
    await rec.wait_for(1)


async def test_unknown_top_level_token_gets_a_stream(bus: Bus) -> None:
    await bus.publish("alarms.acme", b"early")
    rec = Recorder()
    await bus.subscribe("alarms.>", rec, SubscribeOptions(durable="alarms"))
    await bus.publish("alarms.acme", b"late")
    await rec.wait_for(2)
    assert rec.payloads == [b"early", b"late"]
