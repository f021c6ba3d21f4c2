"""Forwarded wM-Bus telegrams: decrypted with the key vault's keys, refused across tenants, bad lines
reported one by one."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, insert

from openami.bench.decode import _KEY, _wireless
from openami.hes.wmbus_ingest import WmbusIngest
from openami.protocols.wmbus import parse_link
from openami.protocols.wmbus.link import strip_crc_format_a
from openami.security.keyvault import KeyVault
from openami.store.schema import meter, tenant

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def _vault(engine: Engine) -> KeyVault:
    with engine.begin() as conn:
        acme = conn.execute(
            insert(tenant).values(slug="acme", name="Acme").returning(tenant.c.id)
        ).scalar_one()
        conn.execute(insert(tenant).values(slug="other", name="Other"))
        meter_id = conn.execute(
            insert(meter)
            .values(tenant_id=acme, serial="W-0042", medium="heat", protocol="wmbus")
            .returning(meter.c.id)
        ).scalar_one()
    vault = KeyVault(engine, bytes(range(32)))
    address = parse_link(_wireless(encrypted=True)).address.to_bytes()
    vault.store(acme, system_title=address, meter_id=meter_id, kind="ek", secret=_KEY)
    return vault


async def test_encrypted_and_plain_telegrams_become_readings(engine: Engine) -> None:
    ingest = WmbusIngest(_vault(engine))
    text = "\n".join(
        [
            "# forwarded by GW-7",
            _wireless(encrypted=True).hex(),
            "telegram=|" + _wireless(encrypted=False).hex().upper() + "|+23",
            "not hex at all",
            "",
        ]
    )
    result = await ingest.handle("acme", text, NOW)
    assert result.batch is not None
    assert {s.meter for s in result.batch.series} == {"W-0042", "OAM-12345678"}  # vault serial, else M-id
    energy = {s.meter: s.points[0][1] for s in result.batch.series if s.channel == "energy"}
    assert energy == {"W-0042": 563_412_000.0, "OAM-12345678": 563_412_000.0}
    assert [reason.split(":")[0] for reason in result.rejected] == ["line 4"]


async def test_another_tenants_gateway_cannot_use_the_meter(engine: Engine) -> None:
    result = await WmbusIngest(_vault(engine)).handle("other", _wireless(encrypted=True).hex(), NOW)
    assert result.batch is None
    assert result.rejected == ["line 1: the meter's keys belong to another tenant"]


async def test_without_a_vault_or_a_key_encrypted_telegrams_are_refused(engine: Engine) -> None:
    result = await WmbusIngest(None).handle("acme", _wireless(encrypted=True).hex(), NOW)
    assert result.rejected == ["line 1: encrypted telegram and no key vault"]
    _vault(engine)
    stripped = strip_crc_format_a(_wireless(encrypted=True))  # receivers mostly forward CRC-free frames
    stranger = stripped.replace(bytes.fromhex("78563412"), bytes.fromhex("11111111"), 1).hex()
    result = await WmbusIngest(KeyVault(engine, bytes(range(32)))).handle("acme", stranger, NOW)
    assert result.rejected[0].startswith("line 1: no key stored for wM-Bus address")


async def test_compact_frames_decode_after_a_full_frame_of_their_model(engine: Engine) -> None:
    from tests.protocols.wmbus.builders import frame
    from tests.protocols.wmbus.test_compact import FULL_APP, _compact

    ingest = WmbusIngest(_vault(engine))
    early = await ingest.handle("acme", _compact(FULL_APP).hex(), NOW)
    assert early.batch is None and "format not seen" in early.rejected[0]
    await ingest.handle("acme", frame(b"\x78" + FULL_APP).hex(), NOW)
    later = await ingest.handle("acme", _compact(FULL_APP).hex(), NOW)
    assert later.batch is not None and not later.rejected
    assert {s.channel: s.points[0][1] for s in later.batch.series}["volume"] == 12.352
    other = await ingest.handle("other", _compact(FULL_APP).hex(), NOW)  # formats are per tenant
    assert other.batch is None
