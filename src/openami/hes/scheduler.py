"""The scheduler: on every node, but only the leader plans and dispatches (ADR 0013).

Every ``tick_s`` the scheduler asks the :class:`~openami.hes.leader.LeaderLock` whether it leads. A
standby does nothing else; the leader:

- runs its periodic steps when they are due (planning the schedules' next slots, gap catch-up, firmware
  campaign waves): each is a blocking function of (engine, now), run in a thread;
- releases planned jobs whose time has come (``planned`` → ``queued``);
- sweeps running jobs whose lease ran out (a killed worker) back to ``queued``, or fails them;
- dispatches the queued jobs not yet on the bus, grouped by lane and path, most urgent first.

A leader killed between any two of these leaves nothing inconsistent: planning is idempotent by key,
release and sweep are conditional updates, and a dispatch lost with the leader goes stale and is sent
again by the next leader. Planning twice (an old leader that has not noticed yet) makes no second job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from openami.bus.base import Publisher
from openami.hes import dispatch, job_store
from openami.hes.leader import LeaderLock

__all__ = ["SchedulerService", "SchedulerTotals", "Step"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Step:
    """A periodic piece of the leader's work: ``run(engine, now)`` every ``every_s`` seconds."""

    name: str
    every_s: float
    run: Callable[[Engine, datetime], Any]
    last: float = field(default=float("-inf"))


@dataclass
class SchedulerTotals:
    ticks: int = 0
    led_ticks: int = 0
    released: int = 0
    requeued: int = 0
    lost_failed: int = 0
    dispatched: int = 0
    step_errors: int = 0


class SchedulerService:
    """See the module docstring."""

    def __init__(
        self,
        engine: Engine,
        bus: Publisher,
        *,
        steps: list[Step] | None = None,
        tick_s: float = 2.0,
        batch: int = 100,
        stale: timedelta = timedelta(minutes=5),
        leader: LeaderLock | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self.steps = steps or []
        self.tick_s = tick_s
        self.batch = batch
        self.stale = stale
        self.leader = leader or LeaderLock(engine)
        self._now = now
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.totals = SchedulerTotals()
        self.leading: bool | None = None
        """Whether this process led at its last tick (None: no tick yet)."""

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            await task
        await asyncio.to_thread(self.leader.release)
        self.leading = False

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed")  # the next tick tries again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.tick_s)

    async def tick(self) -> None:
        """One round of the leader's work (nothing when this process does not lead)."""
        self.totals.ticks += 1
        leading = await asyncio.to_thread(self.leader.held)
        if leading != self.leading:
            log.info("scheduler %s", "leads" if leading else "stands by")
            self.leading = leading
        if not leading:
            return
        self.totals.led_ticks += 1
        await self._steps()
        now = self._now()
        released = await asyncio.to_thread(job_store.release_due, self._engine, now)
        self.totals.released += len(released)
        requeued, failed = await asyncio.to_thread(job_store.sweep, self._engine, now)
        self.totals.requeued += len(requeued)
        self.totals.lost_failed += len(failed)
        for item in requeued:
            log.info("job %d requeued: %s", item.id, "its worker's lease ran out")
        await self.dispatch_due(now)

    async def dispatch_due(self, now: datetime) -> int:
        """Dispatch every queued job not on the bus yet; how many were."""
        total = 0
        while True:
            due = await asyncio.to_thread(job_store.dispatchable, self._engine, now, stale=self.stale)
            if not due:
                return total
            await dispatch.publish(self._bus, dispatch.group(due, self.batch))
            total += len(due)
            self.totals.dispatched += len(due)

    async def _steps(self) -> None:
        for step in self.steps:
            clock = time.monotonic()
            if clock - step.last < step.every_s:
                continue
            step.last = clock
            try:
                await asyncio.to_thread(step.run, self._engine, self._now())
            except Exception:
                self.totals.step_errors += 1
                log.exception("scheduler step %s failed", step.name)
