"""The gateway sets its M-Bus meters' clocks from head-end time: the real agent, a real M-Bus TCP
simulator whose meters keep running clocks, and the clock synchronised by TIME answers fed to the
agent's ClockTracker as the head-end gives them (t1 echoed, t2/t3 on the head-end's clock)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.clocks import CLOCK_SYNC_FAILED, CLOCK_SYNCHRONISED
from openami.edge.config import load_config
from openami.edge.timesync import ClockTracker
from openami.simulator.mbus_meter import MbusBusSimulator, VirtualMbusMeter
from tests.drivers.mbus.test_set_time import clock_meter
from tests.edge.support import write_config

pytestmark = pytest.mark.timeout(30)


def synchronise(clock: ClockTracker, offset_s: float = 0.0, round_trip_s: float = 0.02) -> None:
    """One TIME exchange with a head-end whose clock is ``offset_s`` ahead of this machine's."""
    wall, mono = time.time(), time.monotonic()  # the answer arrives now, the request left earlier
    request = clock.request(wall - round_trip_s, mono - round_trip_s)
    head_end = wall - round_trip_s / 2 + offset_s
    sample = clock.answer({**request, "t2": head_end, "t3": head_end}, mono)
    assert sample is not None and sample.offset_s == pytest.approx(offset_s)


@contextlib.contextmanager
def gateway(tmp_path: Path, bus: MbusBusSimulator, meters: list[VirtualMbusMeter], **settings: Any
            ) -> Iterator[GatewayAgent]:  # fmt: skip
    entries = [
        {
            "serial": f"MB-{m.id}",
            "protocol": "mbus",
            "address": f"mbus+tcp://127.0.0.1:{bus.port}?"
            + (f"primary={m.primary}" if m.primary else f"secondary={m.id}"),
        }
        for m in meters
    ]
    config = load_config(
        write_config(tmp_path, gateway="gw-clocks", url="mqtt://127.0.0.1:9", meters=entries,
                     read_timeout_s=0.3, **settings)
    )  # fmt: skip
    agent = GatewayAgent(config)  # not started: no link needed, the clock is fed directly
    try:
        yield agent
    finally:
        agent.archive.close()


def _events(agent: GatewayAgent, code: str) -> list[Any]:
    return [e for e in agent.archive.events() if e.code == code]


async def test_unsynchronised_gateway_never_sets_a_meter_clock(tmp_path: Path) -> None:
    meter = clock_meter(1, -300.0)
    async with MbusBusSimulator([meter]) as bus:
        with gateway(tmp_path, bus, [meter]) as agent:
            assert not agent.clock.read().synchronised
            assert await agent.sync_meter_clocks() is None
            checks = await agent.meter_clocks.run(agent.targets.mbus)
            assert [c.action for c in checks] == ["unsynchronised"]
            synchronise(agent.clock, round_trip_s=5.0)  # an answer too slow to trust
            assert await agent.sync_meter_clocks() is None
    assert meter.clock_sets == 0 and meter.clock_offset_s == -300.0


async def test_off_clocks_are_set_archived_and_left_alone_when_right(tmp_path: Path) -> None:
    primary = clock_meter(1, -300.0)  # five minutes behind
    secondary = clock_meter(0, 200.0)  # ahead, addressed by its id
    right = clock_meter(2, 5.0)  # within the threshold
    async with MbusBusSimulator([primary, secondary, right]) as bus:
        with gateway(tmp_path, bus, [primary, secondary, right]) as agent:
            synchronise(agent.clock)
            checks = {c.serial: c for c in (await agent.sync_meter_clocks()) or []}
            assert {s: c.action for s, c in checks.items()} == {
                "MB-40000001": "set", "MB-40000000": "set", "MB-40000002": "in_sync",
            }  # fmt: skip
            for meter in (primary, secondary):
                assert meter.clock_offset_s is not None and abs(meter.clock_offset_s) < 1.0
            assert right.clock_sets == 0
            events = {e.meter: e for e in _events(agent, CLOCK_SYNCHRONISED)}
            assert set(events) == {"MB-40000001", "MB-40000000"}
            before = events["MB-40000001"].detail
            assert before["offset_before_s"] == pytest.approx(-299.5, abs=1.5)
            assert abs(before["offset_after_s"]) <= 1.0 and before["resolution_s"] == 1.0
            assert events["MB-40000001"].severity == "info"
            assert events["MB-40000000"].detail["offset_before_s"] == pytest.approx(200, abs=1.5)
            assert await agent.sync_meter_clocks() is None  # not due again for a day
            agent.meter_clocks.last_run = None  # the next day
            again = await agent.sync_meter_clocks()
            assert again is not None and {c.action for c in again} == {"in_sync"}
            assert len(_events(agent, CLOCK_SYNCHRONISED)) == 2 and primary.clock_sets == 1


async def test_meters_follow_head_end_time_and_so_do_readings(tmp_path: Path) -> None:
    meter = clock_meter(1, 0.0)  # right by this machine, which is 120 s ahead of the head-end
    async with MbusBusSimulator([meter]) as bus:
        with gateway(tmp_path, bus, [meter]) as agent:
            synchronise(agent.clock, offset_s=-120.0)
            checks = await agent.sync_meter_clocks()
            assert checks is not None and checks[0].action == "set"
            assert meter.clock_offset_s == pytest.approx(-120.0, abs=1.0)
            await agent.poll_once()
            stamped = agent.archive.readings("MB-40000001")[0].ts
            assert (stamped - datetime.now(UTC)).total_seconds() == pytest.approx(-120.0, abs=2.0)


async def test_minute_clock_is_set_on_the_minute(tmp_path: Path) -> None:
    meter = clock_meter(1, -3000.0, dif=0x04)  # type F: shows minutes only
    async with MbusBusSimulator([meter]) as bus:
        with gateway(tmp_path, bus, [meter]) as agent:
            now = time.time()
            synchronise(agent.clock, offset_s=(59.4 - now % 60) % 60)  # head-end time: hh:mm:59.4
            checks = await agent.sync_meter_clocks()
            assert checks is not None and checks[0].action == "set", checks
            meter_now, head_end = meter.clock(), agent.clock.read().at
            assert meter_now is not None and abs((meter_now - head_end).total_seconds()) < 1.0
            event = _events(agent, CLOCK_SYNCHRONISED)[0]
            assert event.detail["resolution_s"] == 60.0 and event.detail["offset_after_s"] == 0.0


async def test_meters_that_refuse_raise_clock_sync_failed(tmp_path: Path) -> None:
    ignoring = clock_meter(1, -900.0, clock_write="ignore")  # acknowledges, keeps its clock
    silent = clock_meter(2, -900.0, clock_write="silent")
    async with MbusBusSimulator([ignoring, silent]) as bus:
        with gateway(tmp_path, bus, [ignoring, silent]) as agent:
            synchronise(agent.clock)
            checks = await agent.sync_meter_clocks()
            assert checks is not None and {c.action for c in checks} == {"failed"}
            failed = {e.meter: e for e in _events(agent, CLOCK_SYNC_FAILED)}
    assert set(failed) == {"MB-40000001", "MB-40000002"}
    assert all(e.severity == "warning" for e in failed.values())
    kept = failed["MB-40000001"].detail
    assert "still" in kept["error"] and kept["offset_after_s"] == pytest.approx(-899.5, abs=1.5)
    assert "MbusTimeout" in failed["MB-40000002"].detail["error"]
    assert ignoring.clock_offset_s == silent.clock_offset_s == -900.0


async def test_meter_local_time_is_read_in_the_configured_zone(tmp_path: Path) -> None:
    meter = clock_meter(1, 0.0, clock_zone="Europe/Berlin")
    async with MbusBusSimulator([meter]) as bus:
        with gateway(tmp_path, bus, [meter], clock_timezone="Europe/Berlin") as agent:
            synchronise(agent.clock)
            checks = await agent.sync_meter_clocks()
    assert checks is not None and checks[0].action == "in_sync" and meter.clock_sets == 0
