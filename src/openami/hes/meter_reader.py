"""Read jobs: a dispatch's meters read through their protocols' collectors, one result per job.

The collectors already know how to read a list of targets (one master at a time per M-Bus line, one
sign-on at a time per IEC converter, DLMS with its resume point and clock check). A read job only says
*which* meters: the reader looks their protocol up, builds the targets the way each collector's round
would, reads each protocol's share in one ``collect`` call and maps the outcomes back to the jobs.

A meter that cannot be read by pull (its protocol pushes, it was removed, its address does not parse)
is a permanent failure of its job, not something to retry. A meter that did not answer is a failure
worth another attempt.

A catch-up job (``params["since"]``) re-reads a DLMS meter's load profile from that time; the store
keeps the first copy of every interval, so re-reading what is already there costs nothing but time.

A DLMS meter that refuses the vault's keys may have taken a rotated key whose confirmation was lost
(:meth:`openami.hes.commands.CommandService.adopt_pending_key`): when the reader has the command
service, it tries that pending key, and if the meter answers to it the key is kept and the meter read
again at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import Engine, select

from openami.bus.base import Publisher
from openami.config import Settings
from openami.hes.commands import CommandService
from openami.hes.dlms_collector import CollectorOptions, DlmsCollector
from openami.hes.dlms_targets import DLMS_PROTOCOL, DlmsTarget
from openami.hes.dlms_targets import load_targets as load_dlms_targets
from openami.hes.executors import JobResult
from openami.hes.fep import FrontEndProcessor
from openami.hes.iec_collector import IEC_PROTOCOL, IecCollector, load_iec_targets
from openami.hes.job_store import Job
from openami.hes.mbus_collector import MBUS_PROTOCOL, MbusCollector, load_mbus_targets
from openami.hes.modbus_collector import MODBUS_PROTOCOL, ModbusCollector, load_modbus_targets
from openami.hes.p1_collector import DSMR_PROTOCOL, SML_PROTOCOL, P1Collector, load_p1_targets
from openami.hes.rounds import MeterOutcome, RoundReport
from openami.security.keyvault import KeyVault
from openami.store.schema import meter, tenant

__all__ = ["READ_KIND", "MeterReader", "PullCollectors"]

log = logging.getLogger(__name__)

READ_KIND: Final = "read"
_KEY_REFUSALS: Final = ("DlmsAuthFailed",)
"""How a DLMS outcome's error starts when the meter refused the session's keys."""


class _Target(Protocol):
    @property
    def tenant(self) -> str: ...

    @property
    def serial(self) -> str: ...


Loader = Callable[[list[int]], tuple[Sequence[_Target], list[tuple[str, str]]]]
"""Blocking: the targets of these meter ids, and (serial, reason) for those that cannot be read."""


@dataclass
class PullCollectors:
    """One collector per pull protocol, as the platform and every poller worker build them."""

    dlms: DlmsCollector
    modbus: ModbusCollector
    mbus: MbusCollector
    iec: IecCollector
    p1: P1Collector

    @classmethod
    def build(
        cls,
        settings: Settings,
        engine: Engine,
        bus: Publisher,
        vault: KeyVault,
        *,
        fep: FrontEndProcessor | None = None,
    ) -> PullCollectors:
        options = CollectorOptions(
            client_system_title=bytes.fromhex(settings.dlms_client_system_title),
            timeout_s=settings.dlms_timeout_s,
            concurrency=settings.poll_concurrency,
            clock_threshold=timedelta(seconds=settings.dlms_clock_threshold_s),
            backfill=timedelta(days=settings.dlms_backfill_days),
            fep_wait_s=settings.fep_lend_wait_s,
        )
        return cls(
            dlms=DlmsCollector(engine, bus, options, fep=fep),
            modbus=ModbusCollector(
                engine, bus, timeout_s=settings.poll_timeout_s, concurrency=settings.poll_concurrency
            ),
            mbus=MbusCollector(engine, bus, timeout_s=settings.poll_timeout_s),
            iec=IecCollector(engine, bus, timeout_s=settings.poll_timeout_s),
            p1=P1Collector(engine, bus, vault=vault, concurrency=settings.poll_concurrency),
        )


@dataclass(frozen=True, slots=True)
class _Meter:
    tenant: str
    serial: str
    protocol: str


class MeterReader:
    """The executor of ``read`` jobs (see the module docstring)."""

    kinds: frozenset[str] = frozenset({READ_KIND})

    def __init__(
        self,
        engine: Engine,
        collectors: PullCollectors,
        vault: KeyVault,
        commands: CommandService | None = None,
    ) -> None:
        self._engine = engine
        self._collectors = collectors
        self._vault = vault
        self._commands = commands
        self._protocols: dict[str, tuple[Loader, Callable[[Sequence[Any]], Awaitable[RoundReport]]]] = {
            DLMS_PROTOCOL: (self._load_dlms, collectors.dlms.collect),
            MODBUS_PROTOCOL: (lambda ids: load_modbus_targets(engine, ids), collectors.modbus.collect),
            MBUS_PROTOCOL: (lambda ids: load_mbus_targets(engine, ids), collectors.mbus.collect),
            IEC_PROTOCOL: (lambda ids: load_iec_targets(engine, ids), collectors.iec.collect),
            DSMR_PROTOCOL: (lambda ids: load_p1_targets(engine, ids), collectors.p1.collect),
            SML_PROTOCOL: (lambda ids: load_p1_targets(engine, ids), collectors.p1.collect),
        }

    def _load_dlms(self, ids: list[int]) -> tuple[list[DlmsTarget], list[tuple[str, str]]]:
        return load_dlms_targets(self._engine, self._vault, meter_ids=ids)

    async def run(self, jobs: Sequence[Job]) -> dict[int, JobResult]:
        results: dict[int, JobResult] = {}
        meters = await asyncio.to_thread(self._meters, [j.target_id for j in jobs if j.target_id is not None])
        groups: dict[tuple[str, str, bool], list[Job]] = defaultdict(list)
        for item in jobs:
            found = meters.get(item.target_id) if item.target_id is not None else None
            if found is None:
                results[item.id] = JobResult(False, "unknown_meter", "no such active meter", retry=False)
            elif found.protocol not in self._protocols:
                results[item.id] = JobResult(
                    False,
                    "not_pullable",
                    f"{found.protocol} meters send their data; they are not read",
                    retry=False,
                )
            else:
                groups[found.tenant, found.protocol, "since" in item.params].append(item)
        for (slug, protocol, catch_up), members in groups.items():
            by_serial = {meters[j.target_id].serial: j for j in members if j.target_id is not None}
            results.update(await self._read(slug, protocol, catch_up, by_serial))
        return results

    def _meters(self, ids: list[int]) -> dict[int, _Meter]:
        query = (
            select(meter.c.id, meter.c.serial, meter.c.protocol, tenant.c.slug)
            .join(tenant, tenant.c.id == meter.c.tenant_id)
            .where(meter.c.id.in_(ids), meter.c.status == "active")
        )
        with self._engine.connect() as conn:
            return {row.id: _Meter(row.slug, row.serial, row.protocol) for row in conn.execute(query)}

    async def _read(
        self, slug: str, protocol: str, catch_up: bool, jobs: dict[str, Job]
    ) -> dict[int, JobResult]:
        """Read one tenant's meters of one protocol (``jobs`` by serial)."""
        load, collect = self._protocols[protocol]
        ids = [j.target_id for j in jobs.values() if j.target_id is not None]
        targets, skipped = await asyncio.to_thread(load, ids)
        mine = [t for t in targets if t.tenant == slug and t.serial in jobs]
        if catch_up and protocol == DLMS_PROTOCOL:
            outcomes = [await self._catch_up(t, jobs[t.serial]) for t in mine if isinstance(t, DlmsTarget)]
        else:
            outcomes = (await collect(mine)).outcomes if mine else []
        if protocol == DLMS_PROTOCOL:
            outcomes = await self._again_with_pending_keys(mine, outcomes, jobs)
        results = {jobs[o.serial].id: _result(o) for o in outcomes if o.serial in jobs}
        refused = dict(skipped)
        for serial, item in jobs.items():
            if item.id not in results:
                reason = refused.get(serial, "the meter cannot be read")
                results[item.id] = JobResult(False, "unreadable", reason, retry=False)
        return results

    async def _again_with_pending_keys(
        self, targets: Sequence[Any], outcomes: list[MeterOutcome], jobs: dict[str, Job]
    ) -> list[MeterOutcome]:
        """``outcomes``, where each meter that refused our keys and answered to a pending rotated key is
        read again with it (module docstring)."""
        if self._commands is None:
            return outcomes
        by_serial = {t.serial: t for t in targets if isinstance(t, DlmsTarget)}
        result = []
        for outcome in outcomes:
            target = by_serial.get(outcome.serial)
            if not outcome.ok and target is not None and (outcome.error or "").startswith(_KEY_REFUSALS):
                adopted = await self._commands.adopt_pending_key(
                    target.tenant_id, target.meter_id, actor=f"job:{jobs[outcome.serial].id}"
                )
                if adopted is not None:
                    log.info("meter %s answers to its pending rotated key, now kept", target.serial)
                    outcome = await self._reread(target, jobs[outcome.serial])
            result.append(outcome)
        return result

    async def _reread(self, target: DlmsTarget, item: Job) -> MeterOutcome:
        fresh, _ = await asyncio.to_thread(self._load_dlms, [target.meter_id])
        if not fresh:
            return MeterOutcome(target.serial, error="the meter cannot be read after its key changed")
        if "since" in item.params:
            return await self._catch_up(fresh[0], item)
        [outcome] = (await self._collectors.dlms.collect([fresh[0]])).outcomes
        return outcome

    async def _catch_up(self, target: DlmsTarget, item: Job) -> MeterOutcome:
        since = datetime.fromisoformat(str(item.params["since"]))
        return await self._collectors.dlms.collect_meter(target, since, None)


def _result(outcome: MeterOutcome) -> JobResult:
    if outcome.ok:
        return JobResult(
            True,
            "done",
            detail={"readings": outcome.readings, "events": outcome.events, "clock_set": outcome.clock_set},
        )
    return JobResult(False, "no_answer", outcome.error or "the meter did not answer")
