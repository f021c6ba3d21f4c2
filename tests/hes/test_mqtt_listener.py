"""Gateway -> MQTT broker -> MqttGatewayListener -> MemoryBus, over real loopback sockets.

The main flows run against both the embedded amqtt broker and the real Mosquitto (``mosquitto_url``),
each test under its own topic prefix so parallel users of the shared Mosquitto do not interfere.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest
from amqtt.broker import Broker

from openami.bus.base import SubscribeOptions
from openami.bus.memory import MemoryBus
from openami.bus.messages import ReadingBatch
from openami.drivers.mqtt_json import encode_uplink, uplink_to_batch, uplink_topic
from openami.hes.mqtt_listener import MqttGatewayListener
from openami.hes.rejected import MAX_REJECTED_PAYLOAD, RejectedMessage
from openami.hes.uplinks import split_batch
from openami.simulator.consumption import Medium
from openami.simulator.gateway import CHANNELS, SimMeter, VirtualGateway
from openami.transports.errors import ConnectError
from openami.transports.mqtt import make_client
from openami.transports.mqtt_broker import EmbeddedBroker
from tests.hes.support import Collector, Rejections, until

DAY = datetime(2026, 11, 16, tzinfo=UTC)
TENANT = "acme"


@pytest.fixture
async def embedded_url() -> AsyncIterator[str]:
    async with EmbeddedBroker("127.0.0.1", 0) as broker:
        yield broker.url


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def mqtt_url(request: pytest.FixtureRequest) -> str:
    name = "embedded_url" if request.param == "embedded" else "mosquitto_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def prefix() -> str:
    return f"openami-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus()
    await bus.start()
    yield bus
    await bus.close()


@pytest.fixture
async def collector(bus: MemoryBus) -> Collector:
    collector = Collector()
    await bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
    return collector


@pytest.fixture
def rejections() -> Rejections:
    return Rejections()


@pytest.fixture
async def listener(
    mqtt_url: str, prefix: str, bus: MemoryBus, rejections: Rejections
) -> AsyncIterator[MqttGatewayListener]:
    listener = MqttGatewayListener(
        mqtt_url, prefix, bus, rejections, reconnect_min_s=0.05, reconnect_max_s=0.2
    )
    await listener.start()
    yield listener
    await listener.stop()


def _gateway(meters: int, *, seq_start: int = 1) -> VirtualGateway:
    media: tuple[Medium, ...] = ("electricity", "water", "gas", "heat")
    sim = [SimMeter(f"M-{i:05d}", media[i % 4], seed=i) for i in range(meters)]
    return VirtualGateway("GW-0001", TENANT, sim, seq_start=seq_start)


async def _publish(url: str, topic: str, *payloads: bytes) -> None:
    async with make_client(url) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


async def test_gateway_readings_reach_the_bus(
    mqtt_url: str, prefix: str, bus: MemoryBus, collector: Collector, listener: MqttGatewayListener
) -> None:
    gateway = _gateway(60)  # two uplinks: 50 meters, then 10
    async with make_client(mqtt_url) as client:
        sent = await gateway.publish_span(client, prefix, DAY, DAY + timedelta(days=1))
    assert sent == 2

    await until(lambda: listener.stats.accepted == 2)
    await bus.drain()
    expected = 60 * 2 * 96  # meters x channels x quarter hours
    assert len(collector.readings) == listener.stats.readings == expected
    assert (listener.stats.received, listener.stats.rejected) == (2, 0)
    assert {batch.tenant for batch in collector.batches} == {TENANT}
    assert {batch.gateway for batch in collector.batches} == {"GW-0001"}
    assert {batch.source for batch in collector.batches} == {"mqtt-json"}
    # One bus message per uplink (a 50-meter day fits in one), ids derived from the gateway's seq.
    assert sorted(collector.msg_ids) == [f"mqtt-json:{TENANT}:GW-0001:{seq}#0" for seq in (1, 2)]

    # Every value arrived as the simulator computed it.
    meter = gateway.meters[6]  # a gas meter
    series = {s.channel: s for s in meter.series(DAY, DAY + timedelta(days=1))}
    for channel in CHANNELS["gas"]:
        received = sorted(
            (r for r in collector.readings if r.meter == meter.serial and r.channel == channel.code),
            key=lambda r: r.ts,
        )
        assert [r.value for r in received] == series[channel.code].values
        assert received[0].ts == DAY + timedelta(minutes=15)
        assert {(r.kind, r.unit) for r in received} == {(channel.kind, channel.unit)}


async def test_a_retransmitted_uplink_is_delivered_once(
    mqtt_url: str, prefix: str, bus: MemoryBus, collector: Collector, listener: MqttGatewayListener
) -> None:
    gateway = _gateway(3, seq_start=41)
    (uplink,) = gateway.uplinks(DAY, DAY + timedelta(hours=1))
    unnumbered = uplink.model_copy(update={"seq": None, "gateway": "GW-0002"})
    topic = uplink_topic(prefix, TENANT, "GW-0001")
    other_topic = uplink_topic(prefix, TENANT, "GW-0002")
    await _publish(mqtt_url, topic, encode_uplink(uplink), encode_uplink(uplink, compress=True))
    await _publish(mqtt_url, other_topic, encode_uplink(unnumbered), encode_uplink(unnumbered))

    await until(lambda: listener.stats.accepted == 4)
    await bus.drain()
    assert len(collector.batches) == 2
    assert len(collector.readings) == 2 * 3 * 2 * 4
    assert collector.msg_ids[0] == f"mqtt-json:{TENANT}:GW-0001:41#0"
    assert collector.msg_ids[1].startswith(f"mqtt-json:{TENANT}:GW-0002:sha256:")


async def test_malformed_uplinks_are_rejected_and_the_listener_keeps_going(
    mqtt_url: str,
    prefix: str,
    bus: MemoryBus,
    collector: Collector,
    listener: MqttGatewayListener,
    rejections: Rejections,
) -> None:
    topic = uplink_topic(prefix, TENANT, "GW-0001")
    garbage = b"{" + b"x" * (100 * 1024)
    wrong_gateway = json.dumps({"v": 1, "gateway": "GW-9999", "meters": []}).encode()
    await _publish(mqtt_url, topic, garbage, wrong_gateway)
    await _publish(mqtt_url, f"{prefix}/bad tenant/gw/GW-0001/up", b"{}")
    (good,) = _gateway(1).uplinks(DAY, DAY + timedelta(hours=1))
    await _publish(mqtt_url, topic, encode_uplink(good))

    await until(lambda: listener.stats.accepted + listener.stats.rejected == 4)  # received counts earlier
    await bus.drain()
    assert (listener.stats.received, listener.stats.accepted, listener.stats.rejected) == (4, 1, 3)
    assert len(collector.readings) == 2 * 4
    too_big, mismatch, bad_topic = rejections.items
    assert (too_big.topic, too_big.size, len(too_big.payload)) == (topic, len(garbage), MAX_REJECTED_PAYLOAD)
    assert too_big.payload == garbage[:MAX_REJECTED_PAYLOAD]
    assert "Invalid JSON" in too_big.reason
    assert "does not match 'GW-0001'" in mismatch.reason
    assert mismatch.payload == wrong_gateway
    assert "tenant id 'bad tenant'" in bad_topic.reason
    assert (too_big.tenant, mismatch.tenant, bad_topic.tenant) == (TENANT, TENANT, None)
    assert too_big.received_at.tzinfo is not None


async def test_same_flow_with_gzip_and_events(
    mqtt_url: str, prefix: str, bus: MemoryBus, collector: Collector, listener: MqttGatewayListener
) -> None:
    # Find a meter and day with events (the simulator draws them from the seed).
    meter = next(
        SimMeter(f"E-{seed}", "electricity", seed)
        for seed in range(10_000)
        if SimMeter(f"E-{seed}", "electricity", seed).events(DAY, DAY + timedelta(days=1))
    )
    gateway = VirtualGateway("GW-0001", TENANT, [meter], seq_start=0)
    async with make_client(mqtt_url) as client:
        await gateway.publish_span(client, prefix, DAY, DAY + timedelta(days=1), gzip=True)

    await until(lambda: listener.stats.accepted == 1)
    await bus.drain()
    events = [event for batch in collector.batches for event in batch.events]
    assert [(e.code, e.ts) for e in events] == [
        (e.code, e.ts) for e in meter.events(DAY, DAY + timedelta(days=1))
    ]
    assert listener.stats.events == len(events) > 0
    assert len(collector.readings) == 2 * 96


def test_a_lone_series_too_big_for_one_message_is_split_by_points() -> None:
    (uplink,) = _gateway(1).uplinks(DAY, DAY + timedelta(days=1))
    batch = uplink_to_batch(TENANT, uplink.gateway, uplink, DAY)
    lone = batch.model_copy(update={"series": batch.series[:1], "events": []})
    parts = split_batch(lone, max_bytes=1_000)
    assert len(parts) > 4
    assert all(len(part) <= 1_000 for part in parts)
    assert [r for p in parts for r in ReadingBatch.from_bytes(p).readings] == lone.readings


async def test_an_uplink_larger_than_a_bus_message_arrives_in_parts(
    mqtt_url: str, prefix: str, bus: MemoryBus, collector: Collector
) -> None:
    listener = MqttGatewayListener(mqtt_url, prefix, bus, max_bus_message_bytes=50_000)
    await listener.start()
    try:
        async with make_client(mqtt_url) as client:
            await _gateway(20).publish_span(client, prefix, DAY, DAY + timedelta(days=1))
        await until(lambda: listener.stats.accepted == 1)
        await bus.drain()
    finally:
        await listener.stop()
    assert len(collector.msg_ids) > 2
    assert f"mqtt-json:{TENANT}:GW-0001:1#1" in collector.msg_ids
    assert len(collector.readings) == 20 * 2 * 96


def test_large_batches_are_split_for_the_bus() -> None:
    gateway = _gateway(50)
    (uplink,) = gateway.uplinks(DAY, DAY + timedelta(days=1))
    batch = uplink_to_batch(TENANT, uplink.gateway, uplink, DAY)
    assert len(batch.to_bytes()) > 300_000

    parts = split_batch(batch, max_bytes=100_000)
    assert len(parts) > 3
    assert all(len(part) <= 100_000 for part in parts)
    rebuilt = [ReadingBatch.from_bytes(part) for part in parts]
    assert [r for b in rebuilt for r in b.readings] == batch.readings
    assert [e for b in rebuilt for e in b.events] == batch.events
    assert split_batch(batch, max_bytes=100_000) == parts  # deterministic, so part ids are stable
    assert split_batch(batch, max_bytes=10**9) == [batch.to_bytes()]


async def test_listener_reconnects_after_the_broker_restarts(
    prefix: str, bus: MemoryBus, collector: Collector, rejections: Rejections
) -> None:
    broker = EmbeddedBroker("127.0.0.1", 0)
    await broker.start()
    listener = MqttGatewayListener(
        broker.url, prefix, bus, rejections, reconnect_min_s=0.05, reconnect_max_s=0.2
    )
    await listener.start()
    try:
        await broker.stop()
        await until(lambda: not listener.connected)
        await broker.start()
        await until(lambda: listener.connected)
        assert listener.connects == 2

        (uplink,) = _gateway(1).uplinks(DAY, DAY + timedelta(hours=1))
        await _publish(broker.url, uplink_topic(prefix, TENANT, "GW-0001"), encode_uplink(uplink))
        await until(lambda: listener.stats.accepted == 1)
    finally:
        await listener.stop()
        await broker.stop()


async def test_start_fails_fast_when_no_broker_listens(free_port: int, bus: MemoryBus) -> None:
    listener = MqttGatewayListener(f"mqtt://127.0.0.1:{free_port}", "openami", bus, connect_timeout_s=0.5)
    with pytest.raises(ConnectError, match=rf"cannot subscribe at mqtt://127\.0\.0\.1:{free_port}: "):
        await listener.start()
    assert not listener.connected


async def test_a_refused_subscription_is_reported(free_port: int, bus: MemoryBus) -> None:
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{free_port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {"acl": {"anonymous": ["x/#"]}},
        },
    }
    broker = Broker(config)
    await broker.start()
    try:
        url = f"mqtt://127.0.0.1:{free_port}"
        listener = MqttGatewayListener(url, "openami", bus, connect_timeout_s=0.5, reconnect_min_s=0.05)
        with pytest.raises(ConnectError, match=r"the broker refused 'openami/\+/gw/\+/up' \(check its ACL\)"):
            await listener.start()
    finally:
        await broker.shutdown()


class SlowBus(MemoryBus):
    """A bus whose publish takes a while, to catch the listener in the middle of a message."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing = asyncio.Event()
        self.completed = 0

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> None:
        self.publishing.set()
        await asyncio.sleep(0.3)
        await super().publish(subject, data, headers=headers, msg_id=msg_id)
        self.completed += 1


async def test_stop_finishes_the_message_being_handled(embedded_url: str, prefix: str) -> None:
    bus = SlowBus()
    await bus.start()
    listener = MqttGatewayListener(embedded_url, prefix, bus)
    await listener.start()
    (uplink,) = _gateway(1).uplinks(DAY, DAY + timedelta(hours=1))
    await _publish(embedded_url, uplink_topic(prefix, TENANT, "GW-0001"), encode_uplink(uplink))
    async with asyncio.timeout(5):
        await bus.publishing.wait()

    await listener.stop()
    assert bus.completed == 1
    assert listener.stats.accepted == 1
    await bus.close()


async def test_failing_dead_letter_handler_and_bus_do_not_stop_the_listener(
    embedded_url: str, prefix: str
) -> None:
    bus = MemoryBus()
    await bus.start()
    calls: list[str] = []

    async def broken_dead_letter_store(rejected: RejectedMessage) -> None:
        calls.append(rejected.reason)
        raise RuntimeError("dead-letter table is gone")

    listener = MqttGatewayListener(embedded_url, prefix, bus, broken_dead_letter_store)
    await listener.start()
    try:
        topic = uplink_topic(prefix, TENANT, "GW-0001")
        await _publish(embedded_url, topic, b"not json")
        await until(lambda: listener.stats.rejected == 1)
        await bus.close()  # publishing now raises BusError
        (uplink,) = _gateway(1).uplinks(DAY, DAY + timedelta(hours=1))
        await _publish(embedded_url, topic, encode_uplink(uplink))
        await until(lambda: listener.stats.rejected == 2)
        assert listener.connected
        assert calls[1] == "bus publish failed: the bus is closed"
    finally:
        await listener.stop()


async def test_run_live_publishes_each_interval_as_it_completes(
    mqtt_url: str, prefix: str, bus: MemoryBus, collector: Collector, listener: MqttGatewayListener
) -> None:
    gateway = _gateway(2)
    async with make_client(mqtt_url) as client:
        sent = await gateway.run_live(client, prefix, start=DAY, time_factor=9000, intervals=3)
    assert sent == 3
    await until(lambda: listener.stats.accepted == 3)
    await bus.drain()
    ends = sorted({r.ts for r in collector.readings})
    assert ends == [DAY + timedelta(minutes=15 * k) for k in (1, 2, 3)]
