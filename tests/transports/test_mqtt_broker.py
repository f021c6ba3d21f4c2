"""The embedded amqtt broker and the MQTT URL helpers, against real loopback sockets (and Mosquitto)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from openami.transports.errors import PortInUseError, TransportError
from openami.transports.mqtt import MqttEndpoint, make_client, parse_mqtt_url
from openami.transports.mqtt_broker import EmbeddedBroker


async def _round_trip(url: str, topic_root: str) -> None:
    """Subscribe, publish QoS 1 from a second client, and expect exactly that message back."""
    async with make_client(url) as subscriber, make_client(url) as publisher:
        await subscriber.subscribe(f"{topic_root}/#", qos=1)
        await publisher.publish(f"{topic_root}/meter/1", b"\x00payload\xff", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(subscriber.messages))
    assert message.topic.value == f"{topic_root}/meter/1"
    assert message.payload == b"\x00payload\xff"
    assert message.qos == 1


async def test_embedded_broker_round_trip(free_port: int) -> None:
    async with EmbeddedBroker("127.0.0.1", free_port) as broker:
        assert broker.port == free_port
        assert broker.url == f"mqtt://127.0.0.1:{free_port}"
        await _round_trip(broker.url, "t")
    assert not broker.running


async def test_port_zero_picks_a_free_port() -> None:
    broker = EmbeddedBroker("127.0.0.1", 0)
    await broker.start()
    try:
        assert broker.port > 0
        with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
            pass
        await _round_trip(broker.url, "zero")
    finally:
        await broker.stop()


async def test_taken_port_gives_port_in_use_error(free_port: int) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port))
        squatter.listen()
        broker = EmbeddedBroker("127.0.0.1", free_port)
        with pytest.raises(PortInUseError) as caught:
            await broker.start()
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{free_port}: address already in use (set OPENAMI_MQTT_EMBEDDED_PORT)"
    )
    assert isinstance(caught.value, TransportError)
    assert not broker.running


async def test_second_broker_on_the_same_port_is_refused(free_port: int) -> None:
    async with EmbeddedBroker("127.0.0.1", free_port):
        with pytest.raises(PortInUseError, match="address already in use"):
            await EmbeddedBroker("127.0.0.1", free_port).start()


async def test_restarted_broker_reopens_the_same_port() -> None:
    broker = EmbeddedBroker("127.0.0.1", 0)
    await broker.start()
    port = broker.port
    await broker.stop()
    await broker.start()
    try:
        assert broker.port == port
        await _round_trip(broker.url, "again")
    finally:
        await broker.stop()


def test_embedded_broker_refuses_non_loopback_hosts() -> None:
    with pytest.raises(TransportError, match="only listens on loopback"):
        EmbeddedBroker("0.0.0.0", 1883)


@pytest.mark.mosquitto
async def test_round_trip_against_mosquitto(mosquitto_url: str) -> None:
    await _round_trip(mosquitto_url, f"openami-test/{uuid.uuid4().hex}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", MqttEndpoint("127.0.0.1", 1883, None, None, False)),
        ("mqtt://broker:11883", MqttEndpoint("broker", 11883, None, None, False)),
        ("mqtts://hes:s%40cret@broker.example", MqttEndpoint("broker.example", 8883, "hes", "s@cret", True)),
        ("mqtt://[::1]:1884", MqttEndpoint("::1", 1884, None, None, False)),
    ],
)
def test_parse_mqtt_url(url: str, expected: MqttEndpoint) -> None:
    assert parse_mqtt_url(url) == expected
    host, port, _, _, tls = parse_mqtt_url(url)
    assert (host, port, tls) == (expected.host, expected.port, expected.tls)


@pytest.mark.parametrize("url", ["embedded", "nats://127.0.0.1:4222", "mqtt://", "http://broker"])
def test_parse_mqtt_url_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="MQTT URL"):
        parse_mqtt_url(url)


def test_display_hides_credentials() -> None:
    assert parse_mqtt_url("mqtts://hes:secret@broker:8883").display == "mqtts://broker:8883"


async def test_persistent_session_needs_a_client_id() -> None:
    with pytest.raises(ValueError, match="client_id"):
        make_client("mqtt://127.0.0.1", persistent_session=True)
    assert make_client("mqtt://127.0.0.1", client_id="hes-1", persistent_session=True).identifier == "hes-1"
