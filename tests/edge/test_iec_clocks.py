"""The gateway sets IEC 62056-21 meters' clocks in programming mode: the real agent and config, a real
simulated meter behind a loopback TCP converter, the clock synchronised as the head-end gives it.

The agent's own daily round (:meth:`GatewayAgent.sync_meter_clocks`) checks the IEC meters that have a
``keys.password`` (:func:`iec_clock_targets`) next to its M-Bus meters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.clocks import CLOCK_SYNC_FAILED, CLOCK_SYNCHRONISED, iec_clock_targets
from openami.edge.config import load_config
from openami.simulator.iec62056_21_meter import IecMeterServer, SimulatedIecMeter
from tests.edge.support import write_config
from tests.edge.test_meter_clocks import synchronise

pytestmark = pytest.mark.timeout(30)


async def test_iec_meters_with_a_password_are_set_and_others_skipped(tmp_path: Path) -> None:
    right = SimulatedIecMeter("61000001", address="61000001", password="1234", clock_offset_s=-400.0)
    wrong = SimulatedIecMeter("61000002", address="61000002", password="9999", clock_offset_s=300.0)
    bare = SimulatedIecMeter("61000003", address="61000003", password="0000", clock_offset_s=500.0)
    async with IecMeterServer([right, wrong, bare]) as server:
        url = f"iec+tcp://127.0.0.1:{server.port}?address="
        entries: list[dict[str, Any]] = [
            {"serial": f"IEC-{n}", "protocol": "iec62056-21", "address": f"{url}6100000{n}"}
            for n in (1, 2, 3)
        ]
        entries[0]["keys"] = {"password": "1234"}
        entries[1]["keys"] = {"password": "1"}  # not the meter's; IEC-3 has none
        config = load_config(write_config(tmp_path, gateway="gw-iec", url="mqtt://127.0.0.1:9",
                                          meters=entries, read_timeout_s=1.0))  # fmt: skip
        agent = GatewayAgent(config)
        try:
            iec = iec_clock_targets(agent.targets.iec, agent.meters)
            assert [m.serial for m in iec] == ["IEC-1", "IEC-2"]
            synchronise(agent.clock)
            checks = {c.serial: c for c in (await agent.sync_meter_clocks()) or []}
            events = {e.code: e for e in agent.archive.events()}
        finally:
            agent.archive.close()
    assert {s: c.action for s, c in checks.items()} == {"IEC-1": "set", "IEC-2": "failed"}
    assert abs(right.clock_offset_s) < 1.5 and right.clock_writes == 2
    assert checks["IEC-1"].offset_s == pytest.approx(-400, abs=1.5)
    assert abs(right.clock() - datetime.now(UTC)).total_seconds() < 1.5
    assert wrong.clock_offset_s == 300.0 and bare.clock_offset_s == 500.0 and bare.clock_writes == 0
    assert events[CLOCK_SYNCHRONISED].meter == "IEC-1"
    failed = events[CLOCK_SYNC_FAILED]
    assert failed.meter == "IEC-2" and failed.detail is not None
    assert "Iec62056PasswordRejected" in failed.detail["error"]
