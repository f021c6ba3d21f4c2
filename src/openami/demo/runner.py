"""`openami demo`: the whole path, meter to API, on embedded defaults.

The runner seeds the demo tenant, starts the platform (store, bus, embedded MQTT broker, ingest, MQTT
listener), lets virtual gateways publish a back-fill of simulated history through the broker, and then
either exits with a summary (``--once``) or serves the web API while the gateways keep publishing live,
accelerated data until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from openami.app import Platform
from openami.config import Settings
from openami.demo.seed import DEMO_TENANT, DemoLayout, seed_demo
from openami.simulator.consumption import Medium
from openami.simulator.gateway import SimMeter, VirtualGateway
from openami.transports.mqtt import make_client

log = logging.getLogger(__name__)

DEMO_ADMIN = "admin"
DEMO_PASSWORD = "openami-demo"  # noqa: S105 - a published demo credential, printed on start
INTERVAL = timedelta(minutes=15)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DemoSummary:
    meters: int
    gateways: int
    span_start: datetime
    span_end: datetime
    messages: int
    readings_inserted: int
    readings_revised: int
    readings_unchanged: int
    readings_rejected: int
    events: int
    seconds: float
    database: str

    @property
    def rows_per_s(self) -> float:
        handled = self.readings_inserted + self.readings_revised + self.readings_unchanged
        return handled / self.seconds if self.seconds else 0.0


def virtual_gateways(layout: DemoLayout) -> list[VirtualGateway]:
    """One virtual gateway per seeded gateway; each meter's data is seeded by its serial, so it is the
    same on every run and does not change when the layout grows."""
    by_gateway: dict[str, list[SimMeter]] = {}
    for meter in layout.meters:
        sim = SimMeter(meter.serial, cast(Medium, meter.medium), seed=zlib.crc32(meter.serial.encode()))
        by_gateway.setdefault(meter.gateway, []).append(sim)
    return [VirtualGateway(gw, DEMO_TENANT, meters) for gw, meters in sorted(by_gateway.items())]


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


async def backfill(
    platform: Platform, layout: DemoLayout, *, days: float, progress: Progress | None = None
) -> DemoSummary:
    """Publish ``days`` of history from every gateway through MQTT and wait until all of it is stored."""
    gateways = virtual_gateways(layout)
    end = _floor(datetime.now(UTC), INTERVAL)
    start = _floor(end - timedelta(days=days), INTERVAL)
    before = platform.ingest.totals.messages
    assert platform.listener is not None
    handled_before = _handled(platform)
    started = time.perf_counter()
    sent = 0
    async with make_client(platform.mqtt_url, client_id="openami-demo-sim") as client:
        for done, gateway in enumerate(gateways, start=1):
            sent += await gateway.publish_span(client, platform.settings.mqtt_topic_prefix, start, end)
            if progress:
                progress(done, len(gateways))
    await _wait_handled(platform, handled_before + sent, timeout_s=300)
    await platform.settle(timeout_s=300)
    totals = platform.ingest.totals
    log.info("demo back-fill stored", extra={"messages": totals.messages - before})
    return DemoSummary(
        meters=len(layout.meters),
        gateways=len(gateways),
        span_start=start,
        span_end=end,
        messages=sent,
        readings_inserted=totals.inserted,
        readings_revised=totals.revised,
        readings_unchanged=totals.unchanged,
        readings_rejected=totals.rejected,
        events=totals.events,
        seconds=time.perf_counter() - started,
        database=platform.engine.url.render_as_string(hide_password=True),
    )


def _handled(platform: Platform) -> int:
    assert platform.listener is not None
    return platform.listener.stats.accepted + platform.listener.stats.rejected


async def _wait_handled(platform: Platform, expected: int, *, timeout_s: float) -> None:
    """QoS 1 publishes are acknowledged by the broker; wait until the listener has handled them all too."""
    deadline = time.monotonic() + timeout_s
    while _handled(platform) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"listener handled {_handled(platform)} of {expected} uplinks in {timeout_s} s"
            )
        await asyncio.sleep(0.05)


async def live(platform: Platform, layout: DemoLayout, *, speedup: float) -> None:
    """Every gateway publishes each quarter hour as it completes, ``speedup`` times faster than real time."""
    async with make_client(platform.mqtt_url, client_id="openami-demo-live") as client:
        await asyncio.gather(
            *(
                gateway.run_live(client, platform.settings.mqtt_topic_prefix, time_factor=speedup)
                for gateway in virtual_gateways(layout)
            )
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel until the task is really done.

    Python 3.11's ``asyncio.wait_for`` (used inside aiomqtt) can swallow a cancellation that arrives as
    its inner future completes, so one ``cancel()`` may not stop a publishing loop; we insist.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.warning("demo task %s ended with %r", task.get_name(), task.exception())


def prepare(platform: Platform) -> DemoLayout:
    """Seed the tenant and its admin user (idempotent); blocking, run in a thread."""
    from openami.security.bootstrap import ensure_user

    layout = seed_demo(platform.engine)
    ensure_user(platform.engine, DEMO_TENANT, DEMO_ADMIN, DEMO_PASSWORD, role="admin")
    return layout


async def run_once(settings: Settings, *, days: float = 7, progress: Progress | None = None) -> DemoSummary:
    platform = Platform.build(settings)
    await platform.start()
    try:
        layout = await asyncio.to_thread(prepare, platform)
        return await backfill(platform, layout, days=days, progress=progress)
    finally:
        await platform.stop()


async def run_forever(
    settings: Settings, *, days: float, speedup: float, on_ready: Callable[[DemoSummary], None]
) -> None:
    """Serve the API and keep the simulator publishing until cancelled (Ctrl-C)."""
    from openami.transports.ports import probe_port
    from openami.web.server import web_server

    probe_port(settings.web_host, settings.web_port, "OPENAMI_WEB_PORT")
    platform = Platform.build(settings)
    await platform.start()
    try:
        layout = await asyncio.to_thread(prepare, platform)
        server = web_server(platform)

        async def feed() -> None:
            on_ready(await backfill(platform, layout, days=days))
            await live(platform, layout, speedup=speedup)

        serving = asyncio.create_task(server.serve(), name="web")
        feeding = asyncio.create_task(feed(), name="demo-feed")
        try:
            await asyncio.wait({serving, feeding}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True  # a signal stopped the server, or the feeder failed
            await serving
            if feeding.done():
                feeding.result()  # surface the feeder's error
        finally:
            await _cancel(feeding)
            await _cancel(serving)
    finally:
        await platform.stop()
