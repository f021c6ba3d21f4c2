"""The gateway link's storage on both databases: migration 0004, sealed link keys, the persisted replay
window, downlink numbering and pending devices."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, select

from openami.hes.gateway_link_store import (
    DiscoveredDevice,
    GatewayLinkStore,
    UnknownGateway,
    decide_pending,
    link_status,
    list_pending,
    provision_key,
)
from openami.protocols.edge.envelope import WINDOW
from openami.security.audit import AuditLog, verify_chain
from openami.security.errors import InvalidInput
from openami.security.keyvault import KeyVault, KeyVaultError
from openami.store.errors import NotFound
from openami.store.migrate import alembic_config, current_revision
from openami.store.repositories import Scope, comm_devices, tenants
from openami.store.schema import gateway_link

MASTER = bytes(range(32))
NEW_MASTER = bytes(range(100, 132))
KEY = bytes(range(200, 232))
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def _world(engine: Engine) -> dict[str, int]:
    with engine.begin() as conn:
        acme = tenants.create(conn, {"slug": "acme", "name": "Acme"}).id
        beta = tenants.create(conn, {"slug": "beta", "name": "Beta"}).id
        ids = {"acme": acme, "beta": beta}
        for name, tenant_id, kind in (
            ("gw1", acme, "gateway"),
            ("gw2", acme, "concentrator"),
            ("modem", acme, "modem"),
            ("gwb", beta, "gateway"),
        ):
            ids[name] = comm_devices.create(conn, tenant_id, {"ident": name.upper(), "kind": kind}).id
    return ids


def test_migration_0004_downgrades_and_upgrades_again(engine: Engine) -> None:
    config = alembic_config(engine)
    assert current_revision(engine) is not None  # head: 0004 or a later revision
    command.downgrade(config, "0003")
    assert {"gateway_link", "pending_device"}.isdisjoint(inspect(engine).get_table_names())
    command.upgrade(config, "head")
    assert {"gateway_link", "pending_device"} <= set(inspect(engine).get_table_names())
    command.check(config)


def test_link_keys_round_trip_sealed_and_bound_to_their_row(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    assert vault.gateway_key(ids["acme"], ids["gw1"]) is None
    assert vault.store_gateway_key(ids["acme"], ids["gw1"], KEY) == 1
    other = KeyVault.new_gateway_key()
    assert len(other) == 32 and other != KeyVault.new_gateway_key()
    vault.store_gateway_key(ids["acme"], ids["gw2"], other)
    assert vault.gateway_key(ids["acme"], ids["gw1"]) == KEY
    assert vault.gateway_key(ids["beta"], ids["gw1"]) is None  # another tenant sees nothing
    with engine.connect() as conn:
        blobs = {row.comm_device_id: bytes(row.key_ciphertext) for row in conn.execute(select(gateway_link))}
    assert all(KEY not in blob and MASTER not in blob for blob in blobs.values())

    # A ciphertext copied onto another gateway's row does not open there.
    with engine.begin() as conn:
        conn.execute(
            gateway_link.update()
            .where(gateway_link.c.comm_device_id == ids["gw2"])
            .values(key_ciphertext=blobs[ids["gw1"]])
        )
    with pytest.raises(KeyVaultError):
        vault.gateway_key(ids["acme"], ids["gw2"])
    with pytest.raises(KeyVaultError):
        KeyVault(engine, NEW_MASTER).gateway_key(ids["acme"], ids["gw1"])


def test_link_keys_only_for_own_gateways_and_concentrators(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    with pytest.raises(KeyVaultError, match="not a device of tenant"):
        vault.store_gateway_key(ids["beta"], ids["gw1"], KEY)
    with pytest.raises(KeyVaultError, match="modem"):
        vault.store_gateway_key(ids["acme"], ids["modem"], KEY)
    with pytest.raises(KeyVaultError, match="32 bytes"):
        vault.store_gateway_key(ids["acme"], ids["gw1"], KEY[:16])


def test_rotation_bumps_version_resets_window_keeps_downlink_numbers(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    vault.store_gateway_key(ids["acme"], ids["gw1"], KEY)
    store = GatewayLinkStore(engine, vault)
    state = store.load("acme", "GW1")
    assert store.accept(state, 41, NOW)
    first = store.next_down_seq(state)
    # Downlinks number from the link's creation time in ms, so a link created again stays above them.
    assert abs(first - time.time() * 1000) < 60_000
    assert [store.next_down_seq(state) for _ in range(2)] == [first + 1, first + 2]

    new_key = KeyVault.new_gateway_key()
    assert vault.store_gateway_key(ids["acme"], ids["gw1"], new_key) == 2
    rotated = store.load("acme", "GW1")
    assert (rotated.key, rotated.key_version, rotated.window.highest) == (new_key, 2, -1)
    assert not store.accept(state, 42, NOW)  # a number under the old key is not carried over
    assert store.next_down_seq(rotated) == first + 3  # the gateway's downlink window never sees one twice


def test_rotate_master_reseals_link_keys(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    vault.store_gateway_key(ids["acme"], ids["gw1"], KEY)
    vault.rotate_master(NEW_MASTER)
    assert KeyVault(engine, NEW_MASTER).gateway_key(ids["acme"], ids["gw1"]) == KEY
    with pytest.raises(KeyVaultError):
        KeyVault(engine, MASTER).gateway_key(ids["acme"], ids["gw1"])


def test_load_refuses_what_has_no_usable_link(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    store = GatewayLinkStore(engine, vault)
    for tenant, ident, reason in (
        ("acme", "NOPE", "no gateway"),
        ("nobody", "GW1", "no gateway"),
        ("beta", "GW1", "no gateway"),
        ("acme", "MODEM", "is a modem"),
        ("acme", "GW1", "no link key"),
    ):
        with pytest.raises(UnknownGateway, match=reason):
            store.load(tenant, ident)
    KeyVault(engine, NEW_MASTER).store_gateway_key(ids["acme"], ids["gw1"], KEY)
    with pytest.raises(UnknownGateway, match="does not open"):
        store.load("acme", "GW1")


def test_window_persists_and_merges_concurrent_accepts(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    vault.store_gateway_key(ids["acme"], ids["gw1"], KEY)
    store = GatewayLinkStore(engine, vault)
    state = store.load("acme", "GW1")
    numbers = [*range(1, 40), WINDOW + 100]
    with ThreadPoolExecutor(4) as pool:  # two workers of a shared subscription may do this
        assert all(pool.map(lambda seq: store.accept(state, seq, NOW), numbers))
    window = GatewayLinkStore(engine, KeyVault(engine, MASTER)).load("acme", "GW1").window
    assert window.highest == WINDOW + 100
    assert all(window.seen(seq) for seq in numbers)
    assert not window.seen(WINDOW + 99)
    with ThreadPoolExecutor(4) as pool:
        seqs = list(pool.map(lambda _: store.next_down_seq(state), range(20)))
    assert sorted(seqs) == list(range(min(seqs), min(seqs) + 20))
    with pytest.raises(ValueError, match="cannot be stored"):
        store.accept(state, 2**63, NOW)

    # A gateway with a new archive numbers from its creation time: a jump of ~1.8e12 is one cheap step.
    started = time.monotonic()
    assert store.accept(state, 1_800_000_000_000, NOW)
    assert store.accept(state, 1_800_000_000_002, NOW)
    window = store.load("acme", "GW1").window
    assert (window.highest, window.mask) == (1_800_000_000_002, 0b101)
    assert time.monotonic() - started < 5


def test_health_and_status(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    scope = Scope(ids["acme"])
    with engine.connect() as conn:
        empty = link_status(conn, scope, ids["gw1"])
    assert (empty.key_present, empty.key_version, empty.health, empty.window_highest) == (
        False,
        None,
        None,
        None,
    )
    vault.store_gateway_key(ids["acme"], ids["gw1"], KEY)
    store = GatewayLinkStore(engine, vault)
    state = store.load("acme", "GW1")
    store.accept(state, 7, NOW, health={"backlog_readings": 12, "unacked_batches": 2, "uptime_s": 5})
    first = store.claim_config(state, NOW)
    assert first is None  # nothing pushed yet: nothing to send
    assert store.stage_config(state, {"meters": [], "version": 99}).version == 1
    claimed = store.claim_config(state, NOW)
    assert claimed is not None and (claimed.version, claimed.body) == (1, {"meters": [], "version": 1})
    seq = claimed.seq
    assert store.claim_config(state, NOW) is None  # sent: not due again while nothing is reported
    assert (
        store.stage_config(state, {"meters": [{"serial": "M", "keys": {"encryption": "00" * 16}}]}).version
        == 2
    )
    with engine.connect() as conn:
        sealed = bytes(conn.execute(select(gateway_link.c.config_ciphertext)).scalar_one())
    assert b"encryption" not in sealed and b"00000000" not in sealed  # sealed at rest, keys and all
    with engine.connect() as conn:
        status = link_status(conn, scope, ids["gw1"])
        with pytest.raises(NotFound):
            link_status(conn, Scope(ids["beta"]), ids["gw1"])
    assert status.key_present and status.key_version == 1
    assert (status.backlog_readings, status.unacked_batches, status.window_highest) == (12, 2, 7)
    assert (status.config_version, status.next_downlink_seq) == (2, seq + 1)
    assert (status.config_pending, status.config_reported_version, status.config_sent_at) == (
        True,
        None,
        None,
    )
    assert status.health == {"backlog_readings": 12, "unacked_batches": 2, "uptime_s": 5}
    assert status.last_seen_at == status.health_at == NOW
    assert "key" not in repr(state).replace("key_version", "")  # the key is kept out of reprs


def test_pending_devices_upsert_and_decisions(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    vault.store_gateway_key(ids["acme"], ids["gw1"], KEY)
    store = GatewayLinkStore(engine, vault)
    state = store.load("acme", "GW1")
    heat = DiscoveredDevice(
        "mbus", "12345678", "mbus+serial:///dev/ttyUSB0?secondary=12345678", "KAM", "heat"
    )
    water = DiscoveredDevice("wmbus", "87654321", "", "DME", "water")
    store.accept(state, 1, NOW, discovered=[heat, water])
    later = NOW + timedelta(hours=1)
    store.accept(
        state, 2, later, discovered=[DiscoveredDevice("mbus", "12345678", "mbus+tcp://x", "KAM", "heat")]
    )
    scope = Scope(ids["acme"])
    with engine.connect() as conn:
        rows = list_pending(conn, scope)
        assert list_pending(conn, Scope(ids["beta"])) == []
    assert [(r.ident, r.status, r.address) for r in rows] == [
        ("12345678", "pending", "mbus+tcp://x"),
        ("87654321", "pending", ""),
    ]
    assert (rows[0].first_seen_at, rows[0].last_seen_at) == (NOW, later)

    audit = AuditLog()
    decided = decide_pending(engine, audit, scope, rows[1].id, "rejected", "user:1:admin")
    assert (decided.status, decided.decided_by) == ("rejected", "user:1:admin")
    decide_pending(engine, audit, scope, rows[1].id, "rejected", "user:1:admin")  # no-op, no entry
    store.accept(state, 3, later, discovered=[water])  # reported again: stays rejected
    with engine.connect() as conn:
        assert [r.status for r in list_pending(conn, scope, status="rejected")] == ["rejected"]
        assert len(list_pending(conn, scope, status="pending", gateway_id=ids["gw1"])) == 1
        assert len(list_pending(conn, scope, after_id=rows[0].id)) == 1
    with pytest.raises(NotFound):
        decide_pending(engine, audit, Scope(ids["beta"]), rows[0].id, "approved", "user:2:admin")
    assert verify_chain(engine, ids["acme"]) == (True, None)


def test_provision_key_is_audited_without_the_key(engine: Engine) -> None:
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    audit = AuditLog()
    scope = Scope(ids["acme"])
    first = provision_key(engine, vault, audit, scope, ids["gw1"], "user:1:admin")
    second = provision_key(engine, vault, audit, scope, ids["gw1"], "user:1:admin")
    assert (first.key_version, second.key_version) == (1, 2)
    assert first.key != second.key and vault.gateway_key(ids["acme"], ids["gw1"]) == second.key
    assert first.key.hex() not in repr(first)
    with pytest.raises(InvalidInput):
        provision_key(engine, vault, audit, scope, ids["modem"], "user:1:admin")
    with pytest.raises(NotFound):
        provision_key(engine, vault, audit, Scope(ids["beta"]), ids["gw1"], "user:2:admin")
    with engine.connect() as conn:
        from openami.store.schema import audit_log

        details = [row.detail for row in conn.execute(select(audit_log).order_by(audit_log.c.id))]
    assert details == [
        {"ident": "GW1", "key_version": 1, "rotated": False},
        {"ident": "GW1", "key_version": 2, "rotated": True},
    ]
    assert verify_chain(engine, ids["acme"]) == (True, None)


def test_config_is_resent_until_reported_at_most_once_per_interval(engine: Engine) -> None:
    """The claim decides: pending goes at once, a lower reported version only after the interval, a
    reported version stops it, a failed publish puts it back, and rotating the master key keeps it."""
    ids = _world(engine)
    vault = KeyVault(engine, MASTER)
    vault.store_gateway_key(ids["acme"], ids["gw1"], KEY)
    store = GatewayLinkStore(engine, vault)
    state = store.load("acme", "GW1")
    store.accept(state, 1, NOW, health={"config_version": 4})  # a gateway ahead (a restored database)
    assert store.stage_config(state, {"meters": []}).version == 5
    sent = store.claim_config(state, NOW, reported=4, resend_after_s=300)
    assert sent is not None and sent.version == 5
    soon, later = NOW + timedelta(seconds=299), NOW + timedelta(seconds=300)
    assert store.claim_config(state, soon, reported=4, resend_after_s=300) is None
    again = store.claim_config(state, later, reported=4, resend_after_s=300)
    assert again is not None and again.seq > sent.seq  # the same version under a fresh number
    store.unclaim_config(state, again)  # the broker did not take it: pending, due at once
    retry = store.claim_config(state, later + timedelta(seconds=1), reported=4, resend_after_s=300)
    assert retry is not None and retry.version == 5
    far = later + timedelta(hours=1)
    assert store.claim_config(state, far, reported=5, resend_after_s=300) is None  # applied: done
    new_master = bytes(range(100, 132))
    vault.rotate_master(new_master)
    reopened = GatewayLinkStore(engine, KeyVault(engine, new_master))
    store.unclaim_config(state, retry)
    assert reopened.claim_config(state, far) is not None
