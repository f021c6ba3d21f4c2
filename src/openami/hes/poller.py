"""Scheduled collection: a round every ``interval_s``, aligned to the wall clock, over every protocol.

Rounds start on multiples of the interval (every quarter hour at :00, :15, ...), a few seconds after
the boundary (a tenth of the interval for intervals under 50 s) so the meters have closed the interval
being read. Each round runs every protocol's collection at once (DLMS, Modbus, ...) and merges their
reports. A round that overruns the interval delays the next one to the following boundary (reads are
incremental, so nothing is lost), and the overrun is logged and counted: it means the installation
needs more concurrency or more head-end instances. Each collection reads its meter list again every
round, so meters added or removed take effect without a restart.

This is the minimal scheduler the drivers need; schedules per group of meters, jobs and their
distribution over several head-end instances belong to the head-end core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from openami.hes.rounds import RoundReport

__all__ = ["Collection", "Poller"]

log = logging.getLogger(__name__)

Collection = Callable[[], Awaitable[RoundReport]]
"""One protocol's round: reads its meters and reports (e.g. ``lambda: collector.collect_all(vault)``)."""

_AFTER_BOUNDARY_S: Final = 5.0
_STOP_GRACE_S: Final = 10.0


class Poller:
    """Runs the collections on a schedule until stopped."""

    def __init__(
        self, collections: Sequence[Collection], interval_s: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._collections = list(collections)
        self.interval_s = interval_s
        self._clock = clock
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.overruns = 0
        self.meters_read = 0
        self.meters_failed = 0
        self.last_report: RoundReport | None = None

    def delay_to_next_round(self) -> float:
        """Seconds until the next interval boundary (plus the settling offset)."""
        now = self._clock()
        return self.interval_s - (now % self.interval_s) + min(_AFTER_BOUNDARY_S, self.interval_s / 10)

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="poller")

    async def stop(self) -> None:
        """Let a running round finish (up to a grace period), then cancel it."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), _STOP_GRACE_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_round(self) -> RoundReport:
        """One round now: every collection at once, their reports merged."""
        report = RoundReport()
        for part in await asyncio.gather(*(collect() for collect in self._collections)):
            report.merge(part)
        self.rounds += 1
        self.meters_read += report.succeeded
        self.meters_failed += report.failed
        self.last_report = report
        log.info(
            "collection round: %d meters, %d ok, %d failed, %d readings, %d events, %d clocks set in %.1f s",
            report.meters,
            report.succeeded,
            report.failed,
            report.readings,
            report.events,
            report.clocks_set,
            report.seconds,
        )
        return report

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay_to_next_round())
            if self._stopping.is_set():
                return
            started = self._clock()
            try:
                await self.run_round()
            except Exception:
                log.exception("collection round failed")  # the next round tries again
            if self._clock() - started > self.interval_s:
                self.overruns += 1
                log.warning("collection round took longer than the %d s interval", self.interval_s)
