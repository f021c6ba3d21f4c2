"""End to end: simulated meters -> gateway -> MQTT -> listener -> bus -> ingest -> store -> REST API.

Runs twice: on the embedded defaults (SQLite, in-process bus, amqtt on a free port) and on the production
backends (PostgreSQL, NATS JetStream, Mosquitto), which must not skip in CI.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openami.app import Platform
from openami.config import Settings
from openami.demo.runner import DEMO_ADMIN, DEMO_PASSWORD, prepare
from openami.simulator.gateway import SimMeter, VirtualGateway
from openami.transports.mqtt import make_client
from openami.web.server import build_web_app
from tests.conftest import postgres_schema_url, service_url

DAY_START = datetime(2026, 10, 24, 0, 0, tzinfo=UTC)  # the day before the EU DST change
DAY_END = DAY_START + timedelta(days=1)


@pytest.fixture(params=["embedded", pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.nats])])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    prefix = f"e2e{uuid.uuid4().hex[:8]}"  # keeps parallel runs on a shared broker apart
    if request.param == "embedded":
        yield Settings(
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'e2e.sqlite3'}",
            bus_url="memory",
            mqtt_url="embedded",
            mqtt_embedded_port=0,
            mqtt_topic_prefix=prefix,
            ingest_flush_ms=20,
            dlms_push_port=0,
            dlms_default_tenant="demo",
        )
        return
    nats, mqtt = service_url("nats"), service_url("mosquitto")
    with postgres_schema_url() as database:
        yield Settings(
            data_dir=tmp_path,
            database_url=database,
            bus_url=nats,
            bus_namespace=prefix,
            mqtt_url=mqtt,
            mqtt_topic_prefix=prefix,
            ingest_flush_ms=20,
            dlms_push_port=0,
            dlms_default_tenant="demo",
        )


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    running = Platform.build(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        if settings.bus_url.startswith("nats"):
            await _delete_streams(settings)


async def _delete_streams(settings: Settings) -> None:
    import nats

    client = await nats.connect(settings.bus_url)
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            if info.config.name.startswith(f"OPENAMI_{settings.bus_namespace.upper()}"):
                await js.delete_stream(info.config.name)
    finally:
        await client.close()


async def _publish_day(platform: Platform, gateway: VirtualGateway) -> int:
    assert platform.listener is not None
    before = platform.listener.stats.accepted + platform.listener.stats.rejected
    async with make_client(platform.mqtt_url) as client:
        sent = await gateway.publish_span(client, platform.settings.mqtt_topic_prefix, DAY_START, DAY_END)
    deadline = time.monotonic() + 30
    while platform.listener.stats.accepted + platform.listener.stats.rejected < before + sent:
        assert time.monotonic() < deadline, "listener did not receive every uplink"
        await asyncio.sleep(0.05)
    await platform.settle(timeout_s=30)
    return sent


async def test_simulated_meter_data_comes_back_out_of_the_api(platform: Platform) -> None:
    await asyncio.to_thread(prepare, platform)
    meters = [SimMeter("E-000001", "electricity", seed=1), SimMeter("W-000001", "water", seed=2)]
    gateway = VirtualGateway("GW-S01", "demo", meters, seq_start=1)
    assert await _publish_day(platform, gateway) >= 1
    assert platform.ingest.totals.inserted == 2 * 2 * 96  # 2 meters x (register + interval) x 96 quarters

    def api_check() -> list[float]:
        with TestClient(build_web_app(platform)) as api:
            assert api.get("/health").json()["status"] == "ok"
            landing = api.get("/")
            assert landing.headers["content-type"].startswith("text/html")
            assert "OpenAMI" in landing.text
            assert ">ok<" in landing.text
            metrics = api.get("/metrics").text
            assert 'openami_readings_ingested_total{kind="interval",outcome="inserted"} 192.0' in metrics
            assert 'openami_mqtt_uplinks_total{outcome="rejected"} 0.0' in metrics
            assert 'openami_bus_messages_total{stage="dead"} 0.0' in metrics
            login = api.post(
                "/auth/login", json={"tenant": "demo", "username": DEMO_ADMIN, "password": DEMO_PASSWORD}
            )
            assert login.status_code == 200, login.text
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            found = api.get("/meters", params={"serial": "E-000001"}, headers=auth).json()["items"]
            assert [m["serial"] for m in found] == ["E-000001"]
            channels = api.get(f"/meters/{found[0]['id']}/channels", headers=auth).json()["items"]
            interval = next(c for c in channels if c["code"] == "1-0:1.29.0")
            assert (interval["kind"], interval["unit"]) == ("interval", "kWh")
            values: list[float] = []
            cursor = None
            while True:
                # interval values are stamped at their end: the day's last one is at DAY_END itself
                end = DAY_END + timedelta(seconds=1)
                params = {"start": DAY_START.isoformat(), "end": end.isoformat(), "limit": 40}
                if cursor:
                    params["cursor"] = cursor
                page = api.get(f"/channels/{interval['id']}/readings", params=params, headers=auth).json()
                values += [item["value"] for item in page["items"]]
                cursor = page.get("next_cursor")
                if not cursor:
                    return values

    values = await asyncio.to_thread(api_check)
    expected = next(s for s in meters[0].series(DAY_START, DAY_END) if s.channel == "1-0:1.29.0")
    assert values == pytest.approx(expected.values)


async def test_retransmitted_day_is_stored_once(platform: Platform) -> None:
    """A gateway resending its buffer (new sequence numbers, same data) changes nothing in the store."""
    await asyncio.to_thread(prepare, platform)
    meters = [SimMeter("G-000001", "gas", seed=3)]
    await _publish_day(platform, VirtualGateway("GW-S02", "demo", meters, seq_start=100))
    inserted = platform.ingest.totals.inserted
    await _publish_day(platform, VirtualGateway("GW-S02", "demo", meters, seq_start=5000))
    assert platform.ingest.totals.inserted == inserted == 2 * 96
    assert platform.ingest.totals.unchanged == 2 * 96


async def test_dlms_push_from_a_real_meter_capture_is_stored(platform: Platform) -> None:
    """An Iskra AM550 push (a real capture) over TCP reaches the store as OBIS-coded register readings."""
    from sqlalchemy import func, select

    from openami.protocols.dlms.stream import parse_hex_text
    from openami.store import schema
    from openami.store.repositories import meters
    from tests.conftest import corpora_dir

    layout = await asyncio.to_thread(prepare, platform)
    capture = corpora_dir() / "dlms" / "scs" / "iskra_am550__UNENCRYPTED_VALID_DATA.hex"
    push = parse_hex_text(capture.read_text())

    def commission() -> None:
        with platform.engine.begin() as conn:
            meters.create(
                conn,
                layout.tenant_id,
                {"serial": "ISK1030775213859", "medium": "electricity", "protocol": "dlms"},
            )

    await asyncio.to_thread(commission)
    assert platform.dlms_push is not None
    _, writer = await asyncio.open_connection("127.0.0.1", platform.dlms_push.port)
    writer.write(push)
    await writer.drain()
    writer.close()
    deadline = time.monotonic() + 30
    while platform.dlms_push.stats.accepted + platform.dlms_push.stats.rejected < 1:
        assert time.monotonic() < deadline, "push never handled"
        await asyncio.sleep(0.05)
    await platform.settle(timeout_s=30)
    assert platform.dlms_push.stats.rejected == 0

    def stored() -> dict[str, int]:
        with platform.engine.connect() as conn:
            rows = conn.execute(
                select(schema.channel.c.code, func.count())
                .join(schema.register_read, schema.register_read.c.channel_id == schema.channel.c.id)
                .join(schema.meter, schema.meter.c.id == schema.channel.c.meter_id)
                .where(schema.meter.c.serial == "ISK1030775213859")
                .group_by(schema.channel.c.code)
            ).all()
        return {code: count for code, count in rows}

    channels = await asyncio.to_thread(stored)
    assert channels.get("1-1:1.8.0") == 1  # active energy import, one push = one reading
    assert len(channels) >= 5
