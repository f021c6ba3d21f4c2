"""The front-end processor over real sockets on loopback: simulated cellular modems connect out to it,
identify themselves, and the DLMS collector and the command service read and command their meters
through the held connections, with the platform's store, bus and key vault.

The meters and the head-end share one injected clock, as in the DLMS pull e2e tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select

from openami.app import Platform
from openami.config import Settings
from openami.drivers.dlms.errors import DlmsUnreachable
from openami.hes.commands import CommandService
from openami.hes.dlms_collector import CollectorOptions, DlmsCollector
from openami.hes.dlms_session import DlmsSessions
from openami.hes.dlms_targets import DLMS_PROTOCOL, DlmsTarget, load_targets
from openami.hes.fep import PORT_SETTING, FepUnavailable, FrontEndProcessor
from openami.security.keyvault import KeyKind
from openami.simulator.cellular_modem import CellularModem
from openami.simulator.dlms_meter import SimulatedMeter
from openami.simulator.dlms_server import build_meters, hdlc_address
from openami.store.schema import channel, comm_device, meter, register_read, tenant
from openami.transports.errors import PortInUseError
from tests.drivers.dlms.test_client_simulator import expected_rows
from tests.hes.support import platform_settings, until

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
CLIENT_TITLE = b"OPENAMIF"
QUARTER = timedelta(minutes=15)
START = datetime(2026, 11, 20, 10, 7, 30, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


FepFactory = Callable[..., Awaitable[FrontEndProcessor]]
ModemFactory = Callable[..., Awaitable[CellularModem]]


@pytest.fixture
async def make_fep(platform: Platform) -> AsyncIterator[FepFactory]:
    started: list[FrontEndProcessor] = []

    async def make(**options: Any) -> FrontEndProcessor:
        options.setdefault("allow", ("127.0.0.1/32",))
        options.setdefault("identify_timeout_s", 2.0)
        fep = FrontEndProcessor(HOST, options.pop("port", 0), platform.engine, **options)
        await fep.start()
        started.append(fep)
        return fep

    yield make
    for fep in started:
        await fep.stop()


@pytest.fixture
async def make_modem() -> AsyncIterator[ModemFactory]:
    started: list[CellularModem] = []

    async def make(fep: FrontEndProcessor, meter: SimulatedMeter, **options: Any) -> CellularModem:
        modem = CellularModem(HOST, fep.port, f"MODEM-{meter.serial}", meter, **options)
        await modem.start()
        started.append(modem)
        return modem

    yield make
    for modem in started:
        await modem.stop()


def _tenant(platform: Platform, slug: str) -> int:
    with platform.engine.begin() as conn:
        return int(
            conn.execute(
                insert(tenant).values(slug=slug, name=slug.title()).returning(tenant.c.id)
            ).scalar_one()
        )


def _register(
    platform: Platform,
    tenant_id: int,
    meters: list[SimulatedMeter],
    *,
    scheme: str = "fep",
    query: str = "",
    status: str = "active",
) -> dict[str, int]:
    """Per simulated meter: its modem (ident ``MODEM-<serial>``, address ``<scheme>://<ident><query>``),
    the meter, and its keys in the vault; returns serial -> meter id."""
    ids: dict[str, int] = {}
    with platform.engine.begin() as conn:
        for sim in meters:
            ident = f"MODEM-{sim.serial}"
            modem = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=ident,
                    kind="modem",
                    protocol="dlms",
                    address=f"{scheme}://{ident}{query}",
                    status=status,
                )
                .returning(comm_device.c.id)
            ).scalar_one()
            ids[sim.serial] = conn.execute(
                insert(meter)
                .values(
                    tenant_id=tenant_id,
                    serial=sim.serial,
                    medium="electricity",
                    protocol=DLMS_PROTOCOL,
                    comm_device_id=modem,
                )
                .returning(meter.c.id)
            ).scalar_one()
    assert platform.vault is not None
    for sim in meters:
        keys: tuple[tuple[KeyKind, bytes], ...] = (
            ("ek", sim.keys.encryption_key),
            ("ak", sim.keys.authentication_key),
        )
        for kind, secret in keys:
            platform.vault.store(
                tenant_id, system_title=sim.system_title, meter_id=ids[sim.serial], kind=kind, secret=secret
            )
    return ids


def _targets(platform: Platform) -> list[DlmsTarget]:
    assert platform.vault is not None
    targets, skipped = load_targets(platform.engine, platform.vault)
    assert skipped == []
    return targets


def _collector(
    platform: Platform, fep: FrontEndProcessor | None, clock: Clock, **options: Any
) -> DlmsCollector:
    options.setdefault("backfill", timedelta(hours=6))
    return DlmsCollector(
        platform.engine,
        platform.bus,
        CollectorOptions(client_system_title=CLIENT_TITLE, **options),
        now=clock,
        fep=fep,
    )


def _stored(platform: Platform, serial: str, code: str = "1-0:1.8.0") -> list[tuple[datetime, float]]:
    query = (
        select(register_read.c.ts, register_read.c.value)
        .join(channel, channel.c.id == register_read.c.channel_id)
        .join(meter, meter.c.id == channel.c.meter_id)
        .where(meter.c.serial == serial, channel.c.code == code)
        .order_by(register_read.c.ts)
    )
    with platform.engine.connect() as conn:
        return [
            (row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC), float(row.value))
            for row in conn.execute(query)
        ]


def _quarter_floor(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)


def _expected(sim: SimulatedMeter, since: datetime, now: datetime) -> list[tuple[datetime, float]]:
    """The import register of every quarter in (since, now], straight from the meter's model."""
    found: list[tuple[datetime, float]] = []
    for row in expected_rows(sim, _quarter_floor(since) + QUARTER, _quarter_floor(now) + QUARTER):
        ts, value = row[0], row[1]
        assert isinstance(ts, datetime) and isinstance(value, int | float)
        found.append((ts, float(value)))
    return found


async def _connected(fep: FrontEndProcessor, modem: CellularModem, count: int = 1) -> None:
    """Until the FEP holds the modem's ``count``-th connection."""
    await modem.wait_connections(count)
    port = modem.source_ports[count - 1]
    await until(lambda: any(d.peer == f"{HOST}:{port}" for d in fep.devices()))


async def _raw(fep: FrontEndProcessor, send: bytes = b"", source: str = HOST) -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection(HOST, fep.port, local_addr=(source, 0))
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


async def _closed_by_fep(reader: asyncio.StreamReader, within_s: float = 3.0) -> float:
    """Seconds until the FEP closed the connection (fails the test if it stays open longer)."""
    started = time.monotonic()
    async with asyncio.timeout(within_s):
        try:
            data = await reader.read(100)
        except ConnectionResetError:
            data = b""
    assert data == b""
    return time.monotonic() - started


# ------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    ("framing", "scheme", "query"), [("wrapper", "fep", ""), ("hdlc", "fep+hdlc", "?physical=16")]
)
async def test_a_modem_identifies_and_the_collector_reads_its_load_profile_through_the_fep(
    platform: Platform,
    make_fep: FepFactory,
    make_modem: ModemFactory,
    clock: Clock,
    framing: str,
    scheme: str,
    query: str,
) -> None:
    tenant_id = _tenant(platform, "cell")
    sims = build_meters(2, seed=11, now=clock, strict_counters=True)
    _register(platform, tenant_id, sims, scheme=scheme, query=query)
    fep = await make_fep()
    modems = [await make_modem(fep, sim, framing=framing, address=hdlc_address(0)) for sim in sims]
    for modem in modems:
        await _connected(fep, modem)

    targets = _targets(platform)
    assert {(t.endpoint.via, t.endpoint.framing) for t in targets} == {("fep", framing)}
    report = await _collector(platform, fep, clock).collect(targets)
    assert (report.succeeded, report.failed) == (2, 0), report.errors
    await platform.settle(timeout_s=30)
    for sim in sims:
        stored = _stored(platform, sim.serial)
        assert len(stored) == 24
        assert stored == _expected(sim, START - timedelta(hours=6), START)

    devices = fep.devices()
    assert [(d.ident, d.tenant, d.kind, d.in_use) for d in devices] == [
        (f"MODEM-{sim.serial}", "cell", "modem", False) for sim in sims
    ]
    assert [d.peer for d in devices] == [f"{HOST}:{m.source_ports[0]}" for m in modems]
    assert all(d.connected_since <= d.last_activity <= datetime.now(UTC) for d in devices)
    assert (fep.stats.accepted, fep.stats.active, fep.stats.lends) == (2, 2, 2)
    assert fep.stats.outcomes()["accepted"] == 2 and fep.stats.gauges() == {"active": 2, "identifying": 0}
    assert fep.stats.sessions() == {"lent": 2, "refused": 0, "stale_bytes": 0}
    with platform.engine.connect() as conn:
        seen = conn.execute(select(comm_device.c.last_seen_at)).scalars().all()
    assert all(ts is not None for ts in seen)

    # The next round goes on from what is stored, over the same held connections.
    clock.now = START + timedelta(hours=1)
    report = await _collector(platform, fep, clock).collect(_targets(platform))
    assert report.failed == 0, report.errors
    await platform.settle(timeout_s=30)
    assert _stored(platform, sims[0].serial) == _expected(sims[0], START - timedelta(hours=6), clock.now)
    assert all(m.connections == 1 for m in modems)


async def test_a_remote_disconnect_through_the_fep_switches_the_relay(
    platform: Platform, make_fep: FepFactory, make_modem: ModemFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    sims = build_meters(1, seed=3, now=clock, strict_counters=True)
    ids = _register(platform, tenant_id, sims)
    fep = await make_fep()
    await _connected(fep, await make_modem(fep, sims[0]))
    assert platform.vault is not None
    service = CommandService(
        platform.engine, platform.vault, client_system_title=CLIENT_TITLE, now=clock, fep=fep, timeout_s=5
    )
    record = await service.run(tenant_id, ids[sims[0].serial], "disconnect", actor="user:1:operator")
    assert record.state == "succeeded", record.result
    assert record.result == {"control_state": "disconnected"}
    assert not sims[0].relay_connected
    record = await service.run(tenant_id, ids[sims[0].serial], "connect", actor="user:1:operator")
    assert record.state == "succeeded", record.result
    assert sims[0].relay_connected


async def test_without_a_connection_or_a_fep_reads_and_commands_fail_as_unreachable_at_once(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    sims = build_meters(1, seed=3, now=clock)
    ids = _register(platform, tenant_id, sims)
    fep = await make_fep()
    for with_fep in (fep, None):
        started = time.monotonic()
        report = await _collector(platform, with_fep, clock).collect(_targets(platform))
        assert list(report.errors) == ["DlmsUnreachable"]
        assert time.monotonic() - started < 2
    assert platform.vault is not None
    service = CommandService(platform.engine, platform.vault, client_system_title=CLIENT_TITLE, fep=fep)
    record = await service.run(tenant_id, ids[sims[0].serial], "disconnect", actor="user:1:operator")
    assert record.state == "failed"
    assert record.result is not None and "not connected" in record.result["error"]


# ----------------------------------------------------------------------------------- admission


async def test_a_connection_from_outside_the_allow_list_is_closed_at_once(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    sims = build_meters(1, now=clock)
    _register(platform, tenant_id, sims)
    fep = await make_fep(allow=("127.0.0.1/32", "2001:db8::/32"))
    # Loopback on Linux answers all of 127.0.0.0/8: 127.0.0.2 is another source address.
    reader, writer = await _raw(fep, send=f"ID:MODEM-{sims[0].serial}\r\n".encode(), source="127.0.0.2")
    assert await _closed_by_fep(reader) < 1
    writer.close()
    assert fep.stats.refused_address == 1
    assert (fep.stats.accepted, fep.devices()) == (0, [])
    reader, writer = await _raw(fep, send=f"ID:MODEM-{sims[0].serial}\r\n".encode())
    await until(lambda: fep.is_connected(f"MODEM-{sims[0].serial}"))
    writer.close()


async def test_unknown_inactive_and_malformed_idents_and_silent_clients_are_closed(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    _register(platform, tenant_id, build_meters(1, now=clock), status="retired")
    fep = await make_fep(identify_timeout_s=0.3)
    for first in (b"ID:NOBODY\r\n", b"ID:MODEM-SIM00000001\r\n", b"\xff\xfe\r\n", b"x" * 200, b"ID:a b c\n"):
        reader, writer = await _raw(fep, send=first)
        assert await _closed_by_fep(reader) < 2, first
        writer.close()
    assert fep.stats.refused_unknown == 5
    reader, writer = await _raw(fep)  # connects, says nothing
    waited = await _closed_by_fep(reader)
    writer.close()
    assert 0.2 < waited < 2
    assert fep.stats.identify_timeouts == 1
    assert (fep.stats.accepted, fep.stats.active) == (0, 0)
    await until(lambda: fep.stats.identifying == 0)


async def test_an_ident_registered_in_two_tenants_is_refused_and_lends_respect_the_tenant(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    first, second = _tenant(platform, "one"), _tenant(platform, "two")
    sims = build_meters(2, now=clock)
    _register(platform, first, sims[:1])
    _register(platform, second, sims[1:])
    with platform.engine.begin() as conn:  # the first meter's modem ident again, in the second tenant
        conn.execute(insert(comm_device).values(tenant_id=second, ident="MODEM-SIM00000001", kind="gateway"))
    fep = await make_fep()
    reader, writer = await _raw(fep, send=b"MODEM-SIM00000001\n")
    await _closed_by_fep(reader)
    writer.close()
    assert fep.stats.refused_unknown == 1
    reader, writer = await _raw(fep, send=b"id:MODEM-SIM00000002\r\n")
    await until(lambda: fep.is_connected("MODEM-SIM00000002"))
    with pytest.raises(FepUnavailable):
        async with fep.lend("MODEM-SIM00000002", 1, tenant_id=first):
            pass
    async with fep.lend("MODEM-SIM00000002", 1, tenant_id=second) as line:
        assert not line.closed
    writer.close()


async def test_the_limit_of_total_connections_holds(platform: Platform, make_fep: FepFactory) -> None:
    fep = await make_fep(max_connections=2, identify_timeout_s=30)
    held = [await _raw(fep), await _raw(fep)]
    await until(lambda: fep.stats.identifying == 2)
    reader, writer = await _raw(fep)
    assert await _closed_by_fep(reader) < 1
    writer.close()
    assert fep.stats.refused_limit == 1
    held[0][1].close()  # one leaves: there is room again
    await until(lambda: fep.stats.identifying == 1)
    reader, writer = await _raw(fep)
    await until(lambda: fep.stats.identifying == 2)
    assert fep.stats.refused_limit == 1
    writer.close()
    held[1][1].close()


async def test_a_taken_port_is_a_clear_error_naming_the_setting(
    platform: Platform, make_fep: FepFactory
) -> None:
    fep = await make_fep()
    with pytest.raises(PortInUseError, match=PORT_SETTING):
        await make_fep(port=fep.port)


# ----------------------------------------------------------------------------- held connections


async def test_a_lent_connection_is_a_line_stale_bytes_never_reach_the_next_lender(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    _register(platform, tenant_id, build_meters(1, now=clock))
    fep = await make_fep(buffer_bytes=64)
    reader, writer = await _raw(fep, send=b"ID:MODEM-SIM00000001\rstale answer")
    await until(lambda: fep.is_connected("MODEM-SIM00000001"))
    writer.write(b"x" * 100)  # more than the buffer keeps while nobody listens
    await writer.drain()
    await until(lambda: fep.stats.stale_bytes >= 100 + 12 - 64)
    async with fep.lend("MODEM-SIM00000001", 1) as line:
        assert fep.stats.stale_bytes == 112
        assert line.peer.startswith("fep://MODEM-SIM00000001 (127.0.0.1:")
        assert line.baudrate is None and not line.follows_baudrate
        await line.set_baudrate(9600, 1)
        await line.send(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.write(b"pong")
        async with asyncio.timeout(2):
            assert await line.read() == b"pong"
        line.close()  # back to the FEP, the socket stays open
        with pytest.raises(ConnectionResetError):
            await line.read()
        assert [d.in_use for d in fep.devices()] == [False]
    assert not writer.is_closing()
    async with fep.lend("MODEM-SIM00000001", 1) as line:
        assert fep.devices()[0].in_use
        writer.close()  # the device hangs up: the lender sees the end, the registry forgets it at once
        async with asyncio.timeout(2):
            assert await line.read() == b""
    assert not fep.is_connected("MODEM-SIM00000001")
    assert fep.stats.closed_by_device == 1
    with pytest.raises(FepUnavailable, match="not connected"):
        async with fep.lend("MODEM-SIM00000001", 5):
            pass


async def test_an_idle_connection_is_closed_after_the_idle_time(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    _register(platform, tenant_id, build_meters(1, now=clock))
    fep = await make_fep(idle_timeout_s=0.4)
    reader, writer = await _raw(fep, send=b"ID:MODEM-SIM00000001\r\n")
    await until(lambda: fep.is_connected("MODEM-SIM00000001"))
    assert 0.2 < await _closed_by_fep(reader) < 2
    writer.close()
    assert fep.stats.idle_timeouts == 1
    assert not fep.is_connected("MODEM-SIM00000001")


async def test_a_reconnecting_modem_replaces_its_old_connection_and_reads_go_on(
    platform: Platform, make_fep: FepFactory, make_modem: ModemFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    sims = build_meters(1, seed=5, now=clock, strict_counters=True)
    _register(platform, tenant_id, sims)
    ident = f"MODEM-{sims[0].serial}"
    fep = await make_fep()
    modem = await make_modem(fep, sims[0])
    await _connected(fep, modem)
    collector = _collector(platform, fep, clock)
    assert (await collector.collect(_targets(platform))).failed == 0

    # A network change while a session holds the old connection: that session ends, typed, at once.
    async with fep.lend(ident, 1) as line:
        modem.network_change()
        await _connected(fep, modem, 2)
        async with asyncio.timeout(2):
            assert await line.read() == b""
    assert modem.source_ports[0] != modem.source_ports[1]
    assert fep.stats.replaced == 1
    assert [d.peer for d in fep.devices()] == [f"{HOST}:{modem.source_ports[1]}"]

    clock.now = START + timedelta(hours=1)
    report = await collector.collect(_targets(platform))
    assert report.failed == 0, report.errors
    await platform.settle(timeout_s=30)
    assert _stored(platform, sims[0].serial) == _expected(sims[0], START - timedelta(hours=6), clock.now)

    modem.drop()  # a clean hang-up: gone from the registry at once, back after the modem's redial
    await _connected(fep, modem, 3)
    assert fep.stats.closed_by_device == 1
    assert (fep.stats.accepted, fep.stats.active) == (3, 1)


async def test_two_reads_of_the_same_meter_at_once_are_serialised(
    platform: Platform, make_fep: FepFactory, make_modem: ModemFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    sims = build_meters(1, seed=9, now=clock, strict_counters=True)
    _register(platform, tenant_id, sims)
    ident = f"MODEM-{sims[0].serial}"
    fep = await make_fep()
    await _connected(fep, await make_modem(fep, sims[0]))
    targets = _targets(platform)

    reports = await asyncio.gather(*(_collector(platform, fep, clock).collect(targets) for _ in range(3)))
    assert [(r.succeeded, r.failed) for r in reports] == [(1, 0)] * 3, [r.errors for r in reports]
    assert fep.stats.lends == 3

    order: list[str] = []
    entered = asyncio.Event()

    async def first() -> None:
        async with fep.lend(ident, 1):
            order.append("first in")
            entered.set()
            await asyncio.sleep(0.2)
            order.append("first out")

    async def second() -> None:
        await entered.wait()
        async with fep.lend(ident, 5):
            order.append("second in")

    async def impatient() -> None:
        await entered.wait()
        with pytest.raises(FepUnavailable, match="busy"):
            async with fep.lend(ident, 0.05):
                pass
        order.append("impatient gave up")

    await asyncio.gather(first(), second(), impatient())
    assert order == ["first in", "impatient gave up", "first out", "second in"]

    # A session waiting longer than the collector allows fails as unreachable, not after a hang.
    sessions = DlmsSessions(platform.engine, CLIENT_TITLE, 5, fep=fep, fep_wait_s=0.05)
    async with fep.lend(ident, 1):
        with pytest.raises(DlmsUnreachable, match="busy"):
            async with sessions.open(targets[0]):
                pass


async def test_a_device_that_disconnects_mid_read_fails_that_read_with_a_typed_error(
    platform: Platform, make_fep: FepFactory, make_modem: ModemFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    sims = build_meters(1, seed=2, now=clock, strict_counters=True)
    _register(platform, tenant_id, sims)
    fep = await make_fep()
    # After the association and the clock, the modem drops the line in the middle of the session.
    modem = await make_modem(fep, sims[0], hang_up_after_apdus=3, reconnect_delay_s=0.2)
    await _connected(fep, modem)
    collector = _collector(platform, fep, clock, timeout_s=10)
    started = time.monotonic()
    report = await collector.collect(_targets(platform))
    assert time.monotonic() - started < 3  # far below the 10 s answer time-out: no hang
    assert (report.succeeded, report.failed) == (0, 1)
    assert list(report.errors) == ["DlmsUnreachable"]

    await _connected(fep, modem, 2)  # it dials in again; the next round reads it
    report = await collector.collect(_targets(platform))
    assert report.failed == 0, report.errors


async def test_the_lf_of_a_split_cr_lf_never_reaches_a_session(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    _register(platform, tenant_id, build_meters(1, now=clock))
    fep = await make_fep()
    _, writer = await _raw(fep, send=b"ID:MODEM-SIM00000001\r")
    await until(lambda: fep.is_connected("MODEM-SIM00000001"))
    async with fep.lend("MODEM-SIM00000001", 1) as line:
        writer.write(b"\nhello")  # the identification's LF, late, then the answer
        async with asyncio.timeout(2):
            received = b""
            while len(received) < 5:
                received += await line.read()
        assert received == b"hello"
    writer.close()


async def test_with_two_connections_per_device_the_newest_idle_is_lent_and_a_third_replaces_the_oldest(
    platform: Platform, make_fep: FepFactory, clock: Clock
) -> None:
    tenant_id = _tenant(platform, "cell")
    _register(platform, tenant_id, build_meters(1, now=clock))
    ident = "MODEM-SIM00000001"
    fep = await make_fep(max_per_device=2)
    first = await _raw(fep, send=f"ID:{ident}\r\n".encode())
    await until(lambda: len(fep.devices()) == 1)
    second = await _raw(fep, send=f"ID:{ident}\r\n".encode())
    await until(lambda: len(fep.devices()) == 2)
    async with fep.lend(ident, 1) as newest, fep.lend(ident, 1) as older:
        await newest.send(b"n")
        await older.send(b"o")
        assert await second[0].readexactly(1) == b"n"
        assert await first[0].readexactly(1) == b"o"
        with pytest.raises(FepUnavailable, match="busy"):
            async with fep.lend(ident, 0.05):
                pass
    third = await _raw(fep, send=f"ID:{ident}\r\n".encode())
    await _closed_by_fep(first[0])
    assert fep.stats.replaced == 1
    peers = {d.peer for d in fep.devices()}
    assert peers == {_peer(second[1]), _peer(third[1])}
    for _, writer in (first, second, third):
        writer.close()


def _peer(writer: asyncio.StreamWriter) -> str:
    host, port = writer.get_extra_info("sockname")[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def test_ipv6_peers_are_checked_against_ipv6_networks(platform: Platform, clock: Clock) -> None:
    tenant_id = _tenant(platform, "cell")
    _register(platform, tenant_id, build_meters(1, now=clock))
    for allow, admitted in ((("::1/128",), True), (("127.0.0.0/8", "2001:db8::/32"), False)):
        async with FrontEndProcessor("::1", 0, platform.engine, allow=allow) as fep:
            reader, writer = await asyncio.open_connection("::1", fep.port)
            writer.write(b"ID:MODEM-SIM00000001\r\n")
            if admitted:
                await until(partial(fep.is_connected, "MODEM-SIM00000001"))
                assert fep.devices()[0].peer == _peer(writer)
            else:
                await _closed_by_fep(reader)
                assert fep.stats.refused_address == 1
            writer.close()


async def test_the_platform_runs_the_fep_from_its_settings(
    tmp_path: Path, make_modem: ModemFactory, clock: Clock
) -> None:
    """``fep_enabled``: the platform's FEP holds the modem and its own DLMS collector reads through it."""
    settings = platform_settings(
        tmp_path,
        fep_enabled=True,
        fep_port=0,
        fep_allow=["127.0.0.0/8"],
        dlms_client_system_title=CLIENT_TITLE.hex(),
    )
    running = Platform.build(settings)
    await running.start()
    try:
        assert running.fep is not None and running.health()["fep"] == "ok"
        sims = build_meters(1, seed=5, now=clock, strict_counters=True)
        _register(running, _tenant(running, "cell"), sims)
        modem = await make_modem(running.fep, sims[0])
        await _connected(running.fep, modem)
        assert running.collector is not None and running.vault is not None
        targets, _ = load_targets(running.engine, running.vault)
        report = await running.collector.collect(targets)
        assert report.succeeded == 1, report.errors
        metrics = running.metrics.exposition()[0].decode()
        assert 'openami_fep_held{state="active"} 1.0' in metrics
    finally:
        await running.stop()
    with pytest.raises(ValidationError, match="fep_allow"):
        Settings(fep_allow=["10.0.0.1/8"])
