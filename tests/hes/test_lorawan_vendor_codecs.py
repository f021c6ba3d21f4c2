"""A vendor codec on the real path: a ChirpStack v4 uplink event (integration JSON) over the embedded MQTT
broker -> ChirpStackListener (codec chosen by the device profile) -> bus -> readings and events in SQLite.

The payload is Kamstrup's midnight-log example and its "Integration Guide" profile example (see
tests/protocols/lorawan/test_vendor_codecs.py): the profile's earlier register values must land at their
own hours, the info code's tamper bit as an event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from openami.app import Platform
from openami.hes.lorawan import ChirpStackListener
from openami.store.schema import channel, comm_device, event, meter, register_read, tenant
from openami.transports.mqtt import make_client
from tests.hes.support import Rejections, until
from tests.protocols.lorawan.events import uplink
from tests.protocols.lorawan.test_vendor_codecs import (
    KAMSTRUP_GUIDE,
    KAMSTRUP_GUIDE_VOLUMES,
    KAMSTRUP_MIDNIGHT,
)

pytestmark = pytest.mark.timeout(60)

FLOWIQ = "70b3d52dd3000101"
PROFILE = "Kamstrup flowIQ 2200"
T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def _register(platform: Platform) -> None:
    with platform.engine.begin() as conn:
        tenant_id = conn.execute(
            insert(tenant).values(slug="acme", name="Acme").returning(tenant.c.id)
        ).scalar_one()
        device_id = conn.execute(
            insert(comm_device)
            .values(tenant_id=tenant_id, ident=FLOWIQ, kind="modem", protocol="lorawan", model="")
            .returning(comm_device.c.id)
        ).scalar_one()
        conn.execute(
            insert(meter).values(
                tenant_id=tenant_id, serial="K-300", medium="water", protocol="lorawan",
                comm_device_id=device_id,
            )
        )  # fmt: skip


@pytest.fixture
async def listener(platform: Platform) -> AsyncIterator[tuple[ChirpStackListener, Rejections, str]]:
    _register(platform)
    rejections = Rejections()
    prefix = f"cs-{id(platform):x}"
    running = ChirpStackListener(
        platform.mqtt_url,
        platform.bus,
        platform.engine,
        platform.vault,
        topic_prefix=prefix,
        profiles={PROFILE: "kamstrup-lorawan"},  # what lorawan_profiles in the settings would say
        on_rejected=rejections,
        reconnect_min_s=0.05,
    )
    await running.start()
    try:
        yield running, rejections, prefix
    finally:
        await running.stop()


async def test_kamstrup_uplinks_become_dated_readings_and_events(
    platform: Platform, listener: tuple[ChirpStackListener, Rejections, str]
) -> None:
    running, rejections, prefix = listener
    async with make_client(platform.mqtt_url) as client:
        for f_cnt, payload in ((1, KAMSTRUP_GUIDE), (2, KAMSTRUP_MIDNIGHT)):
            topic, body = uplink(FLOWIQ, PROFILE, payload, f_cnt=f_cnt, time=T0, f_port=1)
            await client.publish(f"{prefix}/{topic}", body, qos=1)
    await until(lambda: running.stats.uplinks == 2)
    await platform.settle()
    assert rejections.items == [] and running.stats.rejected == 0
    with platform.engine.connect() as conn:
        volumes = conn.execute(
            select(register_read.c.ts, register_read.c.value)
            .join(channel, register_read.c.channel_id == channel.c.id)
            .where(channel.c.code == "volume")
            .order_by(register_read.c.ts)
        ).all()
        events = conn.execute(select(event.c.code, event.c.severity, event.c.ts)).all()
    guide_start = datetime(2023, 8, 29, 12, 0, tzinfo=UTC)
    expected = [(guide_start - timedelta(hours=h), v) for h, v in enumerate(KAMSTRUP_GUIDE_VOLUMES)]
    expected.append((datetime(2023, 10, 19, tzinfo=UTC), 0.236))
    got = sorted((ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts, value) for ts, value in volumes)
    assert [ts for ts, _ in got] == sorted(ts for ts, _ in expected)
    assert [v for _, v in got] == pytest.approx([v for _, v in sorted(expected)])
    assert [(code, severity) for code, severity, _ in events] == [("tamper", "alarm")]
