"""Event logs of a simulated DLMS meter (IDIS standard, fraud detection and disconnector control logs).

Two sources fill a log. Background events (power outages, terminal cover and magnetic tampering) are a
pure function of the meter's seed and the day, like the load profile: any range is generated on
demand, the same on every run, with nothing stored. Events caused by commands (the clock set, the relay
switched) really happen and are recorded, in a bounded queue per log, as a meter's ring buffer would.

Each log is a profile generic (class 7) whose rows are (clock, event code), read by range on the clock
exactly like the load profile, plus the Data object (class 1) holding the last event code. Event times
are whole seconds, as meters log them, so half-open range reads ``[a, b)``, ``[b, c)`` split them
without loss or overlap. Codes and log OBIS codes come from
:mod:`openami.protocols.dlms.profiles.idis_events`, the table the head-end reads them with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from openami.protocols.dlms.axdr import (
    Column,
    CosemDateTime,
    Data,
    DataType,
    Table,
    datetime_octets,
    parse_datetime,
)
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import idis_events as idis
from openami.protocols.dlms.xdlms import (
    CaptureObject,
    CosemAttribute,
    DataAccessResult,
    EntryDescriptor,
    GetResult,
    RangeDescriptor,
    SelectiveAccess,
)
from openami.simulator.consumption import EPOCH_START, day_random

__all__ = ["LOG_CAPACITY", "RECORDED_CAPACITY", "RETENTION", "EventLogs", "LogEvent"]

RETENTION: Final = timedelta(days=366)
"""How far back background events stay in a log; older ones have been overwritten."""
LOG_CAPACITY: Final = 500
"""profile_entries (attribute 8): at the rates below a year of events stays well under it."""
RECORDED_CAPACITY: Final = 200
"""Command-caused events kept per log (the oldest drop out first)."""

_DATA_CLASS, _PROFILE_CLASS, _CLOCK_CLASS = 1, 7, 8
_CLOCK: Final = Obis(0, 0, 1, 0, 0, 255)
_FIFO = 1  # sort_method: first in, first out
_STREAM: Final = 0xE7E7
"""Seed stream of the background events (apart from the consumption model's and the gateway's)."""
_COLUMNS: Final = (Column(DataType.OCTET_STRING, 12), Column(DataType.UNSIGNED))
_DAY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One row of an event log."""

    ts: datetime
    code: int


@dataclass(frozen=True, slots=True)
class _Episode:
    """A condition that starts and ends: ``per_day`` chance a day, lasting ``min_s``..``max_s``
    (log-uniform, so most outages are short and a few are long)."""

    begins: int
    ends: int
    per_day: float
    min_s: int
    max_s: int


_BACKGROUND: Final[dict[Obis, tuple[_Episode, ...]]] = {
    idis.STANDARD_EVENT_LOG.obis: (_Episode(idis.POWER_DOWN, idis.POWER_UP, 0.03, 1, 3 * 3600),),
    idis.FRAUD_DETECTION_LOG.obis: (
        _Episode(idis.COVER_OPEN, idis.COVER_CLOSED, 0.004, 30, 2 * 3600),
        _Episode(idis.MAGNETIC_TAMPER, idis.MAGNETIC_TAMPER_CLEARED, 0.003, 5, 1800),
    ),
}
_LONGEST: Final = timedelta(seconds=max(e.max_s for eps in _BACKGROUND.values() for e in eps))


def background_events(seed: int, log: Obis, start: datetime, end: datetime) -> list[LogEvent]:
    """Background events of ``log`` with times in [start, end], oldest first (pure: seed and days).

    Every episode draws the same three numbers each day whether it happens or not, so the episodes of
    one log are independent of each other.
    """
    episodes = _BACKGROUND.get(log, ())
    if not episodes or end < start:
        return []
    stream = _STREAM + log.e
    found: list[LogEvent] = []
    day = max(start - _LONGEST, EPOCH_START).date()
    last = end.date()
    while day <= last:
        rng = day_random(seed, day, stream)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for episode in episodes:
            happens, at, spread = rng.random(), rng.randrange(86400), rng.random()
            if happens >= episode.per_day:
                continue
            begin = midnight + timedelta(seconds=at)
            length = int(episode.min_s * (episode.max_s / episode.min_s) ** spread)
            found += (
                LogEvent(begin, episode.begins),
                LogEvent(begin + timedelta(seconds=length), episode.ends),
            )
        day += _DAY
    found.sort(key=lambda event: event.ts)
    return [event for event in found if start <= event.ts <= end]


def _capture_object(obj: CaptureObject) -> Data:
    return Data.structure(
        Data.uint16(obj.class_id),
        Data.octet_string(obj.obis.to_bytes()),
        Data.int8(obj.attribute),
        Data.uint16(obj.data_index),
    )


# The object model of the logs, shared by every meter: (class, OBIS) -> the log the object belongs to,
# and the attributes whose values never change. A meter holds no per-object state or closures for them.
_OBJECTS: Final[dict[tuple[int, Obis], Obis]] = {
    **{(_PROFILE_CLASS, spec.obis): spec.obis for spec in idis.LOGS},
    **{(_DATA_CLASS, spec.code_object): spec.obis for spec in idis.LOGS},
}


def _static_attributes() -> dict[tuple[int, Obis, int], Data]:
    static = {(class_id, obis, 1): Data.octet_string(obis.to_bytes()) for class_id, obis in _OBJECTS}
    for spec in idis.LOGS:
        clock = _capture_object(CaptureObject(_CLOCK_CLASS, _CLOCK, 2))
        code = _capture_object(CaptureObject(_DATA_CLASS, spec.code_object, 2))
        static[_PROFILE_CLASS, spec.obis, 3] = Data.array(clock, code)  # capture_objects
        static[_PROFILE_CLASS, spec.obis, 4] = Data.uint32(0)  # capture_period: on events, not on a timer
        static[_PROFILE_CLASS, spec.obis, 5] = Data.enum(_FIFO)  # sort_method
        static[_PROFILE_CLASS, spec.obis, 8] = Data.uint32(LOG_CAPACITY)  # profile_entries
    return static


_STATIC: Final = _static_attributes()


class EventLogs:
    """The three IDIS event logs of one meter. ``clock`` is the meter's own time: background events
    appear once the meter's clock has passed them."""

    def __init__(self, seed: int, clock: Callable[[], datetime]) -> None:
        self.seed = seed
        self._clock = clock
        self._recorded: dict[Obis, deque[LogEvent]] = {}  # created on the first event of a log

    # ---------------------------------------------------------------------------------- recording

    def record(self, log: Obis, ts: datetime, code: int) -> None:
        """An event that happened at ``ts`` (meter time), kept to the second."""
        queue = self._recorded.setdefault(log, deque(maxlen=RECORDED_CAPACITY))
        queue.append(LogEvent(ts.astimezone(UTC).replace(microsecond=0), code))

    def clock_adjusted(self, old: datetime, new: datetime) -> None:
        """The clock was set: code 4 at the old time, code 5 at the new one."""
        self.record(idis.STANDARD_EVENT_LOG.obis, old, idis.CLOCK_ADJUSTED_OLD)
        self.record(idis.STANDARD_EVENT_LOG.obis, new, idis.CLOCK_ADJUSTED_NEW)

    def relay_switched(self, connected: bool, ts: datetime) -> None:
        """The disconnect control changed state by remote command."""
        code = idis.REMOTE_RECONNECT if connected else idis.REMOTE_DISCONNECT
        self.record(idis.DISCONNECTOR_CONTROL_LOG.obis, ts, code)

    # ------------------------------------------------------------------------------------ reading

    def events(self, log: Obis, start: datetime, end: datetime) -> list[LogEvent]:
        """What ``log`` holds with times in [start, end], by time (background ones up to the clock and
        within :data:`RETENTION`; recorded ones as long as the queue keeps them)."""
        now = self._clock()
        generated = background_events(self.seed, log, max(start, now - RETENTION), min(end, now))
        recorded = [event for event in self._recorded.get(log, ()) if start <= event.ts <= end]
        if not recorded:
            return generated
        return sorted(generated + recorded, key=lambda event: event.ts)

    def _everything(self, log: Obis) -> list[LogEvent]:
        return self.events(log, EPOCH_START, datetime.max.replace(tzinfo=UTC))

    def buffer(self, log: Obis, access: SelectiveAccess | None) -> GetResult:
        """Attribute 2: every row, rows by range on the clock, or rows and columns by entry."""
        if access is None:
            rows = self._everything(log)
        elif isinstance(access, RangeDescriptor):
            if access.restricting_object.obis != _CLOCK or access.selected_values:
                return DataAccessResult.OBJECT_UNAVAILABLE
            start, end = _as_time(access.from_value), _as_time(access.to_value)
            if start is None or end is None:
                return DataAccessResult.TYPE_UNMATCHED
            rows = self.events(log, start, end)
        elif isinstance(access, EntryDescriptor):
            return _by_entry(self._everything(log), access)
        else:
            return DataAccessResult.OBJECT_UNAVAILABLE
        return _table(rows)

    def last_code(self, log: Obis) -> int:
        """The code of the log's latest event (0: none yet), the value of its event code object."""
        now = self._clock()
        rows = self.events(log, now - RETENTION, now)
        return rows[-1].code if rows else 0

    def owns(self, attribute: CosemAttribute) -> bool:
        """Whether ``attribute`` belongs to an event log or an event code object."""
        return (attribute.class_id, attribute.obis) in _OBJECTS

    def get(self, attribute: CosemAttribute, access: SelectiveAccess | None) -> GetResult | None:
        """The value of an attribute of the logs or their event code objects; None: not one of them."""
        key = (attribute.class_id, attribute.obis, attribute.attribute)
        static = _STATIC.get(key)
        if static is not None:
            return static
        log = _OBJECTS.get(key[:2])
        if log is None:
            return None
        if key[0] == _DATA_CLASS:
            return Data.uint8(self.last_code(log)) if key[2] == 2 else DataAccessResult.OBJECT_UNDEFINED
        if key[2] == 2:
            return self.buffer(log, access)
        if key[2] == 7:
            return Data.uint32(len(self._everything(log)))
        return DataAccessResult.OBJECT_UNDEFINED


def _table(rows: list[LogEvent]) -> Data:
    return Data(DataType.ARRAY, Table(_COLUMNS, tuple((datetime_octets(e.ts), e.code) for e in rows)))


def _by_entry(rows: list[LogEvent], access: EntryDescriptor) -> GetResult:
    """Entries ``from..to`` (1-based, to 0 = last) and columns ``from..to`` (to 0 = last)."""
    last_row = access.to_entry or len(rows)
    last_column = access.to_selected_value or len(_COLUMNS)
    if not (access.from_entry >= 1 and 1 <= access.from_selected_value <= last_column <= len(_COLUMNS)):
        return DataAccessResult.OBJECT_UNAVAILABLE
    full = _table(rows[access.from_entry - 1 : last_row])
    if (access.from_selected_value, last_column) == (1, len(_COLUMNS)):
        return full
    first = access.from_selected_value - 1
    table = full.value
    assert isinstance(table, Table)
    return Data(
        DataType.ARRAY,
        Table(table.columns[first:last_column], tuple(row[first:last_column] for row in table.rows)),
    )


def _as_time(value: Data) -> datetime | None:
    """A range bound: a 12-byte octet-string or a date-time; unspecified deviation read as UTC."""
    if value.type == DataType.OCTET_STRING and isinstance(value.value, bytes) and len(value.value) == 12:
        ts = parse_datetime(value.value).to_datetime()
    elif isinstance(value.value, CosemDateTime):
        ts = value.value.to_datetime()
    else:
        return None
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
