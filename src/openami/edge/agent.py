"""The gateway / data-concentrator agent: poll local meters, archive, forward to the head-end.

``openami gateway --config FILE`` runs one :class:`GatewayAgent`:

- **Polling**: every ``poll_interval_s``, aligned to the clock (rounds start on multiples of the
  interval, a few seconds after the boundary: :class:`openami.hes.poller.Poller`), every meter is read
  by the head-end's own collectors (M-Bus, Modbus, IEC 62056-21, DSMR P1, SML, DLMS/COSEM with the
  meters' configured keys: :mod:`openami.edge.dlms`) and the gateway's pulse inputs. The collectors
  publish to an :class:`~openami.edge.sink.ArchiveSink`, so every read lands in the archive (SQLite,
  WAL) before anything is sent.
- **Forwarding**: after each round (and every ``forward_interval_s``) the
  :class:`~openami.edge.forwarder.Forwarder` cuts the new readings into batches and sends what the
  head-end has not acknowledged, over MQTT, sealed under the gateway's link key.
- **Alarms**: new events of severity ``alarm`` go out at once as ALARM envelopes (and again, reliably,
  in the next batch). The agent raises ``comm_lost`` (alarm) on a meter that failed
  ``comm_alarm_after`` polls in a row and ``comm_restored`` (info) when it answers again.
- **Health**: every ``health_interval_s`` (and after each connect) a HEALTH envelope: uptime, archive
  backlog, meters, the last poll and its duration, clock offset and drift (:meth:`GatewayAgent.health`).
- **Time**: every ``time_sync_interval_s`` (and after each connect) a TIME request; the head-end's
  answers give the clock offset, round trip and drift (:class:`~openami.edge.timesync.ClockTracker`),
  and the corrected clock the agent keeps time by: readings, events and batches are stamped with the
  head-end's time once a trusted answer came (until then with the gateway's own clock), as a data
  concentrator keeps one disciplined clock. Once per ``clock_sync_interval_s``, while synchronised,
  each M-Bus meter's clock is read and set when it is more than ``clock_threshold_s`` off
  (:mod:`openami.edge.clocks`: ``clock_synchronised`` and ``clock_sync_failed`` events).
- **Modem**: with a ``[modem]`` section, every ``interval_s`` the AT port is asked for the signal
  (``AT+CSQ``, ``AT+CESQ``), reported in HEALTH as ``signal_dbm`` (:mod:`openami.edge.modem`).
- **Configuration from the head-end**: a CONFIG envelope with a higher ``version`` than the agent has
  replaces the meter list (and the poll interval when it names one). It is kept next to the archive
  (``<archive>.config.json``), so a restart keeps it; from then on the local file's meter list is not
  used until that file is removed.
- **Retention**: once a day the archive drops what is older than ``retention_days``.
- **Radio meters**: the ``[[receivers]]`` are listened to all the time; telegrams of the listed
  ``wmbus`` meters are archived like polled readings (:mod:`openami.edge.wmbus`).
- **Discovery**: meters heard or found on a searched M-Bus that are not in the meter list are kept in
  the archive and reported in DISCOVERY envelopes (:mod:`openami.edge.discovery`).
- **Commands**: the head-end's COMMAND envelopes (disconnect, connect, clock, load limit ...) for the
  DLMS meters are carried out once per command id and answered with their result, kept in the
  archive until the head-end acknowledges it (:mod:`openami.edge.commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from openami import __version__
from openami.edge.archive import Archive, ArchivedEvent
from openami.edge.clocks import ClockCheck, MeterClockSync, iec_clock_targets
from openami.edge.commands import EdgeCommands
from openami.edge.config import GatewayConfig, MeterConfig, RemoteConfig, remote_meters
from openami.edge.discovery import FIRST_SEARCH_S, Discovery
from openami.edge.dlms import ArchiveCounters, client_system_title, dlms_collector
from openami.edge.forwarder import Forwarder
from openami.edge.meters import MeterTargets, build_targets
from openami.edge.modem import ModemProbe, Signal
from openami.edge.pulse import PulseCollector
from openami.edge.sink import ArchiveSink
from openami.edge.timesync import ClockTracker
from openami.edge.wmbus import RadioReceivers
from openami.hes.dlms_session import DlmsSessions
from openami.hes.iec_collector import IecCollector
from openami.hes.mbus_collector import MbusCollector
from openami.hes.modbus_collector import ModbusCollector
from openami.hes.p1_collector import P1Collector
from openami.hes.poller import Poller
from openami.hes.rounds import RoundReport
from openami.protocols.edge import Kind

__all__ = ["GatewayAgent", "run_gateway"]

log = logging.getLogger(__name__)

PURGE_EVERY_S: Final = 86400.0
COMM_LOST: Final = "comm_lost"
COMM_RESTORED: Final = "comm_restored"
CLOCK_CHECK_S: Final = 60.0
"""How often the agent looks whether the meter clock check is due (it runs once per interval)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class GatewayAgent:
    """One gateway (module docstring). ``start`` runs it in the background, ``stop`` ends it;
    :meth:`poll_once` runs one polling round now (tests and the bench)."""

    def __init__(self, config: GatewayConfig, *, now: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock = ClockTracker(max_round_trip_s=config.clock_max_round_trip_s)
        now = now or self.clock.now  # one disciplined clock: head-end time once synchronised
        self._now = now
        self.archive = Archive(config.archive, retention=timedelta(days=config.retention_days))
        self.sink = ArchiveSink(self.archive, on_alarm=self._alarm)
        timeout = config.read_timeout_s
        self.mbus = MbusCollector(None, self.sink, timeout_s=timeout, now=now)
        self.modbus = ModbusCollector(
            None, self.sink, timeout_s=timeout, concurrency=config.concurrency, now=now
        )
        self.iec = IecCollector(None, self.sink, timeout_s=timeout, now=now)
        self.p1 = P1Collector(
            None, self.sink, connect_s=timeout, concurrency=config.concurrency, now=now
        )  # no key vault at the edge: encrypted ports' targets carry their keys (openami.edge.meters)
        self.pulse = PulseCollector(self.archive, self.sink, now=now)
        self.dlms = dlms_collector(config, self.archive, self.sink, now=now)
        self.meter_clocks = MeterClockSync(
            self.mbus, self.sink, self.clock, interval_s=config.clock_sync_interval_s,
            threshold_s=config.clock_threshold_s, zone=config.clock_timezone,
        )  # fmt: skip
        self.modem = None if config.modem is None else ModemProbe(
            config.modem.port, baudrate=config.modem.baudrate, timeout_s=config.modem.timeout_s
        )  # fmt: skip
        self.forwarder = Forwarder(
            config,
            self.archive,
            on_config=self.apply_config,
            on_time=self._time_answer,
            on_connect=self._linked,
            now=now,
        )
        self.poll_interval_s = config.poll_interval_s
        self.config_version = 0
        self.config_error: str | None = None
        self.meters: list[MeterConfig] = list(config.meters)
        self.targets: MeterTargets = build_targets(self.meters, config.tenant)
        self.discovery = Discovery(
            config.discovery, self.archive, self.forwarder.send, lambda: self.targets, self.mbus,
            now=now,
        )  # fmt: skip
        self.radio = RadioReceivers(
            config.receivers, config.tenant, self.sink, self.targets.wmbus, on_unknown=self.discovery.heard
        )
        sessions = DlmsSessions(
            None, client_system_title(config.id), timeout, counters=ArchiveCounters(self.archive)
        )  # the collector's title and counters: a meter sees one counter sequence from this gateway
        self.commands = EdgeCommands(
            config.id, self.archive, lambda: self.targets.dlms, sessions.open, self.forwarder.send,
            now=now, synchronised=lambda: self.clock.synchronised,
        )  # fmt: skip
        self.forwarder.on_command = self.commands.handle
        self._load_remote_config()
        self._log_skipped()
        self.poller = Poller([self._collect], self.poll_interval_s)
        self._started = time.monotonic()
        self.last_poll: datetime | None = None
        self.last_cycle_s: float | None = None
        self.last_cycle_cpu_s: float | None = None
        self.last_report: RoundReport | None = None
        self._failures: dict[str, int] = {}
        self._lost: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        await self.forwarder.start()
        await self.poller.start()
        await self.radio.start()
        await self.discovery.start()
        self._loops = [
            asyncio.create_task(self._every(self.config.health_interval_s, self.send_health), name="health"),
            asyncio.create_task(
                self._every(self.config.time_sync_interval_s, self.request_time), name="time"
            ),
            asyncio.create_task(self._every(PURGE_EVERY_S, self.purge, first_s=0.0), name="purge"),
            asyncio.create_task(
                self._every(self.config.discovery.report_interval_s, self.discovery.report_all),
                name="discovery-report",
            ),
        ]
        if self.config.discovery.mbus_buses:
            interval = self.config.discovery.mbus_search_interval_s
            search = self._every(interval, self.discovery.search_mbus, first_s=min(interval, FIRST_SEARCH_S))
            self._loops.append(asyncio.create_task(search, name="discovery-mbus"))
        clocks = self._every(min(self.config.clock_sync_interval_s, CLOCK_CHECK_S), self.sync_meter_clocks)
        self._loops.append(asyncio.create_task(clocks, name="meter-clocks"))
        if self.modem is not None and self.config.modem is not None:
            modem = self._every(self.config.modem.interval_s, self.modem.query, first_s=0.0)
            self._loops.append(asyncio.create_task(modem, name="modem"))
        log.info(
            "gateway %s (%s) started: %d meters, poll every %d s, archive %s",
            self.config.id,
            self.config.tenant,
            self.targets.count,
            self.poll_interval_s,
            self.config.archive,
        )

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self.poller.stop()
        await self.radio.stop()
        await self.discovery.stop()
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        self._loops.clear()
        await self.commands.stop()
        await self.forwarder.stop()
        self.archive.close()
        log.info("gateway %s stopped", self.config.id)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (the CLI sets it on SIGTERM and SIGINT)."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _every(
        self, interval_s: float, work: Callable[[], Awaitable[Any]], *, first_s: float | None = None
    ) -> None:
        await asyncio.sleep(interval_s if first_s is None else first_s)
        while True:
            try:
                await work()
            except Exception:
                log.exception("gateway task %s failed", getattr(work, "__name__", work))
            await asyncio.sleep(interval_s)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway task failed", exc_info=task.exception())

    # -- polling ------------------------------------------------------------------------------------

    async def poll_once(self) -> RoundReport:
        """One polling round now (as the poller runs it on the clock)."""
        return await self.poller.run_round()

    async def _collect(self) -> RoundReport:
        targets = self.targets
        cpu, wall = time.process_time(), time.perf_counter()
        started = self._now()
        parts = await asyncio.gather(
            self.mbus.collect(targets.mbus),
            self.modbus.collect(targets.modbus),
            self.iec.collect(targets.iec),
            self.p1.collect(targets.p1),
            self.pulse.collect(targets.pulse),
            self.dlms.collect(targets.dlms),
        )
        report = RoundReport()
        for part in parts:
            report.merge(part)
        await self._comm_events(report, started)
        self.last_cycle_s = round(time.perf_counter() - wall, 3)
        self.last_cycle_cpu_s = round(time.process_time() - cpu, 3)
        report.seconds = self.last_cycle_s
        self.last_poll, self.last_report = started, report
        self.forwarder.wake(cut=True)
        return report

    async def _comm_events(self, report: RoundReport, ts: datetime) -> None:
        """``comm_lost`` after ``comm_alarm_after`` failed polls in a row, ``comm_restored`` after."""
        events: list[ArchivedEvent] = []
        threshold = self.config.comm_alarm_after
        for outcome in report.outcomes:
            serial = outcome.serial
            if outcome.ok:
                self._failures.pop(serial, None)
                if serial in self._lost:
                    self._lost.discard(serial)
                    events.append(ArchivedEvent(serial, ts, COMM_RESTORED, "info", {}))
                continue
            failures = self._failures[serial] = self._failures.get(serial, 0) + 1
            if threshold and failures == threshold:
                self._lost.add(serial)
                detail = {"failures": failures, "error": (outcome.error or "")[:200]}
                events.append(ArchivedEvent(serial, ts, COMM_LOST, "alarm", detail))
        if events:
            await self.sink.add_events(events)

    def _alarm(self, events: list[ArchivedEvent]) -> None:
        payload = {
            "events": [
                {
                    "meter": e.meter,
                    "ts": e.ts.astimezone(UTC).isoformat(),
                    "code": e.code,
                    "severity": e.severity,
                    "detail": e.detail or {},
                }
                for e in events
            ]
        }
        self._spawn(self.forwarder.send(Kind.ALARM, payload))

    # -- health and time ----------------------------------------------------------------------------

    def _linked(self) -> None:
        self._spawn(self.send_health())
        self._spawn(self.request_time())
        self._spawn(self.discovery.report_all())
        self._spawn(self.commands.resend_results())

    async def health(self) -> dict[str, Any]:
        """The HEALTH payload (``docs/drivers/gateway-link.md``)."""
        stats = await asyncio.to_thread(self.archive.stats)
        report = self.last_report
        link = self.forwarder.stats
        drift = self.clock.drift_ppm
        return {
            "uptime_s": int(time.monotonic() - self._started),
            "version": __version__,
            "config_version": self.config_version,
            "config_error": self.config_error,
            "meters": self.targets.count,
            "meters_skipped": len(self.targets.skipped),
            "meters_failed": report.failed if report else None,
            "meters_lost": len(self._lost),
            "last_poll": self.last_poll.isoformat() if self.last_poll else None,
            "poll_cycle_s": self.last_cycle_s,
            "poll_cpu_s": self.last_cycle_cpu_s,
            "poll_interval_s": self.poll_interval_s,
            "poll_overruns": self.poller.overruns,
            "readings_last_poll": report.readings if report else None,
            "readings": stats["readings"],
            "backlog_readings": stats["backlog_readings"],
            "unacked_batches": stats["unacked_batches"],
            "dropped_unsent": stats["dropped_unsent"],
            "refused_batches": stats["refused_batches"],
            **(self.modem.last if self.modem else Signal()).health(),  # signal_dbm, and what LTE adds
            "clock_offset_s": self.clock.offset_s,
            "clock_round_trip_s": self.clock.round_trip_s,
            "clock_drift_ppm": None if drift is None else round(drift, 3),
            "link_connects": link.connects,
            "batches_resent": link.batches_resent,
            "downlinks_refused": link.downlinks_refused,
            "receivers_connected": self.radio.connected,
            "wmbus_meters": len(self.targets.wmbus),
            "wmbus_heard": self.radio.heard_within(self.poll_interval_s),
            "wmbus_telegrams": self.radio.stats.telegrams,
            "wmbus_rejected": self.radio.stats.rejected,
            "discovered_devices": self.discovery.stats.devices,
        }

    async def send_health(self) -> int | None:
        return await self.forwarder.send(Kind.HEALTH, await self.health())

    async def request_time(self) -> int | None:
        return await self.forwarder.send(Kind.TIME, self.clock.request(time.time(), time.monotonic()))

    def _time_answer(self, payload: dict[str, Any], arrived: float) -> None:
        sample = self.clock.answer(payload, arrived)
        if sample is None:
            log.warning("TIME answer that matches no request of ours: %s", payload)
            return
        log.info("clock offset %+.3f s, round trip %.3f s", sample.offset_s, sample.round_trip_s)
        if self._running and self.meter_clocks.due(time.monotonic()):
            self._spawn(self.sync_meter_clocks())  # the first synchronisation need not wait a check

    async def sync_meter_clocks(self) -> list[ClockCheck] | None:
        """The M-Bus meters' clock check, when it is due and the gateway's clock is synchronised
        (:mod:`openami.edge.clocks`); None when it did not run."""
        return await self.meter_clocks.run_if_due(
            self.targets.mbus, iec_clock_targets(self.targets.iec, self.meters)
        )

    async def purge(self) -> dict[str, int]:
        gone = await asyncio.to_thread(self.archive.purge, self._now())
        if any(gone.values()):
            log.info("archive retention: %s", gone)
        if gone["dropped_unsent"]:
            log.warning("%d readings were never sent and are past retention", gone["dropped_unsent"])
        return gone

    # -- configuration from the head-end ------------------------------------------------------------

    async def apply_config(self, payload: dict[str, Any]) -> bool:
        """A CONFIG payload: applied (and kept) when its version is higher than ours. True if applied."""
        try:
            remote = RemoteConfig.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            self.config_error = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
            log.error("CONFIG refused: %s", self.config_error)
            return False
        if remote.version <= self.config_version:
            log.info("CONFIG version %d ignored: version %d in use", remote.version, self.config_version)
            return False
        data = json.dumps(payload, separators=(",", ":")).encode()
        await asyncio.to_thread(_write_atomically, self.config.remote_config_path, data)
        old_interval = self.poll_interval_s
        self._use(remote)
        self._log_skipped()
        if self.poll_interval_s != old_interval and self._running:
            await self.poller.stop()
            self.poller = Poller([self._collect], self.poll_interval_s)
            await self.poller.start()
        log.info(
            "CONFIG version %d applied: %d meters, poll every %d s",
            self.config_version,
            self.targets.count,
            self.poll_interval_s,
        )
        self._spawn(self.send_health())  # the head-end sees the version in use at once
        return True

    def _use(self, remote: RemoteConfig) -> None:
        meters, refused = remote_meters(remote.meters)
        self.meters = meters
        targets = build_targets(meters, self.config.tenant)
        targets.skipped[:0] = refused
        self.targets = targets
        self.radio.use(targets.wmbus)
        self.config_version = remote.version
        self.config_error = None
        if remote.poll_interval_s is not None:
            self.poll_interval_s = remote.poll_interval_s

    def _load_remote_config(self) -> None:
        path = self.config.remote_config_path
        if not path.exists():
            return
        try:
            remote = RemoteConfig.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            log.warning("ignoring the kept head-end configuration %s: %s", path, exc)
            return
        self._use(remote)
        log.info("head-end configuration version %d in use (%s)", remote.version, path)

    def _log_skipped(self) -> None:
        for serial, reason in self.targets.skipped:
            log.warning("meter %s not read: %s", serial, reason)


async def run_gateway(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    """Run a gateway until ``stop`` (or SIGTERM / SIGINT)."""
    import signal

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await GatewayAgent(config).run_until(stop)
