"""Firmware campaigns: one image to many meters in staged waves, stopped by their own failures.

A bad image bricks meters, and a utility finds out on the first few hundred, not on the whole fleet.
So a campaign upgrades a small first wave, looks at how it went, and only then goes on:

    draft --approve (a second user)--> approved --start--> running --> done
                                                   running <--pause / resume--> paused
                           running --failures past the threshold--> stopped_on_failures
                 draft / approved / running / paused --abort--> aborted

- **Waves** are sizes in order (``[10, 100]``) or percentages of the campaign's meters (``["1%",
  "10%"]``); whatever the listed waves leave over is the last wave. The meters are assigned in the order
  given, so the caller picks the pilot meters.
- **A wave** is one firmware command per meter, queued as a ``command`` job
  (:func:`openami.hes.command_jobs.enqueue`) that a poller runs through
  :class:`~openami.hes.command_jobs.CommandExecutor`; the image stays in the campaign row (any poller on
  any machine reads it there) and each command records its identifier, size and SHA-256.
- **Success tracking**: :func:`advance`, called by the scheduler's leader loop, copies each job's end
  into the meter's ``campaign_meter`` row (succeeded, failed, cancelled) and counts per wave.
- **Automatic stop**: as soon as more than ``failure_threshold`` (a fraction) of the current wave has
  failed, without waiting for the rest of the wave, the campaign stops itself (``stopped_on_failures``):
  its queued jobs are cancelled. The next wave starts only when the current one has ended below the
  threshold.
- **Pause** cancels the campaign's queued jobs (their meters go back to pending) and starts no wave;
  **resume** queues the pending meters of the current wave again. **Abort** cancels everything not
  started. A job already running is never cut off (a transfer stopped halfway leaves the meter on its
  old image, but a cut activation could not be told from a finished one): it ends and is counted.

Stopped, aborted and done campaigns are final: the meters left can go into a new campaign.

Every move is one conditional update on the campaign's state, so an operator's pause racing the
leader's next wave either happens before the wave (no jobs queued) or after it (the new wave's jobs
cancelled), never half-way. Every move is in the audit log.

Blocking (SQLAlchemy): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from openami.hes.command_jobs import check_meters, enqueue, unique_meter_ids
from openami.hes.commands import firmware_params
from openami.hes.jobstate import State
from openami.hes.paths import paths_for_meters
from openami.hes.safety import ensure_second_user
from openami.security.audit import AuditLog
from openami.security.errors import InvalidInput, PermissionDenied
from openami.store.errors import Conflict, NotFound
from openami.store.schema import campaign_meter, command, firmware_campaign, job

__all__ = [
    "FINAL_STATES",
    "Campaign",
    "WaveCount",
    "abort",
    "advance",
    "approve",
    "create",
    "get",
    "list_campaigns",
    "pause",
    "resume",
    "start",
    "wave_sizes",
]

FINAL_STATES: Final = frozenset({"aborted", "stopped_on_failures", "done"})
MAX_IMAGE: Final = 16 * 1024 * 1024
_MAX_IDENTIFIER: Final = 64
_MAX_NAME: Final = 120
_SYSTEM: Final = "hes:campaigns"
_MEMBER_STATES: Final = ("pending", "queued", "succeeded", "failed", "cancelled")
_FIELDS: Final = tuple(c for c in firmware_campaign.c if c.name != "image")
"""Everything of a campaign but its image (up to 16 MiB, read only by the pollers that send it)."""


@dataclass(frozen=True, slots=True)
class WaveCount:
    """One wave's meters by state."""

    wave: int
    meters: int
    pending: int = 0
    queued: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def ended(self) -> bool:
        return self.pending == 0 and self.queued == 0


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    name: str
    identifier: str
    image_size: int
    image_sha256: str
    waves: list[int]
    failure_threshold: float
    state: str
    current_wave: int
    meter_count: int
    state_reason: str | None
    created_by: int
    approved_by: int | None
    created_at: datetime
    approved_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    wave_counts: list[WaveCount]


def wave_sizes(spec: Sequence[int | str], meters: int) -> list[int]:
    """The sizes of the waves ``spec`` makes of ``meters`` meters (see the module docstring)."""
    if meters < 1:
        raise InvalidInput("a campaign needs at least one meter")
    sizes: list[int] = []
    left = meters
    for item in spec:
        if isinstance(item, str) and item.strip().endswith("%"):
            try:
                percent = float(item.strip()[:-1])
            except ValueError:
                raise InvalidInput(f"not a percentage: {item!r}") from None
            if not 0 < percent <= 100:
                raise InvalidInput(f"a wave's percentage must be above 0 and at most 100, not {item!r}")
            size = max(1, math.ceil(meters * percent / 100))
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            size = item
        else:
            raise InvalidInput(f"a wave is a number of meters (1 or more) or a percentage, not {item!r}")
        size = min(size, left)
        if size:
            sizes.append(size)
            left -= size
    if left:
        sizes.append(left)
    return sizes


def create(
    engine: Engine,
    tenant_id: int,
    *,
    name: str,
    identifier: str,
    image: bytes,
    meter_ids: Iterable[int],
    waves: Sequence[int | str],
    failure_threshold: float,
    actor: str,
    user_id: int | None,
    audit: AuditLog | None = None,
) -> Campaign:
    """A draft campaign; nothing is sent before a second user approves it and someone starts it."""
    name = name.strip()
    if not 0 < len(name) <= _MAX_NAME:
        raise InvalidInput(f"a campaign needs a name of 1..{_MAX_NAME} characters")
    if not 0 < len(identifier) <= _MAX_IDENTIFIER or not identifier.isprintable():
        raise InvalidInput(f"firmware identifier must be 1..{_MAX_IDENTIFIER} printable characters")
    if not image or len(image) > MAX_IMAGE:
        raise InvalidInput(f"the firmware image must be 1 byte to {MAX_IMAGE // (1024 * 1024)} MiB")
    if not 0 <= failure_threshold <= 1:
        raise InvalidInput("failure_threshold is a fraction from 0 to 1")
    if user_id is None:
        raise PermissionDenied("a campaign must be created by a named user")
    ids = unique_meter_ids(meter_ids)
    sizes = wave_sizes(waves, len(ids))
    try:
        with engine.begin() as conn:
            check_meters(conn, tenant_id, ids)
            campaign_id = conn.execute(
                insert(firmware_campaign)
                .values(
                    tenant_id=tenant_id,
                    name=name,
                    identifier=identifier,
                    image=image,
                    image_size=len(image),
                    image_sha256=hashlib.sha256(image).hexdigest(),
                    waves=sizes,
                    failure_threshold=failure_threshold,
                    state="draft",
                    meter_count=len(ids),
                    created_by=user_id,
                )
                .returning(firmware_campaign.c.id)
            ).scalar_one()
            numbers = [wave for wave, size in enumerate(sizes, 1) for _ in range(size)]
            conn.execute(
                insert(campaign_meter),
                [
                    {"tenant_id": tenant_id, "campaign_id": campaign_id, "meter_id": m, "wave": w}
                    for m, w in zip(ids, numbers, strict=True)
                ],
            )
            detail = {
                "name": name,
                "waves": sizes,
                "failure_threshold": failure_threshold,
                **firmware_params(image, identifier),
            }
            (audit or AuditLog()).append(
                conn, tenant_id, actor, "campaign.created", "firmware_campaign", campaign_id, detail
            )
    except IntegrityError:
        raise Conflict(f"a campaign named {name!r} exists") from None
    return get(engine, tenant_id, campaign_id)


def _row(conn: Connection, tenant_id: int, campaign_id: int) -> Any:
    row = conn.execute(
        select(*_FIELDS).where(
            firmware_campaign.c.id == campaign_id, firmware_campaign.c.tenant_id == tenant_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"campaign {campaign_id} not found")
    return row


def _move(
    conn: Connection,
    tenant_id: int,
    campaign_id: int,
    sources: Sequence[str],
    target: str,
    **values: Any,
) -> Any:
    """Move the campaign from one of ``sources`` to ``target`` (Conflict when it is elsewhere now)."""
    moved = conn.execute(
        update(firmware_campaign)
        .where(
            firmware_campaign.c.id == campaign_id,
            firmware_campaign.c.tenant_id == tenant_id,
            firmware_campaign.c.state.in_(sources),
        )
        .values(state=target, **values)
    ).rowcount
    if not moved:
        current = _row(conn, tenant_id, campaign_id).state
        raise Conflict(f"campaign {campaign_id} is {current}; it cannot become {target}")
    return _row(conn, tenant_id, campaign_id)


def approve(
    engine: Engine,
    tenant_id: int,
    campaign_id: int,
    *,
    actor: str,
    user_id: int | None,
    now: datetime,
    audit: AuditLog | None = None,
) -> Campaign:
    """A second user approves the draft (:class:`~openami.hes.safety.SameApprover` for its creator)."""
    with engine.begin() as conn:
        draft = _row(conn, tenant_id, campaign_id)
        ensure_second_user(draft.created_by, user_id, f"campaign {campaign_id}")
        _move(conn, tenant_id, campaign_id, ["draft"], "approved", approved_by=user_id, approved_at=now)
        (audit or AuditLog()).append(
            conn,
            tenant_id,
            actor,
            "campaign.approved",
            "firmware_campaign",
            campaign_id,
            {"created_by": draft.created_by, "sha256": draft.image_sha256},
        )
    return get(engine, tenant_id, campaign_id)


def start(
    engine: Engine,
    tenant_id: int,
    campaign_id: int,
    *,
    actor: str,
    now: datetime,
    audit: AuditLog | None = None,
) -> Campaign:
    """Start an approved campaign: its first wave is queued at once."""
    audit = audit or AuditLog()
    with engine.begin() as conn:
        row = _move(conn, tenant_id, campaign_id, ["approved"], "running", started_at=now, current_wave=1)
        audit.append(conn, tenant_id, actor, "campaign.started", "firmware_campaign", campaign_id, {})
        _queue_wave(conn, row, 1, now, audit)
    return get(engine, tenant_id, campaign_id)


def pause(
    engine: Engine,
    tenant_id: int,
    campaign_id: int,
    *,
    actor: str,
    now: datetime,
    audit: AuditLog | None = None,
) -> Campaign:
    """Stop queuing: the campaign's queued jobs are cancelled and their meters wait for :func:`resume`."""
    with engine.begin() as conn:
        _move(conn, tenant_id, campaign_id, ["running"], "paused")
        held = _cancel_queued(conn, campaign_id, now, "pending")
        (audit or AuditLog()).append(
            conn, tenant_id, actor, "campaign.paused", "firmware_campaign", campaign_id, {"held": held}
        )
    return get(engine, tenant_id, campaign_id)


def resume(
    engine: Engine,
    tenant_id: int,
    campaign_id: int,
    *,
    actor: str,
    now: datetime,
    audit: AuditLog | None = None,
) -> Campaign:
    """Go on with a paused campaign: the current wave's waiting meters are queued again."""
    audit = audit or AuditLog()
    with engine.begin() as conn:
        row = _move(conn, tenant_id, campaign_id, ["paused"], "running")
        audit.append(conn, tenant_id, actor, "campaign.resumed", "firmware_campaign", campaign_id, {})
        _queue_wave(conn, row, row.current_wave, now, audit)
    return get(engine, tenant_id, campaign_id)


def abort(
    engine: Engine,
    tenant_id: int,
    campaign_id: int,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    audit: AuditLog | None = None,
) -> Campaign:
    """End the campaign: nothing more is sent (jobs already running end and are counted)."""
    with engine.begin() as conn:
        _move(
            conn,
            tenant_id,
            campaign_id,
            ["draft", "approved", "running", "paused"],
            "aborted",
            finished_at=now,
            state_reason=reason or "aborted",
        )
        cancelled = _close(conn, campaign_id, now)
        (audit or AuditLog()).append(
            conn,
            tenant_id,
            actor,
            "campaign.aborted",
            "firmware_campaign",
            campaign_id,
            {"reason": reason, "cancelled": cancelled},
        )
    return get(engine, tenant_id, campaign_id)


def advance(engine: Engine, now: datetime, *, audit: AuditLog | None = None) -> list[tuple[int, str]]:
    """The leader's periodic step over every tenant's campaigns: record how the meters' jobs ended,
    stop a campaign whose wave failed past its threshold, finish one whose last wave ended, and queue
    the next wave of one whose wave ended well. Returns (campaign id, what happened) for each change."""
    audit = audit or AuditLog()
    changes: list[tuple[int, str]] = []
    with engine.connect() as conn:
        busy = list(
            conn.scalars(
                select(campaign_meter.c.campaign_id).where(campaign_meter.c.state == "queued").distinct()
            )
        )
        running = list(
            conn.scalars(select(firmware_campaign.c.id).where(firmware_campaign.c.state == "running"))
        )
    for campaign_id in sorted(set(busy) | set(running)):
        with engine.begin() as conn:
            _record_ends(conn, campaign_id, now)
            change = _step(conn, campaign_id, now, audit)
        if change is not None:
            changes.append((campaign_id, change))
    return changes


def _step(conn: Connection, campaign_id: int, now: datetime, audit: AuditLog) -> str | None:
    row = conn.execute(select(*_FIELDS).where(firmware_campaign.c.id == campaign_id)).one()
    if row.state != "running":
        return None
    wave = row.current_wave
    count = _counts(conn, campaign_id).get(wave, WaveCount(wave, 0))
    if count.failed > row.failure_threshold * count.meters:
        reason = (
            f"wave {wave}: {count.failed} of {count.meters} meters failed, more than "
            f"{row.failure_threshold:.0%}"
        )
        _move(
            conn,
            row.tenant_id,
            campaign_id,
            ["running"],
            "stopped_on_failures",
            finished_at=now,
            state_reason=reason,
        )
        cancelled = _close(conn, campaign_id, now)
        audit.append(
            conn,
            row.tenant_id,
            _SYSTEM,
            "campaign.stopped_on_failures",
            "firmware_campaign",
            campaign_id,
            {"wave": wave, "failed": count.failed, "meters": count.meters, "cancelled": cancelled},
        )
        return "stopped_on_failures"
    if not count.ended:
        return None
    if wave >= len(row.waves):
        _move(conn, row.tenant_id, campaign_id, ["running"], "done", finished_at=now)
        audit.append(conn, row.tenant_id, _SYSTEM, "campaign.done", "firmware_campaign", campaign_id, {})
        return "done"
    _move(conn, row.tenant_id, campaign_id, ["running"], "running", current_wave=wave + 1)
    _queue_wave(conn, row, wave + 1, now, audit)
    return f"wave {wave + 1}"


def _queue_wave(conn: Connection, row: Any, wave: int, now: datetime, audit: AuditLog) -> int:
    """Queue a firmware command for every waiting meter of ``wave``; how many."""
    members = conn.execute(
        select(campaign_meter.c.id, campaign_meter.c.meter_id)
        .where(
            campaign_meter.c.campaign_id == row.id,
            campaign_meter.c.wave == wave,
            campaign_meter.c.state == "pending",
        )
        .order_by(campaign_meter.c.id)
    ).all()
    params = {
        "campaign_id": row.id,
        "wave": wave,
        "identifier": row.identifier,
        "size": row.image_size,
        "sha256": row.image_sha256,
    }
    paths = paths_for_meters(conn, [member.meter_id for member in members])
    for member in members:
        queued = enqueue(
            conn,
            row.tenant_id,
            member.meter_id,
            "firmware",
            params,
            actor=_SYSTEM,
            user_id=row.approved_by,
            now=now,
            audit=audit,
            path=paths[member.meter_id],
        )
        conn.execute(
            update(campaign_meter)
            .where(campaign_meter.c.id == member.id)
            .values(state="queued", command_id=queued.command_id, error=None)
        )
    audit.append(
        conn,
        row.tenant_id,
        _SYSTEM,
        "campaign.wave_queued",
        "firmware_campaign",
        row.id,
        {"wave": wave, "meters": len(members)},
    )
    return len(members)


def _record_ends(conn: Connection, campaign_id: int, now: datetime) -> None:
    """Copy how each queued meter's job ended into its campaign row."""
    ended = conn.execute(
        select(campaign_meter.c.id, job.c.state, job.c.error, command.c.result)
        .join(command, command.c.id == campaign_meter.c.command_id)
        .join(job, job.c.id == command.c.job_id)
        .where(
            campaign_meter.c.campaign_id == campaign_id,
            campaign_meter.c.state == "queued",
            job.c.state.in_([State.DONE.value, State.FAILED.value, State.CANCELLED.value]),
        )
    ).all()
    states = {State.DONE.value: "succeeded", State.FAILED.value: "failed", State.CANCELLED.value: "cancelled"}
    for member in ended:
        error = (
            None if member.state == State.DONE.value else ((member.result or {}).get("error") or member.error)
        )
        conn.execute(
            update(campaign_meter)
            .where(campaign_meter.c.id == member.id, campaign_meter.c.state == "queued")
            .values(state=states[member.state], error=error, finished_at=now)
        )


def _cancel_queued(conn: Connection, campaign_id: int, now: datetime, member_state: str) -> int:
    """Cancel the campaign's jobs that have not started; their meters become ``member_state``."""
    waiting = conn.execute(
        select(campaign_meter.c.id, command.c.id.label("command_id"), command.c.job_id)
        .join(command, command.c.id == campaign_meter.c.command_id)
        .where(campaign_meter.c.campaign_id == campaign_id, campaign_meter.c.state == "queued")
    ).all()
    by_job = {member.job_id: member for member in waiting if member.job_id is not None}
    if not by_job:
        return 0
    cancelled = conn.scalars(
        update(job)
        .where(job.c.id.in_(list(by_job)), job.c.state == State.QUEUED.value)
        .values(state=State.CANCELLED.value, outcome="cancelled", error="campaign stopped", finished_at=now)
        .returning(job.c.id)
    ).all()
    for job_id in cancelled:
        member = by_job[job_id]
        conn.execute(
            update(command)
            .where(command.c.id == member.command_id)
            .values(state="cancelled", result={"error": "campaign stopped"}, finished_at=now)
        )
        conn.execute(
            update(campaign_meter)
            .where(campaign_meter.c.id == member.id)
            .values(state=member_state, finished_at=None if member_state == "pending" else now)
        )
    return len(cancelled)


def _close(conn: Connection, campaign_id: int, now: datetime) -> int:
    """A campaign ends: queued jobs cancelled, meters never started cancelled too; how many meters."""
    cancelled = _cancel_queued(conn, campaign_id, now, "cancelled")
    return (
        cancelled
        + conn.execute(
            update(campaign_meter)
            .where(campaign_meter.c.campaign_id == campaign_id, campaign_meter.c.state == "pending")
            .values(state="cancelled", finished_at=now)
        ).rowcount
    )


def _counts(conn: Connection, campaign_id: int) -> dict[int, WaveCount]:
    rows = conn.execute(
        select(campaign_meter.c.wave, campaign_meter.c.state, func.count())
        .where(campaign_meter.c.campaign_id == campaign_id)
        .group_by(campaign_meter.c.wave, campaign_meter.c.state)
    ).all()
    per_wave: dict[int, dict[str, int]] = {}
    for wave, state, n in rows:
        per_wave.setdefault(int(wave), dict.fromkeys(_MEMBER_STATES, 0))[state] = int(n)
    return {
        wave: WaveCount(wave, sum(states.values()), **states) for wave, states in sorted(per_wave.items())
    }


def get(engine: Engine, tenant_id: int, campaign_id: int) -> Campaign:
    """One campaign of the tenant with its per-wave counts."""
    with engine.connect() as conn:
        return _campaign(conn, _row(conn, tenant_id, campaign_id))


def list_campaigns(engine: Engine, tenant_id: int, *, limit: int = 100) -> list[Campaign]:
    """The tenant's campaigns, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(*_FIELDS)
            .where(firmware_campaign.c.tenant_id == tenant_id)
            .order_by(firmware_campaign.c.id.desc())
            .limit(limit)
        ).all()
        return [_campaign(conn, row) for row in rows]


def _campaign(conn: Connection, row: Any) -> Campaign:
    counts = _counts(conn, row.id)
    return Campaign(
        id=int(row.id),
        name=row.name,
        identifier=row.identifier,
        image_size=int(row.image_size),
        image_sha256=row.image_sha256,
        waves=[int(size) for size in row.waves],
        failure_threshold=float(row.failure_threshold),
        state=row.state,
        current_wave=int(row.current_wave),
        meter_count=int(row.meter_count),
        state_reason=row.state_reason,
        created_by=int(row.created_by),
        approved_by=row.approved_by,
        created_at=row.created_at,
        approved_at=row.approved_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        wave_counts=[counts.get(w, WaveCount(w, 0)) for w in range(1, len(row.waves) + 1)],
    )
