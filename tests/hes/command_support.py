"""Running command jobs in tests as a poller would: claim the queued ones, run them with the real
worker's settlement (``JobWorker.run_claimed``), against simulated DLMS meters over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from openami.app import Platform
from openami.hes import command_jobs, job_store
from openami.hes.command_jobs import CommandExecutor, Submission
from openami.hes.commands import CommandService
from openami.hes.job_store import Job
from openami.hes.job_worker import JobWorker, WorkerOptions
from openami.security.bootstrap import create_tenant_with_admin, ensure_user
from openami.simulator.dlms_meter import SimulatedMeter
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from openami.store.schema import comm_device, meter
from tests.hes.dlms_support import register_dlms_meters

CLIENT_TITLE = b"OPENAMIT"
START = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # a Wednesday


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    """A tenant with two users (``operator`` asks, ``supervisor`` approves) and simulated meters."""

    platform: Platform
    simulator: DlmsSimulator
    clock: Clock
    tenant_id: int
    operator: int
    supervisor: int
    meters: dict[str, int]  # serial -> meter id
    worker: JobWorker

    @property
    def engine(self) -> Engine:
        return self.platform.engine

    def submit(self, kind: str, meter_ids: list[int], params: dict[str, Any] | None = None) -> Submission:
        """``kind`` queued by the operator (olga) now, as the API would."""
        return command_jobs.submit(
            self.engine,
            self.tenant_id,
            kind,
            meter_ids,
            actor="user:2:olga",
            user_id=self.operator,
            now=self.clock.now,
            params=params,
        )

    def ids(self) -> list[int]:
        return [self.meters[sim.serial] for sim in self.simulator.meters]

    async def drain(self, rounds: int = 10, only: set[int] | None = None) -> list[Job]:
        """Run every command job due now (or only the jobs of the meters ``only``), round after round
        (retries move the clock past their backoff), until none is left; the jobs claimed, in order."""
        claimed: list[Job] = []
        for _ in range(rounds):
            due = [
                j
                for j in job_store.queued(self.engine, self.clock.now + timedelta(hours=1))
                if only is None or j.target_id in only
            ]
            if not due:
                return claimed
            self.clock.now = max([self.clock.now, *(j.not_before or self.clock.now for j in due)])
            lease = timedelta(minutes=5)
            jobs = [
                taken
                for j in due
                if isinstance(taken := job_store.claim(self.engine, j.id, "test", self.clock.now, lease), Job)
            ]
            claimed.extend(jobs)
            await self.worker.run_claimed(jobs)
        return claimed

    def cut_off(self, meter_id: int) -> None:
        """The meter's modem no longer answers (a closed port on loopback)."""
        with self.engine.begin() as conn:
            device = conn.execute(select(meter.c.comm_device_id).where(meter.c.id == meter_id)).scalar_one()
            conn.execute(
                update(comm_device).where(comm_device.c.id == device).values(address="tcp://127.0.0.1:1")
            )


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
async def simulator(clock: Clock) -> AsyncIterator[DlmsSimulator]:
    async with DlmsSimulator("127.0.0.1", build_meters(4, seed=3, now=clock), 0) as running:
        yield running


def make_rig(platform: Platform, simulator: DlmsSimulator, clock: Clock, timeout_s: float = 3.0) -> Rig:
    admin = create_tenant_with_admin(
        platform.engine, "acme", "Acme", "Europe/Ljubljana", "admin", "pw-pw-pw-1"
    )
    operator = ensure_user(platform.engine, "acme", "olga", "pw-pw-pw-2", role="operator")
    supervisor = ensure_user(platform.engine, "acme", "sam", "pw-pw-pw-3", role="operator")
    assert platform.vault is not None
    ids = register_dlms_meters(platform.engine, platform.vault, admin.tenant_id, simulator)
    service = CommandService(
        platform.engine, platform.vault, client_system_title=CLIENT_TITLE, timeout_s=timeout_s, now=clock
    )
    executor = CommandExecutor(platform.engine, service, now=clock)
    options = WorkerOptions(retry_base=timedelta(seconds=1), retry_cap=timedelta(seconds=2))
    worker = JobWorker(platform.engine, platform.bus, [executor], options=options, now=clock)
    return Rig(platform, simulator, clock, admin.tenant_id, operator.id, supervisor.id, ids, worker)


def count_calls(sim: SimulatedMeter, name: str) -> Callable[[], int]:
    """How many SETs or ACTIONs (``name``: ``"set"``, ``"action"``) the simulated meter was sent; it
    still carries them out."""
    calls: list[object] = []
    real = getattr(sim, name)

    def counting(*args: Any) -> Any:
        calls.append(args[0])
        return real(*args)

    setattr(sim, name, counting)
    return lambda: len(calls)
