"""The gateway's publisher: what the collectors publish goes into the archive instead of onto a bus.

The head-end's collectors hand each meter's read to a :class:`~openami.bus.base.Publisher` as one
:class:`~openami.bus.messages.ReadingBatch` on ``readings.<tenant>``. At the edge that publisher is an
:class:`ArchiveSink`: it turns the batch back into archive rows (each reading kept once by meter,
channel and time, the batch's events once by meter, time and code) in one transaction, and hands the
new events of severity ``alarm`` to ``on_alarm``, which the agent forwards at once as an ALARM envelope.
The readings themselves leave the gateway later, in batches cut from the archive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from openami.bus.messages import READINGS_SUBJECT, ReadingBatch
from openami.edge.archive import Archive, ArchivedEvent, ArchivedReading

__all__ = ["AlarmHandler", "ArchiveSink", "SinkStats"]

AlarmHandler = Callable[[list[ArchivedEvent]], None]


@dataclass(slots=True)
class SinkStats:
    batches: int = 0
    readings: int = 0
    """New readings archived (a reading already in the archive is not counted again)."""
    duplicates: int = 0
    events: int = 0
    alarms: int = 0


class ArchiveSink:
    """A :class:`~openami.bus.base.Publisher` that archives (module docstring)."""

    def __init__(self, archive: Archive, *, on_alarm: AlarmHandler | None = None) -> None:
        self._archive = archive
        self._on_alarm = on_alarm
        self.stats = SinkStats()

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Archive one ReadingBatch published on ``readings.<tenant>``; anything else is a bug."""
        if subject.split(".", 1)[0] != READINGS_SUBJECT:
            raise ValueError(f"the gateway archive takes readings, not {subject!r}")
        batch = ReadingBatch.from_bytes(data)
        readings = [
            ArchivedReading(s.meter, s.channel, ts, value, s.unit, s.kind, s.interval_s, quality)
            for s in batch.series
            for ts, value, quality in s.points
        ]
        events = [ArchivedEvent(e.meter, e.ts, e.code, e.severity, dict(e.detail)) for e in batch.events]
        await self._store(readings, events)

    async def add_events(self, events: Sequence[ArchivedEvent]) -> list[ArchivedEvent]:
        """The gateway's own events (a meter lost, found again): archived, alarms forwarded; the new."""
        return await self._store([], list(events))

    async def _store(
        self, readings: list[ArchivedReading], events: list[ArchivedEvent]
    ) -> list[ArchivedEvent]:
        added, new_events = await asyncio.to_thread(self._archive.add, readings, events)
        stats = self.stats
        stats.batches += 1
        stats.readings += added
        stats.duplicates += len(readings) - added
        stats.events += len(new_events)
        alarms = [e for e in new_events if e.severity == "alarm"]
        if alarms:
            stats.alarms += len(alarms)
            if self._on_alarm is not None:
                self._on_alarm(alarms)
        return new_events
