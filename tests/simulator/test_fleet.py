"""The simulated meter fleet: its layout, reads through the head-end's real collectors over loopback,
flaky meters failing reproducibly, dead ones never answering, and its serving processes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from openami.bench.hes import day_schedule
from openami.hes import mbus_collector, modbus_collector
from openami.hes.mbus_collector import MbusCollector
from openami.hes.modbus_collector import ModbusCollector
from openami.hes.paths import paths_for_meters
from openami.hes.planner import plan_schedules
from openami.hes.targets import MeterRow
from openami.simulator.fleet import (
    MBUS_PER_CONVERTER,
    MODBUS_PER_GATEWAY,
    FleetMeter,
    FleetProcesses,
    FleetSpec,
    SimulatedFleet,
    meter_address,
    silent_session,
)
from openami.simulator.fleet_registry import register_fleet
from openami.store.schema import job

pytestmark = pytest.mark.timeout(60)
TIMEOUT_S = 0.15


class _Count:
    """A publisher that counts what the collectors publish."""

    def __init__(self) -> None:
        self.messages = 0

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> None:
        self.messages += 1


def _row(meter: FleetMeter, address: str) -> MeterRow:
    return MeterRow(1, "fleet", meter.index + 1, meter.serial, meter.model, address)


async def _read(meters: list[FleetMeter], address: dict[int, str]) -> dict[str, bool]:
    """One read of each meter through the collectors: serial -> ok."""
    bus = _Count()
    mbus = [mbus_collector.target_from_row(_row(m, address[m.index])) for m in meters if m.protocol == "mbus"]
    modbus = [
        modbus_collector.target_from_row(_row(m, address[m.index])) for m in meters if m.protocol == "modbus"
    ]
    outcomes = (await MbusCollector(None, bus, timeout_s=TIMEOUT_S).collect(mbus)).outcomes
    outcomes += (await ModbusCollector(None, bus, timeout_s=TIMEOUT_S).collect(modbus)).outcomes
    assert bus.messages == sum(o.ok for o in outcomes)
    return {o.serial: o.ok for o in outcomes}


def test_the_layout_fills_converters_and_follows_the_seed() -> None:
    spec = FleetSpec(1000, flaky=0.05, dead=0.01, seed=7)
    endpoints = spec.endpoints()
    meters = [m for e in endpoints for m in e.meters]
    assert sorted(m.index for m in meters) == list(range(1000))
    assert len({m.serial for m in meters}) == 1000
    assert {e.protocol for e in endpoints} == {"mbus", "modbus"}
    assert sum(m.protocol == "modbus" for m in meters) == 500
    for endpoint in endpoints:
        limit = MBUS_PER_CONVERTER if endpoint.protocol == "mbus" else MODBUS_PER_GATEWAY
        assert [m.unit for m in endpoint.meters] == list(range(1, len(endpoint.meters) + 1))
        assert len(endpoint.meters) <= limit
    assert len(endpoints) == -(-500 // MBUS_PER_CONVERTER) - (-500 // MODBUS_PER_GATEWAY)
    flaky, dead = spec.failing()
    assert (len(flaky), len(dead)) == (50, 10)
    assert not flaky & dead
    assert spec.failing() == FleetSpec(1000, flaky=0.05, dead=0.01, seed=7).failing()
    assert spec.failing() != FleetSpec(1000, flaky=0.05, dead=0.01, seed=8).failing()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"meters": 0}, "1 to"),
        ({"meters": 10, "flaky": 1.5}, "flaky must be"),
        ({"meters": 10, "flaky": 0.6, "dead": 0.6}, "together"),
    ],
)
def test_a_spec_out_of_range_is_refused(bad: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetSpec(**bad)  # type: ignore[arg-type]


async def test_a_healthy_fleet_is_read_by_the_real_collectors() -> None:
    async with SimulatedFleet(FleetSpec(300, modbus_share=0.5)) as fleet:
        meters = list(fleet.meters())
        address = {m.index: fleet.address(m) for m in meters}
        assert len(fleet.ports) == 2  # one converter, one gateway
        outcomes = await _read(meters, address)
    assert len(outcomes) == 300
    assert all(outcomes.values())


async def test_flaky_meters_fail_as_their_seed_says_and_dead_ones_never_answer() -> None:
    spec = FleetSpec(40, flaky=0.25, flaky_rate=0.5, dead=0.1, seed=3)
    flaky, dead = spec.failing()
    rounds: list[dict[str, bool]] = []
    async with SimulatedFleet(spec) as fleet:
        meters = list(fleet.meters())
        address = {m.index: fleet.address(m) for m in meters}
        for _ in range(4):
            rounds.append(await _read(meters, address))
        stats = fleet.stats
    for m in meters:
        seen = [r[m.serial] for r in rounds]
        if m.index in dead:
            assert seen == [False] * 4, m
        elif m.index in flaky:  # session n of the meter is its n-th read
            assert seen == [not silent_session(spec.seed, m.index, n, 0.5) for n in range(4)], m
        else:
            assert seen == [True] * 4, m
    flaky_seen = [[r[m.serial] for r in rounds] for m in meters if m.index in flaky]
    assert any(not all(s) for s in flaky_seen) and any(any(s) for s in flaky_seen)
    assert stats.silent == sum(not ok for s in flaky_seen for ok in s)
    assert stats.sessions >= 4 * len(meters)


async def test_a_dead_meter_leaves_its_neighbours_answering() -> None:
    spec = FleetSpec(6, modbus_share=0.5, dead=0.5, seed=11)
    _, dead = spec.failing()
    async with SimulatedFleet(spec) as fleet:
        meters = list(fleet.meters())
        outcomes = await _read(meters, {m.index: fleet.address(m) for m in meters})
    assert {m.serial for m in meters if not outcomes[m.serial]} == {
        m.serial for m in meters if m.index in dead
    }


async def test_fleet_processes_serve_their_share_and_stop_in_bounded_time() -> None:
    spec = FleetSpec(1200, flaky=0.0)
    started = time.monotonic()
    with FleetProcesses(spec, processes=2) as served:
        assert len(served.pids) == 2
        assert set(served.ports) == {e.index for e in served.endpoints}
        one_each = [e.meters[0] for e in served.endpoints]
        address = {m.index: served.address(m) for m in one_each}
        assert address[one_each[0].index] == meter_address(one_each[0], "127.0.0.1", served.ports[0])
        outcomes = await _read(one_each, address)
        stopping = time.monotonic()
        stats = served.stop()
        assert time.monotonic() - stopping < served.stop_timeout_s
    assert all(outcomes.values())
    assert stats.sessions == len(one_each)
    assert not served.pids
    assert time.monotonic() - started < 40


async def test_the_registered_fleet_is_what_the_collectors_and_the_planner_see(engine: Engine) -> None:
    async with SimulatedFleet(FleetSpec(600)) as fleet:
        started = time.monotonic()
        registered = register_fleet(engine, fleet, slug="fleet")
        assert time.monotonic() - started < 10
        mbus, skipped_mbus = mbus_collector.load_mbus_targets(engine)
        modbus, skipped_modbus = modbus_collector.load_modbus_targets(engine)
        assert not skipped_mbus and not skipped_modbus
        assert (len(mbus), len(modbus)) == (300, 300)
        by_serial = {m.serial: m for m in fleet.meters()}
        places = {(t.serial, t.port, t.primary) for t in mbus} | {
            (t.serial, t.port, t.device_id) for t in modbus
        }
        assert places == {(m.serial, fleet.ports[m.endpoint], m.unit) for m in by_serial.values()}
        outcomes = await _read([by_serial[mbus[0].serial], by_serial[modbus[-1].serial]],
                               {m.index: fleet.address(m) for m in fleet.meters()})  # fmt: skip
        assert all(outcomes.values())
        paths = paths_for_meters(engine, registered.meter_ids.values())
        expected = {  # an M-Bus line talks to one meter at a time; a Modbus gateway is shared
            m.serial: f"port:127.0.0.1:{fleet.ports[m.endpoint]}"
            if m.protocol == "mbus"
            else f"gateway:{fleet.endpoints[m.endpoint].ident}"
            for m in by_serial.values()
        }
        assert {m.serial: paths[registered.meter_ids[m.index]] for m in by_serial.values()} == expected
        now = datetime.now(UTC)
        schedule_id = day_schedule(engine, registered.tenant_id, now, window=timedelta(hours=23), attempts=3)
        report = plan_schedules(engine, now, timedelta(hours=1))
        assert (report.jobs, report.slots) == (600, 1)
        assert plan_schedules(engine, now, timedelta(hours=1)).jobs == 0
        with engine.connect() as conn:
            jobs = conn.execute(
                select(job.c.target_id, job.c.path, job.c.scheduled_for).where(
                    job.c.schedule_id == schedule_id
                )
            ).all()
        assert sorted(j.target_id for j in jobs) == sorted(registered.meter_ids.values())
        assert {j.scheduled_for for j in jobs} == {now.replace(second=0, microsecond=0)}
        assert all(j.path == paths[j.target_id] for j in jobs)
