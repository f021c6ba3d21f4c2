"""Configuration commands (load limit, push setup, tariff calendar) and key rotation against simulated
DLMS meters over real sockets: sent and read back, verified rather than sent again, queued as jobs and
from the CLI; a rotated key opens the next session while the old one no longer does, and a rotation
whose confirmation failed leaves the meter reachable and is completed by the next attempt."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from openami.app import Platform
from openami.cli import app
from openami.drivers.dlms.errors import DlmsDriverError
from openami.hes import command_jobs, job_store
from openami.hes.command_jobs import ApprovalRequired
from openami.hes.commands import CommandService
from openami.hes.config_commands import command_params
from openami.hes.dlms_session import DlmsSessions
from openami.hes.dlms_targets import DlmsTarget, load_targets
from openami.hes.job_store import NewJob
from openami.hes.jobstate import State
from openami.hes.meter_reader import READ_KIND, MeterReader, PullCollectors
from openami.protocols.dlms.association import ServerAssociation
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.xdlms import ActionRequestNormal, ActionResult, CosemAttribute
from openami.security.errors import InvalidInput
from openami.simulator.dlms_config_objects import (
    ACTIVITY_CALENDAR,
    CALENDAR_CLASS,
    LIMITER_CLASS,
    PUSH_SETUP_CLASS,
    SECURITY_SETUP_CLASS,
)
from openami.simulator.dlms_meter import DEVICE_NAME, SimulatedMeter
from openami.simulator.dlms_server import DlmsSimulator
from openami.store.schema import audit_log, command, device_key
from tests.hes.command_support import CLIENT_TITLE, Clock, Rig, clock, count_calls, make_rig, simulator

__all__ = ["clock", "simulator"]  # fixtures

pytestmark = pytest.mark.timeout(60)

CALENDAR: dict[str, Any] = {
    "name": "TOU-2027",
    "seasons": [
        {"name": "winter", "start": "10-01", "week": "std"},
        {"name": "summer", "start": "04-01", "week": "std"},
    ],
    "weeks": [{"name": "std", "days": [1, 1, 1, 1, 1, 2, 2]}],
    "days": [
        {"id": 1, "switches": [{"time": "22:00", "script": 2}, {"time": "06:00", "script": 1}]},
        {"id": 2, "switches": [{"time": "00:00", "script": 2}]},
    ],
    "activate_at": None,
}


@pytest.fixture
def rig(platform: Platform, simulator: DlmsSimulator, clock: Clock) -> Rig:
    built = make_rig(platform, simulator, clock)
    assert platform.vault is not None
    for sim in simulator.meters:
        assert sim.keys.master_key is not None
        platform.vault.store(
            built.tenant_id,
            system_title=sim.system_title,
            meter_id=built.meters[sim.serial],
            kind="kek",
            secret=sim.keys.master_key,
        )
    return built


def _service(rig: Rig) -> CommandService:
    assert rig.platform.vault is not None
    return CommandService(
        rig.engine, rig.platform.vault, client_system_title=CLIENT_TITLE, timeout_s=3.0, now=rig.clock
    )


def _value(sim: SimulatedMeter, class_id: int, attribute: int) -> object:
    return sim.config.attributes[class_id, attribute].to_python()


async def _target(rig: Rig, sim: SimulatedMeter) -> DlmsTarget:
    assert rig.platform.vault is not None
    targets, _ = await asyncio.to_thread(
        load_targets, rig.engine, rig.platform.vault, meter_ids=[rig.meters[sim.serial]]
    )
    return targets[0]


async def _read_name(target: DlmsTarget) -> bytes:
    """A normal read of the meter as the collector does it, with ``target``'s keys."""
    sessions = DlmsSessions(None, CLIENT_TITLE, 3.0, counters=_Counters())
    async with sessions.open(target) as client:
        value = (await client.get(CosemAttribute(1, DEVICE_NAME, 2))).value
    assert isinstance(value, bytes)
    return value


class _Counters:
    """Invocation counters far above the head-end's own, so these extra sessions never reuse one."""

    def __init__(self) -> None:
        self._next = 1_000_000

    def reserve(self, target: DlmsTarget, client_title: bytes) -> int:
        self._next += 1000
        return self._next

    def release(self, target: DlmsTarget, client_title: bytes, start: int, last_used: int | None) -> None:
        return None


async def test_a_load_limit_is_set_read_back_and_then_verified_not_sent_again(rig: Rig) -> None:
    sim = rig.simulator.meters[0]
    service = _service(rig)
    record = await service.run(
        rig.tenant_id,
        rig.meters[sim.serial],
        "load_limit",
        actor="user:2:olga",
        params={"threshold": 6000, "normal": 9000},
    )
    assert record.state == "succeeded", record.result
    assert record.result == {"threshold_active": 6000, "threshold_normal": 9000}
    assert (_value(sim, LIMITER_CLASS, 3), _value(sim, LIMITER_CLASS, 4)) == (6000, 9000)

    sets = count_calls(sim, "set")
    [queued] = rig.submit(
        "load_limit", [rig.meters[sim.serial]], {"threshold": 6000.0, "normal": 9000}
    ).queued
    again = await service.execute(rig.tenant_id, queued.command_id, actor="job:1", verify=True)
    assert again.state == "succeeded"
    assert again.result is not None and again.result["verified"] is True
    assert sets() == 0


async def test_a_push_destination_runs_as_a_job(rig: Rig) -> None:
    sim = rig.simulator.meters[1]
    submission = rig.submit(
        "push_setup", [rig.meters[sim.serial]], {"destination": "hes.example.net:4059", "transport": "udp"}
    )
    [job] = await rig.drain()
    assert job.id == submission.queued[0].job_id
    record = _service(rig).get(rig.tenant_id, submission.queued[0].command_id)
    assert record.state == "succeeded", record.result
    assert _value(sim, PUSH_SETUP_CLASS, 3) == [1, b"hes.example.net:4059", 0]


async def test_a_tariff_calendar_activates_now_or_at_its_time(rig: Rig) -> None:
    now_sim, later_sim = rig.simulator.meters[:2]
    service = _service(rig)
    record = await service.run(
        rig.tenant_id, rig.meters[now_sim.serial], "tariff_calendar", actor="t", params=CALENDAR
    )
    assert record.state == "succeeded", record.result
    assert record.result == {"calendar": "TOU-2027", "active": True}
    assert _value(now_sim, CALENDAR_CLASS, 2) == b"TOU-2027"
    days = _value(now_sim, CALENDAR_CLASS, 5)
    assert isinstance(days, list) and [day[0] for day in days] == [1, 2]
    assert [action[0] for action in days[0][1]] == [bytes((6, 0, 0, 0)), bytes((22, 0, 0, 0))]

    at = rig.clock.now + timedelta(hours=2)
    later = {**CALENDAR, "activate_at": at.isoformat()}
    record = await service.run(
        rig.tenant_id, rig.meters[later_sim.serial], "tariff_calendar", actor="t", params=later
    )
    assert record.state == "succeeded", record.result
    assert record.result is not None and record.result["active"] is False
    assert _value(later_sim, CALENDAR_CLASS, 2) == b""  # still the old active calendar
    assert _value(later_sim, CALENDAR_CLASS, 6) == b"TOU-2027"

    rig.clock.now = at + timedelta(seconds=1)
    assert later_sim.config.get(CosemAttribute(CALENDAR_CLASS, ACTIVITY_CALENDAR, 2)) == Data.octet_string(
        b"TOU-2027"
    )


async def test_a_rotated_key_opens_the_next_session_and_the_old_one_no_longer_does(rig: Rig) -> None:
    sim = rig.simulator.meters[0]
    old = await _target(rig, sim)
    record = await _service(rig).run(
        rig.tenant_id, rig.meters[sim.serial], "key_rotation", actor="t", params={"key": "encryption"}
    )
    assert record.state == "succeeded", record.result
    assert record.result == {"key": "encryption", "confirmed": True}

    new = await _target(rig, sim)
    assert new.secrets is not None and old.secrets is not None
    assert new.secrets.encryption_key == sim.keys.encryption_key != old.secrets.encryption_key
    assert new.secrets.authentication_key == old.secrets.authentication_key
    assert await _read_name(new) == sim.serial.encode()
    with pytest.raises(DlmsDriverError):
        await _read_name(old)
    with rig.engine.connect() as conn:
        params = conn.execute(select(command.c.params).where(command.c.id == record.id)).scalar_one()
        audited = conn.execute(
            select(audit_log.c.detail).where(audit_log.c.action.like("command.key%"))
        ).all()
    assert set(params) == {"key", "wrapped"}
    assert all(params["wrapped"] not in json.dumps(row.detail) for row in audited)


def _lose_the_next_confirmation(sim: SimulatedMeter) -> None:
    """The association right after the meter takes a key transfer fails (as if the link dropped), so
    the head-end cannot confirm the new key; later associations work."""
    real_association = sim.server_association
    spoil: list[bool] = []
    real_action = sim.action

    def action(request: ActionRequestNormal) -> ActionResult:
        result = real_action(request)
        if request.method.class_id == SECURITY_SETUP_CLASS:
            spoil.append(True)
        return result

    def association(client_sap: int, *, short_names: bool = False) -> ServerAssociation:
        if not spoil:
            return real_association(client_sap, short_names=short_names)
        spoil.clear()
        taken = sim.keys
        sim.keys = replace(taken, encryption_key=bytes(16), authentication_key=bytes(16))
        try:
            return real_association(client_sap, short_names=short_names)
        finally:
            sim.keys = taken

    sim.action = action  # type: ignore[method-assign]
    sim.server_association = association  # type: ignore[method-assign]


async def test_a_failed_confirmation_keeps_the_meter_reachable_and_the_next_attempt_adopts_the_key(
    rig: Rig,
) -> None:
    sim = rig.simulator.meters[2]
    _lose_the_next_confirmation(sim)
    service = _service(rig)
    record = await service.run(
        rig.tenant_id, rig.meters[sim.serial], "key_rotation", actor="t", params={"key": "authentication"}
    )
    assert record.state == "failed"
    assert record.result is not None and record.result["pending"] is True
    stale = await _target(rig, sim)
    assert stale.secrets is not None and stale.secrets.authentication_key != sim.keys.authentication_key

    transfers = count_calls(sim, "action")
    again = await service.execute(rig.tenant_id, record.id, actor="job:2", verify=True)
    assert again.state == "succeeded", again.result
    assert again.result == {"key": "authentication", "verified": True}
    assert transfers() == 0
    assert await _read_name(await _target(rig, sim)) == sim.serial.encode()


async def test_a_read_refused_after_a_lost_confirmation_finds_the_pending_key_and_keeps_it(rig: Rig) -> None:
    sim = rig.simulator.meters[1]
    meter_id = rig.meters[sim.serial]
    _lose_the_next_confirmation(sim)
    service = _service(rig)
    record = await service.run(
        rig.tenant_id, meter_id, "key_rotation", actor="t", params={"key": "encryption"}
    )
    assert record.state == "failed" and record.result is not None and record.result["pending"] is True
    vault = rig.platform.vault
    assert vault is not None
    collectors = PullCollectors.build(rig.platform.settings, rig.engine, rig.platform.bus, vault)
    job_store.plan(rig.engine, [NewJob(rig.tenant_id, READ_KIND, "meter", meter_id)], state=State.QUEUED)
    [queued] = job_store.queued(rig.engine, rig.clock.now + timedelta(hours=1))

    without = await MeterReader(rig.engine, collectors, vault).run([queued])
    assert not without[queued.id].ok and str(without[queued.id].error).startswith("DlmsAuthFailed")

    results = await MeterReader(rig.engine, collectors, vault, service).run([queued])
    assert results[queued.id].ok, results[queued.id]
    assert results[queued.id].detail["readings"] > 0
    kept = service.get(rig.tenant_id, record.id)
    assert kept.state == "succeeded"
    assert kept.result == {"key": "encryption", "verified": True, "found_by": "read"}
    secrets = (await _target(rig, sim)).secrets
    assert secrets is not None and secrets.encryption_key == sim.keys.encryption_key
    with rig.engine.connect() as conn:
        audited = select(audit_log.c.action).where(audit_log.c.action.like("command.key%"))
        actions = conn.scalars(audited.order_by(audit_log.c.id)).all()
    assert actions[-1] == "command.key_rotation.succeeded"
    # A meter refusing its keys with no pending rotation is simply a failed read.
    other = rig.meters[rig.simulator.meters[3].serial]
    assert await service.adopt_pending_key(rig.tenant_id, other, actor="t") is None


async def test_a_pending_key_the_meter_never_took_is_sent_again_over_the_old_key(rig: Rig) -> None:
    sim = rig.simulator.meters[3]
    real_action = sim.action
    refused: list[bool] = []

    def action(request: ActionRequestNormal) -> ActionResult:
        if request.method.class_id == SECURITY_SETUP_CLASS and not refused:
            refused.append(True)
            return ActionResult.TEMPORARY_FAILURE
        return real_action(request)

    sim.action = action  # type: ignore[method-assign]
    service = _service(rig)
    [queued] = rig.submit("key_rotation", [rig.meters[sim.serial]], {"key": "encryption"}).queued
    jobs = await rig.drain()
    assert [j.attempt for j in jobs] == [1, 2]
    record = service.get(rig.tenant_id, queued.command_id)
    assert record.state == "succeeded", record.result
    assert record.result == {"key": "encryption", "confirmed": True}
    assert await _read_name(await _target(rig, sim)) == sim.serial.encode()


async def test_bad_parameters_and_meters_without_a_master_key_are_refused_before_anything_is_sent(
    rig: Rig,
) -> None:
    bad: list[tuple[str, dict[str, Any]]] = [
        ("load_limit", {"threshold": -1}),
        ("load_limit", {"threshold": True}),
        ("load_limit", {"threshold": 10, "emergency": 5}),
        ("push_setup", {"destination": "no-port"}),
        ("push_setup", {"destination": "host:70000"}),
        ("push_setup", {"destination": "host:4059", "transport": "sms"}),
        ("tariff_calendar", {**CALENDAR, "weeks": [{"name": "std", "days": [1, 1, 1, 1, 1, 2, 9]}]}),
        ("tariff_calendar", {**CALENDAR, "seasons": [{"name": "x", "start": "13-01", "week": "std"}]}),
        ("tariff_calendar", {**CALENDAR, "activate_at": "2027-01-01T00:00"}),
        ("key_rotation", {"key": "master"}),
        ("disconnect", {"threshold": 1}),
    ]
    for kind, params in bad:
        with pytest.raises(InvalidInput):
            command_params(kind, params)
    sim = rig.simulator.meters[0]
    with pytest.raises(InvalidInput, match="threshold"):
        command_jobs.submit(
            rig.engine,
            rig.tenant_id,
            "load_limit",
            [rig.meters[sim.serial]],
            actor="t",
            user_id=rig.operator,
            now=rig.clock.now,
            params={"threshold": "lots"},
        )
    with pytest.raises(ApprovalRequired):
        command_jobs.submit(
            rig.engine,
            rig.tenant_id,
            "key_rotation",
            rig.ids()[:2],
            actor="t",
            user_id=rig.operator,
            now=rig.clock.now,
            params={"key": "encryption"},
        )
    with rig.engine.connect() as conn:
        assert conn.execute(select(command.c.id)).first() is None

    with rig.engine.begin() as conn:
        conn.execute(device_key.delete().where(device_key.c.kind == "kek"))
    with pytest.raises(InvalidInput, match="master key"):
        await _service(rig).run(
            rig.tenant_id, rig.meters[sim.serial], "key_rotation", actor="t", params={"key": "encryption"}
        )


async def test_a_bulk_key_rotation_is_approved_by_a_second_user_with_its_parameters(rig: Rig) -> None:
    asked = command_jobs.request(
        rig.engine,
        rig.tenant_id,
        "key_rotation",
        rig.ids()[:2],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
        params={"key": "authentication"},
    )
    _, submission = command_jobs.approve(
        rig.engine, rig.tenant_id, asked.id, actor="user:3:sam", user_id=rig.supervisor, now=rig.clock.now
    )
    assert len(submission.queued) == 2
    await rig.drain()
    for queued, sim in zip(submission.queued, rig.simulator.meters[:2], strict=True):
        record = _service(rig).get(rig.tenant_id, queued.command_id)
        assert record.state == "succeeded", record.result
        assert await _read_name(await _target(rig, sim)) == sim.serial.encode()


async def test_the_cli_queues_a_load_limit_and_a_calendar_file(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAMI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAMI_DATABASE_URL", str(rig.engine.url))
    sim = rig.simulator.meters[1]
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["command", "load-limit", sim.serial, "-t", "acme", "--as", "olga", "--threshold", "4200", "--json"],
    )
    assert result.exit_code == 0, result.output
    calendar = tmp_path / "cal.json"
    calendar.write_text(json.dumps(CALENDAR))
    result = runner.invoke(
        app, ["command", "tariff-calendar", sim.serial, "-t", "acme", "--file", str(calendar)]
    )
    assert result.exit_code == 0, result.output
    calendar.write_text("[1, 2]")
    result = runner.invoke(
        app, ["command", "tariff-calendar", sim.serial, "-t", "acme", "--file", str(calendar)]
    )
    assert result.exit_code == 2
    assert "JSON object" in result.output

    await rig.drain()
    assert _value(sim, LIMITER_CLASS, 3) == 4200
    assert _value(sim, CALENDAR_CLASS, 2) == b"TOU-2027"
