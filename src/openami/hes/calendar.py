"""Schedule calendars: cron expressions evaluated in the utility's time zone.

A schedule says *when* in the terms a utility uses: "every day at midnight", "every 15 minutes",
"the first of the month at 00:05", always in the utility's local time (a daily billing register is
read at local midnight, also on the days clocks change). :class:`Cron` is the classic five-field
form::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday) or sun..sat

Each field is ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of these;
months and weekdays also take English three-letter names. As in Vixie cron, when both day-of-month and
day-of-week are restricted, a day matches if *either* does. Shortcuts: ``@hourly``, ``@daily`` /
``@midnight``, ``@weekly``, ``@monthly``, ``@yearly`` / ``@annually``.

Times are wall-clock times in the zone, and daylight saving time is handled the way a utility expects:

- a wall time that does not exist (the hour skipped in spring) fires once, at the first instant after
  the gap (02:30 on a day that jumps from 02:00 to 03:00 fires at 03:00 local);
- a wall time that happens twice (the hour repeated in autumn) fires once, at its first occurrence.

So a daily schedule fires exactly once every local day, and an interval schedule (``*/15 * * * *``)
fires every 15 minutes of *absolute* time through both changes except that the repeated hour is not
read twice by wall time: the second pass through 02:00-03:00 in autumn has wall times that were already
fired. Interval reads that must cover every absolute interval (load profiles) are planned by slot, not by
wall time (:func:`slots`), which walks UTC and has no such hole.

Parsing is bounded and strict: anything else is a :class:`CronError` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "CronError", "slots", "zone"]

_FIELDS: Final = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_WEEKDAYS: Final = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
_SHORTCUTS: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MAX_LENGTH: Final = 200
_SEARCH_DAYS: Final = 366 * 9
"""How far :meth:`Cron.next_after` looks ahead: every expression :meth:`Cron.parse` accepts fires within
8 years (the rarest, 29 February, skips 2100)."""


class CronError(ValueError):
    """An expression that is not a usable cron schedule: which field, and why."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Ljubljana``); :class:`CronError` for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def _number(text: str, field: str, names: dict[str, int]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit() or len(text) > 2:
        raise CronError(f"{field}: {text!r} is not a number")
    return int(text)


def _field_values(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: empty item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            step = _number(step_text, field, {})
            if step < 1:
                raise CronError(f"{field}: step must be at least 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(first, field, names), _number(last, field, names)
        else:
            start = _number(base, field, names)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high):
            raise CronError(f"{field}: {part!r} is outside {low}-{high}")
        if end < start:
            raise CronError(f"{field}: range {part!r} runs backwards")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression (module docstring); build it with :meth:`parse`."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 is Sunday (a 7 in the expression is folded into 0)."""
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = " ".join(expression.split())
        if len(text) > _MAX_LENGTH:
            raise CronError(f"a cron expression is at most {_MAX_LENGTH} characters")
        text = _SHORTCUTS.get(text.lower(), text)
        parts = text.split(" ")
        if len(parts) != 5:
            raise CronError(
                f"expected 5 fields (minute hour day month weekday), got {len(parts)}: {expression!r}"
            )
        names: tuple[dict[str, int], ...] = ({}, {}, {}, _MONTHS, _WEEKDAYS)
        sets = [
            _field_values(part, field, low, high, table)
            for part, (field, low, high), table in zip(parts, _FIELDS, names, strict=True)
        ]
        weekdays = frozenset(0 if day == 7 else day for day in sets[4])
        cron = cls(
            expression=text,
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=weekdays,
            days_restricted=parts[2] != "*" and not parts[2].startswith("*/"),
            weekdays_restricted=parts[4] != "*" and not parts[4].startswith("*/"),
        )
        if not cron.weekdays_restricted and not any(
            _possible(day, month) for day in cron.days for month in cron.months
        ):
            raise CronError(f"day of month: no month of {expression!r} has such a day")
        return cron

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday
        return by_day and by_weekday

    def next_after(self, after: datetime, tz: tzinfo) -> datetime:
        """The first firing strictly after ``after`` (aware), as an aware UTC datetime (module docstring
        for the DST rules)."""
        if after.tzinfo is None:
            raise ValueError("after must be time-zone aware")
        local = after.astimezone(tz)
        day = local.date()
        for _ in range(_SEARCH_DAYS):
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        fire = _resolve(day, hour, minute, tz)
                        if fire is not None and fire > after:
                            return fire
            day += timedelta(days=1)
        raise CronError(f"{self.expression!r} never fires")  # pragma: no cover - refused at parse time

    def between(self, start: datetime, end: datetime, tz: tzinfo) -> Iterator[datetime]:
        """Every firing in ``(start, end]``, in order (UTC)."""
        current = start
        while True:
            current = self.next_after(current, tz)
            if current > end:
                return
            yield current


def _possible(day: int, month: int) -> bool:
    return day <= (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)


def _resolve(day: date, hour: int, minute: int, tz: tzinfo) -> datetime | None:
    """The instant a local wall time names: the first occurrence of a repeated one, the end of the gap
    for a skipped one; None for a date that does not exist (31 April)."""
    try:
        wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    except ValueError:
        return None
    first = wall.replace(fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first
    # Skipped by a spring change: the first minute whose wall time is at or past the one asked for is
    # the end of the gap. The fold=1 reading lies before the gap, fold=0 after it; gaps are whole minutes.
    naive = wall.replace(tzinfo=None)
    probe = wall.replace(fold=1).astimezone(UTC)
    while probe < first and probe.astimezone(tz).replace(tzinfo=None) < naive:
        probe += timedelta(minutes=1)
    return probe


def slots(start: datetime, end: datetime, interval: timedelta) -> Iterator[datetime]:
    """Every multiple of ``interval`` since the epoch (UTC) in ``[start, end)``: the interval slots a
    load profile is planned by (absolute time, so DST changes neither add nor drop one)."""
    if interval <= timedelta(0):
        raise ValueError("interval must be positive")
    step = int(interval.total_seconds())
    first = -(-int(start.timestamp()) // step) * step
    moment = datetime.fromtimestamp(first, UTC)
    while moment < end:
        yield moment
        moment += interval
