"""The gateway archive: readings kept once, batches cut in sequence, acknowledgements, restarts, retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from openami.bus.messages import MeterEvent, Series
from openami.edge.archive import Archive, ArchivedReading

T0 = datetime(2026, 11, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)


def _readings(meter: str, count: int, start: datetime = T0) -> list[ArchivedReading]:
    return [
        ArchivedReading(meter, "1-0:1.8.0", start + i * STEP, 1000.0 + i, "Wh", "interval", 900)
        for i in range(count)
    ]


def test_a_reading_is_archived_once(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    assert archive.add_readings(_readings("E-1", 4)) == 4
    assert archive.add_readings(_readings("E-1", 6)) == 2  # polled again: only the two new intervals
    assert len(archive.readings("E-1")) == 6


def test_batches_carry_every_unsent_reading_once_in_sequence(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    archive.add_readings(_readings("E-1", 10) + _readings("E-2", 10))
    archive.add_event("E-1", T0, "power_down", severity="alarm", detail={"phase": 1})
    first = archive.cut_batch(T0, max_readings=15)
    second = archive.cut_batch(T0)
    assert first is not None and second is not None and archive.cut_batch(T0) is None
    assert second.seq > first.seq and (first.readings, second.readings) == (15, 5)
    body = json.loads(first.payload)
    series = [Series.model_validate(s) for s in body["series"]]  # the bus schema, as the head-end reads it
    events = [MeterEvent.model_validate(e) for e in body["events"]]
    assert sum(len(s.points) for s in series) == 15 and events[0].detail == {"phase": 1}
    assert [b.seq for b in archive.pending()] == [first.seq, second.seq]


def test_acknowledged_batches_leave_the_outbox_and_restarts_keep_state(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    archive.add_readings(_readings("E-1", 4))
    batch = archive.cut_batch(T0)
    assert batch is not None
    archive.mark_sent(batch.seq)
    archive.close()
    reopened = Archive(tmp_path / "a.db")  # the agent was killed and restarted
    (pending,) = reopened.pending()
    assert (pending.seq, pending.payload, pending.sent_count) == (batch.seq, batch.payload, 1)
    assert reopened.acknowledge([batch.seq], T0) == 1 and reopened.acknowledge([batch.seq], T0) == 0
    assert reopened.pending() == []
    reopened.add_readings(_readings("E-1", 8))
    later = reopened.cut_batch(T0)
    assert later is not None and later.seq > batch.seq and later.readings == 4


def test_sequence_numbers_are_not_reused_after_purging(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db", retention=timedelta(days=1))
    archive.add_readings(_readings("E-1", 2))
    old = archive.cut_batch(T0)
    assert old is not None
    archive.acknowledge([old.seq], T0)
    assert archive.purge(T0 + timedelta(days=3))["batches"] == 1
    archive.add_readings(_readings("E-1", 2, T0 + timedelta(days=3)))
    new = archive.cut_batch(T0 + timedelta(days=3))
    assert new is not None and new.seq > old.seq


def test_retention_counts_what_was_never_sent(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    archive.add_readings(_readings("E-1", 96, T0 - timedelta(days=50)) + _readings("E-1", 96))
    gone = archive.purge(T0 + timedelta(days=1))
    assert gone["readings"] == 96 and gone["dropped_unsent"] == 96
    stats = archive.stats()
    assert stats["readings"] == 96 and stats["backlog_readings"] == 96 and stats["dropped_unsent"] == 96


def test_one_counter_numbers_batches_and_every_other_uplink_envelope(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db", first_seq=1)
    assert archive.last_seq() == 0
    health = archive.next_seq()  # a HEALTH before any batch
    assert health == 1
    archive.add_readings(_readings("E-1", 2))
    batch = archive.cut_batch(T0)
    assert batch is not None and batch.seq > health
    alarm = archive.next_seq()
    archive.add_readings(_readings("E-1", 4))
    later = archive.cut_batch(T0)
    assert later is not None and health < batch.seq < alarm < later.seq == archive.last_seq()
    archive.close()
    reopened = Archive(tmp_path / "a.db")  # restarted: numbering continues, nothing handed out twice
    assert reopened.next_seq() == later.seq + 1


def test_refused_and_renumbered_batches(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    archive.add_readings(_readings("E-1", 4))
    archive.add_event("E-1", T0, "leak", severity="alarm")
    first = archive.cut_batch(T0, max_readings=2)
    second = archive.cut_batch(T0)
    assert first is not None and second is not None
    assert archive.refuse({first.seq: "unknown meter E-1"}, T0) == 1
    assert archive.refuse({first.seq: "again"}, T0) == 0
    assert archive.refused() == {first.seq: "unknown meter E-1"}
    assert [b.seq for b in archive.pending()] == [second.seq]
    stats = archive.stats()
    assert stats["refused_batches"] == 1 and stats["unacked_batches"] == 1
    renumbered = archive.renumber(second.seq, T0)
    assert renumbered is not None and renumbered.seq > second.seq and renumbered.payload == second.payload
    assert archive.renumber(second.seq, T0) is None
    assert [b.seq for b in archive.pending()] == [renumbered.seq]
    archive.acknowledge([renumbered.seq], T0)
    assert archive.stats()["backlog_readings"] == 0 and archive.cut_batch(T0) is None  # nothing left behind


def test_state_values_and_reading_with_events_in_one_transaction(tmp_path: Path) -> None:
    from openami.edge.archive import ArchivedEvent

    archive = Archive(tmp_path / "a.db")
    assert archive.get_state("downlink_window") is None
    archive.set_state("downlink_window", '{"highest": 3}')
    archive.set_state("downlink_window", '{"highest": 4}')
    events = [ArchivedEvent("E-1", T0, "leak", "alarm", {"l": 1})]
    assert archive.add(_readings("E-1", 3), events) == (3, events)
    assert archive.add(_readings("E-1", 3), events) == (0, [])
    archive.close()
    assert Archive(tmp_path / "a.db").get_state("downlink_window") == '{"highest": 4}'


def test_a_new_archive_numbers_above_anything_a_lost_one_sent(tmp_path: Path) -> None:
    import time

    before = int(time.time() * 1000)
    old = Archive(tmp_path / "old.db")
    old.add_readings(_readings("E-1", 2))
    sent = old.cut_batch(T0)
    assert sent is not None and sent.seq >= before
    for _ in range(50):
        last = old.next_seq()
    old.close()
    time.sleep(0.1)  # 51 numbers in a few ms: faster than the 1,000 a second the scheme allows for
    replacement = Archive(tmp_path / "new.db")  # the gateway's archive was lost and started afresh
    first = replacement.next_seq()
    assert first > last
    replacement.close()
    assert Archive(tmp_path / "new.db").next_seq() == first + 1  # reopening continues, never re-seeds
