"""End to end, DLMS pull: 50 simulated meters over real TCP on loopback, HLS-GMAC with every APDU
ciphered, read by the head-end's scheduled collection into the store through the bus and the ingest
service; remote disconnect recorded, audited and collected back from the meter's log; a firmware image
transferred, verified and activated.

The meters and the head-end share one injected clock, so "two hours later" is a variable, not a wait.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from openami.app import Platform
from openami.config import Settings
from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsDriverError
from openami.hes.commands import CommandService
from openami.hes.dlms_collector import CollectorOptions, DlmsCollector
from openami.hes.dlms_targets import load_targets
from openami.protocols.dlms.acse import Mechanism
from openami.protocols.dlms.association import MANAGEMENT_CLIENT, MANAGEMENT_SERVER, ClientAssociation
from openami.protocols.dlms.security import SecurityControl
from openami.security.audit import verify_chain
from openami.security.bootstrap import create_tenant_with_admin, ensure_user
from openami.simulator.dlms_meter import SimulatedMeter
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from openami.store.schema import (
    app_user,
    audit_log,
    channel,
    comm_device,
    command,
    dlms_counter,
    event,
    meter,
    register_read,
)
from openami.web.server import build_web_app
from tests.conftest import postgres_schema_url
from tests.hes.dlms_support import register_dlms_meters

pytestmark = pytest.mark.timeout(120)

METERS = 50
QUARTER = timedelta(minutes=15)
START = datetime(2026, 11, 20, 10, 7, 30, tzinfo=UTC)
CLIENT_TITLE = b"OPENAMIT"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    common = {
        "data_dir": tmp_path,
        "bus_url": "memory",
        "mqtt_embedded_port": 0,
        "dlms_push_port": 0,
        "poll_interval_s": 0,
        "ingest_flush_ms": 20,
    }
    if request.param == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'pull.sqlite3'}", **common)
        return
    with postgres_schema_url() as database:
        yield Settings(database_url=database, **common)


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    running = Platform.build(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
async def simulator(clock: Clock) -> AsyncIterator[DlmsSimulator]:
    # Strict meters refuse an invocation counter they have seen: the head-end must carry its counters
    # over from session to session, as with real meters.
    meters = build_meters(METERS, seed=7, now=clock, strict_counters=True)
    async with DlmsSimulator("127.0.0.1", meters, 0) as running:
        yield running


def _register(platform: Platform, simulator: DlmsSimulator) -> int:
    """A tenant with one DLMS meter per simulated meter: address in its modem, keys in the vault."""
    admin = create_tenant_with_admin(
        platform.engine, "pull", "Pull Utility", "Europe/Berlin", "admin", "pw-pw-pw-1"
    )
    assert platform.vault is not None
    register_dlms_meters(platform.engine, platform.vault, admin.tenant_id, simulator)
    return admin.tenant_id


def _profile_times(platform: Platform, code: str) -> dict[str, list[tuple[datetime, int]]]:
    """(ts, version) of every stored reading of channel ``code``, per meter serial, in time order."""
    query = (
        select(meter.c.serial, register_read.c.ts, register_read.c.version)
        .join(channel, channel.c.meter_id == meter.c.id)
        .join(register_read, register_read.c.channel_id == channel.c.id)
        .where(channel.c.code == code)
        .order_by(meter.c.serial, register_read.c.ts, register_read.c.version)
    )
    found: dict[str, list[tuple[datetime, int]]] = {}
    with platform.engine.connect() as conn:
        for row in conn.execute(query):
            ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)
            found.setdefault(row.serial, []).append((ts, row.version))
    return found


def _assert_contiguous(times: dict[str, list[tuple[datetime, int]]], first: datetime, last: datetime) -> None:
    expected = []
    ts = first
    while ts <= last:
        expected.append((ts, 1))
        ts += QUARTER
    assert len(times) == METERS
    for serial, stored in times.items():
        assert stored == expected, f"{serial}: gaps, duplicates or new versions in the stored load profile"


async def _round(platform: Platform, collector: DlmsCollector) -> None:
    assert platform.vault is not None
    targets, skipped = load_targets(platform.engine, platform.vault)
    assert skipped == []
    assert len(targets) == METERS
    report = await collector.collect(targets)
    assert report.failed == 0, report.errors
    assert report.succeeded == METERS
    await platform.settle(timeout_s=60)


async def test_scheduled_reads_store_load_profiles_without_gaps_or_duplicates(
    platform: Platform, simulator: DlmsSimulator, clock: Clock
) -> None:
    _register(platform, simulator)
    options = CollectorOptions(client_system_title=CLIENT_TITLE, backfill=timedelta(days=1), concurrency=16)
    collector = DlmsCollector(platform.engine, platform.bus, options, now=clock)

    await _round(platform, collector)
    first = _next_quarter(START - timedelta(days=1))
    last = _previous_quarter(START)
    _assert_contiguous(_profile_times(platform, "1-0:1.8.0"), first, last)

    clock.now = START + timedelta(hours=2)  # two hours later, the next scheduled round
    await _round(platform, collector)
    _assert_contiguous(_profile_times(platform, "1-0:1.8.0"), first, _previous_quarter(clock.now))

    await _round(platform, collector)  # a round with nothing new stores nothing twice
    _assert_contiguous(_profile_times(platform, "1-0:1.8.0"), first, _previous_quarter(clock.now))
    power = _profile_times(platform, "1-0:1.7.0")
    assert all(len(stored) == 4 * 26 for stored in power.values())
    with platform.engine.connect() as conn:
        counters = conn.execute(select(dlms_counter.c.next_value)).scalars().all()
    # Three sessions per meter continued each other's invocation counters and gave back the unused rest.
    assert len(counters) == METERS
    assert all(10 < value < 100 for value in counters)


async def test_a_drifting_meter_clock_is_set_and_recorded(
    platform: Platform, simulator: DlmsSimulator, clock: Clock
) -> None:
    _register(platform, simulator)
    drifting: SimulatedMeter = simulator.meters[3]
    drifting.clock_offset = timedelta(minutes=4)
    options = CollectorOptions(client_system_title=CLIENT_TITLE, backfill=timedelta(hours=1))
    collector = DlmsCollector(platform.engine, platform.bus, options, now=clock)
    await _round(platform, collector)
    assert abs(drifting.clock_offset.total_seconds()) < 1
    with platform.engine.connect() as conn:
        codes = conn.execute(
            select(meter.c.serial, event.c.code, event.c.detail)
            .join(meter, meter.c.id == event.c.meter_id)
            .where(event.c.code == "clock_synchronised")
        ).all()
    assert [(row.serial, row.detail["drift_s"]) for row in codes] == [(drifting.serial, 240.0)]


async def test_remote_disconnect_changes_the_relay_and_is_audited(
    platform: Platform, simulator: DlmsSimulator, clock: Clock
) -> None:
    tenant_id = _register(platform, simulator)
    target: SimulatedMeter = simulator.meters[0]
    with platform.engine.connect() as conn:
        meter_id = conn.execute(select(meter.c.id).where(meter.c.serial == target.serial)).scalar_one()
    assert platform.vault is not None
    service = CommandService(platform.engine, platform.vault, client_system_title=CLIENT_TITLE, now=clock)
    assert target.relay_connected
    record = await service.run(tenant_id, meter_id, "disconnect", actor="user:1:operator", user_id=None)
    assert record.state == "succeeded", record.result
    assert record.result == {"control_state": "disconnected"}
    assert not target.relay_connected
    record = await service.run(tenant_id, meter_id, "connect", actor="user:1:operator")
    assert record.state == "succeeded"
    assert target.relay_connected

    with platform.engine.connect() as conn:
        states = conn.execute(select(command.c.kind, command.c.state).order_by(command.c.id)).all()
        actions = conn.execute(
            select(audit_log.c.action, audit_log.c.actor, audit_log.c.target_id)
            .where(audit_log.c.action.like("command.%"))
            .order_by(audit_log.c.id)
        ).all()
    assert [tuple(row) for row in states] == [("disconnect", "succeeded"), ("connect", "succeeded")]
    assert [row.action for row in actions] == [
        "command.disconnect.requested",
        "command.disconnect.succeeded",
        "command.connect.requested",
        "command.connect.succeeded",
    ]
    assert {(row.actor, row.target_id) for row in actions} == {("user:1:operator", str(meter_id))}
    assert verify_chain(platform.engine, tenant_id) == (True, None)

    # The meter logged both operations in its disconnector log; the next scheduled round collects them.
    clock.now += QUARTER
    options = CollectorOptions(client_system_title=CLIENT_TITLE, backfill=timedelta(hours=1))
    await _round(platform, DlmsCollector(platform.engine, platform.bus, options, now=clock))
    with platform.engine.connect() as conn:
        logged = conn.execute(
            select(event.c.code, event.c.source, event.c.detail)
            .where(event.c.meter_id == meter_id, event.c.code.like("remote_%"))
            .order_by(event.c.ts, event.c.id)
        ).all()
    assert [(row.code, row.source, row.detail["log"]) for row in logged] == [
        ("remote_disconnect", "dlms-pull", "0-0:99.98.2"),
        ("remote_reconnect", "dlms-pull", "0-0:99.98.2"),
    ]


async def test_a_firmware_upgrade_transfers_verifies_and_activates_the_image(
    platform: Platform, simulator: DlmsSimulator, clock: Clock
) -> None:
    tenant_id = _register(platform, simulator)
    target: SimulatedMeter = simulator.meters[7]
    with platform.engine.connect() as conn:
        meter_id = conn.execute(select(meter.c.id).where(meter.c.serial == target.serial)).scalar_one()
    assert platform.vault is not None
    service = CommandService(platform.engine, platform.vault, client_system_title=CLIENT_TITLE, now=clock)
    image = bytes(range(256)) * 80 + b"OpenAMI test firmware 2.1.0"  # 20 KiB and a tail block
    seen: list[tuple[int, int]] = []
    record = await service.upgrade_firmware(
        tenant_id,
        meter_id,
        image,
        "OAM-2.1.0",
        actor="user:1:operator",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert record.state == "succeeded", record.result
    assert record.result is not None
    assert record.result["active_identifier"] == "OAM-2.1.0"
    assert record.result["signature"] == hashlib.sha256(image).hexdigest()
    assert target.image.active_identifier == b"OAM-2.1.0"
    assert seen[-1][0] == seen[-1][1] == record.result["blocks"]
    with platform.engine.connect() as conn:
        actions = conn.execute(
            select(audit_log.c.action, audit_log.c.detail)
            .where(audit_log.c.action.like("command.firmware.%"))
            .order_by(audit_log.c.id)
        ).all()
    assert [row.action for row in actions] == ["command.firmware.requested", "command.firmware.succeeded"]
    assert actions[0].detail["sha256"] == hashlib.sha256(image).hexdigest()


async def test_an_unreachable_meter_fails_its_command_and_its_read_without_stopping_the_others(
    platform: Platform, simulator: DlmsSimulator, clock: Clock
) -> None:
    tenant_id = _register(platform, simulator)
    with platform.engine.begin() as conn:
        victim = conn.execute(
            select(meter.c.id, meter.c.comm_device_id).where(meter.c.serial == "SIM00000002")
        ).one()
        conn.execute(
            comm_device.update()
            .where(comm_device.c.id == victim.comm_device_id)
            .values(address="tcp://127.0.0.1:1")
        )
    assert platform.vault is not None
    options = CollectorOptions(client_system_title=CLIENT_TITLE, backfill=timedelta(hours=1), timeout_s=2)
    collector = DlmsCollector(platform.engine, platform.bus, options, now=clock)
    targets, _ = load_targets(platform.engine, platform.vault)
    report = await collector.collect(targets)
    assert (report.succeeded, report.failed) == (METERS - 1, 1)
    assert list(report.errors) == ["DlmsUnreachable"]
    service = CommandService(platform.engine, platform.vault, client_system_title=CLIENT_TITLE, timeout_s=2)
    record = await service.run(tenant_id, victim.id, "disconnect", actor="user:1:operator")
    assert record.state == "failed"
    assert record.result is not None and "DlmsUnreachable" in record.result["error"]
    with platform.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(command)).scalar_one()
    assert stored == 1


def _next_quarter(ts: datetime) -> datetime:
    floor = ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)
    return floor if floor == ts else floor + QUARTER


def _previous_quarter(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)


async def test_commands_through_the_api_are_sent_as_the_caller_and_refused_without_the_permission(
    platform: Platform, simulator: DlmsSimulator
) -> None:
    tenant_id = _register(platform, simulator)
    ensure_user(platform.engine, "pull", "analyst", "pw-pw-pw-2", role="analyst")
    target: SimulatedMeter = simulator.meters[5]
    with platform.engine.connect() as conn:
        meter_id = conn.execute(select(meter.c.id).where(meter.c.serial == target.serial)).scalar_one()

    def calls() -> None:  # in a thread: the simulator keeps answering on the test's event loop
        with TestClient(build_web_app(platform)) as api:

            def login(user: str, password: str) -> dict[str, str]:
                answer = api.post(
                    "/auth/login", json={"tenant": "pull", "username": user, "password": password}
                )
                return {"Authorization": f"Bearer {answer.json()['access_token']}"}

            admin, analyst = login("admin", "pw-pw-pw-1"), login("analyst", "pw-pw-pw-2")
            sent = api.post(f"/meters/{meter_id}/commands", json={"kind": "disconnect"}, headers=admin)
            assert sent.status_code == 201, sent.text
            assert sent.json()["state"] == "succeeded"
            listed = api.get(f"/meters/{meter_id}/commands", headers=admin).json()
            assert [c["kind"] for c in listed] == ["disconnect"]
            assert api.get(f"/commands/{sent.json()['id']}", headers=analyst).status_code == 403
            refused = api.post(f"/meters/{meter_id}/commands", json={"kind": "connect"}, headers=analyst)
            assert refused.status_code == 403
            assert refused.headers["content-type"] == "application/problem+json"
            unknown = api.post(f"/meters/{meter_id}/commands", json={"kind": "explode"}, headers=admin)
            assert unknown.status_code == 422
            assert (
                api.post("/meters/999999/commands", json={"kind": "connect"}, headers=admin).status_code
                == 404
            )

    await asyncio.to_thread(calls)
    assert not target.relay_connected
    with platform.engine.connect() as conn:
        actors = set(
            conn.execute(select(audit_log.c.actor).where(audit_log.c.action.like("command.%"))).scalars()
        )
    assert actors == {f"user:{_user_id(platform, tenant_id, 'admin')}:admin"}


def _user_id(platform: Platform, tenant_id: int, username: str) -> int:
    with platform.engine.connect() as conn:
        return int(
            conn.execute(
                select(app_user.c.id).where(
                    app_user.c.tenant_id == tenant_id, app_user.c.username == username
                )
            ).scalar_one()
        )


async def test_meters_behind_a_terminal_server_are_read_over_hdlc(platform: Platform, clock: Clock) -> None:
    admin = create_tenant_with_admin(platform.engine, "hdlc", "HDLC Utility", "UTC", "admin", "pw-pw-pw-1")
    assert platform.vault is not None
    async with DlmsSimulator("127.0.0.1", build_meters(4, seed=3, now=clock), 0, framing="hdlc") as hdlc:
        register_dlms_meters(
            platform.engine,
            platform.vault,
            admin.tenant_id,
            hdlc,
            address=lambda index, port: f"hdlc+tcp://127.0.0.1:{port}?physical={16 + index}",
        )
        options = CollectorOptions(client_system_title=CLIENT_TITLE, backfill=timedelta(hours=6))
        targets, skipped = load_targets(platform.engine, platform.vault)
        assert skipped == [] and {t.endpoint.framing for t in targets} == {"hdlc"}
        report = await DlmsCollector(platform.engine, platform.bus, options, now=clock).collect(targets)
    assert (report.succeeded, report.failed) == (4, 0), report.errors
    await platform.settle(timeout_s=60)
    times = _profile_times(platform, "1-0:1.8.0")
    assert {len(stored) for stored in times.values()} == {24}


async def test_a_strict_meter_refuses_a_head_end_that_restarts_its_counters(simulator: DlmsSimulator) -> None:
    meter_keys = simulator.meters[0].keys

    def association() -> ClientAssociation:
        return ClientAssociation(
            MANAGEMENT_CLIENT,
            MANAGEMENT_SERVER,
            mechanism=Mechanism.HIGH_GMAC,
            system_title=CLIENT_TITLE,
            encryption_key=meter_keys.encryption_key,
            authentication_key=meter_keys.authentication_key,
            security=SecurityControl(suite=0, authenticated=True, encrypted=True),
        )

    async with DlmsClient("127.0.0.1", simulator.ports[0], association(), timeout=2) as client:
        await client.get_clock()
    with pytest.raises(DlmsDriverError):
        async with DlmsClient("127.0.0.1", simulator.ports[0], association(), timeout=2) as client:
            await client.get_clock()
