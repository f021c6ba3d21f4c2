"""The head-end's DLMS pull driver: one collection round reads every DLMS meter and publishes what it read.

Per meter, one session (connect, associate with the meter's keys, release):

1. read the meter's clock; when it is off by more than ``clock_threshold``, set it and record a
   ``clock_synchronised`` event (a meter whose clock drifts stamps its load profile wrongly);
2. read the load profile by range, *incrementally*: from the last interval the store already holds for
   the meter (or ``backfill`` back for a new meter) up to now, in spans of at most ``max_span``. Reads
   are idempotent (the store keys readings by channel and time), so an overlap after a crash costs
   nothing, and a gap never happens: the start is taken from what is stored, not from what was sent;
3. read the event logs the same way, from the last event stored for the meter.

Readings travel on the bus as one ReadingBatch per meter and round (source ``dlms-pull``), one series
per profile column, values scaled by the column's register scaler. The profile's layout (capture objects,
period, scalers) is read once per meter and kept until a read fails. A meter that cannot be read costs
its own round only: failures are counted by kind and reported, never raised.

Where the reads resume from and how a session is opened are given to the collector, so the same rounds
run in two places: in the head-end, resuming from its store (:class:`StoreResume`) with keys from its
key vault and counters in its store (:class:`~openami.hes.dlms_session.DlmsSessions`, the defaults);
in a gateway, resuming from its archive with keys from its configuration (:mod:`openami.edge.dlms`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from sqlalchemy import Engine, func, select, union_all
from sqlalchemy.exc import SQLAlchemyError

from openami.bus.base import Publisher
from openami.bus.messages import MeterEvent, Series
from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsDriverError, DlmsProtocolError
from openami.drivers.dlms.events import EVENT_LOGS, read_event_log
from openami.hes.dlms_session import FEP_WAIT_S, DlmsSessions, SessionOpener
from openami.hes.dlms_targets import DlmsTarget, load_targets
from openami.hes.fep import FrontEndProcessor
from openami.hes.rounds import MeterOutcome, RoundReport, publish_read
from openami.protocols.dlms.axdr import DataType
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.reading_types import reading_type
from openami.protocols.dlms.units import unit_symbol
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.security.keyvault import KeyVault
from openami.store.schema import channel, event, interval_read, register_read

__all__ = ["SOURCE", "CollectorOptions", "DlmsCollector", "ProfileLayout", "ResumePoints", "StoreResume"]

log = logging.getLogger(__name__)

SOURCE: Final = "dlms-pull"
LOAD_PROFILE: Final = Obis(1, 0, 99, 1, 0, 255)
_PROFILE_CLASS, _REGISTER_CLASSES = 7, frozenset({3, 4, 5})
Progress = Callable[[int, int], None]
ResumeTimes = tuple[dict[int, datetime], dict[int, datetime]]
CLOCK_SYNCHRONISED: Final = "clock_synchronised"


class ResumePoints(Protocol):
    """Where each meter's reads resume: what is already kept of it (blocking; run in a thread)."""

    def stored_until(self, targets: Sequence[DlmsTarget]) -> ResumeTimes:
        """Per meter id: the last profile time kept on every profile channel (a channel that lags
        behind the others sets it, so none is left with a gap), and the last event read from its logs.
        A meter with nothing kept is absent (its reads start ``backfill`` back)."""
        ...


@dataclass(frozen=True, slots=True)
class CollectorOptions:
    """How a round behaves; the platform builds it from settings."""

    client_system_title: bytes = b"OPENAMI0"
    timeout_s: float = 10.0
    concurrency: int = 64
    clock_threshold: timedelta = timedelta(seconds=10)
    backfill: timedelta = timedelta(days=7)
    max_span: timedelta = timedelta(days=10)
    read_events: bool = True
    fep_wait_s: float = FEP_WAIT_S
    """Longest wait for a ``fep://`` meter's connection while another session of its device runs."""


@dataclass(frozen=True, slots=True)
class ProfileColumn:
    """One value column of the load profile: its channel code, unit, kind and scale."""

    index: int
    code: str
    unit: str
    kind: str
    scale: float


@dataclass(frozen=True, slots=True)
class ProfileLayout:
    """What a meter's load profile holds, read once: the value columns and the capture period."""

    columns: tuple[ProfileColumn, ...]
    period_s: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def read_layout(client: DlmsClient, profile: Obis = LOAD_PROFILE) -> ProfileLayout:
    """The value columns of ``profile`` (the clock column is the row time) and its capture period."""
    captured = await client.get(CosemAttribute(_PROFILE_CLASS, profile, 3))
    period = await client.get(CosemAttribute(_PROFILE_CLASS, profile, 4))
    if captured.type != DataType.ARRAY or not isinstance(captured.value, tuple):
        raise DlmsDriverError(f"{profile}: capture objects are not an array")
    columns: list[ProfileColumn] = []
    for index, item in enumerate(captured.value):
        fields = item.value
        if index == 0 or not isinstance(fields, tuple) or len(fields) < 3:
            continue  # the first column is the clock: it becomes the row time
        class_id, raw_obis = fields[0].value, fields[1].value
        if not isinstance(class_id, int) or not isinstance(raw_obis, bytes) or len(raw_obis) != 6:
            continue
        obis = Obis.from_bytes(raw_obis)
        kind = reading_type(obis, from_profile=True)
        if kind is None or class_id not in _REGISTER_CLASSES:
            continue  # status words and other non-readings
        scaler, unit = await _scaler_unit(client, obis, class_id)
        columns.append(
            ProfileColumn(index, obis.reduced, unit_symbol(unit) or kind.unit or "", kind.kind, 10.0**scaler)
        )
    period_s = period.value if isinstance(period.value, int) and period.value > 0 else 900
    return ProfileLayout(tuple(columns), period_s)


async def _scaler_unit(client: DlmsClient, obis: Obis, class_id: int) -> tuple[int, int]:
    """(scaler, unit code) of a register-like object: attribute 3 of classes 3, 4 and 5."""
    value = await client.get(CosemAttribute(class_id, obis, 3))
    fields = value.value
    if isinstance(fields, tuple) and len(fields) == 2:
        scaler, unit = fields[0].value, fields[1].value
        if isinstance(scaler, int) and isinstance(unit, int):
            return scaler, unit
    raise DlmsProtocolError(f"{obis}: scaler_unit is not a structure of two integers: {value}")


class DlmsCollector:
    """Runs collection rounds over DLMS meters; see the module docstring.

    ``resume``: where reads resume (None: ``engine``'s store). ``sessions``: how a session with a target
    is opened (None: :class:`~openami.hes.dlms_session.DlmsSessions` on ``engine``, as this head-end).
    ``fep``: the front-end processor through which meters addressed ``fep://`` / ``fep+hdlc://`` are
    read by the default sessions (without one they fail as unreachable). ``engine`` may be None when
    both ``resume`` and ``sessions`` are given (a gateway); :meth:`collect_all` then cannot be used.
    """

    def __init__(
        self,
        engine: Engine | None,
        bus: Publisher,
        options: CollectorOptions | None = None,
        *,
        now: Callable[[], datetime] = _utcnow,
        fep: FrontEndProcessor | None = None,
        resume: ResumePoints | None = None,
        sessions: SessionOpener | None = None,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self.options = options or CollectorOptions()
        self._now = now
        self._layouts: dict[tuple[int, str], ProfileLayout] = {}
        if (resume is None or sessions is None) and engine is None:
            raise ValueError("DlmsCollector needs the store's engine unless resume and sessions are given")
        if resume is None:
            assert engine is not None  # checked above
            resume = StoreResume(engine)
        self._resume = resume
        if sessions is None:
            sessions = DlmsSessions(
                engine,
                self.options.client_system_title,
                self.options.timeout_s,
                fep=fep,
                fep_wait_s=self.options.fep_wait_s,
            ).open
        self._open = sessions

    async def collect_all(self, vault: KeyVault) -> RoundReport:
        """One round over every DLMS meter on record (the list is read again each round)."""
        if self._engine is None:
            raise RuntimeError("collect_all needs the store's engine; without one, call collect(targets)")
        targets, skipped = await asyncio.to_thread(load_targets, self._engine, vault)
        for serial, reason in skipped:
            log.warning("DLMS meter %s skipped: %s", serial, reason)
        return await self.collect(targets)

    async def collect(self, targets: Sequence[DlmsTarget], progress: Progress | None = None) -> RoundReport:
        """Read every target (at most ``concurrency`` at once) and publish what was read."""
        started = time.perf_counter()
        report = RoundReport(meters=len(targets))
        if not targets:
            return report
        profile_since, event_since = await asyncio.to_thread(self._resume.stored_until, targets)
        limit = asyncio.Semaphore(self.options.concurrency)

        async def one(target: DlmsTarget) -> None:
            async with limit:
                try:
                    outcome = await self.collect_meter(
                        target, profile_since.get(target.meter_id), event_since.get(target.meter_id)
                    )
                except Exception as exc:
                    # A bug met on one meter's answers must cost that meter's read, not the round.
                    log.exception("DLMS read of %s failed unexpectedly", target.serial)
                    outcome = MeterOutcome(target.serial, error=f"InternalError: {type(exc).__name__}")
            report.add(outcome)
            if progress is not None:
                progress(len(report.outcomes), report.meters)

        await asyncio.gather(*(one(t) for t in targets))
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    async def collect_meter(
        self, target: DlmsTarget, profile_since: datetime | None, event_since: datetime | None
    ) -> MeterOutcome:
        outcome = MeterOutcome(target.serial)
        options = self.options
        now = self._now()
        known = (target.meter_id, target.serial)  # a gateway's ids follow its meter list: keyed by both
        try:
            async with self._open(target) as client:
                events = await self._check_clock(client, target, now, outcome)
                layout = self._layouts.get(known)
                if layout is None:
                    layout = self._layouts[known] = await read_layout(client)
                series = await self._read_profile(client, target, layout, profile_since, now)
                if options.read_events:
                    events += await self._read_events(client, target, event_since, now)
        except (DlmsDriverError, OSError, SQLAlchemyError) as exc:
            self._layouts.pop(known, None)
            outcome.error = f"{type(exc).__name__}: {exc}"
            log.warning("DLMS read of %s failed: %s", target.serial, outcome.error)
            return outcome
        batch = await publish_read(self._bus, SOURCE, target.tenant, target.serial, now, series, events)
        if batch is not None:
            outcome.readings = batch.reading_count
            outcome.events = len(events)
        outcome.ok = True
        return outcome

    async def _check_clock(
        self, client: DlmsClient, target: DlmsTarget, now: datetime, outcome: MeterOutcome
    ) -> list[MeterEvent]:
        meter_time = await client.get_clock()
        if meter_time.tzinfo is None:
            return []  # a meter that states no deviation: its clock cannot be compared with ours
        drift = (meter_time - now).total_seconds()
        outcome.clock_drift_s = round(drift, 3)
        if abs(drift) <= self.options.clock_threshold.total_seconds():
            return []
        await client.set_clock(self._now())
        outcome.clock_set = True
        return [
            MeterEvent(
                meter=target.serial,
                ts=now,
                code=CLOCK_SYNCHRONISED,
                severity="warning",
                detail={"drift_s": round(drift, 3)},
            )
        ]

    async def _read_profile(
        self,
        client: DlmsClient,
        target: DlmsTarget,
        layout: ProfileLayout,
        since: datetime | None,
        now: datetime,
    ) -> list[Series]:
        start = since + timedelta(seconds=1) if since is not None else now - self.options.backfill
        points: dict[int, list[tuple[datetime, float, int]]] = {c.index: [] for c in layout.columns}
        while start < now:
            end = min(start + self.options.max_span, now)
            for row in await client.read_profile(LOAD_PROFILE, start, end):
                ts = row[0]
                if not isinstance(ts, datetime) or ts.tzinfo is None:
                    continue
                for column in layout.columns:
                    value = row[column.index] if column.index < len(row) else None
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        points[column.index].append((ts.astimezone(UTC), value * column.scale, 0))
            start = end
        return [
            Series(
                meter=target.serial,
                channel=column.code,
                unit=column.unit,
                kind="interval" if column.kind == "interval" else "register",
                interval_s=layout.period_s,
                points=points[column.index],
            )
            for column in layout.columns
            if points[column.index]
        ]

    async def _read_events(
        self, client: DlmsClient, target: DlmsTarget, since: datetime | None, now: datetime
    ) -> list[MeterEvent]:
        start = since + timedelta(seconds=1) if since is not None else now - self.options.backfill
        found: list[MeterEvent] = []
        for log_obis in EVENT_LOGS:
            for entry in await read_event_log(client, log_obis, start, now):
                found.append(
                    MeterEvent(
                        meter=target.serial,
                        ts=entry.ts.astimezone(UTC),
                        code=entry.name,
                        severity=entry.severity,
                        detail={"dlms_code": entry.code, "log": log_obis.reduced},
                    )
                )
        return found


class StoreResume:
    """:class:`ResumePoints` from the head-end's store: its readings and the events it pulled."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def stored_until(self, targets: Sequence[DlmsTarget]) -> ResumeTimes:
        """Per meter: the last profile time stored on every profile channel, and the last pulled event.

        Profile channels are those with a capture period (``interval_s``); a channel that lags behind the
        others sets the start, so no channel is left with a gap.
        """
        meter_ids = [t.meter_id for t in targets]
        latest = [
            select(channel.c.meter_id, channel.c.id, func.max(table.c.ts).label("ts"))
            .join(table, table.c.channel_id == channel.c.id)
            .where(channel.c.meter_id.in_(meter_ids), channel.c.interval_s.is_not(None))
            .group_by(channel.c.meter_id, channel.c.id)
            for table in (interval_read, register_read)
        ]
        events = (
            select(event.c.meter_id, func.max(event.c.ts).label("ts"))
            .where(
                event.c.meter_id.in_(meter_ids),
                event.c.source == SOURCE,
                event.c.code != CLOCK_SYNCHRONISED,
            )
            .group_by(event.c.meter_id)
        )
        profile: dict[int, datetime] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(union_all(*latest)):
                if row.ts is not None:
                    known = profile.get(row.meter_id)
                    profile[row.meter_id] = row.ts if known is None else min(known, row.ts)
            last_events = {row.meter_id: row.ts for row in conn.execute(events) if row.ts is not None}
        return profile, last_events
