"""The poller worker: takes dispatches from the bus, claims their jobs, runs them, settles them.

One worker per process (``openami worker --role poller``); any number of them share the work through
one durable consumer per lane (ADR 0013). For each dispatch the worker:

1. waits for one of its ``sessions`` slots, then claims the dispatch's jobs in the store as one session
   on their path, under a lease (a path at its limit answers "busy": the dispatch is handed back to
   the bus with a short delay, and nothing ran);
2. acknowledges the message at once: from the claim on, the job rows and their lease are what keeps
   the work, so a worker killed at any later point leaves jobs running under a lease that runs out,
   and the scheduler's sweep gives them to someone else. A worker killed *before* its claim leaves an
   unacknowledged message that the bus hands to another worker after ``ack_wait_s``, which can
   therefore be short;
3. hands the claimed jobs to the executor of their kind, renewing the lease while it works;
4. settles every job in one transaction: done; queued again after a backoff when the attempt failed,
   another is worth it and attempts are left; failed otherwise.

A job the worker could not settle (its lease ran out meanwhile, and it went to another worker) is left
to the other worker: only the claim that holds the job may finish it, so no job completes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from sqlalchemy import Engine

from openami.bus.base import Bus, Message, SubscribeOptions, Subscription
from openami.hes import job_store
from openami.hes.dispatch import Dispatch, dispatch_subject
from openami.hes.executors import Executor, JobResult
from openami.hes.job_store import BUSY, Job, Settlement
from openami.hes.jobstate import Lane, State, backoff

__all__ = ["JobWorker", "PathLimits", "WorkerOptions", "WorkerTotals", "default_worker_name"]

log = logging.getLogger(__name__)

PathLimits = Callable[[str], tuple[int | None, float | None]]
"""A path's (concurrent sessions, new sessions per second) limits; (None, None): unthrottled."""
_BUSY_DELAY_S: Final = (0.2, 1.5)


def default_worker_name() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _unlimited(_path: str) -> tuple[int | None, float | None]:
    return None, None


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker claims and retries (the settings ``hes_*`` build it)."""

    lease: timedelta = timedelta(seconds=60)
    sessions: int = 16
    """Dispatches of the bulk lanes in progress at once; commands and on-demand reads have their own."""
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(minutes=30)
    ack_wait_s: float = 30.0
    """How soon the bus offers a dispatch again when its worker died before claiming it."""


@dataclass
class WorkerTotals:
    """Counters for logs, ``/metrics`` and the bench."""

    dispatches: int = 0
    busy: int = 0
    claimed: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class JobWorker:
    """See the module docstring. ``executors`` cover the job kinds this worker runs."""

    def __init__(
        self,
        engine: Engine,
        bus: Bus,
        executors: Sequence[Executor],
        *,
        name: str | None = None,
        options: WorkerOptions | None = None,
        limits: PathLimits = _unlimited,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._executors = {kind: executor for executor in executors for kind in executor.kinds}
        self.name = name or default_worker_name()
        self.options = options or WorkerOptions()
        self._limits = limits
        self._now = now
        self._sequence = itertools.count(1)
        self._subscriptions: list[Subscription] = []
        self._slots = {
            bulk: asyncio.Semaphore(self.options.sessions if bulk else 4) for bulk in (True, False)
        }
        self._running: set[asyncio.Task[None]] = set()
        self.totals = WorkerTotals()

    async def start(self) -> None:
        for lane in Lane:
            bulk = lane in (Lane.SCHEDULED, Lane.CATCH_UP)
            options = SubscribeOptions(
                durable=f"hes-pollers-{lane.name.lower().replace('_', '-')}",
                max_deliver=200,
                ack_wait_s=self.options.ack_wait_s,
                max_in_flight=self.options.sessions if bulk else 4,
            )
            self._subscriptions.append(
                await self._bus.subscribe(dispatch_subject(lane), self._handle, options)
            )
        log.info("job worker %s started", self.name)

    async def stop(self) -> None:
        """Stop taking dispatches; those in progress finish and settle first."""
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(*(s.stop() for s in subscriptions))
        if self._running:
            await asyncio.wait(set(self._running))

    async def _handle(self, message: Message) -> None:
        try:
            dispatch = Dispatch.from_bytes(message.data)
        except ValueError as exc:
            log.warning("dropped a message on %s: %s", message.subject, exc)
            return
        self.totals.dispatches += 1
        slots = self._slots[dispatch.lane in (Lane.SCHEDULED, Lane.CATCH_UP)]
        try:
            async with asyncio.timeout(self.options.ack_wait_s / 2):
                await slots.acquire()
        except TimeoutError:  # every session of this worker is busy: let another worker have it
            await message.nak(delay_s=random.uniform(*_BUSY_DELAY_S))
            return
        try:
            claimed = await self._claim(dispatch)
        except BaseException:
            slots.release()
            raise
        if isinstance(claimed, str) or not claimed:
            slots.release()
            if claimed == BUSY:
                self.totals.busy += 1
                await message.nak(delay_s=random.uniform(*_BUSY_DELAY_S))
            return
        task = asyncio.create_task(self._session(claimed, slots), name=f"session {claimed[0].id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _claim(self, dispatch: Dispatch) -> list[Job] | Literal["busy"]:
        session = f"{self.name}#{next(self._sequence)}"
        limit, rate = self._limits(dispatch.path) if dispatch.path is not None else (None, None)
        return await asyncio.to_thread(
            job_store.claim_group,
            self._engine,
            dispatch.ids,
            session,
            self._now(),
            self.options.lease,
            path_limit=limit,
            path_rate=rate,
        )

    async def _session(self, jobs: list[Job], slots: asyncio.Semaphore) -> None:
        try:
            await self.run_claimed(jobs)
        except Exception:
            log.exception(
                "session of jobs %d.. failed; their leases will run out and they come back", jobs[0].id
            )
        finally:
            slots.release()

    async def run_claimed(self, jobs: list[Job]) -> None:
        """Run jobs claimed under one session and settle them (steps 2 and 3 of the module docstring)."""
        self.totals.claimed += len(jobs)
        renewing = asyncio.create_task(self._renew(jobs))
        try:
            results = await self._execute(jobs)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        now = self._now()
        settlements = [self._settlement(item, results[item.id], now) for item in jobs]
        settled = await asyncio.to_thread(job_store.settle_group, self._engine, settlements, now)
        for entry in settlements:
            if entry.item.id not in settled:
                self.totals.lost += 1
                log.warning(
                    "job %d: the claim was lost before it ended (another worker has it)", entry.item.id
                )
                continue
            self.totals.by_kind[entry.item.kind] += 1
            if entry.state is State.DONE:
                self.totals.done += 1
            elif entry.state is State.QUEUED:
                self.totals.retried += 1
            else:
                self.totals.failed += 1
            log.debug("job %d %s by %s", entry.item.id, entry.state, entry.item.worker)

    async def _execute(self, jobs: list[Job]) -> dict[int, JobResult]:
        results: dict[int, JobResult] = {}
        by_kind: dict[str, list[Job]] = defaultdict(list)
        for item in jobs:
            by_kind[item.kind].append(item)
        for kind, members in by_kind.items():
            executor = self._executors.get(kind)
            if executor is None:
                results.update(
                    {
                        j.id: JobResult(False, "no_executor", f"this worker runs no {kind!r} jobs")
                        for j in members
                    }
                )
                continue
            try:
                found = await executor.run(members)
            except Exception as exc:
                # A bug in one executor costs its jobs' attempt, not the worker.
                log.exception("%s executor failed on %d jobs", kind, len(members))
                found = {}
                error = f"InternalError: {type(exc).__name__}"
            else:
                error = "no result"
            for item in members:
                results[item.id] = found.get(item.id) or JobResult(False, "error", error)
        return results

    def _settlement(self, item: Job, result: JobResult, now: datetime) -> Settlement:
        if result.ok:
            outcome = None if result.outcome in (None, "done") else result.outcome
            return Settlement(item, State.DONE, outcome=outcome)
        if result.retry and item.attempt < item.max_attempts:
            wait = backoff(item.attempt, self.options.retry_base, self.options.retry_cap)
            return Settlement(item, State.QUEUED, error=result.error, not_before=now + wait)
        return Settlement(item, State.FAILED, outcome=result.outcome or "failed", error=result.error)

    async def _renew(self, jobs: list[Job]) -> None:
        """Keep the claim's lease ahead of the work until cancelled."""
        every = self.options.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(
                job_store.renew_group, self._engine, jobs, self._now() + self.options.lease
            )
