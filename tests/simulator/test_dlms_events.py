"""Simulated meter event logs, sans-IO: deterministic background events, events caused by commands,
and the profile generic attributes that expose them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openami.protocols.dlms.axdr import Data, DataType, Table, datetime_octets, encode_data
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import idis_events as idis
from openami.protocols.dlms.xdlms import (
    ActionRequestNormal,
    CaptureObject,
    CosemAttribute,
    CosemMethod,
    DataAccessResult,
    EntryDescriptor,
    GetResponseNormal,
    RangeDescriptor,
    encode_xdlms,
)
from openami.simulator.dlms_events import (
    LOG_CAPACITY,
    RECORDED_CAPACITY,
    RETENTION,
    LogEvent,
    background_events,
)
from openami.simulator.dlms_meter import CLOCK, DISCONNECT_CONTROL, MeterKeys, SimulatedMeter

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 6, 1, 12, 0, 30, 250_000, tzinfo=UTC)
STANDARD = idis.STANDARD_EVENT_LOG.obis
FRAUD = idis.FRAUD_DETECTION_LOG.obis
DISCONNECTOR = idis.DISCONNECTOR_CONTROL_LOG.obis
YEAR_AGO = NOW - timedelta(days=365)


def meter(seed: int = 7, now: datetime = NOW) -> SimulatedMeter:
    return SimulatedMeter("SIM1", b"OAM00001", MeterKeys.demo("SIM1"), seed, now=lambda: now)


def codes(events: list[LogEvent]) -> list[int]:
    return [event.code for event in events]


def test_background_events_are_deterministic_per_seed() -> None:
    first = background_events(7, STANDARD, YEAR_AGO, NOW)
    assert first == background_events(7, STANDARD, YEAR_AGO, NOW)
    assert first != background_events(8, STANDARD, YEAR_AGO, NOW)
    assert meter(7).events.events(STANDARD, YEAR_AGO, NOW) == first


def test_background_events_come_in_pairs_at_whole_seconds() -> None:
    pairs = {
        idis.POWER_DOWN: idis.POWER_UP,
        idis.COVER_OPEN: idis.COVER_CLOSED,
        idis.MAGNETIC_TAMPER: idis.MAGNETIC_TAMPER_CLEARED,
    }
    start = datetime(2025, 1, 1, tzinfo=UTC)
    seen: set[int] = set()
    for seed in range(20):
        for log in (STANDARD, FRAUD):
            events = background_events(seed, log, start, start + timedelta(days=365))
            assert [e.ts for e in events] == sorted(e.ts for e in events)
            assert all(e.ts.microsecond == 0 for e in events)
            found = codes(events)
            seen.update(found)
            for begins, ends in pairs.items():
                assert abs(found.count(begins) - found.count(ends)) <= 2  # only a pair cut by the range
    assert seen == set(pairs) | set(pairs.values())
    assert background_events(7, DISCONNECTOR, YEAR_AGO, NOW) == []


def test_rates_are_plausible() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    outages = sum(
        codes(background_events(seed, STANDARD, start, start + timedelta(days=365))).count(idis.POWER_DOWN)
        for seed in range(100)
    )
    tampers = sum(
        len(background_events(seed, FRAUD, start, start + timedelta(days=365))) // 2 for seed in range(100)
    )
    assert 5 * 100 < outages < 20 * 100  # about 11 a year
    assert 0.5 * 100 < tampers < 5 * 100  # about 2.5 a year


def test_any_range_is_the_same_as_its_parts() -> None:
    whole = background_events(3, STANDARD, YEAR_AGO, NOW)
    parts: list[LogEvent] = []
    cut = YEAR_AGO
    while cut < NOW:
        upper = min(cut + timedelta(days=9, hours=5), NOW)
        parts += [e for e in background_events(3, STANDARD, cut, upper) if e.ts < upper]
        cut = upper
    parts += background_events(3, STANDARD, NOW, NOW)
    assert parts == whole


def test_nothing_after_the_clock_or_before_retention() -> None:
    m = meter()
    events = m.events.events(STANDARD, NOW - 2 * RETENTION, NOW + timedelta(days=30))
    assert events
    assert all(NOW - RETENTION <= e.ts <= NOW for e in events)
    later = meter(now=NOW + timedelta(days=30)).events.events(STANDARD, NOW, NOW + timedelta(days=30))
    assert later == background_events(7, STANDARD, NOW, NOW + timedelta(days=30))


def test_clock_set_logs_old_and_new_time() -> None:
    m = meter()
    target = datetime(2026, 1, 15, 8, 0, 0, 700_000, tzinfo=UTC)
    assert m.set(CosemAttribute(8, CLOCK, 2), Data.octet_string(datetime_octets(target))) == (
        DataAccessResult.SUCCESS
    )
    old = m.events.events(STANDARD, NOW - timedelta(seconds=1), NOW)
    assert old[-1] == LogEvent(NOW.replace(microsecond=0), idis.CLOCK_ADJUSTED_OLD)
    new = m.events.events(STANDARD, target - timedelta(seconds=1), target + timedelta(seconds=1))
    assert LogEvent(target.replace(microsecond=0), idis.CLOCK_ADJUSTED_NEW) in new
    assert m.get(CosemAttribute(1, idis.STANDARD_EVENT_LOG.code_object, 2), None) == Data.uint8(
        idis.CLOCK_ADJUSTED_NEW
    )


def test_remote_disconnect_and_reconnect_are_logged_on_change() -> None:
    m = meter()

    def command(method: int) -> None:
        m.action(ActionRequestNormal(1, CosemMethod(70, DISCONNECT_CONTROL, method), Data.int8(0)))

    command(1)
    command(1)  # already disconnected: nothing changes, nothing logged
    command(2)
    events = m.events.events(DISCONNECTOR, NOW - timedelta(hours=1), NOW)
    assert codes(events) == [idis.REMOTE_DISCONNECT, idis.REMOTE_RECONNECT]
    assert m.get(CosemAttribute(1, idis.DISCONNECTOR_CONTROL_LOG.code_object, 2), None) == Data.uint8(
        idis.REMOTE_RECONNECT
    )


def test_recorded_events_are_bounded() -> None:
    m = meter()
    for index in range(RECORDED_CAPACITY + 50):
        m.events.record(DISCONNECTOR, NOW - timedelta(seconds=index), idis.REMOTE_DISCONNECT)
    assert len(m.events.events(DISCONNECTOR, YEAR_AGO, NOW)) == RECORDED_CAPACITY


def _buffer(m: SimulatedMeter, log: Obis, access: RangeDescriptor | EntryDescriptor | None) -> Table:
    result = m.get(CosemAttribute(7, log, 2), access)
    assert isinstance(result, Data)
    encode_data(result)  # the meter could send it
    assert isinstance(result.value, Table)
    return result.value


def test_buffer_by_range_on_the_clock() -> None:
    m = meter()
    start, end = NOW - timedelta(days=200), NOW - timedelta(days=20)
    access = RangeDescriptor(
        CaptureObject(8, CLOCK, 2),
        Data.octet_string(datetime_octets(start)),
        Data.octet_string(datetime_octets(end)),
    )
    table = _buffer(m, STANDARD, access)
    expected = m.events.events(STANDARD, start, end)
    assert expected
    assert table.rows == tuple((datetime_octets(e.ts), e.code) for e in expected)
    assert [c.type for c in table.columns] == [DataType.OCTET_STRING, DataType.UNSIGNED]
    response = GetResponseNormal(1, m.get(CosemAttribute(7, STANDARD, 2), access))
    assert encode_xdlms(response)


def test_buffer_by_entry_and_refusals() -> None:
    m = meter()
    everything = _buffer(m, STANDARD, None)
    assert len(everything.rows) > 4
    assert _buffer(m, STANDARD, EntryDescriptor(2, 4)).rows == everything.rows[1:4]
    codes_only = _buffer(m, STANDARD, EntryDescriptor(1, 0, 2, 2))
    assert codes_only.rows == tuple(row[1:] for row in everything.rows)
    assert m.get(CosemAttribute(7, STANDARD, 2), EntryDescriptor(0, 1)) == DataAccessResult.OBJECT_UNAVAILABLE
    other_column = RangeDescriptor(CaptureObject(1, Obis(0, 0, 96, 11, 0), 2), Data.uint8(0), Data.uint8(9))
    assert m.get(CosemAttribute(7, STANDARD, 2), other_column) == DataAccessResult.OBJECT_UNAVAILABLE
    bad_bound = RangeDescriptor(CaptureObject(8, CLOCK, 2), Data.uint8(0), Data.uint8(9))
    assert m.get(CosemAttribute(7, STANDARD, 2), bad_bound) == DataAccessResult.TYPE_UNMATCHED


def test_log_attributes() -> None:
    m = meter()
    for spec in idis.LOGS:
        log = spec.obis
        assert m.get(CosemAttribute(7, log, 1), None) == Data.octet_string(log.to_bytes())
        assert m.get(CosemAttribute(7, log, 3), None) == Data.array(
            Data.structure(Data.uint16(8), Data.octet_string(CLOCK.to_bytes()), Data.int8(2), Data.uint16(0)),
            Data.structure(
                Data.uint16(1), Data.octet_string(spec.code_object.to_bytes()), Data.int8(2), Data.uint16(0)
            ),
        )
        assert m.get(CosemAttribute(7, log, 4), None) == Data.uint32(0)  # asynchronous: captured on events
        assert m.get(CosemAttribute(7, log, 7), None) == Data.uint32(len(_buffer(m, log, None).rows))
        assert m.get(CosemAttribute(7, log, 8), None) == Data.uint32(LOG_CAPACITY)
        assert m.get(CosemAttribute(1, spec.code_object, 1), None) == Data.octet_string(
            spec.code_object.to_bytes()
        )
    assert len(_buffer(m, STANDARD, None).rows) < LOG_CAPACITY
    assert m.get(CosemAttribute(7, STANDARD, 6), None) == DataAccessResult.OBJECT_UNDEFINED
    assert m.set(CosemAttribute(7, STANDARD, 2), Data.array()) == DataAccessResult.READ_WRITE_DENIED
