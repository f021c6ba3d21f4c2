"""Reading a meter's event logs: rows of (time, event code) turned into named, graded events.

An IDIS event log is a profile generic whose first two columns are the clock and the event code, so it
is read with :meth:`DlmsClient.read_profile` by range on the clock, half-open: consecutive reads
``[a, b)``, ``[b, c)`` never return an event twice nor miss one, which incremental collection needs. What a
code means is data (:mod:`openami.protocols.dlms.profiles.idis_events`), not code here; a code the table
does not know is kept as ``dlms_event_<code>`` so nothing a meter reports is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsProtocolError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles.idis_events import LOGS, Severity, describe

__all__ = ["EVENT_LOGS", "MeterEvent", "read_event_log"]

EVENT_LOGS: Final[tuple[Obis, ...]] = tuple(spec.obis for spec in LOGS)
"""The IDIS standard (0-0:99.98.0), fraud detection (0-0:99.98.1) and disconnector control
(0-0:99.98.2) event logs."""
_SECOND: Final = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """One event from a meter's log: ``name`` is OpenAMI's event code (``power_down``), ``code`` the
    meter's number for it, ``description`` the companion standard's wording."""

    ts: datetime
    log: Obis
    code: int
    name: str
    severity: Severity
    description: str


async def read_event_log(
    client: DlmsClient, log_obis: Obis, start: datetime, end: datetime
) -> list[MeterEvent]:
    """Events of ``log_obis`` logged in [start, end), in the meter's order.

    ``start`` and ``end`` must be aware. Meters log events to the second, so both bounds are rounded up
    to a whole second: reads ``[a, b)``, ``[b, c)`` then split the events at any instant ``b`` without
    losing or repeating one. The event code is the second column (the IDIS layout); a time the meter
    sends without its deviation is read as UTC, so every event's ``ts`` is aware.
    """
    events: list[MeterEvent] = []
    for row in await client.read_profile(log_obis, _whole_second(start), _whole_second(end)):
        ts, code = row[0], row[1] if len(row) > 1 else None
        if not isinstance(ts, datetime) or isinstance(code, bool) or not isinstance(code, int):
            raise DlmsProtocolError(f"{log_obis}: event log row is not (time, code): {row!r:.80}")
        meaning = describe(code)
        events.append(
            MeterEvent(
                ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC),
                log_obis,
                code,
                meaning.name,
                meaning.severity,
                meaning.description,
            )
        )
    return events


def _whole_second(ts: datetime) -> datetime:
    """``ts`` rounded up to a whole second."""
    return ts if not ts.microsecond else ts.replace(microsecond=0) + _SECOND
