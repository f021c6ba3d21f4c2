"""Encrypted P1 ports (E-MeterP1, as Luxembourg and Austria run them) read by the gateway agent with the
keys of its own configuration: simulated meters pushing over real loopback sockets, the head-end's P1
collector, the gateway's archive. A wrong key fails that meter's read with the reason; a port without
a key is not read, and says which field is missing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.config import load_config
from openami.edge.meters import ENCRYPTED_P1_SKIPPED
from openami.protocols.dsmr import P1Keys
from openami.simulator.p1_meter import P1Encryption, SimulatedP1Meter
from openami.simulator.push_port import PushPortServer
from tests.edge.support import free_port, write_config

pytestmark = pytest.mark.timeout(30)

TITLE = b"OAMLUX01"
KEYS = P1Keys(
    bytes.fromhex("00112233445566778899AABBCCDDEEFF"), bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
)
assert KEYS.authentication_key is not None
EK, AK = KEYS.encryption_key.hex(), KEYS.authentication_key.hex()


@contextlib.asynccontextmanager
async def _serving(*meters: SimulatedP1Meter) -> AsyncIterator[list[int]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(PushPortServer(m)) for m in meters]
        yield [s.port for s in servers]


def _meter(serial: str, port: int, keys: dict[str, str] | None) -> dict[str, Any]:
    address = f"dsmr+tcp://127.0.0.1:{port}?encrypted=1"
    return {"serial": serial, "protocol": "dsmr", "address": address, "keys": keys}


def _agent(directory: Path, meters: list[dict[str, Any]]) -> GatewayAgent:
    path = write_config(directory, gateway="gw-p1", url=f"mqtt://127.0.0.1:{free_port()}", meters=meters)
    agent = GatewayAgent(load_config(path))
    agent.p1.telegram_s = 1.0  # frames come every 50 ms: a refused second is a refused key
    return agent


async def test_encrypted_ports_are_read_with_the_configured_keys(tmp_path: Path) -> None:
    lux = SimulatedP1Meter(3, interval_s=0.05, encryption=P1Encryption(TITLE, KEYS))
    unchecked = SimulatedP1Meter(4, interval_s=0.05, encryption=P1Encryption(TITLE, KEYS))
    async with _serving(lux, unchecked) as (port, other):
        meters = [
            _meter("P1-LUX", port, {"encryption": EK, "authentication": AK}),
            _meter("P1-EK", other, {"encryption": EK}),  # the tag is not checked: the EK alone reads it
            _meter("P1-WRONG", port, {"encryption": "11" * 16, "authentication": AK}),
            _meter("P1-NOKEY", port, None),
            _meter("P1-AK", port, {"authentication": AK}),
        ]
        agent = _agent(tmp_path, meters)
        assert sorted(t.serial for t in agent.targets.p1) == ["P1-EK", "P1-LUX", "P1-WRONG"]
        assert agent.targets.skipped == [("P1-NOKEY", ENCRYPTED_P1_SKIPPED), ("P1-AK", ENCRYPTED_P1_SKIPPED)]
        assert "keys.encryption" in ENCRYPTED_P1_SKIPPED
        report = await agent.poll_once()
    outcomes = {o.serial: o for o in report.outcomes}
    assert outcomes["P1-LUX"].ok and outcomes["P1-EK"].ok
    wrong = outcomes["P1-WRONG"]
    assert not wrong.ok and wrong.error is not None
    assert wrong.error.startswith("P1ProtocolError") and "refused" in wrong.error, wrong.error

    for serial, sim in (("P1-LUX", lux), ("P1-EK", unchecked)):
        archived = {r.channel: r for r in agent.archive.readings(serial)}
        assert outcomes[serial].readings == len(archived) > 10
        stamp = archived["1-0:1.8.1"].ts
        assert abs(stamp - datetime.now(UTC)).total_seconds() < 60  # the telegram's own clock
        expected = sim.measurements(stamp)
        assert set(archived) == set(expected)
        for code, measured in expected.items():
            assert archived[code].value == pytest.approx(measured.value), (serial, code)
    assert agent.archive.readings("P1-WRONG") == []
    agent.archive.close()


def test_a_key_that_is_not_aes_128_skips_the_port_with_the_reason(tmp_path: Path) -> None:
    agent = _agent(tmp_path, [_meter("P1-256", 1, {"encryption": "11" * 32})])
    ((serial, reason),) = agent.targets.skipped
    assert serial == "P1-256" and reason.startswith("keys:") and "AES-128" in reason
    agent.archive.close()
