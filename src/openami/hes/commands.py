"""Remote commands to DLMS meters: disconnect, connect (reconnect), clock synchronisation, firmware
upgrade, configuration (load limit, push setup, tariff calendar: :mod:`openami.hes.config_commands`)
and key rotation, recorded and audited.

A command is a row in ``command`` before anything is sent (state ``running``), so a crash mid-command
leaves a trace; it ends ``succeeded`` or ``failed`` with its result, and both ends are entries in the
tenant's audit log naming who asked. Success means the meter confirmed the new state when asked back
(the relay's control state, or its clock), not merely that the method returned: a disconnect that the
meter accepted but did not carry out is a failure.

A meter behind an OpenAMI gateway is never commanded directly (its address is the gateway's local
one): :meth:`CommandService.run` refuses it with :class:`InvalidInput`, and its queued commands go
through the gateway (:mod:`openami.hes.gateway_commands`).

Commands run one at a time per call and synchronously (a single meter answers in well under a second).
Commands queued as jobs (``openami.hes.command_jobs``) are recorded when they are queued and carried
out by :meth:`CommandService.execute` when their job runs; an attempt after the first verifies before it
sends (ADR 0013): a meter whose relay, clock or firmware already is what the command asked for is not
commanded again, so a disconnect whose confirmation was lost is never sent twice.

**Key rotation** (``key_rotation``, ``{"key": "encryption" | "authentication"}``) replaces the meter's
global unicast encryption key or authentication key without ever leaving the head-end unable to talk
to it:

1. A fresh random key is wrapped (AES key wrap, RFC 3394) under the meter's master key (``kek`` in the
   key vault) and the wrapped key is written into the command's parameters *before* it is sent: it is
   the *pending* key. It is ciphertext under the KEK, so it is as safe there as the vault's rows, and it
   never goes into the audit log.
2. global_key_transfer (security setup 0-0:43.0.1, method 2) sends it in a session on the current keys.
3. A *new* association is opened with the new key and the security setup read: only when that works is
   the new key stored in the vault (replacing the old one, ``key_version`` + 1).

If the meter took the key but the confirmation failed (the link dropped after the ACTION, the store
failed), the vault still holds the old key and the command fails with ``"pending": true``; reads of
the meter may be refused meanwhile, but nothing is lost: every later attempt of the command (the job's
retries, or :meth:`CommandService.execute` again) first tries the pending key and, if the meter
answers to it, stores it (``"verified": true``) without sending anything; if it does not, the old key
still opens a session and the same pending key is sent again. A meter that answers to neither fails
the attempt and the pending key stays recorded for the next one. Once the last attempt has failed, a
read the meter refuses tries the pending key too (:meth:`CommandService.adopt_pending_key`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy import Engine, insert, select, update

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.commands import (
    NotConfirmed,
    clock_in_place,
    relay_in_place,
    switch_relay,
    sync_clock,
)
from openami.drivers.dlms.errors import DlmsDriverError
from openami.drivers.dlms.firmware import ACTIVE_FIRMWARE, upgrade_firmware
from openami.hes import config_commands
from openami.hes.config_commands import CONFIG_KINDS, KEY_ROTATION, ROTATED_KEYS, command_params
from openami.hes.dlms_session import FEP_WAIT_S, DlmsSessions
from openami.hes.dlms_targets import DlmsTarget, load_targets
from openami.hes.fep import FrontEndProcessor
from openami.hes.gateway_commands import route_of
from openami.hes.safety import DisconnectRefused, check_disconnect
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import CosemAttribute, CosemMethod
from openami.security.audit import AuditLog
from openami.security.errors import InvalidInput
from openami.security.keyvault import KeyKind, KeyVault
from openami.store.errors import NotFound
from openami.store.schema import command, meter

__all__ = [
    "COMMAND_KINDS",
    "RUNNABLE_STATES",
    "CommandKind",
    "CommandRecord",
    "CommandService",
    "Firmware",
    "command_record",
    "firmware_params",
    "meter_commands",
]

CommandKind = Literal[
    "disconnect",
    "connect",
    "reconnect",
    "time_sync",
    "load_limit",
    "push_setup",
    "tariff_calendar",
    "key_rotation",
]
COMMAND_KINDS: Final = frozenset(get_args(CommandKind))
"""What :meth:`CommandService.run` sends; ``reconnect`` is ``connect`` under the name operators use."""
_SECURITY_SETUP: Final = Obis(0, 0, 43, 0, 1, 255)
_GLOBAL_KEY_TRANSFER: Final = CosemMethod(64, _SECURITY_SETUP, 2)
_SECURITY_SETUP_NAME: Final = CosemAttribute(64, _SECURITY_SETUP, 1)
_KEY_BYTES: Final = 16  # suite 0: AES-128
_ACTIVE_IDENTIFIER: Final = CosemAttribute(1, ACTIVE_FIRMWARE, 2)
RUNNABLE_STATES: Final = ("queued", "running", "failed")
"""States of a queued command that a job attempt may (still) carry out."""
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


class CommandFailed(NotConfirmed):
    """The meter did not confirm the command; the message is the reason recorded."""


@dataclass(frozen=True, slots=True)
class Firmware:
    """What a firmware command sends: the image, the identifier the meter must then run, and an
    optional progress callback (blocks done, blocks in all)."""

    image: bytes
    identifier: str
    progress: Callable[[int, int], None] | None = None


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
        self,
        tenant_id: int,
        meter_id: int,
        kind: str,
        *,
        actor: str,
        user_id: int | None = None,
        force_calendar: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> CommandRecord:
        """Send ``kind`` to the meter and wait for its confirmation; the command's record either way.

        Unknown kinds and bad ``params`` (:func:`~openami.hes.config_commands.command_params`) are
        :class:`InvalidInput`; a meter of another tenant, or one the HES cannot reach over DLMS (or
        cannot rotate the keys of), :class:`NotFound` / :class:`InvalidInput` before anything is
        recorded; a disconnect that a protection or the no-disconnect calendar forbids
        (``force_calendar`` waives the calendar, see :mod:`openami.hes.safety`)
        :class:`~openami.hes.safety.DisconnectRefused`.
        """
        if kind not in COMMAND_KINDS:
            raise InvalidInput(f"unknown command {kind!r} (one of {', '.join(sorted(COMMAND_KINDS))})")
        checked = command_params(kind, params)
        target = await self._reachable(tenant_id, meter_id)
        if kind == KEY_ROTATION:
            await self._master_key(target)
        if kind == "disconnect":
            refusals = await asyncio.to_thread(
                check_disconnect,
                self._engine,
                tenant_id,
                [meter_id],
                self._now(),
                force_calendar=force_calendar,
            )
            if refusals:
                raise DisconnectRefused(refusals)
            checked = {"force_calendar": True} if force_calendar else {}
        command_id = await asyncio.to_thread(self._start, tenant_id, meter_id, kind, actor, user_id, checked)
        return await self._perform(tenant_id, command_id, kind, target, actor, params=checked)

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
        params = firmware_params(image, identifier)
        command_id = await asyncio.to_thread(
            self._start, tenant_id, meter_id, "firmware", actor, user_id, params
        )
        return await self._perform(
            tenant_id, command_id, "firmware", target, actor, firmware=Firmware(image, identifier, progress)
        )

    async def execute(
        self,
        tenant_id: int,
        command_id: int,
        *,
        actor: str,
        verify: bool = False,
        image: bytes | None = None,
    ) -> CommandRecord:
        """Carry out a command recorded earlier (queued by a job): its record afterwards.

        ``verify``: first ask the meter whether the command's effect is already there (a relay already
        disconnected, a clock already right, the firmware already active) and send nothing then (the
        result says ``"verified": true``). A firmware command needs its ``image``, which must match the
        size and SHA-256 recorded with the command. A command already succeeded or refused is returned
        as it is; a meter that cannot take commands fails the command for good (the result says why and
        ``"permanent": true``)."""
        row = await asyncio.to_thread(self._load, tenant_id, command_id)
        if row.state not in RUNNABLE_STATES:
            return _record(row)
        firmware = None
        if row.kind == "firmware":
            identifier = str(row.params.get("identifier", ""))
            recorded = firmware_params(image or b"", identifier).items()
            if image is None or any(row.params.get(key) != value for key, value in recorded):
                raise InvalidInput(f"command {command_id}: the firmware image does not match the command")
            firmware = Firmware(image, identifier)
        try:
            target = await self._reachable(tenant_id, row.meter_id)
            if row.kind == KEY_ROTATION:
                await self._master_key(target)
        except InvalidInput as exc:
            detail = {"error": f"InvalidInput: {exc}", "permanent": True}
            return await asyncio.to_thread(
                self._finish, tenant_id, command_id, row.kind, "failed", detail, actor
            )
        await asyncio.to_thread(self._mark_running, command_id)
        return await self._perform(
            tenant_id,
            command_id,
            row.kind,
            target,
            actor,
            verify=verify,
            firmware=firmware,
            params=dict(row.params or {}),
        )

    def refuse(self, tenant_id: int, command_id: int, reasons: list[str], *, actor: str) -> CommandRecord:
        """End a queued command as ``refused`` (a safety rule forbade it when its job ran); blocking."""
        return self._finish(
            tenant_id,
            command_id,
            self._load(tenant_id, command_id).kind,
            "refused",
            {"refused": reasons},
            actor,
        )

    async def _perform(
        self,
        tenant_id: int,
        command_id: int,
        kind: str,
        target: DlmsTarget,
        actor: str,
        *,
        verify: bool = False,
        firmware: Firmware | None = None,
        params: dict[str, Any] | None = None,
    ) -> CommandRecord:
        detail: dict[str, Any] | None
        params = params or {}
        try:
            if kind == KEY_ROTATION:
                detail = await self._rotate_key(command_id, target, params)
            else:
                async with self._sessions.open(target) as client:
                    detail = await self._verify(client, kind, firmware, params) if verify else None
                    if detail is None:
                        detail = await self._send(client, kind, firmware, params)
        except (DlmsDriverError, NotConfirmed, OSError, ValueError) as exc:
            outcome, detail = "failed", {"error": f"{type(exc).__name__}: {exc}"}
            if kind == KEY_ROTATION:
                detail["pending"] = True  # the wrapped key stays with the command: see the module docstring
        else:
            outcome = "succeeded"
        return await asyncio.to_thread(self._finish, tenant_id, command_id, kind, outcome, detail, actor)

    async def _reachable(self, tenant_id: int, meter_id: int) -> DlmsTarget:
        targets, skipped = await asyncio.to_thread(self._target, tenant_id, meter_id)
        if not targets:
            reason = skipped[0][1] if skipped else "not a DLMS meter with a communication address"
            raise InvalidInput(f"meter {meter_id} cannot take commands: {reason}")
        return targets[0]

    def _target(self, tenant_id: int, meter_id: int) -> tuple[list[DlmsTarget], list[tuple[str, str]]]:
        with self._engine.connect() as conn:
            owner = conn.execute(select(meter.c.tenant_id).where(meter.c.id == meter_id)).scalar_one_or_none()
            route = route_of(conn, tenant_id, meter_id)
        if owner != tenant_id:
            raise NotFound(f"meter {meter_id} not found")
        if route is not None:
            raise InvalidInput(
                f"meter {meter_id} is reached through OpenAMI gateway {route.ident}, not by a session of "
                "the head-end: disconnect, connect, time sync and configuration commands go through the "
                "gateway as command jobs (POST /command-jobs); firmware upgrades and key rotations of "
                "meters behind gateways are not supported"
            )
        return load_targets(self._engine, self._vault, tenant_id=tenant_id, meter_ids=[meter_id])

    async def _master_key(self, target: DlmsTarget) -> bytes:
        """The meter's KEK from the vault; InvalidInput when its keys cannot be rotated at all."""
        if target.endpoint.auth != "hls" or target.secrets is None:
            raise InvalidInput(f"meter {target.serial}: key rotation needs an HLS (ciphered) session")
        kek = await asyncio.to_thread(self._vault.get, target.tenant_id, target.secrets.system_title, "kek")
        if kek is None or len(kek) not in (16, 24, 32):
            raise InvalidInput(f"meter {target.serial}: no master key (kek) in the key vault")
        return kek

    async def _rotate_key(
        self, command_id: int, target: DlmsTarget, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Key rotation (module docstring): the pending key first, else send it and confirm it."""
        vault_kind, key_id = ROTATED_KEYS[params["key"]]
        kek = await self._master_key(target)
        wrapped = bytes.fromhex(params["wrapped"]) if "wrapped" in params else None
        if wrapped is not None:
            try:
                new_key = aes_key_unwrap(kek, wrapped)
            except InvalidUnwrap:
                raise CommandFailed("the pending key does not unwrap with the vault's master key") from None
            if await self._adopt_if_answered(target, vault_kind, new_key):
                return {"key": params["key"], "verified": True}
        else:
            new_key = os.urandom(_KEY_BYTES)
            wrapped = aes_key_wrap(kek, new_key)
            await asyncio.to_thread(self._record_params, command_id, {**params, "wrapped": wrapped.hex()})
        async with self._sessions.open(target) as client:
            transfer = Data.structure(Data.enum(key_id), Data.octet_string(wrapped))
            await client.action(_GLOBAL_KEY_TRANSFER, Data.array(transfer))
        with_new = self._with_key(target, vault_kind, new_key)
        error = await self._session_error(with_new)
        if error is not None:
            raise CommandFailed(
                f"the meter took the key transfer, but a session with the new key failed: {error}"
            )
        await self._adopt(with_new, vault_kind, new_key)
        return {"key": params["key"], "confirmed": True}

    async def adopt_pending_key(self, tenant_id: int, meter_id: int, *, actor: str) -> CommandRecord | None:
        """Keep the pending key of the meter's last key rotation if the meter answers to it: that command's
        record, now ``succeeded`` (``"verified": true``); None when there is no such rotation or the meter
        does not answer to its key either.

        A rotation whose confirmation was lost on its last attempt ends ``failed`` with the key pending
        (module docstring), and the meter may well have taken it: reads with the vault's old key are
        then refused until someone retries the command. Reads call this when a meter refuses their
        keys (:class:`openami.hes.meter_reader.MeterReader`), so the head-end finds its way back by
        itself. Nothing is sent to the meter but an association and one read."""
        row = await asyncio.to_thread(self._pending_rotation, tenant_id, meter_id)
        if row is None:
            return None
        try:
            target = await self._reachable(tenant_id, meter_id)
            kek = await self._master_key(target)
            new_key = aes_key_unwrap(kek, bytes.fromhex(row.params["wrapped"]))
        except (InvalidInput, InvalidUnwrap, ValueError):
            return None
        vault_kind, _ = ROTATED_KEYS[row.params["key"]]
        if not await self._adopt_if_answered(target, vault_kind, new_key):
            return None
        detail = {"key": row.params["key"], "verified": True, "found_by": "read"}
        return await asyncio.to_thread(
            self._finish, tenant_id, row.id, KEY_ROTATION, "succeeded", detail, actor
        )

    def _pending_rotation(self, tenant_id: int, meter_id: int) -> Any:
        """The meter's latest key rotation if it failed with its key pending, else None."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(command)
                .where(command.c.tenant_id == tenant_id, command.c.meter_id == meter_id)
                .where(command.c.kind == KEY_ROTATION)
                .order_by(command.c.id.desc())
                .limit(1)
            ).one_or_none()
        if row is None or row.state != "failed" or (row.result or {}).get("pending") is not True:
            return None
        return row if "wrapped" in (row.params or {}) else None

    async def _adopt_if_answered(self, target: DlmsTarget, vault_kind: KeyKind, key: bytes) -> bool:
        """Keep ``key`` in the vault if the meter opens a session with it (and say whether it did)."""
        with_key = self._with_key(target, vault_kind, key)
        if await self._session_error(with_key) is not None:
            return False
        await self._adopt(with_key, vault_kind, key)
        return True

    @staticmethod
    def _with_key(target: DlmsTarget, vault_kind: KeyKind, key: bytes) -> DlmsTarget:
        assert target.secrets is not None  # checked by _master_key
        field = "encryption_key" if vault_kind == "ek" else "authentication_key"
        return replace(target, secrets=replace(target.secrets, **{field: key}))

    async def _session_error(self, target: DlmsTarget) -> str | None:
        """Why the meter does not open a session with ``target``'s keys (the security setup read in
        it), None when it does."""
        try:
            async with self._sessions.open(target) as client:
                await client.get(_SECURITY_SETUP_NAME)
        except (DlmsDriverError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _adopt(self, target: DlmsTarget, vault_kind: KeyKind, key: bytes) -> None:
        """The confirmed key into the vault, replacing the old one."""
        assert target.secrets is not None
        await asyncio.to_thread(
            self._vault.store,
            target.tenant_id,
            system_title=target.secrets.system_title,
            meter_id=target.meter_id,
            kind=vault_kind,
            secret=key,
        )

    async def _verify(
        self, client: DlmsClient, kind: str, firmware: Firmware | None, params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The command's result when the meter already is as the command wants it, else None."""
        if kind in CONFIG_KINDS:
            found = await config_commands.in_place(client, kind, params)
            return None if found is None else {**found, "verified": True}
        if kind == "time_sync":
            found = await clock_in_place(client, self._now())
            return None if found is None else {**found, "verified": True}
        if kind == "firmware":
            assert firmware is not None
            active = (await client.get(_ACTIVE_IDENTIFIER)).value
            if active == firmware.identifier.encode():
                return {"active_identifier": firmware.identifier, "verified": True}
            return None
        found = await relay_in_place(client, kind)
        return None if found is None else {**found, "verified": True}

    async def _send(
        self, client: DlmsClient, kind: str, firmware: Firmware | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        if kind in CONFIG_KINDS:
            await config_commands.apply(client, kind, params)
            found = await config_commands.in_place(client, kind, params)
            if found is None:
                raise CommandFailed(f"the meter does not report the {kind} settings after setting them")
            return found
        if kind == "firmware":
            assert firmware is not None
            result = await upgrade_firmware(
                client, firmware.image, firmware.identifier.encode(), progress=firmware.progress
            )
            return {
                "active_identifier": (result.active_identifier or b"").decode("latin-1"),
                "blocks": result.blocks,
                "block_size": result.block_size,
                "resent_blocks": result.resent_blocks,
                "signature": result.signature.hex(),
            }
        if kind == "time_sync":
            return await sync_clock(client, self._now)
        return await switch_relay(client, kind)

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

    def _load(self, tenant_id: int, command_id: int) -> Any:
        return _command_row(self._engine, tenant_id, command_id)

    def _record_params(self, command_id: int, params: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(command).where(command.c.id == command_id).values(params=params))

    def _mark_running(self, command_id: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(command).where(command.c.id == command_id).values(state="running"))

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
        return command_record(self._engine, tenant_id, command_id)


def meter_commands(engine: Engine, tenant_id: int, meter_id: int, limit: int = 100) -> list[CommandRecord]:
    """The meter's commands, newest first (blocking; needs no meter session, so no service)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(command)
            .where(command.c.tenant_id == tenant_id, command.c.meter_id == meter_id)
            .order_by(command.c.id.desc())
            .limit(limit)
        ).all()
    return [_record(row) for row in rows]


def command_record(engine: Engine, tenant_id: int, command_id: int) -> CommandRecord:
    """One command of the tenant (blocking); NotFound for another tenant's."""
    return _record(_command_row(engine, tenant_id, command_id))


def _command_row(engine: Engine, tenant_id: int, command_id: int) -> Any:
    with engine.connect() as conn:
        row = conn.execute(
            select(command).where(command.c.id == command_id, command.c.tenant_id == tenant_id)
        ).one_or_none()
    if row is None:
        raise NotFound(f"command {command_id} not found")
    return row


def firmware_params(image: bytes, identifier: str) -> dict[str, Any]:
    """What a firmware command records about its image (the image itself stays with its campaign)."""
    return {"identifier": identifier, "size": len(image), "sha256": hashlib.sha256(image).hexdigest()}


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
