"""Commands as jobs against simulated DLMS meters over real sockets: queued with their job, run by the
worker through CommandExecutor, refused at run time by a protection, verified before a second attempt
(never sent twice), and bulk disconnects approved by a second user only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, update

from openami.app import Platform
from openami.hes import command_jobs, job_store, safety
from openami.hes.jobstate import Lane, State
from openami.security.audit import verify_chain
from openami.simulator.dlms_server import DlmsSimulator
from openami.store.errors import Conflict
from openami.store.schema import audit_log, command, job, meter
from tests.hes.command_support import Clock, Rig, clock, count_calls, make_rig, simulator

__all__ = ["clock", "simulator"]  # fixtures

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rig(platform: Platform, simulator: DlmsSimulator, clock: Clock) -> Rig:
    return make_rig(platform, simulator, clock)


def _states(rig: Rig) -> list[tuple[str, str, str | None, str]]:
    with rig.engine.connect() as conn:
        rows = conn.execute(
            select(command.c.kind, command.c.state, job.c.outcome, job.c.state)
            .join(job, job.c.id == command.c.job_id)
            .order_by(command.c.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_queued_disconnect_runs_as_a_job_and_is_audited(rig: Rig) -> None:
    sim = rig.simulator.meters[0]
    target = rig.meters[sim.serial]
    submission = command_jobs.submit(
        rig.engine,
        rig.tenant_id,
        "disconnect",
        [target],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    )
    assert submission.refused == []
    [queued] = submission.queued
    with rig.engine.connect() as conn:
        row = conn.execute(select(job).where(job.c.id == queued.job_id)).one()
        cmd = conn.execute(select(command).where(command.c.id == queued.command_id)).one()
    assert (row.kind, row.state, row.lane, row.target_id) == ("command", "queued", Lane.COMMAND, target)
    assert row.params == {"command_id": queued.command_id}
    assert row.dedup_key == f"command:{queued.command_id}"
    assert (cmd.state, cmd.job_id) == ("queued", queued.job_id)
    assert sim.relay_connected

    await rig.drain()
    assert not sim.relay_connected
    assert _states(rig) == [("disconnect", "succeeded", "done", "done")]
    with rig.engine.connect() as conn:
        actions = conn.execute(
            select(audit_log.c.action, audit_log.c.actor)
            .where(audit_log.c.action.like("command.%"))
            .order_by(audit_log.c.id)
        ).all()
    assert [tuple(a) for a in actions] == [
        ("command.disconnect.requested", "user:2:olga"),
        ("command.disconnect.succeeded", f"job:{queued.job_id}"),
    ]
    assert verify_chain(rig.engine, rig.tenant_id) == (True, None)

    command_jobs.submit(
        rig.engine,
        rig.tenant_id,
        "reconnect",
        [target],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    )
    await rig.drain()
    assert sim.relay_connected


async def test_a_disconnect_protected_after_it_was_queued_is_refused_when_its_job_runs(rig: Rig) -> None:
    sim = rig.simulator.meters[1]
    target = rig.meters[sim.serial]
    sent = count_calls(sim, "action")
    command_jobs.submit(
        rig.engine,
        rig.tenant_id,
        "disconnect",
        [target],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    )
    safety.protect(rig.engine, rig.tenant_id, target, "life_support", reason="ventilator", actor="user:3:sam")
    claimed = await rig.drain()
    assert len(claimed) == 1  # refused for good: no second attempt
    assert _states(rig) == [("disconnect", "refused", "refused", "failed")]
    assert sim.relay_connected
    assert sent() == 0
    # Asked for now, the protected meter gets no command at all.
    again = command_jobs.submit(
        rig.engine,
        rig.tenant_id,
        "disconnect",
        [target],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    )
    assert again.queued == []
    assert [(r.meter_id, r.rule) for r in again.refused] == [(target, "protection")]
    # Connecting is never refused.
    assert (
        len(
            command_jobs.submit(
                rig.engine,
                rig.tenant_id,
                "connect",
                [target],
                actor="user:2:olga",
                user_id=rig.operator,
                now=rig.clock.now,
            ).queued
        )
        == 1
    )


async def test_a_second_attempt_verifies_first_and_does_not_send_the_disconnect_again(rig: Rig) -> None:
    sim = rig.simulator.meters[2]
    target = rig.meters[sim.serial]
    [queued] = command_jobs.submit(
        rig.engine,
        rig.tenant_id,
        "disconnect",
        [target],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    ).queued
    # A worker claims the job, sends the disconnect (the meter carries it out) and dies before it
    # records the confirmation: the command stays running, the job's lease runs out.
    first = job_store.claim(rig.engine, queued.job_id, "doomed", rig.clock.now, timedelta(seconds=30))
    assert isinstance(first, job_store.Job)
    with rig.engine.begin() as conn:
        conn.execute(update(command).where(command.c.id == queued.command_id).values(state="running"))
    sim.relay_connected = False
    sent = count_calls(sim, "action")
    rig.clock.now += timedelta(minutes=1)
    requeued, _failed = job_store.sweep(rig.engine, rig.clock.now)
    assert [j.id for j in requeued] == [queued.job_id]

    [second] = await rig.drain()
    assert second.attempt == 2
    assert sent() == 0
    assert _states(rig) == [("disconnect", "succeeded", "verified", "done")]
    with rig.engine.connect() as conn:
        result = conn.execute(select(command.c.result).where(command.c.id == queued.command_id)).scalar_one()
    assert result == {"control_state": "disconnected", "verified": True}


async def test_an_unreachable_meter_is_retried_within_its_attempts_then_failed(rig: Rig) -> None:
    target = rig.meters[rig.simulator.meters[3].serial]
    rig.cut_off(target)
    command_jobs.submit(
        rig.engine,
        rig.tenant_id,
        "time_sync",
        [target],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    )
    claimed = await rig.drain()
    assert [j.attempt for j in claimed] == [1, 2, 3]
    assert _states(rig) == [("time_sync", "failed", "failed", "failed")]
    with rig.engine.connect() as conn:
        error = conn.execute(select(command.c.result)).scalar_one()["error"]
    assert "DlmsUnreachable" in error


async def test_a_bulk_disconnect_needs_a_second_user_and_runs_once_approved(rig: Rig) -> None:
    ids = rig.ids()
    with pytest.raises(command_jobs.ApprovalRequired):
        command_jobs.submit(
            rig.engine,
            rig.tenant_id,
            "disconnect",
            ids,
            actor="user:2:olga",
            user_id=rig.operator,
            now=rig.clock.now,
        )
    safety.protect(rig.engine, rig.tenant_id, ids[0], "medical", reason="", actor="user:3:sam")
    asked = command_jobs.request(
        rig.engine,
        rig.tenant_id,
        "disconnect",
        ids,
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
        reason="debt run",
    )
    assert (asked.state, asked.meter_count) == ("requested", len(ids))
    with pytest.raises(safety.SameApprover):
        command_jobs.approve(
            rig.engine, rig.tenant_id, asked.id, actor="user:2:olga", user_id=rig.operator, now=rig.clock.now
        )
    assert _states(rig) == []  # nothing queued by the refused approval
    approved, submission = command_jobs.approve(
        rig.engine, rig.tenant_id, asked.id, actor="user:3:sam", user_id=rig.supervisor, now=rig.clock.now
    )
    assert approved.state == "running"
    assert approved.decided_by == rig.supervisor
    assert [r["meter_id"] for r in approved.refused] == [ids[0]]
    assert len(submission.queued) == len(ids) - 1
    with pytest.raises(Conflict):
        command_jobs.approve(
            rig.engine, rig.tenant_id, asked.id, actor="user:3:sam", user_id=rig.supervisor, now=rig.clock.now
        )

    await rig.drain()
    assert [sim.relay_connected for sim in rig.simulator.meters] == [True, False, False, False]
    assert command_jobs.settle(rig.engine, rig.clock.now) == 1
    assert command_jobs.get_request(rig.engine, rig.tenant_id, asked.id).state == "done"


async def test_a_rejected_request_sends_nothing_and_settle_closes_cancelled_jobs(rig: Rig) -> None:
    ids = rig.ids()
    asked = command_jobs.request(
        rig.engine,
        rig.tenant_id,
        "disconnect",
        ids,
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    )
    rejected = command_jobs.reject(
        rig.engine,
        rig.tenant_id,
        asked.id,
        actor="user:3:sam",
        user_id=rig.supervisor,
        now=rig.clock.now,
        reason="no",
    )
    assert (rejected.state, rejected.decision_reason) == ("rejected", "no")
    assert [r.id for r in command_jobs.list_requests(rig.engine, rig.tenant_id, state="rejected")] == [
        asked.id
    ]
    [queued] = command_jobs.submit(
        rig.engine,
        rig.tenant_id,
        "connect",
        ids[:1],
        actor="user:2:olga",
        user_id=rig.operator,
        now=rig.clock.now,
    ).queued
    with rig.engine.begin() as conn:
        conn.execute(update(job).where(job.c.id == queued.job_id).values(state=State.CANCELLED.value))
    assert command_jobs.settle(rig.engine, rig.clock.now) == 1
    assert _states(rig) == [("connect", "cancelled", None, "cancelled")]
    assert await rig.drain() == []


def test_settle_finishes_requests_whose_commands_ended_on_every_database(engine: Engine) -> None:
    from openami.security.bootstrap import create_tenant_with_admin, ensure_user

    admin = create_tenant_with_admin(engine, "acme", "Acme", "UTC", "admin", "pw-pw-pw-1")
    other = ensure_user(engine, "acme", "sam", "pw-pw-pw-3", role="operator")
    with engine.begin() as conn:
        ids = [
            conn.execute(
                insert(meter)
                .values(tenant_id=admin.tenant_id, serial=f"M{n}", medium="electricity", protocol="dlms")
                .returning(meter.c.id)
            ).scalar_one()
            for n in range(2)
        ]
    now = datetime(2026, 12, 2, 10, tzinfo=UTC)
    asked = command_jobs.request(
        engine, admin.tenant_id, "disconnect", ids, actor="a", user_id=admin.id, now=now
    )
    _request, submission = command_jobs.approve(
        engine, admin.tenant_id, asked.id, actor="s", user_id=other.id, now=now
    )
    first, second = submission.queued
    with engine.begin() as conn:
        conn.execute(update(job).where(job.c.id == first.job_id).values(state=State.DONE.value))
        conn.execute(update(command).where(command.c.id == first.command_id).values(state="succeeded"))
    assert command_jobs.settle(engine, now) == 0
    assert command_jobs.get_request(engine, admin.tenant_id, asked.id).state == "running"
    with engine.begin() as conn:
        conn.execute(
            update(job).where(job.c.id == second.job_id).values(state=State.FAILED.value, error="gone")
        )
    assert command_jobs.settle(engine, now) == 2  # the orphaned command, then its request
    assert command_jobs.get_request(engine, admin.tenant_id, asked.id).state == "done"
