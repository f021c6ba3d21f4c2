"""Remote commands to DLMS meters: disconnect, connect, clock synchronisation and firmware upgrade,
recorded and audited.

A command is a row in ``command`` before anything is sent (state ``running``), so a crash mid-command
leaves a trace; it ends ``succeeded`` or ``failed`` with its result, and both ends are entries in the
tenant's audit log naming who asked. Success means the meter confirmed the new state when asked back
(the relay's control state, or its clock), not merely that the method returned: a disconnect that the
meter accepted but did not carry out is a failure.

Commands run one at a time per call and synchronously (a single meter answers in well under a second);
scheduling many of them through jobs is the head-end core's work.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from sqlalchemy import Engine, insert, select, update

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsDriverError
from openami.drivers.dlms.firmware import upgrade_firmware
from openami.hes.dlms_session import FEP_WAIT_S, DlmsSessions
from openami.hes.dlms_targets import DlmsTarget, load_targets
from openami.hes.fep import FrontEndProcessor
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.security.audit import AuditLog
from openami.security.errors import InvalidInput
from openami.security.keyvault import KeyVault
from openami.store.errors import NotFound
from openami.store.schema import command, meter

__all__ = ["COMMAND_KINDS", "CommandKind", "CommandRecord", "CommandService"]

CommandKind = Literal["disconnect", "connect", "time_sync"]
COMMAND_KINDS: Final = frozenset(get_args(CommandKind))
_DISCONNECT_CONTROL: Final = Obis(0, 0, 96, 3, 10, 255)
_CONTROL_STATE: Final = CosemAttribute(70, _DISCONNECT_CONTROL, 3)
_STATES: Final = {0: "disconnected", 1: "connected", 2: "ready_for_reconnection"}
_CLOCK_TOLERANCE_S: Final = 2.0
_MAX_IDENTIFIER: Final = 64


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: int
    meter_id: int
    kind: str
    state: str
    result: dict[str, Any] | None
    requested_at: datetime
    finished_at: datetime | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CommandFailed(Exception):
    """The meter did not confirm the command; the message is the reason recorded."""


class CommandService:
    """Runs commands against the meters of the key vault's tenants; see the module docstring.

    ``fep``: the front-end processor through which meters addressed ``fep://`` / ``fep+hdlc://`` are
    reached, waiting at most ``fep_wait_s`` while a read of the same device holds its connection.
    """

    def __init__(
        self,
        engine: Engine,
        vault: KeyVault,
        *,
        client_system_title: bytes,
        timeout_s: float = 10.0,
        audit: AuditLog | None = None,
        now: Callable[[], datetime] = _utcnow,
        fep: FrontEndProcessor | None = None,
        fep_wait_s: float = FEP_WAIT_S,
    ) -> None:
        self._engine = engine
        self._vault = vault
        self._sessions = DlmsSessions(engine, client_system_title, timeout_s, fep=fep, fep_wait_s=fep_wait_s)
        self._audit = audit or AuditLog()
        self._now = now

    async def run(
        self, tenant_id: int, meter_id: int, kind: str, *, actor: str, user_id: int | None = None
    ) -> CommandRecord:
        """Send ``kind`` to the meter and wait for its confirmation; the command's record either way.

        Unknown kinds are :class:`InvalidInput`; a meter of another tenant, or one the HES cannot reach
        over DLMS, :class:`NotFound` / :class:`InvalidInput` before anything is recorded.
        """
        if kind not in COMMAND_KINDS:
            raise InvalidInput(f"unknown command {kind!r} (one of {', '.join(sorted(COMMAND_KINDS))})")
        target = await self._reachable(tenant_id, meter_id)
        command_id = await asyncio.to_thread(self._start, tenant_id, meter_id, kind, actor, user_id, {})
        try:
            async with self._sessions.open(target) as client:
                result = await self._send(client, kind)
        except (DlmsDriverError, CommandFailed, OSError) as exc:
            outcome, detail = "failed", {"error": f"{type(exc).__name__}: {exc}"}
        else:
            outcome, detail = "succeeded", result
        return await asyncio.to_thread(self._finish, tenant_id, command_id, kind, outcome, detail, actor)

    async def upgrade_firmware(
        self,
        tenant_id: int,
        meter_id: int,
        image: bytes,
        identifier: str,
        *,
        actor: str,
        user_id: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CommandRecord:
        """Transfer ``image`` by image transfer, verify it (size, identifier, SHA-256 as the meter reports
        them) and activate it; succeeded only when the meter then runs ``identifier``."""
        if not image:
            raise InvalidInput("the firmware image is empty")
        if not 0 < len(identifier) <= _MAX_IDENTIFIER or not identifier.isprintable():
            raise InvalidInput(f"firmware identifier must be 1..{_MAX_IDENTIFIER} printable characters")
        target = await self._reachable(tenant_id, meter_id)
        params = {"identifier": identifier, "size": len(image), "sha256": hashlib.sha256(image).hexdigest()}
        command_id = await asyncio.to_thread(
            self._start, tenant_id, meter_id, "firmware", actor, user_id, params
        )
        detail: dict[str, Any]
        try:
            async with self._sessions.open(target) as client:
                result = await upgrade_firmware(client, image, identifier.encode(), progress=progress)
        except (DlmsDriverError, OSError, ValueError) as exc:
            outcome, detail = "failed", {"error": f"{type(exc).__name__}: {exc}"}
        else:
            outcome = "succeeded"
            detail = {
                "active_identifier": (result.active_identifier or b"").decode("latin-1"),
                "blocks": result.blocks,
                "block_size": result.block_size,
                "resent_blocks": result.resent_blocks,
                "signature": result.signature.hex(),
            }
        return await asyncio.to_thread(
            self._finish, tenant_id, command_id, "firmware", outcome, detail, actor
        )

    async def _reachable(self, tenant_id: int, meter_id: int) -> DlmsTarget:
        targets, skipped = await asyncio.to_thread(self._target, tenant_id, meter_id)
        if not targets:
            reason = skipped[0][1] if skipped else "not a DLMS meter with a communication address"
            raise InvalidInput(f"meter {meter_id} cannot take commands: {reason}")
        return targets[0]

    def _target(self, tenant_id: int, meter_id: int) -> tuple[list[DlmsTarget], list[tuple[str, str]]]:
        with self._engine.connect() as conn:
            owner = conn.execute(select(meter.c.tenant_id).where(meter.c.id == meter_id)).scalar_one_or_none()
        if owner != tenant_id:
            raise NotFound(f"meter {meter_id} not found")
        return load_targets(self._engine, self._vault, tenant_id=tenant_id, meter_ids=[meter_id])

    async def _send(self, client: DlmsClient, kind: str) -> dict[str, Any]:
        if kind == "time_sync":
            before = await client.get_clock()
            await client.set_clock(self._now())
            after = await client.get_clock()
            drift = (after - self._now()).total_seconds()
            if abs(drift) > _CLOCK_TOLERANCE_S:
                raise CommandFailed(f"meter clock still off by {drift:.1f} s after setting it")
            return {
                "drift_before_s": round((before - self._now()).total_seconds(), 3),
                "drift_after_s": round(drift, 3),
            }
        if kind == "disconnect":
            await client.disconnect()
        else:
            await client.reconnect()
        state = (await client.get(_CONTROL_STATE)).value
        expected = 0 if kind == "disconnect" else 1
        name = _STATES.get(state, str(state)) if isinstance(state, int) else str(state)
        if state != expected:
            raise CommandFailed(f"meter reports control state {name} after {kind}")
        return {"control_state": name}

    def _start(
        self,
        tenant_id: int,
        meter_id: int,
        kind: str,
        actor: str,
        user_id: int | None,
        params: dict[str, Any],
    ) -> int:
        with self._engine.begin() as conn:
            command_id = conn.execute(
                insert(command)
                .values(
                    tenant_id=tenant_id,
                    meter_id=meter_id,
                    kind=kind,
                    state="running",
                    params=params,
                    requested_by=user_id,
                    requested_at=self._now(),
                )
                .returning(command.c.id)
            ).scalar_one()
            self._audit.append(
                conn,
                tenant_id,
                actor,
                f"command.{kind}.requested",
                "meter",
                meter_id,
                {"command": command_id, **params},
            )
        return int(command_id)

    def _finish(
        self,
        tenant_id: int,
        command_id: int,
        kind: str,
        outcome: str,
        detail: dict[str, Any],
        actor: str,
    ) -> CommandRecord:
        with self._engine.begin() as conn:
            conn.execute(
                update(command)
                .where(command.c.id == command_id)
                .values(state=outcome, result=detail, finished_at=self._now())
            )
            row = conn.execute(select(command).where(command.c.id == command_id)).one()
            self._audit.append(
                conn,
                tenant_id,
                actor,
                f"command.{kind}.{outcome}",
                "meter",
                row.meter_id,
                {"command": command_id, **detail},
            )
        return _record(row)

    def get(self, tenant_id: int, command_id: int) -> CommandRecord:
        """One command of the tenant (blocking)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(command).where(command.c.id == command_id, command.c.tenant_id == tenant_id)
            ).one_or_none()
        if row is None:
            raise NotFound(f"command {command_id} not found")
        return _record(row)

    def list_for_meter(self, tenant_id: int, meter_id: int, limit: int = 100) -> list[CommandRecord]:
        """The meter's commands, newest first (blocking)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(command)
                .where(command.c.tenant_id == tenant_id, command.c.meter_id == meter_id)
                .order_by(command.c.id.desc())
                .limit(limit)
            ).all()
        return [_record(row) for row in rows]


def _record(row: Any) -> CommandRecord:
    return CommandRecord(
        id=int(row.id),
        meter_id=int(row.meter_id),
        kind=row.kind,
        state=row.state,
        result=row.result,
        requested_at=row.requested_at,
        finished_at=row.finished_at,
    )
