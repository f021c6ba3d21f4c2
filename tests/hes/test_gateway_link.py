"""Gateway (played by the test with the real envelope codec) -> MQTT broker -> GatewayLinkListener in the
platform -> bus -> store, and the answers back down, over real loopback sockets.

Every flow runs against the embedded amqtt broker (MQTT 3.1.1, plain subscription) and the real
Mosquitto (MQTT 5, shared subscription), each test under its own topic prefix so parallel users of the
shared Mosquitto do not interfere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, Table, func, select

from openami.api.app import create_api
from openami.api.deps import ApiContext
from openami.app import Platform
from openami.bus.base import SubscribeOptions
from openami.bus.memory import MemoryBus
from openami.config import Settings
from openami.edge.archive import Archive, ArchivedReading
from openami.hes.gateway_link import GatewayLinkListener, link_topics
from openami.hes.gateway_link_store import list_pending
from openami.protocols.edge import Compression, Direction, Envelope, Kind, Opener, seal
from openami.protocols.edge.envelope import WINDOW
from openami.security.keyvault import KeyVault
from openami.security.passwords import Passwords
from openami.security.service import AuthService, UserService
from openami.store import repositories as repo
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.schema import (
    comm_device,
    event,
    gateway_link,
    interval_read,
    meter,
    register_read,
    rejected_message,
    tenant,
)
from openami.transports.mqtt import make_client
from openami.transports.mqtt_broker import EmbeddedBroker
from tests.hes.support import Collector, Rejections, until

TENANT = "acme"
DAY = datetime(2026, 12, 1, tzinfo=UTC)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(32, 64))
SECURITY_LOG = "openami.security.gateway_link"


@pytest.fixture
def prefix() -> str:
    return f"openami-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def settings(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Settings:
    common: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'hes.sqlite3'}",
        "mqtt_topic_prefix": prefix,
        "dlms_push_port": 0,
        "poll_interval_s": 0,
        "ingest_flush_ms": 20,
    }
    if request.param == "embedded":
        return Settings(mqtt_url="embedded", mqtt_embedded_port=0, **common)
    return Settings(mqtt_url=request.getfixturevalue("mosquitto_url"), **common)


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    running = Platform.build(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def _link(platform: Platform) -> GatewayLinkListener:
    assert platform.gateway_link is not None
    return platform.gateway_link


async def _handled(link: GatewayLinkListener, received: int) -> None:
    """Wait until ``received`` envelopes arrived and each is done with (its outcome counter moves last,
    after its answer's PUBACK, so a test that has read the answer may still be a moment ahead)."""
    stats = link.stats
    await until(
        lambda: (
            stats.received == received
            and stats.accepted + stats.duplicates + stats.refused + stats.rejected + stats.failed == received
        )
    )


def _provision(platform: Platform) -> dict[str, int]:
    """Tenant acme: gateways GW-1 (KEY), GW-2 (the same KEY, to prove the topic binding) and GW-3 (no
    key), meters MB-1 and MB-2 behind GW-1."""
    assert platform.vault is not None
    with platform.engine.begin() as conn:
        tenant_id = repo.tenants.create(conn, {"slug": TENANT, "name": "Acme"}).id
        ids = {"tenant": tenant_id}
        for ident in ("GW-1", "GW-2", "GW-3"):
            ids[ident] = repo.comm_devices.create(conn, tenant_id, {"ident": ident, "kind": "gateway"}).id
        for serial in ("MB-1", "MB-2"):
            values = {"serial": serial, "medium": "heat", "protocol": "mbus", "comm_device_id": ids["GW-1"]}
            ids[serial] = repo.meters.create(conn, tenant_id, values).id
    platform.vault.store_gateway_key(tenant_id, ids["GW-1"], KEY)
    platform.vault.store_gateway_key(tenant_id, ids["GW-2"], KEY)
    return ids


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _rejected(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        query = select(rejected_message).where(rejected_message.c.source == "gateway-link")
        return list(conn.execute(query.order_by(rejected_message.c.id)))


def _batch(meter: str = "MB-1", *, hours: int = 1, start: datetime = DAY, value: float = 1000.0) -> bytes:
    """A BATCH payload shaped as the gateway's archive writes it: 4 register readings and 4 interval
    readings per hour, one event."""
    points = [start + timedelta(minutes=15 * (i + 1)) for i in range(4 * hours)]
    body = {
        "series": [
            {
                "meter": meter,
                "channel": "energy",
                "unit": "Wh",
                "kind": "register",
                "interval_s": None,
                "points": [[ts.isoformat(), value + i, 0] for i, ts in enumerate(points)],
            },
            {
                "meter": meter,
                "channel": "flow",
                "unit": "m3/h",
                "kind": "interval",
                "interval_s": 900,
                "points": [[ts.isoformat(), 0.5, 0] for ts in points],
            },
        ],
        "events": [
            {"meter": meter, "ts": start.isoformat(), "code": "leak", "severity": "alarm", "detail": {}}
        ],
    }
    return json.dumps(body).encode()


class Gateway:
    """An OpenAMI gateway as far as the link goes: real envelopes (``seal``/``Opener``) over a real MQTT
    connection, publishing on its ``link/up`` and collecting what arrives on its ``link/down``."""

    def __init__(self, url: str, prefix: str, ident: str = "GW-1", key: bytes = KEY) -> None:
        self.url, self.prefix, self.ident, self.key = url, prefix, ident, key
        self.up, self.down = link_topics(prefix, TENANT, ident)
        self.opener = Opener(key, ident, direction=Direction.DOWN)
        self.downlinks: asyncio.Queue[bytes] = asyncio.Queue()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Gateway:
        client = await self._stack.enter_async_context(make_client(self.url))
        await client.subscribe(self.down, qos=1)
        self._client = client
        task = asyncio.create_task(self._receive())
        self._stack.callback(task.cancel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _receive(self) -> None:
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            await self.downlinks.put(message.payload)

    def seal(self, kind: Kind, seq: int, payload: bytes | dict[str, Any], **options: Any) -> bytes:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        key = options.pop("key", self.key)
        return seal(key, options.pop("gateway", self.ident), kind, seq, data, **options)

    async def publish(self, envelope: bytes, topic: str | None = None) -> bytes:
        await self._client.publish(topic or self.up, envelope, qos=1)
        return envelope

    async def send(self, kind: Kind, seq: int, payload: bytes | dict[str, Any], **options: Any) -> bytes:
        return await self.publish(self.seal(kind, seq, payload, **options))

    async def receive(self, timeout_s: float = 10.0) -> tuple[Envelope, dict[str, Any]]:
        """The next downlink, opened as the gateway would (tag, direction DOWN, replay window)."""
        data = await asyncio.wait_for(self.downlinks.get(), timeout_s)
        envelope = self.opener.open(data)
        return envelope, json.loads(envelope.payload)

    async def nothing_within(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.downlinks.get(), seconds)


@pytest.fixture
async def gateway(platform: Platform, prefix: str) -> AsyncIterator[Gateway]:
    _provision(platform)
    async with Gateway(platform.mqtt_url, prefix) as gw:
        yield gw


async def test_a_batch_is_stored_and_acknowledged(platform: Platform, gateway: Gateway) -> None:
    collector = Collector()
    await platform.bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
    await gateway.send(Kind.BATCH, 41, _batch())
    ack, body = await gateway.receive()
    assert (ack.kind, ack.direction, body) == (Kind.ACK, Direction.DOWN, {"acked": [41], "refused": {}})
    await platform.settle()
    assert (_count(platform.engine, register_read), _count(platform.engine, interval_read)) == (4, 4)
    assert _count(platform.engine, event) == 1
    assert collector.msg_ids == [f"gw:{TENANT}:GW-1:41"]
    (batch,) = collector.batches
    assert (batch.tenant, batch.source, batch.gateway) == (TENANT, "gateway", "GW-1")
    await _handled(_link(platform), 1)
    stats = _link(platform).stats
    assert (stats.received, stats.accepted, stats.readings, stats.events, stats.acks_sent) == (1, 1, 8, 1, 1)
    with platform.engine.connect() as conn:
        link = conn.execute(select(gateway_link.c.up_highest, gateway_link.c.next_down_seq)).first()
        seen = conn.execute(select(comm_device.c.last_seen_at).where(comm_device.c.ident == "GW-1")).scalar()
    assert link is not None and (link.up_highest, link.next_down_seq) == (41, ack.seq + 1)
    assert seen is not None
    assert platform.health()["gateway_link"] == "ok"
    if platform.broker is None:  # Mosquitto: MQTT 5 and a shared subscription
        assert _link(platform).mqtt_version == "5"
        assert _link(platform).topic_filter.startswith("$share/openami-hes/")
    else:  # amqtt speaks MQTT 3.1.1 only
        assert _link(platform).mqtt_version == "3.1.1"
        assert not _link(platform).topic_filter.startswith("$share/")
    metrics = platform.metrics.exposition()[0].decode()
    assert 'openami_gateway_link_envelopes_total{outcome="accepted"} 1.0' in metrics


async def test_the_gateway_archive_payload_is_understood(
    platform: Platform, gateway: Gateway, tmp_path: Path
) -> None:
    """The contract end to end: a batch cut by the real edge archive, stored by the head-end."""
    archive = Archive(tmp_path / "gateway.sqlite3", first_seq=7)
    try:
        readings = [
            ArchivedReading("MB-2", "energy", DAY + timedelta(minutes=15 * i), 10.0 + i, "kWh")
            for i in range(1, 5)
        ]
        archive.add_readings(readings)
        archive.add_event("MB-2", DAY, "tamper", severity="warning", detail={"door": True})
        cut = archive.cut_batch(DAY + timedelta(hours=1))
    finally:
        archive.close()
    assert cut is not None
    await gateway.send(Kind.BATCH, cut.seq, cut.payload, compression=Compression.ZSTD)
    _, body = await gateway.receive()
    assert body == {"acked": [cut.seq], "refused": {}}
    await platform.settle()
    assert _count(platform.engine, register_read) == 4
    assert _count(platform.engine, event) == 1


async def test_a_resent_batch_is_acknowledged_again_and_stored_once(
    platform: Platform, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A captured envelope replayed (the very same bytes) and a resend: acknowledged, not stored twice,
    each logged at INFO on the security logger with tenant, gateway, number and kind."""
    caplog.set_level(logging.INFO, logger=SECURITY_LOG)
    collector = Collector()
    await platform.bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
    first = await gateway.send(Kind.BATCH, 5, _batch())
    await gateway.receive()
    await gateway.publish(first)  # the very same bytes, as a broker redelivery would
    await gateway.send(Kind.BATCH, 5, _batch())  # sealed again (new nonce), as a gateway resend would
    for _ in range(2):
        _, body = await gateway.receive()
        assert body == {"acked": [5], "refused": {}}
    await platform.settle()
    assert (_count(platform.engine, register_read), _count(platform.engine, interval_read)) == (4, 4)
    assert len(collector.batches) == 1  # published once, not merely de-duplicated downstream
    await _handled(_link(platform), 3)
    stats = _link(platform).stats
    assert (stats.accepted, stats.duplicates, stats.rejected, stats.acks_sent) == (1, 2, 0, 3)
    seen = [r for r in caplog.records if r.name == SECURITY_LOG and r.levelno == logging.INFO]
    assert len(seen) == 2
    assert all(
        (r.tenant, r.gateway, r.seq, r.kind) == (TENANT, "GW-1", 5, "BATCH")  # type: ignore[attr-defined]
        and "already accepted: not stored again (a resend or a replay)" in r.getMessage()
        for r in seen
    )


async def test_forged_and_replayed_envelopes_are_rejected_and_the_listener_keeps_working(
    platform: Platform, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SECURITY_LOG)
    link = _link(platform)
    old = await gateway.send(Kind.BATCH, 1, _batch(hours=1))
    await gateway.receive()
    await gateway.send(Kind.BATCH, WINDOW + 10, _batch(start=DAY + timedelta(hours=1)))
    await gateway.receive()
    await platform.settle()
    assert _count(platform.engine, register_read) == 8

    forged = gateway.seal(Kind.BATCH, WINDOW + 11, _batch("MB-2"))
    tampered = forged[:-20] + bytes([forged[-20] ^ 0x01]) + forged[-19:]
    wrong_key = gateway.seal(Kind.BATCH, WINDOW + 12, _batch("MB-2"), key=OTHER_KEY)
    reflected = gateway.seal(Kind.BATCH, WINDOW + 13, _batch("MB-2"), direction=Direction.DOWN)
    gw2_up, _ = link_topics(gateway.prefix, TENANT, "GW-2")  # GW-2 holds the same key: only the AAD differs
    await gateway.publish(tampered)
    await gateway.publish(wrong_key)
    await gateway.publish(reflected)
    moved = await gateway.publish(gateway.seal(Kind.BATCH, WINDOW + 14, _batch("MB-2")), topic=gw2_up)
    await gateway.publish(old)  # authentic, but older than the replay window now
    await gateway.publish(b"OA\x01garbage that is no envelope at all")
    await until(lambda: link.stats.rejected == 6)
    await gateway.nothing_within(0.3)  # none of them is acknowledged

    await gateway.send(Kind.BATCH, WINDOW + 20, _batch(start=DAY + timedelta(hours=2)))  # still working
    _, body = await gateway.receive()
    assert body == {"acked": [WINDOW + 20], "refused": {}}
    await platform.settle()
    assert _count(platform.engine, register_read) == 12
    with platform.engine.connect() as conn:
        mb2 = conn.execute(
            select(func.count()).select_from(event).where(event.c.meter_id == _meter_id(platform, "MB-2"))
        ).scalar_one()
    assert mb2 == 0
    await _handled(link, 9)
    assert (link.stats.accepted, link.stats.rejected, link.stats.duplicates) == (3, 6, 0)

    # Kept as received, with the reason; another gateway's topic is handled beside GW-1's, so by payload.
    reasons = {bytes(row.payload): (row.topic, row.reason) for row in _rejected(platform.engine)}
    garbage = b"OA\x01garbage that is no envelope at all"
    assert reasons.keys() == {tampered, wrong_key, reflected, moved, old, garbage}
    assert all(reason.startswith("gateway link: ") for _, reason in reasons.values())
    assert "does not verify for GW-1" in reasons[tampered][1]
    assert "does not verify for GW-1" in reasons[wrong_key][1]
    assert "travels DOWN" in reasons[reflected][1]
    assert reasons[moved] == (gw2_up, reasons[moved][1])
    assert "does not verify for GW-2" in reasons[moved][1]
    assert "older than the replay window" in reasons[old][1]
    assert "EnvelopeFormatError" in reasons[garbage][1]
    warnings = [r for r in caplog.records if r.name == SECURITY_LOG]
    assert len(warnings) == 6
    assert all("GW-" in r.getMessage() and "tenant acme" in r.getMessage() for r in warnings)
    assert "KEY" not in caplog.text and KEY.hex() not in caplog.text


def _meter_id(platform: Platform, serial: str) -> int:
    with platform.engine.connect() as conn:
        return int(conn.execute(select(meter.c.id).where(meter.c.serial == serial)).scalar_one())


async def test_unknown_gateways_and_gateways_without_a_key_are_rejected(
    platform: Platform, gateway: Gateway, prefix: str
) -> None:
    link = _link(platform)
    unknown_up, _ = link_topics(prefix, TENANT, "GW-9")
    no_key_up, _ = link_topics(prefix, TENANT, "GW-3")
    other_tenant_up, _ = link_topics(prefix, "nobody", "GW-1")
    await gateway.publish(gateway.seal(Kind.BATCH, 1, _batch(), gateway="GW-9"), topic=unknown_up)
    await gateway.publish(gateway.seal(Kind.BATCH, 1, _batch(), gateway="GW-3"), topic=no_key_up)
    await gateway.publish(gateway.seal(Kind.BATCH, 1, _batch()), topic=other_tenant_up)
    await gateway.publish(gateway.seal(Kind.BATCH, 1, _batch()), topic=f"{prefix}/BAD TENANT/gw/GW-1/link/up")
    await until(lambda: link.stats.rejected == 4)
    bad_up = f"{prefix}/BAD TENANT/gw/GW-1/link/up"
    dead = {row.topic: (row.tenant_slug, row.reason) for row in _rejected(platform.engine)}  # by gateway
    assert dead.keys() == {unknown_up, no_key_up, other_tenant_up, bad_up}
    assert "no gateway 'GW-9' in tenant 'acme'" in dead[unknown_up][1]
    assert "has no link key" in dead[no_key_up][1]
    assert "no gateway 'GW-1' in tenant 'nobody'" in dead[other_tenant_up][1]
    assert "tenant 'BAD TENANT'" in dead[bad_up][1]
    assert [dead[t][0] for t in (unknown_up, no_key_up, other_tenant_up, bad_up)] == [
        TENANT,
        TENANT,
        "nobody",
        None,
    ]
    await platform.settle()
    assert _count(platform.engine, register_read) == 0


async def test_an_unusable_batch_is_refused_in_the_ack_and_kept(platform: Platform, gateway: Gateway) -> None:
    await gateway.send(Kind.BATCH, 3, b"{not json")
    _, body = await gateway.receive()
    assert body["acked"] == [] and "not JSON" in body["refused"]["3"]
    await gateway.send(Kind.BATCH, 3, b"{not json")  # a resend gets the same answer
    _, again = await gateway.receive()
    assert again["refused"].keys() == {"3"}

    # Partly valid: the NaN point and the unknown severity are dropped and kept, the rest is stored.
    payload = json.loads(_batch())
    payload["series"][0]["points"][1][1] = "NaN"
    payload["events"][0]["severity"] = "apocalyptic"
    await gateway.send(Kind.BATCH, 4, json.dumps(payload).encode())
    _, body = await gateway.receive()
    assert body == {"acked": [4], "refused": {}}
    await platform.settle()
    assert (_count(platform.engine, register_read), _count(platform.engine, interval_read)) == (3, 4)
    assert _count(platform.engine, event) == 0
    dead = _rejected(platform.engine)
    assert len(dead) == 3
    assert bytes(dead[0].payload) == b"{not json"  # the opened payload, for an operator to fix
    assert "partly used" in dead[2].reason and "1 points dropped" in dead[2].reason
    assert "events[0] dropped" in dead[2].reason
    await _handled(_link(platform), 3)
    stats = _link(platform).stats
    assert (stats.refused, stats.accepted) == (2, 1)


async def test_health_is_stored_and_shown_by_the_api(platform: Platform, gateway: Gateway) -> None:
    health = {
        "uptime_s": 8123,
        "backlog_readings": 1500,
        "unacked_batches": 3,
        "meters": 12,
        "version": "0.1.0",
    }
    await gateway.send(Kind.HEALTH, 9, health)
    await until(lambda: _link(platform).stats.accepted == 1)
    cheap = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    tenant_id = _tenant_id(platform)
    UserService(platform.engine, passwords=cheap).create_user(
        tenant_id, "ops", "correct horse battery", "operator"
    )
    auth = AuthService(platform.engine, passwords=cheap)
    context = ApiContext(
        engine=platform.engine, settings=platform.settings, auth_service=auth, health=platform.health
    )
    token = auth.authenticate(TENANT, "ops", "correct horse battery").token
    transport = httpx.ASGITransport(app=create_api(context))
    async with httpx.AsyncClient(transport=transport, base_url="http://hes") as api:
        gateway_id = (
            await api.get("/gateways?ident=GW-1", headers={"Authorization": f"Bearer {token}"})
        ).json()["items"][0]["id"]
        response = await api.get(f"/gateways/{gateway_id}/link", headers={"Authorization": f"Bearer {token}"})
        assert (await api.get("/health")).json()["gateway_link"] == "ok"
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["health"] == health
    assert (shown["backlog_readings"], shown["unacked_batches"], shown["window_highest"]) == (1500, 3, 9)
    assert shown["key_present"] is True and shown["key_version"] == 1
    assert shown["last_seen_at"] is not None and shown["health_at"] is not None
    assert "key" not in shown and KEY.hex() not in response.text


def _tenant_id(platform: Platform) -> int:
    with platform.engine.connect() as conn:
        return int(conn.execute(select(tenant.c.id).where(tenant.c.slug == TENANT)).scalar_one())


async def test_discovery_files_pending_devices(platform: Platform, gateway: Gateway) -> None:
    devices = [
        {
            "protocol": "mbus",
            "address": "mbus+serial:///dev/ttyUSB0?secondary=12345678",
            "id": "12345678",
            "manufacturer": "KAM",
            "medium": "heat",
            "seen": DAY.isoformat(),
        },
        {"protocol": "wmbus", "address": "", "id": "87654321", "manufacturer": "DME", "medium": "water"},
        {"protocol": "mbus", "id": ""},  # invalid: kept as a dead letter, the others filed
    ]
    await gateway.send(Kind.DISCOVERY, 11, {"devices": devices})
    await until(lambda: _link(platform).stats.accepted == 1)
    with platform.engine.connect() as conn:
        pending = list_pending(conn, repo.Scope(_tenant_id(platform)))
    assert [(p.protocol, p.ident, p.manufacturer, p.medium, p.status) for p in pending] == [
        ("mbus", "12345678", "KAM", "heat", "pending"),
        ("wmbus", "87654321", "DME", "water", "pending"),
    ]
    assert "devices[2] dropped" in _rejected(platform.engine)[0].reason


async def test_time_requests_are_answered_at_once(platform: Platform, gateway: Gateway) -> None:
    t1 = time.time()
    await gateway.send(Kind.TIME, 12, {"t1": t1})
    answer, body = await gateway.receive()
    assert answer.kind is Kind.TIME
    assert body["t1"] == t1
    assert t1 - 1 <= body["t2"] <= body["t3"] <= time.time() + 1
    await _handled(_link(platform), 1)
    assert _link(platform).stats.time_answers == 1


async def test_alarms_are_published_at_once(platform: Platform, gateway: Gateway) -> None:
    collector = Collector()
    await platform.bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
    alarm = {"events": [{"meter": "MB-1", "ts": DAY.isoformat(), "code": "leak", "severity": "alarm"}]}
    await gateway.send(Kind.ALARM, 13, alarm)
    await until(lambda: _link(platform).stats.accepted == 1)
    await platform.settle()
    assert _count(platform.engine, event) == 1
    assert collector.msg_ids == [f"gw:{TENANT}:GW-1:13"]
    assert collector.batches[0].series == []
    await gateway.nothing_within(0.2)  # alarms are not resent, so not acknowledged


async def test_configuration_is_pushed_with_increasing_versions(platform: Platform, gateway: Gateway) -> None:
    link = _link(platform)
    meters = [{"serial": "MB-1", "protocol": "mbus", "address": "mbus+serial:///dev/ttyUSB0?primary=5"}]
    first = await link.push_config(TENANT, "GW-1", {"poll_interval_s": 900, "meters": meters, "version": 99})
    assert (first.version, first.delivered) == (1, True)
    assert (await link.push_config(TENANT, "GW-1", {"poll_interval_s": 300, "meters": meters})).version == 2
    seqs = []
    for version, interval in ((1, 900), (2, 300)):
        envelope, body = await gateway.receive()
        assert envelope.kind is Kind.CONFIG
        assert (body["version"], body["poll_interval_s"], body["meters"]) == (version, interval, meters)
        seqs.append(envelope.seq)
    await gateway.send(Kind.BATCH, 1, _batch())
    ack, _ = await gateway.receive()
    assert seqs[0] < seqs[1] < ack.seq  # one downlink numbering for every kind
    from openami.hes.gateway_link_store import UnknownGateway

    with pytest.raises(UnknownGateway):
        await link.push_config(TENANT, "GW-3", {})


async def test_configuration_is_sent_again_until_health_reports_it(
    platform: Platform, gateway: Gateway
) -> None:
    """A CONFIG pushed while the broker connection is away is pending, not an error; the gateway's
    next HEALTH brings it, a HEALTH still reporting the old version brings it again once the resend
    interval is over (a fresh downlink number, the same version), one reporting it stops it."""
    link = _link(platform)
    link._config_resend_s = 0.5  # the setting, short for the test
    meters = [{"serial": "MB-1", "protocol": "mbus", "address": "mbus+serial:///dev/ttyUSB0?primary=5"}]
    await link._subscriber.stop()  # the head-end loses the broker
    pushed = await link.push_config(TENANT, "GW-1", {"meters": meters})
    assert (pushed.version, pushed.delivered) == (1, False)
    await link.start()
    await gateway.nothing_within(0.2)
    await gateway.send(Kind.HEALTH, 1, {"config_version": 0, "uptime_s": 1})
    first, body = await gateway.receive()
    assert (first.kind, body["version"], body["meters"]) == (Kind.CONFIG, 1, meters)
    await gateway.send(Kind.HEALTH, 2, {"config_version": 0})  # within the interval: not again
    await gateway.nothing_within(0.3)
    await asyncio.sleep(0.3)
    await gateway.send(Kind.HEALTH, 3, {"config_version": 0})
    again, body = await gateway.receive()
    assert (again.kind, body["version"]) == (Kind.CONFIG, 1) and again.seq > first.seq
    await asyncio.sleep(0.6)
    await gateway.send(Kind.HEALTH, 4, {"config_version": 1})  # applied
    await gateway.nothing_within(0.3)
    assert link.stats.configs_resent == 2


async def test_gateways_are_handled_concurrently_each_in_order(platform: Platform, prefix: str) -> None:
    ids = _provision(platform)
    assert platform.vault is not None
    platform.vault.store_gateway_key(ids["tenant"], ids["GW-3"], OTHER_KEY)
    async with (
        Gateway(platform.mqtt_url, prefix, "GW-1", KEY) as one,
        Gateway(platform.mqtt_url, prefix, "GW-3", OTHER_KEY) as three,
    ):
        for seq in range(1, 6):
            for gw in (one, three):
                await gw.send(Kind.BATCH, seq, _batch(start=DAY + timedelta(hours=seq)))
        for gw in (one, three):
            acked = [(await gw.receive())[1]["acked"] for _ in range(5)]
            assert acked == [[1], [2], [3], [4], [5]]
    await _handled(_link(platform), 10)
    assert _link(platform).stats.accepted == 10


async def test_the_replay_window_survives_a_restart(settings: Settings, prefix: str) -> None:
    first = Platform.build(settings)
    await first.start()
    try:
        _provision(first)
        async with Gateway(first.mqtt_url, prefix) as gw:
            envelope = await gw.send(Kind.BATCH, 77, _batch())
            first_ack, _ = await gw.receive()
        await first.settle()
    finally:
        await first.stop()

    second = Platform.build(settings)
    await second.start()
    try:
        collector = Collector()
        await second.bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
        async with Gateway(second.mqtt_url, prefix) as gw:
            await gw.publish(envelope)
            ack, body = await gw.receive()
        assert body == {"acked": [77], "refused": {}}
        assert ack.seq == first_ack.seq + 1  # the downlink numbering survived too
        await second.settle()
        assert collector.batches == []
        await _handled(_link(second), 1)
        assert _link(second).stats.duplicates == 1
        assert _count(second.engine, register_read) == 4
    finally:
        await second.stop()


# -- the listener on its own ---------------------------------------------------------------------------


@pytest.fixture
async def embedded_url() -> AsyncIterator[str]:
    async with EmbeddedBroker("127.0.0.1", 0) as broker:
        yield broker.url


@pytest.fixture
def link_store(tmp_path: Path) -> Iterator[tuple[Engine, KeyVault]]:
    """A migrated SQLite database with gateway GW-1 (a concentrator) of acme holding KEY."""
    engine = make_engine(f"sqlite:///{tmp_path / 'link.sqlite3'}")
    upgrade(engine)
    with engine.begin() as conn:
        tenant_id = repo.tenants.create(conn, {"slug": TENANT, "name": "Acme"}).id
        gateway_id = repo.comm_devices.create(conn, tenant_id, {"ident": "GW-1", "kind": "concentrator"}).id
    vault = KeyVault(engine, bytes(32))
    vault.store_gateway_key(tenant_id, gateway_id, KEY)
    yield engine, vault
    engine.dispose()


async def test_large_batches_are_split_and_mqtt5_falls_back_on_a_311_broker(
    embedded_url: str, prefix: str, link_store: tuple[Engine, KeyVault]
) -> None:
    engine, vault = link_store
    bus = MemoryBus()
    await bus.start()
    collector = Collector()
    await bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
    rejections = Rejections()
    link = GatewayLinkListener(
        embedded_url,
        prefix,
        bus,
        engine,
        vault,
        mqtt5=True,
        on_rejected=rejections,
        max_bus_message_bytes=4000,
        reconnect_min_s=0.05,
    )
    await link.start()
    try:
        assert link.mqtt_version == "3.1.1" and not link.topic_filter.startswith("$share/")
        async with Gateway(embedded_url, prefix) as gw:
            await gw.send(Kind.BATCH, 8, _batch(hours=24))
            _, body = await gw.receive()
        assert body == {"acked": [8], "refused": {}}
        await bus.drain()
        assert len(collector.msg_ids) > 1
        assert collector.msg_ids == [f"gw:{TENANT}:GW-1:8#{i}" for i in range(len(collector.msg_ids))]
        assert len(collector.readings) == 2 * 96
        assert rejections.items == []
    finally:
        await link.stop()
        await bus.close()


async def test_a_batch_the_bus_cannot_take_is_not_acknowledged_and_comes_again(
    embedded_url: str, prefix: str, link_store: tuple[Engine, KeyVault]
) -> None:
    engine, vault = link_store
    down = MemoryBus()
    await down.start()
    await down.close()  # a bus that refuses every publish, as one that lost its servers does
    rejections = Rejections()
    link = GatewayLinkListener(embedded_url, prefix, down, engine, vault, mqtt5=False, on_rejected=rejections)
    await link.start()
    async with Gateway(embedded_url, prefix) as gw:
        try:
            await gw.send(Kind.BATCH, 8, _batch())
            await until(lambda: link.stats.failed == 1)
            await gw.nothing_within(0.3)  # not acknowledged: the gateway keeps it and sends it again
        finally:
            await link.stop()
        assert rejections.items == []  # not a dead letter either: nothing is wrong with it
        with engine.connect() as conn:
            assert conn.execute(select(gateway_link.c.up_highest)).scalar_one() == -1

        bus = MemoryBus()
        await bus.start()
        collector = Collector()
        await bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
        again = GatewayLinkListener(embedded_url, prefix, bus, engine, vault, mqtt5=False)
        await again.start()
        try:
            await gw.send(Kind.BATCH, 8, _batch())
            _, body = await gw.receive()
            assert body == {"acked": [8], "refused": {}}
            await bus.drain()
            assert len(collector.readings) == 8
        finally:
            await again.stop()
            await bus.close()


async def test_the_link_can_be_switched_off(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'off.sqlite3'}",
        mqtt_embedded_port=0,
        dlms_push_port=0,
        poll_interval_s=0,
        gateway_link_enabled=False,
    )
    running = Platform.build(settings)
    await running.start()
    try:
        assert running.gateway_link is None
        assert "gateway_link" not in running.health()
    finally:
        await running.stop()


async def test_the_api_pushes_the_registry_s_meter_list(platform: Platform, gateway: Gateway) -> None:
    """``POST /gateways/{id}/link/config``: the meters whose devices hang below the gateway, with their
    addresses, reach it as a CONFIG envelope; meters without an address are reported, not sent."""
    import httpx

    from openami.security.bootstrap import ensure_user
    from openami.security.service import AuthService
    from openami.store.schema import comm_device
    from openami.store.schema import tenant as tenant_table
    from openami.web.server import build_web_app

    with platform.engine.begin() as conn:  # the gateway fixture provisioned the tenant and GW-1..3
        ids = {"tenant": conn.execute(select(tenant_table.c.id)).scalar_one()}
        for ident in ("GW-1", "GW-3"):
            ids[ident] = conn.execute(
                select(comm_device.c.id).where(comm_device.c.ident == ident)
            ).scalar_one()
        converter = repo.comm_devices.create(
            conn,
            ids["tenant"],
            {
                "ident": "MBC-1",
                "kind": "modem",
                "parent_id": ids["GW-1"],
                "address": "mbus+tcp://10.0.0.9:10001?primary=7",
            },
        ).id
        values = {"serial": "MB-7", "medium": "heat", "protocol": "mbus", "comm_device_id": converter}
        repo.meters.create(conn, ids["tenant"], values)
    ensure_user(platform.engine, TENANT, "olga", "operator password 1", role="operator")
    token = AuthService(platform.engine).authenticate(TENANT, "olga", "operator password 1").token
    headers = {"Authorization": f"Bearer {token}"}
    # In the platform's own event loop, as uvicorn runs the API (a TestClient would run it in another).
    transport = httpx.ASGITransport(app=build_web_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url="http://hes") as client:
        answer = await client.post(
            f"/gateways/{ids['GW-1']}/link/config", json={"poll_interval_s": 600}, headers=headers
        )
        assert answer.status_code == 202, answer.text
        pushed = answer.json()
        assert (pushed["gateway_id"], pushed["ident"], pushed["version"]) == (ids["GW-1"], "GW-1", 1)
        assert (pushed["meters"], pushed["skipped"], pushed["delivered"]) == (1, ["MB-1", "MB-2"], True)
        envelope, body = await gateway.receive()
        assert envelope.kind is Kind.CONFIG and body["poll_interval_s"] == 600
        assert body["meters"] == [
            {
                "serial": "MB-7",
                "protocol": "mbus",
                "address": "mbus+tcp://10.0.0.9:10001?primary=7",
                "model": "",
            }
        ]
        no_key = await client.post(f"/gateways/{ids['GW-3']}/link/config", json={}, headers=headers)
        assert no_key.status_code == 409
