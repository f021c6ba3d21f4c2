"""ChirpStack v4 -> MQTT (embedded broker and Mosquitto) -> the LoRaWAN listener -> bus -> readings store,
with the integration's real JSON events; downlinks published as ChirpStack's command topic expects."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select

from openami.app import Platform
from openami.config import Settings
from openami.hes.lorawan import ChirpStackListener
from openami.protocols.lorawan.codecs import elvaco
from openami.protocols.wmbus.encode import encode_telegram, make_address, number_record
from openami.protocols.wmbus.link import parse_link
from openami.store.schema import channel, comm_device, meter, register_read, tenant
from openami.transports.mqtt import make_client
from tests.hes.support import Rejections, platform_settings, until
from tests.protocols.lorawan.events import APPLICATION, join, status, uplink
from tests.protocols.lorawan.test_codecs import STANDARD

pytestmark = pytest.mark.timeout(60)

HEAT = "70b3d52dd3000001"
WATER = "70b3d52dd3000002"
STRANGER = "70b3d52dd30000ff"
OMS_KEY = bytes(range(16))
OMS_METER = make_address("DME", "40302010", 0x1B, 0x07)
T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def broker_url(request: pytest.FixtureRequest, platform: Platform) -> str:
    return platform.mqtt_url if request.param == "embedded" else str(request.getfixturevalue("mosquitto_url"))


def _register(platform: Platform) -> None:
    with platform.engine.begin() as conn:
        tenant_id = conn.execute(
            insert(tenant).values(slug="acme", name="Acme").returning(tenant.c.id)
        ).scalar_one()
        conn.execute(insert(tenant).values(slug="other", name="Other"))
        ids = {}
        for eui, model, address in (
            (HEAT, "elvaco-cmi41xx", ""),
            (WATER, "", f"chirpstack://{APPLICATION}"),  # codec from the device profile (settings)
        ):
            ids[eui] = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=eui,
                    kind="modem",
                    protocol="lorawan",
                    model=model,
                    address=address,
                )
                .returning(comm_device.c.id)
            ).scalar_one()
        conn.execute(
            insert(meter),
            [
                {
                    "tenant_id": tenant_id,
                    "serial": "H-100",
                    "medium": "heat",
                    "protocol": "lorawan",
                    "comm_device_id": ids[HEAT],
                },
                {
                    "tenant_id": tenant_id,
                    "serial": "W-200",
                    "medium": "water",
                    "protocol": "lorawan",
                    "comm_device_id": ids[WATER],
                },
            ],
        )
        water_id = conn.execute(select(meter.c.id).where(meter.c.serial == "W-200")).scalar_one()
    assert platform.vault is not None
    platform.vault.store(
        tenant_id, system_title=OMS_METER.to_bytes(), meter_id=water_id, kind="ek", secret=OMS_KEY
    )


def _stored(platform: Platform, serial: str, code: str) -> list[tuple[datetime, float]]:
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(register_read.c.ts, register_read.c.value)
            .join(channel, register_read.c.channel_id == channel.c.id)
            .join(meter, channel.c.meter_id == meter.c.id)
            .where(meter.c.serial == serial, channel.c.code == code)
            .order_by(register_read.c.ts)
        ).all()
    return [(ts, value) for ts, value in rows]


@pytest.fixture
async def listener(
    platform: Platform, broker_url: str
) -> AsyncIterator[tuple[ChirpStackListener, Rejections]]:
    _register(platform)
    rejections = Rejections()
    prefix = f"cs-{id(platform):x}"
    running = ChirpStackListener(
        broker_url,
        platform.bus,
        platform.engine,
        platform.vault,
        topic_prefix=prefix,
        profiles={"DME HYDRUS OMS": "oms"},
        on_rejected=rejections,
        reconnect_min_s=0.05,
    )
    await running.start()
    running.test_prefix = prefix  # type: ignore[attr-defined]
    try:
        yield running, rejections
    finally:
        await running.stop()


async def _publish(url: str, prefix: str, *events: tuple[str, bytes]) -> None:
    async with make_client(url) as client:
        for topic, payload in events:
            await client.publish(f"{prefix}/{topic}" if prefix else topic, payload, qos=1)


def _oms_payload() -> bytes:
    frame = encode_telegram(
        OMS_METER,
        number_record("volume", 123_456, exponent=-3),
        security_mode=5,
        key=OMS_KEY,
        access_number=7,
    )
    return parse_link(frame).body


async def test_uplinks_status_and_joins_are_stored(
    platform: Platform, broker_url: str, listener: tuple[ChirpStackListener, Rejections]
) -> None:
    running, rejections = listener
    prefix = running.test_prefix  # type: ignore[attr-defined]
    oms_tags = {"oms_address": OMS_METER.to_bytes().hex()}
    await _publish(
        broker_url,
        prefix,
        join(HEAT, "Elvaco CMi4110", time=T0),
        uplink(HEAT, "Elvaco CMi4110", STANDARD, f_cnt=1, time=T0),
        uplink(HEAT, "Elvaco CMi4110", STANDARD, f_cnt=4, time=T0 + timedelta(hours=1)),  # 2 and 3 lost
        status(HEAT, "Elvaco CMi4110", battery=91.0, margin=8, time=T0),
        uplink(WATER, "DME HYDRUS OMS", _oms_payload(), f_cnt=10, time=T0, tags=oms_tags),
    )
    await until(lambda: running.stats.received == 5)
    await platform.settle()
    assert rejections.items == [] and running.stats.rejected == 0
    energy = _stored(platform, "H-100", "energy")
    assert [value for _, value in energy] == [12_345_000, 12_345_000] and energy[0][0] == T0
    assert _stored(platform, "H-100", "flow_temperature")[0][1] == pytest.approx(81.0)
    assert _stored(platform, "H-100", "lorawan_rssi")[0][1] == -88.0
    assert _stored(platform, "H-100", "battery_level") == [(T0, 91.0)]
    assert _stored(platform, "W-200", "volume") == [(T0, 123.456)]
    assert (running.stats.uplinks, running.stats.joins, running.stats.statuses) == (3, 1, 1)
    assert running.stats.missed_frames == 2


async def test_a_redelivered_event_is_stored_once(
    platform: Platform, broker_url: str, listener: tuple[ChirpStackListener, Rejections]
) -> None:
    running, _ = listener
    event = uplink(HEAT, "Elvaco CMi4110", STANDARD, f_cnt=1, time=T0)
    await _publish(broker_url, running.test_prefix, event, event)  # type: ignore[attr-defined]
    await until(lambda: running.stats.received == 2)
    await platform.settle()
    assert len(_stored(platform, "H-100", "energy")) == 1


async def test_unusable_events_are_dead_letters(
    platform: Platform, broker_url: str, listener: tuple[ChirpStackListener, Rejections]
) -> None:
    running, rejections = listener
    await _publish(
        broker_url,
        running.test_prefix,  # type: ignore[attr-defined]
        uplink(STRANGER, "x", STANDARD, f_cnt=1, time=T0),  # not registered
        uplink(HEAT, "Elvaco CMi4110", b"\x99\x01", f_cnt=2, time=T0),  # not an Elvaco format
        uplink(WATER, "unknown profile", _oms_payload(), f_cnt=3, time=T0),  # no codec for the profile
        (f"application/{APPLICATION}/device/{HEAT}/event/up", b"{not json"),
    )
    await until(lambda: running.stats.rejected == 4)
    reasons = [r.reason for r in rejections.items]
    assert "not registered" in reasons[0]
    assert "Elvaco message format" in reasons[1]
    assert "lorawan_profiles" in reasons[2]
    assert "not JSON" in reasons[3]
    assert rejections.items[1].tenant == "acme" and rejections.items[0].tenant is None


async def test_downlinks_reach_chirpstack_s_command_topic(
    platform: Platform, broker_url: str, listener: tuple[ChirpStackListener, Rejections]
) -> None:
    running, _ = listener
    prefix = running.test_prefix  # type: ignore[attr-defined]
    received: list[tuple[str, dict[str, object]]] = []
    async with make_client(broker_url) as client:
        await client.subscribe(f"{prefix}/application/+/device/+/command/down", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                received.append((message.topic.value, json.loads(message.payload)))  # type: ignore[arg-type]

        task = asyncio.create_task(collect())
        try:
            topic = await running.send_downlink("acme", WATER, elvaco.DOWNLINK_PORT, elvaco.shift_clock(-60))
            await until(lambda: len(received) == 1)
        finally:
            task.cancel()
    assert received[0][0] == topic == f"{prefix}/application/{APPLICATION}/device/{WATER}/command/down"
    assert received[0][1]["fPort"] == 2 and base64.b64decode(received[0][1]["data"]) == elvaco.shift_clock(
        -60
    )  # type: ignore[arg-type]
    with pytest.raises(PermissionError):
        await running.send_downlink("other", WATER, 2, b"\x00")
    with pytest.raises(LookupError):
        await running.send_downlink("acme", HEAT, 2, b"\x00")  # no uplink seen yet, no address


async def test_the_platform_runs_the_listener_from_its_settings(tmp_path: Path) -> None:
    settings = platform_settings(
        tmp_path,
        lorawan_mqtt_url="platform",
        lorawan_profiles={"DME HYDRUS OMS": "oms"},
    )
    platform = Platform.build(settings)
    await platform.start()
    try:
        _register(platform)
        assert platform.lorawan is not None and platform.health()["lorawan"] == "ok"
        await _publish(platform.mqtt_url, "", uplink(HEAT, "Elvaco CMi4110", STANDARD, f_cnt=1, time=T0))
        lorawan = platform.lorawan
        await until(lambda: lorawan.stats.uplinks == 1)
        await platform.settle()
        assert _stored(platform, "H-100", "energy") == [(T0, 12_345_000)]
    finally:
        await platform.stop()


def test_lorawan_settings_are_checked_at_load() -> None:
    with pytest.raises(ValidationError, match="no codec"):
        Settings(lorawan_profiles={"X": "no-such-codec"})
    with pytest.raises(ValidationError, match="lorawan_mqtt_url"):
        Settings(lorawan_mqtt_url="http://chirpstack")
