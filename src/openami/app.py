"""Composition root: the one place that builds store, bus, broker and services from Settings.

Nothing happens at import time. ``Platform.build(settings)`` wires the objects; ``start()`` brings them
up in dependency order (store, bus, broker, ingest, listeners) and ``stop()`` takes them down in reverse,
so a SIGTERM writes everything that was accepted before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, text

from openami import __version__
from openami.bus.base import Bus
from openami.bus.factory import make_bus
from openami.config import Settings
from openami.hes import roles
from openami.hes.commands import CommandService
from openami.hes.dlms_collector import DlmsCollector
from openami.hes.dlms_push import DlmsPushListener
from openami.hes.fep import DEFAULT_IDENT_PATTERN, FrontEndProcessor
from openami.hes.gateway_link import GatewayLinkListener
from openami.hes.gateway_link_store import DiscoveredDevice, file_discoveries
from openami.hes.iec_collector import IecCollector
from openami.hes.job_worker import JobWorker
from openami.hes.lorawan import ChirpStackListener
from openami.hes.mbus_collector import MbusCollector
from openami.hes.meter_reader import PullCollectors
from openami.hes.modbus_collector import ModbusCollector
from openami.hes.mqtt_listener import MqttGatewayListener
from openami.hes.p1_collector import P1Collector
from openami.hes.poller import Poller
from openami.hes.rejected import RejectedMessage
from openami.hes.scheduler import SchedulerService
from openami.hes.wmbus_ingest import WmbusIngest
from openami.hes.wmbus_receiver import WmbusReceiverInput
from openami.mdm.ingest import IngestService
from openami.observability.metrics import Metrics
from openami.security.keyvault import KeyVault, load_master_key
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.transports.mqtt import parse_mqtt_url
from openami.transports.mqtt_broker import EmbeddedBroker

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    engine: Engine
    bus: Bus
    metrics: Metrics
    ingest: IngestService
    broker: EmbeddedBroker | None = None
    listener: MqttGatewayListener | None = None
    gateway_link: GatewayLinkListener | None = None
    lorawan: ChirpStackListener | None = None
    fep: FrontEndProcessor | None = None
    dlms_push: DlmsPushListener | None = None
    vault: KeyVault | None = None
    collector: DlmsCollector | None = None
    modbus: ModbusCollector | None = None
    mbus: MbusCollector | None = None
    iec: IecCollector | None = None
    p1: P1Collector | None = None
    pull: PullCollectors | None = None
    jobs: JobWorker | None = None
    scheduler: SchedulerService | None = None
    poller: Poller | None = None
    commands: CommandService | None = None
    wmbus_ingest: WmbusIngest | None = None
    wmbus_receivers: list[WmbusReceiverInput] = field(default_factory=list)
    _started: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Platform:
        engine = make_engine(settings.effective_database_url)
        bus = make_bus(settings.bus_url, settings.bus_namespace)
        metrics = Metrics()
        ingest = IngestService(
            engine, bus, metrics, batch_rows=settings.ingest_batch_rows, flush_ms=settings.ingest_flush_ms
        )
        broker = None
        if settings.mqtt_url == "embedded":
            broker = EmbeddedBroker(settings.mqtt_embedded_host, settings.mqtt_embedded_port)
        return cls(settings=settings, engine=engine, bus=bus, metrics=metrics, ingest=ingest, broker=broker)

    @property
    def mqtt_url(self) -> str:
        """Where gateways (and the simulator) connect."""
        if self.broker is not None:
            return self.broker.url
        return self.settings.mqtt_url

    @property
    def bus_name(self) -> str:
        """The bus for logs: its kind and hosts, never credentials."""
        if self.settings.bus_url == "memory":
            return "memory"
        return ",".join(urlsplit(u.strip()).hostname or "?" for u in self.settings.bus_url.split(","))

    def migrate(self) -> None:
        upgrade(self.engine)

    async def start(self) -> None:
        """Bring the parts up in dependency order; if one fails, the ones already up are stopped again."""
        try:
            await self._start_parts()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "platform started", extra={"mqtt": parse_mqtt_url(self.mqtt_url).display, "bus": self.bus_name}
        )

    async def _start_parts(self) -> None:
        await asyncio.to_thread(self.migrate)
        await self.bus.start()
        self._started.append("bus")
        self.metrics.track_queue("bus", lambda: float(sum(self.bus.stats().pending.values())))
        self.metrics.track_counters(
            "openami_bus_messages", "Bus messages by stage.", "stage", lambda: _bus_counts(self.bus)
        )
        await self.ingest.start()
        self._started.append("ingest")
        if self.broker is not None:
            await self.broker.start()
            self._started.append("broker")
        self.vault = KeyVault(self.engine, await asyncio.to_thread(load_master_key, self.settings))
        wmbus = WmbusIngest(self.vault)  # one for every wM-Bus path: compact-frame formats are shared
        listener = MqttGatewayListener(
            self.mqtt_url,
            self.settings.mqtt_topic_prefix,
            self.bus,
            on_rejected=self._keep_rejected("mqtt-json"),
            wmbus=wmbus,
            discoveries=self._file_discoveries,
        )
        await listener.start()
        self.listener = listener
        self._started.append("listener")
        self.metrics.track_counters(
            "openami_mqtt_uplinks", "Gateway uplinks by outcome.", "outcome", lambda: _uplink_counts(listener)
        )
        if self.settings.gateway_link_enabled:
            await self._start_gateway_link(self.vault)
        await self._start_wmbus_receivers(wmbus)
        if self.settings.lorawan_mqtt_url:
            await self._start_lorawan(self.vault)
        if self.settings.fep_enabled:
            await self._start_fep()
        self._build_pull(self.vault)
        if self.settings.dlms_push_enabled:
            await self._start_dlms_push(self.vault)
        if self.settings.hes_jobs and self.pull is not None:
            await self._start_jobs(self.pull, self.vault)
        if self.poller is not None:
            await self.poller.start()
            self._started.append("poller")
            poller = self.poller
            self.metrics.track_counters(
                "openami_collection_rounds", "Collection rounds.", "outcome", lambda: _round_counts(poller)
            )

    async def _start_jobs(self, pull: PullCollectors, vault: KeyVault) -> None:
        """The head-end's jobs in this process: a poller, and a scheduler that plans when it leads
        (docs/operations/scaling-out.md: more of either run as ``openami worker`` processes)."""
        self.jobs = roles.job_worker(
            self.settings, self.engine, self.bus, pull, vault, name=None, commands=self.commands
        )
        await self.jobs.start()
        self._started.append("jobs")
        self.scheduler = roles.scheduler(self.settings, self.engine, self.bus)
        await self.scheduler.start()
        self._started.append("scheduler")

    async def _start_gateway_link(self, vault: KeyVault) -> None:
        """OpenAMI gateways' sealed envelopes (docs/drivers/gateway-link.md): MQTT 5 with a shared
        subscription on an external broker, MQTT 3.1.1 and a plain subscription on the embedded one."""
        link = GatewayLinkListener(
            self.mqtt_url,
            self.settings.mqtt_topic_prefix,
            self.bus,
            self.engine,
            vault,
            shared_group=self.settings.gateway_link_shared_group or None,
            mqtt5=self.broker is None,
            on_rejected=self._keep_rejected("gateway-link"),
            config_resend_s=self.settings.gateway_link_config_resend_s,
        )
        await link.start()
        self.gateway_link = link
        self._started.append("gateway_link")
        self.metrics.track_counters(
            "openami_gateway_link_envelopes",
            "Gateway link envelopes by outcome.",
            "outcome",
            link.stats.outcomes,
        )

    async def _start_lorawan(self, vault: KeyVault) -> None:
        """LoRaWAN meters through ChirpStack's MQTT integration (docs/drivers/lorawan.md)."""
        settings = self.settings
        url = self.mqtt_url if settings.lorawan_mqtt_url == "platform" else settings.lorawan_mqtt_url
        lorawan = ChirpStackListener(
            url,
            self.bus,
            self.engine,
            vault,
            topic_prefix=settings.lorawan_topic_prefix,
            profiles=settings.lorawan_profiles,
            on_rejected=self._keep_rejected("lorawan"),
        )
        await lorawan.start()
        self.lorawan = lorawan
        self._started.append("lorawan")
        self.metrics.track_counters(
            "openami_lorawan_events",
            "ChirpStack events by outcome.",
            "outcome",
            lambda: _lorawan_counts(lorawan),
        )

    async def _start_fep(self) -> None:
        """The front-end processor: cellular devices connect out and their connections are lent to the
        DLMS collector and the command service (docs/operations/fep.md)."""
        settings = self.settings
        fep = FrontEndProcessor(
            settings.fep_host,
            settings.fep_port,
            self.engine,
            allow=settings.fep_allow,
            identify_timeout_s=settings.fep_identify_timeout_s,
            ident_pattern=settings.fep_ident_pattern or DEFAULT_IDENT_PATTERN,
            max_connections=settings.fep_max_connections,
            max_per_device=settings.fep_max_per_device,
            idle_timeout_s=settings.fep_idle_timeout_s,
        )
        await fep.start()
        self.fep = fep
        self._started.append("fep")
        metrics = self.metrics
        metrics.track_counters("openami_fep_connections", "FEP connections.", "outcome", fep.stats.outcomes)
        metrics.track_counters("openami_fep_sessions", "FEP lends.", "outcome", fep.stats.sessions)
        metrics.track_gauges("openami_fep_held", "FEP connections now.", "state", fep.stats.gauges)

    def _build_pull(self, vault: KeyVault) -> None:
        """The DLMS, Modbus, M-Bus, IEC 62056-21 and P1/SML collectors and the command service (always),
        and the poller when polling is on."""
        settings = self.settings
        pull = PullCollectors.build(settings, self.engine, self.bus, vault, fep=self.fep)
        self.pull = pull
        self.collector, self.modbus, self.mbus, self.iec, self.p1 = (
            pull.dlms,
            pull.modbus,
            pull.mbus,
            pull.iec,
            pull.p1,
        )
        self.commands = CommandService(
            self.engine,
            vault,
            client_system_title=bytes.fromhex(settings.dlms_client_system_title),
            timeout_s=settings.dlms_timeout_s,
            fep=self.fep,
            fep_wait_s=settings.fep_lend_wait_s,
        )
        if settings.poll_interval_s:
            collector = self.collector
            self.poller = Poller(
                [lambda: collector.collect_all(vault), *(c.collect_all for c in self.bus_collectors)],
                settings.poll_interval_s,
            )

    @property
    def bus_collectors(self) -> list[ModbusCollector | MbusCollector | IecCollector | P1Collector]:
        """The pull collectors of meters behind converters, gateways and port dongles (all but DLMS)."""
        return [c for c in (self.modbus, self.mbus, self.iec, self.p1) if c is not None]

    async def _start_wmbus_receivers(self, wmbus: WmbusIngest) -> None:
        """The wM-Bus receivers read by the head-end itself (settings ``wmbus_receivers``)."""
        self.wmbus_ingest = wmbus
        for tenant, urls in self.settings.wmbus_receivers.items():
            for url in urls:
                await self.add_wmbus_receiver(tenant, url)

    async def add_wmbus_receiver(self, tenant: str, url: str, **options: Any) -> WmbusReceiverInput:
        """Start reading the receiver at ``url`` for ``tenant`` (a stick that is not there yet is retried
        in the background, so this never waits for one); it stops with the platform."""
        if self.wmbus_ingest is None:
            raise RuntimeError("start the platform before adding receivers")
        receiver = WmbusReceiverInput(
            url,
            tenant,
            self.bus,
            self.wmbus_ingest,
            on_rejected=self._keep_rejected("wmbus-receiver"),
            **options,
        )
        await receiver.start()
        if not self.wmbus_receivers:
            self._started.append("wmbus_receivers")
            receivers = self.wmbus_receivers
            self.metrics.track_counters(
                "openami_wmbus_receiver_lines",
                "Lines read from head-end wM-Bus receivers, by outcome.",
                "outcome",
                lambda: _receiver_counts(receivers),
            )
        self.wmbus_receivers.append(receiver)
        return receiver

    async def _start_dlms_push(self, vault: KeyVault) -> None:
        settings = self.settings
        push = DlmsPushListener(
            settings.dlms_push_host,
            settings.dlms_push_port,
            self.bus,
            vault,
            default_tenant=settings.dlms_default_tenant,
            on_rejected=self._keep_rejected("dlms-push"),
        )
        await push.start()
        self.dlms_push = push
        self._started.append("dlms_push")
        self.metrics.track_counters(
            "openami_dlms_pushes", "DLMS pushes by outcome.", "outcome", lambda: _push_counts(push)
        )

    async def stop(self) -> None:
        """Reverse order: stop intake first, then flush what was accepted, then close the pipes."""
        if "scheduler" in self._started and self.scheduler is not None:
            await self.scheduler.stop()
        if "jobs" in self._started and self.jobs is not None:
            await self.jobs.stop()
        if "poller" in self._started and self.poller is not None:
            await self.poller.stop()
        if "fep" in self._started and self.fep is not None:
            await self.fep.stop()
        if "listener" in self._started and self.listener is not None:
            await self.listener.stop()
        if "gateway_link" in self._started and self.gateway_link is not None:
            await self.gateway_link.stop()
        if "lorawan" in self._started and self.lorawan is not None:
            await self.lorawan.stop()
        if "wmbus_receivers" in self._started:
            for receiver in self.wmbus_receivers:
                await receiver.stop()
            self.wmbus_receivers.clear()
        if "dlms_push" in self._started and self.dlms_push is not None:
            await self.dlms_push.stop()
        if "bus" in self._started:
            await self.bus.drain(timeout_s=30)
        if "ingest" in self._started:
            await self.ingest.stop()
        if "broker" in self._started and self.broker is not None:
            await self.broker.stop()
        if "bus" in self._started:
            await self.bus.close()
        self._started.clear()
        self.engine.dispose()
        log.info("platform stopped")

    async def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until everything published so far is stored (the demo's --once and tests use it)."""
        await self.bus.drain(timeout_s=timeout_s)

    async def _file_discoveries(
        self, tenant: str, gateway: str, devices: list[DiscoveredDevice], seen_at: datetime
    ) -> None:
        """Meters a gateway's wM-Bus receiver heard asking to be installed become pending devices."""
        if not await asyncio.to_thread(file_discoveries, self.engine, tenant, gateway, devices, seen_at):
            log.info(
                "%d wM-Bus installation requests via unregistered gateway %s/%s",
                len(devices),
                tenant,
                gateway,
            )

    def _keep_rejected(self, source: str) -> Callable[[RejectedMessage], Awaitable[None]]:
        """The dead-letter handler of one listener: what it could not accept goes to rejected_message."""

        async def keep(rejected: RejectedMessage) -> None:
            await asyncio.to_thread(
                self.ingest.directory.keep_rejected,
                rejected.tenant,
                source,
                rejected.reason,
                rejected.payload,
                rejected.topic,
            )

        return keep

    def health(self) -> dict[str, Any]:
        """What GET /health reports: overall status plus each part's."""
        parts: dict[str, str] = {}
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            parts["database"] = "ok"
        except Exception as exc:  # the health check must report, not raise
            parts["database"] = f"error: {type(exc).__name__}"
        parts["bus"] = "ok" if "bus" in self._started else "stopped"
        if self.listener is not None:
            parts["mqtt"] = "ok" if self.listener.connected else "disconnected"
        if self.gateway_link is not None:
            parts["gateway_link"] = "ok" if self.gateway_link.connected else "disconnected"
        if self.lorawan is not None:
            parts["lorawan"] = "ok" if self.lorawan.connected else "disconnected"
        if self.settings.fep_enabled:
            parts["fep"] = "ok" if "fep" in self._started else "stopped"
        if self.settings.dlms_push_enabled:
            parts["dlms_push"] = "ok" if "dlms_push" in self._started else "stopped"
        if self.poller is not None:
            parts["poller"] = "ok" if "poller" in self._started else "stopped"
        if self.wmbus_receivers:
            down = [r.origin for r in self.wmbus_receivers if not r.connected]
            parts["wmbus_receivers"] = "ok" if not down else f"disconnected: {', '.join(down)}"
        status = "ok" if all(v == "ok" for v in parts.values()) else "degraded"
        return {"status": status, "version": __version__, **parts}


def _bus_counts(bus: Bus) -> dict[str, float]:
    stats = bus.stats()
    return {
        "published": stats.published,
        "delivered": stats.delivered,
        "acked": stats.acked,
        "redelivered": stats.redelivered,
        "dead": stats.dead,
    }


def _push_counts(push: DlmsPushListener) -> dict[str, float]:
    stats = push.stats
    return {
        "received": stats.received,
        "accepted": stats.accepted,
        "rejected": stats.rejected,
        "replays": stats.replays,
    }


def _round_counts(poller: Poller) -> dict[str, float]:
    return {
        "rounds": poller.rounds,
        "overruns": poller.overruns,
        "meter_reads_ok": poller.meters_read,
        "meter_reads_failed": poller.meters_failed,
    }


def _lorawan_counts(lorawan: ChirpStackListener) -> dict[str, float]:
    stats = lorawan.stats
    return {
        "received": stats.received,
        "uplinks": stats.uplinks,
        "rejected": stats.rejected,
        "missed_frames": stats.missed_frames,
    }


def _receiver_counts(receivers: list[WmbusReceiverInput]) -> dict[str, float]:
    return {
        "lines": sum(r.stats.lines for r in receivers),
        "telegrams": sum(r.stats.telegrams for r in receivers),
        "rejected": sum(r.stats.rejected for r in receivers),
    }


def _uplink_counts(listener: MqttGatewayListener) -> dict[str, float]:
    stats = listener.stats
    return {"received": stats.received, "accepted": stats.accepted, "rejected": stats.rejected}
