"""Schedule calendars: cron fields, day rules and daylight saving time in the utility's zone."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.hes.calendar import Cron, CronError, slots, zone

LJUBLJANA = zone("Europe/Ljubljana")


def _local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=LJUBLJANA)


def test_fields_ranges_steps_lists_and_names() -> None:
    cron = Cron.parse("0,30 8-17/3 * jan-mar mon-fri")
    assert cron.minutes == {0, 30}
    assert cron.hours == {8, 11, 14, 17}
    assert cron.months == {1, 2, 3}
    assert cron.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("0 0 * * 7").weekdays == {0}
    assert Cron.parse("5/20 * * * *").minutes == {5, 25, 45}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "expected 5 fields"),
        ("60 * * * *", "minute: '60' is outside 0-59"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day of week"),
        ("*/0 * * * *", "step must be at least 1"),
        ("5-1 * * * *", "runs backwards"),
        ("a * * * *", "minute: 'a' is not a number"),
        ("1,,2 * * * *", "empty item"),
        ("0 0 31 2 *", "no month"),
        ("0 0 30 feb *", "no month"),
        ("0 0 * * funday", "not a number"),
        ("1" * 201, "at most 200"),
    ],
)
def test_bad_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        Cron.parse(expression)


def test_unknown_zone() -> None:
    with pytest.raises(CronError, match="unknown time zone"):
        zone("Mars/Olympus_Mons")


def test_daily_midnight_in_the_utility_zone_through_both_changes() -> None:
    daily = Cron.parse("@daily")
    fired = list(daily.between(_local("2026-03-27 12:00"), _local("2026-03-31 12:00"), LJUBLJANA))
    assert [f.astimezone(LJUBLJANA).strftime("%m-%d %H:%M") for f in fired] == [
        "03-28 00:00",
        "03-29 00:00",
        "03-30 00:00",
        "03-31 00:00",
    ]
    autumn = list(daily.between(_local("2026-10-24 12:00"), _local("2026-10-27 12:00"), LJUBLJANA))
    assert [f.astimezone(UTC).hour for f in autumn] == [22, 23, 23]  # CEST, then CET


def test_a_skipped_wall_time_fires_once_at_the_end_of_the_gap() -> None:
    fired = list(
        Cron.parse("30 2 * * *").between(_local("2026-03-28 12:00"), _local("2026-03-30 12:00"), LJUBLJANA)
    )
    assert [f.astimezone(LJUBLJANA).isoformat() for f in fired] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_a_repeated_wall_time_fires_once_at_its_first_occurrence() -> None:
    fired = list(
        Cron.parse("30 2 * * *").between(_local("2026-10-24 12:00"), _local("2026-10-26 12:00"), LJUBLJANA)
    )
    assert [f.astimezone(LJUBLJANA).isoformat() for f in fired] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_day_of_month_or_day_of_week_when_both_are_given() -> None:
    cron = Cron.parse("0 0 1 * mon")  # the 1st, and every Monday (Vixie cron)
    fired = list(cron.between(_local("2026-11-30 12:00"), _local("2026-12-15 00:00"), LJUBLJANA))
    assert [f.astimezone(LJUBLJANA).day for f in fired] == [1, 7, 14]


def test_leap_day_schedule_waits_for_a_leap_year() -> None:
    fired = Cron.parse("0 6 29 2 *").next_after(datetime(2026, 3, 1, tzinfo=UTC), LJUBLJANA)
    assert fired.astimezone(LJUBLJANA).isoformat() == "2028-02-29T06:00:00+01:00"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        Cron.parse("@hourly").next_after(datetime(2026, 1, 1), LJUBLJANA)


def test_slots_walk_absolute_time_through_dst() -> None:
    start, end = _local("2026-10-25 00:00"), _local("2026-10-26 00:00")
    found = list(slots(start, end, timedelta(minutes=15)))
    assert len(found) == 25 * 4  # the autumn day has 25 hours, every quarter of them a slot
    assert found[0] == start.astimezone(UTC)
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(found))
    inside = list(slots(_local("2026-10-25 00:07"), _local("2026-10-25 00:31"), timedelta(minutes=15)))
    assert inside == [_local("2026-10-25 00:15").astimezone(UTC), _local("2026-10-25 00:30").astimezone(UTC)]
    with pytest.raises(ValueError, match="positive"):
        next(slots(start, end, timedelta(0)))


@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    start=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ),
)
def test_next_after_is_strictly_later_matches_and_skips_nothing(
    minute: int, hour: int, start: datetime
) -> None:
    cron = Cron.parse(f"{minute} {hour} * * *")
    fired = cron.next_after(start, LJUBLJANA)
    assert fired > start
    assert fired - start <= timedelta(days=1, hours=1)
    local = fired.astimezone(LJUBLJANA)
    assert (local.hour, local.minute) == (hour, minute) or (local.hour, local.minute) == (3, 0)
