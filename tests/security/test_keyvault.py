"""The key vault on both databases: secrets round-trip, never stored in clear, bound to their row."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from openami.config import Settings
from openami.security.keyvault import KeyVault, KeyVaultError, load_master_key
from openami.store.schema import device_key, meter, tenant

TITLE = bytes.fromhex("4D4D4D0000BC614E")
OTHER_TITLE = bytes.fromhex("4C475A0012345678")
EK = bytes(range(16))
AK = bytes(range(16, 32))
MASTER = bytes(range(32))
NEW_MASTER = bytes(range(100, 132))


def _tenant(engine: Engine, slug: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(tenant.insert().values(slug=slug, name=slug).returning(tenant.c.id)).scalar_one()
        )


def _meter(engine: Engine, tenant_id: int, serial: str) -> int:
    with engine.begin() as conn:
        values = {"tenant_id": tenant_id, "serial": serial, "medium": "electricity", "protocol": "dlms"}
        return int(conn.execute(meter.insert().values(**values).returning(meter.c.id)).scalar_one())


def _ciphertexts(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [bytes(c) for c in conn.execute(select(device_key.c.ciphertext)).scalars()]


def test_round_trip_and_not_in_clear(engine: Engine) -> None:
    t = _tenant(engine, "acme")
    m = _meter(engine, t, "ISK0001")
    vault = KeyVault(engine, MASTER)
    vault.store(t, system_title=TITLE, meter_id=m, kind="ek", secret=EK)
    vault.store(t, system_title=TITLE, meter_id=m, kind="ak", secret=AK)
    vault.store(t, system_title=TITLE, meter_id=m, kind="lls", secret=b"12345678")

    assert vault.get(t, TITLE, "ek") == EK
    assert vault.get(t, TITLE, "ak") == AK
    assert vault.get(t, TITLE, "lls") == b"12345678"
    assert vault.get(t, TITLE, "hls") is None
    assert vault.get(t, OTHER_TITLE, "ek") is None
    assert vault.find_by_system_title(TITLE) == (t, m)
    assert vault.find_by_system_title(OTHER_TITLE) is None
    keys = vault.push_keys(TITLE)
    assert keys is not None
    assert (keys.tenant, keys.meter_serial, keys.encryption_key, keys.authentication_key) == (
        "acme",
        "ISK0001",
        EK,
        AK,
    )

    stored = _ciphertexts(engine)
    assert len(stored) == 3
    for secret in (EK, AK, b"12345678", MASTER):
        assert all(secret not in blob for blob in stored)


def test_wrong_master_key_refused(engine: Engine) -> None:
    t = _tenant(engine, "acme")
    KeyVault(engine, MASTER).store(t, system_title=TITLE, meter_id=None, kind="ek", secret=EK)
    with pytest.raises(KeyVaultError):
        KeyVault(engine, NEW_MASTER).get(t, TITLE, "ek")
    with pytest.raises(KeyVaultError):
        KeyVault(engine, b"short")


def test_ciphertext_moved_to_another_row_does_not_open(engine: Engine) -> None:
    acme, other = _tenant(engine, "acme"), _tenant(engine, "other")
    vault = KeyVault(engine, MASTER)
    vault.store(acme, system_title=TITLE, meter_id=None, kind="ek", secret=EK)
    vault.store(acme, system_title=TITLE, meter_id=None, kind="ak", secret=AK)
    vault.store(other, system_title=OTHER_TITLE, meter_id=None, kind="ek", secret=AK)
    with engine.begin() as conn:
        ek_blob = conn.execute(
            select(device_key.c.ciphertext).where(
                device_key.c.kind == "ek", device_key.c.system_title == TITLE.hex().upper()
            )
        ).scalar_one()
        conn.execute(device_key.update().where(device_key.c.kind == "ak").values(ciphertext=ek_blob))
        conn.execute(
            device_key.update()
            .where(device_key.c.system_title == OTHER_TITLE.hex().upper())
            .values(ciphertext=ek_blob)
        )
    with pytest.raises(KeyVaultError):
        vault.get(acme, TITLE, "ak")  # another kind
    with pytest.raises(KeyVaultError):
        vault.get(other, OTHER_TITLE, "ek")  # another tenant and title
    assert vault.get(acme, TITLE, "ek") == EK


def test_rotate_master_keeps_every_key(engine: Engine) -> None:
    t = _tenant(engine, "acme")
    vault = KeyVault(engine, MASTER)
    vault.store(t, system_title=TITLE, meter_id=None, kind="ek", secret=EK)
    vault.store(t, system_title=OTHER_TITLE, meter_id=None, kind="hls", secret=AK)
    before = _ciphertexts(engine)
    vault.rotate_master(NEW_MASTER)
    assert set(_ciphertexts(engine)).isdisjoint(before)
    for reader in (vault, KeyVault(engine, NEW_MASTER)):
        assert reader.get(t, TITLE, "ek") == EK
        assert reader.get(t, OTHER_TITLE, "hls") == AK
    with pytest.raises(KeyVaultError):
        KeyVault(engine, MASTER).get(t, TITLE, "ek")


def test_replace_bumps_key_version(engine: Engine) -> None:
    t = _tenant(engine, "acme")
    vault = KeyVault(engine, MASTER)
    vault.store(t, system_title=TITLE, meter_id=None, kind="ek", secret=EK)
    vault.store(t, system_title=TITLE, meter_id=None, kind="ek", secret=AK)
    assert vault.get(t, TITLE, "ek") == AK
    with engine.connect() as conn:
        rows = conn.execute(select(device_key.c.key_version)).scalars().all()
    assert rows == [2]  # the old ciphertext is gone, not kept beside the new one


def test_title_of_another_tenant_refused(engine: Engine) -> None:
    acme, other = _tenant(engine, "acme"), _tenant(engine, "other")
    vault = KeyVault(engine, MASTER)
    vault.store(acme, system_title=TITLE, meter_id=None, kind="ek", secret=EK)
    with pytest.raises(KeyVaultError, match="another tenant"):
        vault.store(other, system_title=TITLE, meter_id=None, kind="ak", secret=AK)
    foreign_meter = _meter(engine, acme, "M1")
    with pytest.raises(KeyVaultError, match="not a meter of tenant"):
        vault.store(other, system_title=OTHER_TITLE, meter_id=foreign_meter, kind="ek", secret=EK)
    with pytest.raises(KeyVaultError):
        vault.store(acme, system_title=b"short", meter_id=None, kind="ek", secret=EK)


def test_load_master_key(tmp_path: Path) -> None:
    generated = load_master_key(Settings(data_dir=tmp_path))
    path = tmp_path / "master.key"
    assert len(generated) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_key(Settings(data_dir=tmp_path)) == generated  # reused, not regenerated
    assert load_master_key(Settings(data_dir=tmp_path, master_key=MASTER.hex())) == MASTER
    with pytest.raises(KeyVaultError):
        load_master_key(Settings(data_dir=tmp_path, master_key="abcd"))
