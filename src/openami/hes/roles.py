"""The worker roles a process can play (``openami worker --role …``), built from settings.

- ``scheduler``: the :class:`~openami.hes.scheduler.SchedulerService`, leader or standby, with the
  planning steps (schedules, gap catch-up, firmware campaign waves);
- ``poller``: a :class:`~openami.hes.job_worker.JobWorker` with the read and command executors;
- ``ingest``: the readings consumer that writes to the store (:class:`~openami.mdm.ingest.IngestService`).

Any mix runs in one process; with the in-process bus, all of them must (the bus does not leave the
process). With NATS JetStream, each can run in its own processes on as many machines as wanted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Engine

from openami.bus.base import Bus
from openami.bus.factory import make_bus
from openami.config import Settings
from openami.hes.command_jobs import CommandExecutor
from openami.hes.commands import CommandService
from openami.hes.executors import Executor
from openami.hes.job_worker import JobWorker, WorkerOptions
from openami.hes.leader import LeaderLock
from openami.hes.meter_reader import MeterReader, PullCollectors
from openami.hes.paths import limit_for, rate_for
from openami.hes.scheduler import SchedulerService, Step
from openami.mdm.ingest import IngestService
from openami.observability.metrics import Metrics
from openami.security.keyvault import KeyVault, load_master_key
from openami.store.engine import make_engine
from openami.store.migrate import upgrade

__all__ = [
    "Role",
    "WorkerProcess",
    "command_service",
    "job_worker",
    "planning_steps",
    "scheduler",
    "worker_options",
]

log = logging.getLogger(__name__)


class Role(StrEnum):
    scheduler = "scheduler"
    poller = "poller"
    ingest = "ingest"


class _Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        lease=timedelta(seconds=settings.hes_lease_s),
        sessions=settings.hes_worker_sessions,
        retry_base=timedelta(seconds=settings.hes_retry_base_s),
        retry_cap=timedelta(seconds=max(settings.hes_retry_cap_s, settings.hes_retry_base_s)),
    )


def planning_steps(settings: Settings) -> list[Step]:
    """The leader's periodic work: the schedules' next slots, the re-reads of missing intervals, the
    commands whose jobs ended, and the next waves of firmware campaigns."""
    from openami.hes import campaigns, command_jobs
    from openami.hes.catch_up import plan_catch_up
    from openami.hes.planner import plan_schedules

    horizon = timedelta(seconds=settings.hes_plan_horizon_s)
    window = timedelta(seconds=settings.hes_catch_up_interval_s)

    def schedules(engine: Engine, now: datetime) -> Any:
        return plan_schedules(engine, now, horizon)

    def catch_up(engine: Engine, now: datetime) -> Any:
        return plan_catch_up(engine, now, days=settings.hes_catch_up_days, window=window)

    return [
        Step("schedules", min(60.0, settings.hes_plan_horizon_s / 4), schedules),
        Step("catch-up", float(settings.hes_catch_up_interval_s), catch_up),
        Step("commands", settings.hes_tick_s, command_jobs.settle),
        Step("campaigns", max(settings.hes_tick_s, 5.0), campaigns.advance),
    ]


@dataclass
class WorkerProcess:
    """The services of one ``openami worker`` process, started in order and stopped in reverse."""

    settings: Settings
    roles: frozenset[Role]
    name: str | None = None
    engine: Engine = field(init=False)
    bus: Bus = field(init=False)
    scheduler: SchedulerService | None = field(default=None, init=False)
    worker: JobWorker | None = field(default=None, init=False)
    ingest: IngestService | None = field(default=None, init=False)
    _started: list[_Service] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not self.roles:
            raise ValueError("a worker needs at least one role")
        if self.settings.bus_url in ("memory", "memory://") and self.roles != frozenset(Role):
            log.warning(
                "the in-process bus does not leave this process: roles %s here will not meet the others",
                ", ".join(sorted(self.roles)),
            )
        self.engine = make_engine(self.settings.effective_database_url)
        self.bus = make_bus(self.settings.bus_url, self.settings.bus_namespace)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        await asyncio.to_thread(upgrade, self.engine)
        await self.bus.start()
        if Role.ingest in self.roles:
            self.ingest = IngestService(
                self.engine,
                self.bus,
                Metrics(),
                batch_rows=settings.ingest_batch_rows,
                flush_ms=settings.ingest_flush_ms,
            )
            await self._up(self.ingest)
        if Role.poller in self.roles:
            vault = KeyVault(self.engine, await asyncio.to_thread(load_master_key, settings))
            pull = PullCollectors.build(settings, self.engine, self.bus, vault)
            self.worker = job_worker(settings, self.engine, self.bus, pull, vault, name=self.name)
            await self._up(self.worker)
        if Role.scheduler in self.roles:
            self.scheduler = scheduler(settings, self.engine, self.bus)
            await self._up(self.scheduler)

    async def _up(self, service: _Service) -> None:
        await service.start()
        self._started.append(service)

    async def stop(self) -> None:
        """Stop what started, newest first (the scheduler before the workers before ingest), then the bus."""
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
        await self.bus.close()
        self.engine.dispose()


def command_service(settings: Settings, engine: Engine, vault: KeyVault) -> CommandService:
    return CommandService(
        engine,
        vault,
        client_system_title=bytes.fromhex(settings.dlms_client_system_title),
        timeout_s=settings.dlms_timeout_s,
        fep_wait_s=settings.fep_lend_wait_s,
    )


def job_worker(
    settings: Settings,
    engine: Engine,
    bus: Bus,
    pull: PullCollectors,
    vault: KeyVault,
    *,
    name: str | None,
    commands: CommandService | None = None,
) -> JobWorker:
    """A poller: reads and commands (``commands``: the process's command service, else one of its own),
    throttled by the path limits of the settings."""
    service = commands or command_service(settings, engine, vault)
    executors: list[Executor] = [MeterReader(engine, pull, vault, service), CommandExecutor(engine, service)]
    limits = {str(kind): n for kind, n in settings.hes_path_limits.items()}
    rates = {str(kind): r for kind, r in settings.hes_path_rates.items()}
    return JobWorker(
        engine,
        bus,
        executors,
        name=name,
        options=worker_options(settings),
        limits=lambda path: (limit_for(path, limits), rate_for(path, rates)),
    )


def scheduler(settings: Settings, engine: Engine, bus: Bus) -> SchedulerService:
    """A scheduler, leader or standby, with the planning steps."""
    return SchedulerService(
        engine,
        bus,
        steps=planning_steps(settings),
        tick_s=settings.hes_tick_s,
        batch=settings.hes_dispatch_batch,
        stale=timedelta(seconds=settings.hes_dispatch_stale_s),
        leader=LeaderLock(engine, settings.hes_leader_name),
    )
