"""Firmware campaigns against simulated DLMS meters over real sockets: a second user approves, waves
go one after the other while they succeed, a wave failing past the threshold stops the campaign (its
other meters never get the image), and pause, resume and abort hold or cancel what has not started."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from openami.app import Platform
from openami.hes import campaigns
from openami.hes.safety import SameApprover
from openami.security.errors import InvalidInput
from openami.simulator.dlms_image import INITIAL_FIRMWARE
from openami.simulator.dlms_server import DlmsSimulator
from openami.store.errors import Conflict
from openami.store.schema import audit_log, job
from tests.hes.command_support import Clock, Rig, clock, make_rig, simulator

__all__ = ["clock", "simulator"]  # fixtures

pytestmark = pytest.mark.timeout(60)

IMAGE = bytes(range(256)) * 8 + b"OpenAMI campaign firmware 3.0"
IDENTIFIER = "OAM-3.0.0"


@pytest.fixture
def rig(platform: Platform, simulator: DlmsSimulator, clock: Clock) -> Rig:
    return make_rig(platform, simulator, clock)


def _campaign(rig: Rig, waves: list[int | str], threshold: float, name: str = "fw 3.0") -> campaigns.Campaign:
    created = campaigns.create(
        rig.engine,
        rig.tenant_id,
        name=name,
        identifier=IDENTIFIER,
        image=IMAGE,
        meter_ids=rig.ids(),
        waves=waves,
        failure_threshold=threshold,
        actor="user:2:olga",
        user_id=rig.operator,
    )
    campaigns.approve(
        rig.engine, rig.tenant_id, created.id, actor="user:3:sam", user_id=rig.supervisor, now=rig.clock.now
    )
    return campaigns.start(rig.engine, rig.tenant_id, created.id, actor="user:2:olga", now=rig.clock.now)


def _counts(campaign: campaigns.Campaign) -> list[tuple[int, int, int, int, int, int]]:
    return [(w.meters, w.pending, w.queued, w.succeeded, w.failed, w.cancelled) for w in campaign.wave_counts]


def _active(rig: Rig) -> list[bytes]:
    return [sim.image.active_identifier for sim in rig.simulator.meters]


def test_waves_are_sizes_or_percentages_and_the_rest_is_the_last_wave() -> None:
    assert campaigns.wave_sizes([1, 2], 10) == [1, 2, 7]
    assert campaigns.wave_sizes(["10%", "50%"], 10) == [1, 5, 4]
    assert campaigns.wave_sizes([5, 100], 10) == [5, 5]
    assert campaigns.wave_sizes([], 3) == [3]
    for bad in ([0], ["0%"], ["x%"], [True], [1.5]):
        with pytest.raises(InvalidInput):
            campaigns.wave_sizes(bad, 10)  # type: ignore[arg-type]


async def test_a_campaign_upgrades_wave_after_wave_and_ends_done(rig: Rig) -> None:
    created = campaigns.create(
        rig.engine,
        rig.tenant_id,
        name="fw 3.0",
        identifier=IDENTIFIER,
        image=IMAGE,
        meter_ids=rig.ids(),
        waves=[1, 1],
        failure_threshold=0.5,
        actor="user:2:olga",
        user_id=rig.operator,
    )
    assert (created.state, created.waves, created.image_sha256) == (
        "draft",
        [1, 1, 2],
        hashlib.sha256(IMAGE).hexdigest(),
    )
    with pytest.raises(Conflict):
        campaigns.start(rig.engine, rig.tenant_id, created.id, actor="user:2:olga", now=rig.clock.now)
    with pytest.raises(SameApprover):
        campaigns.approve(
            rig.engine,
            rig.tenant_id,
            created.id,
            actor="user:2:olga",
            user_id=rig.operator,
            now=rig.clock.now,
        )
    campaigns.approve(
        rig.engine, rig.tenant_id, created.id, actor="user:3:sam", user_id=rig.supervisor, now=rig.clock.now
    )
    running = campaigns.start(rig.engine, rig.tenant_id, created.id, actor="user:2:olga", now=rig.clock.now)
    assert (running.state, running.current_wave) == ("running", 1)
    assert _counts(running) == [(1, 0, 1, 0, 0, 0), (1, 1, 0, 0, 0, 0), (2, 2, 0, 0, 0, 0)]

    steps = []
    for _ in range(5):
        await rig.drain()
        steps.extend(change for _id, change in campaigns.advance(rig.engine, rig.clock.now))
    assert steps == ["wave 2", "wave 3", "done"]
    done = campaigns.get(rig.engine, rig.tenant_id, created.id)
    assert done.state == "done"
    assert _counts(done) == [(1, 0, 0, 1, 0, 0), (1, 0, 0, 1, 0, 0), (2, 0, 0, 2, 0, 0)]
    assert _active(rig) == [IDENTIFIER.encode()] * 4
    with rig.engine.connect() as conn:
        actions = list(
            conn.scalars(
                select(audit_log.c.action)
                .where(audit_log.c.action.like("campaign.%"))
                .order_by(audit_log.c.id)
            )
        )
    assert actions == [
        "campaign.created",
        "campaign.approved",
        "campaign.started",
        "campaign.wave_queued",
        "campaign.wave_queued",
        "campaign.wave_queued",
        "campaign.done",
    ]


async def test_a_wave_failing_past_the_threshold_stops_the_campaign(rig: Rig) -> None:
    ids = rig.ids()
    rig.cut_off(ids[1])
    campaign = _campaign(rig, [1, 1], 0.5)
    changes = []
    for _ in range(5):
        await rig.drain()
        changes.extend(change for _id, change in campaigns.advance(rig.engine, rig.clock.now))
    assert changes == ["wave 2", "stopped_on_failures"]
    stopped = campaigns.get(rig.engine, rig.tenant_id, campaign.id)
    assert stopped.state == "stopped_on_failures"
    assert stopped.state_reason == "wave 2: 1 of 1 meters failed, more than 50%"
    assert _counts(stopped) == [(1, 0, 0, 1, 0, 0), (1, 0, 0, 0, 1, 0), (2, 0, 0, 0, 0, 2)]
    assert _active(rig) == [IDENTIFIER.encode(), INITIAL_FIRMWARE, INITIAL_FIRMWARE, INITIAL_FIRMWARE]
    with pytest.raises(Conflict):
        campaigns.resume(rig.engine, rig.tenant_id, campaign.id, actor="user:2:olga", now=rig.clock.now)


async def test_failures_stop_a_wave_before_it_ends_and_its_queued_jobs_are_cancelled(rig: Rig) -> None:
    ids = rig.ids()
    rig.cut_off(ids[0])
    campaign = _campaign(rig, [4], 0.0)
    await rig.drain(only={ids[0]})  # the dead meter's three attempts; the others still wait
    assert campaigns.advance(rig.engine, rig.clock.now) == [(campaign.id, "stopped_on_failures")]
    stopped = campaigns.get(rig.engine, rig.tenant_id, campaign.id)
    assert _counts(stopped) == [(4, 0, 0, 0, 1, 3)]
    assert await rig.drain() == []
    with rig.engine.connect() as conn:
        states = dict(conn.execute(select(job.c.state, func.count()).group_by(job.c.state)).all())
    assert states == {"failed": 1, "cancelled": 3}


async def test_pause_holds_the_queued_meters_resume_queues_them_again_and_abort_cancels(rig: Rig) -> None:
    campaign = _campaign(rig, [2], 0.5)
    paused = campaigns.pause(rig.engine, rig.tenant_id, campaign.id, actor="user:2:olga", now=rig.clock.now)
    assert paused.state == "paused"
    assert _counts(paused) == [(2, 2, 0, 0, 0, 0), (2, 2, 0, 0, 0, 0)]
    assert await rig.drain() == []  # nothing runs while paused
    assert campaigns.advance(rig.engine, rig.clock.now) == []
    resumed = campaigns.resume(rig.engine, rig.tenant_id, campaign.id, actor="user:2:olga", now=rig.clock.now)
    assert _counts(resumed)[0] == (2, 0, 2, 0, 0, 0)
    await rig.drain()
    assert campaigns.advance(rig.engine, rig.clock.now) == [(campaign.id, "wave 2")]
    aborted = campaigns.abort(
        rig.engine, rig.tenant_id, campaign.id, actor="user:3:sam", now=rig.clock.now, reason="vendor recall"
    )
    assert (aborted.state, aborted.state_reason) == ("aborted", "vendor recall")
    assert _counts(aborted) == [(2, 0, 0, 2, 0, 0), (2, 0, 0, 0, 0, 2)]
    assert await rig.drain() == []
    assert _active(rig) == [IDENTIFIER.encode(), IDENTIFIER.encode(), INITIAL_FIRMWARE, INITIAL_FIRMWARE]
    assert [c.id for c in campaigns.list_campaigns(rig.engine, rig.tenant_id)] == [campaign.id]
