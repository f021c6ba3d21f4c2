"""IDIS event logs and event codes as data: which log holds what, and what each code means to the HES.

Why a table: an event log row is only (time, code); what the code means -- its name in OpenAMI's event
vocabulary, how severe it is -- is fixed by the companion standard, not by code. Adding or correcting a
code is one row here; the head-end (:mod:`openami.drivers.dlms.events`) and the simulator read the same
rows, and a code the table does not know is kept as ``dlms_event_<code>`` rather than dropped.

Sources: the public IDIS object lists (event logs 0-0:99.98.x with event code objects 0-0:96.11.x, as
in :mod:`.idis`) and event code lists published with IDIS-conforming meters and head-ends. Codes 1-6,
40-47 and 255 appear alike in independent public sources; the disconnector codes 60-64 come from one
public IDIS meter code base and are marked UNCERTAIN. National variants (DSMR, for one) renumber some
codes, so a profile other than IDIS needs its own table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from openami.protocols.dlms.obis import Obis

__all__ = [
    "CLOCK_ADJUSTED_NEW",
    "CLOCK_ADJUSTED_OLD",
    "COVER_CLOSED",
    "COVER_OPEN",
    "DISCONNECTOR_CONTROL_LOG",
    "EVENTS",
    "FRAUD_DETECTION_LOG",
    "LOGS",
    "MAGNETIC_TAMPER",
    "MAGNETIC_TAMPER_CLEARED",
    "POWER_DOWN",
    "POWER_UP",
    "REMOTE_DISCONNECT",
    "REMOTE_RECONNECT",
    "STANDARD_EVENT_LOG",
    "EventLogSpec",
    "IdisEvent",
    "Severity",
    "describe",
]

Severity = Literal["info", "warning", "alarm"]
"""The HES event severities (those of :class:`openami.bus.messages.MeterEvent`)."""


@dataclass(frozen=True, slots=True)
class EventLogSpec:
    """One event log (profile generic, class 7): its buffer and the Data object (class 1) whose value
    is the code of the last event, which the log captures next to the clock."""

    obis: Obis
    code_object: Obis
    description: str


STANDARD_EVENT_LOG: Final = EventLogSpec(
    Obis(0, 0, 99, 98, 0, 255), Obis(0, 0, 96, 11, 0, 255), "Standard event log"
)
FRAUD_DETECTION_LOG: Final = EventLogSpec(
    Obis(0, 0, 99, 98, 1, 255), Obis(0, 0, 96, 11, 1, 255), "Fraud detection event log"
)
DISCONNECTOR_CONTROL_LOG: Final = EventLogSpec(
    Obis(0, 0, 99, 98, 2, 255), Obis(0, 0, 96, 11, 2, 255), "Disconnector control event log"
)
LOGS: Final = (STANDARD_EVENT_LOG, FRAUD_DETECTION_LOG, DISCONNECTOR_CONTROL_LOG)
"""The event logs the HES collects, in the order it reads them."""


@dataclass(frozen=True, slots=True)
class IdisEvent:
    """What one event code means: ``name`` is OpenAMI's event code (``power_down``), ``description``
    the standard's wording."""

    code: int
    name: str
    severity: Severity
    description: str


def _events(*rows: tuple[int, str, Severity, str]) -> dict[int, IdisEvent]:
    return {code: IdisEvent(code, name, severity, text) for code, name, severity, text in rows}


EVENTS: Final = _events(
    # Standard event log (0-0:99.98.0)
    (1, "power_down", "warning", "Power down"),
    (2, "power_up", "info", "Power up"),
    (3, "dst_switched", "info", "Daylight saving time enabled or disabled"),
    (4, "clock_adjusted", "info", "Clock adjusted (old date/time)"),
    (5, "clock_adjusted", "info", "Clock adjusted (new date/time)"),
    (6, "clock_invalid", "warning", "Clock invalid"),
    (255, "event_log_cleared", "warning", "Event log cleared"),
    # Fraud detection log (0-0:99.98.1)
    (40, "cover_open", "alarm", "Terminal cover removed"),
    (41, "cover_closed", "info", "Terminal cover closed"),
    (42, "magnetic_tamper", "alarm", "Strong DC field detected"),
    (43, "magnetic_tamper_cleared", "info", "No strong DC field anymore"),
    (44, "meter_cover_open", "alarm", "Meter cover removed"),
    (45, "meter_cover_closed", "info", "Meter cover closed"),
    (46, "authentication_failure", "warning", "Association authentication failure (n times)"),
    (47, "configuration_changed", "info", "Configuration change"),
    # Disconnector control log (0-0:99.98.2). UNCERTAIN: 60-64 from a single public IDIS source.
    (60, "manual_disconnect", "info", "Manual disconnection"),
    (61, "manual_reconnect", "info", "Manual connection"),
    (62, "remote_disconnect", "info", "Remote disconnection"),
    (63, "remote_reconnect", "info", "Remote connection"),
    (64, "local_disconnect", "warning", "Local disconnection"),
)
"""Every known event code; IDIS numbers codes across logs, so one table serves all of them."""

# The codes the simulator generates or records, by name.
POWER_DOWN: Final = 1
POWER_UP: Final = 2
CLOCK_ADJUSTED_OLD: Final = 4
CLOCK_ADJUSTED_NEW: Final = 5
COVER_OPEN: Final = 40
COVER_CLOSED: Final = 41
MAGNETIC_TAMPER: Final = 42
MAGNETIC_TAMPER_CLEARED: Final = 43
REMOTE_DISCONNECT: Final = 62
REMOTE_RECONNECT: Final = 63


def describe(code: int) -> IdisEvent:
    """The meaning of ``code``; an unknown code keeps its number (``dlms_event_<code>``, info)."""
    known = EVENTS.get(code)
    if known is not None:
        return known
    return IdisEvent(code, f"dlms_event_{code}", "info", f"Event code {code} (not in the IDIS table)")
