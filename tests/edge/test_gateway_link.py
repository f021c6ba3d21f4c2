"""A virtual gateway (the real agent against simulated M-Bus and Modbus meters) forwarding to a head-end
peer over real brokers: the embedded amqtt (MQTT 3.1.1) and Mosquitto processes of the test's own
(MQTT 5, plain and TLS, stopped and restarted under the agent)."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.archive import Archive
from openami.edge.config import load_config
from openami.protocols.edge import Direction, Kind, seal
from openami.simulator.edge_site import SimulatedSite
from openami.transports.mqtt_broker import EmbeddedBroker
from tests.edge.support import KEY, HeadEndPeer, Mosquitto, eventually, make_tls, points, write_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def site() -> AsyncIterator[SimulatedSite]:
    async with SimulatedSite(mbus=3, modbus=3) as running:
        yield running


@contextlib.asynccontextmanager
async def running(agent: GatewayAgent) -> AsyncIterator[GatewayAgent]:
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def _archived(path: Path) -> set[tuple[str, str, str]]:
    archive = Archive(path)
    try:
        return {(r.meter, r.channel, r.ts.isoformat()) for r in archive.readings()}
    finally:
        archive.close()


def _all_sent(agent: GatewayAgent) -> bool:
    stats = agent.archive.stats()
    return stats["backlog_readings"] == 0 and stats["unacked_batches"] == 0


async def test_forwards_over_the_embedded_broker_and_acks_mark_batches(
    tmp_path: Path, site: SimulatedSite
) -> None:
    async with EmbeddedBroker("127.0.0.1", 0) as broker:
        config = load_config(
            write_config(
                tmp_path, gateway="gw-amqtt", url=broker.url, meters=site.meters, mqtt_version="3.1.1"
            )
        )
        peer = HeadEndPeer(broker.url, "gw-amqtt", version=aiomqtt.ProtocolVersion.V311)
        async with peer, running(GatewayAgent(config)) as agent:
            await eventually(lambda: len(peer.batches) >= 2, 15, "two batches")
            await eventually(lambda: _all_sent(agent), 10, "every batch acknowledged")
            assert agent.forwarder.stats.batches_acked >= 2
            assert peer.health and peer.health[0]["meters"] == 6
            await eventually(lambda: agent.clock.offset_s is not None, 5, "a TIME answer")
            assert abs(agent.clock.offset_s or 0.0) < 0.5  # one machine: the clocks agree
            report = agent.last_report
            assert report is not None and (report.succeeded, report.failed) == (6, 0)
    readings = peer.readings()
    assert len(readings) == len(set(readings))  # no reading in two batches
    assert set(readings) == _archived(config.archive)
    assert {m for m, _, _ in readings} == {m["serial"] for m in site.meters}


async def test_mqtt5_link_carries_no_plaintext_and_reports_health(
    tmp_path: Path, site: SimulatedSite, mosquitto: Mosquitto
) -> None:
    config = load_config(write_config(tmp_path, gateway="gw-m5", url=mosquitto.url, meters=site.meters))
    async with HeadEndPeer(mosquitto.url, "gw-m5") as peer, running(GatewayAgent(config)) as agent:
        await eventually(lambda: len(peer.batches) >= 2, 15, "two batches")
        await agent.send_health()
        await eventually(lambda: any(h["last_poll"] for h in peer.health), 5, "a health report after a poll")
    kinds = {peer.kinds[seq] for seq in peer.accepted}
    assert {Kind.BATCH, Kind.HEALTH, Kind.TIME} <= kinds
    health = next(h for h in reversed(peer.health) if h["last_poll"])
    assert health["meters"] == 6 and health["poll_cycle_s"] is not None and health["version"]
    assert health["clock_offset_s"] is not None and health["clock_round_trip_s"] is not None
    # What the broker saw: envelopes only. No serial, no value, no JSON.
    values = {str(int(p[1])) for payload in peer.batches.values() for s in json.loads(payload)["series"]
              for p in s["points"] if abs(p[1]) >= 1000}  # fmt: skip
    assert values
    for data in peer.raw:
        assert data[:2] == b"OA"
        for secret in [m["serial"].encode() for m in site.meters] + [v.encode() for v in values]:
            assert secret not in data
        assert b"series" not in data and b"points" not in data


async def test_link_loss_keeps_polling_and_delivers_everything_once(
    tmp_path: Path, site: SimulatedSite, mosquitto: Mosquitto
) -> None:
    config = load_config(
        write_config(
            tmp_path, gateway="gw-loss", url=mosquitto.url, meters=site.meters, uplink={"ack_timeout_s": 2.0}
        )
    )
    peer = HeadEndPeer(mosquitto.url, "gw-loss")
    async with running(GatewayAgent(config)) as agent:
        await peer.connect()
        await eventually(lambda: len(peer.batches) >= 2, 15, "batches before the outage")
        mosquitto.stop()
        await peer.disconnect()
        await eventually(lambda: not agent.forwarder.connected, 5, "the agent to notice")
        during = agent.archive.stats()["readings"]
        rounds = agent.poller.rounds
        await eventually(lambda: agent.poller.rounds >= rounds + 2, 10, "two polls without the link")
        assert agent.archive.stats()["readings"] > during  # archived while the broker is away
        assert agent.archive.stats()["backlog_readings"] > 0
        mosquitto.start()
        await peer.connect()
        await eventually(lambda: agent.forwarder.connected, 10, "the agent to reconnect")
        await eventually(lambda: _all_sent(agent), 15, "the backlog to drain")
        assert agent.forwarder.stats.connects >= 2
    await peer.disconnect()
    readings = peer.readings()
    assert len(readings) == len(set(readings))  # each reading arrived in one batch
    assert set(readings) == _archived(config.archive)  # and every archived reading arrived
    assert all(count == 1 for count in peer.accepted.values())  # each number stored once
    for seq, contents in peer.opened().items():
        assert len(contents) == 1, f"sequence {seq} carried two different envelopes"


async def test_tls_to_mosquitto_with_a_generated_ca(tmp_path: Path, site: SimulatedSite) -> None:
    tls = make_tls(tmp_path)
    broker = Mosquitto(tmp_path, tls=tls)
    broker.start()
    try:
        assert broker.url.startswith("mqtts://")
        # Without the CA the broker's certificate is not trusted: no link.
        untrusted = tmp_path / "untrusted"
        untrusted.mkdir()
        config = load_config(write_config(untrusted, gateway="gw-tls", url=broker.url, meters=site.meters))
        async with running(GatewayAgent(config)) as agent:
            assert not await agent.forwarder.wait_connected(1.5)
            assert "certificate" in (agent.forwarder.stats.last_error or "").lower()
        config = load_config(
            write_config(tmp_path, gateway="gw-tls", url=broker.url, meters=site.meters, ca_file=tls.ca)
        )
        context = ssl.create_default_context(cafile=str(tls.ca))
        async with (
            HeadEndPeer(broker.url, "gw-tls", tls_context=context) as peer,
            running(GatewayAgent(config)),
        ):
            await eventually(lambda: len(peer.batches) >= 1, 15, "a batch over TLS")
    finally:
        broker.stop()


async def test_forged_reflected_and_replayed_downlinks_are_refused(
    tmp_path: Path, site: SimulatedSite, mosquitto: Mosquitto
) -> None:
    config = load_config(
        write_config(
            tmp_path, gateway="gw-sec", url=mosquitto.url, meters=site.meters, uplink={"ack_timeout_s": 30.0}
        )
    )
    peer = HeadEndPeer(mosquitto.url, "gw-sec", ack=False)
    async with peer, running(GatewayAgent(config)) as agent:
        await eventually(lambda: len(peer.batches) >= 1, 15, "a batch")
        seq = min(peer.batches)
        forwarder = agent.forwarder

        def pending() -> set[int]:
            return {b.seq for b in agent.archive.pending()}

        peer.down_seq += 1  # the peer's own downlink counter (it answers TIME requests too)
        ack = json.dumps({"acked": [seq]}).encode()
        genuine = seal(KEY, "gw-sec", Kind.ACK, peer.down_seq, ack, direction=Direction.DOWN)
        tampered = bytearray(genuine)
        tampered[-20] ^= 0x01
        forged = [
            bytes(tampered),  # altered on the way
            seal(bytes(32), "gw-sec", Kind.ACK, 2, b'{"acked": [1]}', direction=Direction.DOWN),  # wrong key
            seal(KEY, "gw-other", Kind.ACK, 3, b'{"acked": [1]}', direction=Direction.DOWN),  # other gateway
            peer.raw[0],  # the gateway's own uplink, reflected
            b"not an envelope at all",
        ]
        for data in forged:
            await peer.publish_raw(data)
        await eventually(lambda: forwarder.stats.downlinks_refused == len(forged), 5, "the forgeries refused")
        assert seq in pending()
        await peer.publish_raw(genuine)
        await eventually(lambda: seq not in pending(), 5, "the genuine ACK applied")
        await peer.publish_raw(genuine)  # replayed
        await eventually(
            lambda: forwarder.stats.downlinks_refused == len(forged) + 1, 5, "the replay refused"
        )
        assert (forwarder.stats.last_refusal or "").startswith("replay")
    # The replay window is kept: after a restart the same ACK is still a replay.
    async with peer, running(GatewayAgent(config)) as again:
        await eventually(lambda: again.forwarder.connected, 10, "the restarted agent linked")
        await peer.publish_raw(genuine)
        await eventually(lambda: again.forwarder.stats.downlinks_refused == 1, 5, "the replay refused again")
        assert (again.forwarder.stats.last_refusal or "").startswith("replay")


async def test_bounded_window_resends_and_refusals(
    tmp_path: Path, site: SimulatedSite, mosquitto: Mosquitto
) -> None:
    config = load_config(
        write_config(
            tmp_path,
            gateway="gw-win",
            url=mosquitto.url,
            meters=site.meters,
            batch_readings=20,
            uplink={"window": 3, "ack_timeout_s": 1.0},
        )
    )
    peer = HeadEndPeer(mosquitto.url, "gw-win", ack=False)
    async with peer, running(GatewayAgent(config)) as agent:
        await eventually(lambda: len(peer.batches) == 3, 10, "a full window")
        await eventually(
            lambda: agent.forwarder.stats.batches_resent >= 3, 10, "resends after the ACK timeout"
        )
        assert len(peer.batches) == 3  # never more than the window in flight
        first, second, third = sorted(peer.batches)
        await peer.send(Kind.ACK, {"acked": [first], "refused": {str(second): "unknown meter"}})
        await eventually(lambda: len(peer.batches) == 5, 10, "two more batches in the freed room")
        assert agent.archive.refused() == {second: "unknown meter"}
        assert {b.seq for b in agent.archive.pending()} == {third, *sorted(peer.batches)[3:]}
        health = await agent.health()
        assert health["refused_batches"] == 1 and health["unacked_batches"] == 3


async def test_config_from_the_head_end_replaces_meters_and_survives_a_restart(
    tmp_path: Path, site: SimulatedSite, mosquitto: Mosquitto
) -> None:
    config = load_config(write_config(tmp_path, gateway="gw-cfg", url=mosquitto.url, meters=site.meters))
    kept = site.meters[:2]
    pushed: dict[str, Any] = {
        "version": 7,
        "poll_interval_s": 2,
        "meters": [*kept, {"serial": "BAD-1", "protocol": "mbus", "address": "mbus+tcp://x"}],
    }
    async with HeadEndPeer(mosquitto.url, "gw-cfg") as peer, running(GatewayAgent(config)) as agent:
        await eventually(lambda: agent.forwarder.connected, 10, "the link")
        await peer.send(Kind.CONFIG, pushed)
        await eventually(lambda: agent.config_version == 7, 5, "CONFIG 7 applied")
        assert agent.poll_interval_s == 2 and agent.poller.interval_s == 2
        assert agent.targets.count == 2 and agent.targets.skipped[0][0] == "BAD-1"
        await eventually(lambda: any(h["config_version"] == 7 for h in peer.health), 5, "HEALTH with 7")
        await peer.send(Kind.CONFIG, {"version": 6, "meters": []})  # older: ignored
        await eventually(lambda: agent.forwarder.stats.downlinks_accepted == 2, 5, "CONFIG 6 received")
        assert agent.config_version == 7 and agent.targets.count == 2
    assert json.loads(config.remote_config_path.read_text())["version"] == 7
    restarted = GatewayAgent(config)
    try:
        assert restarted.config_version == 7 and restarted.poll_interval_s == 2
        assert [t.serial for t in restarted.targets.mbus + restarted.targets.modbus] == [
            m["serial"] for m in kept
        ]
    finally:
        restarted.archive.close()


async def test_a_lost_meter_raises_an_alarm_at_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with SimulatedSite(mbus=1, modbus=2) as small:
        config = load_config(
            write_config(
                tmp_path, gateway="gw-alarm", url=mosquitto.url, meters=small.meters, comm_alarm_after=2
            )
        )
        async with HeadEndPeer(mosquitto.url, "gw-alarm") as peer, running(GatewayAgent(config)) as agent:
            await eventually(lambda: len(peer.batches) >= 1, 15, "a batch")
            await small.gateways[0].stop()  # the Modbus gateway goes silent
            await eventually(lambda: bool(peer.alarms), 10, "an ALARM envelope")
            await eventually(lambda: _all_sent(agent), 10, "the batch with the events")
    lost = {e["meter"] for alarm in peer.alarms for e in alarm["events"] if e["code"] == "comm_lost"}
    assert lost == {m["serial"] for m in small.meters if m["protocol"] == "modbus"}
    in_batches = {
        (e["meter"], e["code"]) for payload in peer.batches.values() for e in json.loads(payload)["events"]
    }
    assert {(serial, "comm_lost") for serial in lost} <= in_batches  # and again, reliably, in a batch
    assert all(p[0] for payload in peer.batches.values() for p in points(payload))


async def test_a_batch_unacknowledged_for_long_is_renumbered(
    tmp_path: Path, site: SimulatedSite, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openami.edge import forwarder

    monkeypatch.setattr(forwarder, "RENUMBER_AFTER", 4)  # instead of half the 4,096-wide replay window
    config = load_config(
        write_config(
            tmp_path,
            gateway="gw-renum",
            url=mosquitto.url,
            meters=site.meters,
            health_interval_s=0.2,
            uplink={"window": 1, "ack_timeout_s": 30.0},
        )
    )
    peer = HeadEndPeer(mosquitto.url, "gw-renum", ack=False)
    async with peer, running(GatewayAgent(config)) as agent:
        await eventually(lambda: len(peer.batches) >= 1, 15, "a batch")
        first = min(peer.batches)
        await eventually(lambda: agent.forwarder.stats.batches_renumbered >= 1, 10, "a renumbering")
        await eventually(lambda: len(peer.batches) >= 2, 5, "the batch under its new number")
        again = min(seq for seq in peer.batches if seq > first)
        assert peer.batches[again] == peer.batches[first] and again - first > 4
        assert {b.seq for b in agent.archive.pending()} == {again}
        await peer.send(Kind.ACK, {"acked": [again]})
        await eventually(lambda: again not in {b.seq for b in agent.archive.pending()}, 5, "the ACK")
