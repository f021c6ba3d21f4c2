"""The head-end's commands carried out by the gateway: COMMAND envelopes down, results up
(``docs/drivers/gateway-link.md``; the head-end's side is :mod:`openami.hes.gateway_commands`).

A COMMAND payload names one command for one of the gateway's DLMS meters::

    {"command_id": 17, "meter": "SN-1", "kind": "disconnect", "params": {}, "verify": false,
     "deadline": "2026-12-03T10:00:00+00:00"}

and the gateway answers with a COMMAND envelope going up::

    {"command_id": 17, "ok": true, "outcome": "done", "error": null, "detail": {"control_state": ...}}

Outcomes: ``done`` (sent, and the meter confirmed it when read back), ``verified`` (the effect was there
already, nothing sent), ``failed`` (the meter did not answer or did not confirm), and refusals, which
touch no meter: ``unsupported_kind`` (firmware, key rotation or a kind this gateway does not know),
``unknown_meter`` (not a DLMS meter of this gateway), ``bad_params``, ``expired`` (it arrived after its
deadline: a disconnect delivered days late is not carried out), ``not_synchronised`` (a clock
synchronisation while the gateway's own clock has no head-end time yet) and ``bad_request``.

Carried out with the head-end's own functions on a session opened as the DLMS collector opens them
(the gateway's system title, keys from its configuration, invocation counters kept in the archive):
:mod:`openami.drivers.dlms.commands` for the relay (disconnect, connect, reconnect) and the clock,
:mod:`openami.hes.config_commands` for load limit, push setup and tariff calendar. Each is confirmed
by reading the meter back, as at the head-end.

Once per ``command_id``: the command is written to the archive (synced to disk) before the meter is
touched, and its result after. A COMMAND for an id already finished (the head-end sent it again, its
result or our answer got lost) is answered with the stored result and not carried out again; one
that is running is ignored (its result follows); one the archive holds unfinished (the gateway
restarted in the middle) is carried out with verification first (ADR 0013), so an effect already there
is not sent twice. So is any COMMAND with ``"verify": true`` (the head-end's resends). Results are sent
until the head-end acknowledges them (an ACK naming the ``command_id``): at once, after each connect,
and in answer to a resend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.commands import (
    RELAY_KINDS,
    NotConfirmed,
    clock_in_place,
    relay_in_place,
    switch_relay,
    sync_clock,
)
from openami.drivers.dlms.errors import DlmsDriverError
from openami.edge.archive import Archive
from openami.hes import config_commands
from openami.hes.config_commands import command_params
from openami.hes.dlms_session import SessionOpener
from openami.hes.dlms_targets import DlmsTarget
from openami.hes.gateway_commands import COMMANDS_THROUGH_GATEWAYS
from openami.protocols.edge import Kind
from openami.security.errors import InvalidInput

__all__ = ["SUPPORTED_KINDS", "CommandRequest", "CommandStats", "EdgeCommands", "result"]

log = logging.getLogger(__name__)

SUPPORTED_KINDS: Final = COMMANDS_THROUGH_GATEWAYS
_NOT_HERE: Final = {
    "firmware": "firmware upgrades of meters behind a gateway are not supported",
    "key_rotation": "key rotation needs the head-end's master keys, which a gateway does not hold",
}
_ERROR_LENGTH: Final = 500

Send = Callable[[Kind, dict[str, Any]], Awaitable[int | None]]


class CommandRequest(BaseModel):
    """A COMMAND payload going down (module docstring)."""

    model_config = ConfigDict(extra="ignore")  # newer head-ends may add fields

    command_id: int = Field(ge=1)
    meter: str = Field(min_length=1, max_length=64)
    kind: str = Field(min_length=1, max_length=32)
    params: dict[str, Any] = Field(default_factory=dict)
    verify: bool = False
    deadline: AwareDatetime


@dataclass
class CommandStats:
    received: int = 0
    carried_out: int = 0
    duplicates: int = 0
    refused: int = 0
    failed: int = 0
    results_sent: int = 0


def result(
    command_id: int, outcome: str, *, error: str | None = None, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A COMMAND payload going up; ``ok`` for ``done`` and ``verified`` only."""
    return {
        "command_id": command_id,
        "ok": outcome in ("done", "verified"),
        "outcome": outcome,
        "error": None if error is None else error[:_ERROR_LENGTH],
        "detail": detail or {},
    }


async def _in_place(
    client: DlmsClient, kind: str, params: dict[str, Any], now: datetime
) -> dict[str, Any] | None:
    if kind in RELAY_KINDS:
        return await relay_in_place(client, kind)
    if kind == "time_sync":
        return await clock_in_place(client, now)
    return await config_commands.in_place(client, kind, params)


async def _carry_out(
    client: DlmsClient, kind: str, params: dict[str, Any], now: Callable[[], datetime]
) -> dict[str, Any]:
    if kind in RELAY_KINDS:
        return await switch_relay(client, kind)
    if kind == "time_sync":
        return await sync_clock(client, now)
    await config_commands.apply(client, kind, params)
    found = await config_commands.in_place(client, kind, params)
    if found is None:
        raise NotConfirmed(f"the meter does not report the {kind} settings after setting them")
    return found


class EdgeCommands:
    """Carries out the head-end's commands on the gateway's DLMS meters (module docstring).

    ``targets`` gives the DLMS meters read now (the configuration may change), ``sessions`` opens a
    session with one, ``send`` sends an uplink envelope (None: the link is down), ``now`` is the
    gateway's disciplined clock and ``synchronised`` whether it has head-end time."""

    def __init__(
        self,
        gateway: str,
        archive: Archive,
        targets: Callable[[], Sequence[DlmsTarget]],
        sessions: SessionOpener,
        send: Send,
        *,
        now: Callable[[], datetime],
        synchronised: Callable[[], bool],
    ) -> None:
        self.gateway = gateway
        self._archive = archive
        self._targets = targets
        self._sessions = sessions
        self._send = send
        self._now = now
        self._synchronised = synchronised
        self._running: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = CommandStats()

    async def handle(self, body: dict[str, Any]) -> None:
        """A COMMAND from the head-end: carried out in the background (the downlink is not held up)."""
        self.stats.received += 1
        try:
            request = CommandRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            reason = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
            command_id = body.get("command_id")
            log.warning("COMMAND %s refused: %s", command_id, reason)
            if isinstance(command_id, int) and not isinstance(command_id, bool) and command_id >= 1:
                self.stats.refused += 1
                await self._answer(result(command_id, "bad_request", error=reason))
            return
        if request.command_id in self._running:
            self.stats.duplicates += 1  # its result follows when it ends
            return
        self._running.add(request.command_id)
        task = asyncio.create_task(self._run(request), name=f"command-{request.command_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Until every command taken has ended (tests, and a stop that lets them finish)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def resend_results(self) -> int:
        """Every result the head-end has not acknowledged, again (after a connect); how many went."""
        sent = 0
        for entry in await asyncio.to_thread(self._archive.unacked_commands):
            if entry.result is not None and await self._answer(entry.result):
                sent += 1
        return sent

    async def _run(self, request: CommandRequest) -> None:
        try:
            before = await asyncio.to_thread(
                self._archive.begin_command, request.command_id, request.meter, request.kind, self._now()
            )
            if before is not None and before.result is not None:
                self.stats.duplicates += 1
                log.info("COMMAND %d done before: its result again, nothing sent", request.command_id)
                await self._answer(before.result)
                return
            answer = await self._outcome(request, verify=request.verify or before is not None)
            await asyncio.to_thread(self._archive.finish_command, request.command_id, answer, self._now())
            await self._answer(answer)
        except Exception:  # a broken archive must not take the agent down; the head-end sends again
            log.exception("COMMAND %d failed unexpectedly", request.command_id)
        finally:
            self._running.discard(request.command_id)

    async def _outcome(self, request: CommandRequest, *, verify: bool) -> dict[str, Any]:
        command_id, kind = request.command_id, request.kind
        refusal = self._refusal(request)
        if refusal is not None:
            self.stats.refused += 1
            log.warning("COMMAND %d (%s for %s) refused: %s", command_id, kind, request.meter, refusal[1])
            return result(command_id, refusal[0], error=refusal[1])
        target = next(t for t in self._targets() if t.serial == request.meter)
        params = command_params(kind, request.params)  # checked by _refusal already
        try:
            async with self._sessions(target) as client:
                found = await _in_place(client, kind, params, self._now()) if verify else None
                if found is not None:
                    outcome, detail = "verified", {**found, "verified": True}
                else:
                    outcome, detail = "done", await _carry_out(client, kind, params, self._now)
        except (DlmsDriverError, NotConfirmed, OSError, ValueError) as exc:
            self.stats.failed += 1
            log.warning("COMMAND %d (%s for %s) failed: %s", command_id, kind, request.meter, exc)
            return result(command_id, "failed", error=f"{type(exc).__name__}: {exc}")
        self.stats.carried_out += 1
        log.info("COMMAND %d (%s for %s): %s %s", command_id, kind, request.meter, outcome, detail)
        return result(command_id, outcome, detail=detail)

    def _refusal(self, request: CommandRequest) -> tuple[str, str] | None:
        """``(outcome, reason)`` when the command is not to be carried out here at all."""
        if self._now() > request.deadline:
            return "expired", f"received after its deadline {request.deadline.isoformat()}"
        if request.kind not in SUPPORTED_KINDS:
            reason = _NOT_HERE.get(request.kind, f"a gateway does not know {request.kind!r} commands")
            return "unsupported_kind", reason
        if not any(t.serial == request.meter for t in self._targets()):
            return "unknown_meter", f"meter {request.meter!r} is not a DLMS meter of gateway {self.gateway}"
        try:
            command_params(request.kind, request.params)
        except InvalidInput as exc:
            return "bad_params", str(exc)
        if request.kind == "time_sync" and not self._synchronised():
            return "not_synchronised", "the gateway's clock has no head-end time yet: try again later"
        return None

    async def _answer(self, payload: dict[str, Any]) -> bool:
        if await self._send(Kind.COMMAND, payload) is not None:
            self.stats.results_sent += 1
            return True
        log.info(
            "COMMAND %s: result not sent now (link down), sent after the next connect", payload["command_id"]
        )
        return False
