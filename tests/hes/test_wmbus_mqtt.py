"""A gateway forwards wM-Bus receiver lines over MQTT; the head-end decrypts them with the key vault's
keys and stores the readings; the unusable line becomes a dead letter."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, insert, select

from openami.app import Platform
from openami.bench.decode import _KEY, _wireless
from openami.protocols.wmbus import parse_link
from openami.store.schema import channel, meter, register_read, rejected_message, tenant
from openami.transports.mqtt import make_client

pytestmark = pytest.mark.timeout(60)


async def test_forwarded_telegrams_are_decrypted_and_stored(platform: Platform) -> None:
    with platform.engine.begin() as conn:
        acme = conn.execute(
            insert(tenant).values(slug="acme", name="Acme").returning(tenant.c.id)
        ).scalar_one()
        meter_id = conn.execute(
            insert(meter)
            .values(tenant_id=acme, serial="W-0042", medium="heat", protocol="wmbus")
            .returning(meter.c.id)
        ).scalar_one()
    assert platform.vault is not None and platform.listener is not None
    address = parse_link(_wireless(encrypted=True)).address.to_bytes()
    platform.vault.store(acme, system_title=address, meter_id=meter_id, kind="ek", secret=_KEY)

    lines = f"{_wireless(encrypted=True).hex()}\nZZ not a telegram\n"
    async with make_client(platform.mqtt_url, client_id="gw-test") as client:
        await client.publish(
            f"{platform.settings.mqtt_topic_prefix}/acme/gw/GW-1/wmbus", lines.encode(), qos=1
        )
    deadline = time.monotonic() + 20
    while platform.listener.stats.accepted < 1:
        assert time.monotonic() < deadline, "the forwarded telegram never arrived"
        await asyncio.sleep(0.05)
    await platform.settle()
    with platform.engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(channel.c.code, register_read.c.value)
                .join(register_read, register_read.c.channel_id == channel.c.id)
                .where(channel.c.meter_id == meter_id)
            ).all()
        )
        dead = conn.execute(select(func.count()).select_from(rejected_message)).scalar_one()
    assert stored["energy"] == 563_412_000.0
    assert stored["volume"] == pytest.approx(12345.678)
    assert dead == 1


async def test_installation_requests_of_unknown_meters_become_pending_devices(platform: Platform) -> None:
    """An SND-IR from a meter the vault has no key for is an installation request, not an error: it is
    filed as a pending device of the gateway that heard it (when that gateway is registered)."""
    from openami.protocols.wmbus.encode import encode_telegram, make_address, number_record
    from openami.protocols.wmbus.link import C_SND_IR
    from openami.store.schema import comm_device, pending_device

    with platform.engine.begin() as conn:
        acme = conn.execute(
            insert(tenant).values(slug="acme", name="Acme").returning(tenant.c.id)
        ).scalar_one()
        conn.execute(insert(comm_device).values(tenant_id=acme, ident="GW-7", kind="gateway"))
    newcomer = make_address("KAM", "55667788", 0x1B, 0x07)
    records = number_record("volume", 1234, exponent=-3)
    install = encode_telegram(newcomer, records, c_field=C_SND_IR, security_mode=5, key=bytes(16))
    ordinary = encode_telegram(newcomer, records, security_mode=5, key=bytes(16), access_number=2)
    assert platform.listener is not None
    prefix = platform.settings.mqtt_topic_prefix
    async with make_client(platform.mqtt_url, client_id="gw-7") as client:
        for gateway in ("GW-7", "GW-UNREGISTERED"):
            await client.publish(f"{prefix}/acme/gw/{gateway}/wmbus", f"{install.hex()}\n".encode(), qos=1)
        await client.publish(f"{prefix}/acme/gw/GW-7/wmbus", f"{ordinary.hex()}\n".encode(), qos=1)
    listener = platform.listener
    deadline = time.monotonic() + 20
    while listener.stats.accepted + listener.stats.rejected < 3:
        assert time.monotonic() < deadline, "the forwarded telegrams never arrived"
        await asyncio.sleep(0.05)
    assert (listener.stats.accepted, listener.stats.rejected) == (2, 1)  # an ordinary telegram: no key
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(pending_device.c.protocol, pending_device.c.ident, pending_device.c.manufacturer,
                   pending_device.c.medium, pending_device.c.status)
        ).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [("wmbus", "55667788", "KAM", "water", "pending")]
