"""Relay and clock commands on an open DLMS session, each confirmed by reading the meter back.

Shared by the head-end's :class:`openami.hes.commands.CommandService` and the gateway's
:mod:`openami.edge.commands`, so that "the meter confirmed it" means the same at both ends: a relay
command succeeded when the disconnect control (class 70, 0-0:96.3.10.255) reports the wanted
``control_state`` afterwards, a clock synchronisation when the meter's clock then reads within
:data:`CLOCK_TOLERANCE_S` of the sender's clock. A method that returned but whose effect the meter does
not report is :class:`NotConfirmed`.

The ``*_in_place`` functions answer whether the effect is already there (nothing is sent), for the
verify-before-resend rule of ADR 0013: a command whose confirmation was lost is never sent twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from openami.drivers.dlms.client import DlmsClient
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import CosemAttribute

__all__ = [
    "CLOCK_TOLERANCE_S",
    "CONTROL_STATE",
    "CONTROL_STATES",
    "RELAY_KINDS",
    "NotConfirmed",
    "clock_in_place",
    "relay_in_place",
    "switch_relay",
    "sync_clock",
]

DISCONNECT_CONTROL: Final = Obis(0, 0, 96, 3, 10, 255)
CONTROL_STATE: Final = CosemAttribute(70, DISCONNECT_CONTROL, 3)
CONTROL_STATES: Final = {0: "disconnected", 1: "connected", 2: "ready_for_reconnection"}
RELAY_KINDS: Final = frozenset({"disconnect", "connect", "reconnect"})
"""``reconnect`` is ``connect`` under the name operators use."""
CLOCK_TOLERANCE_S: Final = 2.0


class NotConfirmed(Exception):
    """The meter did not confirm the command when asked back; the message is the reason recorded."""


def _wanted(kind: str) -> int:
    if kind not in RELAY_KINDS:
        raise ValueError(f"{kind!r} is not a relay command ({', '.join(sorted(RELAY_KINDS))})")
    return 0 if kind == "disconnect" else 1


def _name(state: Any) -> str:
    return CONTROL_STATES.get(state, str(state)) if isinstance(state, int) else str(state)


async def relay_in_place(client: DlmsClient, kind: str) -> dict[str, Any] | None:
    """``{"control_state": ...}`` when the relay already is where ``kind`` puts it, else None."""
    wanted = _wanted(kind)
    state = (await client.get(CONTROL_STATE)).value
    return {"control_state": CONTROL_STATES[wanted]} if state == wanted else None


async def switch_relay(client: DlmsClient, kind: str) -> dict[str, Any]:
    """Disconnect or (re)connect, then read the control state back; :class:`NotConfirmed` when the meter
    reports another state afterwards."""
    wanted = _wanted(kind)
    if wanted == 0:
        await client.disconnect()
    else:
        await client.reconnect()
    state = (await client.get(CONTROL_STATE)).value
    if state != wanted:
        raise NotConfirmed(f"meter reports control state {_name(state)} after {kind}")
    return {"control_state": _name(state)}


async def clock_in_place(client: DlmsClient, now: datetime) -> dict[str, Any] | None:
    """``{"drift_after_s": ...}`` when the meter's clock is within the tolerance of ``now``, else None."""
    drift = (await client.get_clock() - now).total_seconds()
    return {"drift_after_s": round(drift, 3)} if abs(drift) <= CLOCK_TOLERANCE_S else None


async def sync_clock(client: DlmsClient, now: Callable[[], datetime]) -> dict[str, Any]:
    """Set the meter's clock to ``now()`` and read it back; :class:`NotConfirmed` when it is still off
    by more than the tolerance. ``now`` is called at each step, so a slow link does not count as drift."""
    before = await client.get_clock()
    drift_before = (before - now()).total_seconds()
    await client.set_clock(now())
    drift = (await client.get_clock() - now()).total_seconds()
    if abs(drift) > CLOCK_TOLERANCE_S:
        raise NotConfirmed(f"meter clock still off by {drift:.1f} s after setting it")
    return {"drift_before_s": round(drift_before, 3), "drift_after_s": round(drift, 3)}
