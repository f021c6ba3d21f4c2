"""Commands to meters behind OpenAMI gateways: COMMAND envelopes down, results up
(``docs/drivers/gateway-link.md``, ``docs/operations/commands.md``).

A meter whose communication path goes through an OpenAMI gateway (a ``gateway`` or ``concentrator``
device above it that has a link key: :func:`route_of`) is not commanded over DLMS by the head-end: its
meter address is the gateway's local one, which the head-end cannot reach, and the gateway already
holds the meter's keys and invocation counters. Instead:

1. **Job** (:class:`openami.hes.command_jobs.CommandExecutor`): the safety checks run as for any
   command (a protected meter or a no-disconnect period refuses it here, nothing is sent), then
   :func:`stage` moves the command to ``at_gateway`` ("sent to the gateway, awaiting its result"),
   writes its ``gateway_command`` row with the deadline and audits ``command.<kind>.sent_to_gateway``,
   all in one transaction. The job ends at once, ``done`` with outcome ``sent``: a gateway may be
   offline for hours, and a poller session must not wait for it. The command record is finished later,
   by the result.
2. **Delivery** (:class:`CommandDelivery`, run by the gateway link listener, which holds the MQTT
   connection): every ``poll_s`` the commands due are claimed (:func:`claim_due`: never sent, or sent
   ``resend_s`` ago without a result; one atomic UPDATE per command, so of several head-end workers
   only one sends it) and published as COMMAND envelopes on the gateway's down topic. A HEALTH from the
   gateway (it sends one after every connect) sends its unanswered commands again at once (if the last
   send is more than :data:`HEALTH_RESEND_S` old): that is what delivers a command to a gateway that
   was offline when it was first sent. A resend carries ``"verify": true``.
3. **Result** (:func:`record_result`, for the listener's COMMAND handler): the command ends
   ``succeeded`` or ``failed`` with the gateway's outcome and detail, audited under
   ``gateway:<ident>`` like the direct path's ``job:<id>``, and the listener acknowledges it (an ACK
   with ``"commands": [command_id]``) so the gateway stops sending it. A result already recorded is
   acknowledged again and changes nothing. A result for a command that is not this gateway's (unknown
   id, another tenant's, another gateway's) is never applied and is logged on the security logger.
4. **Deadline** (:func:`expire`, from :func:`openami.hes.command_jobs.settle` on the scheduler's
   leader): a command without a result by its deadline (the job's, else :data:`DEFAULT_DEADLINE` after
   it ran) ends ``failed``, "no answer from gateway ...". The gateway refuses to start a command past
   its deadline too, so a disconnect delivered days late is not carried out; a result that still
   arrives after the head-end gave up (the gateway ran it in time, the answer was late) is recorded
   with ``"late": true``, since the meter's state is what it reports.

The gateway carries out each command once per ``command_id`` (``openami.edge.commands``), so resends
are safe; ADR 0013's verify-before-resend holds at the gateway as at the head-end.

Blocking (SQLAlchemy) except :class:`CommandDelivery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from openami.drivers.dlms.commands import RELAY_KINDS
from openami.hes.config_commands import CONFIG_KINDS
from openami.hes.gateway_link_store import GatewayLinkStore, LinkState, UnknownGateway
from openami.hes.paths import DeviceTree
from openami.security.audit import AuditLog
from openami.security.keyvault import GATEWAY_KINDS
from openami.store.errors import StoreError
from openami.store.schema import comm_device, command, gateway_command, gateway_link, meter, tenant

__all__ = [
    "AT_GATEWAY",
    "COMMANDS_THROUGH_GATEWAYS",
    "DEFAULT_DEADLINE",
    "DEFAULT_POLL_S",
    "DEFAULT_RESEND_S",
    "HEALTH_RESEND_S",
    "ClaimedCommand",
    "CommandDelivery",
    "CommandResult",
    "GatewayRoute",
    "Recorded",
    "UnusableResult",
    "claim_due",
    "due_gateways",
    "expire",
    "parse_result",
    "record_result",
    "route_of",
    "stage",
    "unclaim",
]

log = logging.getLogger(__name__)
security_log = logging.getLogger("openami.security.gateway_link")

COMMANDS_THROUGH_GATEWAYS: Final = frozenset({*RELAY_KINDS, "time_sync", *CONFIG_KINDS})
"""What an OpenAMI gateway carries out. Firmware upgrades and key rotations of meters behind gateways
are not supported: the head-end fails them at once rather than sending what the gateway refuses (a
firmware campaign counts the failure, where a job ended ``sent`` would count as a success)."""
AT_GATEWAY: Final = "at_gateway"
"""``command.state`` of a command sent to its gateway whose result has not come yet."""
DEFAULT_DEADLINE: Final = timedelta(hours=24)
DEFAULT_RESEND_S: Final = 60.0
DEFAULT_POLL_S: Final = 1.0
HEALTH_RESEND_S: Final = 5.0
MAX_RESULT_PAYLOAD: Final = 64 * 1024
_INTERNAL_PARAMS: Final = frozenset({"force_calendar", "request_id", "campaign_id", "wrapped"})
"""Command parameters that are the head-end's bookkeeping, not the gateway's business."""
_ERROR_LENGTH: Final = 500


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    """The OpenAMI gateway a meter is reached through."""

    comm_device_id: int
    ident: str


def route_of(conn_or_engine: Connection | Engine, tenant_id: int, meter_id: int) -> GatewayRoute | None:
    """The topmost gateway or concentrator above the meter's device that has a link key (an OpenAMI
    gateway), None when the meter is reached otherwise (a third-party concentrator has no link)."""
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return route_of(conn, tenant_id, meter_id)
    conn = conn_or_engine
    device_id = conn.execute(
        select(meter.c.comm_device_id).where(meter.c.id == meter_id, meter.c.tenant_id == tenant_id)
    ).scalar_one_or_none()
    if device_id is None:
        return None
    tree = DeviceTree()
    tree.load(conn, [device_id])
    gateways = [device for device in tree.chain(device_id) if device.kind in GATEWAY_KINDS]
    if not gateways:
        return None
    linked = set(
        conn.scalars(
            select(gateway_link.c.comm_device_id).where(
                gateway_link.c.tenant_id == tenant_id,
                gateway_link.c.comm_device_id.in_([g.id for g in gateways]),
            )
        )
    )
    top = next((g for g in reversed(gateways) if g.id in linked), None)
    return None if top is None else GatewayRoute(top.id, top.ident)


@dataclass(frozen=True, slots=True)
class Staged:
    command_id: int
    gateway: str
    deadline: datetime


def stage(
    engine: Engine,
    audit: AuditLog,
    tenant_id: int,
    command_id: int,
    route: GatewayRoute,
    *,
    deadline: datetime,
    now: datetime,
    actor: str,
) -> Staged:
    """Hand a queued command to its gateway (module docstring, step 1), in one transaction. A command
    staged already (the job ran again after a worker died) is left as it is."""
    with engine.begin() as conn:
        row = conn.execute(
            select(command.c.kind, command.c.meter_id, meter.c.serial)
            .join(meter, meter.c.id == command.c.meter_id)
            .where(command.c.id == command_id, command.c.tenant_id == tenant_id)
        ).one()
        existing = conn.execute(
            select(gateway_command.c.deadline).where(gateway_command.c.command_id == command_id)
        ).scalar_one_or_none()
        if existing is not None:
            return Staged(command_id, route.ident, existing)
        conn.execute(
            insert(gateway_command).values(
                tenant_id=tenant_id,
                command_id=command_id,
                comm_device_id=route.comm_device_id,
                meter_serial=row.serial,
                deadline=deadline,
            )
        )
        conn.execute(
            update(command)
            .where(command.c.id == command_id)
            .values(state=AT_GATEWAY, result={"gateway": route.ident, "deadline": deadline.isoformat()})
        )
        audit.append(
            conn,
            tenant_id,
            actor,
            f"command.{row.kind}.sent_to_gateway",
            "meter",
            row.meter_id,
            {"command": command_id, "gateway": route.ident, "deadline": deadline.isoformat()},
        )
    return Staged(command_id, route.ident, deadline)


# -- delivery ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedCommand:
    """A command handed to one sender: the COMMAND payload, and what to put back if it cannot go out."""

    id: int
    command_id: int
    sent_at: datetime
    previous_sent_at: datetime | None
    body: dict[str, Any]


def _open_rows(now: datetime) -> Any:
    link = gateway_command.c
    return and_(link.answered_at.is_(None), link.expired_at.is_(None), link.deadline > now)


def claim_due(
    engine: Engine, state: LinkState, now: datetime, *, resend_after_s: float
) -> list[ClaimedCommand]:
    """The gateway's commands that are due (never sent, or sent ``resend_after_s`` ago or longer without
    a result, deadline not passed), each marked sent at ``now`` by an UPDATE that only one sender wins."""
    link = gateway_command.c
    cutoff = now - timedelta(seconds=resend_after_s)
    claimed = []
    with engine.begin() as conn:
        rows = conn.execute(
            select(link.id, link.command_id, link.meter_serial, link.deadline, link.sent_at, link.sends)
            .add_columns(command.c.kind, command.c.params)
            .join(command, command.c.id == link.command_id)
            .where(
                link.tenant_id == state.tenant_id,
                link.comm_device_id == state.comm_device_id,
                _open_rows(now),
                or_(link.sent_at.is_(None), link.sent_at <= cutoff),
            )
            .order_by(link.id)
        ).all()
        for row in rows:
            same = link.sent_at.is_(None) if row.sent_at is None else link.sent_at == row.sent_at
            won = conn.execute(
                update(gateway_command)
                .where(link.id == row.id, same)
                .values(sent_at=now, sends=link.sends + 1)
            ).rowcount
            if won != 1:
                continue  # another worker sent it meanwhile
            params = {k: v for k, v in (row.params or {}).items() if k not in _INTERNAL_PARAMS}
            body = {
                "command_id": int(row.command_id),
                "meter": row.meter_serial,
                "kind": row.kind,
                "params": params,
                "verify": int(row.sends) > 0,
                "deadline": row.deadline.astimezone(UTC).isoformat(),
            }
            claimed.append(ClaimedCommand(int(row.id), int(row.command_id), now, row.sent_at, body))
    return claimed


def unclaim(engine: Engine, claimed: ClaimedCommand) -> None:
    """``claimed`` did not reach the broker: due again as before (unless another sender took it since)."""
    link = gateway_command.c
    with engine.begin() as conn:
        conn.execute(
            update(gateway_command)
            .where(link.id == claimed.id, link.sent_at == claimed.sent_at)
            .values(sent_at=claimed.previous_sent_at, sends=link.sends - 1)
        )


def due_gateways(engine: Engine, now: datetime, *, resend_after_s: float) -> list[tuple[str, str]]:
    """``(tenant slug, gateway ident)`` of every gateway with a command due (:func:`claim_due`)."""
    link = gateway_command.c
    cutoff = now - timedelta(seconds=resend_after_s)
    with engine.connect() as conn:
        rows = conn.execute(
            select(tenant.c.slug, comm_device.c.ident)
            .select_from(gateway_command)
            .join(comm_device, comm_device.c.id == link.comm_device_id)
            .join(tenant, tenant.c.id == link.tenant_id)
            .where(_open_rows(now), or_(link.sent_at.is_(None), link.sent_at <= cutoff))
            .distinct()
        ).all()
    return [(row.slug, row.ident) for row in rows]


def expire(conn: Connection, now: datetime, audit: AuditLog | None = None) -> int:
    """End ``failed`` every command whose deadline passed without a result (module docstring, step 4),
    in the caller's transaction; how many."""
    audit = audit or AuditLog()
    link = gateway_command.c
    rows = conn.execute(
        select(link.id, link.tenant_id, link.command_id, link.deadline, link.sends, comm_device.c.ident)
        .add_columns(command.c.kind, command.c.meter_id)
        .join(command, command.c.id == link.command_id)
        .join(comm_device, comm_device.c.id == link.comm_device_id)
        .where(link.answered_at.is_(None), link.expired_at.is_(None), link.deadline <= now)
    ).all()
    ended = 0
    for row in rows:
        if not conn.execute(
            update(gateway_command).where(link.id == row.id, link.expired_at.is_(None)).values(expired_at=now)
        ).rowcount:
            continue
        deadline = row.deadline.astimezone(UTC).isoformat()
        detail = {
            "error": f"no answer from gateway {row.ident} before the deadline {deadline}",
            "gateway": row.ident,
            "sends": int(row.sends),
            "deadline": deadline,
        }
        conn.execute(
            update(command)
            .where(command.c.id == row.command_id, command.c.state == AT_GATEWAY)
            .values(state="failed", result=detail, finished_at=now)
        )
        audit.append(
            conn,
            int(row.tenant_id),
            "system:gateway-commands",
            f"command.{row.kind}.failed",
            "meter",
            row.meter_id,
            {"command": int(row.command_id), **detail},
        )
        ended += 1
    return ended


# -- results -----------------------------------------------------------------------------------------


class CommandResult(BaseModel):
    """The payload of a COMMAND envelope going up: what the gateway did with one command."""

    model_config = ConfigDict(extra="ignore")  # newer gateways may add fields

    command_id: int = Field(ge=1)
    ok: bool
    outcome: str = Field(min_length=1, max_length=32)
    error: str | None = Field(None, max_length=4000)
    detail: dict[str, Any] = Field(default_factory=dict)


class UnusableResult(ValueError):
    """A COMMAND payload that is no result (refused: accepted, kept as a dead letter)."""


def parse_result(payload: bytes) -> CommandResult:
    if len(payload) > MAX_RESULT_PAYLOAD:
        raise UnusableResult(f"a command result of {len(payload)} bytes is too large")
    try:
        return CommandResult.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UnusableResult(f"not a command result: {where}: {first['msg']}") from None


class Recorded(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    """Recorded before (a resend): acknowledge again, change nothing."""
    FOREIGN = "foreign"
    """Not a command of this gateway: never applied, never acknowledged."""


def record_result(
    engine: Engine, audit: AuditLog, state: LinkState, result: CommandResult, now: datetime
) -> Recorded:
    """Finish the command ``result`` answers (module docstring, step 3), in one transaction."""
    link = gateway_command.c
    with engine.begin() as conn:
        row = conn.execute(
            select(link.id, link.tenant_id, link.comm_device_id, link.answered_at, link.expired_at)
            .add_columns(command.c.kind, command.c.meter_id)
            .join(command, command.c.id == link.command_id)
            .where(link.command_id == result.command_id)
        ).first()
        if row is None or (row.tenant_id, row.comm_device_id) != (state.tenant_id, state.comm_device_id):
            security_log.warning(
                "gateway link: gateway %s of tenant %s answered command %d, which is not one of its "
                "commands: not applied",
                state.gateway,
                state.tenant,
                result.command_id,
                extra={"tenant": state.tenant, "gateway": state.gateway, "command": result.command_id},
            )
            return Recorded.FOREIGN
        if (
            row.answered_at is not None
            or not conn.execute(
                update(gateway_command)
                .where(link.id == row.id, link.answered_at.is_(None))
                .values(answered_at=now)
            ).rowcount
        ):
            return Recorded.DUPLICATE
        outcome = "succeeded" if result.ok else "failed"
        detail: dict[str, Any] = {**result.detail, "gateway": state.gateway, "outcome": result.outcome}
        if result.outcome == "verified":
            detail["verified"] = True
        if result.error:
            detail["error"] = result.error[:_ERROR_LENGTH]
        if row.expired_at is not None:
            detail["late"] = True
        conn.execute(
            update(command)
            .where(command.c.id == result.command_id)
            .values(state=outcome, result=detail, finished_at=now)
        )
        audit.append(
            conn,
            state.tenant_id,
            f"gateway:{state.gateway}",
            f"command.{row.kind}.{outcome}",
            "meter",
            row.meter_id,
            {"command": result.command_id, **detail},
        )
    return Recorded.RECORDED


# -- the listener's part -----------------------------------------------------------------------------

SendDown = Callable[[LinkState, dict[str, Any]], Awaitable[bool]]
"""Seal ``body`` as a COMMAND envelope under a fresh downlink number and publish it; False when it did
not go out."""


class CommandDelivery:
    """Sends due COMMAND envelopes for the gateway link listener (module docstring, step 2).

    ``send`` seals and publishes on the listener's connection; ``can_publish`` says whether it is up.
    ``poll_s``: how often the store is asked for due commands; ``resend_s``: how long a command waits
    for its result before it is sent again; ``health_resend_s``: how old its last send must be for a
    HEALTH to send it again (a gateway that just connected)."""

    def __init__(
        self,
        engine: Engine,
        store: GatewayLinkStore,
        send: SendDown,
        can_publish: Callable[[], bool],
        *,
        poll_s: float = DEFAULT_POLL_S,
        resend_s: float = DEFAULT_RESEND_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if poll_s <= 0 or resend_s < 0:
            raise ValueError("poll_s must be positive and resend_s not negative")
        self._engine = engine
        self._store = store
        self._send = send
        self._can_publish = can_publish
        self.poll_s = poll_s
        self.resend_s = resend_s
        self.health_resend_s = HEALTH_RESEND_S
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-commands")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            if not self._can_publish():
                continue
            try:
                due = await asyncio.to_thread(
                    due_gateways, self._engine, self._now(), resend_after_s=self.resend_s
                )
                for tenant_slug, gateway in due:
                    try:
                        state = await asyncio.to_thread(self._store.load, tenant_slug, gateway)
                    except UnknownGateway as exc:
                        log.warning(
                            "commands for gateway %s/%s not sent: %s", tenant_slug, gateway, exc.reason
                        )
                        continue
                    await self.deliver(state, resend_after_s=self.resend_s)
            except (StoreError, SQLAlchemyError) as exc:
                log.warning("gateway commands not sent this time: %s", exc)

    async def after_health(self, state: LinkState) -> None:
        """A HEALTH came: the gateway is online now, so its unanswered commands go again at once."""
        if not self._can_publish():
            return
        try:
            await self.deliver(state, resend_after_s=min(self.health_resend_s, self.resend_s))
        except (StoreError, SQLAlchemyError) as exc:
            log.warning("gateway %s/%s: commands not sent again: %s", state.tenant, state.gateway, exc)

    async def deliver(self, state: LinkState, *, resend_after_s: float) -> int:
        """Claim and send the gateway's due commands; how many went out."""
        claimed = await asyncio.to_thread(
            claim_due, self._engine, state, self._now(), resend_after_s=resend_after_s
        )
        sent = 0
        for item in claimed:
            if await self._send(state, item.body):
                sent += 1
                log.info(
                    "gateway %s/%s: command %d (%s for %s) sent%s",
                    state.tenant,
                    state.gateway,
                    item.command_id,
                    item.body["kind"],
                    item.body["meter"],
                    " again" if item.body["verify"] else "",
                )
            else:
                self.failed += 1
                await asyncio.to_thread(unclaim, self._engine, item)
        self.sent += sent
        return sent
