"""`openami demo`: the whole path, meter to API, on embedded defaults.

The runner seeds the demo tenant, starts the platform (store, bus, embedded MQTT broker, ingest, MQTT
listener, gateway link, DLMS push listener), lets virtual gateways publish a back-fill of simulated
history through the broker and the Market Street DLMS meters push the same span to the push listener,
has the two OpenAMI gateways (the real edge agent, :mod:`openami.demo.edge`) poll their meters and
forward the readings over the gateway link, and then either exits with a summary (``--once``) or
serves the web API while gateways and meters keep sending live, accelerated data until Ctrl-C (the
OpenAMI gateways go on polling on the head-end's interval, in real time).

The DLMS meters' invocation counters live in their :class:`DlmsPushMeter` objects, so one set of
objects serves the back-fill and the live phase of a run: new objects would restart at counter 1 and
the listener would refuse their pushes as replays. A new demo process starts a new listener, whose replay
guard starts empty (it is not persisted), so counters restarting with the process are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from openami.app import Platform
from openami.config import Settings
from openami.demo.edge import poll_now, start_gateways
from openami.demo.field import consumer_ports, iec_converter, modbus_gateway, radio_receiver
from openami.demo.seed import (
    DEMO_TENANT,
    IEC_PROTOCOL,
    DemoLayout,
    modem_ident,
    provision_dlms_keys,
    provision_edge_keys,
    provision_radio_keys,
    seed_demo,
)
from openami.edge.agent import GatewayAgent
from openami.hes.dlms_targets import load_targets
from openami.security.keyvault import KeyVault, load_master_key
from openami.simulator.consumption import Medium
from openami.simulator.dlms_meter import MeterKeys, SimulatedMeter
from openami.simulator.dlms_push import DlmsPushMeter
from openami.simulator.dlms_server import DlmsSimulator
from openami.simulator.gateway import SimMeter, VirtualGateway
from openami.simulator.mbus_meter import MbusBusSimulator
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
    dlms_meters: int
    dlms_pushes: int
    """Pushes the DLMS meters sent (one per meter and quarter hour)."""
    dlms_rejected: int
    """Pushes the listener refused (bad tag, unknown title, replay): 0 in a healthy demo."""
    pulled_meters: int = 0
    """Meters the head-end read over DLMS in the back-fill's collection round."""
    pulled_readings: int = 0
    pull_failures: int = 0
    bus_meters: int = 0
    """Modbus and M-Bus sub-meters read in the back-fill's collection round (and their readings)."""
    bus_readings: int = 0
    radio_meters: int = 0
    """Wireless M-Bus meters in the layout, and the telegrams (and readings) the receiver took from them
    during the back-fill."""
    radio_telegrams: int = 0
    radio_readings: int = 0
    edge_gateways: int = 0
    """OpenAMI gateways in the layout, their meters, and the readings the gateway link took from them
    (and the store kept) during the back-fill."""
    edge_meters: int = 0
    edge_readings: int = 0

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


def dlms_push_meters(layout: DemoLayout) -> list[DlmsPushMeter]:
    """The simulators of the layout's DLMS meters, seeded by serial like the gateway meters.

    Keep the returned objects for the whole run: they hold the invocation counters (module docstring).
    """
    return [
        DlmsPushMeter(
            meter.serial,
            meter.system_title,
            meter.encryption_key,
            meter.authentication_key,
            seed=zlib.crc32(meter.serial.encode()),
        )
        for meter in layout.dlms_meters
    ]


def pulled_simulators(layout: DemoLayout) -> list[SimulatedMeter]:
    """The simulated meters behind the layout's polled meters, with the demo keys the seed stored."""
    return [
        SimulatedMeter(
            meter.serial,
            meter.system_title,
            MeterKeys(b"", meter.encryption_key, meter.authentication_key),
            seed=zlib.crc32(meter.serial.encode()),
        )
        for meter in layout.pull_meters
    ]


def point_building_meters(platform: Platform, layout: DemoLayout, ports: dict[str, int]) -> None:
    """Give each sub-meter's device entry the address of its gateway or converter in this run (``ports``:
    the shared devices' by protocol, a consumer port's by its meter's serial)."""
    from openami.store.schema import comm_device

    addresses = {
        "modbus": lambda m: f"modbus+tcp://127.0.0.1:{ports['modbus']}?unit={m.unit}",
        "mbus": lambda m: f"mbus+tcp://127.0.0.1:{ports['mbus']}?primary={m.unit}",
        IEC_PROTOCOL: lambda m: f"iec+tcp://127.0.0.1:{ports[IEC_PROTOCOL]}?address={m.serial}",
        "dsmr": lambda m: f"dsmr+tcp://127.0.0.1:{ports[m.serial]}",
        "sml": lambda m: f"sml+tcp://127.0.0.1:{ports[m.serial]}",
    }
    with platform.engine.begin() as conn:
        for meter in layout.building_meters:
            address = addresses[meter.protocol](meter)
            conn.execute(
                comm_device.update()
                .where(comm_device.c.ident == modem_ident(meter.serial))
                .values(address=address)
            )


def point_modems(platform: Platform, simulator: DlmsSimulator) -> None:
    """Give each polled meter's modem the address its simulated meter listens on in this run."""
    from openami.store.schema import comm_device

    with platform.engine.begin() as conn:
        for meter, port in zip(simulator.meters, simulator.ports, strict=True):
            conn.execute(
                comm_device.update()
                .where(comm_device.c.ident == modem_ident(meter.serial))
                .values(address=f"tcp://127.0.0.1:{port}")
            )


async def collect_pulled(platform: Platform, layout: DemoLayout) -> tuple[int, int, int]:
    """One collection round over the demo tenant's polled meters: (meters read, readings, failures)."""
    if platform.collector is None or platform.vault is None:
        return 0, 0, 0
    targets, _ = await asyncio.to_thread(
        load_targets, platform.engine, platform.vault, tenant_id=layout.tenant_id
    )
    report = await platform.collector.collect(targets)
    return report.succeeded, report.readings, report.failed


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


async def backfill(
    platform: Platform,
    layout: DemoLayout,
    *,
    days: float,
    dlms: Sequence[DlmsPushMeter],
    edge: Sequence[GatewayAgent] = (),
    progress: Progress | None = None,
) -> DemoSummary:
    """Send ``days`` of history, from every gateway through MQTT and from every DLMS meter (``dlms``)
    to the push listener, poll the OpenAMI gateways' meters once (``edge``, their running agents), and
    wait until all of it is stored."""
    gateways = virtual_gateways(layout)
    end = _floor(datetime.now(UTC), INTERVAL)
    start = _floor(end - timedelta(days=days), INTERVAL)
    before = platform.ingest.totals.messages
    assert platform.listener is not None
    handled_before = _handled(platform)
    pushes_before, rejected_before = _pushes(platform), _push_rejects(platform)
    started = time.perf_counter()
    sent = 0
    async with make_client(platform.mqtt_url, client_id="openami-demo-sim") as client:
        for done, gateway in enumerate(gateways, start=1):
            sent += await gateway.publish_span(client, platform.settings.mqtt_topic_prefix, start, end)
            if progress:
                progress(done, len(gateways))
    pushed = 0
    address = _push_address(platform)
    if address is not None:
        pushed = sum(await asyncio.gather(*(meter.push_span(*address, start, end) for meter in dlms)))
    pulled, pulled_readings, pull_failures = await collect_pulled(platform, layout)
    bus_read = bus_readings = 0
    for collector in platform.bus_collectors:
        bus_report = await collector.collect_all()
        bus_read, bus_readings = bus_read + bus_report.succeeded, bus_readings + bus_report.readings
    radio_heard, radio_readings = await _hear_radio(platform, len(layout.radio_meters))
    edge_readings = await poll_now(platform, list(edge))
    await _wait_until(lambda: _handled(platform), handled_before + sent, "MQTT uplinks", timeout_s=300)
    await _wait_until(lambda: _pushes(platform), pushes_before + pushed, "DLMS pushes", timeout_s=300)
    await platform.settle(timeout_s=300)
    totals = platform.ingest.totals
    log.info("demo back-fill stored", extra={"messages": totals.messages - before})
    return DemoSummary(
        meters=len(layout.meters)
        + len(layout.dlms_meters)
        + len(layout.pull_meters)
        + len(layout.building_meters)
        + len(layout.radio_meters)
        + len(layout.edge_meters),
        gateways=len(gateways) + len(layout.edge_gateways),
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
        dlms_meters=len(layout.dlms_meters),
        dlms_pushes=pushed,
        dlms_rejected=_push_rejects(platform) - rejected_before,
        pulled_meters=pulled,
        pulled_readings=pulled_readings,
        pull_failures=pull_failures,
        bus_meters=bus_read,
        bus_readings=bus_readings,
        radio_meters=len(layout.radio_meters),
        radio_telegrams=radio_heard,
        radio_readings=radio_readings,
        edge_gateways=len(layout.edge_gateways),
        edge_meters=len(layout.edge_meters),
        edge_readings=edge_readings,
    )


async def _hear_radio(platform: Platform, meters: int, *, timeout_s: float = 30.0) -> tuple[int, int]:
    """Wait until the head-end's receivers have decoded as many telegrams as there are radio meters
    (each transmits every :data:`RADIO_INTERVAL_S`); (telegrams, readings) so far."""

    def decoded() -> int:
        return sum(r.stats.telegrams for r in platform.wmbus_receivers)

    if not platform.wmbus_receivers:
        return 0, 0  # no receiver in this run (tests of the back-fill alone)
    await _wait_until(decoded, meters, "wM-Bus telegrams", timeout_s=timeout_s)
    return decoded(), sum(r.stats.readings for r in platform.wmbus_receivers)


def _handled(platform: Platform) -> int:
    assert platform.listener is not None
    return platform.listener.stats.accepted + platform.listener.stats.rejected


def _push_address(platform: Platform) -> tuple[str, int] | None:
    """Where the DLMS meters push to, or None when the platform runs no push listener."""
    if platform.dlms_push is None:
        return None
    return platform.settings.dlms_push_host, platform.dlms_push.port


def _pushes(platform: Platform) -> int:
    """DLMS pushes the listener has handled (accepted or refused); 0 when it is not running."""
    return 0 if platform.dlms_push is None else platform.dlms_push.stats.received


def _push_rejects(platform: Platform) -> int:
    return 0 if platform.dlms_push is None else platform.dlms_push.stats.rejected


async def _wait_until(count: Callable[[], int], expected: int, what: str, *, timeout_s: float) -> None:
    """Senders are done when the bytes left (QoS 1 acknowledged by the broker, TCP drained); wait until
    the listener has handled them all too."""
    deadline = time.monotonic() + timeout_s
    while count() < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"listener handled {count()} of {expected} {what} in {timeout_s} s")
        await asyncio.sleep(0.05)


async def live(
    platform: Platform, layout: DemoLayout, *, speedup: float, dlms: Sequence[DlmsPushMeter]
) -> None:
    """Every gateway publishes and every DLMS meter pushes each quarter hour as it completes, ``speedup``
    times faster than real time; ``dlms`` are the meters that did the back-fill (their counters go on)."""
    address = _push_address(platform)
    async with make_client(platform.mqtt_url, client_id="openami-demo-live") as client:
        await asyncio.gather(
            *(
                gateway.run_live(client, platform.settings.mqtt_topic_prefix, time_factor=speedup)
                for gateway in virtual_gateways(layout)
            ),
            *((meter.run_live(*address, time_factor=speedup) for meter in dlms) if address else ()),
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


async def _let_pushes_land(platform: Platform, *, quiet_s: float = 0.25, timeout_s: float = 10.0) -> None:
    """Let the push listener handle the pushes already delivered to it before the platform stops.

    Stopping the demo in the middle of a back-fill leaves frames the simulated meters have already sent
    in the sockets' buffers; stopping the listener at once would drop them. Nothing counts what is still
    in flight, so this waits until the listener has handled nothing new for ``quiet_s``, at most
    ``timeout_s``.
    """
    if platform.dlms_push is None:
        return
    deadline = time.monotonic() + timeout_s
    seen = -1
    while seen != _pushes(platform) and time.monotonic() < deadline:
        seen = _pushes(platform)
        await asyncio.sleep(quiet_s)


def prepare(platform: Platform) -> DemoLayout:
    """Seed the tenant, its admin user, the DLMS and radio meters' keys and the OpenAMI gateways' link
    keys (idempotent); blocking, run in a thread.

    The key vault opened here uses the same master key as the platform's listeners (both load it from
    the settings), so the push listener and the gateway link can open what is stored.
    """
    from openami.security.bootstrap import ensure_user

    layout = seed_demo(platform.engine)
    vault = KeyVault(platform.engine, load_master_key(platform.settings))
    provision_dlms_keys(platform.engine, vault, layout)
    provision_radio_keys(platform.engine, vault, layout)
    provision_edge_keys(platform.engine, vault, layout)
    ensure_user(platform.engine, DEMO_TENANT, DEMO_ADMIN, DEMO_PASSWORD, role="admin")
    return layout


async def _start_field(
    simulators: contextlib.AsyncExitStack, platform: Platform, layout: DemoLayout
) -> list[GatewayAgent]:
    """Start every simulated device the head-end reads (DLMS meters, Modbus gateway, M-Bus and RS-485
    converters, consumer-port dongles, the radio receiver) on free loopback ports and point the platform
    at them; start the OpenAMI gateways with their own field buses, and return their agents."""
    meters = await simulators.enter_async_context(DlmsSimulator("127.0.0.1", pulled_simulators(layout), 0))
    gateway = await simulators.enter_async_context(modbus_gateway(layout))
    mbus = await simulators.enter_async_context(MbusBusSimulator())
    iec = await simulators.enter_async_context(iec_converter(layout))
    radio = await simulators.enter_async_context(radio_receiver(layout))
    await asyncio.to_thread(point_modems, platform, meters)
    ports = {"modbus": gateway.port, "mbus": mbus.port, IEC_PROTOCOL: iec.port}
    for serial, port in consumer_ports(layout).items():
        ports[serial] = (await simulators.enter_async_context(port)).port
    await asyncio.to_thread(point_building_meters, platform, layout, ports)
    receiver = await platform.add_wmbus_receiver(
        DEMO_TENANT, f"wmbus+tcp://127.0.0.1:{await radio.serve_tcp()}"
    )
    simulators.push_async_callback(receiver.stop)  # before the stick goes: no "line dropped" at the end
    return await start_gateways(simulators, platform, layout)


async def run_once(settings: Settings, *, days: float = 7, progress: Progress | None = None) -> DemoSummary:
    platform = Platform.build(settings)
    await platform.start()
    try:
        async with contextlib.AsyncExitStack() as simulators:
            layout = await asyncio.to_thread(prepare, platform)
            edge = await _start_field(simulators, platform, layout)
            return await backfill(
                platform, layout, days=days, dlms=dlms_push_meters(layout), edge=edge, progress=progress
            )
    finally:
        await platform.stop()


async def run_forever(
    settings: Settings, *, days: float, speedup: float, on_ready: Callable[[DemoSummary], None]
) -> None:
    """Serve the API and keep the simulator publishing until cancelled (Ctrl-C)."""
    from openami.transports.ports import probe_port

    probe_port(settings.web_host, settings.web_port, "OPENAMI_WEB_PORT")
    platform = Platform.build(settings)
    await platform.start()
    try:
        async with contextlib.AsyncExitStack() as simulators:
            layout = await asyncio.to_thread(prepare, platform)
            edge = await _start_field(simulators, platform, layout)
            await _serve_and_feed(platform, layout, days=days, speedup=speedup, edge=edge, on_ready=on_ready)
    finally:
        await platform.stop()


async def _serve_and_feed(
    platform: Platform,
    layout: DemoLayout,
    *,
    days: float,
    speedup: float,
    edge: Sequence[GatewayAgent],
    on_ready: Callable[[DemoSummary], None],
) -> None:
    """Serve the web API while the simulated meters back-fill and then send live data (the OpenAMI
    gateways' agents, ``edge``, keep running on their own)."""
    from openami.web.server import web_server

    server = web_server(platform)
    dlms = dlms_push_meters(layout)

    async def feed() -> None:
        on_ready(await backfill(platform, layout, days=days, dlms=dlms, edge=edge))
        await live(platform, layout, speedup=speedup, dlms=dlms)

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
        await _let_pushes_land(platform)
