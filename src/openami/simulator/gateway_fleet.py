"""Virtual gateways with their meters, run against a real head-end, with link outages.

``openami simulate gateways`` runs a :class:`GatewayFleet`: per gateway a :class:`SimulatedSite`
(M-Bus converters and Modbus TCP gateways with their meters, on loopback ports), a
:class:`~openami.simulator.link_proxy.LinkProxy` standing for its LTE link to the broker, and the real
agent (:class:`~openami.edge.agent.GatewayAgent`) configured against both. An :class:`OutagePlan` cuts
the links in turn (gateway *k* of *n* goes down at ``k/n`` of each period, so outages are spread and
overlap only when they are long), which is how store-and-forward is shown working: the archives fill
while their link is down and drain after.

:func:`register_fleet` makes the head-end know the fleet, as an operator would through the API:
each gateway a ``comm_device`` (kind ``gateway``) with its link key in the key vault, each meter
registered under its gateway. It is idempotent, so a fleet run again on the same directory and
database carries on (the gateways keep their keys and archives in ``<directory>/<ident>/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from openami.edge.agent import GatewayAgent
from openami.edge.config import load_config
from openami.security.keyvault import KeyVault
from openami.simulator.edge_site import SimulatedSite, gateway_toml
from openami.simulator.link_proxy import LinkProxy
from openami.store.errors import NotFound
from openami.store.repositories import Scope, comm_devices, meters
from openami.store.repositories.catalog import tenants
from openami.store.schema import meter
from openami.transports.mqtt import parse_mqtt_url

__all__ = ["FleetGateway", "GatewayFleet", "OutagePlan", "register_fleet"]

log = logging.getLogger(__name__)

_IDS_PER_GATEWAY = 10_000
"""M-Bus identification numbers reserved per gateway (a site has at most a few thousand meters)."""


@dataclass(frozen=True, slots=True)
class OutagePlan:
    """Every ``every_s`` each gateway's link is down for ``for_s``, the gateways staggered."""

    every_s: float
    for_s: float

    def __post_init__(self) -> None:
        if not 0 < self.for_s < self.every_s:
            raise ValueError("an outage must be shorter than its period, and both positive")


@dataclass
class FleetGateway:
    """One virtual gateway: its site, its link and its agent (once started)."""

    ident: str
    directory: Path
    site: SimulatedSite
    link: LinkProxy | None = None
    agent: GatewayAgent | None = None

    @property
    def key(self) -> bytes:
        return bytes.fromhex((self.directory / "link.key").read_text().strip())


def _private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


@dataclass
class GatewayFleet:
    """``count`` gateways of ``mbus`` + ``modbus`` meters each (module docstring)."""

    tenant: str
    directory: Path
    mqtt_url: str
    count: int = 3
    mbus: int = 8
    modbus: int = 4
    mqtt_version: str = "5"
    prefix: str = "openami"
    poll_interval_s: int = 900
    outage: OutagePlan | None = None
    ident_prefix: str = "SIM-GW"
    gateways: list[FleetGateway] = field(default_factory=list)
    _outages: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 999:
            raise ValueError("a fleet has 1 to 999 gateways")
        for index in range(self.count):
            ident = f"{self.ident_prefix}-{index + 1:03d}"
            site = SimulatedSite(
                mbus=self.mbus,
                modbus=self.modbus,
                mbus_converters=max(1, -(-self.mbus // 250)),
                modbus_gateways=max(1, -(-self.modbus // 247)),
                id_base=80_000_000 + index * _IDS_PER_GATEWAY,
                modbus_prefix=f"{ident}-MOD",
            )
            self.gateways.append(FleetGateway(ident, self.directory / ident, site))

    async def start_sites(self) -> None:
        """Serve every gateway's meters (the serials are known from here on: :func:`register_fleet`)."""
        for gateway in self.gateways:
            await gateway.site.start()
            key_file = gateway.directory / "link.key"
            if not key_file.exists():
                _private(key_file, KeyVault.new_gateway_key().hex() + "\n")

    async def start_agents(self) -> None:
        """Start each gateway's link and agent, and the outage plan."""
        broker = parse_mqtt_url(self.mqtt_url)
        if broker.tls:
            raise ValueError("virtual gateways link over plain mqtt:// (their link is a loopback relay)")
        for gateway in self.gateways:
            gateway.link = LinkProxy(broker.host, broker.port)
            await gateway.link.start()
            uplink: dict[str, Any] = {
                "url": f"mqtt://{gateway.link.host}:{gateway.link.port}",
                "key_file": "link.key",
                "mqtt_version": self.mqtt_version,
                "topic_prefix": self.prefix,
                "reconnect_min_s": 0.5,
                "reconnect_max_s": 5.0,
            }
            if broker.username is not None:
                uplink["username"] = broker.username
            if broker.password is not None:
                uplink["password"] = broker.password
            text = gateway_toml(
                id=gateway.ident,
                tenant=self.tenant,
                archive="archive.db",
                uplink=uplink,
                meters=gateway.site.meters,
                poll_interval_s=self.poll_interval_s,
            )
            path = gateway.directory / "gateway.toml"
            path.write_text(
                f"# virtual gateway {gateway.ident}: written by `openami simulate gateways`\n{text}"
            )
            gateway.agent = GatewayAgent(await asyncio.to_thread(load_config, path))
            await gateway.agent.start()
        if self.outage is not None:
            self._outages = asyncio.create_task(self._run_outages(self.outage), name="outages")

    async def end_outages(self) -> None:
        """Stop cutting links and bring every link back up."""
        if self._outages is not None:
            self._outages.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outages
            self._outages = None
        for gateway in self.gateways:
            if gateway.link is not None:
                gateway.link.restore()

    async def stop(self) -> None:
        await self.end_outages()
        for gateway in self.gateways:
            if gateway.agent is not None:
                await gateway.agent.stop()
                gateway.agent = None
            if gateway.link is not None:
                await gateway.link.stop()
                gateway.link = None
            await gateway.site.stop()

    async def _run_outages(self, plan: OutagePlan) -> None:
        """Gateway k goes down at ``k/n`` of every period, for ``for_s``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            offset = (loop.time() - start) % plan.every_s
            for index, gateway in enumerate(self.gateways):
                if gateway.link is None:
                    continue
                begin = plan.every_s * index / len(self.gateways)
                down = begin <= offset < begin + plan.for_s or offset < begin + plan.for_s - plan.every_s
                if down and gateway.link.up:
                    gateway.link.cut()
                elif not down and not gateway.link.up:
                    gateway.link.restore()
            await asyncio.sleep(min(0.25, plan.for_s / 4))

    async def status(self) -> list[dict[str, Any]]:
        """Per gateway: link up, connections, cuts, meters, backlog, unacknowledged batches, readings."""
        rows = []
        for gateway in self.gateways:
            row: dict[str, Any] = {"gateway": gateway.ident, "meters": len(gateway.site.meters)}
            if gateway.link is not None:
                row |= {"link": "up" if gateway.link.up else "down", "cuts": gateway.link.stats.cuts}
            if gateway.agent is not None:
                stats = await asyncio.to_thread(gateway.agent.archive.stats)
                row |= {
                    "connected": gateway.agent.forwarder.connected,
                    "readings": stats["readings"],
                    "backlog": stats["backlog_readings"],
                    "unacked": stats["unacked_batches"],
                }
            rows.append(row)
        return rows


def register_fleet(engine: Engine, vault: KeyVault, fleet: GatewayFleet) -> dict[str, int]:
    """Register the fleet's gateways (with their link keys) and meters at the head-end, whichever are
    missing; a gateway whose vault key differs from its file gets the file's (a new directory).
    Returns what was created. The tenant must exist (:class:`~openami.store.errors.NotFound`)."""
    created = {"gateways": 0, "meters": 0, "keys": 0}
    with engine.begin() as conn:
        tenant = tenants.get_by_slug(conn, fleet.tenant)
        scope = Scope(tenant.id)
        for gateway in fleet.gateways:
            try:
                device = comm_devices.get_by_key(conn, scope, gateway.ident)
            except NotFound:
                device = comm_devices.create(
                    conn,
                    tenant.id,
                    {
                        "ident": gateway.ident,
                        "kind": "gateway",
                        "model": "openami-gateway",
                        "protocol": "gateway-link",
                    },
                )
                created["gateways"] += 1
            serials = [entry["serial"] for entry in gateway.site.meters]
            known = set(
                conn.scalars(
                    select(meter.c.serial).where(meter.c.tenant_id == tenant.id, meter.c.serial.in_(serials))
                )
            )
            for entry in gateway.site.meters:
                if entry["serial"] not in known:
                    values = {
                        "serial": entry["serial"],
                        "medium": gateway.site.media[entry["serial"]],
                        "protocol": entry["protocol"],
                        "model": entry.get("model", ""),
                        "comm_device_id": device.id,
                    }
                    meters.create(conn, tenant.id, values)
                    created["meters"] += 1
            if vault.gateway_key(tenant.id, device.id) != gateway.key:
                vault.store_gateway_key(tenant.id, device.id, gateway.key, conn=conn)
                created["keys"] += 1
    return created
