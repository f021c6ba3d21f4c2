"""The demo's OpenAMI gateways: the real edge agent polling simulated field buses and forwarding what
it read, sealed, over the platform's broker to the head-end's gateway link.

Each gateway of the layout (:func:`openami.demo.seed.edge_gateways`) gets a directory under the data
dir, ``<data_dir>/edge/<ident>/``, holding what a real gateway holds in ``/etc`` and ``/var/lib``:

- ``gateway.toml``, its configuration (``docs/operations/gateway.md``), written again on every run
  because the simulated converters listen on new ports each time;
- ``link.key``, its link key (mode 0600): the key the seed stored in the head-end's vault;
- ``archive.db``, its archive, kept across runs like a real gateway's: a reading a stopped demo did not
  forward goes out at the next start, and the uplink numbers go on from where they were.

The agents run in the demo's own process (:class:`~openami.edge.agent.GatewayAgent`, exactly what
``openami gateway --config gateway.toml`` runs): the demo is one process on embedded defaults, and an
``openami gateway`` child per gateway would cost a second or two of start-up each and one more thing
for Ctrl-C to stop, for the same code. ``tests/e2e/test_gateway_faults.py`` runs the agent as its own
process against a real head-end.

On the embedded broker (amqtt) the agents speak MQTT 3.1.1, on an external one MQTT 5. They poll on the
head-end's own interval (``poll_interval_s``, 900 s by default, aligned to the clock); the back-fill
polls each once at once (:func:`poll_now`), so the first readings are there without waiting a quarter
hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from openami.app import Platform
from openami.demo.field import edge_bus
from openami.demo.seed import DEMO_TENANT, DemoLayout, EdgeDemoGateway
from openami.edge.agent import GatewayAgent
from openami.edge.config import load_config
from openami.simulator.edge_site import gateway_toml
from openami.transports.mqtt import parse_mqtt_url

__all__ = ["DEFAULT_POLL_INTERVAL_S", "meter_entries", "poll_now", "start_gateways", "write_config"]

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 900


def meter_entries(gateway: EdgeDemoGateway, port: int) -> list[dict[str, Any]]:
    """The gateway's ``[[meters]]``: its meters at their addresses on the bus listening on ``port``."""
    entries: list[dict[str, Any]] = []
    for meter in gateway.meters:
        if meter.protocol == "mbus":
            address = f"mbus+tcp://127.0.0.1:{port}?primary={meter.unit}"
        else:
            address = f"modbus+tcp://127.0.0.1:{port}?unit={meter.unit}"
        entries.append(
            {"serial": meter.serial, "protocol": meter.protocol, "model": meter.model, "address": address}
        )
    return entries


def _private(path: Path, text: str) -> None:
    """Write a secret readable by the owner only (created 0600, never world-readable in between)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_config(
    gateway: EdgeDemoGateway,
    directory: Path,
    *,
    mqtt_url: str,
    mqtt_version: str,
    prefix: str,
    port: int,
    poll_interval_s: int,
) -> Path:
    """Write the gateway's configuration and link key into ``directory``; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    broker = parse_mqtt_url(mqtt_url)
    _private(directory / "link.key", gateway.link_key.hex() + "\n")
    uplink: dict[str, Any] = {
        "url": broker.display,
        "key_file": "link.key",
        "mqtt_version": mqtt_version,
        "topic_prefix": prefix,
        "reconnect_min_s": 0.5,
        "reconnect_max_s": 10.0,
    }
    if broker.username is not None:
        uplink["username"] = broker.username
    if broker.password is not None:
        _private(directory / "mqtt-password", broker.password + "\n")
        uplink["password_file"] = "mqtt-password"  # noqa: S105 - a file name, not a password
    text = gateway_toml(
        id=gateway.ident,
        tenant=DEMO_TENANT,
        archive="archive.db",
        uplink=uplink,
        meters=meter_entries(gateway, port),
        poll_interval_s=poll_interval_s,
    )
    path = directory / "gateway.toml"
    path.write_text(f"# OpenAMI demo gateway {gateway.ident}: written by `openami demo` for this run\n{text}")
    return path


async def start_gateways(
    stack: contextlib.AsyncExitStack, platform: Platform, layout: DemoLayout
) -> list[GatewayAgent]:
    """Serve each OpenAMI gateway's field bus and start its agent (both stopped by ``stack``); none when
    the platform runs no gateway link."""
    if platform.gateway_link is None or not layout.edge_gateways:
        return []
    settings = platform.settings
    interval = settings.poll_interval_s or DEFAULT_POLL_INTERVAL_S
    mqtt_version = "3.1.1" if platform.broker is not None else "5"
    agents = []
    for gateway in layout.edge_gateways:
        bus = edge_bus(gateway)
        await stack.enter_async_context(bus)
        config = write_config(
            gateway,
            settings.data_dir / "edge" / gateway.ident,
            mqtt_url=platform.mqtt_url,
            mqtt_version=mqtt_version,
            prefix=settings.mqtt_topic_prefix,
            port=bus.port,
            poll_interval_s=interval,
        )
        agent = GatewayAgent(await asyncio.to_thread(load_config, config))
        await agent.start()
        stack.push_async_callback(agent.stop)  # before its bus: no failed reads at the end
        agents.append(agent)
    return agents


async def poll_now(platform: Platform, agents: list[GatewayAgent], *, timeout_s: float = 30.0) -> int:
    """One polling round on every gateway now, and wait until the head-end has acknowledged everything
    in their archives; returns the readings the gateway link published meanwhile."""
    link = platform.gateway_link
    if link is None or not agents:
        return 0
    before = link.stats.readings
    for agent in agents:
        if not await agent.forwarder.wait_connected(timeout_s):
            raise TimeoutError(f"gateway {agent.config.id} not linked to the broker: {agent.forwarder.stats}")
    await asyncio.gather(*(agent.poll_once() for agent in agents))
    deadline = time.monotonic() + timeout_s
    for agent in agents:
        while True:
            stats = await asyncio.to_thread(agent.archive.stats)
            if stats["backlog_readings"] == 0 and stats["unacked_batches"] == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {agent.config.id}: not acknowledged in {timeout_s} s: {stats}")
            await asyncio.sleep(0.05)
    return link.stats.readings - before
