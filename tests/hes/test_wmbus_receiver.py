"""End to end over real sockets: simulated meters -> simulated receiver stick on TCP -> the head-end's
receiver input -> key vault -> bus -> readings store; and simulated gateway -> MQTT -> the listener."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select

from openami.app import Platform
from openami.config import Settings
from openami.hes.wmbus_ingest import WmbusIngest
from openami.hes.wmbus_receiver import WmbusReceiverInput
from openami.simulator.wmbus_meter import SimulatedReceiver, SimulatedWmbusGateway, SimulatedWmbusMeter
from openami.store.schema import channel, meter, register_read, tenant
from openami.transports.mqtt import make_client
from tests.hes.support import Rejections, platform_settings, until

pytestmark = pytest.mark.timeout(60)

WATER_KEY = bytes.fromhex("11" * 16)
HEAT_KEY = bytes.fromhex("22" * 16)
FAST = {"interval_s": 0.05, "jitter_s": 0.02}


def _register(
    platform: Platform, slug: str, meters: dict[str, tuple[str, SimulatedWmbusMeter, bytes]]
) -> None:
    """Tenant ``slug`` with one meter per serial; each meter's key in the vault under its link address."""
    with platform.engine.begin() as conn:
        tenant_id = conn.execute(
            insert(tenant).values(slug=slug, name=slug.title()).returning(tenant.c.id)
        ).scalar_one()
        ids = {
            serial: conn.execute(
                insert(meter)
                .values(tenant_id=tenant_id, serial=serial, medium=medium, protocol="wmbus")
                .returning(meter.c.id)
            ).scalar_one()
            for serial, (medium, _, _) in meters.items()
        }
    assert platform.vault is not None
    for serial, (_, simulated, key) in meters.items():
        platform.vault.store(
            tenant_id, system_title=simulated.link_address, meter_id=ids[serial], kind="ek", secret=key
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


def _within(values: list[tuple[datetime, float]], low: float, high: float) -> None:
    """Stored values lie between the model's register at the start and the end, and never fall."""
    numbers = [value for _, value in values]
    assert numbers == sorted(numbers)
    assert all(low - 1e-9 <= value <= high + 1e-9 for value in numbers), (low, numbers, high)


async def test_meters_through_a_tcp_receiver_into_the_store(platform: Platform) -> None:
    water = SimulatedWmbusMeter("11111111", "water", key=WATER_KEY, **FAST)  # type: ignore[arg-type]
    heat = SimulatedWmbusMeter("22222222", "heat", key=HEAT_KEY, security_mode=7, **FAST)  # type: ignore[arg-type]
    neighbour = SimulatedWmbusMeter("33333333", "water", key=bytes(16), **FAST)  # type: ignore[arg-type]
    _register(platform, "acme", {"W-1": ("water", water, WATER_KEY), "H-1": ("heat", heat, HEAT_KEY)})
    rejections = Rejections()
    started = datetime.now(UTC)
    async with SimulatedReceiver([water, heat, neighbour]) as stick:
        port = await stick.serve_tcp()
        receiver = WmbusReceiverInput(
            f"wmbus+tcp://127.0.0.1:{port}",
            "acme",
            platform.bus,
            WmbusIngest(platform.vault),
            on_rejected=rejections,
            reconnect_min_s=0.02,
            reconnect_max_s=0.1,
        )
        await receiver.start()
        try:
            await receiver.wait_connected(5)
            await until(lambda: receiver.stats.telegrams >= 6 and receiver.stats.rejected >= 1)
            stick.drop_connections()  # ser2net restarts: the input reconnects and carries on
            before = receiver.stats.telegrams
            await until(
                lambda: receiver.receiver.stats.connects >= 2 and receiver.stats.telegrams >= before + 4
            )
        finally:
            await receiver.stop()
        ended = datetime.now(UTC)
    assert not receiver.running and not receiver.connected
    await platform.settle()

    volumes = _stored(platform, "W-1", "volume")
    energies = _stored(platform, "H-1", "energy")
    assert len(volumes) >= 2 and len(energies) >= 2
    _within(volumes, water.register(started)[0] / 1000, water.register(ended)[0] / 1000)  # litres -> m3
    _within(energies, heat.register(started)[0], heat.register(ended)[0])  # Wh
    assert _stored(platform, "H-1", "flow_temperature")

    stats = receiver.stats
    assert stats.lines == stats.telegrams + stats.rejected
    assert stats.readings >= len(volumes) + len(energies)
    assert rejections.items, "the neighbour's telegrams have no key here"
    assert {r.topic for r in rejections.items} == {f"wmbus+tcp://127.0.0.1:{port}"}
    assert {r.tenant for r in rejections.items} == {"acme"}
    assert all(r.reason.startswith("no key stored for wM-Bus address") for r in rejections.items)
    assert neighbour.link_address.hex().upper() in rejections.items[0].reason


async def test_dead_letters_are_rate_limited(platform: Platform) -> None:
    async with SimulatedReceiver() as stick:
        port = await stick.serve_tcp()
        rejections = Rejections()
        receiver = WmbusReceiverInput(
            f"wmbus+tcp://127.0.0.1:{port}",
            "acme",
            platform.bus,
            WmbusIngest(platform.vault),
            on_rejected=rejections,
            dead_letters_per_minute=3,
        )
        await receiver.start()
        try:
            await receiver.wait_connected(5)
            for number in range(10):
                stick.write_line(f"noise {number}")
            await until(lambda: receiver.stats.rejected == 10)
        finally:
            await receiver.stop()
    assert len(rejections.items) == 3 and receiver.stats.dead_letters_suppressed == 7
    assert rejections.items[0].payload == b"noise 0"


async def test_gateway_forwards_over_mqtt_into_the_store(platform: Platform) -> None:
    water = SimulatedWmbusMeter("44444444", "water", key=WATER_KEY, **FAST)  # type: ignore[arg-type]
    _register(platform, "acme", {"W-4": ("water", water, WATER_KEY)})
    assert platform.listener is not None
    gateway = SimulatedWmbusGateway(
        "GW-9", "acme", [water], line_format="rtl-wmbus", max_lines=3, flush_s=0.2
    )
    started = datetime.now(UTC)
    async with make_client(platform.mqtt_url, client_id="gw-9-sim") as client:
        assert await gateway.run(client, platform.settings.mqtt_topic_prefix, messages=2) == 2
    ended = datetime.now(UTC)
    listener = platform.listener
    await until(lambda: listener.stats.accepted >= 2, 20)
    await platform.settle()
    volumes = _stored(platform, "W-4", "volume")
    assert volumes
    _within(volumes, water.register(started)[0] / 1000, water.register(ended)[0] / 1000)
    assert listener.stats.rejected == 0


async def test_receivers_named_in_the_settings_run_with_the_platform(tmp_path: Path) -> None:
    water = SimulatedWmbusMeter("55555555", "water", key=WATER_KEY, **FAST)  # type: ignore[arg-type]
    async with SimulatedReceiver([water]) as stick:
        port = await stick.serve_tcp()
        settings = platform_settings(
            tmp_path,
            wmbus_receivers={"acme": [f"wmbus+tcp://127.0.0.1:{port}"]},
        )
        platform = Platform.build(settings)
        await platform.start()
        try:
            _register(platform, "acme", {"W-5": ("water", water, WATER_KEY)})
            (receiver,) = platform.wmbus_receivers
            await receiver.wait_connected(5)
            await until(lambda: receiver.stats.telegrams >= 2)
            assert platform.health()["wmbus_receivers"] == "ok"
            await platform.settle()
            assert _stored(platform, "W-5", "volume")
        finally:
            await platform.stop()
        assert not receiver.running


@pytest.mark.parametrize(
    "receivers",
    [{"Acme!": ["wmbus+tcp://127.0.0.1:2001"]}, {"acme": ["tcp://127.0.0.1:2001"]}],
    ids=["bad-tenant", "bad-url"],
)
def test_bad_receiver_settings_are_refused_at_load(receivers: dict[str, list[str]]) -> None:
    with pytest.raises(ValidationError):
        Settings(wmbus_receivers=receivers)
