"""Commands to meters behind an OpenAMI gateway, end to end with real parts: the head-end's command jobs
run by a real job worker, its gateway link listener on the platform's embedded broker, the real gateway
agent, and simulated DLMS meters over loopback sockets. Nothing in between is a mock: the command goes
down as a sealed COMMAND envelope, the agent carries it out on the meter and answers, and the command
record is finished by that answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import insert, select, update

from openami.app import Platform
from openami.edge.agent import GatewayAgent
from openami.edge.config import load_config
from openami.hes import command_jobs, safety
from openami.hes.commands import firmware_params
from openami.hes.gateway_commands import AT_GATEWAY
from openami.protocols.edge import Direction, Kind, seal
from openami.security.audit import AuditLog, verify_chain
from openami.simulator.dlms_server import DlmsSimulator
from openami.store import repositories as repo
from openami.store.schema import audit_log, comm_device, command, firmware_campaign, gateway_command, job
from tests.edge.support import KEY, PREFIX, dlms_tcp_meters, write_config
from tests.hes.command_support import Clock, Rig, count_calls, make_rig, simulator
from tests.hes.support import platform_settings, until

__all__ = ["simulator"]  # fixture

pytestmark = pytest.mark.timeout(60)

GATEWAY = "GW-1"
LISTED = 3
"""The agent's configuration lists the first three simulated meters; the fourth is the head-end's only."""


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    """The head-end on embedded defaults: its gateway link listens on the embedded broker."""
    running = Platform.build(platform_settings(tmp_path))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def clock() -> Clock:
    """The head-end's clock at the real time: the gateway checks deadlines against its own clock."""
    return Clock(datetime.now(UTC).replace(microsecond=0))


@dataclass
class Site:
    rig: Rig
    gateway_id: int
    config_path: Path

    @property
    def platform(self) -> Platform:
        return self.rig.platform

    def meter_id(self, index: int) -> int:
        return self.rig.meters[self.rig.simulator.meters[index].serial]

    def submit(self, kind: str, index: int, params: dict[str, Any] | None = None) -> int:
        submission = command_jobs.submit(
            self.rig.engine,
            self.rig.tenant_id,
            kind,
            [self.meter_id(index)],
            actor="user:2:olga",
            user_id=self.rig.operator,
            now=self.rig.clock.now,
            params=params,
        )
        assert submission.refused == []
        return submission.queued[0].command_id

    def command(self, command_id: int) -> Any:
        with self.rig.engine.connect() as conn:
            return conn.execute(select(command).where(command.c.id == command_id)).one()

    def state(self, command_id: int) -> str:
        return str(self.command(command_id).state)

    def delivery(self, command_id: int) -> Any:
        with self.rig.engine.connect() as conn:
            return conn.execute(
                select(gateway_command).where(gateway_command.c.command_id == command_id)
            ).one_or_none()

    async def ended(self, command_id: int, timeout_s: float = 15.0) -> Any:
        await until(lambda: self.state(command_id) not in ("queued", "running", AT_GATEWAY), timeout_s)
        return self.command(command_id)


@pytest.fixture
async def site(platform: Platform, simulator: DlmsSimulator, clock: Clock, tmp_path: Path) -> Site:
    """The command rig's meters moved under an OpenAMI gateway with a link key, and the agent's
    configuration listing the first :data:`LISTED` of them with their keys."""
    rig = make_rig(platform, simulator, clock)
    assert platform.vault is not None and platform.gateway_link is not None
    with platform.engine.begin() as conn:
        gateway_id = repo.comm_devices.create(conn, rig.tenant_id, {"ident": GATEWAY, "kind": "gateway"}).id
        conn.execute(
            update(comm_device).where(comm_device.c.ident.like("MODEM-%")).values(parent_id=gateway_id)
        )
    platform.vault.store_gateway_key(rig.tenant_id, gateway_id, KEY)
    platform.gateway_link.commands.poll_s = 0.05
    platform.gateway_link.commands.health_resend_s = 0.0
    meters = dlms_tcp_meters(simulator.meters[:LISTED], simulator.ports[:LISTED])
    directory = tmp_path / "gateway"
    directory.mkdir()
    path = write_config(
        directory,
        gateway=GATEWAY,
        url=platform.mqtt_url,
        mqtt_version="3.1.1",
        meters=meters,
        poll_interval_s=86400,  # no polling round gets in the way
        health_interval_s=3600.0,
    )
    return Site(rig, gateway_id, path)


@contextlib.asynccontextmanager
async def agent_of(site: Site) -> AsyncIterator[GatewayAgent]:
    agent = GatewayAgent(load_config(site.config_path))
    await agent.start()
    try:
        assert await agent.forwarder.wait_connected(10)
        yield agent
    finally:
        await agent.stop()


def _audit(site: Site, command_id: int) -> list[tuple[str, str]]:
    with site.rig.engine.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.action, audit_log.c.actor, audit_log.c.detail)
            .where(audit_log.c.action.like("command.%"))
            .order_by(audit_log.c.id)
        ).all()
    return [(row.action, row.actor) for row in rows if row.detail.get("command") == command_id]


async def test_a_disconnect_through_the_gateway_opens_the_relay_and_a_reconnect_closes_it(site: Site) -> None:
    sim = site.rig.simulator.meters[0]
    async with agent_of(site) as agent:
        command_id = site.submit("disconnect", 0)
        [claimed] = await site.rig.drain()
        with site.rig.engine.connect() as conn:
            ran = conn.execute(select(job.c.state, job.c.outcome).where(job.c.id == claimed.id)).one()
        assert tuple(ran) == ("done", "sent")  # the job does not wait for the gateway

        ended = await site.ended(command_id)
        assert ended.state == "succeeded", ended.result
        assert ended.result["control_state"] == "disconnected"
        assert ended.result["gateway"] == GATEWAY and ended.result["outcome"] == "done"
        assert not sim.relay_connected  # the simulated meter's relay really is open
        assert _audit(site, command_id) == [
            ("command.disconnect.requested", "user:2:olga"),
            ("command.disconnect.sent_to_gateway", f"job:{claimed.id}"),
            ("command.disconnect.succeeded", f"gateway:{GATEWAY}"),
        ]
        # The ACK naming the command reached the gateway: its result is not sent again.
        await until(lambda: agent.archive.unacked_commands() == [], 10)

        reconnect = site.submit("reconnect", 0)
        await site.rig.drain()
        assert (await site.ended(reconnect)).state == "succeeded"
        assert sim.relay_connected
        assert agent.commands.stats.carried_out == 2
    assert verify_chain(site.rig.engine, site.rig.tenant_id) == (True, None)


async def test_a_gateway_offline_at_send_time_runs_the_command_once_when_it_connects(site: Site) -> None:
    sim = site.rig.simulator.meters[1]
    actions = count_calls(sim, "action")
    command_id = site.submit("disconnect", 1)
    await site.rig.drain()
    await until(lambda: (site.delivery(command_id).sends or 0) >= 1, 10)  # published to nobody
    assert site.state(command_id) == AT_GATEWAY  # visible as sent to the gateway, awaiting its result
    assert site.command(command_id).result == {
        "gateway": GATEWAY,
        "deadline": site.delivery(command_id).deadline.isoformat(),
    }

    async with agent_of(site):  # its first HEALTH makes the head-end send the command again
        ended = await site.ended(command_id)
        assert ended.state == "succeeded", ended.result
        await asyncio.sleep(0.5)  # room for any further (wrong) resend to be carried out
    assert not sim.relay_connected
    assert actions() == 1
    assert site.delivery(command_id).sends >= 2


async def test_a_command_the_head_end_sends_again_is_answered_from_the_archive_not_run_twice(
    site: Site,
) -> None:
    sim = site.rig.simulator.meters[2]
    actions = count_calls(sim, "action")
    async with agent_of(site) as agent:
        command_id = site.submit("disconnect", 2)
        await site.rig.drain()
        first = await site.ended(command_id)
        assert first.state == "succeeded" and actions() == 1
        # The head-end lost the answer (say, restored from a backup): it sends the command again.
        with site.rig.engine.begin() as conn:
            conn.execute(
                update(gateway_command)
                .where(gateway_command.c.command_id == command_id)
                .values(answered_at=None, sent_at=None)
            )
            conn.execute(update(command).where(command.c.id == command_id).values(state=AT_GATEWAY))
        again = await site.ended(command_id)
        assert again.state == "succeeded"
        assert again.result["control_state"] == "disconnected"
        # (The first send may have gone twice already: the agent's HEALTH on connecting races it.)
        await until(lambda: agent.commands.stats.duplicates >= 1, 5)
    assert actions() == 1  # answered with the stored result: the meter was not commanded again


async def test_commands_a_gateway_cannot_carry_out_fail_with_the_reason(site: Site) -> None:
    actions = [count_calls(sim, "action") for sim in site.rig.simulator.meters]
    async with agent_of(site):
        rotation = site.submit("key_rotation", 0, {"key": "encryption"})
        unknown = site.submit("disconnect", LISTED)  # a meter the gateway does not read
        with site.rig.engine.begin() as conn:  # a firmware command as a campaign queues it
            image = firmware_params(b"image", "FW-2")
            campaign_id = conn.execute(
                insert(firmware_campaign)
                .values(
                    tenant_id=site.rig.tenant_id,
                    name="FW-2",
                    identifier="FW-2",
                    image=b"image",
                    image_size=image["size"],
                    image_sha256=image["sha256"],
                    waves=[1],
                    failure_threshold=0.5,
                    state="running",
                    meter_count=1,
                    created_by=site.rig.operator,
                )
                .returning(firmware_campaign.c.id)
            ).scalar_one()
            firmware = command_jobs.enqueue(
                conn,
                site.rig.tenant_id,
                site.meter_id(1),
                "firmware",
                {**image, "campaign_id": campaign_id},
                actor="user:2:olga",
                user_id=site.rig.operator,
                now=site.rig.clock.now,
                audit=AuditLog(),
            ).command_id
        await site.rig.drain()
        results = {cid: await site.ended(cid) for cid in (rotation, unknown, firmware)}
    for ended in results.values():
        assert ended.state == "failed"
    for refused in (rotation, firmware):  # failed at the head-end for good, never sent to the gateway
        assert results[refused].result["permanent"] is True
        assert "key rotations of meters behind gateways are not supported" in results[refused].result["error"]
    assert set(_sent(site)) == {unknown}
    assert results[unknown].result["outcome"] == "unknown_meter"
    assert f"not a DLMS meter of gateway {GATEWAY}" in results[unknown].result["error"]
    assert [count() for count in actions] == [0, 0, 0, 0]


def _sent(site: Site) -> list[int]:
    """The commands handed to a gateway."""
    with site.rig.engine.connect() as conn:
        return list(conn.scalars(select(gateway_command.c.command_id)))


async def _publish_up(platform: Platform, gateway: str, key: bytes, seq: int, body: bytes) -> None:
    port = int(platform.mqtt_url.rsplit(":", 1)[1])
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311) as client:
        envelope = seal(key, gateway, Kind.COMMAND, seq, body, direction=Direction.UP)
        await client.publish(f"{PREFIX}/acme/gw/{gateway}/link/up", envelope, qos=1)


async def test_forged_and_foreign_results_are_rejected_and_never_applied(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Another gateway answering GW-1's command, an unknown command id and an envelope under a wrong key:
    none changes the command, and each is on the security logger."""
    link = site.platform.gateway_link
    assert link is not None and site.platform.vault is not None
    other_key = bytes(range(1, 33))
    with site.rig.engine.begin() as conn:
        other = repo.comm_devices.create(conn, site.rig.tenant_id, {"ident": "GW-2", "kind": "gateway"}).id
    site.platform.vault.store_gateway_key(site.rig.tenant_id, other, other_key)
    command_id = site.submit("disconnect", 0)
    await site.rig.drain()  # sent to GW-1, which is offline
    answer = b'{"command_id": %d, "ok": true, "outcome": "done", "detail": {"control_state": "disconnected"}}'
    caplog.set_level(logging.WARNING, logger="openami.security.gateway_link")
    before = link.stats.received
    await _publish_up(site.platform, "GW-2", other_key, 10, answer % command_id)  # authentic, not its own
    await _publish_up(site.platform, GATEWAY, KEY, 11, answer % 999_999)  # no such command
    await _publish_up(site.platform, GATEWAY, other_key, 12, answer % command_id)  # forged: wrong key
    await until(lambda: link.stats.received - before == 3 and link.stats.rejected >= 1, 10)
    await until(lambda: link.stats.command_results_foreign == 2, 10)
    assert site.state(command_id) == AT_GATEWAY
    assert site.delivery(command_id).answered_at is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "openami.security.gateway_link"]
    assert any(f"answered command {command_id}, which is not one of its commands" in w for w in warnings)
    assert any("answered command 999999" in w for w in warnings)
    assert any("does not verify" in w for w in warnings)
    assert site.rig.simulator.meters[0].relay_connected  # untouched


async def test_a_protected_meter_behind_a_gateway_is_refused_at_the_head_end_and_nothing_is_sent(
    site: Site,
) -> None:
    async with agent_of(site) as agent:
        command_id = site.submit("disconnect", 0)
        safety.protect(
            site.rig.engine,
            site.rig.tenant_id,
            site.meter_id(0),
            "medical",
            reason="oxygen",
            actor="user:3:sam",
        )
        await site.rig.drain()
        assert site.state(command_id) == "refused"
        assert site.delivery(command_id) is None  # no envelope was ever sealed for it
        await asyncio.sleep(0.3)
        assert agent.commands.stats.received == 0
    assert site.rig.simulator.meters[0].relay_connected


async def test_a_command_without_an_answer_by_its_deadline_fails(site: Site) -> None:
    command_id = site.submit("disconnect", 0)
    await site.rig.drain()
    deadline = site.delivery(command_id).deadline
    assert command_jobs.settle(site.rig.engine, deadline - timedelta(seconds=1)) == 0
    assert command_jobs.settle(site.rig.engine, deadline + timedelta(seconds=1)) == 1
    ended = site.command(command_id)
    assert ended.state == "failed"
    assert ended.result["error"].startswith(f"no answer from gateway {GATEWAY} before the deadline")
    assert site.delivery(command_id).expired_at is not None
    assert ("command.disconnect.failed", "system:gateway-commands") in _audit(site, command_id)
