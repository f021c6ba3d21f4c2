"""Read jobs run end to end in one process: scheduler (dispatch, sweep) and poller over the in-process
bus, real Modbus simulators over loopback sockets, the store on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from openami.drivers.modbus.models import SDM630
from openami.hes import job_store
from openami.hes.job_store import NewJob
from openami.hes.jobstate import Lane, State
from openami.hes.modbus_collector import MODBUS_PROTOCOL
from openami.hes.paths import paths_for_meters
from openami.hes.roles import Role, WorkerProcess
from openami.security.bootstrap import create_tenant_with_admin
from openami.simulator.modbus_meter import ModbusSimulator, SimulatedModbusMeter
from openami.store.schema import comm_device, job, meter, register_read
from tests.hes.support import platform_settings, until

pytestmark = pytest.mark.timeout(90)


def _register(engine: Engine, port: int, units: list[int]) -> list[int]:
    """Meters behind one concentrator (one path), each on its own Modbus unit id; their ids."""
    tenant_id = create_tenant_with_admin(engine, "jw", "JW", "UTC", "admin", "pw-pw-pw-1").tenant_id
    ids = []
    with engine.begin() as conn:
        parent = conn.execute(
            insert(comm_device)
            .values(tenant_id=tenant_id, ident="C-1", kind="concentrator", protocol="modbus")
            .returning(comm_device.c.id)
        ).scalar_one()
        for unit in units:
            device = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    parent_id=parent,
                    ident=f"M-{unit}",
                    kind="modem",
                    protocol="modbus",
                    address=f"modbus+tcp://127.0.0.1:{port}?unit={unit}",
                )
                .returning(comm_device.c.id)
            ).scalar_one()
            ids.append(
                conn.execute(
                    insert(meter)
                    .values(
                        tenant_id=tenant_id,
                        serial=f"SDM-{unit}",
                        medium="electricity",
                        protocol=MODBUS_PROTOCOL,
                        model=SDM630.model,
                        comm_device_id=device,
                    )
                    .returning(meter.c.id)
                ).scalar_one()
            )
    return ids


def _queue_reads(engine: Engine, meter_ids: list[int], max_attempts: int = 3) -> None:
    paths = paths_for_meters(engine, meter_ids)
    now = datetime.now(UTC)
    jobs = [
        NewJob(
            1,
            "read",
            "meter",
            meter_id,
            params={"what": "registers"},
            lane=Lane.SCHEDULED,
            not_before=now,
            dedup_key=f"test:{meter_id}",
            path=paths[meter_id],
            max_attempts=max_attempts,
        )
        for meter_id in meter_ids
    ]
    assert job_store.plan(engine, jobs, state=State.QUEUED) == len(jobs)


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    settings = platform_settings(
        tmp_path,
        hes_tick_s=0.05,
        hes_retry_base_s=0.05,
        hes_retry_cap_s=0.1,
        hes_dispatch_batch=10,
        hes_path_limits={"concentrator": 2},
        poll_timeout_s=0.3,
    )
    running = WorkerProcess(settings, frozenset(Role))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def _jobs(engine: Engine) -> list[tuple[str, int, str | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(job.c.state, job.c.attempts, job.c.worker, job.c.error).order_by(job.c.id))
        return [(r.state, r.attempts, r.worker, r.error) for r in rows]


async def test_queued_reads_run_once_each_in_sessions_of_one_dispatch(process: WorkerProcess) -> None:
    units = list(range(1, 41))
    simulated = {unit: SimulatedModbusMeter(SDM630, {"1-0:1.8.0": lambda: 1234.0}) for unit in units}
    async with ModbusSimulator("127.0.0.1", 0, simulated) as gateway:
        ids = _register(process.engine, gateway.port, units)
        _queue_reads(process.engine, ids)
        await until(lambda: all(state == "done" for state, *_ in _jobs(process.engine)), 60)
    rows = _jobs(process.engine)
    assert [attempts for _, attempts, _, _ in rows] == [1] * len(units)
    sessions = {worker for _, _, worker, _ in rows}
    assert len(sessions) == 4  # 40 jobs of one path in dispatches of 10: one session each
    worker = process.worker
    assert worker is not None
    await until(lambda: worker.totals.done == len(units), 10)  # counted just after the settling commit
    await until(lambda: _stored(process.engine) >= len(units), 10)


def _stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(register_read.c.channel_id).distinct()).all())


async def test_a_meter_that_never_answers_fails_after_its_attempts_and_others_complete(
    process: WorkerProcess,
) -> None:
    simulated = {1: SimulatedModbusMeter(SDM630, {"1-0:1.8.0": lambda: 1.0})}
    async with ModbusSimulator("127.0.0.1", 0, simulated) as gateway:
        ids = _register(process.engine, gateway.port, [1, 9])  # unit 9 is not on the bus
        _queue_reads(process.engine, ids, max_attempts=3)
        await until(lambda: all(state in ("done", "failed") for state, *_ in _jobs(process.engine)), 60)
    (ok_state, ok_attempts, _, _), (dead_state, dead_attempts, _, error) = _jobs(process.engine)
    assert (ok_state, ok_attempts) == ("done", 1)
    assert (dead_state, dead_attempts) == ("failed", 3)
    assert error


async def test_a_foreign_or_damaged_dispatch_is_dropped_and_the_next_one_still_runs(
    process: WorkerProcess,
) -> None:
    from openami.hes.dispatch import dispatch_subject

    for junk in (b"", b"not json", b'{"lane": 3}', b'{"lane": 9, "ids": [1]}', b'{"lane": 3, "ids": ["x"]}'):
        await process.bus.publish(dispatch_subject(Lane.SCHEDULED), junk)
    simulated = {1: SimulatedModbusMeter(SDM630, {"1-0:1.8.0": lambda: 7.0})}
    async with ModbusSimulator("127.0.0.1", 0, simulated) as gateway:
        ids = _register(process.engine, gateway.port, [1])
        _queue_reads(process.engine, ids)
        await until(lambda: [s for s, *_ in _jobs(process.engine)] == ["done"], 30)
    worker = process.worker
    assert worker is not None
    await until(lambda: worker.totals.done == 1, 10)  # counted just after the settling commit
