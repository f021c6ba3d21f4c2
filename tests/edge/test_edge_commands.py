"""The gateway agent carrying out the head-end's COMMAND envelopes: against simulated DLMS meters over
loopback sockets, through a real broker, with a head-end peer that seals and opens real envelopes
(``tests.edge.support``). Once per command id, typed refusals, results kept until acknowledged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.config import load_config
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.protocols.edge import Kind
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from openami.transports.mqtt_broker import EmbeddedBroker
from tests.edge.support import HeadEndPeer, dlms_tcp_meters, eventually, write_config
from tests.edge.test_gateway_link import running
from tests.hes.command_support import count_calls

pytestmark = pytest.mark.timeout(60)

GATEWAY = "gw-cmd"
_THRESHOLD = CosemAttribute(71, Obis(0, 0, 17, 0, 0, 255), 3)


@dataclass
class Bench:
    broker: EmbeddedBroker
    simulator: DlmsSimulator
    config: Path


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    async with (
        EmbeddedBroker("127.0.0.1", 0) as broker,
        DlmsSimulator("127.0.0.1", build_meters(2, seed=11), 0) as simulator,
    ):
        meters = dlms_tcp_meters(simulator.meters, simulator.ports)
        config = write_config(
            tmp_path,
            gateway=GATEWAY,
            url=broker.url,
            mqtt_version="3.1.1",
            meters=meters,
            poll_interval_s=86400,
            health_interval_s=3600.0,
        )
        yield Bench(broker, simulator, config)


def _peer(bench: Bench) -> HeadEndPeer:
    return HeadEndPeer(bench.broker.url, GATEWAY, version=aiomqtt.ProtocolVersion.V311)


def _command(command_id: int, meter: str, kind: str, **extra: Any) -> dict[str, Any]:
    deadline = datetime.now(UTC) + timedelta(hours=1)
    return {"command_id": command_id, "meter": meter, "kind": kind, "params": {}, "verify": False,
            "deadline": deadline.isoformat(), **extra}  # fmt: skip


def _results(peer: HeadEndPeer) -> list[dict[str, Any]]:
    """Every COMMAND result the gateway sent, in order."""
    return [
        json.loads(payload)
        for _, found in sorted(peer.opened().items())
        for kind, payload in found
        if kind is Kind.COMMAND
    ]


def _of(peer: HeadEndPeer, command_id: int) -> list[dict[str, Any]]:
    return [r for r in _results(peer) if r["command_id"] == command_id]


async def test_a_command_is_carried_out_once_however_often_it_arrives(bench: Bench) -> None:
    sim = bench.simulator.meters[0]
    actions = count_calls(sim, "action")
    async with _peer(bench) as peer, running(GatewayAgent(load_config(bench.config))) as agent:
        assert await agent.forwarder.wait_connected(10)
        sent = await peer.send(Kind.COMMAND, _command(7, sim.serial, "disconnect"))
        await eventually(lambda: len(_of(peer, 7)) == 1, 10, "the result of command 7")
        [first] = _of(peer, 7)
        assert first == {"command_id": 7, "ok": True, "outcome": "done", "error": None,
                         "detail": {"control_state": "disconnected"}}  # fmt: skip
        assert not sim.relay_connected

        refused = agent.forwarder.stats.downlinks_refused
        await peer.publish_raw(sent)  # the same envelope again: a replay, refused by the window
        await eventually(lambda: agent.forwarder.stats.downlinks_refused == refused + 1, 5, "the replay")
        await peer.send(Kind.COMMAND, _command(7, sim.serial, "disconnect", verify=True))  # a resend
        await eventually(lambda: len(_of(peer, 7)) == 2, 10, "command 7 answered again")
        assert _of(peer, 7)[1] == first  # the stored result, the meter not asked again
        assert actions() == 1
        assert agent.commands.stats.duplicates == 1

        # A command the archive holds unfinished (the gateway restarted in the middle of it) is
        # verified first: the relay already is open, so nothing is sent.
        assert agent.archive.begin_command(8, sim.serial, "disconnect", datetime.now(UTC)) is None
        await peer.send(Kind.COMMAND, _command(8, sim.serial, "disconnect"))
        await eventually(lambda: len(_of(peer, 8)) == 1, 10, "the result of command 8")
        assert _of(peer, 8)[0]["outcome"] == "verified" and actions() == 1


async def test_kinds_and_requests_it_cannot_carry_out_get_a_typed_refusal(bench: Bench) -> None:
    sim = bench.simulator.meters[1]
    actions = count_calls(sim, "action")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases = {
        1: (_command(1, sim.serial, "firmware", params={"identifier": "FW-2"}), "unsupported_kind"),
        2: (_command(2, sim.serial, "key_rotation", params={"key": "encryption"}), "unsupported_kind"),
        3: (_command(3, sim.serial, "self_destruct"), "unsupported_kind"),
        4: (_command(4, "NOT-HERE", "disconnect"), "unknown_meter"),
        5: (_command(5, sim.serial, "load_limit", params={"threshold": -5}), "bad_params"),
        6: (_command(6, sim.serial, "disconnect", deadline=past), "expired"),
        7: ({"command_id": 7, "meter": sim.serial, "kind": "disconnect"}, "bad_request"),  # no deadline
    }
    async with _peer(bench) as peer, running(GatewayAgent(load_config(bench.config))) as agent:
        assert await agent.forwarder.wait_connected(10)
        for body, _ in cases.values():
            await peer.send(Kind.COMMAND, body)
        await eventually(lambda: len(_results(peer)) == len(cases), 10, "every refusal")
    answers = {r["command_id"]: r for r in _results(peer)}
    assert {cid: answers[cid]["outcome"] for cid in cases} == {cid: want for cid, (_, want) in cases.items()}
    assert not any(r["ok"] for r in answers.values())
    assert all(r["error"] for r in answers.values())
    assert "threshold" in answers[5]["error"]
    assert actions() == 0 and sim.relay_connected


async def test_load_limit_and_clock_are_confirmed_by_reading_the_meter_back(bench: Bench) -> None:
    sim = bench.simulator.meters[1]
    sim.clock_offset = timedelta(minutes=3)
    async with _peer(bench) as peer, running(GatewayAgent(load_config(bench.config))) as agent:
        assert await agent.forwarder.wait_connected(10)
        await eventually(lambda: agent.clock.synchronised, 10, "head-end time at the gateway")
        await peer.send(Kind.COMMAND, _command(1, sim.serial, "load_limit", params={"threshold": 4200}))
        await peer.send(Kind.COMMAND, _command(2, sim.serial, "time_sync"))
        await eventually(lambda: len(_results(peer)) == 2, 10, "both results")
    answers = {r["command_id"]: r for r in _results(peer)}
    assert answers[1]["outcome"] == "done" and answers[1]["detail"] == {"threshold_active": 4200}
    held = sim.get(_THRESHOLD, None)
    assert isinstance(held, Data) and held.value == 4200  # what the simulated limiter now holds
    assert answers[2]["outcome"] == "done", answers[2]
    assert answers[2]["detail"]["drift_before_s"] == pytest.approx(180, abs=2)
    assert abs(answers[2]["detail"]["drift_after_s"]) <= 2


async def test_results_are_sent_again_after_a_reconnect_until_acknowledged(bench: Bench) -> None:
    sim = bench.simulator.meters[0]
    agent = GatewayAgent(load_config(bench.config))
    async with _peer(bench) as peer, running(agent):
        assert await agent.forwarder.wait_connected(10)
        await peer.send(Kind.COMMAND, _command(1, sim.serial, "disconnect"))
        await peer.send(Kind.COMMAND, _command(2, sim.serial, "reconnect"))
        await eventually(lambda: len(_results(peer)) == 2, 10, "both results")
        await peer.send(Kind.ACK, {"acked": [], "refused": {}, "commands": [1]})  # only the first stored
        await eventually(lambda: [c.id for c in agent.archive.unacked_commands()] == [2], 5, "the ACK")
    async with _peer(bench) as peer, running(GatewayAgent(load_config(bench.config))) as again:
        assert await again.forwarder.wait_connected(10)
        await eventually(lambda: [r["command_id"] for r in _results(peer)] == [2], 10, "the unacked result")
