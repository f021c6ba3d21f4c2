"""The gateway link endpoints: link keys (returned once, never readable later, audited without the key),
the link view, and pending devices, with their permissions and problem+json answers."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from openami.hes.gateway_link_store import DiscoveredDevice, GatewayLinkStore
from openami.security.audit import verify_chain
from openami.security.keyvault import KeyVault, load_master_key
from openami.security.roles import ROLES
from openami.store import repositories as repo
from openami.store.schema import audit_log, gateway_link

from .support import World, assert_problem

WRITERS = frozenset({"admin", "operator", "field_technician"})
READERS = WRITERS | {"analyst", "auditor"}
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def _vault(world: World) -> KeyVault:
    return KeyVault(world.context.engine, load_master_key(world.context.settings))


def test_the_key_is_returned_once_and_never_readable_later(world: World) -> None:
    gw = world.ids["gwA"]
    response = world.post(f"/gateways/{gw}/link/key", None, as_user="operator")
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body.keys() == {"gateway_id", "ident", "key_version", "key"}
    assert (body["gateway_id"], body["ident"], body["key_version"]) == (gw, "GW-A", 1)
    key = bytes.fromhex(body["key"])
    assert len(key) == 32
    assert _vault(world).gateway_key(world.ids["tenantA"], gw) == key

    # Nothing answers the key again: not the link view, not the gateway, not a GET on the key route.
    link = world.get(f"/gateways/{gw}/link", as_user="auditor")
    assert link.status_code == 200
    assert link.json()["key_present"] is True and link.json()["key_version"] == 1
    assert "key" not in link.json()
    for text in (link.text, world.get(f"/gateways/{gw}").text, world.get("/gateways").text):
        assert body["key"] not in text and body["key"].upper() not in text
    assert world.get(f"/gateways/{gw}/link/key").status_code == 405
    with world.context.engine.connect() as conn:
        stored = bytes(conn.execute(select(gateway_link.c.key_ciphertext)).scalar_one())
    assert key not in stored

    rotated = world.post(f"/gateways/{gw}/link/key", None, as_user="admin").json()
    assert rotated["key_version"] == 2 and rotated["key"] != body["key"]
    assert _vault(world).gateway_key(world.ids["tenantA"], gw) == bytes.fromhex(rotated["key"])

    with world.context.engine.connect() as conn:
        entries = conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.target_id, audit_log.c.detail)
            .where(audit_log.c.action == "gateway.link_key")
            .order_by(audit_log.c.id)
        ).all()
    assert [(e.action, e.target_id, e.detail["key_version"]) for e in entries] == [
        ("gateway.link_key", str(gw), 1),
        ("gateway.link_key", str(gw), 2),
    ]
    assert entries[0].actor.endswith(":operator")
    assert all(body["key"] not in str(e.detail) and rotated["key"] not in str(e.detail) for e in entries)
    assert verify_chain(world.context.engine, world.ids["tenantA"]) == (True, None)


def test_key_and_link_permissions(world: World) -> None:
    gw = world.ids["gwA"]
    wrong = []
    for role in sorted(ROLES):
        key = world.post(f"/gateways/{gw}/link/key", None, as_user=role)
        view = world.get(f"/gateways/{gw}/link", as_user=role)
        if key.status_code != (201 if role in WRITERS else 403):
            wrong.append(f"{role} POST key: {key.status_code}")
        if view.status_code != (200 if role in READERS else 403):
            wrong.append(f"{role} GET link: {view.status_code}")
        if role not in WRITERS:
            assert_problem(key, 403)
    assert not wrong, wrong
    unauthenticated = world.client.post(f"/gateways/{gw}/link/key")
    assert_problem(unauthenticated, 401)


def test_other_tenants_gateways_and_modems(world: World) -> None:
    assert_problem(world.post(f"/gateways/{world.ids['gwB']}/link/key", None), 404)
    assert_problem(world.get(f"/gateways/{world.ids['gwB']}/link"), 404)
    assert_problem(world.get("/gateways/999999/link"), 404)
    with world.context.engine.begin() as conn:
        modem = repo.comm_devices.create(conn, world.ids["tenantA"], {"ident": "MODEM-1", "kind": "modem"}).id
    assert_problem(world.post(f"/gateways/{modem}/link/key", None), 422)
    link = world.get(f"/gateways/{world.ids['gwA']}/link").json()
    assert link["key_present"] is False
    assert link["key_version"] is None and link["health"] is None and link["window_highest"] is None


def _discover(world: World) -> list[int]:
    vault = _vault(world)
    vault.store_gateway_key(world.ids["tenantA"], world.ids["gwA"], KeyVault.new_gateway_key())
    vault.store_gateway_key(world.ids["tenantB"], world.ids["gwB"], KeyVault.new_gateway_key())
    store = GatewayLinkStore(world.context.engine, vault)
    a, b = store.load("acme", "GW-A"), store.load("beta", "GW-B")
    store.accept(
        a,
        1,
        NOW,
        discovered=[
            DiscoveredDevice(
                "mbus", "12345678", "mbus+serial:///dev/ttyUSB0?secondary=12345678", "KAM", "heat"
            ),
            DiscoveredDevice("wmbus", "87654321", "", "DME", "water"),
        ],
    )
    store.accept(b, 1, NOW, discovered=[DiscoveredDevice("mbus", "11112222")])
    page = world.get("/gateways/pending-devices").json()
    return [item["id"] for item in page["items"]]


def test_pending_devices_are_listed_and_decided(world: World) -> None:
    first, second = _discover(world)
    page = world.get("/gateways/pending-devices", as_user="analyst")
    assert page.status_code == 200, page.text
    items = page.json()["items"]
    assert [(i["protocol"], i["ident"], i["status"], i["gateway_id"]) for i in items] == [
        ("mbus", "12345678", "pending", world.ids["gwA"]),
        ("wmbus", "87654321", "pending", world.ids["gwA"]),
    ]
    one = world.get("/gateways/pending-devices?limit=1").json()
    assert len(one["items"]) == 1 and one["next_cursor"]
    rest = world.get(f"/gateways/pending-devices?limit=1&cursor={one['next_cursor']}").json()
    assert [i["id"] for i in rest["items"]] == [second]

    approved = world.post(f"/gateways/pending-devices/{first}/approve", None, as_user="field_technician")
    assert approved.status_code == 200, approved.text
    assert approved.json()["pending"]["status"] == "approved"
    assert approved.json()["pending"]["decided_by"].endswith(":field_technician")
    rejected = world.post(f"/gateways/pending-devices/{second}/reject", None, as_user="operator").json()
    assert rejected["status"] == "rejected"
    assert [i["id"] for i in world.get("/gateways/pending-devices?status=approved").json()["items"]] == [
        first
    ]
    assert world.get("/gateways/pending-devices?status=pending").json()["items"] == []
    assert world.get(f"/gateways/pending-devices?gateway_id={world.ids['gwB']}").json()["items"] == []
    assert_problem(world.get("/gateways/pending-devices?status=maybe"), 422)

    assert_problem(world.post(f"/gateways/pending-devices/{first}/reject", None, as_user="analyst"), 403)
    assert_problem(world.get("/gateways/pending-devices", as_user="billing"), 403)
    beta_item = world.get("/gateways/pending-devices", tenant="beta").json()["items"][0]["id"]
    assert_problem(world.post(f"/gateways/pending-devices/{beta_item}/approve", None), 404)
    with world.context.engine.connect() as conn:
        actions = conn.execute(
            select(audit_log.c.action)
            .where(audit_log.c.target_type == "pending_device")
            .order_by(audit_log.c.id)
        ).scalars()
        assert list(actions) == ["pending_device.approve", "pending_device.reject"]


def test_approving_creates_the_meter_and_stages_the_gateway_configuration(world: World) -> None:
    """The meter (defaults from the discovery, overrides validated as POST /meters validates them) on
    a device entry carrying its address under the gateway, the audit entry and the gateway's next
    CONFIG with the meter and its keys (sealed at rest), all at once; no link in this process: pending."""
    first, second = _discover(world)
    gw = world.ids["gwA"]
    bad_medium = world.post(f"/gateways/pending-devices/{first}/approve", {"medium": "steam"})
    assert_problem(bad_medium, 422)
    no_address = world.post(f"/gateways/pending-devices/{second}/approve", {})
    assert "reported no address" in assert_problem(no_address, 422)["detail"]
    bad_key = world.post(f"/gateways/pending-devices/{first}/approve", {"keys": {"encryption": "zz"}})
    assert_problem(bad_key, 422)

    key = "00112233445566778899AABBCCDDEEFF"
    answer = world.post(
        f"/gateways/pending-devices/{first}/approve",
        {"serial": "MB-12345678", "model": "MULTICAL 603", "keys": {"encryption": key}},
    )
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert (out["serial"], out["config_version"], out["delivered"]) == ("MB-12345678", 1, False)
    meter = world.get(f"/meters/{out['meter_id']}").json()
    assert (meter["medium"], meter["protocol"], meter["manufacturer"]) == ("heat", "mbus", "KAM")
    device = world.get(f"/gateways/{out['device_id']}").json()
    assert (device["parent_id"], device["kind"]) == (gw, "modem")
    assert device["address"] == "mbus+serial:///dev/ttyUSB0?secondary=12345678"
    link = world.get(f"/gateways/{gw}/link").json()
    assert (link["config_version"], link["config_pending"], link["config_sent_at"]) == (1, True, None)

    store = GatewayLinkStore(world.context.engine, _vault(world))
    claimed = store.claim_config(store.load("acme", "GW-A"), NOW)
    assert claimed is not None and claimed.version == 1
    entry = {
        "serial": "MB-12345678",
        "protocol": "mbus",
        "address": "mbus+serial:///dev/ttyUSB0?secondary=12345678",
        "model": "MULTICAL 603",
        "keys": {"encryption": key.lower()},
    }
    assert claimed.body == {"meters": [entry], "version": 1}
    with world.context.engine.connect() as conn:
        sealed = bytes(conn.execute(select(gateway_link.c.config_ciphertext)).scalars().first() or b"")
        audit = conn.execute(
            select(audit_log.c.detail).where(audit_log.c.action == "pending_device.approve")
        ).scalar_one()
    assert key.lower().encode() not in sealed and key.lower() not in str(audit)
    assert (audit["meter_id"], audit["config_version"]) == (out["meter_id"], 1)

    # The serial exists now: 409, and nothing of the second approval is left behind.
    world.post(f"/gateways/pending-devices/{second}/reject", None)
    devices_before = len(world.get("/gateways").json()["items"])
    again = world.post(
        f"/gateways/pending-devices/{second}/approve",
        {"serial": "MB-12345678", "address": "mbus+tcp://10.0.0.5:10001?primary=1"},
    )
    assert "exists already" in assert_problem(again, 409)["detail"]
    assert len(world.get("/gateways").json()["items"]) == devices_before
    assert world.get(f"/gateways/{gw}/link").json()["config_version"] == 1
    assert world.get("/gateways/pending-devices?status=rejected").json()["items"][0]["id"] == second
    assert_problem(world.post(f"/gateways/pending-devices/{first}/approve", {"serial": "X-1"}), 409)
    assert verify_chain(world.context.engine, world.ids["tenantA"]) == (True, None)
